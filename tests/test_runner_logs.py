"""What a rule's job leaves in its log (affinity_vae.runner): the full traceback of any crash,
and the Python warnings of the libraries it calls -- in the log, not on the console."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from affinity_vae.failures import summary_lines
from affinity_vae.runner import run

REPO = Path(__file__).resolve().parents[1]


def _smk(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(log=[str(tmp_path / "job.log")], output=[], threads=1, rule="r")


def _read_only_write(smk) -> None:
    a = np.zeros(3)
    a.flags.writeable = False
    try:
        a[0] = 1.0
    except ValueError as exc:
        raise RuntimeError("could not fill the table") from exc


def test_a_snakemake_script_job_logs_its_traceback_and_warnings(tmp_path):
    """A real `script:` job: the chained traceback and a library warning are in the rule's log;
    the warning is not on the console."""
    (tmp_path / "Snakefile").write_text(
        'rule crash:\n    output: "out.txt"\n    log: "logs/crash.log"\n'
        '    script: "crash.py"\n')
    (tmp_path / "crash.py").write_text(
        "import warnings\nimport numpy as np\nfrom affinity_vae.runner import run\n\n"
        "def entry(smk):\n"
        "    warnings.warn('lbfgs failed to converge (test)')\n"
        "    a = np.zeros(3)\n    a.flags.writeable = False\n"
        "    try:\n        a[0] = 1\n"
        "    except ValueError as exc:\n        raise RuntimeError('fill failed') from exc\n\n"
        "run(snakemake, entry)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode != 0
    text = (tmp_path / "logs" / "crash.log").read_text()
    assert "Traceback" in text and "a[0] = 1" in text
    assert "ValueError: assignment destination is read-only" in text  # the cause, too
    assert "RuntimeError: fill failed" in text
    assert "lbfgs failed to converge (test)" in text
    assert "lbfgs failed to converge" not in proc.stdout + proc.stderr
    (line,) = summary_lines([("crash", [str(tmp_path / "logs" / "crash.log")])])
    assert line.startswith("crash crashed") and "RuntimeError: fill failed" in line


def test_a_library_sys_exit_is_logged_as_a_crash(tmp_path):
    def entry(smk):
        sys.exit("library gave up")

    with pytest.raises(SystemExit):
        run(_smk(tmp_path), entry)
    text = (tmp_path / "job.log").read_text()
    assert "crashed: SystemExit: library gave up" in text and "Traceback" in text


def test_a_crash_in_a_worker_thread_is_logged(tmp_path):
    def entry(smk):
        t = threading.Thread(target=_read_only_write, args=(smk,), name="prefetch")
        t.start()
        t.join()

    run(_smk(tmp_path), entry)
    text = (tmp_path / "job.log").read_text()
    assert "thread prefetch crashed: RuntimeError" in text
    assert "assignment destination is read-only" in text


def test_warnings_go_to_the_log_not_the_console(tmp_path, capfd):
    def entry(smk):
        for _ in range(3):
            warnings.warn("noisy library warning", UserWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        run(_smk(tmp_path), entry)
    assert "noisy library warning" in (tmp_path / "job.log").read_text()
    assert "noisy library warning" not in capfd.readouterr().err
