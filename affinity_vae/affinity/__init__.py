"""Stage `affinity`: class-affinity matrices from structures (SOAP, FSC) or a user CSV.

- ``soap``: normalised average SOAP power spectra (dscribe), rotation/translation invariant.
- ``fsc``: shell-weighted mean FSC of densities after principal-axes alignment and a rotation
  search.
- ``matrix``: overrides (the reader :func:`read_affinity` is affinity_vae.io.affinity_csv's,
  re-exported), scale, CSV writer, heatmap ordered by hierarchical clustering.
- ``inputs``: the classes of a structures folder.
- ``stage``: :func:`compute_affinity` (dispatch on the method) and the rule entries :func:`main`
  (rule ``affinity_method``) and :func:`main_matrix` (rule ``affinity_matrix``).

Importing this package needs only numpy, pandas and mrcfile: ``stage`` (and through it dscribe,
ase, gemmi, scipy) loads on first use of its names, so any stage's env can use
:func:`read_affinity`.
"""

from __future__ import annotations

import importlib
from typing import Any

from affinity_vae.affinity.inputs import ClassSet, from_paths, read_structures_dir
from affinity_vae.affinity.matrix import read_affinity, write_affinity

_STAGE = ("compute_affinity", "final_matrix", "main", "main_matrix")

__all__ = ["ClassSet", "from_paths", "read_affinity", "read_structures_dir", "write_affinity",
           *_STAGE]


def __getattr__(name: str) -> Any:
    """Lazy access to the stage entries (PEP 562), keeping heavy imports out of the package."""
    if name in _STAGE:
        return getattr(importlib.import_module("affinity_vae.affinity.stage"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
