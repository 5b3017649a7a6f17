"""Where class structures come from: generated molecules, a folder of files, or RCSB downloads.

All readers validate and raise ``InputError`` (one line: file or key, and the fix) before any
density is computed.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gemmi
import numpy as np

from affinity_vae.classnames import class_key
from affinity_vae.errors import InputError
from affinity_vae.io.atomic import disk_full_error, is_disk_full
from affinity_vae.io.mrc import read_volume
from affinity_vae.structures.checks import check_pdb_id, split_name
from affinity_vae.structures.generate import MULTIPLICITY_REMARK, Molecule

log = logging.getLogger(__name__)

#: SHREC 2021 size groups (Gubins et al. 2021), used as the family of known classes
SHREC_GROUPS = {
    **{c: "small" for c in ("1s3x", "3qm1", "3gl1", "3h84", "2cg9")},
    **{c: "medium" for c in ("3d2f", "1u6g", "3cf3", "1bxn", "1qvr")},
    **{c: "large" for c in ("4cr2", "5mrc")},
}
_REMARK_RE = re.compile(r"AVAE PSEUDO-ATOMS: EACH ATOM STANDS FOR ([0-9.]+) HEAVY ATOMS")


@dataclass
class ClassSource:
    """One class before its density is made: an atomic model, or a map (z, y, x) only."""

    name: str
    family: str
    source: str
    structure: gemmi.Structure | None = None
    multiplicity: float = 1.0
    map: np.ndarray | None = None
    map_voxel: float = 0.0
    symmetry: str = "C1"  # point group in the frame of the model / map


def shrec_group(name: str) -> str:
    """SHREC size group of a class name (case-insensitive), else ''."""
    return SHREC_GROUPS.get(name.lower(), "")


# ---------------------------------------------------------------- generated
def molecule_to_structure(mol: Molecule) -> gemmi.Structure:
    """A one-model gemmi Structure of pseudo-atoms (one UNK residue each, 9999 per chain)."""
    st = gemmi.Structure()
    st.name = mol.name
    model = gemmi.Model(1)
    chain_ids = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    for k, start in enumerate(range(0, len(mol.xyz), 9999)):
        chain = gemmi.Chain(chain_ids[k % len(chain_ids)])
        for i in range(start, min(start + 9999, len(mol.xyz))):
            res = gemmi.Residue()
            res.name = "UNK"
            res.seqid = gemmi.SeqId(i - start + 1, " ")
            atom = gemmi.Atom()
            # one pseudo-atom ~ one residue (8 heavy atoms): carbons are named CA so that
            # C-alpha coarse-graining (affinity.soap.coarse: ca) finds them
            atom.name = "CA" if mol.elements[i] == "C" else str(mol.elements[i])
            atom.element = gemmi.Element(str(mol.elements[i]))
            atom.pos = gemmi.Position(*mol.xyz[i])
            atom.occ = 1.0
            atom.b_iso = 20.0
            res.add_atom(atom)
            chain.add_residue(res)
        model.add_chain(chain)
    st.add_model(model)
    st.raw_remarks = [MULTIPLICITY_REMARK.format(mol.multiplicity)]
    return st


# ---------------------------------------------------------------- files
def read_model(path: str | os.PathLike, name: str | None = None,
               is_assembly: bool | None = None) -> tuple[gemmi.Structure, float]:
    """Read a PDB/mmCIF file (format sniffed from the content) and return its biological
    assembly (the first one the file defines, else the deposited model) without waters and
    hydrogens, plus the pseudo-atom multiplicity (1 for real atomic models).

    ``is_assembly`` (default: the file name contains ``-assembly``, as RCSB assembly files)
    means the file already is the assembly and is used as it is."""
    path = Path(path)
    if is_assembly is None:
        is_assembly = "-assembly" in path.name.lower()
    if not path.is_file():
        raise InputError(f"{path}: structure file not found -- check structures.path / ids")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty structure file -- replace it with a PDB or mmCIF file")
    try:
        st = gemmi.read_structure(str(path), format=gemmi.CoorFormat.Detect)
    except (RuntimeError, ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable PDB/mmCIF file ({msg}) "
                         f"-- replace it with a valid structure file") from None
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise InputError(f"{path}: the structure file has no atoms "
                         f"-- use a file with ATOM/HETATM records (or a .mrc map instead)")
    model = st[0]
    if st.assemblies and not is_assembly:
        try:
            asm = gemmi.make_assembly(st.assemblies[0], model, gemmi.HowToNameCopiedChain.Short)
        except RuntimeError as exc:
            log.warning("%s: cannot build assembly %s (%s); using the deposited model",
                        path.name, st.assemblies[0].name, exc)
            asm = None
        if asm is not None and asm.count_atom_sites() > 0:
            log.info("%s: biological assembly %s (%d -> %d atoms)", path.name,
                     st.assemblies[0].name, model.count_atom_sites(), asm.count_atom_sites())
            model = asm
        elif asm is not None:
            log.warning("%s: assembly %s selects no atoms; using the deposited model",
                        path.name, st.assemblies[0].name)
    out = gemmi.Structure()
    out.name = name or path.stem
    out.add_model(model)
    out.remove_hydrogens()
    out.remove_waters()
    out.remove_empty_chains()
    if out[0].count_atom_sites() == 0:
        raise InputError(f"{path}: no atoms left after removing waters and hydrogens "
                         f"-- use a file with a protein model")
    multiplicity = 1.0
    for line in st.raw_remarks:
        m = _REMARK_RE.search(line)
        if m:
            multiplicity = float(m.group(1))
            out.raw_remarks = [MULTIPLICITY_REMARK.format(multiplicity)]
    return out, multiplicity


def find_dir_files(folder: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """Structure files in ``folder`` and its subfolders, by class name (the file stem):
    ``{name: {"model": path, "map": path}}`` (either may be missing)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"config key 'structures.path': folder '{folder}' does not exist "
                         f"-- point it at a folder of PDB/mmCIF/MRC files")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(folder).parts):
            continue
        split = split_name(path)
        if split is None:
            continue
        name, kind = split
        slot = found.setdefault(name, {})
        if kind in slot:
            raise InputError(f"{path}: class '{name}' has two {kind} files ({slot[kind]}) "
                             f"-- keep one of them in {folder}")
        slot[kind] = path
    if not found:
        raise InputError(f"config key 'structures.path': no .pdb/.cif/.mrc files in '{folder}' "
                         f"-- put one file per class there (file stem = class name)")
    return found


