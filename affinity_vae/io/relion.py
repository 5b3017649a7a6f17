"""RELION 5 tomography projects as a dataset (``dataset.source: relion``) and as an output.

In: a tomograms STAR (``dataset.relion.tomograms_star``: ``rlnTomoName``, the reconstructed
tomogram ``rlnTomoReconstructedTomogram`` or another column set by
``dataset.relion.tomogram_column``, ``rlnTomoTiltSeriesPixelSize``, ``rlnTomoTomogramBinning``,
``rlnTomoSizeX/Y/Z``) and a particles STAR (``dataset.relion.particles_star``: ``rlnTomoName``,
``rlnCenteredCoordinate{X,Y,Z}Angst`` or ``rlnCoordinate{X,Y,Z}``, ``rlnAngleRot/Tilt/Psi``
when present, the class in ``dataset.relion.class_column``). :func:`import_tomogram` writes one
tomogram in the SHREC 2021 layout (``reconstruction.mrc`` a symlink to the project's MRC,
``particle_locations.txt`` in that tomogram's voxels and SHREC ZXZ angles); every later stage
reads that layout. Out: :func:`write_particles` writes a RELION 5 particles STAR.

Coordinates (RELION 5, ``ParticleSet::getPosition`` and ``Tomogram`` in
src/jaz/tomography/): a particle's position in *unbinned tilt-series pixels* is
``rlnCenteredCoordinateXAngst / rlnTomoTiltSeriesPixelSize + centre`` with
``centre = rlnTomoSizeX // 2`` (C integer division; rlnTomoSizeX/Y/Z are in unbinned pixels),
and the older ``rlnCoordinateX`` (RELION 4) is that position directly. A tomogram reconstructed
with ``rlnTomoTomogramBinning`` b has voxel i at unbinned position ``b * i`` (origin 0), so the
voxel coordinate is the unbinned position / b (:func:`centred_angst_to_voxels`).

Angles: the particle's RELION matrix is ``A_subtomogram @ A_particle``
(``ParticleSet::getMatrix3x3``; A_subtomogram from ``rlnTomoSubtomogramRot/Tilt/Psi`` when
present, else the identity); conversions go through affinity_vae.rotation only.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.relion_geometry import (  # noqa: F401  (public names stay importable here)
    ANGLES,
    CENTRED,
    PIXELS,
    PRIORS,
    SIZE,
    SUBTOMO_ANGLES,
    VOXEL_RTOL,
    TomogramInfo,
    centred_angst_to_voxels,
    particle_matrices,
    unbinned_pixels_to_voxels,
    voxels_to_centred_angst,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- reading
def _block(path: Path, key: str, column: str) -> pd.DataFrame:
    """The first data block of a STAR file that has ``column``."""
    import starfile

    if not path.is_file():
        raise InputError(f"config key '{key}': file {path} not found -- point it at your "
                         f"RELION 5 STAR file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 (the parser's many error types)
        raise InputError(f"{path}: not a readable STAR file ({exc}) -- check config key "
                         f"'{key}'") from None
    for df in blocks.values():
        if isinstance(df, pd.DataFrame) and column in df.columns:
            return df
    raise InputError(f"{path}: no data block with {column} -- config key '{key}' must name a "
                     f"RELION 5 STAR file")


@functools.lru_cache(maxsize=8)
def _read_star_cached(path: str, mtime: float, key: str, column: str) -> pd.DataFrame:
    return _block(Path(path), key, column)


def _read(path: str | os.PathLike, key: str, column: str) -> pd.DataFrame:
    p = Path(path)
    mtime = p.stat().st_mtime if p.is_file() else -1.0
    return _read_star_cached(str(p), mtime, key, column).copy()


def _settings(ds: Mapping[str, Any]) -> dict[str, Any]:
    rel = ds["relion"]
    for k in ("tomograms_star", "particles_star"):
        if not rel.get(k):
            raise InputError(f"config key 'dataset.relion.{k}' is required when dataset.source "
                             f"is relion -- set it to your RELION 5 {k.split('_')[0]} STAR")
    return rel


def resolve_path(value: str, star: Path, project_dir: str | None) -> Path:
    """A path written in a STAR file: absolute, or relative to the RELION project directory
    (``dataset.relion.project_dir``; default the STAR file's folder or the first of its
    parents where the path exists)."""
    p = Path(value)
    if p.is_absolute():
        return p
    if project_dir:
        return Path(project_dir) / p
    for base in [star.parent, *star.parent.parents]:
        if (base / p).exists():
            return base / p
    return star.parent / p


def read_tomograms(ds: Mapping[str, Any]) -> dict[str, TomogramInfo]:
    """{rlnTomoName: TomogramInfo} of ``dataset.relion.tomograms_star`` (file order)."""
    rel = _settings(ds)
    star = Path(rel["tomograms_star"])
    key = "dataset.relion.tomograms_star"
    df = _read(star, key, "rlnTomoName")
    col = rel["tomogram_column"]
    for need in (col, "rlnTomoTiltSeriesPixelSize"):
        if need not in df.columns:
            raise InputError(f"{star}: no column {need} -- a RELION 5 tomograms STAR has it "
                             f"(set dataset.relion.tomogram_column for another tomogram column)")
    out = {}
    for _, row in df.iterrows():
        name = str(row["rlnTomoName"])
        binning = float(row["rlnTomoTomogramBinning"]) if "rlnTomoTomogramBinning" in df else 1.0
        path = resolve_path(str(row[col]), star, rel["project_dir"])
        if all(s in df.columns for s in SIZE):
            size: tuple[int, int, int] = (int(row[SIZE[0]]), int(row[SIZE[1]]), int(row[SIZE[2]]))
        else:  # no rlnTomoSize: the reconstruction's header (x, y, z) times the binning
            from affinity_vae.io.shrec import volume_header

            shape = volume_header(path)[0] if path.is_file() else (0, 0, 0)
            size = (round(shape[2] * binning), round(shape[1] * binning), round(shape[0] * binning))
        out[name] = TomogramInfo(name, float(row["rlnTomoTiltSeriesPixelSize"]), binning,
                                 size, path)
    return out


def read_particles(ds: Mapping[str, Any]) -> pd.DataFrame:
    """The particles block of ``dataset.relion.particles_star``, checked: it has rlnTomoName,
    coordinates (centred A or pixels) and the class column."""
    rel = _settings(ds)
    star = Path(rel["particles_star"])
    df = _read(star, "dataset.relion.particles_star", "rlnTomoName")
    if not (all(c in df.columns for c in CENTRED) or all(c in df.columns for c in PIXELS)):
        raise InputError(f"{star}: no rlnCenteredCoordinate{{X,Y,Z}}Angst or "
                         f"rlnCoordinate{{X,Y,Z}} columns -- give a RELION 5 particles STAR")
    col = rel["class_column"]
    if col not in df.columns:
        raise InputError(f"{star}: no class column {col} (columns: {', '.join(df.columns)}) -- "
                         f"set dataset.relion.class_column to the column holding the class")
    return df


def _class_names(values: pd.Series) -> list[str]:
    """Class values as names: integers (rlnClassNumber) without decimals."""
    out = []
    for v in values:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out.append(str(v))
    return out


def tomogram_names(ds: Mapping[str, Any]) -> list[str]:
    """Tomograms to use: ``dataset.relion.tomograms`` or every tomogram of the tomograms STAR
    that has particles (file order). Read at planning time."""
    tomos = read_tomograms(ds)
    rel = _settings(ds)
    wanted = rel["tomograms"]
    if wanted:
        missing = [t for t in wanted if t not in tomos]
        if missing:
            raise InputError(f"config key 'dataset.relion.tomograms': '{missing[0]}' is not an "
                             f"rlnTomoName of {rel['tomograms_star']} (names: "
                             f"{', '.join(tomos)}) -- fix the name")
        names = list(wanted)
    else:
        picked = set(read_particles(ds)["rlnTomoName"].astype(str))
        names = [t for t in tomos if t in picked]
    for t in names:
        if "/" in t or "\\" in t or t.startswith(".") or not t:
            raise InputError(f"{rel['tomograms_star']}: rlnTomoName '{t}' cannot name a folder "
                             f"-- rename the tomogram (letters, digits, _ . -)")
    if not names:
        raise InputError(f"{rel['particles_star']}: no particle lies in a tomogram of "
                         f"{rel['tomograms_star']} -- check rlnTomoName in both files")
    return names


def particle_locations(ds: Mapping[str, Any], tomo: str) -> pd.DataFrame:
    """One tomogram's particles as a SHREC table (affinity_vae.io.shrec.COLUMNS): class, x, y,
    z in that tomogram's voxels, z1, x_angle, z2 (ZXZ degrees; NaN without angles)."""
    from affinity_vae.rotation import matrix_to_zxz

    rel = _settings(ds)
    info = read_tomograms(ds)
    if tomo not in info:
        raise InputError(f"{rel['tomograms_star']}: no tomogram '{tomo}' -- add it or remove "
                         f"it from dataset.relion.tomograms")
    t = info[tomo]
    df = read_particles(ds)
    df = df[df["rlnTomoName"].astype(str) == tomo].reset_index(drop=True)
    if all(c in df.columns for c in CENTRED):
        xyz = centred_angst_to_voxels(df[list(CENTRED)].to_numpy(float), t)
    else:
        xyz = unbinned_pixels_to_voxels(df[list(PIXELS)].to_numpy(float), t)
    rot = particle_matrices(df)
    zxz = (np.full((len(df), 3), np.nan) if rot is None
           else np.asarray(matrix_to_zxz(rot), float).reshape(-1, 3))
    col = rel["class_column"]
    return pd.DataFrame({"class": _class_names(df[col]), "x": xyz[:, 0], "y": xyz[:, 1],
                         "z": xyz[:, 2], "z1": zxz[:, 0], "x_angle": zxz[:, 1],
                         "z2": zxz[:, 2]})


