"""Stage `simulate`: placement, masks, rotation convention, missing wedge, SNR, bad input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae import rotation
from affinity_vae.config import schema_defaults
from affinity_vae.io.mrc import read_volume, read_voxel_size, write_volume
from affinity_vae.io.shrec import read_class_table, read_shrec_folder
from affinity_vae.runner import run
from affinity_vae.simulate import (
    Settings,
    main,
    placement,
    simulate_tomogram,
    tilt,
    write_tomogram,
)

VOXEL = 10.0
SHAPE = (32, 64, 64)


def blob_template(offsets: list[tuple[float, float, float]], n: int = 20,
                  sigma: float = 1.2) -> np.ndarray:
    """An asymmetric density: Gaussians at (x, y, z) offsets from voxel n // 2, weights 1, 2, ..."""
    z, y, x = np.indices((n, n, n), dtype=float) - n // 2
    vol = np.zeros((n, n, n))
    for w, (ox, oy, oz) in enumerate(offsets, start=1):
        vol += w * np.exp(-((x - ox) ** 2 + (y - oy) ** 2 + (z - oz) ** 2) / (2 * sigma ** 2))
    return vol.astype(np.float32)


TEMPLATES = {
    "abc": blob_template([(4, 0, 0), (0, 3, 0), (0, 0, -2), (-2, -2, 1)]),
    "lmn": blob_template([(-3, 1, 0), (1, 4, 2), (2, -1, -3)]),
    "xyz": blob_template([(0, 0, 0), (5, 1, 1), (-1, -4, 2)], n=22),
}


def settings(**kw) -> Settings:
    base = dict(shape_zyx=SHAPE, n_particles=12, snr=1.0, tilt_step=5.0)
    base.update(kw)
    return Settings.from_config(schema_defaults("simulate", base))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, object, Settings]:
    s = settings()
    tomo = simulate_tomogram(TEMPLATES, s, VOXEL, np.random.default_rng(3))
    folder = tmp_path_factory.mktemp("sim") / "model_0"
    index = {c: i + 1 for i, c in enumerate(sorted(TEMPLATES))}
    write_tomogram(folder, tomo, VOXEL, index)
    return folder, tomo, s


def test_spheres_do_not_overlap_and_lie_inside():
    rng = np.random.default_rng(0)
    radii = rng.uniform(2, 7, size=60)
    shape = (24, 60, 70)
    centres = placement.place_spheres(radii, shape, rng, margin=1.0)
    ok = ~np.isnan(centres[:, 0])
    assert ok.sum() >= 40
    c, r = centres[ok], radii[ok]
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= r[:, None] + r[None] + 1.0 - 1e-9)
    upper = np.array(shape[::-1]) - 1  # (x, y, z)
    assert np.all(c - r[:, None] >= 0) and np.all(c + r[:, None] <= upper)


def test_border_keeps_centres_away_from_faces():
    rng = np.random.default_rng(1)
    centres = placement.place_spheres(np.full(30, 2.0), (30, 50, 50), rng, border=8)
    c = centres[~np.isnan(centres[:, 0])]
    assert len(c) >= 20
    assert c.min() >= 8 and np.all(c <= np.array([49, 49, 29]) - 8)


