"""Stage `evaluate`: encode every particle, classify the seen classes, place the unseen ones,
compare the learned latent geometry with the affinity prior, embed (UMAP, t-SNE), decode pose
sweeps and latent interpolations, and score the pose channel.

Modules: latents (the table), encode (torch), classify, metrics, unseen (prior vs learned and
unseen placement), embed, interpolate, pose, figs/plots (figures), run (orchestration).
Entry point of rules ``evaluate_variant`` and ``evaluate_summary``: :func:`main`.
"""

from __future__ import annotations

from typing import Any


def main(smk: Any) -> None:
    """Rule entry: dispatches on the rule name (torch is imported only for a variant)."""
    from affinity_vae.evaluate import run

    if smk.rule == "evaluate_summary":
        run.summary_main(smk)
    else:
        run.variant_main(smk)
