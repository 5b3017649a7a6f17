"""Learning curve: size-group F1 of the aVAE and the beta-VAE against training particles per class.

The paper blames its medium-protein score on the training set's size; this measures it. The
twelve SHREC 2021 classes (10 PDBs + the 4cr2/5mrc maps; 4v94 excluded) are simulated ONCE by
the pipeline itself (snakemake ``extract affinity`` on a config this benchmark writes, run
``bench_learning_curve``; default SNR, default extract and SOAP affinity), enough tomograms for
the largest size. Then, per class and seeded, the non-test particles are shuffled once: the first
``--val-per-class`` are the fixed validation set, the next ``n`` the training set of size ``n``
(so 60 c 125 c 250 c 500, nested); the test tomograms' particles are the fixed test set. Each
size trains the aVAE and the beta-VAE (``affinity_vae.train.variant_configs`` + ``fit``, the
pipeline's model/train config) with the SAME BUDGET: by default the same number of optimiser
steps (``--budget steps``: ``--epochs`` at the largest size, proportionally more epochs for
smaller sets, so a small set is not also under-trained); ``--budget epochs`` keeps the epochs.
Scoring is the evaluate stage's own (``affinity_vae.evaluate.analyse.analyse_latents``: the
grid-searched classifier fitted on train + validation latents, F1 on the test tomograms), and a
size group's score is the paper's: the mean per-class F1 of its classes (``mean_f1_by_group``).

    python -m benchmarks.bench_learning_curve [--quick] [--sizes 60,125,250,500] [--epochs 20]
        [--budget steps|epochs] [--gpu] [--threads 1] [--no-denoise]
    (env: AVAE_LC_SIZES, AVAE_LC_EPOCHS, AVAE_LC_GPU=1)

Writes benchmarks/out/learning_curve[_quick]/: learning_curve.csv (one row a variant and size,
per-class F1 included), learning_curve.md, learning_curve.png (aVAE solid, beta-VAE dashed, the
paper's CNN-aVAE as dotted lines); records ``learning_curve_<group>_f1_<variant>_<n>`` in
benchmarks/results.json (``--quick``: in its own out folder instead). docs/learning_curve.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from affinity_vae.evaluate.metrics import SHREC_SIZE_GROUPS, mean_f1_by_group

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "shrec2021-structures"
GROUPS = ("small", "medium", "large")
#: The paper's Table 1, CNN-aVAE row (mean per-class F1 of each SHREC size group).
PAPER_CNN_AVAE = {"small": 0.531, "medium": 0.617, "large": 0.936}
VARIANTS = {"avae": "aVAE", "bvae": "beta-VAE"}
log = logging.getLogger("learning_curve")


# ------------------------------------------------------------------ options
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line (environment variables give the defaults of sizes, epochs and --gpu)."""
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes 8,16, 2 epochs, 100x128x128 tomograms, no denoise")
    ap.add_argument("--sizes", default=env.get("AVAE_LC_SIZES"),
                    help="training particles per class, comma separated (default "
                         "60,125,250,500; --gpu adds 1000)")
    ap.add_argument("--epochs", type=int, default=env.get("AVAE_LC_EPOCHS"),
                    help="epochs at the largest size (default 20 on CPU; --gpu: the "
                         "pipeline's train.epochs)")
    ap.add_argument("--budget", choices=["steps", "epochs"], default="steps",
                    help="same optimiser steps for every size (default) or same epochs")
    ap.add_argument("--gpu", action="store_true", default=env.get("AVAE_LC_GPU") == "1",
                    help="train on CUDA with the pipeline's epochs and one size more (1000)")
    ap.add_argument("--device", default=None, help="cpu | cuda | auto (default cpu; --gpu cuda)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-per-class", type=int, default=None,
                    help="fixed validation particles per class (default 10, quick 2)")
    ap.add_argument("--test-tomograms", type=int, default=None, help="default 2 (quick 1)")
    ap.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None,
                    help="denoise the tomograms (default: as the pipeline, on; quick off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--structures", default=str(SHARED),
                    help="folder of the SHREC class PDBs/maps (searched recursively)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/out/...)")
    args = ap.parse_args(argv)
    q = args.quick
    default_sizes = "8,16" if q else "60,125,250,500" + (",1000" if args.gpu else "")
    args.sizes = sorted({int(s) for s in str(args.sizes or default_sizes).split(",") if s})
    if not args.sizes or args.sizes[0] < 2:
        ap.error("--sizes: at least one size, each >= 2 particles per class")
    args.epochs = int(args.epochs) if args.epochs else (2 if q else None)
    args.device = args.device or ("cuda" if args.gpu else "cpu")
    args.val_per_class = args.val_per_class or (2 if q else 10)
    args.test_tomograms = args.test_tomograms or (1 if q else 2)
    args.denoise = (not q) if args.denoise is None else args.denoise
    name = "learning_curve_quick" if q else "learning_curve"
    args.out = Path(args.out or REPO / "benchmarks" / "out" / name)
    args.run = f"bench_{name}"
    return args