def check_project(ds: Mapping[str, Any], voxel_size: float, read_mrc: bool = True
                  ) -> list[str]:
    """Planning-time checks of a RELION project; returns the class names of its particles.

    Checks: every used tomogram's voxel size (pixel size x binning, and the MRC header) equals
    dataset.voxel_size, its MRC exists, every particle's tomogram is known and every coordinate
    lies inside its tomogram. Raises InputError (one line naming the STAR file and the key).
    """
    from affinity_vae.io.shrec import volume_header

    rel = _settings(ds)
    tstar, pstar = rel["tomograms_star"], rel["particles_star"]
    info = read_tomograms(ds)
    names = tomogram_names(ds)
    for name in names:
        t = info[name]
        if abs(t.voxel_size - voxel_size) > VOXEL_RTOL * voxel_size:
            raise InputError(f"{tstar}: tomogram '{name}' has rlnTomoTiltSeriesPixelSize "
                             f"{t.pixel_size:.4g} x rlnTomoTomogramBinning {t.binning:g} = "
                             f"{t.voxel_size:.4g} A voxels but dataset.voxel_size is "
                             f"{voxel_size:.4g} -- set dataset.voxel_size: {t.voxel_size:.4g} "
                             f"or use tomograms of that binning")
        if read_mrc:
            if t.path is None or not t.path.is_file():
                raise InputError(f"{tstar}: tomogram '{name}': file {t.path} not found -- "
                                 f"fix its path or set dataset.relion.project_dir")
            shape, header = volume_header(t.path)
            if tuple(shape) != t.shape_zyx:
                raise InputError(f"{tstar}: tomogram '{name}': rlnTomoSizeX/Y/Z "
                                 f"{t.size} / rlnTomoTomogramBinning {t.binning:g} gives "
                                 f"{t.shape_zyx[::-1]} voxels (x, y, z) but {t.path} has "
                                 f"{tuple(shape)[::-1]} -- fix rlnTomoSize or the binning")
            if header > 0 and abs(header - voxel_size) > VOXEL_RTOL * voxel_size:
                raise InputError(f"{t.path}: header voxel size {header:.4g} A disagrees with "
                                 f"dataset.voxel_size {voxel_size:.4g} -- fix the header or "
                                 f"dataset.voxel_size")
    parts = read_particles(ds)
    unknown = sorted(set(parts["rlnTomoName"].astype(str)) - set(info))
    if unknown:
        raise InputError(f"{pstar}: rlnTomoName '{unknown[0]}' is not in {tstar} -- add the "
                         f"tomogram there or remove its particles")
    classes: list[str] = []
    for name in names:
        loc = particle_locations(ds, name)
        zyx_shape = np.asarray(info[name].shape_zyx, float)
        xyz = loc[["x", "y", "z"]].to_numpy(float)
        outside = np.any((xyz[:, ::-1] < 0) | (xyz[:, ::-1] >= zyx_shape), axis=1)
        if outside.any():
            i = int(np.argmax(outside))
            raise InputError(f"{pstar}: particle {i + 1} of tomogram '{name}' at voxel x,y,z "
                             f"{tuple(np.round(xyz[i], 2))} lies outside its "
                             f"{tuple(int(s) for s in zyx_shape[::-1])} voxels -- fix its "
                             f"coordinates (or rlnTomoSize/binning in {tstar}) or remove it")
        classes += list(loc["class"])
    return sorted(set(classes))


