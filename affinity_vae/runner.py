"""How a Snakemake ``script:`` runs a stage: log to the rule's log, threads, clean errors.

Every ``scripts/<stage>.py`` is three lines::

    from affinity_vae.runner import run
    from affinity_vae.<stage> import <entry>
    run(snakemake, <entry>)

``<entry>(snakemake)`` reads ``snakemake.input/output/params`` and calls the library.

A user-fixable problem (:class:`~affinity_vae.errors.InputError`) is one line: written to the
rule's log file as ``... ERROR: InputError: <line>`` and, unless the workflow prints a summary
at the end of the run (``AVAE_ERROR_SUMMARY`` set by the Snakefile's ``onerror:`` handler,
affinity_vae.failures), printed once to stderr as ``ERROR: <line>``. Any other exception (also
one raised in another thread, or a ``SystemExit``/``KeyboardInterrupt`` out of a library) is
logged with its full traceback to the log file and re-raised (Python prints it to stderr once);
a fatal signal in native code (segfault, abort) dumps the Python stack there too (faulthandler).

Python warnings (scikit-learn's, torch's, ...) go to the log file only, not to the console.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import threading
import warnings
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
    error line and tracebacks reach stderr once, by their own route. With a log file, Python
    warnings (logger ``py.warnings``, :func:`_log_warning`) stay off it too."""

    def __init__(self, warnings_too: bool) -> None:
        super().__init__()
        self.warnings_too = warnings_too

    def filter(self, record: logging.LogRecord) -> bool:
        if self.warnings_too and record.name == "py.warnings":
            return False
        return not getattr(record, "file_only", False)


def _setup_logging(logfile: str | None) -> None:
    """Root logging to stderr and ``logfile``; warnings and thread crashes into the log, and
    the Python stack of a fatal signal into it (faulthandler)."""
    stderr = logging.StreamHandler(sys.stderr)
    stderr.addFilter(_NotOnStderr(warnings_too=bool(logfile)))
    handlers: list[logging.Handler] = [stderr]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(logfile, mode="w")
        handlers.append(file)
        faulthandler.enable(file=file.stream)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    warnings.showwarning = _log_warning  # set each time: a test process runs many jobs
    threading.excepthook = _thread_crash


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` of a job: the warning to logger ``py.warnings`` (the log file;
    :class:`_NotOnStderr` keeps it off the console), as :func:`logging.captureWarnings` does."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text.rstrip())


def _thread_crash(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a thread: its traceback into the log (and stderr)."""
    if args.exc_type is SystemExit:
        return
    log.error("thread %s crashed: %s: %s", getattr(args.thread, "name", "?"),
              args.exc_type.__name__, args.exc_value,
              exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_crash(exc: BaseException) -> None:
    """The crash line (``CRASH_MARKER``, read by affinity_vae.failures) and the full traceback,
    chained exceptions included, into the log file only (Python prints it to stderr)."""
    first = " ".join(str(exc).split())[:300]
    log.error("%s%s: %s", CRASH_MARKER, type(exc).__name__, first,
              exc_info=(type(exc), exc, exc.__traceback__), extra={"file_only": True})
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()


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
        _log_crash(exc)
        raise
    except (SystemExit, KeyboardInterrupt) as exc:  # out of a library, not the runner's own
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            _log_crash(exc)
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
