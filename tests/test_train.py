"""Facts about stage `train`: data selection, learning, resume after kill -9, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

from affinity_vae.config import schema_defaults
from affinity_vae.data import load_subtomos, training_data
from affinity_vae.errors import InputError
from affinity_vae.io.star import particle_table, write_star
from affinity_vae.model import load_trained
from affinity_vae.train import fit, main, variant_configs

REPO = Path(__file__).resolve().parents[1]
BOX = 16
CLASSES = ["ball", "rod", "plate", "cross"]
AFFINITY = np.array([[1.0, 0.1, 0.3, 0.0],
                     [0.1, 1.0, 0.4, 0.6],
                     [0.3, 0.4, 1.0, 0.2],
                     [0.0, 0.6, 0.2, 1.0]])
TINY_MODEL = schema_defaults("model", {"channels": 4, "depth": 2, "latent_dims": 4,
                                        "pose_dims": 2})


def _train(**given) -> dict:
    """Config section ``train``: the schema's defaults with ``given``."""
    return schema_defaults("train", given)


def shape(name: str) -> np.ndarray:
    z, y, x = np.indices((BOX,) * 3) - (BOX - 1) / 2
    r = {"ball": np.sqrt(x**2 + y**2 + z**2) < 4.5,
         "rod": (np.sqrt(y**2 + z**2) < 2) & (np.abs(x) < 6.5),
         "plate": (np.abs(z) < 1.2) & (np.sqrt(x**2 + y**2) < 6),
         "cross": ((np.abs(z) < 1.5) & (np.abs(y) < 1.5) & (np.abs(x) < 6.5))
         | ((np.abs(z) < 1.5) & (np.abs(x) < 1.5) & (np.abs(y) < 6.5))}[name]
    return r.astype(np.float32)


