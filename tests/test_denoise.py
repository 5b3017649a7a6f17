"""Stage `denoise`: the tiling is exact, denoising helps, bad input fails early and clearly."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest
from conftest import REPO

from affinity_vae.config import check_config, schema_defaults
from affinity_vae.denoise import PRETRAINED, Settings, denoise_file, load_model, main
from affinity_vae.errors import InputError
from affinity_vae.io.mrc import read_volume, write_volume

torch = pytest.importorskip("torch")
torch.set_num_threads(2)

from affinity_vae.denoise.unet import TiledUNet, exact_halos, tiles, untiled  # noqa: E402


def _settings(**given) -> Settings:
    """Stage denoise's settings: the schema's defaults with ``given`` (device auto)."""
    return Settings.from_config(schema_defaults("denoise", given), "auto")


@pytest.fixture(scope="module")
def model():
    return load_model("unet-3d-10a", "cpu")


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 error of ``a`` against ``ref``, both taken about ``ref``'s mean."""
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref - ref.mean()))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def noisy_volume(shape, seed=0):
    """Blobs (particle-sized Gaussians) + white noise, with a non-zero offset, float32."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    clean = np.zeros(shape, np.float32)
    for _ in range(6):
        c = [rng.uniform(0, s) for s in shape]
        clean += np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * 4.0**2))
    return (5.0 + clean + rng.normal(0, 0.5, shape)).astype(np.float32)


def test_cores_partition_the_volume():
    shape, seen = (64, 96, 160), np.zeros((64, 96, 160), np.int32)
    for core, tile, inner in tiles(shape, 64, 12):
        seen[core] += 1
        assert all(t.start <= c.start and c.stop <= t.stop for c, t in zip(core, tile))
        assert all(i.stop - i.start == c.stop - c.start for i, c in zip(inner, core))
    assert (seen == 1).all()


def test_decoder_cores_stop_at_the_volume_and_halos_reach_into_the_padding():
    """Stage D's cores cover the real volume (rounded to 4) once, never the 32-alignment
    padding beyond it; their halos still reach into that padding, as the untiled pass sees it."""
    full, limit = (64, 96, 160), (40, 72, 100)
    seen = np.zeros(full, np.int32)
    for core, tile, _ in tiles(full, 32, 12, limit):
        seen[core] += 1
        assert all(c.stop <= n for c, n in zip(core, limit))
        assert all(t.stop == min(f, c.stop + 12) for t, c, f in zip(tile, core, full))
    assert (seen[:40, :72, :100] == 1).all() and seen.sum() == 40 * 72 * 100


def test_tiled_output_equals_topaz_untiled(model):
    """32^3 cores on a 32x64x64 volume (4 tiles) reproduce topaz's own untiled pass."""
    from topaz.denoise import Denoise3D

    vol = noisy_volume((32, 64, 64))
    reference = Denoise3D("unet-3d-10a", dims=3).denoise(vol, patch_size=0)  # topaz, untiled
    mean, std = float(vol.mean()), float(vol.std())
    assert len(list(tiles((32, 64, 64), 32, 12))) == 4
    tiled = TiledUNet(model, core=32, progress=False)(vol, mean, std)
    assert rel_err(tiled, reference) <= 1e-3
    assert rel_err(tiled, reference) <= 1e-4  # in fact float rounding only
    # the halo is what makes it exact: a third of it leaves a visible seam error
    assert rel_err(TiledUNet(model, core=32, halo=4, progress=False)(vol, mean, std),
                   reference) > 1e-2


def test_tiled_equals_untiled_for_shapes_not_multiple_of_32(model):
    vol = noisy_volume((20, 45, 50), seed=1)  # padded to 32x64x64 on the way
    mean, std = float(vol.mean()), float(vol.std())
    reference = untiled(model, vol, mean, std)
    tiled = TiledUNet(model, core=32, progress=False)(vol, mean, std)
    assert tiled.shape == vol.shape and tiled.dtype == np.float32
    assert rel_err(tiled, reference) <= 1e-3
    # several cores per axis, the last ones ending inside the padding (37x70x100 -> 64x96x128)
    vol = noisy_volume((37, 70, 100), seed=2)
    mean, std = float(vol.mean()), float(vol.std())
    net = TiledUNet(model, core=32, progress=False)
    decoded = []  # the decoder (stage D) runs on the tomogram only, never on the padding
    decode = net._decode_tile
    net._decode_tile = lambda x, d3, inner: decoded.append(  # type: ignore[method-assign]
        np.prod([s.stop - s.start for s in inner])) or decode(x, d3, inner)
    tiled = net(vol, mean, std)
    assert rel_err(tiled, untiled(model, vol, mean, std)) <= 1e-5
    assert sum(decoded) == 40 * 72 * 100  # 37x70x100 rounded up to 4, not 64x96x128


def test_halo_follows_from_the_kernel_sizes(model):
    h = exact_halos(model)
    assert (h.enc, h.dec3, h.final) == (8, 2, 12)


@pytest.fixture(scope="module")
def particles(shrec_structures):
    """Four real SHREC proteins (10 A maps) in a 64x96x96 volume: clean truth and templates."""
    ids, centres = ["1s3x", "3qm1", "3gl1", "3h84"], [(32, 24, 24), (32, 24, 72),
                                                      (32, 72, 24), (32, 72, 72)]
    clean, boxes = np.zeros((64, 96, 96), np.float32), []
    for pid, c in zip(ids, centres):
        t = mrcfile.read(shrec_structures / "maps_10A" / f"{pid}.mrc").astype(np.float32)
        a = (t.shape[0] - 46) // 2
        sl = tuple(slice(ci - 23, ci + 23) for ci in c)
        clean[sl] += t[a:a + 46, a:a + 46, a:a + 46]
        boxes.append(sl)
    clean /= clean.std()
    return clean, boxes


