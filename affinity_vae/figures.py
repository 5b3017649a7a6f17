"""Stage `figures`: the paper's figures and Table 1 from cached evaluation results (no torch,
no retraining): everything is read from ``eval/`` and ``affinity/``.

- fig2.png (2D data only, paper Fig. 2): (a) UMAP with seen and unseen classes, (b) pose sweep
  decoded per class and for the mean latent, (c) inferred pose vs true angle, (d) confusion.
- fig3.png (Fig. 3): (a) the affinity prior, (b) UMAP of the aVAE latents, (c) pose sweep.
- fig4.png (Fig. 4, 3D data with a pose channel): the decoded pose sweep of one class (2cg9 when
  it is a training class, else the first), as z projections and central z slices.
- fig5.png (Fig. 5, 3D data): the decoded linear latent interpolation between two class means.
- fig6.png (Fig. 6): learned class-mean cosine similarity of aVAE and beta-VAE beside the prior,
  with the Pearson r of the off-diagonal pairs (`make paper` adds the aVAE embedding and the
  decoded class means: :func:`fig6` with ``emb`` and ``decoded``).
- fig7.png (Fig. 7): normalised confusion matrices of both models (and TM) and per-class F1.
- table1.csv / table1.md (Table 1): aVAE vs beta-VAE (vs TM, the template-matching baseline on
  the same test particles, eval/tm/, when it ran) -- macro-F1, accuracy, group F1, Pearson r,
  unseen placement, pose (2D: Spearman rho; 3D: symmetry-aware median error beside its random
  baseline, the C1 classes alone, the probes, and the mean resolution of the subtomogram
  averages from predicted, true and random poses).

The evaluate stage's own figures (per model, registered in the HTML report) include pose.png and,
for a 3D model whose pose is a rotation, averages.png (affinity_vae.evaluate.averages).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.evaluate.figs import draw_prior_vs_learned, pose_scatter
from affinity_vae.evaluate.interpolate import view
from affinity_vae.evaluate.plots import draw_embedding, draw_heatmap, plt, save
from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)
NAMES = {"avae": "aVAE", "bvae": "beta-VAE", "tm": "TM"}


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table1(metrics: Mapping[str, Any], tm: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Table 1 from eval/metrics.json: one row a measure, one column a model; ``tm``: the
    template-matching baseline's eval/tm/metrics.json (same test particles), a column too."""
    models = {"aVAE": metrics}
    if "baseline" in metrics:
        models["beta-VAE"] = metrics["baseline"]
    if tm:
        models["TM"] = tm
    rows: dict[str, dict[str, Any]] = {}

    def put(name: str, getter) -> None:
        rows[name] = {m: getter(d) for m, d in models.items()}

    put("macro-F1 (test)", lambda d: d.get("macro_f1"))
    put("micro-F1 (test)", lambda d: d.get("micro_f1"))
    put("accuracy (test)", lambda d: d.get("accuracy"))
    groups = sorted({g for d in models.values() for g in d.get("groups", {})})
    for g in groups:
        put(f"group F1 {g}", lambda d, g=g: d.get("groups", {}).get(g))
    put("Pearson r (affinity vs latent cosine)", lambda d: d.get("affinity_pearson_r"))
    for u in sorted(metrics.get("unseen", {})):
        put(f"unseen {u}: nearest training class",
            lambda d, u=u: d.get("unseen", {}).get(u, {}).get("nearest_training_class"))
    if metrics.get("unseen"):
        u0 = sorted(metrics["unseen"])
        rows["most-affine training class"] = {
            m: ", ".join(f"{u}: {metrics['unseen'][u]['most_affine_training_class']}"
                         for u in u0) for m in models}
        put("unseen placed at most-affine class (fraction)", lambda d: d.get("unseen_agreement"))
    if any("spearman_rho" in d.get("pose", {}) for d in models.values()):
        put("pose spearman_rho", lambda d: d.get("pose", {}).get("spearman_rho"))
    if any("random_median_error_deg" in d.get("pose", {}) for d in models.values()):
        pose_rows(put)
    return pd.DataFrame(rows).T.rename_axis("measure")