def make_dataset(folder: Path, per_class: int = 12, splits=("train", "train", "test"),
                 unseen: tuple[str, ...] = (), seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Stacks + STAR files per the extract contract, and affinity.csv, in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stacks, stars = [], []
    for t, split in enumerate(splits):
        boxes, rows = [], []
        for c in CLASSES:
            for _ in range(per_class):
                v = np.rot90(shape(c), rng.integers(4), axes=tuple(rng.choice(3, 2, False)))
                v = v + rng.normal(0, 0.3, v.shape)
                boxes.append(((v - v.mean()) / v.std()).astype(np.float32))
                rows.append((c, "unseen" if c in unseen else split))
        names, spl = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        n = len(rows)
        table = particle_table(f"model_{t}", f"model_{t}.mrcs", names, CLASSES, spl,
                               rng.uniform(0, 99, (n, 3)), np.zeros((n, 3)), np.zeros((n, 3)))
        stack, star = folder / f"model_{t}.mrcs", folder / f"model_{t}.star"
        with mrcfile.new(stack, overwrite=True) as mrc:
            mrc.set_data(np.stack(boxes))
            mrc.voxel_size = 10.0
        write_star(star, table)
        stacks.append(stack)
        stars.append(star)
    pd.DataFrame(AFFINITY, index=CLASSES, columns=CLASSES).to_csv(folder / "affinity.csv")
    return stacks, stars


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subtomos")
    stacks, stars = make_dataset(folder)
    return folder, stacks, stars


def test_training_data_selects_splits_and_orders_classes(tmp_path):
    stacks, stars = make_dataset(tmp_path, per_class=3, splits=("train", "validation", "test"),
                                 unseen=("plate",))
    X, table = load_subtomos(stacks, stars)
    assert X.shape == (36, BOX, BOX, BOX) and len(table) == 36
    # affinity file in another order: labels follow the matrix's order
    order = ["rod", "cross", "ball", "plate"]
    pd.read_csv(tmp_path / "affinity.csv", index_col=0).loc[order, order].to_csv(
        tmp_path / "affinity.csv")
    data = training_data(X, table, tmp_path / "affinity.csv")
    assert data.classes == ["rod", "cross", "ball"]          # plate is unseen
    assert len(data.x) == 9 and len(data.val_x) == 9          # test and unseen excluded
    assert data.affinity[0, 1].item() == pytest.approx(0.6)   # A[rod, cross]
    first = table[(table.avaeSplit == "train")].iloc[0]
    assert data.classes[int(data.labels[0])] == first.avaeClass
    np.testing.assert_array_equal(data.x[0, 0].numpy(), X[first.name])


def test_bad_input_is_one_line_input_error(tmp_path):
    stacks, stars = make_dataset(tmp_path, per_class=2)
    X, table = load_subtomos(stacks, stars)
    pd.DataFrame(AFFINITY[:3, :3], index=CLASSES[:3], columns=CLASSES[:3]).to_csv(
        tmp_path / "small.csv")
    with pytest.raises(InputError, match="lacks training class.*cross"):
        training_data(X, table, tmp_path / "small.csv")
    with pytest.raises(InputError, match="no training particles"):
        training_data(X, table.assign(avaeSplit="test"), tmp_path / "affinity.csv")
    data = training_data(X, table, tmp_path / "affinity.csv")
    with pytest.raises(InputError, match="divisible"):
        fit(data, {**TINY_MODEL, "depth": 5}, _train(epochs=1), 0, progress=False)
    with pytest.raises(InputError, match="pose_dims 4"):
        fit(data, {**TINY_MODEL, "decoder": "gmd", "pose_dims": 3}, _train(epochs=1), 0,
            progress=False)


@pytest.mark.parametrize("decoder", ["cnn", "gmd"])
def test_a_few_epochs_lower_reconstruction_and_affinity_loss(dataset, decoder):
    torch.set_num_threads(1)
    folder, stacks, stars = dataset
    data = training_data(*load_subtomos(stacks, stars), folder / "affinity.csv")
    model_cfg = {**TINY_MODEL, "decoder": decoder}
    if decoder == "gmd":
        model_cfg.update(pose_dims=4, n_gaussians=32, gmd_hidden=32)
    _, hist = fit(data, model_cfg, _train(epochs=8, batch_size=16, learning_rate=3e-3),
                  seed=0, progress=False)
    assert hist.train_recon.iloc[-2:].mean() < hist.train_recon.iloc[0]
    assert hist.train_affinity.iloc[-2:].mean() < 0.7 * hist.train_affinity.iloc[0]
    assert np.isfinite(hist.val_total).all()


RUNNER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {repo!r})
    from affinity_vae import train
    from affinity_vae.config import schema_defaults
    from affinity_vae.data import load_subtomos, training_data
    torch.set_num_threads(1)
    folder, ckdir, out, slow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    if slow:  # give the test time to kill us mid-training
        orig = train.run_epoch
        def run_epoch(*a, **k):
            r = orig(*a, **k); time.sleep(0.4); return r
        train.run_epoch = run_epoch
    stacks = [f"{{folder}}/model_{{i}}.mrcs" for i in range(3)]
    data = training_data(*load_subtomos(stacks, [s[:-5] + ".star" for s in stacks]),
                         f"{{folder}}/affinity.csv")
    cfg = schema_defaults("train", {{"epochs": 8, "checkpoint_every": 2, "batch_size": 16}})
    model, hist = train.fit(data, {model}, cfg, 3, ckdir if ckdir != "-" else None,
                            progress=False)
    torch.save(model.state_dict(), out)
    hist.to_csv(out + ".csv", index=False)
