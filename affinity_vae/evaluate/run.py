"""The entry points of the evaluate rules, one function a rule (scripts/evaluate.py,
scripts/evaluate_summary.py): :func:`main_variant` (rules ``evaluate_avae``/``evaluate_bvae``:
encode with the trained model and analyse, affinity_vae.evaluate.model_eval) and
:func:`main_summary` (rule ``evaluate_summary``: eval/metrics.json).

Imports go one way: run -> model_eval -> analyse -> classify/metrics/unseen/embed/figs; tables
(file writers) is used by all of them and imports none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from affinity_vae.evaluate.tables import write_json


def summarise(variant_metrics: Mapping[str, str | Path], out: str | Path) -> dict[str, Any]:
    """R/eval/metrics.json: the avae metrics with the bvae's under ``baseline``."""
    loaded = {v: json.loads(Path(p).read_text()) for v, p in variant_metrics.items()}
    res = dict(loaded["avae"])
    if "bvae" in loaded:
        res["baseline"] = loaded["bvae"]
    write_json(out, res)
    return res


def main_summary(smk: Any) -> None:
    """Rule ``evaluate_summary``: the variants' metrics.json -> eval/metrics.json."""
    summarise({Path(p).parent.name: p for p in smk.input.metrics}, smk.output.metrics)


def _one(value: Any) -> str | None:
    """A named input that may be absent, empty or a one-element list -> path or None."""
    if value is None or isinstance(value, str):
        return value or None
    items = list(value)
    return str(items[0]) if items else None


def main_variant(smk: Any) -> None:
    """Rules ``evaluate_avae`` and ``evaluate_bvae``: see
    :func:`affinity_vae.evaluate.model_eval.evaluate_variant` (torch is imported here only)."""
    from affinity_vae.evaluate.model_eval import evaluate_variant

    out = {k: str(v) for k, v in smk.output.items()}
    evaluate_variant(model_path=smk.input.model, stacks=list(smk.input.stacks),
                     stars=list(smk.input.stars), affinity_path=smk.input.affinity,
                     manifest_path=_one(smk.input.get("manifest")), out=out,
                     cfg=dict(smk.params.evaluate), seed=int(smk.params.seed),
                     device=smk.params.device, dpi=int(smk.params.report["dpi"]),
                     threads=int(smk.threads),
                     tilt_range=smk.params.tilt_range)
