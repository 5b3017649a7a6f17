"""SHREC 2021 reader: particle_locations.txt validation and model_<k>/ folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affinity_vae.errors import InputError
from affinity_vae.io.mrc import write_volume
from affinity_vae.io.shrec import (
    COLUMNS,
    read_particle_locations,
    read_shrec_folder,
    write_particle_locations,
)

GOOD = """1BXN 10 20 5 12.5 80.0 -33.25
3qm1 40.5 2 9 0 0 0

# a comment line, and a blank line above
vesicle 30 30 10 NaN NaN NaN
fiducial 1 1 1 NaN NaN NaN  # trailing comment
"""


def write(tmp_path: Path, text: str, name: str = "particle_locations.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parses_shrec_lines(tmp_path):
    table = read_particle_locations(write(tmp_path, GOOD))
    assert list(table.columns) == COLUMNS
    assert list(table["class"]) == ["1BXN", "3qm1", "vesicle", "fiducial"]
    assert table.loc[0, ["x", "y", "z"]].tolist() == [10, 20, 5]
    assert table.loc[0, ["z1", "x_angle", "z2"]].tolist() == [12.5, 80.0, -33.25]
    assert np.isnan(table.loc[2, "z1"])
    assert table["x"].dtype == float


def test_classes_match_case_insensitively(tmp_path):
    table = read_particle_locations(write(tmp_path, GOOD),
                                    classes=["1bxn", "3QM1", "vesicle", "fiducial"])
    assert list(table["class"]) == ["1bxn", "3QM1", "vesicle", "fiducial"]


def test_round_trip_with_writer(tmp_path):
    table = read_particle_locations(write(tmp_path, GOOD))
    write_particle_locations(tmp_path / "out.txt", table.iloc[:2])
    again = read_particle_locations(tmp_path / "out.txt")
    assert again.equals(table.iloc[:2].reset_index(drop=True))


BAD = {
    "columns": ("1bxn 1 2 3 4 5\n", ":1: expected 7 whitespace-separated fields"),
    "non_numeric": ("1bxn 1 2 3 4 5 6\n1bxn 1 two 3 4 5 6\n", ":2: field 'two' is not a number"),
    "unknown_class": ("1bxn 1 2 3 4 5 6\nzzzz 1 2 3 4 5 6\n", ":2: unknown class 'zzzz'"),
    "outside": ("1bxn 1 2 3 4 5 6\n\n1bxn 1 2 64 4 5 6\n", ":3: coordinate (x=1, y=2, z=64) lies "
                "outside"),
    "negative": ("1bxn -1 2 3 4 5 6\n", ":1: coordinate (x=-1"),
    "nan_coordinate": ("1bxn nan 2 3 4 5 6\n", ":1: coordinate is NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_lines_give_one_line_error(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        read_particle_locations(path, shape=(64, 64, 64), classes=["1bxn"])
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)) and expected in msg, msg
    assert " -- " in msg  # the fix


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="particle_locations.txt: file not found"):
        read_particle_locations(tmp_path / "particle_locations.txt")


def make_folder(root: Path, recon_z: int = 32, label_z: int = 32, extras=True) -> Path:
    folder = root / "model_4"
    folder.mkdir()
    rng = np.random.default_rng(0)
    recon = rng.standard_normal((recon_z, 40, 48)).astype(np.float32)
    recon[(recon_z - label_z) // 2 + 10, 20, 30] = 50.0  # the particle, in the label frame z=10
    write_volume(folder / "reconstruction.mrc", recon, 10.0)
    if extras:
        labels = np.zeros((label_z, 40, 48), np.float32)
        labels[10, 20, 30] = 1
        for kind in ("grandmodel", "class_mask", "occupancy_mask"):
            write_volume(folder / f"{kind}.mrc", labels, 10.0)
    (folder / "particle_locations.txt").write_text("1BXN 30 20 10 1 2 3\n"
                                                   "vesicle 5 5 5 NaN NaN NaN\n")
    return folder


def test_reads_real_shrec_style_folder(tmp_path):
    sh = read_shrec_folder(make_folder(tmp_path), classes=["1bxn", "vesicle"])
    assert sh.name == "model_4" and sh.shape == (32, 40, 48) and sh.voxel_size == 10.0
    assert sorted(sh.files) == ["class_mask", "grandmodel", "occupancy_mask", "reconstruction"]
    assert list(sh.particles["class"]) == ["1bxn", "vesicle"]
    rec = sh.volume()
    assert rec[10, 20, 30] == 50.0


def test_only_reconstruction_and_locations_are_required(tmp_path):
    sh = read_shrec_folder(make_folder(tmp_path, extras=False))
    assert sorted(sh.files) == ["reconstruction"]
    with pytest.raises(InputError, match="no class_mask.mrc"):
        sh.volume("class_mask")


def test_reconstruction_thicker_than_labels_is_cropped(tmp_path):
    """Some SHREC releases pad the reconstruction in z; coordinates follow the label volumes."""
    sh = read_shrec_folder(make_folder(tmp_path, recon_z=48, label_z=32))
    assert sh.shape == (32, 40, 48) and sh.z_offset == 8
    rec = sh.volume()
    assert rec.shape == (32, 40, 48) and rec[10, 20, 30] == 50.0


@pytest.mark.parametrize("case", ["no_reconstruction", "no_locations", "truncated_mrc",
                                  "shape_mismatch", "outside"])
def test_bad_folders(tmp_path, case):
    folder = make_folder(tmp_path)
    expected = {"no_reconstruction": "no reconstruction.mrc",
                "no_locations": "particle_locations.txt: file not found",
                "truncated_mrc": "reconstruction.mrc: corrupt or truncated MRC",
                "shape_mismatch": "class_mask.mrc: shape (32, 40, 40) does not match",
                "outside": "particle_locations.txt:1: coordinate"}[case]
    if case == "no_reconstruction":
        (folder / "reconstruction.mrc").unlink()
    if case == "no_locations":
        (folder / "particle_locations.txt").unlink()
    if case == "truncated_mrc":
        data = (folder / "reconstruction.mrc").read_bytes()
        (folder / "reconstruction.mrc").write_bytes(data[:2000])
    if case == "shape_mismatch":
        write_volume(folder / "class_mask.mrc", np.zeros((32, 40, 40), np.float32), 10.0)
    if case == "outside":
        (folder / "particle_locations.txt").write_text("1BXN 48 20 10 1 2 3\n")
    with pytest.raises(InputError) as exc:
        read_shrec_folder(folder)
    assert expected in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_coordinates_star_reads_positions_classes_and_rejects_bad_rows(tmp_path):
    import pandas as pd
    import starfile

    from affinity_vae.io.star import UNLABELLED, read_coordinates_star

    path = tmp_path / "c.star"
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [5.0, 20.0],
                                               "rlnCoordinateY": [6.0, 7.0],
                                               "rlnCoordinateZ": [1.0, 2.0]})}, path)
    t = read_coordinates_star(path, shape=(4, 10, 30))
    assert list(t.columns) == COLUMNS and list(t["class"]) == [UNLABELLED] * 2
    assert t[["x", "y", "z"]].to_numpy().tolist() == [[5, 6, 1], [20, 7, 2]]
    assert (t[["z1", "x_angle", "z2"]] == 0).all().all()
    with pytest.raises(InputError, match=r"c\.star: particle 2 at \(x=20.*outside"):
        read_coordinates_star(path, shape=(4, 10, 15))
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [1.0], "avaeClass": ["a"],
                                               "rlnCoordinateY": [1.0]})}, path,
                   overwrite=True)
    with pytest.raises(InputError, match="rlnCoordinateZ"):
        read_coordinates_star(path)
    labelled = tmp_path / "l.star"
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [1.0],
                                               "rlnCoordinateZ": [1.0],
                                               "rlnClassName": ["ring6"]})}, labelled)
    assert list(read_coordinates_star(labelled)["class"]) == ["ring6"]
