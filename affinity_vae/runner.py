"""How a Snakemake ``script:`` runs a stage: log to the rule's log, threads, clean errors.

Every ``scripts/<stage>.py`` is three lines::

    from affinity_vae.runner import run
    from affinity_vae.<stage> import <entry>
    run(snakemake, <entry>)

``<entry>(snakemake)`` reads ``snakemake.input/output/params`` and calls the library.

A user-fixable problem (:class:`~affinity_vae.errors.InputError`) is one line: written to the
rule's log file as ``... ERROR: InputError: <line>`` and, unless the workflow prints a summary
at the end of the run (``AVAE_ERROR_SUMMARY`` set by the Snakefile's ``onerror:`` handler,
affinity_vae.failures), printed once to stderr as ``ERROR: <line>``. Any other exception is
logged with its traceback to the log file and re-raised (Python prints it to stderr once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affinity_vae.errors import CRASH_MARKER, LOG_MARKER, SUMMARY_ENV, InputError
from affinity_vae.io.atomic import disk_full_error, is_disk_full

log = logging.getLogger("affinity_vae")


def _outputs(smk: Any) -> list[Path]:
    return [Path(p) for p in smk.output]


def _blas_limit(threads: int) -> contextlib.AbstractContextManager:
    """Cap the BLAS/OpenMP pools of the libraries already loaded (numpy's BLAS is, by the time
    a script runs, so OMP_NUM_THREADS comes too late for it) at the rule's threads: without it
    scikit-learn and numpy use every core of the node beside the other jobs. threadpoolctl
    comes with scikit-learn; in an env without it this is a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


class _NotOnStderr(logging.Filter):
    """Keeps records logged with ``extra={"file_only": True}`` off the stderr handler: the
    error line and tracebacks reach stderr once, by their own route."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def _setup_logging(logfile: str | None) -> None:
    stderr = logging.StreamHandler(sys.stderr)
    stderr.addFilter(_NotOnStderr())
    handlers: list[logging.Handler] = [stderr]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _remove_outputs(smk: Any) -> None:
    for out in _outputs(smk):  # nothing that looks finished
        if out.is_file():
            out.unlink()


def run(smk: Any, entry: Callable[[Any], None]) -> None:
    """Run ``entry(smk)`` with logging to ``smk.log[0]`` and one-line errors for bad input.

    Raises:
        SystemExit(1): on an InputError or a full disk (its line logged, outputs removed).
    """
    logfile = smk.log[0] if len(smk.log) else None
    _setup_logging(logfile)
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for libraries not loaded yet
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))  # umap's numba, imported lazily
    log.info("rule %s: %d thread(s)", getattr(smk, "rule", "?"), threads)
    try:
        with _blas_limit(threads):
            entry(smk)
    except InputError as exc:
        _fail(smk, logfile, exc)
    except Exception as exc:
        outs = _outputs(smk)
        if outs and is_disk_full(exc, _existing_parent(outs[0])):
            _fail(smk, logfile, disk_full_error(getattr(exc, "filename", None) or outs[0]))
        first = " ".join(str(exc).split())[:300]
        log.exception("%s%s: %s", CRASH_MARKER, type(exc).__name__, first,
                      extra={"file_only": True})
        raise


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _in_log(logfile: str | None, text: str) -> bool:
    """Whether the rule's log file holds ``text`` (it may not: the disk it is on may be full)."""
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()
    try:
        return bool(logfile) and text in Path(logfile).read_text(errors="replace")
    except OSError:
        return False


def _fail(smk: Any, logfile: str | None, exc: InputError) -> None:
    """Log the one line, remove the outputs, print the line unless the workflow's end-of-run
    summary will (it reads it back from the log), exit 1."""
    line = " ".join(str(exc).split())  # one line, whatever the message held
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False  # full disk
    log.error("%s%s", LOG_MARKER, line, extra={"file_only": True})
    logging.raiseExceptions = raise_exceptions
    _remove_outputs(smk)
    if not (os.environ.get(SUMMARY_ENV) and _in_log(logfile, line)):
        print(f"ERROR: {line}", file=sys.__stderr__)
    sys.exit(1)
