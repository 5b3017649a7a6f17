"""Stage `extract`: boxes land on the particles, the STAR angles are right, edges, errors."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake_cmd
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.extract import (
    Settings,
    bin_boxes,
    dataset_classes,
    extract_tomogram,
    folder_splits,
    import_folder,
    map_classes,
    tomogram_split,
)
from affinity_vae.io.mrc import read_volume, write_volume
from affinity_vae.io.star import STAR_COLUMNS, read_star
from affinity_vae.rotation import random_zxz, rotate_volume, rotate_volume_zxz


def _settings(**given) -> Settings:
    """Stage extract's settings: the schema's defaults with ``given``."""
    return Settings.from_config(schema_defaults("extract", given))

BOX = 24
SHAPE = (72, 96, 96)  # z, y, x
CENTRES = [(x, y, z) for z in (20, 52) for y in (24, 72) for x in (24, 72)]  # x, y, z voxels


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def template(shrec_structures: Path) -> np.ndarray:
    """The 3D2F density (10 A/voxel, an elongated SHREC class) cropped to a 24^3 box around its
    centre voxel (all of its mass)."""
    vol, _ = read_volume(shrec_structures / "maps_10A" / "3d2f.mrc")
    c = vol.shape[0] // 2
    return vol[c - BOX // 2:c + BOX // 2, c - BOX // 2:c + BOX // 2, c - BOX // 2:c + BOX // 2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, template) -> dict:
    """A noisy tomogram with 8 rotated copies of the template, in the SHREC layout."""
    folder = tmp_path_factory.mktemp("shrec") / "model_0"
    folder.mkdir()
    rng = np.random.default_rng(1)
    angles = random_zxz(len(CENTRES), rng)
    vol = rng.normal(0, 0.2 * template.std(), SHAPE).astype(np.float32)
    for (x, y, z), a in zip(CENTRES, angles):
        vol[z - BOX // 2:z + BOX // 2, y - BOX // 2:y + BOX // 2, x - BOX // 2:x + BOX // 2] += \
            rotate_volume_zxz(template, a)
    write_volume(folder / "reconstruction.mrc", vol, 10.0)
    lines = [f"3D2F {x} {y} {z} {a[0]:.4f} {a[1]:.4f} {a[2]:.4f}"
             for (x, y, z), a in zip(CENTRES, angles)]
    lines.append("vesicle 48 48 36 nan nan nan")  # excluded by default
    (folder / "particle_locations.txt").write_text("\n".join(lines) + "\n")
    return {"folder": folder, "vol": vol, "angles": angles}


def run(dataset, tmp_path, settings=None, **kw) -> tuple[pd.DataFrame, np.ndarray]:
    f = dataset["folder"]
    table = extract_tomogram(f / "reconstruction.mrc", f / "particle_locations.txt",
                             tmp_path / "model_0.mrcs", tmp_path / "model_0.star", "model_0",
                             settings or _settings(box_size=BOX), kw.pop("voxel_size", 10.0),
                             kw.pop("class_list", ["3d2f"]), kw.pop("split", "train"), **kw)
    stack, voxel = read_volume(tmp_path / "model_0.mrcs")
    assert voxel == pytest.approx(10.0 * (settings.box_size / settings.out_box()
                                          if settings else 1.0))
    return table, stack


def test_boxes_at_particles_match_the_rotated_template_far_better_than_random(
        dataset, template, tmp_path):
    table, stack = run(dataset, tmp_path)
    assert list(table["avaeClass"]) == ["3d2f"] * len(CENTRES)  # vesicle excluded, lower case
    at_particles = [ncc(box, rotate_volume_zxz(template, a))
                    for box, a in zip(stack, dataset["angles"])]
    rng = np.random.default_rng(2)
    vol = dataset["vol"]
    random = []
    for a in dataset["angles"]:
        z, y, x = (rng.integers(0, n - BOX) for n in vol.shape)
        random.append(ncc(vol[z:z + BOX, y:y + BOX, x:x + BOX], rotate_volume_zxz(template, a)))
    assert min(at_particles) > 0.9
    assert max(np.abs(random)) < 0.5 and np.mean(np.abs(random)) < 0.25
    # the particle sits on voxel BOX/2: a box shifted by one voxel matches worse
    (x, y, z), a = CENTRES[0], dataset["angles"][0]
    for dz, dy, dx in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)]:
        lo = np.array([z + dz, y + dy, x + dx]) - BOX // 2
        shifted = vol[lo[0]:lo[0] + BOX, lo[1]:lo[1] + BOX, lo[2]:lo[2] + BOX]
        assert ncc(shifted, rotate_volume_zxz(template, a)) < at_particles[0] - 0.02


def test_relion_angles_in_star_rotate_the_template_like_the_shrec_angles(
        dataset, template, tmp_path):
    run(dataset, tmp_path)
    star = read_star(tmp_path / "model_0.star")
    assert list(star.columns) == STAR_COLUMNS
    stack, _ = read_volume(tmp_path / "model_0.mrcs")
    for row, box in zip(star.itertuples(), stack):
        shrec = rotate_volume_zxz(template, (row.avaeEulerZ1, row.avaeEulerX, row.avaeEulerZ2))
        # RELION: the particle is the reference rotated by A = Euler_angles2matrix(rot, tilt,
        # psi) = scipy's intrinsic ZYZ rotation, inverted
        relion = Rotation.from_euler("ZYZ", [row.rlnAngleRot, row.rlnAngleTilt,
                                             row.rlnAnglePsi], degrees=True)
        by_relion = rotate_volume(template, relion.inv().as_matrix())
        assert np.abs(by_relion - shrec).max() < 1e-3 * np.abs(shrec).max()
        # and it is the data: the extracted box matches it; the un-inverted reading does not
        wrong = rotate_volume(template, relion.as_matrix())
        right_ncc, wrong_ncc = ncc(box, by_relion), ncc(box, wrong)
        assert right_ncc > 0.9 and wrong_ncc < right_ncc - 0.15


def test_star_contract_class_numbers_splits_and_zscore(dataset, tmp_path):
    table, stack = run(dataset, tmp_path, class_list=["1bxn", "3d2f", "ring5"], split="test")
    star = read_star(tmp_path / "model_0.star")
    assert (star["rlnClassNumber"] == 2).all()  # 3d2f is 2nd of the sorted dataset classes
    assert list(star["avaeStackIndex"]) == list(range(len(CENTRES)))
    assert star["rlnImageName"].iloc[2] == "3@model_0.mrcs"
    assert (star["avaeSplit"] == "test").all() and (star["rlnTomoName"] == "model_0").all()
    np.testing.assert_allclose(star[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]],
                               np.array(CENTRES, float))
    assert stack.shape == (len(CENTRES), BOX, BOX, BOX)
    np.testing.assert_allclose(stack.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(stack.std(axis=(1, 2, 3)), 1, atol=1e-4)
    with mrcfile.open(tmp_path / "model_0.mrcs") as mrc:
        assert mrc.is_volume_stack() and mrc.header.dmean == pytest.approx(0, abs=1e-5)
    _, stack2 = run(dataset, tmp_path, class_list=["3d2f"], unseen=["3D2F"])
    assert (read_star(tmp_path / "model_0.star")["avaeSplit"] == "unseen").all()
    # a kept SHREC vesicle line has NaN angles: RELION angles 0, the original NaN kept
    run(dataset, tmp_path, _settings(box_size=BOX, exclude_classes=()),
        class_list=["3d2f", "vesicle"])
    vesicle = read_star(tmp_path / "model_0.star").iloc[-1]
    assert vesicle["avaeClass"] == "vesicle" and vesicle["rlnClassNumber"] == 2
    assert vesicle["rlnAngleRot"] == 0 and np.isnan(vesicle["avaeEulerZ1"])


def test_edge_particles_are_skipped_or_padded(dataset, tmp_path, caplog):
    f = tmp_path / "edge"
    f.mkdir()
    vol = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) % 97
    write_volume(f / "reconstruction.mrc", vol, 10.0)
    (f / "particle_locations.txt").write_text("a 3 48 36 0 0 0\nb 48 48 36 0 0 0\n"
                                              "a 95 94 70 0 0 0\n")
    d = {"folder": f}
    with caplog.at_level(logging.INFO, logger="affinity_vae.extract"):
        table, stack = run(d, tmp_path, _settings(box_size=BOX, normalise="none"),
                           class_list=["a", "b"])
    assert list(table["avaeClass"]) == ["b"]
    assert "2 particle(s) skipped at the edge" in caplog.text
    np.testing.assert_array_equal(stack[0], vol[24:48, 36:60, 36:60])

    for pad, fill in (("mean", vol.mean(dtype=np.float64)), ("zero", 0.0)):
        table, stack = run(d, tmp_path, _settings(box_size=BOX, edge="pad", pad_value=pad,
                                                 normalise="none"), class_list=["a", "b"])
        assert list(table["avaeClass"]) == ["a", "b", "a"]
        # particle 1 at x=3: box x from -9; 9 padded columns, the rest is the tomogram
        np.testing.assert_allclose(stack[0][:, :, :9], fill, rtol=1e-5)
        np.testing.assert_array_equal(stack[0][:, :, 9:], vol[24:48, 36:60, 0:15])
        # particle 3 at (x 95, y 94, z 70): the far corner is padded
        np.testing.assert_array_equal(stack[2][:14, :14, :13], vol[58:, 82:, 83:])
        np.testing.assert_allclose(stack[2][14:], fill, rtol=1e-5)


def test_shrec_reconstruction_padded_in_z_uses_the_labelled_frame(dataset, tmp_path):
    """Real SHREC 2021: reconstruction 512 slices, labels (and coordinates) in the central 200."""
    from affinity_vae.io.shrec import read_shrec_folder

    f = tmp_path / "model_0"
    f.mkdir()
    padded = np.pad(dataset["vol"], ((4, 4), (0, 0), (0, 0)))
    write_volume(f / "reconstruction.mrc", padded, 10.0)
    write_volume(f / "class_mask.mrc", np.zeros(SHAPE, np.float32), 10.0)
    shutil.copy(dataset["folder"] / "particle_locations.txt", f)
    folder = read_shrec_folder(f)
    assert folder.z_offset == 4 and folder.shape == SHAPE
    _, reference = run(dataset, tmp_path)
    _, stack = run({"folder": f}, tmp_path, z_offset=folder.z_offset, frame=folder.shape)
    np.testing.assert_array_equal(stack, reference)


def test_binning_keeps_the_centre_and_the_mean():
    z, y, x = np.mgrid[:32, :32, :32] - 16
    blob = np.exp(-((x - 2) ** 2 + y ** 2 + z ** 2) / (2 * 3.0 ** 2)).astype(np.float32)[None]
    for method in ("fourier", "mean"):
        small = bin_boxes(blob, 16, method)[0]
        assert small.shape == (16, 16, 16)
        assert small.mean() == pytest.approx(blob.mean(), rel=1e-4)
        com = [(small * g).sum() / small.sum() for g in np.mgrid[:16, :16, :16]]
        shift = 0.0 if method == "fourier" else -0.25  # block mean: (f - 1) / (2 f) voxel
        np.testing.assert_allclose(com, [8 + shift, 8 + shift, 9 + shift], atol=0.02)


def test_binned_extraction_writes_the_binned_voxel_size(dataset, tmp_path):
    table, stack = run(dataset, tmp_path, _settings(box_size=BOX, bin_to=12))
    assert stack.shape == (len(CENTRES), 12, 12, 12)


def test_invert_negates_the_boxes(dataset, tmp_path):
    _, plain = run(dataset, tmp_path, _settings(box_size=BOX, normalise="none"))
    _, inverted = run(dataset, tmp_path, _settings(box_size=BOX, normalise="none", invert=True))
    np.testing.assert_array_equal(inverted, -plain)


def test_class_filter_rename_and_case():
    s = _settings(rename={"3gl1": "smallA", "1BXN": "prot"}, exclude_classes=("vesicle", "4V94"))
    names = map_classes(["3GL1", "vesicle", "1bxn", "4v94", "Ring5"], s)
    assert list(names) == ["smallA", None, "prot", None, "ring5"]
    assert dataset_classes(["3GL1", "Ring5", "1bxn", "fiducial"], s, "x") == \
        ["fiducial", "prot", "ring5", "smallA"]
    keep = _settings(classes=("1BXN", "3gl1"))
    assert list(map_classes(["1bxn", "3GL1", "ring5"], keep)) == ["1BXN", "3gl1", None]
    assert tomogram_split("model_9", {"test": ["model_9"], "validation": []},
                          ["model_0", "model_9"]) == "test"
    assert tomogram_split("model_1", {"test": ["model_9"], "validation": ["model_1"]},
                          ["model_1", "model_9"]) == "validation"


@pytest.mark.parametrize("case", ["outside", "nan", "odd_box", "voxel_size", "empty_class",
                                  "unseen_excluded", "all_excluded", "split_name"])
def test_bad_input_gives_one_line_error_and_writes_nothing(dataset, tmp_path, case):
    f = tmp_path / "model_0"
    f.mkdir()
    vol = dataset["vol"].copy()
    locs = (dataset["folder"] / "particle_locations.txt").read_text()
    settings, kw = _settings(box_size=BOX), {}
    if case == "outside":
        locs += "3D2F 20 30 72 0 0 0\n"  # z = 72 in a 72-slice tomogram
    elif case == "nan":
        vol[50, 3, 7] = np.nan
    elif case == "odd_box":
        settings = _settings(box_size=23)
    elif case == "voxel_size":
        kw["voxel_size"] = 8.0
    elif case == "empty_class":
        settings = _settings(box_size=BOX, classes=("3d2f", "1bxn"))
    elif case == "unseen_excluded":
        kw["unseen"] = ["vesicle"]
    elif case == "all_excluded":
        settings = _settings(box_size=BOX, exclude_classes=("3d2f", "vesicle"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns about the NaN
        write_volume(f / "reconstruction.mrc", vol, 10.0)
    (f / "particle_locations.txt").write_text(locs)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        if case == "split_name":
            tomogram_split("model_0", {"test": ["model_9"], "validation": []},
                           ["model_0", "model_1"])
        elif case in ("empty_class", "all_excluded"):
            raw = pd.read_csv(f / "particle_locations.txt", sep=" ", header=None)[0]
            dataset_classes(raw, settings, "the dataset")
        else:
            extract_tomogram(f / "reconstruction.mrc", f / "particle_locations.txt",
                             out / "m.mrcs", out / "m.star", "model_0", settings,
                             kw.pop("voxel_size", 10.0), ["3d2f"], "train", **kw)
    message = str(err.value)
    assert "\n" not in message and " -- " in message  # one line: problem -- fix
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------- subtomo_folder import
def make_folder(root: Path, n_per_class: dict[str, int], shape=(16, 16, 16), test=()) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for c, n in n_per_class.items():
        for i in range(n):
            sub = root / "test" if (c, i) in test else root
            sub.mkdir(exist_ok=True)
            arr = rng.normal(size=shape).astype(np.float32) + i
            write_volume(sub / f"{c}_{i:03d}_meta.mrc", arr, 10.0)
            data[f"{sub.relative_to(root).as_posix()}/{c}_{i:03d}"] = arr
    return data


def test_subtomo_folder_import(tmp_path):
    data = make_folder(tmp_path / "in", {"1bxn": 5, "ring5": 4, "4V94": 3})
    (tmp_path / "in" / "classes.csv").write_text("1bxn,ring5\n")
    s = _settings(normalise="none")
    table = import_folder(tmp_path / "in", tmp_path / "imported.mrcs", tmp_path / "imported.star",
                          s, 10.0, {"test": 0.25, "validation": 0.0}, seed=0)
    stack, voxel = read_volume(tmp_path / "imported.mrcs")
    keys = sorted(k for k in data if "4V94" not in k)
    assert stack.shape == (9, 16, 16, 16) and voxel == 10.0
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(stack[i], data[k])
    star = read_star(tmp_path / "imported.star")
    assert list(star["avaeClass"]) == ["1bxn"] * 5 + ["ring5"] * 4
    assert list(star["rlnClassNumber"]) == [1] * 5 + [2] * 4
    assert (star[["rlnCoordinateX", "rlnAngleRot", "avaeEulerZ2"]] == 0).all().all()
    assert (star["rlnTomoName"] == "imported").all()
    assert star.groupby("avaeClass")["avaeSplit"].apply(lambda s: (s == "test").sum()).to_dict() \
        == {"1bxn": 1, "ring5": 1}  # round(0.25 * n) per class
    again = import_folder(tmp_path / "in", tmp_path / "b.mrcs", tmp_path / "b.star", s, 10.0,
                          {"test": 0.25, "validation": 0.0}, seed=0)
    assert list(again["avaeSplit"]) == list(table["avaeSplit"])  # same seed, same split


def test_subtomo_folder_test_subfolder_and_2d_images(tmp_path):
    make_folder(tmp_path / "in", {"a": 3, "b": 3}, shape=(12, 12), test=[("a", 2), ("b", 0)])
    table = import_folder(tmp_path / "in", tmp_path / "i.mrcs", tmp_path / "i.star",
                          _settings(), 10.0, {"test": 0.5, "validation": 0.0}, seed=0,
                          unseen=["b"])
    with mrcfile.open(tmp_path / "i.mrcs") as mrc:
        assert mrc.data.shape == (6, 12, 12) and mrc.is_image_stack()
    counts = (table["avaeClass"] + ":" + table["avaeSplit"]).value_counts().to_dict()
    assert counts == {"a:train": 2, "a:test": 1, "b:unseen": 3}  # test/ decides, no fraction


def test_subtomo_folder_bad_input(tmp_path):
    make_folder(tmp_path / "in", {"a": 2})
    write_volume(tmp_path / "in" / "noclass.mrc", np.zeros((16,) * 3, np.float32), 10.0)
    with pytest.raises(InputError, match="no '<class>_' prefix"):
        import_folder(tmp_path / "in", tmp_path / "i.mrcs", tmp_path / "i.star", _settings(),
                      10.0, schema_defaults("dataset")["folder_splits"], 0)
    (tmp_path / "in" / "noclass.mrc").unlink()
    write_volume(tmp_path / "in" / "a_big.mrc", np.zeros((18,) * 3, np.float32), 10.0)
    with pytest.raises(InputError, match="differs from"):
        import_folder(tmp_path / "in", tmp_path / "i.mrcs", tmp_path / "i.star", _settings(),
                      10.0, schema_defaults("dataset")["folder_splits"], 0)
    assert not list(tmp_path.glob("i.*")) and not list(tmp_path.glob(".i.*"))
    with pytest.raises(InputError, match="leaves no training"):
        folder_splits(np.array(["a", "a"]), np.zeros(2, bool), {"test": 0.6, "validation": 0.4},
                      0)


# ---------------------------------------------------------------- through snakemake
def snakemake(run_name: str, config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    # `snakemake -n` checks the data's classes against the structures (affinity_vae/preflight.py):
    # name-only stand-ins for the structures of the classes these tests use
    stubs = tmp_path / "structures"
    stubs.mkdir(exist_ok=True)
    for c in ("3d2f", "1bxn", "ring5"):
        (stubs / f"{c}.pdb").write_text("END\n")
    config = {"structures": {"source": "dir", "path": str(stubs)}, **config}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"run": run_name, **config}))
    cmd = snakemake_cmd("extract", "--cores", "2", "--configfile", str(cfg))
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("source", ["shrec", "subtomo_folder"])
def test_snakemake_extract_on_a_folder_given_by_path(dataset, tmp_path, source):
    run_name = f"tmp_test_extract_{source}_{abs(hash(str(tmp_path))) % 10 ** 8}"
    try:
        if source == "shrec":
            root = dataset["folder"].parent
            shutil.copytree(dataset["folder"], root / "model_1", dirs_exist_ok=True)
            res = snakemake(run_name, {
                "denoise": {"enabled": False}, "extract": {"box_size": BOX},
                "dataset": {"source": "shrec", "path": str(root),
                            "tomograms": ["model_0", "model_1"], "splits": {"test": ["model_1"]},
                            "unseen_classes": []}},
                tmp_path)
            outputs = ["model_0", "model_1"]
        else:
            make_folder(tmp_path / "in", {"1bxn": 4, "ring5": 4})
            res = snakemake(run_name, {"dataset": {"source": "subtomo_folder", "unseen_classes": [],
                                                   "path": str(tmp_path / "in")}}, tmp_path)
            outputs = ["imported"]
        assert res.returncode == 0, res.stderr[-3000:]
        subtomos = REPO / "results" / run_name / "subtomos"
        for tomo in outputs:
            assert len(read_star(subtomos / f"{tomo}.star")) == \
                (len(CENTRES) if source == "shrec" else 8)
        if source == "shrec":
            assert (read_star(subtomos / "model_1.star")["avaeSplit"] == "test").all()
            assert (read_star(subtomos / "model_0.star")["avaeSplit"] == "train").all()
    finally:
        shutil.rmtree(REPO / "results" / run_name, ignore_errors=True)
