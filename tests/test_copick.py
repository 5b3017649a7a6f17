"""dataset.source copick: a copick project (written with copick's own API from a simulated
tomogram) imported into the SHREC layout, predictions written back as picks, planning checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

copick = pytest.importorskip("copick")

from copick.models import PickableObject
from copick.ops.add import add_tomogram
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.io.copick_project import (
    check_project,
    import_tomogram,
    run_names,
    write_picks,
)
from affinity_vae.io.shrec import read_particle_locations
from affinity_vae.preflight import check_copick
from affinity_vae.rotation import (
    relion_to_matrix,
    rotate_volume,
    zxz_to_matrix,
)
from affinity_vae.simulate import Settings, simulate_tomogram

REPO = Path(__file__).resolve().parents[1]
VOXEL = 10.0
OBJECTS = {"ring6": "ring6", "rod_short": "rod-short", "tetra": "tetra"}  # class -> object
RUNS = ("TS_1", "TS_2")


def blob(a: float, b: float, c: float, n: int = 13) -> np.ndarray:
    """(n, n, n) anisotropic Gaussian (semi-axes a, b, c voxels along x, y, z), centre n // 2."""
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    return np.exp(-(x ** 2 / a ** 2 + y ** 2 / b ** 2 + z ** 2 / c ** 2)).astype(np.float32)


TEMPLATES = {"ring6": blob(4, 2, 1.2), "rod_short": blob(5, 1.5, 1.2), "tetra": blob(3, 2.5, 1.5)}


def ground_truth(tmp: Path) -> dict[str, tuple[object, pd.DataFrame]]:
    """Two simulated tiny tomograms (run -> (Tomogram, particle table))."""
    out = {}
    for i, run in enumerate(RUNS):
        settings = Settings.from_config(schema_defaults(
            "simulate", {"shape_zyx": (24, 48, 56), "n_particles": 10, "tilt_step": 5.0}))
        tomo = simulate_tomogram(TEMPLATES, settings, VOXEL, np.random.default_rng(i))
        out[run] = (tomo, tomo.particles.reset_index(drop=True))
    return out


def make_project(tmp: Path, runs: dict[str, tuple[np.ndarray, pd.DataFrame]],
                 objects: dict[str, str] = OBJECTS, user: str = "gt", session: str = "1") -> Path:
    """A copick project: objects named like the classes (copick names: '-' for '_'), one run a
    tomogram (OME-Zarr via copick.ops.add.add_tomogram, a 2-level pyramid), one pick set an
    object; every third pick carries its shift in the transformation's translation.

    Args:
        runs: run name -> ((z, y, x) tomogram, SHREC particle table); objects: class -> object.
    """
    cfg = tmp / "project" / "copick.json"
    pickable = [PickableObject(name=o, is_particle=True, label=i + 1)
               for i, o in enumerate(objects.values())]
    pickable.append(PickableObject(name="membrane", is_particle=False, label=9))
    root = copick.new_config(str(cfg), str(tmp / "project" / "overlay"), pickable_objects=pickable)
    for run, (volume, table) in runs.items():
        add_tomogram(root, run, "wbp", volume, voxel_spacing=VOXEL,
                     create_pyramid=True, pyramid_levels=2)
        run_obj = root.get_run(run)
        for cls, obj in objects.items():
            part = table[table["class"] == cls]
            if part.empty:
                continue
            xyz = part[["x", "y", "z"]].to_numpy(float) * VOXEL
            transforms = np.tile(np.eye(4), (len(part), 1, 1))
            transforms[:, :3, :3] = zxz_to_matrix(part[["z1", "x_angle", "z2"]].to_numpy())
            shift = np.zeros_like(xyz)
            shift[::3] = [7.5, -2.5, 5.0]
            transforms[:, :3, 3] = shift
            picks = run_obj.new_picks(obj, session, user)
            picks.from_numpy(xyz - shift, transforms)
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copick")
    truth = ground_truth(tmp)
    return make_project(tmp, {r: (tomo.reconstruction, t) for r, (tomo, t) in truth.items()}), truth


def dataset(cfg: Path, **copick_keys) -> dict:
    cp = {"config": str(cfg), "tomo_type": "wbp", "voxel_spacing": VOXEL} | copick_keys
    return schema_defaults("dataset", {"source": "copick", "voxel_size": VOXEL, "copick": cp})


