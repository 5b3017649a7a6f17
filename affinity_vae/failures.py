"""One error, said once: the end-of-run summary of the jobs that failed.

The Snakefile's ``onerror:`` handler calls :func:`report_failures`. For every failed job it
prints one line, ``InputError in <rule> (<log file>): <line>``, read back from the job's log
file (where affinity_vae.runner wrote it), so the user sees each job's clear line once, at the
end, and not inside Snakemake's job output. A job that crashed (a bug, not the user's input)
gets ``<rule> crashed (<log file>): <Type>: <message>``, and a job whose log holds neither (a
killed job, a shell rule) ``<rule> failed (<log file>): <last line of the log>``.

The failed jobs come from Snakemake's scheduler when it is reachable (``workflow.scheduler``),
else from the ``Error in rule <name>:`` blocks of Snakemake's own log (the ``log`` argument of
``onerror``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from affinity_vae.errors import CRASH_MARKER, LOG_MARKER

_RULE = re.compile(r"^Error in rule (\w+):\s*$")
_LOG = re.compile(r"^\s+log:\s+(.+?)(?:\s+\(check log file\(s\) for error details\))?\s*$")


def failed_jobs_from_log(text: str) -> list[tuple[str, list[str]]]:
    """(rule, log files) of every ``Error in rule <name>:`` block of a Snakemake log."""
    jobs: list[tuple[str, list[str]]] = []
    rule: str | None = None
    for line in text.splitlines():
        m = _RULE.match(line)
        if m:
            rule = m.group(1)
            jobs.append((rule, []))
            continue
        m = _LOG.match(line) if rule else None
        if m:
            jobs[-1][1].extend(p.strip() for p in m.group(1).split(",") if p.strip())
            rule = None
        elif rule and not line.startswith((" ", "\t")):
            rule = None  # the block ended without a log: line
    return jobs


def failed_jobs_from_workflow(workflow: Any) -> list[tuple[str, list[str]]] | None:
    """(rule, log files) of the scheduler's failed jobs; None where the scheduler is not
    reachable (another Snakemake version)."""
    failed = getattr(getattr(workflow, "scheduler", None), "failed", None)
    if failed is None:
        return None
    try:
        jobs = [(job.rule.name, [str(p) for p in job.log]) for job in failed]
    except AttributeError:
        return None
    return sorted(jobs)


def job_error_line(logfile: str | Path) -> str | None:
    """The one line that explains a failed job, read from its log file (None if unreadable).

    ``InputError: <line>`` where the runner logged an InputError, ``crashed: <Type>: <msg>``
    for an unexpected exception, else the log's last non-empty line.
    """
    try:
        lines = Path(logfile).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for marker in (LOG_MARKER, CRASH_MARKER):
        hits = [ln.split(marker, 1)[1].strip() for ln in lines if f"ERROR: {marker}" in ln]
        if hits:
            return f"{marker}{hits[-1]}"
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1] if rest else None


def summary_lines(jobs: Iterable[tuple[str, Sequence[str]]]) -> list[str]:
    """One line per failed job; jobs of one rule failing for the same reason share one line
    that names all their logs (said once)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for rule, logs in jobs:
        found = [(p, job_error_line(p)) for p in logs]
        where, line = next(((p, ln) for p, ln in found if ln), (logs[0] if logs else None, None))
        wheres = seen.setdefault((rule, line or ""), [])
        if where and where not in wheres:
            wheres.append(where)
    out = []
    for (rule, line), wheres in seen.items():
        at = f" ({', '.join(wheres)})" if wheres else ""
        if line.startswith(LOG_MARKER):
            out.append(f"InputError in {rule}{at}: {line[len(LOG_MARKER):]}")
        elif line.startswith(CRASH_MARKER):
            out.append(f"{rule} crashed{at}: {line[len(CRASH_MARKER):]} -- a bug, not your "
                       f"input: the traceback is in the log")
        elif line:
            out.append(f"{rule} failed{at}: {line}")
        else:
            out.append(f"{rule} failed{at}: nothing in its log -- see Snakemake's output above")
    return out


def report_failures(log: Sequence[str] | str | None, workflow: Any = None,
                    stream: TextIO | None = None) -> list[str]:
    """Print the summary of the failed jobs (see the module docstring); returns its lines.

    ``log`` is what Snakemake passes to ``onerror`` (its own log file(s)); ``workflow`` the
    Snakefile's ``workflow`` object, the exact source of the failed jobs when reachable.
    """
    jobs = failed_jobs_from_workflow(workflow) if workflow is not None else None
    if not jobs:
        paths = [log] if isinstance(log, str) else list(log or [])
        text = ""
        for p in paths:
            try:
                text += Path(p).read_text(errors="replace") + "\n"
            except OSError:
                continue
        jobs = failed_jobs_from_log(text)
    lines = summary_lines(jobs)
    if lines:
        stream = stream or sys.stderr
        n = len(lines)
        print(f"{n} job{'s' if n > 1 else ''} failed:", file=stream)
        for line in lines:
            print(f"  {line}", file=stream)
        stream.flush()
    return lines
