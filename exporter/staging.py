"""Build a bundle in a hidden folder beside the output and rename it into place only when complete.

A bundle on disk is either complete and verified or absent: an error, Ctrl-C or SIGTERM removes the
partial folder, and even SIGKILL leaves only a hidden ``.<name>.partial-<pid>-*`` folder, which the
next export into the same place removes.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ExportError

# OS errors on the output path that the user can fix (space, permissions, a file in the way).
USER_ERRNOS = {
    errno.ENOSPC: "there is no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission is denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way",
}


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it or choose --output.")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is a file, not a bundle folder; remove it first.")


def check_free_space(out: Path, needed: int) -> None:
    """Refuse up front when the output's file system clearly cannot hold the export's files."""
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(existing).free
    except OSError:  # unknown: let the export try, a real ENOSPC is still caught
        return
    if free < needed:
        raise ExportError(
            f"Not enough free space for {out}: the export needs about {needed / 2**30:.1f} GiB "
            f"and {free / 2**30:.1f} GiB is free."
        )


def os_error_sentence(exc: OSError, out: Path) -> str | None:
    reason = USER_ERRNOS.get(exc.errno or 0)
    if reason is None:
        return None
    return f"Cannot write the bundle to {out}: {reason} ({exc.strerror or exc})."


@contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``out``; on success rename it to ``out``."""
    tmp = _make_partial(out)
    try:
        with _sigterm_as_interrupt():
            yield tmp
            _move_into_place(tmp, out, force)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        sentence = os_error_sentence(exc, out)
        if sentence is None:
            raise
        raise ExportError(sentence) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _make_partial(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out)
        prefix = f"{_partial_prefix(out)}{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the bundle should not be
        return tmp
    except OSError as exc:
        sentence = os_error_sentence(exc, out)
        if sentence is None:
            raise
        raise ExportError(sentence) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_abandoned(out: Path) -> None:
    """Remove partial folders of exports whose process is gone (killed with SIGKILL)."""
    for path in out.parent.glob(_partial_prefix(out) + "*"):
        pid = path.name[len(_partial_prefix(out)) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    if not force:  # created by someone else while we worked
        raise ExportError(f"{out} appeared during the export; pass --force to replace it.")
    # Two renames keep the window without a bundle at ``out`` as short as possible.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (a plain ``kill``) into KeyboardInterrupt so the cleanup above runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