def test_class_counts_follow_weights():
    assert placement.class_counts({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert placement.class_counts({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}


def test_occupancy_labels_match_line_order(simulated):
    folder, tomo, _ = simulated
    sh = read_shrec_folder(folder, classes=TEMPLATES)
    occ, cls = sh.volume("occupancy_mask", mmap=False), sh.volume("class_mask", mmap=False)
    labels = read_class_table(folder / "class_conversion_table.txt")
    assert sorted(labels.values()) == sorted(TEMPLATES)
    table = sh.particles
    assert len(table) == len(tomo.particles) >= 8
    assert set(np.unique(occ).astype(int)) == set(range(len(table) + 1))
    for i, row in enumerate(table.itertuples(index=False), start=1):
        zyx = np.argwhere(occ == i)
        centroid = zyx.mean(axis=0)[::-1]  # (x, y, z)
        # the blobs are asymmetric, so the centroid sits near (not on) the centre
        assert np.linalg.norm(centroid - [row.x, row.y, row.z]) < 4.0
        assert occ[int(row.z), int(row.y), int(row.x)] in (0, i)
        assert set(np.unique(cls[occ == i]).astype(int)) == {
            next(k for k, v in labels.items() if v == row._0)}
    # masks only where there is density; class 0 exactly where occupancy 0
    assert np.array_equal(occ == 0, cls == 0)
    assert tomo.grandmodel[occ > 0].min() > 0


def _sphere_ncc(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    n = a.shape[0]
    z, y, x = np.indices(a.shape) - n // 2
    m = x ** 2 + y ** 2 + z ** 2 <= radius ** 2
    u, v = a[m] - a[m].mean(), b[m] - b[m].mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


def _cut(vol: np.ndarray, x: int, y: int, z: int, n: int) -> np.ndarray:
    """Box of edge n with (x, y, z) on voxel n // 2 (zero outside the tomogram)."""
    out = np.zeros((n, n, n), np.float32)
    lo = np.array([z, y, x]) - n // 2
    src = tuple(slice(max(a, 0), min(a + n, s)) for a, s in zip(lo, vol.shape))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, lo))
    out[dst] = vol[src]
    return out


def _round_trip(folder: Path, templates: dict[str, np.ndarray], to_matrix) -> np.ndarray:
    sh = read_shrec_folder(folder, classes=templates)
    grand = sh.volume("grandmodel", mmap=False)
    scores = []
    for row in sh.particles.itertuples(index=False):
        tpl = templates[row[0]]
        r = placement.template_radius(tpl, settings().extent_threshold)
        ref = rotation.rotate_volume(tpl, to_matrix([row.z1, row.x_angle, row.z2]), order=1)
        got = _cut(grand, int(row.x), int(row.y), int(row.z), tpl.shape[0])
        scores.append(_sphere_ncc(ref, got, r))
    return np.array(scores)


WRONG = {
    "intrinsic ZXZ": lambda a: Rotation.from_euler("ZXZ", a, degrees=True).as_matrix(),
    "zyz": lambda a: Rotation.from_euler("zyz", a, degrees=True).as_matrix(),
    "transposed": lambda a: rotation.zxz_to_matrix(a).T,
}


def test_rotation_convention_round_trip(simulated):
    folder, _, _ = simulated
    good = _round_trip(folder, TEMPLATES, rotation.zxz_to_matrix)
    assert good.min() >= 0.95, good
    for name, wrong in WRONG.items():
        bad = _round_trip(folder, TEMPLATES, wrong)
        assert np.median(bad) < 0.9, (name, bad)


def test_rotation_round_trip_real_maps(shrec_structures, tmp_path):
    maps = {}
    for name in ("2cg9", "3gl1", "3h84"):
        maps[name], _ = read_volume(shrec_structures / "maps_10A" / f"{name}.mrc")
    tomo = simulate_tomogram(maps, settings(n_particles=9, shape_zyx=(40, 64, 64)), VOXEL,
                             np.random.default_rng(1))
    write_tomogram(tmp_path / "model_0", tomo, VOXEL, {c: i + 1 for i, c in enumerate(maps)})
    good = _round_trip(tmp_path / "model_0", maps, rotation.zxz_to_matrix)
    assert len(good) >= 6 and good.min() >= 0.95, good
    bad = _round_trip(tmp_path / "model_0", maps, WRONG["transposed"])
    assert np.median(bad) < 0.9, bad


def test_relion_conversion_describes_the_same_rotation():
    rng = np.random.default_rng(5)
    zxz = rotation.random_zxz(20, rng)
    relion = rotation.zxz_to_relion(zxz)
    assert np.allclose(rotation.relion_to_matrix(relion), rotation.zxz_to_matrix(zxz), atol=1e-9)
    assert rotation.angular_distance(rotation.zxz_to_matrix(zxz),
                                     rotation.zxz_to_matrix(zxz)).max() < 1e-6


def test_rotations_are_uniform():
    """Haar-uniform rotations: the rotated z axis is uniform on the sphere (mean 0, E[z^2]=1/3)."""
    m = rotation.zxz_to_matrix(rotation.random_zxz(4000, np.random.default_rng(2)))
    axis = m[:, :, 2]
    assert np.abs(axis.mean(axis=0)).max() < 0.05
    assert np.abs((axis ** 2).mean(axis=0) - 1 / 3).max() < 0.03


def _wedge_power(vol: np.ndarray) -> tuple[float, float]:
    """Mean Fourier power of directions within 20 deg of kz (inside the +-60 deg wedge) and
    beyond 40 deg from kz (sampled), for 0.1 < |k| < 0.4 cycles/voxel."""
    p = np.abs(np.fft.fftn(vol - vol.mean())) ** 2
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in vol.shape), indexing="ij")
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    band = (k > 0.1) & (k < 0.4)
    off_axis = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))  # angle from kz in the kx-kz plane
    return float(p[band & (off_axis < 20)].mean()), float(p[band & (off_axis > 40)].mean())