def select(names: list[str], classes: list[str], exclude: list[str], where: str) -> list[str]:
    """Apply structures.classes / structures.exclude (case-insensitive) to the available class
    names (already :func:`affinity_vae.classnames.class_key` keys)."""
    classes = [class_key(c) for c in classes]
    exclude = [class_key(c) for c in exclude]
    if classes:
        missing = [c for c in classes if c not in names]
        if missing:
            raise InputError(f"config key 'structures.classes': no structure file for class "
                             f"'{missing[0]}' in {where} -- add <class>.pdb/.cif/.mrc there or "
                             f"remove it from the list (found: {', '.join(sorted(names))})")
        names = list(dict.fromkeys(classes))
    names = [n for n in names if n not in set(exclude)]
    if len(names) < 2:
        raise InputError(f"{where}: {len(names)} class(es) selected -- the pipeline needs at "
                         f"least 2; check structures.classes / structures.exclude")
    return sorted(names)


def read_dir(folder: str | os.PathLike, classes: list[str] = (),
             exclude: list[str] = ()) -> list[ClassSource]:
    """Read every selected class of a folder: its model (assembly), or its map when the class
    has no model file."""
    files = find_dir_files(folder)
    out = []
    for name in select(list(files), list(classes), list(exclude), str(folder)):
        slot = files[name]
        if "model" in slot:
            st, mult = read_model(slot["model"], name)
            out.append(ClassSource(name, shrec_group(name), "dir", st, mult))
        else:
            vol, vox = read_volume(slot["map"])
            if vol.ndim != 3 or vol.max() <= 0:
                raise InputError(f"{slot['map']}: not a 3D density map with positive density "
                                 f"-- replace it with the class's density map")
            out.append(ClassSource(name, shrec_group(name), "dir", map=vol, map_voxel=vox))
    return out


# ---------------------------------------------------------------- RCSB
#: seconds one HTTP request may wait for the server
RCSB_TIMEOUT_S = 60.0
#: tries of one URL when the failure may pass (timeout, dropped connection, HTTP 429 / 5xx)
RCSB_ATTEMPTS = 3
#: seconds before the 2nd try, doubled before each further one
RCSB_RETRY_WAIT_S = 5.0
#: first line of a downloaded file: what was fetched, so a biological-assembly file (already
#: the assembly) is told from a deposited entry (whose assembly is still to be built)
RCSB_MARKER = "# affinity_vae rcsb download: "
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}


def rcsb_path(pdb_id: str, cache: str | os.PathLike) -> Path:
    """Where the download of ``pdb_id`` lives: ``{cache}/{ID}.cif`` (upper-case ID)."""
    return Path(cache).expanduser() / f"{check_pdb_id(pdb_id).upper()}.cif"