""").format(repo=str(REPO), model=repr(TINY_MODEL))


def test_resume_after_kill_gives_the_same_weights(dataset, tmp_path):
    folder = dataset[0]
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    ckdir = tmp_path / "ck"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), str(folder), str(ckdir)]
    proc = subprocess.Popen(cmd + [str(tmp_path / "a.pt"), "1"], env=env)
    deadline = time.time() + 90
    while not list(ckdir.glob("ckpt-*-e00004.pt")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "a.pt").exists()
    subprocess.run(cmd + [str(tmp_path / "a.pt"), "0"], env=env, check=True)
    subprocess.run([sys.executable, str(script), str(folder), "-", str(tmp_path / "b.pt"), "0"],
                   env=env, check=True)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ha, hb = pd.read_csv(tmp_path / "a.pt.csv"), pd.read_csv(tmp_path / "b.pt.csv")
    assert len(ha) == len(hb) == 8
    np.testing.assert_allclose(ha.train_total, hb.train_total, rtol=1e-5)


def test_main_trains_both_variants(dataset, tmp_path):
    folder, stacks, stars = dataset
    for variant in ("avae", "bvae"):
        out = tmp_path / variant
        smk = SimpleNamespace(
            input=SimpleNamespace(stacks=[str(s) for s in stacks], stars=[str(s) for s in stars],
                                  affinity=str(folder / "affinity.csv")),
            output=SimpleNamespace(model=str(out / "model.pt"), history=str(out / "history.csv"),
                                   curves=str(out / "curves.png")),
            params=SimpleNamespace(model=TINY_MODEL, train=_train(epochs=2, checkpoint_every=1),
                                   seed=0, device="cpu"),
            wildcards=SimpleNamespace(variant=variant), threads=1)
        main(smk)
        model, meta = load_trained(out / "model.pt")
        assert meta["variant"] == variant and meta["classes"] == CLASSES
        assert meta["pose_dims"] == (TINY_MODEL["pose_dims"] if variant == "avae" else 0)
        assert meta["train"]["gamma"]["max"] == (0.0 if variant == "bvae" else 1.0)
        hist = pd.read_csv(out / "history.csv")
        assert list(hist.epoch) == [1, 2] and (out / "curves.png").stat().st_size > 1000
        assert not list((out / "checkpoints").glob("*.pt"))  # removed once model.pt exists
        mu, _logvar, pose = model.encode(torch.zeros(2, 1, BOX, BOX, BOX))
        assert mu.shape == (2, 4) and pose.shape == (2, meta["pose_dims"])


def test_variant_configs_baseline_is_gamma0_pose0():
    m, t = variant_configs({**TINY_MODEL, "pose_dims": 3}, _train(epochs=7), "bvae")
    assert m == {**TINY_MODEL, "pose_dims": 0}
    assert t["gamma"]["max"] == 0 and t["epochs"] == 7


@pytest.mark.parametrize("damage", ["truncated", "not_torch", "malicious"])
def test_an_unreadable_newest_checkpoint_is_set_aside_and_training_resumes(
        dataset, tmp_path, monkeypatch, caplog, damage):
    """A killed run whose newest checkpoint is damaged: the re-run moves it aside with one
    warning, resumes from the previous one and ends with the uninterrupted run's weights. A
    checkpoint whose unpickling would run code never runs it."""
    import affinity_vae.train as tr

    torch.set_num_threads(1)
    folder, stacks, stars = dataset
    data = training_data(*load_subtomos(stacks, stars), folder / "affinity.csv")
    cfg = _train(epochs=4, checkpoint_every=1, keep_checkpoints=2, batch_size=16)
    ref, _ = fit(data, TINY_MODEL, cfg, 3, None, progress=False)
    ckdir = tmp_path / "ck"
    orig, calls = tr.run_epoch, []

    def dies_in_epoch_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the kill
        return orig(*a, **k)

    monkeypatch.setattr(tr, "run_epoch", dies_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        fit(data, TINY_MODEL, cfg, 3, ckdir, progress=False)
    monkeypatch.setattr(tr, "run_epoch", orig)
    newest = max(ckdir.glob("ckpt-*-e*.pt"))
    assert newest.name.endswith("e00003.pt")
    marker = tmp_path / "code-ran"
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:1000])
    elif damage == "not_torch":
        newest.write_text("not a checkpoint")
    else:
        import pathlib
        import pickle

        class Payload:  # unpickling it would create the marker file
            def __reduce__(self):
                return (pathlib.Path.touch, (marker,))

        newest.write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    with caplog.at_level("WARNING", logger="affinity_vae.train"):
        model, hist = fit(data, TINY_MODEL, cfg, 3, ckdir, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unreadable checkpoint" in warnings[0]
    assert (ckdir / (newest.name + ".unreadable")).exists() and not marker.exists()
    assert list(hist.epoch) == [1, 2, 3, 4]
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_a_malicious_model_file_never_runs_in_evaluate_or_predict(tmp_path):
    """load_trained (evaluate, predict) reads weights only: a pickle that would run code is one
    InputError line, and its code never runs."""
    import pathlib
    import pickle

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    for protocol, name in ((2, "model.pt"), (4, "other.pt")):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"format": "affinity_vae.model/1", "meta": Payload()},
                                      protocol=protocol))
        with pytest.raises(InputError, match="not a readable model file"):
            load_trained(path)
    assert not marker.exists()