def _get(d: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def pose_rows(put) -> None:
    """Table 1's 3D pose rows (metrics.json ``pose``, docs/evaluate.md): symmetry-aware median
    error on the test tomogram beside its computed random baseline, the same for the C1 classes,
    the probes, and the mean resolution of the subtomogram averages."""
    sc = "pose median error, deg (symmetry-aware, test)"
    put(sc, lambda d: _get(d, "pose", "median_error_deg"))
    put(f"{sc}: random baseline", lambda d: _get(d, "pose", "random_median_error_deg"))
    put("pose median error, deg, C1 classes", lambda d: _get(d, "pose", "asymmetric",
                                                             "median_error_deg"))
    put("pose median error, deg, C1 classes: random baseline",
        lambda d: _get(d, "pose", "asymmetric", "random_median_error_deg"))
    put("probe median error, deg: pose channel",
        lambda d: _get(d, "pose", "probe", "pose_channel_median_error_deg"))
    put("probe median error, deg: shape latent",
        lambda d: _get(d, "pose", "probe", "latent_median_error_deg"))
    for kind in ("predicted", "true", "random"):
        put(f"average resolution, A (FSC 0.5): {kind} poses",
            lambda d, k=kind: mean_resolution(_get(d, "pose", "averages"), k))


def mean_resolution(averages: Mapping[str, Mapping] | None, kind: str) -> float | str | None:
    """Mean over classes of ``resolution_A_<kind>``; a class whose FSC is below 0.5 from the
    first shell (null) is left out of the mean and counted: "41.2 (3 of 4 classes)"."""
    if not averages:
        return None
    vals = [a.get(f"resolution_A_{kind}") for a in averages.values()]
    ok = [float(v) for v in vals if v is not None and np.isfinite(v)]
    if len(ok) == len(vals):
        return float(np.mean(ok))
    return (f"{np.mean(ok):.1f} ({len(ok)} of {len(vals)} classes)" if ok else
            f"unresolved (0 of {len(vals)} classes)")


def write_table1(metrics: Mapping[str, Any], csv: str | Path, md: str | Path,
                 tm: Mapping[str, Any] | None = None) -> pd.DataFrame:
    t = table1(metrics, tm)
    with atomic_path(csv) as tmp:
        t.to_csv(tmp)
    lines = ["| measure | " + " | ".join(t.columns) + " |",
             "|---|" + "---|" * len(t.columns)]
    lines += ["| " + name + " | " + " | ".join(_fmt(v) for v in row) + " |"
              for name, row in t.iterrows()]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return t


def _embedding(ax, emb: pd.DataFrame, classes: Sequence[str], title: str) -> None:
    all_classes = list(classes) + sorted(set(emb["class"]) - set(classes))
    draw_embedding(ax, emb[["umap_x", "umap_y"]].to_numpy(), emb["class"],
                   emb["split"] == "unseen", all_classes, title)


def _montage_axes(fig, spec, grid: np.ndarray, names: Sequence[str], title: str,
                  mode: str = "projection") -> None:
    """Draw grid (R, S, *box) as small images (``mode``: projection or slice) in a GridSpec cell."""
    R, S = grid.shape[:2]
    sub = spec.subgridspec(R, S, wspace=0.02, hspace=0.05)
    for r in range(R):
        views = [view(grid[r, s], mode) for s in range(S)]
        lo, hi = float(np.min(views)), float(np.max(views))
        for s in range(S):
            ax = fig.add_subplot(sub[r, s])
            ax.imshow(views[s], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_ylabel(names[r], fontsize=6, rotation=0, ha="right", va="center")
            if r == 0 and s == S // 2 and title:
                ax.set_title(title, fontsize=9)


def _sweep(vol_dir: Path) -> tuple[np.ndarray | None, list[str]]:
    """The cached pose sweep (R, S, *box) and its row names, or (None, [])."""
    path = vol_dir / "pose_sweep.npz"
    if not path.is_file():
        return None, []
    with np.load(path) as f:
        return f["grid"], [str(n) for n in f["names"]]


def fig3(affinity: pd.DataFrame, emb: pd.DataFrame, classes: Sequence[str], vol_dir: Path,
         path: str | Path, dpi: int) -> None:
    grid, names = _sweep(vol_dir)
    fig = plt.figure(figsize=(17, 5.5))
    # the third column is room for the embedding's class legend
    gs = fig.add_gridspec(1, 4, width_ratios=[1, 1.2, 0.3, 1.3])
    ax = fig.add_subplot(gs[0])
    draw_heatmap(ax, affinity.to_numpy(float), list(affinity.index), list(affinity.columns),
                 "(a) affinity prior", annotate=False)
    _embedding(fig.add_subplot(gs[1]), emb, classes, "(b) aVAE latent space (UMAP)")
    if grid is not None:
        _montage_axes(fig, gs[3], grid, names, "(c) pose sweep (projections)")
    else:
        ax = fig.add_subplot(gs[3])
        ax.text(0.5, 0.5, "(c) no pose channel in this run", ha="center", va="center")
        ax.axis("off")
    save(fig, path, dpi)


def fig6(affinity: pd.DataFrame, sims: Mapping[str, pd.DataFrame], rs: Mapping[str, float],
         path: str | Path, dpi: int, emb: pd.DataFrame | None = None,
         decoded: tuple[np.ndarray, list[str]] | None = None) -> None:
    """Prior vs learned similarity per model; with ``emb`` (embedding.csv) and ``decoded``
    (grid (R, S, *box) of the pose sweep and its row names) a last row adds the aVAE's UMAP and
    each class decoded at its mean latent and the sweep's middle pose (column S // 2)."""
    extra = emb is not None or decoded is not None
    rows = len(sims) + extra
    fig = plt.figure(figsize=(18, 5.2 * rows), layout="constrained")
    gs = fig.add_gridspec(rows, 3)
    for k, (v, sim) in enumerate(sims.items()):
        order = [c for c in affinity.index if c in sim.index]
        axes = [fig.add_subplot(gs[k, j]) for j in range(3)]
        draw_prior_vs_learned(axes, affinity.loc[order, order], sim, rs[v], NAMES.get(v, v))
    if emb is not None:
        _embedding(fig.add_subplot(gs[-1, 0]), emb, list(affinity.index),
                   "aVAE latent space (UMAP)")
    if decoded is not None:
        grid, names = decoded
        mid = grid[:, grid.shape[1] // 2][None]  # (1, R, *box): one row, a class a column
        sub = gs[-1, 1:].subgridspec(2, 1)
        _montage_axes(fig, sub[0], mid, ["z proj."], "decoded class means", "projection")
        _montage_axes(fig, sub[1], mid, ["z slice"], "", "slice")
        for ax, n in zip(fig.axes[-len(names):], names):
            ax.set_xlabel(n, fontsize=6)
    save(fig, path, dpi)


def _sweep_row(grid: np.ndarray, names: Sequence[str], want: str) -> tuple[np.ndarray, str]:
    """Row (S, *box) of the class ``want`` (case-insensitive) in a pose sweep grid (R, S, *box),
    else the first row; and that row's name."""
    low = [n.lower() for n in names]
    i = low.index(want.lower()) if want.lower() in low else 0
    return grid[i], names[i]


def fig4(vol_dir: Path, path: str | Path, dpi: int, cls: str = "2cg9") -> None:
    """The decoded pose sweep of one class (the paper shows 2CG9), projections over slices."""
    grid, names = _sweep(vol_dir)
    fig = plt.figure(figsize=(12, 3.6))
    if grid is None:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no pose channel in this run", ha="center", va="center")
        ax.axis("off")
    else:
        row, name = _sweep_row(grid, names, cls)
        both = np.stack([row, row])
        sub = fig.add_gridspec(2, 1)
        _montage_axes(fig, sub[0], both[:1], [f"{name}\nz proj."],
                      f"pose sweep of {name} (decoded)", "projection")
        _montage_axes(fig, sub[1], both[1:], [f"{name}\nz slice"], "", "slice")
    save(fig, path, dpi)


def fig5(vol_dir: Path, path: str | Path, dpi: int) -> None:
    """The decoded linear interpolation between two class means (volumes/interpolation.npz)."""
    fig = plt.figure(figsize=(12, 3.6))
    f = vol_dir / "interpolation.npz"
    if not f.is_file():
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no interpolation in this run", ha="center", va="center")
        ax.axis("off")
    else:
        with np.load(f) as d:
            grid, name = d["grid"], str(d["names"][0])
        modes = ["projection", "slice"] if grid.ndim == 5 else ["slice"]
        sub = fig.add_gridspec(len(modes), 1)
        for k, m in enumerate(modes):
            where = "z proj." if m == "projection" else "z slice"
            _montage_axes(fig, sub[k], grid, [f"{name}\n{where}"],
                          "latent interpolation (decoded)" if k == 0 else "", m)
    save(fig, path, dpi)


def fig7(conf: Mapping[str, pd.DataFrame], per_class: Mapping[str, Mapping], path: str | Path,
         dpi: int) -> None:
    n = len(conf)
    fig, axes = plt.subplots(1, n + 1, figsize=(6 * (n + 1), 5.5), squeeze=False,
                             layout="constrained")
    for ax, (v, table) in zip(axes[0], conf.items()):
        draw_heatmap(ax, table.to_numpy(float), list(table.index), list(table.columns),
                     f"{NAMES.get(v, v)}: normalised confusion (test)", vmin=0, vmax=1,
                     cmap="Blues", annotate=True)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    ax = axes[0, -1]
    classes = list(next(iter(per_class.values())))
    width = 0.8 / len(per_class)
    for k, (v, pc) in enumerate(per_class.items()):
        ax.bar(np.arange(len(classes)) + k * width, [pc.get(c, {}).get("f1", 0) for c in classes],
               width, label=NAMES.get(v, v))
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (test)")
    ax.legend(fontsize=8)
    ax.set_title("per-class F1", fontsize=9)
    save(fig, path, dpi)


def fig2(emb: pd.DataFrame, lat: pd.DataFrame, metrics: Mapping[str, Any],
         conf: pd.DataFrame, classes: Sequence[str], vol_dir: Path, path: str | Path,
         dpi: int) -> None:
    fig = plt.figure(figsize=(20, 5.5))
    gs = fig.add_gridspec(1, 4, width_ratios=[1.2, 1.2, 1, 1])
    _embedding(fig.add_subplot(gs[0]), emb, classes, "(a) UMAP, unseen marked X")
    grid, names = _sweep(vol_dir)
    if grid is not None:
        _montage_axes(fig, gs[1], grid, names, "(b) pose sweep")
    ax = fig.add_subplot(gs[2])
    p = metrics.get("pose", {})
    if "spearman_rho" in p:
        scored = lat["split"].isin(["validation", "test"]) & lat["class"].isin(classes)
        if not scored.any():
            scored = lat["class"].isin(classes)
        sub = lat[scored]
        pose_scatter(ax, sub[f"pose_{p.get('dimension', 0)}"].to_numpy(),
                     sub["euler_z1"].to_numpy(), sub["class"].to_numpy(), classes,
                     p["spearman_rho"])
        ax.set_title(f"(c) {ax.get_title()}", fontsize=9)
    ax = fig.add_subplot(gs[3])
    draw_heatmap(ax, conf.to_numpy(float), list(conf.index), list(conf.columns),
                 "(d) normalised confusion", vmin=0, vmax=1, cmap="Blues")
    save(fig, path, dpi)


def make_figures(eval_dir: str | Path, affinity_path: str | Path, out: Mapping[str, str],
                 dpi: int = 150, tm_path: str | Path | None = None) -> pd.DataFrame:
    """Write every figure named in ``out`` (keys fig2, fig3, fig4, fig5, fig6, fig7, table1_csv,
    table1_md) from the cached evaluation in ``eval_dir``; returns Table 1. ``tm_path``: the
    template-matching metrics (eval/tm/metrics.json), a column of Table 1 and of Fig. 7."""
    eval_dir = Path(eval_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    tm = json.loads(Path(tm_path).read_text()) if tm_path else None
    variants = ["avae"] + (["bvae"] if "baseline" in metrics else [])
    per_variant = {"avae": metrics, **({"bvae": metrics["baseline"]} if "baseline" in metrics
                                       else {})}
    affinity = pd.read_csv(affinity_path, index_col=0)
    affinity.index, affinity.columns = affinity.index.astype(str), affinity.columns.astype(str)
    classes = list(metrics["per_class"])
    classes = [c for c in affinity.index if c in classes] + [c for c in classes
                                                             if c not in affinity.index]
    read = {v: {"sim": pd.read_csv(eval_dir / v / "similarity.csv", index_col=0),
                "conf": pd.read_csv(eval_dir / v / "confusion_norm.csv", index_col=0),
                "emb": pd.read_csv(eval_dir / v / "embedding.csv")} for v in variants}
    for r in read.values():
        for k in ("sim", "conf"):
            r[k].index, r[k].columns = r[k].index.astype(str), r[k].columns.astype(str)
        r["emb"]["class"] = r["emb"]["class"].astype(str)
    table = write_table1(metrics, out["table1_csv"], out["table1_md"], tm)
    if "fig3" in out:
        order = [c for c in affinity.index if c in read["avae"]["sim"].index]
        fig3(affinity.loc[order, order], read["avae"]["emb"], classes,
             eval_dir / "avae" / "volumes", out["fig3"], dpi)
    if "fig6" in out:
        fig6(affinity, {v: read[v]["sim"] for v in variants},
             {v: per_variant[v]["affinity_pearson_r"] for v in variants}, out["fig6"], dpi)
    if "fig7" in out:
        conf = {v: read[v]["conf"] for v in variants}
        per_class = {v: per_variant[v]["per_class"] for v in variants}
        if tm is not None:
            conf["tm"], per_class["tm"] = tm_confusion(Path(tm_path)), tm["per_class"]
        fig7(conf, per_class, out["fig7"], dpi)
    vol_dir = eval_dir / "avae" / "volumes"
    if "fig4" in out:
        fig4(vol_dir, out["fig4"], dpi)
    if "fig5" in out:
        fig5(vol_dir, out["fig5"], dpi)
    if "fig2" in out:
        lat = pd.read_parquet(eval_dir / "avae" / "latents.parquet")
        fig2(read["avae"]["emb"], lat, metrics, read["avae"]["conf"], classes,
             eval_dir / "avae" / "volumes", out["fig2"], dpi)
    return table


def tm_confusion(tm_path: Path) -> pd.DataFrame:
    """TM's row-normalised confusion table (confusion_norm.csv beside its metrics.json)."""
    t = pd.read_csv(Path(tm_path).parent / "confusion_norm.csv", index_col=0)
    t.index, t.columns = t.index.astype(str), t.columns.astype(str)
    return t


def main(smk: Any) -> None:
    """Rule ``figures_build``."""
    out = {k: str(v) for k, v in smk.output.items()}
    tm = list(smk.input.get("tm", None) or [])
    make_figures(Path(smk.input.metrics).parent, smk.input.affinity, out,
                 int(smk.params.report["dpi"]), tm[0] if tm else None)
