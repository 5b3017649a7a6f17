"""The torch-free part of evaluation: classification, group scores, confusion, prior vs learned
and whether the prior is attainable in the latent dimensions, unseen placement, embeddings.

:func:`analyse_latents` needs only the latents table (affinity_vae.evaluate.latents); the tests
drive it with synthetic latents and affinity_vae.evaluate.model_eval calls it after encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
from joblib.externals.loky import ProcessPoolExecutor
from threadpoolctl import threadpool_limits

from affinity_vae.attainable import attainability
from affinity_vae.errors import InputError
from affinity_vae.evaluate import classify, embed, figs, metrics, unseen
from affinity_vae.evaluate.latents import block
from affinity_vae.evaluate.tables import write_csv

log = logging.getLogger(__name__)
FIT_SPLITS = ("train", "validation")


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
                    label: str = "", threads: int = 1) -> dict[str, Any]:
    """Everything that needs only the latents table; writes the files named in ``out``.

    Args:
        lat: latents table (see affinity_vae.evaluate.latents).
        classes: training classes (affinity order); cfg: the ``evaluate`` config section.
        out: paths for keys predictions, confusion, confusion_norm, confusion_png,
            confusion_norm_png, similarity, similarity_png, unseen, unseen_png, embedding,
            umap_png, tsne_png (missing keys are skipped).
        threads: CPU cores to use; with two or more the embeddings are computed in a second
            process beside the classifier's grid search (which fits ``threads - 1`` grid
            points at a time). The results do not depend on it.
    Returns:
        metrics (DESIGN.md keys except pose).
    """
    side = "embedding" in out and threads > 1
    # one BLAS thread everywhere: the matrices are small, and the rounding of the results must
    # not depend on the machine's core count (t-SNE's PCA and distances use BLAS too)
    env = {k: str(classify.BLAS_THREADS) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS")}
    with (ProcessPoolExecutor(1, env=env) if side else nullcontext()) as pool, \
            threadpool_limits(classify.BLAS_THREADS):
        emb = pool.submit(embeddings, lat, block(lat, "mu"), cfg, seed) if side else None
        res = _analyse(lat, classes, affinity, cfg, seed, out, manifest, dpi, label,
                       max(1, threads - side))
        if "embedding" in out:
            all_classes = list(classes) + sorted(set(lat["class"]) - set(classes))
            emb = emb.result() if side else embeddings(lat, block(lat, "mu"), cfg, seed)
            write_csv(out["embedding"], emb, index=False)
            for method, name in (("umap", "UMAP"), ("tsne", "t-SNE")):
                if f"{method}_png" in out:
                    figs.embedding_figure(emb, method, all_classes, out[f"{method}_png"],
                                          f"{label} {name} of mu".strip(), dpi)
    return res


def _analyse(lat: pd.DataFrame, classes: Sequence[str], affinity: pd.DataFrame,
             cfg: Mapping[str, Any], seed: int, out: Mapping[str, str],
             manifest: pd.DataFrame | None, dpi: int, label: str, n_jobs: int
             ) -> dict[str, Any]:
    """:func:`analyse_latents` but the embeddings; the grid search fits ``n_jobs`` at a time."""
    mu = block(lat, "mu")
    labels = lat["class"].to_numpy(object)
    split = lat["split"].to_numpy(object)
    seen = np.isin(labels, list(classes)) & (split != "unseen")
    fit, test = seen & np.isin(split, FIT_SPLITS), seen & (split == "test")
    if not test.any():
        raise InputError("no test particles of a training class -- name a test tomogram in "
                         "dataset.splits.test (or folder_splits.test for subtomo_folder)")
    est, info = classify.fit_classifier(mu[fit], labels[fit], cfg, seed, n_jobs)
    pred = est.predict(mu[test])
    res = metrics.classification_metrics(labels[test], pred, classes)
    res["classifier"] = info
    schemes = metrics.build_groups(classes, manifest, cfg["structural_groups"],
                                   cfg["groups"])
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
                                 cfg["unseen_method"], cfg["unseen_k"])
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
    return res


def embeddings(lat: pd.DataFrame, mu: np.ndarray, cfg: Mapping[str, Any], seed: int
               ) -> pd.DataFrame:
    """UMAP and t-SNE coordinates of a stratified subsample of the particles."""
    idx = embed.subsample(lat["class"].to_numpy(object), cfg["embed_max_points"], seed)
    emb = lat.iloc[idx][["class", "split", "tomogram", "stack_index"]].reset_index(drop=True)
    u = embed.umap_embedding(mu[idx], seed, cfg["umap_neighbors"])
    t = embed.tsne_embedding(mu[idx], seed, cfg["tsne_perplexity"])
    emb["umap_x"], emb["umap_y"], emb["tsne_x"], emb["tsne_y"] = u[:, 0], u[:, 1], t[:, 0], t[:, 1]
    return emb
