"""extract.source isolated (the paper's dataset variant i): each particle rendered alone at its
true pose equals the simulator's particle, sits on the box centre, carries noise at the requested
SNR, and the STAR file follows the contract of the other sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, snakemake_cmd

from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.extract import Settings, extract_isolated, render_isolated
from affinity_vae.extract.boxes import box_corners, cut_boxes, normalise_boxes
from affinity_vae.extract.isolated import add_box_noise, noise_generator, read_densities
from affinity_vae.io.mrc import read_volume, write_volume
from affinity_vae.io.shrec import read_particle_locations
from affinity_vae.io.star import read_star
from affinity_vae.rotation import (
    angular_distance,
    matrix_to_zxz,
    random_zxz,
    zxz_to_matrix,
    zxz_to_relion,
)
from affinity_vae.simulate import placement


def _settings(**given) -> Settings:
    """Stage extract's settings: the schema's defaults with ``given``."""
    return Settings.from_config(schema_defaults("extract", given))


BOX = 32


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def blob(n: int, centre_xyz: np.ndarray, sigma: float) -> np.ndarray:
    """(n, n, n) Gaussian blob with its centre at (x, y, z) voxels."""
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    cx, cy, cz = centre_xyz
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma ** 2))


def asymmetric(n: int = 23) -> tuple[np.ndarray, np.ndarray]:
    """(n, n, n) density: a big blob on the centre voxel n // 2 and a small one at offset
    d = (6, 2, 1) voxels (x, y, z) -- no rotation symmetry. Returns (density, d)."""
    c = np.full(3, n // 2, dtype=float)
    d = np.array([6.0, 2.0, 1.0])
    return (blob(n, c, 2.0) + 0.6 * blob(n, c + d, 1.2)).astype(np.float32), d


def centroid_xyz(vol: np.ndarray, near_xyz: np.ndarray, radius: float = 2.5) -> np.ndarray:
    """Centre of mass (x, y, z) of ``vol`` within ``radius`` voxels of ``near_xyz``."""
    z, y, x = np.mgrid[[slice(0, s) for s in vol.shape]].astype(float)
    m = vol * (((x - near_xyz[0]) ** 2 + (y - near_xyz[1]) ** 2 + (z - near_xyz[2]) ** 2)
               <= radius ** 2)
    return np.array([(m * x).sum(), (m * y).sum(), (m * z).sum()]) / m.sum()


def test_feature_lands_at_R_times_its_offset_from_the_box_centre():
    """rotation.py's convention: a template feature at offset d sits at R @ d from the particle
    centre; the transposed reading (R.T @ d) is far off."""
    dens, d = asymmetric()
    angles = random_zxz(6, np.random.default_rng(3))
    boxes = render_isolated(dens, angles, BOX)
    c = np.full(3, BOX // 2, dtype=float)
    for box, R in zip(boxes, zxz_to_matrix(angles)):
        want, wrong = c + R @ d, c + R.T @ d
        got = centroid_xyz(box, want)
        assert np.linalg.norm(got - want) < 0.3, (got, want)
        assert np.linalg.norm(want - wrong) < 1.0 or \
            np.linalg.norm(centroid_xyz(box, wrong) - wrong) > 1.0


@pytest.mark.parametrize("n", [21, 22, 40])
def test_centre_of_a_symmetric_density_is_voxel_box_half(n):
    """A spherical density centred on its voxel n // 2 (odd, even, larger than the box) has its
    centre of mass on voxel BOX // 2 at every pose."""
    dens = blob(n, np.full(3, n // 2, float), 3.0).astype(np.float32)
    boxes = render_isolated(dens, random_zxz(4, np.random.default_rng(n)), BOX)
    z, y, x = np.mgrid[:BOX, :BOX, :BOX].astype(float)
    for b in boxes:
        com = np.array([(b * q).sum() for q in (x, y, z)]) / b.sum()
        np.testing.assert_allclose(com, BOX // 2, atol=0.02)


@pytest.fixture(scope="module")
def shrec_map(shrec_structures: Path) -> np.ndarray:
    """The 3D2F density at 10 A/voxel (62^3, an elongated asymmetric SHREC class)."""
    return read_volume(shrec_structures / "maps_10A" / "3d2f.mrc")[0]


def test_isolated_render_equals_the_grandmodel_crop_of_a_lone_particle(shrec_map):
    """Three particles 64 voxels apart (no neighbour in any 32^3 box) painted by the simulator
    (placement.render, its cropped template): the grandmodel box cut by extract equals the
    isolated render of the full map at the same angles (NCC >= 0.95; measured > 0.9999), and
    not the render at the inverse rotation."""
    radius = placement.template_radius(
        shrec_map, schema_defaults("simulate")["extent_threshold"])
    tpl = placement.crop_template(shrec_map, radius)
    ang = np.array([[30.0, 60.0, 100.0], [120.0, 40.0, -50.0], [200.0, 110.0, 170.0]])
    assert (angular_distance(zxz_to_matrix(ang), _transposed(ang)) > 60).all()
    parts = pd.DataFrame({"class": ["3d2f"] * 3, "x": [32, 96, 160], "y": [32] * 3,
                          "z": [32] * 3, "z1": ang[:, 0], "x_angle": ang[:, 1], "z2": ang[:, 2]})
    shape = (64, 64, 192)
    grand, _, _ = placement.render(parts, {"3d2f": tpl}, {"3d2f": 1}, shape)
    xyz = parts[["x", "y", "z"]].to_numpy(float)
    crops = cut_boxes(grand, box_corners(xyz, shape, BOX, "test"), BOX, 0.0)
    iso = render_isolated(shrec_map, ang, BOX)
    inverse = render_isolated(shrec_map, matrix_to_zxz(_transposed(ang)), BOX)
    for crop, box, inv in zip(crops, iso, inverse):
        assert ncc(crop, box) >= 0.95
        assert ncc(crop, box) > 0.9999  # the same rendering, up to the template crop
        assert ncc(crop, inv) < 0.9


def _transposed(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3, 3) R.T of the (n, 3) ZXZ degrees of R (the other reading of the angles)."""
    return np.swapaxes(zxz_to_matrix(angles_deg), -1, -2)


@pytest.mark.parametrize("snr", [0.1, 1.0, 5.0])
def test_noise_has_the_requested_snr_per_box(snr):
    """var(noise-free box) / var(added noise) = snr within 5 % for every box; the noise is
    reproducible from (seed, tomogram, stack index)."""
    dens, _ = asymmetric()
    clean = render_isolated(dens, random_zxz(5, np.random.default_rng(1)), BOX)
    rngs = [noise_generator(7, "model_0", i) for i in range(5)]
    noisy, _ = add_box_noise(clean, snr, rngs)
    for c, n in zip(clean, noisy):
        measured = c.var(dtype=np.float64) / (n - c).var(dtype=np.float64)
        assert abs(measured / snr - 1) < 0.05, measured
    again, _ = add_box_noise(clean, snr, [noise_generator(7, "model_0", i) for i in range(5)])
    np.testing.assert_array_equal(noisy, again)
    other, _ = add_box_noise(clean, snr, [noise_generator(7, "model_1", i) for i in range(5)])
    assert abs(ncc(noisy[0] - clean[0], other[0] - clean[0])) < 0.05


@pytest.fixture()
def structures(tmp_path) -> Path:
    """A structures folder with two classes (upper-case file stem for one) at 10 A."""
    folder = tmp_path / "structures"
    folder.mkdir()
    dens, _ = asymmetric()
    write_volume(folder / "asym.mrc", dens, 10.0)
    write_volume(folder / "BALL.mrc", blob(21, np.full(3, 10.0), 3.0).astype(np.float32), 10.0)
    return folder


def write_locations(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_stack_and_star_follow_the_contract(structures, tmp_path):
    """STAR: coordinates, ZXZ and RELION angles, classes, split and stack index of the particle
    list (vesicle excluded); boxes = the normalised renders; chunking and noise reproducible."""
    rng = np.random.default_rng(5)
    ang = np.round(random_zxz(6, rng), 3)
    cls = ["asym", "ball", "ASYM", "ball", "asym", "ball"]
    rows = [f"{c} {10 + 7 * i} {20 + i} {30 - i} {a[0]} {a[1]} {a[2]}"
            for i, (c, a) in enumerate(zip(cls, ang))]
    loc = write_locations(tmp_path / "model_0" / "particle_locations.txt",
                          rows + ["vesicle 5 5 5 nan nan nan"])
    s = _settings(source="isolated", box_size=BOX, chunk_mb=1)
    table = extract_isolated(structures, loc, tmp_path / "a.mrcs", tmp_path / "a.star", "model_0",
                             s, 10.0, ["asym", "ball"], "test", unseen=["ball"])
    star = read_star(tmp_path / "a.star")
    assert list(star["avaeClass"]) == [c.lower() for c in cls]
    assert list(star["rlnClassNumber"]) == [1 if c.lower() == "asym" else 2 for c in cls]
    assert list(star["avaeSplit"]) == ["unseen" if c.lower() == "ball" else "test" for c in cls]
    assert list(star["avaeStackIndex"]) == list(range(6))
    np.testing.assert_allclose(star[["avaeEulerZ1", "avaeEulerX", "avaeEulerZ2"]], ang, atol=1e-6)
    np.testing.assert_allclose(star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]],
                               zxz_to_relion(ang), atol=1e-4)
    np.testing.assert_allclose(star["rlnCoordinateX"], [10 + 7 * i for i in range(6)])
    assert len(table) == 6
    stack, voxel = read_volume(tmp_path / "a.mrcs")
    assert stack.shape == (6, BOX, BOX, BOX) and abs(voxel - 10.0) < 1e-4
    dens = read_densities(structures, ["asym"], 10.0)["asym"]
    want = normalise_boxes(render_isolated(dens, ang[:1], BOX), "zscore")
    np.testing.assert_allclose(stack[0], want[0], atol=1e-5)
    # noise: reproducible and independent of the chunking (64^3 boxes: 1 or 128 a chunk)
    for k in (1, 32):
        extract_isolated(structures, loc, tmp_path / f"n{k}.mrcs", tmp_path / f"n{k}.star",
                         "model_0", _settings(source="isolated", box_size=64, chunk_mb=k), 10.0,
                         ["asym", "ball"], "train", snr=0.5, seed=3)
    a, b = read_volume(tmp_path / "n1.mrcs")[0], read_volume(tmp_path / "n32.mrcs")[0]
    np.testing.assert_array_equal(a, b)
    clean = normalise_boxes(render_isolated(dens, ang[:1], 64), "zscore")[0]
    assert 0.3 < ncc(a[0], clean) < 0.9  # noise at SNR 0.5 was added: expected NCC ~0.58


def test_binning_gives_the_binned_voxel_size(structures, tmp_path):
    loc = write_locations(tmp_path / "m" / "particle_locations.txt", ["asym 1 2 3 10 20 30"])
    s = _settings(source="isolated", box_size=BOX, bin_to=16)
    extract_isolated(structures, loc, tmp_path / "b.mrcs", tmp_path / "b.star", "m", s, 10.0,
                     ["asym"], "train")
    stack, voxel = read_volume(tmp_path / "b.mrcs")
    assert stack.shape == (1, 16, 16, 16) and abs(voxel - 20.0) < 1e-4


def test_missing_density_or_wrong_voxel_size_is_one_line_error(structures, tmp_path):
    loc = write_locations(tmp_path / "m" / "particle_locations.txt",
                          ["asym 1 2 3 10 20 30", "1xyz 4 5 6 0 0 0"])
    s = _settings(source="isolated", box_size=BOX)
    with pytest.raises(InputError) as err:
        extract_isolated(structures, loc, tmp_path / "c.mrcs", tmp_path / "c.star", "m", s,
                         10.0, ["1xyz", "asym"], "train")
    msg = str(err.value)
    assert "1xyz" in msg and str(structures) in msg and "\n" not in msg
    assert not (tmp_path / "c.mrcs").exists() and not (tmp_path / "c.star").exists()
    loc = write_locations(tmp_path / "m" / "particle_locations.txt", ["asym 1 2 3 10 20 30"])
    with pytest.raises(InputError, match="voxel size"):
        extract_isolated(structures, loc, tmp_path / "c.mrcs", tmp_path / "c.star", "m", s,
                         8.0, ["asym"], "train")


@pytest.mark.slow
def test_snakemake_extract_isolated_on_the_tiny_config():
    """`snakemake extract` with extract.source isolated: no denoise job, and each STAR holds the
    classes and angles of its tomogram's particle list, in order."""
    run = "tiny_isolated"
    out = REPO / "results" / run
    try:
        cmd = snakemake_cmd("extract", "--cores", "1", "--configfile",
                            str(REPO / "tests" / "configs" / "tiny.yaml"), "--config",
                            "extract={source: isolated, isolated: {snr: 1.0}}", f"run={run}")
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                             check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        assert not (out / "denoised").exists()
        for tomo in ("model_0", "model_1"):
            star = read_star(out / "subtomos" / f"{tomo}.star")
            loc = read_particle_locations(out / "data" / "simulated" / tomo /
                                          "particle_locations.txt")
            assert list(star["avaeClass"]) == list(loc["class"].str.lower())
            np.testing.assert_allclose(star[["avaeEulerZ1", "avaeEulerX", "avaeEulerZ2"]],
                                       loc[["z1", "x_angle", "z2"]], atol=1e-6)
            stack = read_volume(out / "subtomos" / f"{tomo}.mrcs")[0]
            assert stack.shape == (len(loc), BOX, BOX, BOX)
    finally:
        shutil.rmtree(out, ignore_errors=True)
