"""Faults: a run killed (SIGKILL of snakemake and its jobs) while simulate, extract and train
run, then resumed (``snakemake --unlock`` first: the kill leaves the directory locked), ends
with the outputs of an uninterrupted run; a full disk during a write is one line and leaves the
previous output intact (docs/troubleshooting.md).

The end-to-end test runs the tiny config without denoising and without the beta-VAE baseline,
to the `train` target, twice: once uninterrupted (run `test_faults_ref`), once killed at the
first moment each stage's job has started (its log file exists; for train: its first
checkpoint) and resumed (run `test_faults_killed`).
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import BIN, REPO, TINY, snakemake

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import read_volume, write_volume
from affinity_vae.io.star import particle_table, read_star, write_star
from affinity_vae.runner import run

REF, KILLED = "test_faults_ref", "test_faults_killed"
CHANGES = {"denoise": {"enabled": False}, "evaluate": {"baseline": False},
           "train": {"epochs": 6, "checkpoint_every": 2}}
SKIP = {".snakemake_timestamp"}


# ----------------------------------------------------------------- disk full
def _table(n: int) -> pd.DataFrame:
    """A particle table of n rows (classes a/b), as extract writes it."""
    rng = np.random.default_rng(n)
    return particle_table("model_0", "model_0.mrcs", np.array(["a", "b"] * n)[:n], ["a", "b"],
                          np.array(["train"] * n), rng.uniform(0, 64, (n, 3)),
                          rng.uniform(-90, 90, (n, 3)), rng.uniform(-90, 90, (n, 3)))


def test_enospc_during_a_write_keeps_the_previous_output(tmp_path, monkeypatch):
    path = tmp_path / "x.star"
    write_star(path, _table(3))
    before = path.read_bytes()

    def half_then_full(data, target, **kwargs):
        Path(target).write_text("data_particles\nloop_\n_rlnTomo")  # a partial write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr("starfile.write", half_then_full)
    with pytest.raises(InputError, match=r"^no space left on device writing .*x\.star -- "):
        write_star(path, _table(5))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.star"]  # no temporary left


def test_a_killed_writes_temporary_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".x.mrc.tmp-99999999.mrc"
    stale.write_bytes(b"half a volume")
    with atomic_path(tmp_path / "x.mrc") as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mrc"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the ENOSPC unit test covers the write layer")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): the ENOSPC unit "
                    f"test covers the write layer")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_in_a_job_is_one_line_and_keeps_the_previous_output(tiny_tmpfs, capfd,
                                                                      monkeypatch):
    """On a 256 KiB file system: a stage job writing a 1 MiB volume exits 1 with one line
    naming the file; the other outputs there (an upstream STAR table) are untouched, and no
    half-written stack or temporary is left. A write replacing an existing output keeps it."""
    from types import SimpleNamespace

    monkeypatch.delenv("AVAE_ERROR_SUMMARY", raising=False)
    upstream = tiny_tmpfs / "subtomos" / "model_0.star"
    write_star(upstream, _table(4))
    before = upstream.read_bytes()
    out = tiny_tmpfs / "subtomos" / "model_0.mrcs"
    big = np.ones((64, 64, 64), np.float32)  # 1 MiB

    def entry(smk):
        write_volume(smk.output[0], big, 10.0)

    smk = SimpleNamespace(log=[str(tiny_tmpfs / "x.log")], output=[str(out)], threads=1,
                          rule="extract_tomogram")
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(smk, entry)
    assert exc.value.code == 1
    err = capfd.readouterr().err.strip().splitlines()
    line = (f"ERROR: no space left on device writing {out} -- free space or move results/ "
            f"to a larger disk, then re-run")
    assert [ln for ln in err if "space" in ln] == [line], err
    assert not [ln for ln in err if "Traceback" in ln or "Logging error" in ln], err
    assert upstream.read_bytes() == before
    assert not out.exists() and not list(out.parent.glob(".*tmp*"))
    del exc  # its traceback holds mrcfile's handle of the deleted temporary (a job exits)
    gc.collect()
    small = np.ones((8, 8, 8), np.float32)
    write_volume(out, small, 10.0)
    with pytest.raises(InputError, match="no space left on device"):
        write_volume(out, big, 10.0)
    assert np.array_equal(read_volume(out)[0], small)


# ----------------------------------------------------------------- SIGKILL and resume
def _args(run_name: str, config: Path) -> list[str]:
    return ["train", "--cores", "1", "--configfile", str(TINY), str(config),
            "--config", f"run={run_name}"]


def _killed_when(args: list[str], started, timeout: float = 300) -> str:
    """Run snakemake in its own process group; SIGKILL the group (snakemake and its jobs) as
    soon as ``started()`` is true. Returns the output so far."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               MPLBACKEND="Agg")
    proc = subprocess.Popen([str(BIN / "snakemake"), *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        while not started():
            if proc.poll() is not None:
                raise AssertionError(f"snakemake ended before the kill:\n"
                                     f"{proc.stdout.read()[-3000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("the stage never started")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
    return out


def _unlock(args: list[str]) -> None:
    """`snakemake --unlock` (docs/troubleshooting.md) -- unless other runs in this checkout hold
    locks too (it removes every lock): then only this run's stale lock files are removed."""
    locks = sorted((REPO / ".snakemake" / "locks").glob("*.lock"))
    mine = [p for p in locks if f"results/{KILLED}/" in p.read_text()]
    assert mine, "the kill left no lock behind"
    if len(mine) == len(locks):
        snakemake("--unlock", *args, timeout=600)
    else:
        for p in mine:
            p.unlink(missing_ok=True)


def _outputs(run_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(run_dir)): p for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in SKIP and p.suffix != ".png"
            and not {"logs", "benchmarks", "checkpoints"} & set(p.relative_to(run_dir).parts)}


def _same(a: Path, b: Path) -> str | None:
    """None when two outputs hold the same result, else why not."""
    if a.suffix in (".mrc", ".mrcs"):
        (va, sa), (vb, sb) = read_volume(a), read_volume(b)
        return None if np.array_equal(va, vb) and sa == sb else "volumes differ"
    if a.suffix == ".star":
        return None if read_star(a).equals(read_star(b)) else "STAR tables differ"
    if a.suffix == ".pt":
        import torch

        sa, sb = (torch.load(p, weights_only=True, map_location="cpu") for p in (a, b))
        wa, wb = (s.get("model", s) if isinstance(s, dict) else s for s in (sa, sb))
        ka = [k for k in wa if hasattr(wa[k], "shape")]
        if ka != [k for k in wb if hasattr(wb[k], "shape")]:
            return "different tensors"
        bad = [k for k in ka if not torch.equal(wa[k], wb[k])]
        return f"weights differ: {bad[:3]}" if bad else None
    if a.name == "history.csv":  # all but the wall-clock column
        ha, hb = (pd.read_csv(p).drop(columns=["seconds"], errors="ignore") for p in (a, b))
        return None if ha.equals(hb) else "training history differs"
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume_equals_an_uninterrupted_run(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(CHANGES))
    ref, killed = REPO / "results" / REF, REPO / "results" / KILLED
    for d in (ref, killed):
        shutil.rmtree(d, ignore_errors=True)
    timings = {}
    try:
        t = time.monotonic()
        snakemake(*_args(REF, config), timeout=900)
        timings["uninterrupted"] = time.monotonic() - t

        args = _args(KILLED, config)
        t = time.monotonic()
        _killed_when(args, lambda: (killed / "logs/simulate/model_0.log").exists())
        assert not (killed / "data/simulated/model_0/reconstruction.mrc").exists()
        locked = snakemake(*args, check=False, timeout=600)
        assert locked.returncode != 0 and "Directory cannot be locked" in locked.stdout \
            and "--unlock" in locked.stdout, locked.stdout[-2000:]
        _unlock(args)
        _killed_when(args, lambda: (killed / "logs/extract/model_0.log").exists())
        assert not (killed / "subtomos/model_0.star").exists()
        _unlock(args)
        ckpts = killed / "model/avae/checkpoints"
        _killed_when(args, lambda: ckpts.is_dir() and any(ckpts.glob("ckpt-*.pt")))
        assert not (killed / "model/avae/model.pt").exists()
        _unlock(args)
        resumed = snakemake(*args, timeout=900)
        timings["killed thrice and resumed"] = time.monotonic() - t
        assert "resum" in (killed / "logs/train/avae.log").read_text().lower(), \
            "training did not resume from its checkpoint"

        a, b = _outputs(ref), _outputs(killed)
        assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)), resumed.stdout[-2000:])
        assert len(a) >= 20
        diffs = {k: why for k in a if (why := _same(a[k], b[k]))}
        assert not diffs, diffs
        assert not [p for p in killed.rglob(".*.tmp-*")], "a temporary was left behind"
    finally:
        print(f"fault-test timings (s): {timings}", file=sys.stderr)
        for d in (ref, killed):
            shutil.rmtree(d, ignore_errors=True)
