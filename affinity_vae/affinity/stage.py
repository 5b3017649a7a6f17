"""The rule entries of stage `affinity` and the matrix computation they call.

:func:`main` (rule ``affinity_method``, one job per method) and :func:`main_matrix` (rule
``affinity_matrix``: the matrix training uses). dscribe is imported only when SOAP runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from affinity_vae.affinity.inputs import ClassSet, read_structures_dir
from affinity_vae.affinity.matrix import (
    apply_overrides,
    apply_scale,
    plot_heatmap,
    read_affinity,
    validate_matrix,
    write_affinity,
)
from affinity_vae.attainable import is_psd, mean_condition
from affinity_vae.errors import InputError

log = logging.getLogger(__name__)


def compute_affinity(classes: ClassSet, method: str, cfg: dict[str, Any], seed: int = 0,
                     threads: int = 1) -> pd.DataFrame:
    """The ``method`` (``soap`` | ``fsc``) affinity of ``classes`` as an (n, n) DataFrame in
    [0, 1], symmetric, unit diagonal. ``cfg`` is the whole ``affinity`` config section."""
    t0 = time.perf_counter()
    if method == "soap":
        from affinity_vae.affinity.soap import soap_matrix  # dscribe only here

        sc = cfg["soap"]
        need_map = [n for n in classes.names
                    if classes.pdbs[n] is None or sc["source"] == "map"]
        vols, voxel = classes.volumes(need_map) if need_map else ({}, 0.0)
        pdbs = {n: (None if n in need_map else classes.pdbs[n]) for n in classes.names}
        values = soap_matrix(pdbs, vols, voxel, sc, seed=seed, n_jobs=threads)
    elif method == "fsc":
        from affinity_vae.affinity.fsc import fsc_matrix

        fc = cfg["fsc"]
        vols, voxel = classes.volumes()
        values = fsc_matrix(vols, voxel, float(fc["resolution_A"]), int(fc["n_rotations"]),
                            fc["rotation_set"], int(fc["interpolation_order"]), seed=seed,
                            workers=threads)
    else:
        raise ValueError(f"unknown affinity method {method!r} (soap | fsc)")
    df = pd.DataFrame(values, index=classes.names, columns=classes.names)
    validate_matrix(df.to_numpy(), classes.names, f"{method} affinity", "unit", 1e-9)
    log.info("%s affinity of %d classes in %.1f s", method, len(df), time.perf_counter() - t0)
    return df


def final_matrix(source: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Apply ``affinity.overrides`` then ``affinity.scale`` and validate the result."""
    df = apply_scale(apply_overrides(source, cfg["overrides"]), cfg["scale"])
    validate_matrix(df.to_numpy(), list(df.index), "final affinity matrix",
                    "unit" if cfg["scale"] == "unit" else "signed", 1e-9)
    return df


def warn_unattainable(df: pd.DataFrame) -> str | None:
    """Log (and return) one warning line when no set of unit latent vectors can have the matrix
    (n, n) as cosines: not PSD, or mean off-diagonal below -1/(n-1); None when it can (up to
    rank; evaluate reports ``affinity_attainable`` with the model's latent dims)."""
    psd, min_eig = is_psd(df.to_numpy())
    ok_mean, mean, bound = mean_condition(df.to_numpy())
    if psd and ok_mean:
        return None
    why = [] if ok_mean else [f"mean off-diagonal {mean:.2f} < -1/(n-1) = {bound:.2f}"]
    if not psd:
        why.append(f"not positive semi-definite (min eigenvalue {min_eig:.3g})")
    msg = (f"final affinity matrix of {len(df)} classes is not attainable by latent cosine "
           f"similarities: {'; '.join(why)} -- training can only approach it (see "
           f"affinity_attainable in eval/metrics.json)")
    log.warning(msg)
    return msg


def main(smk: Any) -> None:
    """Rule ``affinity_method``: input structures folder; output ``{method}.csv`` + ``.png``."""
    method = smk.wildcards.method
    cfg = dict(smk.params.affinity)
    classes = read_structures_dir(smk.input.structures)
    df = compute_affinity(classes, method, cfg, int(smk.params.seed), int(smk.threads))
    write_affinity(df, smk.output.csv)
    plot_heatmap(df, smk.output.png, title=f"{method.upper()} affinity", scale="unit")


def main_matrix(smk: Any) -> None:
    """Rule ``affinity_matrix``: the matrix training uses (method's CSV or ``affinity.path``,
    overrides, scale) -> ``affinity.csv`` + ``affinity.png``."""
    cfg = dict(smk.params.affinity)
    if cfg["method"] == "file":
        if not cfg["path"]:
            raise InputError("config key 'affinity.path' is required when affinity.method is "
                             "'file' -- set it to your affinity CSV")
        src = Path(getattr(smk.input, "user", None) or cfg["path"])
        # check=(): classes with bad values are left out with a warning -- the planning check
        # (affinity_vae.preflight) has refused bad values of the classes the run uses
        source = read_affinity(src, scale="keep" if cfg["scale"] == "keep" else "unit",
                               tol=float(cfg["tolerance"]), check=())
    else:
        source = read_affinity(smk.input.matrix, scale="unit")
    df = final_matrix(source, cfg)
    warn_unattainable(df)
    write_affinity(df, smk.output.csv)
    plot_heatmap(df, smk.output.png, title=f"affinity ({cfg['method']}, scale {cfg['scale']})",
                 scale="unit" if cfg["scale"] == "unit" else "signed")