def test_reconstruction_has_missing_wedge(simulated):
    _, tomo, _ = simulated
    inside, outside = _wedge_power(tomo.reconstruction)
    assert inside < 0.05 * outside, (inside, outside)  # measured: ~0.012
    # the ground truth has no wedge: same measure is of the same order inside and outside
    g_in, g_out = _wedge_power(tomo.grandmodel)
    assert g_in > 0.2 * g_out


def test_reconstruction_has_configured_snr(simulated):
    """The noise in reconstruction.mrc is exactly the back-projected noise of the configured SNR:
    var(clean series) / sigma^2 = snr, and recon - WBP(clean) has the variance of WBP(noise)."""
    _, tomo, s = simulated
    op = tilt.projector(SHAPE, tomo.angles)
    clean = tilt.apply_ctf(tilt.project(tomo.grandmodel, op),
                           tilt.ctf_2d(SHAPE[1:], VOXEL, s.microscope))
    snr = np.var(clean) / tomo.noise_sigma ** 2
    assert abs(snr / s.snr - 1) < 0.2
    recon_clean = tilt.weighted_backprojection(clean, op, tomo.angles, SHAPE)
    noise_part = tomo.reconstruction - recon_clean
    rng = np.random.default_rng(11)
    ref = tilt.weighted_backprojection(
        rng.standard_normal(clean.shape).astype(np.float32) * tomo.noise_sigma, op,
        tomo.angles, SHAPE)
    assert abs(np.var(noise_part) / np.var(ref) - 1) < 0.2
    # and the noisy reconstruction still correlates with the noiseless one
    assert np.corrcoef(tomo.reconstruction.ravel(), recon_clean.ravel())[0, 1] > 0.3


def test_noise_level_follows_snr():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((5, 16, 16)).astype(np.float32) * 3
    for snr in (0.05, 0.5, 4.0):
        noisy, sigma = tilt.add_noise(clean, snr, np.random.default_rng(1))
        assert abs(np.var(clean) / np.var(noisy - clean) / snr - 1) < 0.2


def test_wbp_recovers_density_with_full_tilt_range():
    z, y, x = np.indices(SHAPE)
    vol = (((x - 30) ** 2 + (y - 30) ** 2 + (z - 16) ** 2) < 36).astype(np.float32) * 2.0
    ang = tilt.tilt_angles([-90, 88], 2)
    op = tilt.projector(SHAPE, ang)
    proj = tilt.project(vol, op)
    assert np.allclose(proj.sum(axis=(1, 2)), vol.sum(), rtol=1e-3)  # mass conserved
    rec = tilt.weighted_backprojection(proj, op, ang, SHAPE)
    assert abs(rec[16, 30, 30] - 2.0) < 0.2 and abs(rec[16, 10, 55]) < 0.2


def test_ctf_first_zero():
    """CTF zero where chi = pi: k^2 = 1 / (lambda df) ignoring Cs and amplitude contrast."""
    mic = tilt.Microscope(defocus_um=3.0, voltage_kv=300.0, cs_mm=0.0, amplitude_contrast=0.0)
    lam = tilt.electron_wavelength(300.0)
    assert abs(lam - 0.01969) < 1e-4
    ctf = tilt.ctf_2d((1, 4096), 1.0, mic)[0]
    k = np.fft.rfftfreq(4096, d=1.0)
    sign = np.sign(ctf[1:])
    first_zero = k[1:][np.argmax(sign[1:] != sign[:-1])]
    assert abs(first_zero - 1 / np.sqrt(lam * 3e4)) < 2e-3
    assert ctf[1] < 0  # protein dark at low resolution


def test_deterministic(tmp_path):
    a = simulate_tomogram(TEMPLATES, settings(n_particles=5, tilt_step=10.0), VOXEL,
                          np.random.default_rng(7))
    b = simulate_tomogram(TEMPLATES, settings(n_particles=5, tilt_step=10.0), VOXEL,
                          np.random.default_rng(7))
    assert a.particles.equals(b.particles)
    assert np.array_equal(a.reconstruction, b.reconstruction)


