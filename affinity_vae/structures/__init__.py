"""Stage `structures`: the classes' atomic models and density maps.

- ``generate``: the deterministic generator of pseudo-atomic molecules (source ``generated``).
- ``sources``: a folder of PDB/mmCIF/MRC files (``dir``) and RCSB downloads (``rcsb``).
- ``density``: density maps at the tomogram voxel size, centred, cubic.
- ``checks``: config checks the schema cannot express (light; used before any job).
- ``build``: the stage itself (``main(smk)`` for the rule, ``build_structures`` for tests).

The heavy modules (gemmi, scipy) load on first use, so ``checks`` stays cheap to import.
"""

from __future__ import annotations

from typing import Any


def build_structures(*args: Any, **kwargs: Any):
    """See :func:`affinity_vae.structures.build.build_structures`."""
    from affinity_vae.structures.build import build_structures as build

    return build(*args, **kwargs)


def main(smk: Any) -> None:
    """Rule entry point; see :func:`affinity_vae.structures.build.main`."""
    from affinity_vae.structures.build import main as entry

    entry(smk)


__all__ = ["build_structures", "main"]
