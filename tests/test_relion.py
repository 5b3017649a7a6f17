"""RELION 5 projects in and out (affinity_vae/io/relion.py): the coordinate and angle
conventions, the reader's one-line errors, the write-back, and the tiny pipeline run from a
RELION 5 project written with starfile from a simulated tomogram."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
import yaml

from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.io import relion
from affinity_vae.io.shrec import read_particle_locations
from affinity_vae.rotation import (
    matrix_to_relion,
    relion_to_matrix,
    relion_to_zxz,
    zxz_to_matrix,
    zxz_to_relion,
)

RNG = np.random.default_rng(0)


def euler_angles2matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler_angles2matrix (src/euler.cpp), written out: the matrix A (3, 3)."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


def random_relion(n: int) -> np.ndarray:
    return np.column_stack([RNG.uniform(-180, 180, n), RNG.uniform(5, 175, n),
                            RNG.uniform(-180, 180, n)])


# ---------------------------------------------------------------- conventions
def test_centred_angstrom_to_voxels_hand_example():
    # 2.5 A tilt-series pixels, binning 4 (10 A voxels), 1000 x 800 x 301 unbinned pixels:
    # RELION's centre is size // 2 = (500, 400, 150) unbinned pixels.
    t = relion.TomogramInfo("t", 2.5, 4.0, (1000, 800, 301))
    xyz = np.array([[0.0, 0.0, 0.0], [250.0, -100.0, 25.0]])
    vox = relion.centred_angst_to_voxels(xyz, t)
    np.testing.assert_allclose(vox, [[125.0, 100.0, 37.5], [150.0, 90.0, 40.0]])
    np.testing.assert_allclose(relion.voxels_to_centred_angst(vox, t), xyz, atol=1e-9)
    assert t.shape_zyx == (75, 200, 250)
    np.testing.assert_allclose(relion.unbinned_pixels_to_voxels([[600, 360, 160]], t),
                               [[150, 90, 40]])


def test_relion_matrix_is_relions_euler_angles2matrix():
    for a in random_relion(20):
        np.testing.assert_allclose(relion_to_matrix(a), euler_angles2matrix(*a), atol=1e-12)


def test_zyz_to_zxz_to_zyz_keeps_the_rotation():
    a = random_relion(200)
    zxz = relion_to_zxz(a)
    np.testing.assert_allclose(zxz_to_matrix(zxz), relion_to_matrix(a), atol=1e-9)
    back = zxz_to_relion(zxz)
    np.testing.assert_allclose(relion_to_matrix(back), relion_to_matrix(a), atol=1e-9)
    np.testing.assert_allclose(relion_to_matrix(matrix_to_relion(relion_to_matrix(a))),
                               relion_to_matrix(a), atol=1e-9)


def test_subtomogram_angles_compose_as_relion_does():
    part, sub = random_relion(10), random_relion(10)
    df = pd.DataFrame(np.column_stack([part, sub]),
                      columns=[*relion.ANGLES, *relion.SUBTOMO_ANGLES])
    got = relion.particle_matrices(df)
    for i in range(10):  # RELION's ParticleSet::getMatrix3x3: A_subtomogram @ A_particle
        want = euler_angles2matrix(*sub[i]) @ euler_angles2matrix(*part[i])
        np.testing.assert_allclose(got[i], want, atol=1e-9)
    assert relion.particle_matrices(pd.DataFrame({"x": [1.0]})) is None


# ---------------------------------------------------------------- a hand-made project
def write_project(root: Path, mrcs: dict[str, Path] | Path, particles: pd.DataFrame,
                  pixel: float = 5.0, binning: float = 2.0, size=(256, 256, 96)) -> dict:
    """A RELION 5 project under root (tomograms STAR under Tomograms/job001/, the MRC paths
    relative to the project root; mrcs: {rlnTomoName: MRC} or one MRC for TS_0) -> the
    dataset config."""
    mrcs = mrcs if isinstance(mrcs, dict) else {"TS_0": mrcs}
    rows = []
    for name, mrc in mrcs.items():
        rec = root / "Tomograms" / "job001" / "tomograms" / f"rec_{name}.mrc"
        rec.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mrc, rec)
        rows.append({"rlnTomoName": name, "rlnVoltage": 300.0,
                     "rlnTomoTiltSeriesPixelSize": pixel, "rlnTomoTomogramBinning": binning,
                     "rlnTomoSizeX": size[0], "rlnTomoSizeY": size[1], "rlnTomoSizeZ": size[2],
                     "rlnTomoReconstructedTomogram": str(rec.relative_to(root))})
    tomos = pd.DataFrame(rows)
    tstar = root / "Tomograms" / "job001" / "tomograms.star"
    pstar = root / "Picks" / "job002" / "particles.star"
    pstar.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"global": tomos}, tstar)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnTomoTiltSeriesPixelSize": [pixel]})
    starfile.write({"optics": optics, "particles": particles}, pstar, float_format="%.6f")
    return schema_defaults("dataset", {
        "source": "relion", "voxel_size": 10.0,
        "relion": {"tomograms_star": str(tstar), "particles_star": str(pstar)}})


@pytest.fixture
def mrc(tmp_path) -> Path:
    from affinity_vae.io.mrc import write_volume

    path = tmp_path / "vol.mrc"
    write_volume(path, np.zeros((48, 128, 128), np.float32), 10.0)
    return path


def particles(xyz_vox: np.ndarray, angles: np.ndarray, classes, name="TS_0") -> pd.DataFrame:
    t = relion.TomogramInfo(name, 5.0, 2.0, (256, 256, 96))
    c = relion.voxels_to_centred_angst(xyz_vox, t)
    return pd.DataFrame({"rlnTomoName": name, **{k: c[:, i] for i, k in
                                                 enumerate(relion.CENTRED)},
                         **{k: angles[:, i] for i, k in enumerate(relion.ANGLES)},
                         "rlnClassNumber": classes, "rlnOpticsGroup": 1})


def test_import_writes_the_shrec_layout(tmp_path, mrc):
    xyz = np.array([[10.5, 20.0, 30.0], [100.0, 64.0, 24.0], [0.0, 127.0, 47.0]])
    ang = random_relion(3)
    ds = write_project(tmp_path / "proj", mrc, particles(xyz, ang, [1, 2, 1]))
    assert relion.tomogram_names(ds) == ["TS_0"]
    assert relion.check_project(ds, 10.0) == ["1", "2"]
    out = tmp_path / "out"
    relion.import_tomogram(ds, "TS_0", out)
    assert (out / "reconstruction.mrc").resolve().samefile(
        tmp_path / "proj/Tomograms/job001/tomograms/rec_TS_0.mrc")
    loc = read_particle_locations(out / "particle_locations.txt", (48, 128, 128))
    np.testing.assert_allclose(loc[["x", "y", "z"]].to_numpy(float), xyz, atol=1e-6)
    assert list(loc["class"]) == ["1", "2", "1"]
    np.testing.assert_allclose(zxz_to_matrix(loc[["z1", "x_angle", "z2"]].to_numpy(float)),
                               relion_to_matrix(ang), atol=1e-6)


@pytest.mark.parametrize("change, match", [
    (lambda ds: ds["relion"].update(particles_star="/nonexistent/p.star"),
     "dataset.relion.particles_star.*not found"),
    (lambda ds: ds["relion"].update(class_column="rlnMyClass"), "no class column rlnMyClass"),
    (lambda ds: ds.update(voxel_size=8.0), "rlnTomoTiltSeriesPixelSize 5 x rlnTomo"),
    (lambda ds: ds["relion"].update(tomograms=["TS_9"]), "'TS_9' is not an rlnTomoName"),
    (lambda ds: ds["relion"].update(tomogram_column="rlnTomoReconstructedTomogramHalf1"),
     "no column rlnTomoReconstructedTomogramHalf1"),
])
def test_reader_errors_are_one_line_naming_the_file_or_key(tmp_path, mrc, change, match):
    ds = write_project(tmp_path / "proj", mrc, particles(np.array([[5.0, 5, 5]]),
                                                         random_relion(1), [1]))
    change(ds)
    with pytest.raises(InputError, match=match) as err:
        relion.check_project(ds, float(ds["voxel_size"]))
    assert "\n" not in str(err.value)


def test_tomogram_size_must_match_the_mrc(tmp_path, mrc):
    ds = write_project(tmp_path / "proj", mrc, particles(np.array([[5.0, 5, 5]]),
                                                         random_relion(1), [1]),
                       size=(256, 256, 100))
    with pytest.raises(InputError, match=r"tomograms.star: tomogram 'TS_0'.*\(128, 128, 50\) "
                                         r"voxels .* has \(128, 128, 48\)"):
        relion.check_project(ds, 10.0)


def test_particle_outside_or_in_an_unknown_tomogram_is_named(tmp_path, mrc):
    p = particles(np.array([[5.0, 5, 5], [5.0, 5, 60]]), random_relion(2), [1, 1])
    ds = write_project(tmp_path / "proj", mrc, p)
    with pytest.raises(InputError, match=r"particles.star: particle 2 of tomogram 'TS_0'.*"
                                         r"outside its \(128, 128, 48\) voxels"):
        relion.check_project(ds, 10.0)
    p = particles(np.array([[5.0, 5, 5]]), random_relion(1), [1], name="TS_7")
    ds = write_project(tmp_path / "proj2", mrc, pd.concat([particles(
        np.array([[5.0, 5, 5]]), random_relion(1), [1]), p]))
    with pytest.raises(InputError, match="rlnTomoName 'TS_7' is not in"):
        relion.check_project(ds, 10.0)


def test_write_particles_round_trips_through_starfile(tmp_path):
    t = relion.TomogramInfo("TS_0", 5.0, 2.0, (256, 256, 96))
    xyz = RNG.uniform(0, 48, (6, 3))
    ang = random_relion(6)
    table = pd.DataFrame({"rlnTomoName": "TS_0", "rlnCoordinateX": xyz[:, 0],
                          "rlnCoordinateY": xyz[:, 1], "rlnCoordinateZ": xyz[:, 2],
                          **{k: ang[:, i] for i, k in enumerate(relion.ANGLES)},
                          **{k: ang[:, i] for i, k in enumerate(relion.PRIORS)},
                          "avaePredictedClass": ["a", "b", "a", "c", "b", "a"],
                          "avaeCall": ["a", "b", "unknown, nearest a", "c", "b", "a"],
                          "avaeNearestClass": ["a", "b", "a", "c", "b", "a"]})
    path = tmp_path / "out.star"
    optics = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.07}
    relion.write_particles(table, {"TS_0": t}, path, ["a", "b", "c"], optics)
    back = starfile.read(path, always_dict=True)
    assert set(back) == {"optics", "particles"}
    p = back["particles"]
    np.testing.assert_allclose(relion.centred_angst_to_voxels(
        p[list(relion.CENTRED)].to_numpy(float), t), xyz, atol=1e-5)
    assert list(p["rlnClassNumber"]) == [1, 2, 1, 3, 2, 1]
    assert list(p["avaeUnknown"]) == [0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(relion_to_matrix(p[list(relion.ANGLES)].to_numpy(float)),
                               relion_to_matrix(ang), atol=1e-6)
    assert float(back["optics"]["rlnTomoTiltSeriesPixelSize"][0]) == 5.0


# ---------------------------------------------------------------- the tiny pipeline
@pytest.mark.slow
def test_tiny_pipeline_runs_from_a_relion_project(tmp_path):
    from workflow_helpers import REPO, TINY, snakemake

    sim_run = "relion_test_sim"
    snakemake("simulate", "--cores", "2", "--configfile", str(TINY), "--config",
              f"run={sim_run}")
    sim = REPO / "results" / sim_run / "data" / "simulated"
    originals = {f"TS_{i}": read_particle_locations(sim / f"model_{i}" /
                                                    "particle_locations.txt") for i in (0, 1)}
    classes = sorted(set(originals["TS_0"]["class"]) | set(originals["TS_1"]["class"]))
    parts = [particles(loc[["x", "y", "z"]].to_numpy(float),
                       zxz_to_relion(loc[["z1", "x_angle", "z2"]].to_numpy(float)),
                       [classes.index(c) + 1 for c in loc["class"]], name)
             for name, loc in originals.items()]
    ds = write_project(tmp_path / "proj", {f"TS_{i}": sim / f"model_{i}" / "reconstruction.mrc"
                                           for i in (0, 1)}, pd.concat(parts))
    cfg = yaml.safe_load(TINY.read_text())
    run = "relion_test"
    cfg.update(run=run)
    cfg["dataset"] = {**ds, "splits": {"test": ["TS_1"]}, "unseen_classes": ["ring7"]}
    cfg["extract"] = {**cfg["extract"], "rename": {str(i + 1): c for i, c in
                                                   enumerate(classes)}}
    cfg["denoise"] = {"enabled": False}
    cfg["train"] = {**cfg["train"], "epochs": 4}  # the test checks the data path, not learning
    cfg_path = tmp_path / "relion.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    shutil.rmtree(REPO / "results" / run, ignore_errors=True)
    snakemake("predict", "--cores", "2", "--configfile", str(cfg_path), timeout=900)
    out = REPO / "results" / run
    for name, loc in originals.items():
        star = starfile.read(out / "subtomos" / f"{name}.star")
        assert list(star["avaeClass"]) == list(loc["class"])
        np.testing.assert_allclose(star[["rlnCoordinateX", "rlnCoordinateY",
                                         "rlnCoordinateZ"]].to_numpy(float),
                                   loc[["x", "y", "z"]].to_numpy(float), atol=1e-5)
        np.testing.assert_allclose(
            relion_to_matrix(star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]
                             .to_numpy(float)),
            zxz_to_matrix(loc[["z1", "x_angle", "z2"]].to_numpy(float)), atol=1e-5)
    back = starfile.read(out / "predict" / "TS_1_relion.star", always_dict=True)["particles"]
    given = parts[1]
    np.testing.assert_allclose(back[list(relion.CENTRED)].to_numpy(float),
                               given[list(relion.CENTRED)].to_numpy(float), atol=1e-4)
    assert set(back["avaeClassName"]) <= set(classes)
    # the whole pipeline (default target) writes the test tomograms' predictions back too
    from workflow_helpers import plan

    jobs, _ = plan("--forceall", "--cores", "1", "--configfile", str(cfg_path))
    assert jobs.get("predict_particles") == 1 and jobs.get("figures_build") == 1


def test_picks_table_carries_the_predicted_rotation():
    from affinity_vae.predict import picks_table

    ang = random_relion(4)
    out = pd.DataFrame({"rlnTomoName": "TS_0", "rlnCoordinateX": [1.0, 2, 3, 4],
                        "rlnCoordinateY": 5.0, "rlnCoordinateZ": 6.0,
                        **{k: ang[:, i] for i, k in enumerate(relion.ANGLES)},
                        "avaePredictedClass": ["a", "b", "a", "a"],
                        "avaeCall": ["a", "unknown, nearest b", "a", "a"]})
    t = picks_table(out)
    rot = t[[f"r{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float).reshape(-1, 3, 3)
    np.testing.assert_allclose(rot, relion_to_matrix(ang), atol=1e-12)
    assert list(t["unknown"]) == [False, True, False, False]
    assert list(t["tomogram"]) == ["TS_0"] * 4
