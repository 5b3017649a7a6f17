"""How a Snakemake ``script:`` runs a stage: log to the rule's log, threads, clean errors.

Every ``scripts/<stage>.py`` is three lines::

    from affinity_vae.runner import run
    from affinity_vae.<stage> import <entry>
    run(snakemake, <entry>)

``<entry>(snakemake)`` reads ``snakemake.input/output/params`` and calls the library.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affinity_vae.errors import InputError

log = logging.getLogger("affinity_vae")


def _outputs(smk: Any) -> list[Path]:
    return [Path(p) for p in smk.output]


def _blas_limit(threads: int) -> contextlib.AbstractContextManager:
    """Cap the BLAS/OpenMP pools of the libraries already loaded (numpy's BLAS is, by the time
    a script runs, so OMP_NUM_THREADS comes too late for it) at the rule's threads: without it
    scikit-learn and numpy use every core of the node beside the other jobs. threadpoolctl
    comes with scikit-learn; in an env without it this is a no-op."""
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def run(smk: Any, entry: Callable[[Any], None]) -> None:
    """Run ``entry(smk)`` with logging to ``smk.log[0]`` and one-line errors for bad input."""
    logfile = smk.log[0] if len(smk.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for libraries not loaded yet
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))  # umap's numba, imported lazily
    log.info("rule %s: %d thread(s)", getattr(smk, "rule", "?"), threads)
    try:
        with _blas_limit(threads):
            entry(smk)
    except InputError as exc:
        log.error("%s", exc)
        for out in _outputs(smk):  # nothing that looks finished
            if out.is_file():
                out.unlink()
        print(f"ERROR: {exc}", file=sys.__stderr__)
        sys.exit(1)
