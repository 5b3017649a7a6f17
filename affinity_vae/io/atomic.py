"""Write to a temporary name and rename when complete, so a killed job leaves nothing finished.

A full disk during the write is a user-fixable problem: the temporary is removed, the previous
output (if any) is left as it was, and the error is one line (:class:`InputError`).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from affinity_vae.errors import InputError

#: errno values that mean "the file system is full" (out of blocks, or over the user's quota).
FULL = (errno.ENOSPC, errno.EDQUOT)
#: Below this many free bytes a failed write counts as a full disk even when the library that
#: wrote (torch, h5py) turned the OSError into another exception type.
NEARLY_FULL_BYTES = 1 << 20


def disk_full_error(path: str | os.PathLike) -> InputError:
    """The one-line error for a write to ``path`` that ran out of space."""
    return InputError(f"no space left on device writing {path} -- free space or move results/ "
                      f"to a larger disk, then re-run")


def is_disk_full(exc: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``exc`` (raised while writing into ``folder``) is a full disk: an OSError with
    ENOSPC/EDQUOT anywhere in its chain, or an OSError/RuntimeError (torch.save's) while the
    file system has under :data:`NEARLY_FULL_BYTES` free."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed earlier write of ``path`` left (``.<name>.tmp-<pid>*``
    from another process: one job writes one output, so they are stale); returns them."""
    path = Path(path)
    mine = f".{path.name}.tmp-{os.getpid()}{path.suffix}"
    stale = [p for p in path.parent.glob(f".{glob_escape(path.name)}.tmp-*") if p.name != mine]
    for p in stale:
        with suppress(OSError):
            p.unlink()
    return stale


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters quoted."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` if the block succeeds.

    The temporary keeps the suffix (``x.mrc`` -> ``.x.mrc.tmp-<pid>.mrc``) so that
    libraries choosing a format from the extension still work.

    Raises:
        InputError: the disk filled up during the write (see :func:`disk_full_error`); the
            previous ``path``, if any, is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full_error(path) from exc
        raise
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    remove_stale_temporaries(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except InputError:
        raise
    except Exception as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full_error(path) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
