"""The one reader of affinity-matrix CSVs, with its validator.

Formats read: this project's (a header row of class names and an index column of the same names,
as ``pandas.DataFrame.to_csv`` writes it; affinity_vae.affinity.matrix.write_affinity) and the
reference Affinity-VAE implementation's (a header row of class names and no index column).

Imports only numpy, pandas and affinity_vae's own errors/classnames, so every stage's env
(affinity, train, evaluate, ...) can read the matrix the same way.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.classnames import class_key
from affinity_vae.errors import InputError

log = logging.getLogger(__name__)

#: value range of each scale: ``unit`` [0, 1]; ``signed`` (and ``keep``) [-1, 1]
RANGES = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0), "keep": (-1.0, 1.0)}


def _parse(path: Path) -> tuple[list[str], np.ndarray, dict[tuple[int, int], str]]:
    """Class names, (n, n) values of an affinity CSV (with or without index column) and the
    cells that are not numbers ({(row, column): text}; NaN in the values)."""
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read affinity CSV ({exc}) -- check the path "
                         f"(config key affinity.path)") from None
    if len(rows) < 2:
        raise InputError(f"{path}: affinity CSV needs a header row of class names and one row "
                         f"per class -- see docs/affinity.md for the format")
    header = [c.strip() for c in rows[0]]
    body = [[c.strip() for c in r] for r in rows[1:]]
    n = len(body)
    indexed = len(header) == n + 1
    if indexed:
        names, index = header[1:], [r[0] if r else "" for r in body]
        body = [r[1:] for r in body]
    elif len(header) == n:
        names, index = header, None
    else:
        raise InputError(f"{path}: not square ({n} rows, {len(header)} header columns) -- "
                         f"give one row and one column per class")
    keys = [class_key(c) for c in names]  # class names match case-insensitively
    dup = sorted({c for c, k in zip(names, keys) if keys.count(k) > 1})
    if dup or any(not c for c in names):
        what = (f"duplicated class name(s) {dup} (names match case-insensitively)" if dup
                else "an empty class name")
        raise InputError(f"{path}: {what} in the header -- each class once")
    if index is not None and index != names:
        if sorted(index) != sorted(names):
            raise InputError(f"{path}: row names {index} differ from the header's {names} -- "
                             f"use the same class names on both axes")
        order = [index.index(c) for c in names]
        body = [body[i] for i in order]
    values, text = np.empty((n, n)), {}
    for i, row in enumerate(body):
        if len(row) != n:
            raise InputError(f"{path}: row '{names[i]}' has {len(row)} values, expected {n} "
                             f"-- make the matrix square")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                values[i, j], text[i, j] = np.nan, cell
    return names, values, text


def first_problem(values: np.ndarray, names: Sequence[str], scale: str = "keep",
                  tol: float = 1e-2, text: dict[tuple[int, int], str] | None = None
                  ) -> str | None:
    """The first problem of a matrix ``values`` (n, n) as 'what -- fix' (no file name), or None
    when it is finite, symmetric within ``tol``, has a unit diagonal (within ``tol``) and lies in
    the range of ``scale``. ``text``: cells that were not numbers (see :func:`_parse`)."""
    lo, hi = RANGES[scale]
    for (i, j), cell in sorted((text or {}).items()):
        return (f"non-numeric value {cell!r} at row '{names[i]}', column '{names[j]}' -- use "
                f"numbers only")
    if not np.isfinite(values).all():
        i, j = np.argwhere(~np.isfinite(values))[0]
        return f"non-finite value at ('{names[i]}', '{names[j]}') -- use finite numbers"
    asym = np.abs(values - values.T)
    if asym.size and asym.max() > tol:
        i, j = np.unravel_index(asym.argmax(), asym.shape)
        return (f"not symmetric: ('{names[i]}', '{names[j]}') = {values[i, j]:.4g} but "
                f"('{names[j]}', '{names[i]}') = {values[j, i]:.4g} (tolerance {tol}) -- make "
                f"it symmetric")
    diag = np.abs(np.diag(values) - 1.0)
    if diag.size and diag.max() > tol:
        i = int(diag.argmax())
        return (f"diagonal entry of '{names[i]}' is {values[i, i]:.4g}, must be 1 -- set the "
                f"diagonal to 1")
    bad = (values < lo - 1e-9) | (values > hi + 1e-9)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        return (f"value {values[i, j]:.4g} at ('{names[i]}', '{names[j]}') is outside "
                f"[{lo:g}, {hi:g}] (scale '{scale}') -- fix the value or the config key "
                f"affinity.scale")
    return None


def bad_cells(values: np.ndarray, scale: str = "keep", tol: float = 1e-2) -> np.ndarray:
    """(n, n) bool, symmetric: True where a cell or its mirror is not a number, non-finite,
    outside the range of ``scale`` or asymmetric beyond ``tol``; True on the diagonal where it
    is not 1 (within ``tol``)."""
    lo, hi = RANGES[scale]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < lo - 1e-9) | (values > hi + 1e-9)
        bad |= ~(np.abs(values - values.T) <= tol)
    bad |= bad.T
    diag = np.diag(values)
    np.fill_diagonal(bad, ~(np.abs(diag - 1.0) <= tol))
    return bad


def usable_classes(values: np.ndarray, scale: str = "keep", tol: float = 1e-2) -> np.ndarray:
    """Indices (k,) of the classes kept when classes with bad cells (:func:`bad_cells`) are left
    out one at a time until none is left: each time the class with the most bad cells (a bad
    diagonal counts double), on a tie the last one in file order. Deterministic, so the planning
    check and the affinity job leave out the same classes."""
    bad = bad_cells(values, scale, tol).astype(int)
    bad += np.diag(np.diag(bad))
    alive = np.ones(len(values), dtype=bool)
    while True:
        counts = np.where(alive, (bad * alive[None, :]).sum(1), 0)
        if counts.max(initial=0) == 0:
            return np.flatnonzero(alive)
        alive[len(counts) - 1 - int(np.argmax(counts[::-1]))] = False


def validate_matrix(values: np.ndarray, names: Sequence[str], where: str,
                    scale: str = "keep", tol: float = 1e-2,
                    text: dict[tuple[int, int], str] | None = None) -> None:
    """Raise InputError ('<where>: <problem> -- <fix>') unless ``values`` (n, n) is finite,
    symmetric within ``tol``, has a unit diagonal (within ``tol``) and lies in the range of
    ``scale`` (:func:`first_problem`)."""
    problem = first_problem(values, names, scale, tol, text)
    if problem is not None:
        raise InputError(f"{where}: {problem}")


def read_affinity(path: str | os.PathLike, classes: Iterable[str] | None = None,
                  scale: str = "keep", tol: float = 1e-2,
                  check: Iterable[str] | None = None) -> pd.DataFrame:
    """Read and validate an affinity matrix CSV (this project's or the reference format).

    Args:
        classes: class names that must be present; the result is restricted and ordered to them.
        scale: ``unit`` requires values in [0, 1]; ``signed``/``keep`` in [-1, 1].
        tol: tolerance on symmetry and on the unit diagonal.
        check: None: every class must be valid. Else the classes the run uses (names match
            case-insensitively; absent ones are ignored): those must be valid, and the other
            classes' problems only warn -- a class with bad values is left out of the result
            (:func:`usable_classes`), unless it is one of ``check`` (InputError). ``check=()``
            is how the affinity job reads a user's CSV (it does not know the run's classes;
            the planning check, affinity_vae.preflight, does).
    Returns:
        (n, n) float64 DataFrame, index and columns the class names, exactly symmetrised
        ((A + A^T) / 2) with an exact unit diagonal.
    Raises:
        InputError: one line naming the file, the offending entry and the fix.
    """
    if scale not in RANGES:
        raise ValueError(f"scale must be one of {sorted(RANGES)}, got {scale!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: affinity matrix not found -- check the path "
                         f"(config key affinity.path)")
    names, values, text = _parse(path)
    if check is None:
        validate_matrix(values, names, str(path), scale, tol, text)
    else:
        names, values = _keep_usable(path, names, values, text, scale, tol, check)
    values = 0.5 * (values + values.T)
    np.fill_diagonal(values, 1.0)
    df = pd.DataFrame(values, index=names, columns=names)
    if classes is not None:
        classes = list(classes)
        missing = [c for c in classes if c not in names]
        if missing:
            raise InputError(f"{path}: class(es) {missing} missing from the affinity matrix "
                             f"(it has {names}) -- add a row and column for each")
        df = df.loc[classes, classes]
    return df


def _cell_problem(values: np.ndarray, names: Sequence[str], text: dict[tuple[int, int], str],
                  i: int, j: int, scale: str, tol: float) -> str:
    """The problem of the bad cell (i, j) and its mirror, as :func:`first_problem` words it."""
    idx = [i] if i == j else [i, j]
    sub_text = {(a, b): text[idx[a], idx[b]] for a in range(len(idx)) for b in range(len(idx))
                if (idx[a], idx[b]) in text}
    return first_problem(values[np.ix_(idx, idx)], [names[k] for k in idx], scale, tol,
                         sub_text) or "bad value"


def _keep_usable(path: Path, names: list[str], values: np.ndarray,
                 text: dict[tuple[int, int], str], scale: str, tol: float,
                 check: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """``read_affinity(check=...)``: validate the checked classes, leave out (with one warning)
    the other classes whose values are bad (:func:`usable_classes`)."""
    wanted = {class_key(c) for c in check}
    used = [i for i, n in enumerate(names) if class_key(n) in wanted]
    pos = {i: k for k, i in enumerate(used)}
    validate_matrix(values[np.ix_(used, used)], [names[i] for i in used], str(path), scale, tol,
                    {(pos[i], pos[j]): c for (i, j), c in text.items()
                     if i in pos and j in pos})
    keep = usable_classes(values, scale, tol)
    dropped = sorted(set(range(len(names))) - set(keep.tolist()))
    if not dropped:
        return names, values
    bad = bad_cells(values, scale, tol)
    for i in dropped:
        if i in pos:  # a bad value shared with a class the run does not use
            j = int(np.flatnonzero(bad[i])[0])
            raise InputError(f"{path}: class '{names[i]}' (used by this run) would be left out "
                             f"for its value with '{names[j]}': "
                             f"{_cell_problem(values, names, text, i, j, scale, tol)}")
    first = dropped[0]
    example = _cell_problem(values, names, text, first, int(np.flatnonzero(bad[first])[0]),
                            scale, tol).split(" -- ")[0]
    log.warning("%s: class(es) %s left out of the affinity matrix (bad values, e.g. %s) -- "
                "fine when the run does not use them; fix their rows to use them", path,
                [names[i] for i in dropped], example)
    if len(keep) < 2:
        raise InputError(f"{path}: fewer than 2 classes have valid values (bad: "
                         f"{[names[i] for i in dropped]}, e.g. {example}) -- fix the matrix")
    return [names[i] for i in keep], values[np.ix_(keep, keep)]