def test_denoising_raises_snr_and_keeps_template_correlation(particles, tmp_path):
    """Through the rule's entry point: SNR (against the clean truth) up, proteins still match."""
    clean, boxes = particles
    noisy = clean + np.random.default_rng(0).normal(0, 2.0, clean.shape).astype(np.float32)
    src, dst = tmp_path / "reconstruction.mrc", tmp_path / "denoised" / "model_0.mrc"
    write_volume(src, noisy, 10.0)
    smk = SimpleNamespace(input=[str(src)], output=[str(dst)], threads=2,
                          params=SimpleNamespace(denoise=schema_defaults("denoise"), device="cpu"))
    main(smk)
    den, voxel = read_volume(dst)
    assert den.shape == noisy.shape and voxel == pytest.approx(10.0)

    def snr(x):  # from the correlation with the truth: signal variance / noise variance
        r = corr(x, clean)
        return r * r / (1 - r * r)

    assert snr(noisy) < 0.3
    assert snr(den) > 4 * snr(noisy)  # measured: 0.25 -> 4.0
    before = [corr(noisy[b], clean[b]) for b in boxes]
    after = [corr(den[b], clean[b]) for b in boxes]
    assert all(a > b for a, b in zip(after, before))  # every particle matches its template
    assert min(after) > 0.8                            # better (measured 0.87-0.89)


def test_unknown_model_is_one_line_naming_the_valid_ones(tmp_path):
    src, dst = tmp_path / "t.mrc", tmp_path / "out.mrc"
    write_volume(src, noisy_volume((16, 16, 16)), 10.0)
    with pytest.raises(InputError) as err:
        denoise_file(src, dst, _settings(model="unet-3d-30a"))
    msg = str(err.value)
    assert "\n" not in msg and "unet-3d-30a" in msg
    assert all(name in msg for name in PRETRAINED)
    assert not dst.exists()


def test_bad_model_file_is_an_input_error(tmp_path):
    bogus = tmp_path / "my_model.sav"
    bogus.write_text("not a model")
    with pytest.raises(InputError, match="not a weights-only model file"):
        load_model(str(bogus))


def test_user_trained_weights_load_into_a_network_this_code_builds(model, tmp_path):
    path = tmp_path / "unet-3d-mine.pt"
    torch.save(model.state_dict(), path)
    mine = load_model(str(path))
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 model.state_dict().values()))


def test_a_full_pickled_model_is_refused_with_the_conversion(model, tmp_path):
    path = tmp_path / "unet-3d-mine.sav"
    torch.save(model, path)  # topaz's own format: the whole module pickled
    with pytest.raises(InputError, match="convert it once") as err:
        load_model(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    converted = tmp_path / "model.pt"  # what the conversion the message asks for writes
    torch.save(model.state_dict(), converted)
    mine = load_model(str(converted))
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 model.state_dict().values()))


class _Payload:
    """Unpickling this object would create ``marker``: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("saver", ["torch", "pickle"])
def test_a_malicious_model_file_never_runs(tmp_path, saver):
    import pickle

    marker, path = tmp_path / "code-ran", tmp_path / "model.sav"
    if saver == "torch":
        torch.save({"enc1.0.weight": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(InputError, match="could run code"):
        load_model(str(path))
    with pytest.raises(InputError, match="could run code"):
        denoise_file(_noisy_file(tmp_path), tmp_path / "out.mrc", _settings(model=str(path)))
    assert not marker.exists() and not (tmp_path / "out.mrc").exists()


def _noisy_file(tmp_path):
    src = tmp_path / "t.mrc"
    write_volume(src, noisy_volume((32, 32, 32)), 10.0)
    return src


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile/numpy on writing NaN
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_tomogram_fails_before_the_network(tmp_path, monkeypatch, bad):
    vol = noisy_volume((32, 32, 32))
    vol[20, 5, 7] = bad
    src, dst = tmp_path / "t.mrc", tmp_path / "out.mrc"
    write_volume(src, vol, 10.0)
    import affinity_vae.denoise as dn

    monkeypatch.setattr(dn, "load_model", lambda *a: pytest.fail("network loaded"))
    with pytest.raises(InputError, match="NaN/Inf") as err:
        denoise_file(src, dst, _settings())
    assert "\n" not in str(err.value) and str(src) in str(err.value)
    assert not dst.exists()


def test_patch_size_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(InputError, match="patch_size"):
        check_config({"denoise": {"patch_size": 100}}, REPO / "workflow/schemas/config.schema.yaml")
    with pytest.raises(InputError, match="patch_size"):
        denoise_file(tmp_path / "missing.mrc", tmp_path / "o.mrc", _settings(patch_size=48))


def test_disabled_copies_without_importing_topaz_or_torch(tmp_path):
    src, dst = tmp_path / "t.mrc", tmp_path / "out.mrc"
    write_volume(src, noisy_volume((16, 16, 16)), 10.0)
    code = ("import sys; from affinity_vae.denoise import denoise_file, Settings; "
            "from affinity_vae.config import schema_defaults; "
            f"denoise_file({str(src)!r}, {str(dst)!r}, "
            "Settings.from_config(schema_defaults('denoise', {'enabled': False}), 'auto')); "
            "assert 'topaz' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    assert dst.read_bytes() == src.read_bytes()


def test_config_defaults():
    cfg: dict = {}
    check_config(cfg, REPO / "workflow/schemas/config.schema.yaml")
    assert cfg["denoise"] == {"enabled": True, "model": "unet-3d-10a", "patch_size": 128,
                              "padding": None, "device": None}
    s = Settings.from_config(cfg["denoise"], cfg["device"])
    assert s.device == "auto" and s.patch_size == 128