def copy_project(cfg: Path, dest: Path) -> Path:
    """A copy of the project (overlay root rewritten) that a test may break."""
    shutil.copytree(cfg.parent, dest)
    data = json.loads((dest / cfg.name).read_text())
    data["overlay_root"] = "local://" + str(dest / "overlay")
    (dest / cfg.name).write_text(json.dumps(data))
    return dest / cfg.name


# ---------------------------------------------------------------- import
def test_run_names(project):
    cfg, _ = project
    assert run_names(dataset(cfg)) == list(RUNS)
    assert run_names(dataset(cfg, runs=["TS_2"])) == ["TS_2"]


@pytest.mark.parametrize("run", RUNS)
def test_import_round_trips_picks_and_tomogram(project, tmp_path, run):
    cfg, truth = project
    tomo, table = truth[run]
    import_tomogram(dataset(cfg), run, tmp_path)
    with mrcfile.open(tmp_path / "reconstruction.mrc", permissive=True) as mrc:
        data, voxel = mrc.data.copy(), float(mrc.voxel_size.x)
    zarr_data = copick.from_file(str(cfg)).get_run(run).voxel_spacings[0].tomograms[0].numpy()
    assert voxel == VOXEL
    assert data.shape == tomo.reconstruction.shape  # (z, y, x), full-resolution scale
    np.testing.assert_array_equal(data, zarr_data)
    np.testing.assert_array_equal(data, tomo.reconstruction)

    got = read_particle_locations(tmp_path / "particle_locations.txt", shape=data.shape)
    want = table.assign(**{"class": table["class"].map(OBJECTS)})
    key = ["class", "x", "y", "z"]
    got, want = (t.sort_values(key).reset_index(drop=True) for t in (got, want))
    assert len(got) == len(want) > 0
    assert list(got["class"]) == list(want["class"])
    np.testing.assert_array_equal(got[["x", "y", "z"]].to_numpy(),  # exactly, shifts included
                                  want[["x", "y", "z"]].to_numpy(float))
    r_got = zxz_to_matrix(got[["z1", "x_angle", "z2"]].to_numpy())
    r_want = zxz_to_matrix(want[["z1", "x_angle", "z2"]].to_numpy())
    assert np.abs(r_got - r_want).max() < 1e-6


