"""Checks of the `structures` config section that the schema cannot express.

Light (no gemmi/scipy import) so that the Snakefile's config check can call it before any job.
"""

from __future__ import annotations

import re
from typing import Any

from affinity_vae.errors import InputError

PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")


def check_pdb_id(pdb_id: Any) -> str:
    """The lower-case PDB ID, or InputError for a malformed one."""
    if not isinstance(pdb_id, str) or not PDB_ID.match(pdb_id):
        raise InputError(f"config key 'structures.ids': '{pdb_id}' is not a PDB ID "
                         f"(4 characters, a digit then 3 letters/digits, e.g. 1bxn) -- fix it")
    return pdb_id.lower()


def check_structures_config(structures: dict[str, Any], voxel_size: float) -> None:
    """Raise InputError (one line, naming the key) for a `structures` section that cannot work:
    rcsb without IDs or with a malformed ID, dir without a path, an unknown generated class, a
    map resolution finer than Nyquist."""
    source = structures.get("source", "generated")
    if source == "rcsb":
        if not structures.get("ids"):
            raise InputError("config key 'structures.ids' is empty -- list the PDB IDs to "
                             "download when structures.source is rcsb")
        for pid in structures["ids"]:
            check_pdb_id(pid)
    if source == "dir" and not structures.get("path"):
        raise InputError("config key 'structures.path' is required when structures.source is "
                         "'dir' -- set it to a folder of PDB/mmCIF/MRC files")
    if source == "generated" and structures.get("classes"):
        from affinity_vae.structures.generate import CATALOGUE  # numpy only

        unknown = [c for c in structures["classes"] if c not in CATALOGUE]
        if unknown:
            raise InputError(f"config key 'structures.classes': unknown generated class "
                             f"'{unknown[0]}' -- choose from {', '.join(CATALOGUE)}")
    res = structures.get("resolution")
    if res is not None and res < 2 * voxel_size - 1e-6:
        raise InputError(f"config key 'structures.resolution': {res} A is finer than Nyquist "
                         f"(2 x dataset.voxel_size = {2 * voxel_size} A) -- raise it or set null")