# ---------------------------------------------------------------- the SHREC layout
def write_locations(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """``particle_locations.txt`` with full precision (coordinates %.10g, angles %.8f)."""
    lines = [f"{r[0]} {r[1]:.10g} {r[2]:.10g} {r[3]:.10g} {r[4]:.8f} {r[5]:.8f} {r[6]:.8f}\n"
             for r in table[["class", "x", "y", "z", "z1", "x_angle", "z2"]].itertuples(
                 index=False)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def import_tomogram(ds: Mapping[str, Any], tomo: str, out_dir: Path) -> None:
    """Write ``out_dir/reconstruction.mrc`` (a symlink to the project's MRC) and
    ``out_dir/particle_locations.txt`` for RELION tomogram ``tomo``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = read_tomograms(ds)[tomo]
    if t.path is None or not t.path.is_file():
        raise InputError(f"{ds['relion']['tomograms_star']}: tomogram '{tomo}': file {t.path} "
                         f"not found -- fix its path or set dataset.relion.project_dir")
    loc = particle_locations(ds, tomo)
    write_locations(out_dir / "particle_locations.txt", loc)
    link = out_dir / "reconstruction.mrc"
    tmp = out_dir / f".reconstruction.mrc.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(t.path.resolve())
    os.replace(tmp, link)
    log.info("%s: %d particles of %s -> %s", tomo, len(loc), t.path, out_dir)


# ---------------------------------------------------------------- write-back
def header_tomogram(name: str, mrc: str | os.PathLike, voxel_size: float) -> TomogramInfo:
    """A TomogramInfo for a tomogram outside any RELION project: binning 1, pixel size
    ``voxel_size``, size from the MRC header."""
    from affinity_vae.io.shrec import volume_header

    shape = volume_header(mrc)[0]
    z, y, x = (int(n) for n in shape)
    return TomogramInfo(name, float(voxel_size), 1.0, (x, y, z), Path(mrc))


def write_particles(table: pd.DataFrame, tomograms: Mapping[str, TomogramInfo],
                    path: str | os.PathLike, classes: Sequence[str],
                    optics: Mapping[str, float]) -> pd.DataFrame:
    """Write predict's table as a RELION 5 particles STAR (data_optics + data_particles).

    Args:
        table: predict's output: rlnTomoName, rlnCoordinateX/Y/Z (voxels of the tomogram),
            avaePredictedClass, avaeCall, avaeNearestClass, and rlnAngleRot/Tilt/Psi (+ Prior)
            when the model predicts rotations.
        tomograms: {rlnTomoName: TomogramInfo} for every tomogram in the table.
        classes: the model's classes; rlnClassNumber = 1 + index of the predicted class.
        optics: {voltage_kv, cs_mm, amplitude_contrast} (the dataset keys).
    Returns:
        the particles block written (one row a particle, table order).
    """
    import starfile

    names = table["rlnTomoName"].astype(str).to_numpy()
    missing = sorted(set(names) - set(tomograms))
    if missing:
        raise InputError(f"{path}: no tomogram geometry for '{missing[0]}' -- internal: pass "
                         f"its TomogramInfo")
    xyz = table[list(PIXELS)].to_numpy(float)
    centred = np.zeros_like(xyz)
    groups: dict[float, int] = {}
    group = np.zeros(len(table), int)
    for name in dict.fromkeys(names):
        m = names == name
        t = tomograms[name]
        centred[m] = voxels_to_centred_angst(xyz[m], t)
        group[m] = groups.setdefault(round(t.pixel_size, 6), len(groups) + 1)
    index = {c: i + 1 for i, c in enumerate(classes)}
    predicted = table["avaePredictedClass"].astype(str)
    out = pd.DataFrame({"rlnTomoName": names,
                        "rlnTomoParticleName": [f"{n}/{i + 1}" for i, n in enumerate(names)],
                        **{c: centred[:, k] for k, c in enumerate(CENTRED)},
                        "rlnOpticsGroup": group,
                        "rlnClassNumber": [index.get(c, 0) for c in predicted]})
    for c in (*ANGLES, *PRIORS):
        if c in table.columns:
            out[c] = table[c].to_numpy(float)
    out["avaeClassName"] = predicted.to_numpy()
    out["avaeUnknown"] = table["avaeCall"].astype(str).str.startswith("unknown").astype(int)
    if "avaeNearestClass" in table.columns:
        out["avaeNearestClass"] = table["avaeNearestClass"].astype(str).to_numpy()
    opt = pd.DataFrame({"rlnOpticsGroup": list(groups.values()),
                        "rlnOpticsGroupName": [f"opticsGroup{g}" for g in groups.values()],
                        "rlnSphericalAberration": float(optics["cs_mm"]),
                        "rlnVoltage": float(optics["voltage_kv"]),
                        "rlnAmplitudeContrast": float(optics["amplitude_contrast"]),
                        "rlnTomoTiltSeriesPixelSize": list(groups)})
    with atomic_path(path) as tmp:
        starfile.write({"optics": opt, "particles": out}, tmp, float_format="%.6f")
    log.info("%s: %d particles (RELION 5 particles STAR)", path, len(out))
    return out
