"""One source of truth: the library does the job, once (issue 17).

- one reader of affinity CSVs (affinity_vae.io.affinity_csv), importable with numpy/pandas only;
- the MRC stack of stage extract is mrcfile's array and header, identical to what
  ``mrcfile.new`` + ``update_header_stats`` (affinity_vae.io.mrc.write_volume) writes;
- one cube group (scipy ``Rotation.create_group("O")``) for the FSC affinity and augmentation;
- one torch quaternion -> matrix, equal to scipy's ``Rotation.from_quat``;
- one RELION ZYZ convention (affinity_vae.rotation), which evaluate's export calls.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae import rotation
from affinity_vae.errors import InputError
from affinity_vae.extract.boxes import StackWriter
from affinity_vae.io import affinity_csv
from affinity_vae.io.mrc import read_volume, write_volume

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# --- affinity CSV -------------------------------------------------------------------------------

def test_one_affinity_reader_used_by_training_and_the_affinity_stage(tmp_path):
    from affinity_vae import data
    from affinity_vae.affinity import matrix

    assert matrix.read_affinity is affinity_csv.read_affinity
    assert data.read_affinity is affinity_csv.read_affinity
    csv = tmp_path / "a.csv"
    csv.write_text("A,B,C\n1,0.2,0.3\n0.2,1,0.5\n0.3,0.5,1\n")  # reference format, no index
    df = data.read_affinity_matrix(csv, ["c", "a"])  # case-insensitive, data's spelling
    assert list(df.index) == ["a", "B", "c"] and df.loc["c", "a"] == pytest.approx(0.3)
    csv.write_text("A,B\n1,0.2\n0.7,1\n")  # asymmetric
    with pytest.raises(InputError, match="not symmetric"):
        data.read_affinity_matrix(csv, ["A", "B"])
    with pytest.raises(InputError, match="not found"):
        affinity_csv.read_affinity(tmp_path / "missing.csv")


def test_affinity_reader_imports_only_numpy_pandas_and_the_package():
    tree = ast.parse((REPO / "affinity_vae" / "io" / "affinity_csv.py").read_text())
    tops = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names}
    tops |= {n.module.split(".")[0] for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert tops - set(sys.stdlib_module_names) <= {"numpy", "pandas", "affinity_vae"}
    code = ("import sys; import affinity_vae.io.affinity_csv; "
            "print(sorted(m for m in ('torch', 'scipy', 'mrcfile', 'sklearn')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, check=True,
                         capture_output=True).stdout
    assert out.strip() == "[]"


# --- MRC stack ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 6, 5, 4), (7, 6, 5)])
def test_stack_writer_equals_mrcfile_with_update_header_stats(tmp_path, shape):
    """Boxes written in any order, in chunks: the data, shape, voxel size and every header field
    equal those of mrcfile.new + set_data + update_header_stats (dmean, rms to float32
    rounding: float64 sums here, mrcfile's float32 pairwise sums there)."""
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    order = rng.permutation(shape[0])
    with StackWriter(tmp_path / "a.mrcs", shape, 12.5) as w:
        w.write(order[:3], data[order[:3]])
        w.write(order[3:], data[order[3:]])
    write_volume(tmp_path / "b.mrcs", data, 12.5, stack=True)  # mrcfile.new + update stats
    back, voxel = read_volume(tmp_path / "a.mrcs")
    assert np.array_equal(back, data) and voxel == 12.5
    with mrcfile.open(tmp_path / "a.mrcs") as a, mrcfile.open(tmp_path / "b.mrcs") as b:
        assert a.data.shape == shape and a.is_volume_stack() == (len(shape) == 4)
        for field in a.header.dtype.names:
            if field in ("dmean", "rms"):
                assert float(a.header[field]) == pytest.approx(float(b.header[field]), rel=1e-6)
            else:
                assert np.array_equal(a.header[field], b.header[field]), field
        assert float(a.header.dmin) == data.min() and float(a.header.dmax) == data.max()
        assert float(a.header.dmean) == pytest.approx(data.mean(dtype=np.float64), rel=1e-6)
        assert float(a.header.rms) == pytest.approx(data.std(dtype=np.float64), rel=1e-6)


def test_stack_writer_leaves_nothing_when_interrupted(tmp_path):
    with pytest.raises(RuntimeError), StackWriter(tmp_path / "a.mrcs", (3, 4, 4, 4), 10.0) as w:
        w.write([0], np.ones((1, 4, 4, 4), np.float32))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# --- rotation groups ----------------------------------------------------------------------------

def _signed_permutations(n: int) -> set[bytes]:
    """The proper signed permutation matrices of size n, as int8 bytes."""
    out = set()
    for perm in itertools.permutations(range(n)):
        for signs in itertools.product((1, -1), repeat=n):
            m = np.eye(n, dtype=np.int8)[list(perm)] * np.array(signs, np.int8)[:, None]
            if round(np.linalg.det(m)) == 1:
                out.add(m.tobytes())
    return out


def test_cube_group_is_scipys_O_identity_first_and_used_by_fsc_and_augmentation():
    from affinity_vae.affinity.fsc import octahedral_group

    g = rotation.cube_rotations()
    assert g.shape == (24, 3, 3) and np.array_equal(g[0], np.eye(3))
    assert {m.astype(np.int8).tobytes() for m in g} == _signed_permutations(3)
    scipy_o = Rotation.create_group("O")
    assert np.allclose(Rotation.from_matrix(g).magnitude().sum(),
                       scipy_o.magnitude().sum())  # the same 24 rotations (same angles)
    assert np.array_equal(octahedral_group(), g)
    sq = rotation.square_rotations()
    assert sq.shape == (4, 2, 2) and np.array_equal(sq[0], np.eye(2))
    assert {m.astype(np.int8).tobytes() for m in sq} == _signed_permutations(2)


@pytest.mark.parametrize("n", [6, 7])
def test_each_rot90_augmentation_element_is_its_group_matrix(n):
    """data's (permutation, reflection) form of each cube_rotations matrix R rotates a volume
    exactly as affinity_vae.rotation.rotate_volume(vol, R) about voxel n // 2."""
    from affinity_vae.data import CUBE_ROTATIONS, _axis_rotations, _permute_reflect

    vol = np.random.default_rng(n).normal(size=(n, n, n)).astype(np.float32)
    x = torch.from_numpy(vol)[None, None]
    elements = []
    for r in rotation.cube_rotations():
        (element,) = _axis_rotations(r[None])
        out = _permute_reflect(x, *element)[0, 0].numpy()
        np.testing.assert_allclose(out, rotation.rotate_volume(vol, r, order=1), atol=1e-5)
        elements.append(element)
    assert sorted(elements) == sorted(CUBE_ROTATIONS) and len(set(elements)) == 24


# --- quaternion and RELION conventions ----------------------------------------------------------

def test_torch_quaternion_to_matrix_equals_scipy_from_quat():
    from affinity_vae.model.gmd import quaternion_to_matrix

    q = np.random.default_rng(0).normal(size=(64, 4))  # (w, x, y, z), any length
    ours = quaternion_to_matrix(torch.from_numpy(q)).numpy()
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy: scalar last
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    single = quaternion_to_matrix(torch.from_numpy(q).float()).numpy()
    np.testing.assert_allclose(single, ref, atol=1e-6)


def test_relion_export_uses_the_one_relion_convention():
    from affinity_vae.evaluate.pose import relion_angles

    rng = np.random.default_rng(1)
    zxz = rotation.random_zxz(50, rng)
    mats = rotation.zxz_to_matrix(zxz)
    ang = relion_angles(mats)
    np.testing.assert_allclose(ang, rotation.zxz_to_relion(zxz), atol=1e-9)
    np.testing.assert_allclose(rotation.relion_to_matrix(ang), mats, atol=1e-12)  # round trip
    np.testing.assert_allclose(rotation.relion_to_zxz(ang),
                               rotation.matrix_to_zxz(mats), atol=1e-6)


def test_a_full_disk_stops_the_stack_writer_before_any_box_with_one_line(tmp_path):
    """The stack's blocks are reserved up front: on a 256 KiB file system a 2 MiB stack is the
    one-line InputError (not a SIGBUS from a write through the memory map) and leaves nothing."""
    import shutil

    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
            check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with (pytest.raises(InputError, match="no space left on device"),
              StackWriter(mnt / "s.mrcs", (16, 32, 32, 32), 10.0) as w):
            w.write(range(16), np.ones((16, 32, 32, 32), np.float32))
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_point_groups_are_scipys_groups_in_relions_frames():
    from affinity_vae.symmetry import group_rotations

    def same_set(a: np.ndarray, b: np.ndarray) -> bool:
        return len(a) == len(b) and all(np.isclose(b, m, atol=1e-9).all((-2, -1)).any()
                                        for m in a)

    assert np.array_equal(group_rotations("O"), rotation.cube_rotations())
    for name, size in [("C3", 3), ("D4", 8), ("T", 12), ("I1", 60)]:
        g = group_rotations(name)
        assert len(g) == size and np.array_equal(g[0], np.eye(3))
        assert same_set(g, Rotation.create_group(name.rstrip("1")).as_matrix())
    phi = (1 + 5 ** 0.5) / 2  # RELION's I2: a 5-fold along (1, 0, phi)
    five = Rotation.from_rotvec(np.radians(72) * np.array([1, 0, phi]) / np.hypot(1, phi))
    assert np.isclose(group_rotations("I"), five.as_matrix(), atol=1e-9).all((-2, -1)).any()
    assert not np.isclose(group_rotations("I1"), five.as_matrix(), atol=1e-9).all((-2, -1)).any()
