"""The learning-curve benchmark's fast pieces (benchmarks/bench_learning_curve.py): nested
training subsets with exact per-class counts and untouched validation/test particles, the
steps budget, and table group scores that are the paper's (mean per-class F1 of each group)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from affinity_vae.errors import InputError
from affinity_vae.evaluate.metrics import SHREC_SIZE_GROUPS, mean_f1_by_group
from benchmarks.bench_learning_curve import (
    GROUPS,
    epochs_for,
    markdown,
    nested_subsets,
    split_table,
    table_row,
)

CLASSES = [c for g in SHREC_SIZE_GROUPS.values() for c in g]


def particles(per_class: int = 60, test_per_class: int = 7, seed: int = 3
              ) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled labels (N,) of 12 classes and a pool mask (N,): the test particles are not pool."""
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES * (per_class + test_per_class), object)
    pool = np.array([True] * len(CLASSES) * per_class + [False] * len(CLASSES) * test_per_class)
    order = rng.permutation(len(labels))
    return labels[order], pool[order]


def test_subsets_are_nested_with_exact_counts_and_fixed_validation():
    labels, pool = particles()
    sizes = [5, 12, 25, 50]
    val, subsets = nested_subsets(labels, pool, sizes, val_per_class=4, seed=0)
    for a, b in itertools.pairwise(sizes):
        assert set(subsets[a]) < set(subsets[b])
    for n, idx in subsets.items():
        assert len(set(idx)) == len(idx)
        counts = pd.Series(labels[idx]).value_counts()
        assert set(counts.index) == set(CLASSES) and (counts == n).all()
        assert pool[idx].all()                         # never a test particle
        assert not set(idx) & set(val)                 # never a validation particle
    assert (pd.Series(labels[val]).value_counts() == 4).all() and pool[val].all()
    # the validation set and each size's subset do not depend on which other sizes are asked
    val2, only = nested_subsets(labels, pool, [12], val_per_class=4, seed=0)
    assert np.array_equal(val, val2) and np.array_equal(only[12], subsets[12])
    # another seed draws other particles
    _, other = nested_subsets(labels, pool, sizes, val_per_class=4, seed=1)
    assert not np.array_equal(other[12], subsets[12])


def test_too_few_particles_is_a_clear_error():
    labels, pool = particles(per_class=20)
    with pytest.raises(InputError, match="--sizes"):
        nested_subsets(labels, pool, [10, 20], val_per_class=4, seed=0)


def test_split_table_keeps_test_and_validation_and_drops_the_rest():
    labels, pool = particles()
    table = pd.DataFrame({"avaeClass": labels, "avaeSplit": np.where(pool, "train", "test"),
                          "row": np.arange(len(labels))})
    val, subsets = nested_subsets(labels, pool, [10, 30], 3, seed=0)
    test = np.flatnonzero(~pool)
    rows, sub = split_table(table, subsets[10], val, test)
    assert np.array_equal(sub["row"].to_numpy(), rows)          # rows line up with the boxes
    assert (sub["avaeSplit"] == "test").sum() == len(test)
    assert set(sub.loc[sub["avaeSplit"] == "test", "row"]) == set(test)
    assert set(sub.loc[sub["avaeSplit"] == "validation", "row"]) == set(val)
    assert set(sub.loc[sub["avaeSplit"] == "train", "row"]) == set(subsets[10])
    assert len(sub) == len(test) + len(val) + 10 * len(CLASSES)   # other pool rows left out


def test_steps_budget_gives_every_size_the_same_optimiser_steps():
    n_ref, bs, e = 500 * 12, 32, 20
    for n in (60, 125, 250, 500):
        ep = epochs_for(n * 12, n_ref, e, bs, "steps")
        steps = ep * math.ceil(n * 12 / bs)
        assert abs(steps - e * math.ceil(n_ref / bs)) <= math.ceil(n * 12 / bs) / 2
    assert epochs_for(60 * 12, n_ref, e, bs, "epochs") == e


def test_table_group_scores_are_mean_per_class_f1():
    rng = np.random.default_rng(0)
    per_class = {c.upper() if i % 2 else c: {"f1": float(f), "precision": 0.0}
                 for i, (c, f) in enumerate(zip(CLASSES, rng.random(len(CLASSES))))}
    row = table_row("avae", 60, {"per_class": per_class, "macro_f1": 0.5}, epochs=3)
    flat = {c: v["f1"] for c, v in per_class.items()}
    expected = mean_f1_by_group(flat, SHREC_SIZE_GROUPS)
    assert {g: row[g] for g in GROUPS} == pytest.approx(expected)
    assert row["medium"] == pytest.approx(np.mean([flat[c] if c in flat else flat[c.upper()]
                                                   for c in SHREC_SIZE_GROUPS["medium"]]))
    # a perfect classifier scores 1 in every group; the per-class F1 are kept in the row
    perfect = table_row("bvae", 60, {"per_class": dict.fromkeys(CLASSES, 1.0)}, 3)
    assert all(perfect[g] == 1.0 for g in GROUPS)
    assert perfect["f1_1bxn"] == 1.0
    # evaluate's own size groups must agree with the table's
    groups = {f"size/{g}": v for g, v in expected.items()}
    table_row("avae", 60, {"per_class": per_class, "groups": groups}, 3)
    with pytest.raises(AssertionError, match="size/medium"):
        table_row("avae", 60, {"per_class": per_class,
                               "groups": {**groups, "size/medium": 0.0}}, 3)
    # the markdown table shows the same numbers
    md = markdown(pd.DataFrame([row, perfect]), "steps")
    assert f"{row['medium']:.3f}" in md and "1.000" in md