# ------------------------------------------------------------------ data (the pipeline, once)
def data_overlay(args: argparse.Namespace) -> dict[str, Any]:
    """The config (on top of config/config.yaml) that simulates, extracts and scores the
    SHREC classes: enough tomograms for the largest size, the last ``test_tomograms`` test."""
    shape, per_tomo = ([100, 128, 128], 72) if args.quick else ([100, 200, 200], 240)
    per_class = per_tomo // 12
    need = (max(args.sizes) + args.val_per_class) * 1.1 / per_class  # 10 % for unplaced ones
    n_train = max(1, math.ceil(need))
    n = n_train + args.test_tomograms
    cfg: dict[str, Any] = {
        "run": args.run, "seed": args.seed, "device": args.device,
        "structures": {"source": "dir", "path": str(args.structures), "exclude": ["4v94"]},
        "dataset": {"source": "simulate", "unseen_classes": [],
                    "splits": {"test": [f"model_{i}" for i in range(n_train, n)],
                               "validation": []}},
        "simulate": {"n_tomograms": n, "shape_zyx": shape, "n_particles": per_tomo},
        "denoise": {"enabled": bool(args.denoise)}}
    if args.quick:  # the tiny config's classifier grid: seconds
        cfg["evaluate"] = {"cv_folds": 3, "mlp_hidden": [[32]], "mlp_alpha": [0.001]}
    return cfg


def merged_config(overlay: Mapping[str, Any]) -> dict[str, Any]:
    """config/config.yaml with ``overlay`` merged in (nested dicts key by key): written out
    whole, so the run does not depend on whether snakemake layers a --configfile over the
    default config or over the schema defaults."""
    def merge(a: dict, b: Mapping) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(
                out.get(k), dict) else copy.deepcopy(v)
        return out

    return merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), overlay)