def rcsb_is_assembly(path: str | os.PathLike) -> bool:
    """Whether a file written by :func:`download_rcsb` holds an RCSB biological-assembly
    file (``{ID}-assembly1.cif``) rather than the deposited entry (``{ID}.cif``)."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8", "replace")
    if not first.startswith(RCSB_MARKER):
        return False
    fetched = first[len(RCSB_MARKER):].split(maxsplit=1)  # "<name> from <url>"
    return bool(fetched) and "-assembly" in fetched[0]


def _get(url: str, pid: str, timeout: float, attempts: int) -> bytes | None:
    """The body at ``url`` (None: HTTP 404), trying up to ``attempts`` times when the failure
    may pass. Raises InputError (one line) for the rest."""
    base = url.rsplit("/", 1)[0]
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "affinity-vae-pipeline"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code not in _RETRY_HTTP or last:
                raise InputError(f"structures.ids: downloading {url} failed (HTTP {exc.code}"
                                 f"{f' after {attempts} tries' if attempt > 1 else ''}) -- "
                                 f"retry later or use structures.source: dir") from None
            why = f"HTTP {exc.code}"
        except (TimeoutError, ConnectionResetError, http.client.HTTPException) as exc:
            if last:
                raise InputError(f"structures.ids: downloading {url} failed ({exc!r} after "
                                 f"{attempts} tries) -- retry later or use structures.source: "
                                 f"dir") from None
            why = repr(exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) and not last:
                why = repr(reason)
            else:  # refused, no route, unknown host: no use trying again
                raise InputError(f"structures.ids: cannot reach {base} for {pid} ({reason}) "
                                 f"-- check the network/proxy or download the files and use "
                                 f"structures.source: dir") from None
        wait = RCSB_RETRY_WAIT_S * 2 ** (attempt - 1)
        log.warning("%s: %s (%s); try %d of %d in %.0f s", pid, url, why, attempt + 1, attempts,
                    wait)
        time.sleep(wait)
    raise AssertionError("unreachable")


def download_rcsb(pdb_id: str, url: str, out: str | os.PathLike,
                  timeout: float = RCSB_TIMEOUT_S, attempts: int = RCSB_ATTEMPTS) -> Path:
    """Download the assembly mmCIF of ``pdb_id`` to ``out``: ``{url}/{ID}-assembly1.cif``,
    else (HTTP 404) ``{url}/{ID}.cif``. The file starts with a :data:`RCSB_MARKER` comment
    line naming what was fetched; it is parsed (:func:`read_model`) before it is kept, and
    appears under its name only when complete (written to a temporary sibling, renamed)."""
    pid = check_pdb_id(pdb_id).upper()
    out = Path(out).expanduser()
    base = url.rstrip("/")
    for name in (f"{pid}-assembly1.cif", f"{pid}.cif"):
        data = _get(f"{base}/{name}", pid, timeout, attempts)
        if data is None:
            continue
        head = f"{RCSB_MARKER}{name} from {base}\n".encode()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.tmp-", suffix=".cif")
        except OSError as exc:
            if is_disk_full(exc, _existing(out.parent)):
                raise disk_full_error(out) from exc
            raise InputError(f"config key 'structures.cache': cannot write to {out.parent} "
                             f"({exc.strerror}) -- point it at a writable folder") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(head + data)
            try:  # validate before keeping
                read_model(tmp, pid.lower(), "-assembly" in name)
            except InputError as exc:
                why = str(exc).split(": ", 1)[-1].split(" -- ")[0]
                raise InputError(f"structures.ids: {base}/{name} is not a usable structure "
                                 f"file ({why}) -- check structures.rcsb_url, or download the "
                                 f"file and use structures.source: dir") from None
            os.replace(tmp, out)
        except OSError as exc:
            if is_disk_full(exc, out.parent):
                raise disk_full_error(out) from exc
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        log.info("%s: downloaded %s (%d bytes) -> %s", pid, name, len(data), out)
        return out
    raise InputError(f"config key 'structures.ids': PDB ID {pid} not found at {base} "
                     f"-- check the ID")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def fetch_rcsb(pdb_id: str, url: str, cache: str | os.PathLike,
               timeout: float = RCSB_TIMEOUT_S) -> Path:
    """Path of the download of ``pdb_id`` in ``cache`` (:func:`rcsb_path`): taken as it is
    when present (never downloaded again), else downloaded (:func:`download_rcsb`). In the
    workflow, rule ``fetch_structure`` has made every file before the structures job runs."""
    path = rcsb_path(pdb_id, cache)
    if path.is_file() and path.stat().st_size > 0:
        log.info("%s: cached %s", path.stem, path)
        return path
    return download_rcsb(pdb_id, url, path, timeout)


def read_rcsb(ids: list[str], url: str, cache: str | os.PathLike, classes: list[str] = (),
              exclude: list[str] = ()) -> list[ClassSource]:
    """Read every selected PDB ID from ``cache`` (downloading what is missing); class name =
    lower-case ID."""
    names = [check_pdb_id(i) for i in ids]
    out = []
    for name in select(names, [c.lower() for c in classes], [c.lower() for c in exclude],
                       "structures.ids"):
        path = fetch_rcsb(name, url, cache)
        st, mult = read_model(path, name, rcsb_is_assembly(path))
        out.append(ClassSource(name, shrec_group(name), "rcsb", st, mult))
    return out


def fetch_main(smk: Any) -> None:
    """Rule ``fetch_structure``: download ``smk.params.pdb_id`` from ``smk.params.url`` to
    ``smk.output[0]`` (scripts/fetch_structure.py builds ``smk`` from its arguments)."""
    download_rcsb(smk.params.pdb_id, smk.params.url, smk.output[0])