def test_angles_agree_with_copicks_own_relion_export(project, tmp_path):
    """copick's converter (object-to-tomogram rotation -> RELION angles, centred coordinates
    around shape / 2 * spacing) and our import agree: same rotation, voxel = Angstrom / spacing."""
    cfg, truth = project
    import_tomogram(dataset(cfg), "TS_1", tmp_path)
    got = read_particle_locations(tmp_path / "particle_locations.txt")
    shape = np.asarray(truth["TS_1"][0].reconstruction.shape[::-1], float)  # (x, y, z)
    run = copick.from_file(str(cfg)).get_run("TS_1")
    for obj in OBJECTS.values():
        picks = run.get_picks(object_name=obj, user_id="gt")
        if not picks:
            continue
        df = picks[0].df("relion", tomogram_center=tuple(shape / 2 * VOXEL))
        ours = got[got["class"] == obj]
        centred = ours[["x", "y", "z"]].to_numpy() - shape / 2
        theirs = df[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy() / VOXEL
        np.testing.assert_allclose(centred, theirs, atol=1e-9)
        r_theirs = relion_to_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
        r_ours = zxz_to_matrix(ours[["z1", "x_angle", "z2"]].to_numpy())
        assert np.abs(r_theirs - r_ours).max() < 1e-6


def test_imported_angles_rotate_the_template_into_the_tomogram(project, tmp_path):
    """The imported pose is the one the particle has: the template rotated by it matches the
    noise-free volume at the particle far better than the inverse rotation does."""
    cfg, truth = project
    tomo, _ = truth["TS_2"]
    import_tomogram(dataset(cfg), "TS_2", tmp_path)
    got = read_particle_locations(tmp_path / "particle_locations.txt")
    inverse_obj = {o: c for c, o in OBJECTS.items()}
    n, h = 13, 6
    gm = np.pad(tomo.grandmodel, h)
    right, wrong = [], []
    for row in got.itertuples(index=False):
        x, y, z = (int(v) + h for v in (row.x, row.y, row.z))
        box = gm[z - h:z + h + 1, y - h:y + h + 1, x - h:x + h + 1].ravel()
        rot = zxz_to_matrix([row.z1, row.x_angle, row.z2])
        template = TEMPLATES[inverse_obj[row[0]]]
        for r, out in ((rot, right), (rot.T, wrong)):
            model = rotate_volume(template, r, output_shape=(n, n, n)).ravel()
            out.append(np.corrcoef(box, model)[0, 1])
    assert np.median(right) > 0.95
    assert np.median(right) > np.median(wrong) + 0.15


def test_import_ignores_the_output_pick_set(project, tmp_path):
    """Predictions written back (user_id/session_id) are never read as ground truth."""
    cfg = copy_project(project[0], tmp_path / "p")
    ds = dataset(cfg)
    import_tomogram(ds, "TS_1", tmp_path / "before")
    pred = pd.DataFrame({"tomogram": "TS_1", "x": [3.0], "y": [4.0], "z": [5.0],
                         "predicted": ["tetra"]})
    write_picks(ds, pred, VOXEL)
    import_tomogram(ds, "TS_1", tmp_path / "after")
    name = "particle_locations.txt"
    assert (tmp_path / "before" / name).read_text() == (tmp_path / "after" / name).read_text()


# ---------------------------------------------------------------- write-back
def test_write_picks_round_trip(project, tmp_path, caplog):
    cfg = copy_project(project[0], tmp_path / "p")
    rng = np.random.default_rng(3)
    n = 12
    rot = Rotation.random(n, random_state=rng).as_matrix()
    table = pd.DataFrame({"tomogram": ["TS_1"] * 8 + ["TS_2"] * 4,
                          "x": rng.uniform(0, 56, n), "y": rng.uniform(0, 48, n),
                          "z": rng.uniform(0, 24, n),
                          "predicted": ["ring6", "rod_short", "tetra", "unknown"] * 3})
    table[[f"r{i}{j}" for i in range(3) for j in range(3)]] = rot.reshape(n, 9)
    ds = dataset(cfg, user_id="avae-test", session_id="7")
    with caplog.at_level(logging.WARNING):
        write_picks(ds, table, VOXEL)
    assert "'unknown' is no particle object" in caplog.text

    root = copick.from_file(str(cfg))
    for (run, cls), part in table[table["predicted"] != "unknown"].groupby(["tomogram",
                                                                             "predicted"]):
        sets = root.get_run(run).get_picks(object_name=OBJECTS[cls], user_id="avae-test",
                                           session_id="7")
        assert len(sets) == 1
        pos, tf = sets[0].numpy()
        np.testing.assert_allclose(pos, part[["x", "y", "z"]].to_numpy() * VOXEL, rtol=1e-12)
        np.testing.assert_allclose(tf[:, :3, :3], rot[part.index], atol=1e-12)
        np.testing.assert_array_equal(tf[:, :3, 3], 0)
        assert sets[0].trust_orientation is True
    assert not root.get_run("TS_1").get_picks(object_name="unknown")
    # the ground truth is untouched
    gt = root.get_run("TS_1").get_picks(user_id="gt")
    assert sum(len(p.points) for p in gt) == len(project[1]["TS_1"][1])

    # a rerun that predicts no tetra in TS_1 empties that set (no stale picks)
    write_picks(ds, table[table["predicted"] != "tetra"], VOXEL)
    root = copick.from_file(str(cfg))
    tetra = root.get_run("TS_1").get_picks(object_name="tetra", user_id="avae-test")
    assert len(tetra) == 1 and len(tetra[0].points) == 0


def test_write_picks_without_pose_and_unknown_calls(project, tmp_path):
    """No predicted pose (NaN rotation): identity transforms, trust_orientation false; calls
    "unknown, nearest <class>" are not written as picks of that class."""
    cfg = copy_project(project[0], tmp_path / "p")
    table = pd.DataFrame({"tomogram": ["TS_2", "TS_2"], "x": [1.0, 9.0], "y": [2.0, 9.0],
                          "z": [3.0, 9.0], "predicted": ["RING6", "ring6"],
                          "unknown": [False, True]})
    table[[f"r{i}{j}" for i in range(3) for j in range(3)]] = np.nan
    write_picks(dataset(cfg), table, VOXEL)
    picks = copick.from_file(str(cfg)).get_run("TS_2").get_picks(
        object_name="ring6", user_id="affinity-vae", session_id="0")
    pos, tf = picks[0].numpy()
    np.testing.assert_array_equal(pos, [[10.0, 20.0, 30.0]])
    np.testing.assert_array_equal(tf[0], np.eye(4))
    assert picks[0].trust_orientation is False


# ---------------------------------------------------------------- planning-time checks
def test_check_finds_the_classes(project):
    cfg, _ = project
    found = check_project({"dataset": dataset(cfg)})
    assert sorted(found) == sorted(OBJECTS.values())
    assert all(Path(f).is_file() and f.endswith(".json") for f in found.values())
    data = check_copick({"dataset": dataset(cfg), "extract": schema_defaults("extract"),
                         "structures": schema_defaults("structures"),
                         "affinity": schema_defaults("affinity", {"method": "file"})})
    assert data.classes == sorted(OBJECTS.values())


def _break(cfg: Path, how: str) -> dict:
    """A dataset section (over a broken copy of the project where needed) for error ``how``."""
    root = cfg.parent
    if how == "missing config":
        return dataset(root / "nope.json")
    if how == "bad json":
        (root / "bad.json").write_text("{not json")
        return dataset(root / "bad.json")
    if how == "unknown run":
        return dataset(cfg, runs=["TS_1", "TS_9"])
    if how == "tomo type":
        return dataset(cfg, tomo_type="denoised")
    if how == "voxel spacing":
        return dataset(cfg, voxel_spacing=7.0) | {"voxel_size": 7.0}
    if how == "voxel size mismatch":
        return dataset(cfg) | {"voxel_size": 12.0}
    if how == "unknown object":
        return dataset(cfg, objects=["ring6", "4v94"])
    if how == "segmentation object":
        return dataset(cfg, objects=["membrane"])
    if how == "no picks":
        return dataset(cfg, picks_user_id="nobody")
    if how == "output overwrites input":
        return dataset(cfg, picks_user_id="gt", user_id="gt", session_id="1")
    if how == "bad output id":
        return dataset(cfg, user_id="my user")
    run = copick.from_file(str(cfg)).get_run("TS_2")
    if how == "ambiguous picks":
        run.new_picks("ring6", "2", "someone-else").from_numpy(np.array([[10.0, 10.0, 10.0]]))
        return dataset(cfg)
    if how == "pick outside":
        picks = run.get_picks(object_name="tetra", user_id="gt")[0]
        pos, tf = picks.numpy()
        pos[0, 0] = 56 * VOXEL  # x = 56 voxels: one past the last
        picks.from_numpy(pos, tf)
        return dataset(cfg)
    if how == "not a rotation":
        picks = run.get_picks(object_name="tetra", user_id="gt")[0]
        pos, tf = picks.numpy()
        tf[0, :3, :3] = np.diag([1.0, 1.0, -1.0])
        picks.from_numpy(pos, tf)
        return dataset(cfg)
    raise ValueError(how)


ERRORS = {  # how -> what the one line must say
    "missing config": ["nope.json", "not found"],
    "bad json": ["bad.json", "not valid JSON"],
    "unknown run": ["copick.json", "TS_9", "dataset.copick.runs"],
    "tomo type": ["copick.json", "denoised", "dataset.copick.tomo_type", "wbp"],
    "voxel spacing": ["copick.json", "no voxel spacing 7", "10.0"],
    "voxel size mismatch": ["dataset.voxel_size", "12", "copick.json"],
    "unknown object": ["copick.json", "4v94", "dataset.copick.objects"],
    "segmentation object": ["copick.json", "membrane", "is_particle"],
    "no picks": ["copick.json", "nobody", "picks_user_id"],
    "output overwrites input": ["dataset.copick.user_id", "overwrite"],
    "bad output id": ["dataset.copick.user_id", "my user"],
    "ambiguous picks": ["copick.json", "TS_2", "someone-else/2", "picks_user_id"],
    "pick outside": ["gt_1_tetra.json", "outside", "56"],
    "not a rotation": ["gt_1_tetra.json", "not a rotation"],
}


@pytest.mark.parametrize("how", sorted(ERRORS))
def test_check_errors_are_one_line(project, tmp_path, how):
    cfg = copy_project(project[0], tmp_path / "p")
    ds = _break(cfg, how)
    with pytest.raises(InputError) as err:
        check_project({"dataset": ds})
    msg = str(err.value)
    assert "\n" not in msg and " -- " in msg, msg
    for part in ERRORS[how]:
        assert part in msg, (part, msg)


def test_import_refuses_a_pick_outside(project, tmp_path):
    cfg = copy_project(project[0], tmp_path / "p")
    ds = _break(cfg, "pick outside")
    with pytest.raises(InputError, match="outside"):
        import_tomogram(ds, "TS_2", tmp_path / "out")
    assert not (tmp_path / "out" / "reconstruction.mrc").exists()


# ---------------------------------------------------------------- end to end
def _schema_has_copick() -> bool:
    schema = (REPO / "workflow" / "schemas" / "dataset.schema.yaml").read_text()
    return "copick" in schema and (REPO / "workflow" / "rules" / "datasets.smk").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _schema_has_copick(),
                    reason="needs dataset.source copick in workflow/schemas/dataset.schema.yaml "
                           "and rule import_tomogram (workflow/rules/datasets.smk)")