def full_config(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The merged config validated, the schema's defaults filled in (what the rules see)."""
    from affinity_vae.config import check_config

    cfg = copy.deepcopy(dict(merged))
    check_config(cfg, REPO / "workflow" / "schemas" / "config.schema.yaml")
    return cfg


def run_pipeline(config_path: Path, cores: int) -> None:
    """snakemake extract affinity on ``config_path`` (a no-op when its outputs are current)."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores),
           "--configfile", str(config_path), "--", "extract", "affinity"]
    log.info("%s", " ".join(cmd))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}")


# ------------------------------------------------------------------ nested subsets
def nested_subsets(labels: np.ndarray, pool: np.ndarray, sizes: Sequence[int],
                   val_per_class: int, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Fixed validation and nested training subsets of the pool particles.

    Args:
        labels: (N,) class of every particle; pool: (N,) bool, the particles that may train
            (not test); sizes: training particles per class.
    Returns:
        (validation indices, {size: training indices}), sorted int arrays. Per class the pool
        is shuffled once (seeded by ``seed`` and the class name): its first ``val_per_class``
        particles are validation, the next ``size`` train, so size a < b gives subset(a) c
        subset(b) and the validation set does not depend on ``sizes``.
    Raises:
        InputError: a class has fewer than max(sizes) + val_per_class pool particles.
    """
    from affinity_vae.errors import InputError

    val, train = [], {int(n): [] for n in sizes}
    for c in sorted(set(labels[pool])):
        idx = np.flatnonzero(pool & (labels == c))
        key = int.from_bytes(hashlib.sha1(str(c).encode()).digest()[:4], "little")
        perm = np.random.default_rng([seed, key]).permutation(idx)
        if len(perm) < max(sizes) + val_per_class:
            raise InputError(f"class {c}: {len(perm)} training particles, fewer than "
                             f"{max(sizes)} + {val_per_class} validation -- lower --sizes or "
                             f"--val-per-class")
        val.append(perm[:val_per_class])
        for n, parts in train.items():
            parts.append(perm[val_per_class:val_per_class + n])
    return (np.sort(np.concatenate(val)).astype(int),
            {n: np.sort(np.concatenate(v)).astype(int) for n, v in train.items()})


def split_table(table: pd.DataFrame, train: np.ndarray, val: np.ndarray, test: np.ndarray
                ) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows (indices into ``table``) of one size's data set and their STAR rows with avaeSplit
    rewritten train / validation / test; pool particles of other sizes are left out."""
    rows = np.concatenate([train, val, test])
    sub = table.iloc[rows].reset_index(drop=True).copy()
    sub["avaeSplit"] = ["train"] * len(train) + ["validation"] * len(val) + ["test"] * len(test)
    return rows, sub


def epochs_for(n_train: int, n_ref: int, epochs_ref: int, batch_size: int, budget: str) -> int:
    """Epochs of a training set of ``n_train`` particles: ``epochs_ref`` (budget epochs) or the
    epochs giving the optimiser steps of ``epochs_ref`` epochs on ``n_ref`` (budget steps)."""
    if budget == "epochs":
        return int(epochs_ref)
    steps = epochs_ref * math.ceil(n_ref / batch_size)
    return max(1, round(steps / math.ceil(n_train / batch_size)))


# ------------------------------------------------------------------ train + score
def train_and_score(X: np.ndarray, sub: pd.DataFrame, rows: np.ndarray, affinity_path: Path,
                    cfg: Mapping[str, Any], variant: str, epochs: int, device: str,
                    ) -> dict[str, Any]:
    """Train one variant on one size's data set (X[rows], STAR rows ``sub``) as the train stage
    does and score it as the evaluate stage does. Returns analyse_latents' metrics + timings."""
    import torch

    from affinity_vae.data import training_data
    from affinity_vae.evaluate.analyse import analyse_latents
    from affinity_vae.evaluate.encode import encode
    from affinity_vae.evaluate.latents import latents_frame
    from affinity_vae.io.affinity_csv import read_affinity
    from affinity_vae.model.vae import check_architecture
    from affinity_vae.train import fit, resolve_device, variant_configs

    seed = int(cfg["seed"])
    model_cfg, train_cfg = variant_configs({**cfg["model"], "gmd_physics": None},
                                           {**cfg["train"], "epochs": int(epochs)}, variant)
    boxes = X[rows]
    data = training_data(boxes, sub, affinity_path, train_cfg["validation_fraction"], seed)
    model_cfg = check_architecture(model_cfg, data.box)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    model, _ = fit(data, model_cfg, train_cfg, seed, None, dev, progress=False,
                   tilt_range=tuple(cfg["simulate"]["tilt_range"]))
    t1 = time.perf_counter()
    del data
    model = model.to(dev)
    mu, logvar, pose = encode(model, boxes, int(cfg["evaluate"].get("batch_size", 256)), str(dev))
    lat = latents_frame(sub, mu, logvar, pose)
    classes = [c for c in read_affinity(affinity_path).index if c in set(sub["avaeClass"])]
    torch.manual_seed(seed)
    res = analyse_latents(lat, classes, read_affinity(affinity_path), cfg["evaluate"], seed, {})
    res["train_s"], res["eval_s"] = t1 - t0, time.perf_counter() - t1
    res["steps"] = int(epochs) * math.ceil(int((sub["avaeSplit"] == "train").sum())
                                           / int(train_cfg["batch_size"]))
    return res


def table_row(variant: str, n: int, res: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """One row of the learning-curve table: the size groups' F1 from the per-class F1 by
    ``mean_f1_by_group`` (the paper's scoring; checked against evaluate's ``groups`` when
    ``res`` has them), then the per-class F1 as ``f1_<class>``."""
    per = {c: float(v["f1"]) if isinstance(v, Mapping) else float(v)
           for c, v in res["per_class"].items()}
    groups = mean_f1_by_group(per, SHREC_SIZE_GROUPS)
    row: dict[str, Any] = {"variant": variant, "particles_per_class": int(n),
                           "epochs": int(epochs), "steps": res.get("steps")}
    row |= {g: groups.get(g, float("nan")) for g in GROUPS}
    for g, v in (res.get("groups") or {}).items():  # evaluate's own groups must agree
        if g.startswith("size/") and not math.isclose(v, row[g[5:]], abs_tol=1e-12):
            raise AssertionError(f"{g}: evaluate says {v}, mean_f1_by_group {row[g[5:]]}")
    row |= {k: res.get(k) for k in ("macro_f1", "accuracy", "affinity_pearson_r",
                                     "train_s", "eval_s")}
    row |= {f"f1_{c}": per[c] for c in sorted(per)}
    return row


# ------------------------------------------------------------------ outputs
def markdown(df: pd.DataFrame, budget: str) -> str:
    """Size-group F1 per particles-per-class, aVAE and beta-VAE side by side, + the paper."""
    head = ["particles / class", "epochs"] + [f"{VARIANTS[v]} {g}" for v in VARIANTS
                                              for g in GROUPS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, grp in df.groupby("particles_per_class"):
        by = grp.set_index("variant")
        cells = [str(n), str(int(grp["epochs"].iloc[0]))]
        cells += [f"{by.loc[v, g]:.3f}" if v in by.index else "" for v in VARIANTS
                  for g in GROUPS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| paper CNN-aVAE (Table 1) | | " + " | ".join(
        f"{PAPER_CNN_AVAE[g]:.3f}" for g in GROUPS) + " | | | |")
    note = ("same optimiser steps for every size" if budget == "steps" else
            "same epochs for every size")
    return ("Size-group F1 (mean per-class F1 of the group's classes, test tomograms) vs "
            f"training particles per class; budget: {note}.\n\n" + "\n".join(lines) + "\n")


def plot(df: pd.DataFrame, path: Path, title: str) -> None:
    """Size-group F1 vs particles per class: aVAE solid, beta-VAE dashed, paper dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for i, g in enumerate(GROUPS):
        for v, style in (("avae", "-o"), ("bvae", "--s")):
            d = df[df["variant"] == v].sort_values("particles_per_class")
            ax.plot(d["particles_per_class"], d[g], style, color=f"C{i}",
                    label=f"{g} {VARIANTS[v]}")
        ax.axhline(PAPER_CNN_AVAE[g], color=f"C{i}", ls=":", lw=1,
                   label=f"{g} paper CNN-aVAE")
    ax.set_xscale("log")
    ax.set_xticks(sorted(df["particles_per_class"].unique()))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set(xlabel="training particles per class", ylabel="size-group F1 (mean per-class F1)",
           ylim=(0, 1), title=title)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record_all(df: pd.DataFrame, results: Path, note: str) -> None:
    """results.json entries learning_curve_<group>_f1_<variant>_<n> (baseline: the paper's
    CNN-aVAE value of the group)."""
    from benchmarks import _common

    _common.RESULTS = results
    for r in df.itertuples():
        for g in GROUPS:
            _common.record(f"learning_curve_{g}_f1_{r.variant}_{r.particles_per_class}",
                           float(getattr(r, g)), "F1", baseline=PAPER_CNN_AVAE[g],
                           note=f"{VARIANTS[r.variant]}, {r.particles_per_class} training "
                                f"particles per class, {r.epochs} epochs; {note}; baseline = "
                                f"paper's CNN-aVAE")


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    from threadpoolctl import threadpool_limits

    from affinity_vae.data import load_subtomos

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    merged = merged_config(data_overlay(args))
    cfg = full_config(merged)
    if args.epochs is None:
        args.epochs = int(cfg["train"]["epochs"]) if args.gpu else 20
    cfg_path = args.out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(merged, sort_keys=False))
    t0 = time.perf_counter()
    run_pipeline(cfg_path, args.threads)
    run_dir = REPO / "results" / args.run
    tomos = [f"model_{i}" for i in range(cfg["simulate"]["n_tomograms"])]
    X, table = load_subtomos([run_dir / "subtomos" / f"{t}.mrcs" for t in tomos],
                             [run_dir / "subtomos" / f"{t}.star" for t in tomos])
    prep_s = time.perf_counter() - t0
    labels = table["avaeClass"].astype(str).to_numpy(object)
    split = table["avaeSplit"].astype(str).to_numpy(object)
    val, subsets = nested_subsets(labels, split == "train", args.sizes, args.val_per_class,
                                  args.seed)
    test = np.flatnonzero(split == "test")
    bs, n_ref = int(cfg["train"]["batch_size"]), len(subsets[max(args.sizes)])
    log.info("data ready in %.0f s: %d particles, %d test, %d validation", prep_s, len(X),
             len(test), len(val))
    done_path = args.out / "rows.json"
    key = hashlib.sha1(json.dumps([merged, args.sizes, args.epochs, args.budget],
                                  sort_keys=True)
                       .encode()).hexdigest()[:10]
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    done = {k: v for k, v in done.items() if k.startswith(key)}
    for n in args.sizes:
        rows, sub = split_table(table, subsets[n], val, test)
        epochs = epochs_for(len(subsets[n]), n_ref, args.epochs, bs, args.budget)
        for variant in VARIANTS:
            k = f"{key}-{variant}-{n}"
            if k not in done:
                with threadpool_limits(args.threads):
                    res = train_and_score(X, sub, rows, run_dir / "affinity" / "affinity.csv",
                                          cfg, variant, epochs, args.device)
                done[k] = table_row(variant, n, res, epochs)
                done_path.write_text(json.dumps(done, indent=1))
            r = done[k]
            log.info("%s n=%d: %d epochs, small %.3f medium %.3f large %.3f (train %.0f s, "
                     "eval %.0f s)", variant, n, epochs, r["small"], r["medium"], r["large"],
                     r["train_s"], r["eval_s"])
    df = pd.DataFrame(list(done.values())).sort_values(["particles_per_class", "variant"])
    df.to_csv(args.out / "learning_curve.csv", index=False)
    (args.out / "learning_curve.md").write_text(markdown(df, args.budget))
    budget = f"same optimiser steps ({args.epochs} epochs at {max(args.sizes)}/class)" \
        if args.budget == "steps" else f"same epochs ({args.epochs})"
    plot(df, args.out / "learning_curve.png",
         f"SHREC classes, {budget}" + (" [quick]" if args.quick else ""))
    note = (f"12 SHREC classes simulated at the default SNR, denoise "
            f"{'on' if args.denoise else 'off'}, {len(test)} test particles, {len(val)} "
            f"validation; {budget}; device {args.device}, {args.threads} thread(s)")
    record_all(df, args.out / "results.json" if args.quick else REPO / "benchmarks" /
               "results.json", note)
    print(markdown(df, args.budget))
    print(f"data preparation {prep_s:.0f} s; per size and variant (train + eval s):")
    print(df[["variant", "particles_per_class", "epochs", "steps", "train_s",
              "eval_s"]].to_string(index=False))
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
