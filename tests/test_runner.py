"""Facts about affinity_vae.runner, the wrapper every rule script runs in."""

from __future__ import annotations

import logging
import subprocess
from types import SimpleNamespace

import numpy as np  # loads the BLAS pool before the run, as a stage module does
import pytest

from affinity_vae.errors import SUMMARY_ENV, InputError
from affinity_vae.failures import failed_jobs_from_log, report_failures, summary_lines
from affinity_vae.runner import run


def test_runner_caps_blas_threads_at_the_rules_threads(tmp_path):
    from threadpoolctl import threadpool_info

    seen = {}

    def entry(smk):
        seen["blas"] = [p["num_threads"] for p in threadpool_info()
                        if p["user_api"] == "blas"]

    smk = SimpleNamespace(log=[str(tmp_path / "x.log")], output=[], threads=1, rule="t")
    run(smk, entry)
    assert seen["blas"] and set(seen["blas"]) == {1}


# ----------------------------------------------------------------- one error, said once
LINE = "data/x.mrc: truncated MRC file -- replace it"


def _failing(smk):
    logging.getLogger("affinity_vae.test").info("working")
    raise InputError(LINE)


def _crashing(smk):
    raise ZeroDivisionError("division by zero")


def _smk(tmp_path, name="x"):
    out = tmp_path / f"{name}.out"
    out.write_text("partial")
    return SimpleNamespace(log=[str(tmp_path / f"{name}.log")], output=[str(out)], threads=1,
                           rule=f"rule_{name}")


def test_input_error_is_one_stderr_line_and_one_log_line(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(SUMMARY_ENV, raising=False)
    smk = _smk(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run(smk, _failing)
    assert exc.value.code == 1
    err = capfd.readouterr().err
    assert err.count(LINE) == 1 and f"ERROR: {LINE}" in err
    assert (tmp_path / "x.log").read_text().count(LINE) == 1
    assert not (tmp_path / "x.out").exists()  # nothing that looks finished


def test_under_the_workflow_summary_the_job_prints_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(SUMMARY_ENV, "1")
    with pytest.raises(SystemExit):
        run(_smk(tmp_path), _failing)
    assert LINE not in capfd.readouterr().err
    assert summary_lines([("rule_x", [str(tmp_path / "x.log")])]) == [
        f"InputError in rule_x ({tmp_path / 'x.log'}): {LINE}"]


def test_a_crash_keeps_its_traceback_in_the_log_and_propagates(tmp_path, capfd):
    with pytest.raises(ZeroDivisionError):
        run(_smk(tmp_path), _crashing)
    text = (tmp_path / "x.log").read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text
    assert "Traceback" not in capfd.readouterr().err  # Python prints it, once, on exit
    (line,) = summary_lines([("rule_x", [str(tmp_path / "x.log")])])
    assert line.startswith("rule_x crashed") and "ZeroDivisionError: division by zero" in line


def test_summary_is_one_line_per_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(SUMMARY_ENV, "1")
    for name in ("a", "b"):
        with pytest.raises(SystemExit):
            run(_smk(tmp_path, name), _failing)
    (tmp_path / "c.log").write_text("some tool output\nKilled\n")
    jobs = [("extract", [str(tmp_path / "a.log")]), ("extract", [str(tmp_path / "b.log")]),
            ("extract", [str(tmp_path / "a.log")]), ("shell", [str(tmp_path / "c.log")]),
            ("nolog", [])]
    lines = summary_lines(jobs)
    assert lines == [
        f"InputError in extract ({tmp_path / 'a.log'}, {tmp_path / 'b.log'}): {LINE}",
        f"shell failed ({tmp_path / 'c.log'}): Killed",
        "nolog failed: nothing in its log -- see Snakemake's output above"]


def test_failed_jobs_are_read_from_snakemakes_log(tmp_path, capsys):
    job_log = tmp_path / "structures.log"
    job_log.write_text(f"2026 affinity_vae ERROR: InputError: {LINE}\n")
    main_log = tmp_path / "run.snakemake.log"
    main_log.write_text(
        "RuleException:\nCalledProcessError in file ...\n"
        "Error in rule structures_build:\n    message: None\n    jobid: 7\n"
        "    output: results/r/structures\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
        "Shutting down, this might take some time.\n"
        "Error in rule train_model:\n    jobid: 3\nExiting\n")
    assert failed_jobs_from_log(main_log.read_text()) == [
        ("structures_build", [str(job_log)]), ("train_model", [])]
    lines = report_failures([str(main_log)])
    err = capsys.readouterr().err
    assert lines[0] == f"InputError in structures_build ({job_log}): {LINE}"
    assert err.count(LINE) == 1 and err.startswith("2 jobs failed:")


def _truncated_map_folder(folder):
    """Three class maps at 10 A; b.mrc cut in half (a readable header, half the data)."""
    import mrcfile

    folder.mkdir()
    z, y, x = np.mgrid[:24, :24, :24] - 12
    for i, name in enumerate("abc"):
        vol = np.exp(-(x**2 + y**2 + (z * (1 + i / 2)) ** 2) / 20).astype(np.float32)
        with mrcfile.new(folder / f"{name}.mrc") as m:
            m.set_data(vol)
            m.voxel_size = 10.0
    data = (folder / "b.mrc").read_bytes()
    (folder / "b.mrc").write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_a_failed_run_says_the_error_once_at_the_end(tmp_path):
    """A tiny run whose structures job meets a truncated MRC (`snakemake -n` plans fine): the
    job's one line appears once in the whole output, in its last 15 lines, with the log file."""
    from workflow_helpers import REPO, TINY, snakemake

    _truncated_map_folder(tmp_path / "maps")
    run_name = "test_error_once"
    log = f"results/{run_name}/logs/structures.log"
    extra = tmp_path / "maps.yaml"
    extra.write_text(f"structures: {{source: dir, path: '{tmp_path / 'maps'}'}}\n"
                     f"dataset: {{unseen_classes: []}}\n")
    args = ["structures", "--cores", "1", "--configfile", str(TINY), str(extra),
            "--config", f"run={run_name}"]
    dry = snakemake("-n", *args, check=False, timeout=600)
    assert dry.returncode == 0, dry.stdout[-3000:]
    try:
        proc = snakemake(*args, check=False, timeout=600)
        text = (REPO / log).read_text()
    finally:
        subprocess.run(["rm", "-rf", str(REPO / "results" / run_name)], check=False)
    assert proc.returncode != 0
    marker = [ln for ln in text.splitlines() if "InputError: " in ln]
    assert len(marker) == 1 and "b.mrc" in marker[0], text
    line = marker[0].split("InputError: ", 1)[1].strip()
    out = proc.stdout.splitlines()
    assert sum(line in o for o in out) == 1, proc.stdout[-4000:]
    tail = [o for o in out[-15:] if line in o]
    assert tail == [f"  InputError in structures_build ({log}): {line}"], "\n".join(out[-20:])
