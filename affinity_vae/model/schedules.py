"""Cyclic annealing of the loss weights beta and gamma (Fu et al. 2019), per epoch.

A schedule is a dict ``{kind, min, max, cycles, ratio}``. The E epochs are split into ``cycles``
equal cycles; within a cycle the weight rises from ``min`` to ``max`` over the first ``ratio``
fraction (linear, cosine or sigmoid shape) and stays at ``max`` for the rest. ``flat`` is
``max`` throughout; ``ramp`` is one linear rise over ``ratio`` of all epochs, then ``max``.
"""

from __future__ import annotations

import math
from typing import Any

KINDS = ("flat", "linear", "cosine", "sigmoid", "ramp")


def _shape(kind: str, t: float) -> float:
    """Rise from 0 to 1 for t in [0, 1]."""
    if kind in ("linear", "ramp"):
        return t
    if kind == "cosine":
        return 0.5 - 0.5 * math.cos(math.pi * t)
    if kind == "sigmoid":
        lo, hi = 1 / (1 + math.exp(6)), 1 / (1 + math.exp(-6))
        return (1 / (1 + math.exp(-12 * (t - 0.5))) - lo) / (hi - lo)
    raise ValueError(f"unknown schedule kind {kind!r}; choose one of {KINDS}")


def value(schedule: dict[str, Any], epoch: int, epochs: int) -> float:
    """The weight at ``epoch`` (0-based) of ``epochs``; ``schedule`` is a full train.beta or
    train.gamma (kind, min, max, cycles, ratio; defaults filled from the schema)."""
    kind = schedule["kind"]
    lo, hi = float(schedule["min"]), float(schedule["max"])
    if kind == "flat":
        return hi
    cycles = 1 if kind == "ramp" else max(1, int(schedule["cycles"]))
    ratio = float(schedule["ratio"])
    period = epochs / cycles
    tau = (epoch % period) / period if period > 0 else 1.0
    if ratio <= 0 or tau >= ratio:
        return hi
    return lo + (hi - lo) * _shape(kind, tau / ratio)


def values(schedule: dict[str, Any], epochs: int) -> list[float]:
    """The weight for every epoch: a list of length ``epochs``."""
    return [value(schedule, e, epochs) for e in range(epochs)]