def test_class_weights_and_volume_fraction():
    s = settings(class_weights={"abc": 1, "xyz": 0}, volume_fraction=0.05, tilt_step=20.0)
    tomo = simulate_tomogram(TEMPLATES, s, VOXEL, np.random.default_rng(0))
    assert set(tomo.particles["class"]) == {"abc"}
    r = placement.template_radius(TEMPLATES["abc"], s.extent_threshold)
    frac = len(tomo.particles) * 4 / 3 * np.pi * r ** 3 / np.prod(SHAPE)
    assert abs(frac - 0.05) < 0.02


# --- the Snakemake entry point and bad input ------------------------------------------------

def _structures_dir(root: Path, templates: dict[str, np.ndarray], voxel: float = VOXEL) -> Path:
    d = root / "structures"
    d.mkdir()
    for name, vol in templates.items():
        write_volume(d / f"{name}.mrc", vol, voxel)
    pd.DataFrame({"class": list(templates), "family": "", "source": "test", "n_atoms": 0,
                  "radius_A": 0.0, "has_atoms": False}).to_csv(d / "manifest.csv", index=False)
    return d


class _Named(list):
    """Like snakemake's Namedlist: iterable paths that are also attributes."""

    def __init__(self, **named: str):
        super().__init__(named.values())
        self.__dict__.update(named)


def _smk(root: Path, structures: Path, **cfg) -> SimpleNamespace:
    out = root / "data" / "model_1"
    names = ["reconstruction", "grandmodel", "class_mask", "occupancy_mask"]
    output = _Named(**{n: str(out / f"{n}.mrc") for n in names},
                    locations=str(out / "particle_locations.txt"),
                    class_table=str(out / "class_conversion_table.txt"))
    params = SimpleNamespace(simulate=schema_defaults("simulate", {
                                 **dict(shape_zyx=list(SHAPE), n_particles=6, tilt_step=10.0),
                                 **cfg}),
                             voxel_size=VOXEL, seed=0)
    return SimpleNamespace(input=_Named(structures=str(structures)), output=output,
                           params=params, threads=1, log=[str(root / "log.txt")],
                           rule="simulate_tomogram", wildcards=SimpleNamespace(tomo="model_1"))


def test_main_writes_shrec_layout(tmp_path):
    smk = _smk(tmp_path, _structures_dir(tmp_path, TEMPLATES))
    main(smk)
    folder = Path(smk.output.reconstruction).parent
    sh = read_shrec_folder(folder, classes=TEMPLATES)
    assert sh.shape == SHAPE and len(sh.particles) == 6
    for kind in ("reconstruction", "grandmodel", "class_mask", "occupancy_mask"):
        assert read_voxel_size(folder / f"{kind}.mrc") == pytest.approx(VOXEL)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["reconstruction.mrc", "grandmodel.mrc", "class_mask.mrc", "occupancy_mask.mrc",
         "particle_locations.txt", "class_conversion_table.txt"])


@pytest.mark.parametrize("case", ["unknown_class", "voxel_size", "corrupt_mrc", "too_big",
                                  "no_manifest", "border"])
def test_bad_input_one_line_nothing_written(tmp_path, case, capfd):
    cfg = {}
    templates = dict(TEMPLATES)
    voxel = VOXEL
    if case == "unknown_class":
        cfg["class_weights"] = {"nope": 1}
    if case == "voxel_size":
        voxel = 4.0
    if case == "too_big":
        cfg["shape_zyx"] = [16, 64, 64]
    if case == "border":
        cfg["border"] = 16
    st = _structures_dir(tmp_path, templates, voxel)
    if case == "corrupt_mrc":
        data = (st / "abc.mrc").read_bytes()
        (st / "abc.mrc").write_bytes(data[: len(data) // 2])
    if case == "no_manifest":
        (st / "manifest.csv").unlink()
    smk = _smk(tmp_path, st, **cfg)
    with pytest.raises(SystemExit) as exc:
        run(smk, main)
    assert exc.value.code == 1
    err = capfd.readouterr().err.strip().splitlines()
    msg = [line for line in err if line.startswith("ERROR:")]
    assert len(msg) == 1 and " -- " in msg[0]
    expected = {"unknown_class": "simulate.class_weights", "voxel_size": "abc.mrc",
                "corrupt_mrc": "abc.mrc", "too_big": "simulate.shape_zyx",
                "no_manifest": "manifest.csv", "border": "simulate.border"}[case]
    assert expected in msg[0]
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.*"))

