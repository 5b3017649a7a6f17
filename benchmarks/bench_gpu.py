"""The GPU figures (issue 16), ready to run: on CUDA when ``torch.cuda.is_available()``,
otherwise skipped with one line (BENCHMARKS.md then says 'not measured' in the GPU rows).

  gpu_train_<decoder>_<fp32|bf16>_samples_per_s   default architecture, box 32, batch 32
                                                  (bf16: torch.autocast)
  gpu_gmd_render_M<M>_<n>^3_s                     separable renderer, forward + backward
  gpu_denoise_<n>^3_s                             unet-3d-10a exact tiling, 256^3 and 512^3

Every figure records the device name. ``--device cpu`` runs the same code path on the CPU
(the tests do, with ``--quick``); its figures are named ``<device>_...`` instead of ``gpu_...``.

    python -m benchmarks.bench_gpu [--quick] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from benchmarks._common import record, run_child

QUICK_SUPPORTED = True
FULL = {"train": {"box": 32, "batch": 32, "steps": 8, "decoders": ["cnn", "gmd"]},
        "gmd": {"cases": [(1024, 64), (4096, 64)]},
        "denoise": {"sizes": [256, 512], "patch": 128}, "repeat": 3}
QUICK = {"train": {"box": 16, "batch": 4, "steps": 2, "decoders": ["cnn"]},
         "gmd": {"cases": [(16, 16)]}, "denoise": {"sizes": [32], "patch": 32}, "repeat": 1}
SKIP_LINE = ("gpu: no CUDA device (torch.cuda.is_available() is False) -- GPU figures not "
             "measured; BENCHMARKS.md shows 'not measured'")


def device_name(device: str) -> str:
    """The GPU model (``torch.cuda.get_device_name``) or the CPU's, for the notes."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def _case(kind: str, **params: Any) -> dict[str, Any]:
    res = run_child("benchmarks._cases", kind, json.dumps(params))
    print(f"  {kind} {params} -> {res}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (code-path check)")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    p = QUICK if args.quick else FULL
    rep = p["repeat"]
    prefix = "gpu" if args.device.startswith("cuda") else args.device
    name = device_name(args.device)
    tag = f"{name}, torch {torch.__version__}" + (" (quick sizes)" if args.quick else "")
    tr = p["train"]
    for decoder in tr["decoders"]:
        for amp in ("fp32", "bf16"):
            r = _case("train", decoder=decoder, box=tr["box"], batch=tr["batch"],
                      steps=tr["steps"], threads=1, repeat=rep, device=args.device, amp=amp)
            record(f"{prefix}_train_{decoder}_{amp}_samples_per_s", r["samples_per_s"],
                   "samples/s", note=f"{tag}; default architecture, {decoder} decoder, box "
                                     f"{tr['box']}^3, batch {tr['batch']}, {amp}"
                                     f"{' autocast' if amp == 'bf16' else ''}; median of {rep}")
    for m, n in p["gmd"]["cases"]:
        r = _case("gmd", m=m, grid=n, threads=1, repeat=rep, device=args.device)
        record(f"{prefix}_gmd_render_M{m}_{n}^3_s", r["seconds"], "s",
               note=f"{tag}; separable renderer, forward + backward, batch 8; median of {rep}")
    dn = p["denoise"]
    for size in dn["sizes"]:
        r = _case("denoise", size=size, patch=dn["patch"], threads=2, repeat=rep,
                  device=args.device)
        record(f"{prefix}_denoise_{size}^3_s", r["seconds"], "s",
               note=f"{tag}; unet-3d-10a, exact tiling, patch {dn['patch']}; median of {rep}"
                    + (f"; peak GPU memory {r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r
                       else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
