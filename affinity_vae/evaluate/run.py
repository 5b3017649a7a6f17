"""Orchestration of the evaluate rules: one variant (``evaluate_variant``) and the summary.

:func:`analyse_latents` is torch-free (classification, group scores, confusion, prior vs learned
and whether the prior is attainable in the latent dimensions, unseen placement, embeddings) and is what the tests drive with synthetic latents;
:func:`evaluate_variant` adds encoding, pose metrics, subtomogram averages from the predicted
poses (3D, when the pose is a rotation) and decoded interpolations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.attainable import attainability
from affinity_vae.errors import InputError
from affinity_vae.evaluate import classify, embed, figs, metrics, unseen
from affinity_vae.evaluate.latents import block
from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)
FIT_SPLITS = ("train", "validation")


def write_json(path: str | Path, data: Any) -> None:
    """Write strict JSON atomically (NaN/inf become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2, default=_plain,
                                  allow_nan=False) + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    return o


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_csv(path: str | Path, df: pd.DataFrame, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def read_affinity(path: str | Path) -> pd.DataFrame:
    """The affinity CSV (class names on both axes) as a float DataFrame."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: affinity matrix not found -- run `snakemake affinity`")
    df = pd.read_csv(path, index_col=0)
    df.index, df.columns = df.index.astype(str), df.columns.astype(str)
    if list(df.index) != list(df.columns):
        raise InputError(f"{path}: row and column class names differ -- re-run `snakemake "
                         f"affinity`")
    return df.astype(float)


def read_manifest(path: str | Path | None) -> pd.DataFrame | None:
    """structures/manifest.csv (``path`` may be the structures folder); None when absent."""
    if not path:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"class": str, "family": str}, keep_default_na=False)


def learned_similarity(lat: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Class-mean cosine similarity (classes in ``order``) from held-out particles (test,
    validation and unseen splits); a class with none there falls back to its training ones."""
    mu = block(lat, "mu")
    held = ~lat["split"].isin(["train"]).to_numpy()
    labels = lat["class"].to_numpy(object)
    use = held.copy()
    for c in order:
        m = labels == c
        if m.any() and not (m & held).any():
            use |= m
    return unseen.class_mean_cosine(mu[use], labels[use], order)


def analyse_latents(lat: pd.DataFrame, classes: Sequence[str], affinity: pd.DataFrame,
                    cfg: Mapping[str, Any], seed: int, out: Mapping[str, str],
                    manifest: pd.DataFrame | None = None, dpi: int = 150,
                    label: str = "") -> dict[str, Any]:
    """Everything that needs only the latents table; writes the files named in ``out``.

    Args:
        lat: latents table (see affinity_vae.evaluate.latents).
        classes: training classes (affinity order); cfg: the ``evaluate`` config section.
        out: paths for keys predictions, confusion, confusion_norm, confusion_png,
            confusion_norm_png, similarity, similarity_png, unseen, unseen_png, embedding,
            umap_png, tsne_png (missing keys are skipped).
    Returns:
        metrics (DESIGN.md keys except pose).
    """
    mu = block(lat, "mu")
    labels = lat["class"].to_numpy(object)
    split = lat["split"].to_numpy(object)
    seen = np.isin(labels, list(classes)) & (split != "unseen")
    fit, test = seen & np.isin(split, FIT_SPLITS), seen & (split == "test")
    if not test.any():
        raise InputError("no test particles of a training class -- name a test tomogram in "
                         "dataset.splits.test (or folder_splits.test for subtomo_folder)")
    est, info = classify.fit_classifier(
        mu[fit], labels[fit], cfg.get("classifier", "mlp"), seed, cfg.get("cv_folds", 5),
        mlp_hidden=cfg.get("mlp_hidden", [[32], [64], [64, 32]]),
        mlp_alpha=cfg.get("mlp_alpha", [1e-4, 1e-3, 1e-2]),
        knn_neighbors=cfg.get("knn_neighbors", [1, 3, 5, 9, 15]))
    pred = est.predict(mu[test])
    res = metrics.classification_metrics(labels[test], pred, classes)
    res["classifier"] = info
    schemes = metrics.build_groups(classes, manifest, cfg.get("structural_groups", {}),
                                   cfg.get("groups", {}))
    res["groups"] = metrics.group_f1(res["per_class"], schemes)  # the paper's scoring
    res["groups_merged"] = metrics.merged_group_f1(labels[test], pred, schemes)
    if "predictions" in out:
        pt = lat.loc[test, ["tomogram", "stack_index", "x", "y", "z", "class"]].copy()
        pt["predicted"] = pred
        write_csv(out["predictions"], pt, index=False)
    counts, norm = metrics.confusion_tables(labels[test], pred, classes)
    for key, table, normed in (("confusion", counts, False), ("confusion_norm", norm, True)):
        if key in out:
            write_csv(out[key], table)
        if f"{key}_png" in out:
            metrics.plot_confusion(table, out[f"{key}_png"], f"{label} confusion on the test "
                                   f"tomogram{' (row-normalised)' if normed else ''}".strip(),
                                   normed, dpi)
    # prior vs learned
    order = [c for c in affinity.index if c in set(labels)]
    sim = learned_similarity(lat, order)
    aff = affinity.loc[order, order]
    seen_order = [c for c in order if c in classes]
    res["affinity_pearson_r"] = unseen.offdiag_pearson(aff.loc[seen_order, seen_order],
                                                       sim.loc[seen_order, seen_order])
    res["affinity_pearson_r_all"] = unseen.offdiag_pearson(aff, sim)
    train_order = [c for c in affinity.index if c in set(classes)]
    res["affinity_attainable"] = attainability(affinity.loc[train_order, train_order].to_numpy(),
                                               mu.shape[1])
    log.info("%s prior vs learned: Pearson r %.3f (training classes); best reachable r %.3f "
             "-- %s", label or "model", res["affinity_pearson_r"],
             res["affinity_attainable"]["best_pearson_r"], res["affinity_attainable"]["note"])
    if "similarity" in out:
        write_csv(out["similarity"], sim)
    if "similarity_png" in out:
        figs.prior_vs_learned(aff, sim, res["affinity_pearson_r"], out["similarity_png"], label,
                              dpi)
    # unseen classes
    um = split == "unseen"
    place = (unseen.place_unseen(mu[um], labels[um], mu[fit], labels[fit], classes, affinity,
                                 cfg.get("unseen_method", "centroid"), cfg.get("unseen_k", 5))
             if um.any() else {})
    res["unseen"] = place
    res["unseen_agreement"] = (float(np.mean([p["agrees"] for p in place.values()]))
                               if place and all(p["agrees"] is not None
                                                for p in place.values()) else None)
    if "unseen" in out:
        rows = [{"unseen_class": u, "training_class": c, "fraction": f}
                for u, p in place.items() for c, f in p["distribution"].items()]
        write_csv(out["unseen"], pd.DataFrame(rows, columns=["unseen_class", "training_class",
                                                              "fraction"]), index=False)
    if "unseen_png" in out:
        figs.unseen_figure(place, classes, out["unseen_png"], dpi)
    if "embedding" in out:
        all_classes = list(classes) + sorted(set(labels) - set(classes))
        emb = embeddings(lat, mu, cfg, seed)
        write_csv(out["embedding"], emb, index=False)
        for method, name in (("umap", "UMAP"), ("tsne", "t-SNE")):
            if f"{method}_png" in out:
                figs.embedding_figure(emb, method, all_classes, out[f"{method}_png"],
                                      f"{label} {name} of mu".strip(), dpi)
    return res


def embeddings(lat: pd.DataFrame, mu: np.ndarray, cfg: Mapping[str, Any], seed: int
               ) -> pd.DataFrame:
    """UMAP and t-SNE coordinates of a stratified subsample of the particles."""
    idx = embed.subsample(lat["class"].to_numpy(object), cfg.get("embed_max_points", 3000), seed)
    emb = lat.iloc[idx][["class", "split", "tomogram", "stack_index"]].reset_index(drop=True)
    u = embed.umap_embedding(mu[idx], seed, cfg.get("umap_neighbors", 15))
    t = embed.tsne_embedding(mu[idx], seed, cfg.get("tsne_perplexity", 30))
    emb["umap_x"], emb["umap_y"], emb["tsne_x"], emb["tsne_y"] = u[:, 0], u[:, 1], t[:, 0], t[:, 1]
    return emb


def summarise(variant_metrics: Mapping[str, str | Path], out: str | Path) -> dict[str, Any]:
    """R/eval/metrics.json: the avae metrics with the bvae's under ``baseline``."""
    loaded = {v: json.loads(Path(p).read_text()) for v, p in variant_metrics.items()}
    res = dict(loaded["avae"])
    if "bvae" in loaded:
        res["baseline"] = loaded["bvae"]
    write_json(out, res)
    return res


def summary_main(smk: Any) -> None:
    summarise({Path(p).parent.name: p for p in smk.input.metrics}, smk.output.metrics)


def _one(value: Any) -> str | None:
    """A named input that may be absent, empty or a one-element list -> path or None."""
    if value is None or isinstance(value, str):
        return value or None
    items = list(value)
    return str(items[0]) if items else None


def variant_main(smk: Any) -> None:
    """Rule ``evaluate_variant``: see :func:`affinity_vae.evaluate.model_eval.evaluate_variant`."""
    from affinity_vae.evaluate.model_eval import evaluate_variant

    out = {k: str(v) for k, v in smk.output.items()}
    evaluate_variant(model_path=smk.input.model, stacks=list(smk.input.stacks),
                     stars=list(smk.input.stars), affinity_path=smk.input.affinity,
                     manifest_path=_one(smk.input.get("manifest")), out=out,
                     cfg=dict(smk.params.evaluate), seed=int(smk.params.seed),
                     device=smk.params.device, dpi=int(smk.params.report.get("dpi", 150)),
                     threads=int(smk.threads),
                     tilt_range=getattr(smk.params, "tilt_range", None))
