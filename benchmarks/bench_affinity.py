"""Affinity stage on the SHREC 2021 structures: full SOAP and FSC matrices (10 PDBs + 13 maps:
13 classes, 4cr2/4v94/5mrc map-only), time of each, Spearman rho between the two methods'
off-diagonal entries, and the SOAP heatmap for the README (docs/img/shrec_soap.png).

Run: ``.venv/bin/python -m benchmarks affinity`` (1 thread, default config of the stage).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from affinity_vae.affinity import compute_affinity, from_paths
from affinity_vae.affinity.matrix import plot_heatmap
from affinity_vae.config import schema_defaults
from benchmarks._common import record, timed

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "shrec2021-structures"


def shrec_classes():
    maps = {p.stem: p for p in sorted((SHARED / "maps_10A").glob("*.mrc"))}
    pdbs = {p.stem: p for p in sorted((SHARED / "pdb").glob("*.pdb"))}
    return from_paths(pdbs, maps)


def default_cfg() -> dict:
    return schema_defaults("affinity")


def main() -> int:
    if not SHARED.is_dir():
        print(f"{SHARED} not present; skipping", file=sys.stderr)
        return 0
    classes = shrec_classes()
    cfg = default_cfg()
    n = len(classes.names)
    note = f"{n} SHREC classes (10 PDB + 3 map-only), default config, 1 thread; wall time"
    out = {}
    for method in ("soap", "fsc"):
        cpu0 = time.process_time()
        wall, out[method] = timed(lambda m=method: compute_affinity(classes, m, cfg, threads=1))
        cpu = time.process_time() - cpu0
        record(f"affinity_{method}_shrec_s", wall, "s", note=f"{note} (CPU time {cpu:.1f} s)")
    soap, fsc = out["soap"], out["fsc"]
    iu = np.triu_indices(n, 1)
    rho = float(spearmanr(soap.to_numpy()[iu], fsc.to_numpy()[iu]).statistic)
    record("affinity_shrec_spearman_soap_fsc", rho, "rho",
           note=f"Spearman rho of the {len(iu[0])} off-diagonal entries, SOAP vs FSC")
    img = REPO / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    plot_heatmap(soap, img / "shrec_soap.png", title="SHREC 2021 classes: SOAP affinity",
                 dpi=72)
    plot_heatmap(fsc, img / "shrec_fsc.png", title="SHREC 2021 classes: FSC affinity", dpi=72)
    for name, df in (("SOAP", soap), ("FSC", fsc)):
        print(f"{name}:\n{df.round(2).to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
