"""`make paper`: the paper's SHREC experiments (Figs. 3-7, Table 1) and Fig. 2, run in order and
collated into ``results/<prefix>/`` (docs/paper.md).

    python -m affinity_vae.paper run [--cores 2] [--jobs 2] [--structures DIR] [--data DIR]
                                     [--quick]
    python -m affinity_vae.paper collate [--prefix paper]

``run`` starts one Snakemake run per entry of :data:`RUNS` (``recon_cnn`` first, with every core:
it simulates the tomograms and computes the SOAP prior the other SHREC runs read; then the rest,
``--jobs`` at a time) and then ``collate``. ``collate`` reads each run's ``eval/metrics.json`` and
figures and writes table1.csv / table1.md (the paper's published numbers, :data:`PUBLISHED`,
beside this project's), fig2.png .. fig7.png and README.md (one line a figure).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)

# The paper's published numbers (Famili et al., Table 1 and section 4.2): the one place they live.
# Size rows: mean per-class F1 of the SHREC 2021 size group's classes; accuracy: aVAE vs beta-VAE.
PUBLISHED: dict[str, dict[str, float]] = {
    "TM (published)": {"small": 0.233, "medium": 0.542, "large": 0.903},
    "DeepFinder (published)": {"small": 0.563, "medium": 0.882, "large": 0.985},
    "best SHREC 2021 (published)": {"small": 0.594, "medium": 0.893, "large": 0.998},
    "CNN-aVAE (paper)": {"small": 0.531, "medium": 0.617, "large": 0.936},
    "GMD-aVAE (paper)": {"small": 0.517, "medium": 0.609, "large": 0.945},
    "aVAE (paper)": {"accuracy": 0.67},
    "beta-VAE (paper)": {"accuracy": 0.50},
}
ROWS = ["small", "medium", "large", "accuracy", "macro-F1", "Pearson r", "best attainable r",
        "pose error, deg", "pose error, random rotations, deg"]
MODEL_NAMES = {"cnn": "CNN-aVAE", "gmd": "GMD-aVAE", "bvae": "beta-VAE"}


@dataclass(frozen=True)
class PaperRun:
    """One Snakemake run of `make paper`: its config files (repo-relative, in order), the paper's
    dataset variant, and its models {variant in metrics.json: column name}."""

    key: str
    configfiles: tuple[str, ...]
    variant: str
    models: tuple[tuple[str, str], ...]
    shrec: bool = True  # a SHREC run (else the 2D alphanumeric one)
    first: bool = False  # simulates the tomograms and computes the prior the others read


_C = "config/paper/common.yaml"
# In order: the first alone, then the rest longest first (they share the slots in this order).
RUNS: tuple[PaperRun, ...] = (
    PaperRun("recon_cnn", (_C, "config/paper/recon_cnn.yaml"), "(iii) reconstruction",
             (("avae", "CNN-aVAE"), ("bvae", "beta-VAE")), first=True),
    PaperRun("recon_gmd", (_C, "config/paper/recon_gmd.yaml"), "(iii) reconstruction",
             (("avae", "GMD-aVAE"),)),
    PaperRun("grandmodel_gmd", (_C, "config/paper/grandmodel_gmd.yaml"),
             "(ii) ground-truth volume", (("avae", "GMD-aVAE"),)),
    PaperRun("isolated_cnn", (_C, "config/paper/isolated_cnn.yaml"), "(i) single proteins",
             (("avae", "CNN-aVAE"),)),
    PaperRun("alphanumeric", ("config/alphanumeric.yaml",), "2D alphanumeric",
             (("avae", "CNN-aVAE"),), shrec=False),
)
QUICK = {True: "tests/configs/paper_quick/shrec.yaml",
         False: "tests/configs/paper_quick/alphanumeric.yaml"}
# figure -> (run key, file under results/<run>/figures/, one line for the index)
FIGURES: dict[str, tuple[str, str, str]] = {
    "fig2": ("alphanumeric", "fig2.png", ("2D alphanumeric glyphs (v unseen): UMAP, pose sweep, "
                                         "pose vs angle, confusion (CNN-aVAE)")),
    "fig3": ("isolated_cnn", "fig3.png", ("variant (i), 3D2F and 3H84 unseen: SOAP prior, UMAP, "
                                         "pose sweep (CNN-aVAE)")),
    "fig4": ("grandmodel_gmd", "fig4.png", "pose sweep of 2CG9, decoded (GMD-aVAE, variant ii)"),
    "fig5": ("grandmodel_gmd", "fig5.png", ("linear latent interpolation between two class "
                                           "means, decoded (GMD-aVAE, variant ii)")),
    "fig6": ("grandmodel_gmd", "", ("variant (ii): latent cosine similarity vs the prior, UMAP, "
                                   "decoded class means (GMD-aVAE)")),
    "fig7": ("recon_cnn", "", ("variant (iii): normalised test confusion and per-class F1 of "
                              "CNN-aVAE, beta-VAE and GMD-aVAE")),
}


def run_name(prefix: str, key: str) -> str:
    return f"{prefix}_{key}"


def overlay(run: PaperRun, prefix: str, structures: str | None = None,
            data: str | None = None) -> dict[str, Any]:
    """The config written after a run's own files: its run name, where the shared tomograms and
    prior are (results/<prefix>_recon_cnn/), and the --structures / --data overrides."""
    name = run_name(prefix, run.key)
    if not run.shrec:
        return {"run": name, "affinity": {"path": f"results/{name}/affinity/glyph.csv"}}
    out: dict[str, Any] = {"run": name}
    first = f"results/{run_name(prefix, RUNS[0].key)}"
    if not run.first:
        out["dataset"] = {"path": f"{first}/data/simulated"}
        out["affinity"] = {"method": "file", "path": f"{first}/affinity/soap.csv"}
    if data:
        out["dataset"] = {"source": "shrec", "path": str(Path(data).resolve())}
    if structures:
        out["structures"] = {"source": "dir", "path": str(Path(structures).resolve())}
    return out


def snakemake_command(run: PaperRun, prefix: str, cores: int, quick: bool,
                      structures: str | None, data: str | None, config_dir: Path,
                      nolock: bool = False) -> list[str]:
    """The snakemake command line of one run; writes its overlay to config_dir/<run>.yaml.

    ``nolock``: for runs started side by side from one directory. Their outputs are disjoint
    (results/<prefix>_<run>/), but Snakemake's lock files in .snakemake/locks are numbered per
    directory and two starting runs race on them (measured: FileNotFoundError on
    0.input.lock)."""
    files = list(run.configfiles)
    if data and run.shrec:
        files.append("config/paper/real_data.yaml")
    if quick:
        files.append(QUICK[run.shrec])
    config_dir.mkdir(parents=True, exist_ok=True)
    extra = config_dir / f"{run.key}.yaml"
    extra.write_text(yaml.safe_dump(overlay(run, prefix, structures, data), sort_keys=False))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    lock = ["--nolock"] if nolock else []
    return [snakemake, "all", "--cores", str(cores), *lock, "--configfile", *files, str(extra)]


def run_all(prefix: str = "paper", cores: int = 2, jobs: int = 2, quick: bool = False,
            structures: str | None = None, data: str | None = None,
            repo: str | Path = ".") -> dict[str, int]:
    """Run every paper run, then :func:`collate`: the first run alone with all ``cores`` (it
    makes the tomograms and the prior the SHREC runs read; its two models train side by side),
    then the others ``jobs`` at a time with ``cores // jobs`` cores each. Returns {run key: exit
    status}; each run's Snakemake output is in results/<prefix>/logs/<key>.log."""
    repo = Path(repo).resolve()
    out = repo / "results" / prefix
    (out / "logs").mkdir(parents=True, exist_ok=True)

    def one(run: PaperRun, n: int, side_by_side: bool = False) -> int:
        cmd = snakemake_command(run, prefix, n, quick, structures, data, out / "configs",
                                nolock=side_by_side)
        t0 = time.perf_counter()
        with open(out / "logs" / f"{run.key}.log", "w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            rc = subprocess.run(cmd, cwd=repo, stdout=fh, stderr=subprocess.STDOUT,
                                check=False).returncode
        log.info("%s: exit %d after %.0f s", run_name(prefix, run.key), rc,
                 time.perf_counter() - t0)
        return rc

    first, rest = RUNS[0], RUNS[1:]
    status = {first.key: one(first, max(1, cores))}
    if status[first.key] == 0:
        per_run = max(1, cores // max(1, jobs))
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {r.key: pool.submit(one, r, per_run, jobs > 1) for r in rest}
            status |= {k: f.result() for k, f in futures.items()}
    collate(prefix, repo)
    return status


# ------------------------------------------------------------------ collation
def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def model_scores(m: Mapping[str, Any], top: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table 1's rows of one model from its metrics: size groups (metrics ``groups`` =
    the paper's mean per-class F1), accuracy, macro-F1, Pearson r, best attainable r (the
    model's ``affinity_attainable``, else ``top``'s: the same classes and latent size)."""
    best = _get(m, "affinity_attainable", "best_pearson_r")
    if best is None and top is not None:
        best = _get(top, "affinity_attainable", "best_pearson_r")
    row = {g: _get(m, "groups", f"size/{g}") for g in ("small", "medium", "large")}
    return row | {"accuracy": m.get("accuracy"), "macro-F1": m.get("macro_f1"),
                  "Pearson r": m.get("affinity_pearson_r"), "best attainable r": best,
                  "pose error, deg": _get(m, "pose", "median_error_deg"),
                  "pose error, random rotations, deg": _get(m, "pose",
                                                            "random_median_error_deg")}


def table1(metrics: Mapping[str, Mapping[str, Any] | None],
           tm: Mapping[str, Mapping[str, Any] | None] | None = None) -> pd.DataFrame:
    """Table 1: rows :data:`ROWS`, columns the published methods then this project's models,
    then template matching (TM) on the same test particles, one column a dataset variant.

    Args:
        metrics: {run key: that run's eval/metrics.json, or None when it is missing}.
        tm: {run key: that run's eval/tm/metrics.json, or None}; runs of one dataset variant
            share their data, so the first run of a variant with TM gives its column.
    """
    cols: dict[str, dict[str, Any]] = {k: dict(v) for k, v in PUBLISHED.items()}
    for run in RUNS:
        if not run.shrec:
            continue
        m = metrics.get(run.key)
        for variant, model in run.models:
            d = None if m is None else (m if variant == "avae" else m.get("baseline"))
            name = f"{model} {run.variant.split()[0]}, this project"
            cols[name] = model_scores(d, m) if d is not None else {}
    for run in RUNS:
        name = f"TM {run.variant.split()[0]}, this project"
        t = (tm or {}).get(run.key)
        if run.shrec and t is not None and not cols.get(name):
            cols[name] = model_scores(t)
    t = pd.DataFrame({c: {r: v.get(r) for r in ROWS} for c, v in cols.items()})
    return t.rename_axis("measure")


def _cell(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def write_table1(t: pd.DataFrame, csv: Path, md: Path) -> None:
    with atomic_path(csv) as tmp:
        t.to_csv(tmp)
    lines = ["| measure | " + " | ".join(t.columns) + " |", "|---|" + "---|" * len(t.columns)]
    lines += [f"| {r} | " + " | ".join(_cell(v) for v in row) + " |" for r, row in t.iterrows()]
    lines += ["", ("Rows small / medium / large: mean per-class F1 (test tomogram) of the SHREC "
              "2021 size group's classes, the paper's scoring. Variants: (i) single proteins, "
              "(ii) crops of the ground-truth volume, (iii) crops of the reconstruction. TM: "
              "template matching on the same test particles (eval/tm/). Pose error: median "
              "symmetry-aware angular error on the test tomogram (learned pose: after one fitted "
              "frame per class; TM: in the template's frame). "
              "'–': not reported / not measured.")]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, index_col=0)
    df.index, df.columns = df.index.astype(str), df.columns.astype(str)
    return df


def _fig6(run_dir: Path, metrics: Mapping[str, Any], path: Path, dpi: int) -> None:
    from affinity_vae.figures import _sweep, fig6

    ev = run_dir / "eval" / "avae"
    emb = pd.read_csv(ev / "embedding.csv")
    emb["class"] = emb["class"].astype(str)
    grid, names = _sweep(ev / "volumes")
    fig6(_read_csv(run_dir / "affinity" / "affinity.csv"),
         {"avae": _read_csv(ev / "similarity.csv")}, {"avae": metrics["affinity_pearson_r"]},
         path, dpi, emb=emb, decoded=None if grid is None else (grid[:-1], names[:-1]))


def _fig7(runs: Mapping[str, Path], metrics: Mapping[str, Mapping], path: Path, dpi: int) -> None:
    from affinity_vae.figures import fig7

    conf, per_class = {}, {}
    for run in RUNS:
        if run.key not in metrics or not run.shrec or not run.variant.startswith("(iii)"):
            continue
        for variant, model in run.models:
            m = metrics[run.key] if variant == "avae" else metrics[run.key].get("baseline")
            f = runs[run.key] / "eval" / variant / "confusion_norm.csv"
            if m is not None and f.is_file():
                conf[model], per_class[model] = _read_csv(f), m["per_class"]
        f = runs[run.key] / "eval" / "tm" / "metrics.json"
        if "TM" not in conf and f.is_file():
            conf["TM"] = _read_csv(f.parent / "confusion_norm.csv")
            per_class["TM"] = json.loads(f.read_text())["per_class"]
    if conf:
        fig7(conf, per_class, path, dpi)


def collate(prefix: str = "paper", repo: str | Path = ".", dpi: int = 150) -> pd.DataFrame:
    """Collect the runs of results/<prefix>_<key>/ into results/<prefix>/: table1.csv/md,
    fig2.png .. fig7.png (what exists) and README.md; returns Table 1."""
    repo = Path(repo)
    out = repo / "results" / prefix
    out.mkdir(parents=True, exist_ok=True)
    runs = {r.key: repo / "results" / run_name(prefix, r.key) for r in RUNS}
    metrics = {k: json.loads((d / "eval" / "metrics.json").read_text())
               for k, d in runs.items() if (d / "eval" / "metrics.json").is_file()}
    tm = {k: json.loads((d / "eval" / "tm" / "metrics.json").read_text())
          for k, d in runs.items() if (d / "eval" / "tm" / "metrics.json").is_file()}
    t = table1({r.key: metrics.get(r.key) for r in RUNS}, tm)
    write_table1(t, out / "table1.csv", out / "table1.md")
    made: dict[str, str] = {}
    for fig, (key, file, line) in FIGURES.items():
        target = out / f"{fig}.png"
        try:
            if fig == "fig6" and key in metrics:
                _fig6(runs[key], metrics[key], target, dpi)
            elif fig == "fig7":
                _fig7(runs, metrics, target, dpi)
            elif file and (runs[key] / "figures" / file).is_file():
                shutil.copyfile(runs[key] / "figures" / file, target)
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: not drawn (%s)", fig, err)
        if target.is_file():
            made[fig] = f"[{fig}.png]({fig}.png) — Fig. {fig[3:]}: {line} " \
                        f"(results/{run_name(prefix, key)})"
        else:
            made[fig] = f"{fig}.png — missing: run results/{run_name(prefix, key)} has no output"
    lines = [f"# The paper's experiments ({prefix})", "",
             "Regenerated by `make paper` (docs/paper.md).", ""]
    lines += [f"- {v}" for v in made.values()]
    lines += [("- [table1.md](table1.md) / [table1.csv](table1.csv) — Table 1: published methods "
              "beside this project's runs"), "", "## Table 1", "",
              (out / "table1.md").read_text()]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    return t


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m affinity_vae.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every paper run, then collate")
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--jobs", type=int, default=2, help="runs at a time (cores shared)")
    r.add_argument("--structures", help="local folder of <id>.pdb / <id>.mrc (else RCSB)")
    r.add_argument("--data", help="a SHREC 2021 download (model_0 .. model_9)")
    r.add_argument("--quick", action="store_true", help="the reduced CI variant")
    r.add_argument("--prefix", help="results/<prefix>_<run>/ (default paper, paper_quick)")
    c = sub.add_parser("collate", help="collate existing runs into results/<prefix>/")
    c.add_argument("--prefix", default="paper")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.cmd == "collate":
        collate(a.prefix)
        return 0
    prefix = a.prefix or ("paper_quick" if a.quick else "paper")
    status = run_all(prefix, a.cores, a.jobs, a.quick, a.structures, a.data)
    failed = {k: v for k, v in status.items() if v}
    for k in failed:
        log.error("run %s failed: see results/%s/logs/%s.log", run_name(prefix, k), prefix, k)
    missing = [r.key for r in RUNS if r.key not in status]
    if missing:
        log.error("not started (the first run failed): %s", ", ".join(missing))
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