def test_tiny_pipeline_from_a_copick_project_to_predict(tmp_path):
    """The tiny simulation as a copick project (picks with transforms, OME-Zarr tomograms),
    run to `predict`: every particle reaches the extract STAR with its class (objects renamed
    back with extract.rename), its coordinates and its rotation; predict writes its calls back
    into the project, one pick set per predicted class, which copick reads at the test
    tomogram's particle positions."""
    import starfile
    import yaml
    from workflow_helpers import TINY, snakemake

    sim_run = "copick_test_sim"
    snakemake("simulate", "--cores", "2", "--configfile", str(TINY), "--config",
              f"run={sim_run}")
    sim = REPO / "results" / sim_run / "data" / "simulated"
    truth = {}
    for i in (0, 1):
        folder = sim / f"model_{i}"
        with mrcfile.open(folder / "reconstruction.mrc", permissive=True) as mrc:
            recon = mrc.data.copy()
        truth[f"TS_{i}"] = (recon, read_particle_locations(folder / "particle_locations.txt"))
    classes = sorted(set(truth["TS_0"][1]["class"]) | set(truth["TS_1"][1]["class"]))
    objects = {c: c.replace("_", "-") for c in classes}
    cfg_json = make_project(tmp_path, truth, objects)

    cfg = yaml.safe_load(TINY.read_text())
    run = "copick_test"
    cfg["run"] = run
    cfg["dataset"] = {**dataset(cfg_json), "splits": {"test": ["TS_1"]},
                      "unseen_classes": ["ring7"]}
    cfg["extract"] = {**cfg["extract"], "rename": {o: c for c, o in objects.items() if o != c}}
    cfg["denoise"] = {"enabled": False}
    cfg["train"] = {**cfg["train"], "epochs": 4}  # the test checks the data path, not learning
    cfg["evaluate"] = {**cfg["evaluate"], "baseline": False}
    cfg_path = tmp_path / "copick.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    shutil.rmtree(REPO / "results" / run, ignore_errors=True)
    snakemake("predict", "--cores", "2", "--configfile", str(cfg_path), timeout=900)
    for name, (_, loc) in truth.items():
        star = starfile.read(REPO / "results" / run / "subtomos" / f"{name}.star")
        key = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
        star = star.sort_values(key).reset_index(drop=True)
        loc = loc.sort_values(["x", "y", "z"]).reset_index(drop=True)
        assert list(star["avaeClass"]) == list(loc["class"])
        np.testing.assert_array_equal(star[key].to_numpy(float),
                                      loc[["x", "y", "z"]].to_numpy(float))
        got = relion_to_matrix(star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]
                               .to_numpy(float))
        np.testing.assert_allclose(got, zxz_to_matrix(loc[["z1", "x_angle", "z2"]]
                                                      .to_numpy(float)), atol=1e-5)
    # predictions written back: one pick set per predicted class of the test run TS_1, under
    # dataset.copick.user_id / session_id, at the particles' positions (A)
    root = copick.from_file(str(cfg_json))
    ds = cfg["dataset"]["copick"]
    test_loc = truth["TS_1"][1]
    written = [p for p in root.get_run("TS_1").get_picks(user_id=ds.get("user_id",
                                                                         "affinity-vae"))]
    positions = np.concatenate([p.numpy()[0] for p in written if len(p.points)])
    want = test_loc[["x", "y", "z"]].to_numpy(float) * VOXEL
    assert 0 < len(positions) <= len(want)  # calls of "unknown" are not written
    for row in positions:  # every written pick sits on a test particle
        assert np.min(np.abs(want - row).max(axis=1)) < 1e-6
    assert {p.pickable_object_name for p in written if len(p.points)} <= set(objects.values())
