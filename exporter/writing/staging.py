"""Build a bundle in a hidden folder beside the output and rename it into place only when complete.

A bundle on disk is either complete and verified or absent: an error, Ctrl-C or SIGTERM removes the
partial folder, and even SIGKILL leaves only a hidden ``.<name>.partial-<pid>-*`` folder, which the
next export into the same place removes.

``--force`` replaces only what an export made: an empty folder, or a gpt2-edge bundle that holds
nothing but bundle files. Anything else (someone's files, the working directory, the folder that
holds the checkpoint, a symbolic link) is refused before any work, and checked again just before
the old bundle is swapped out, since the export can take minutes.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from gpt2_edge.runtime.bundle import FORMAT_NAME, MANIFEST, MODEL_FILE, TOKENIZER_FILE
from gpt2_edge.runtime.interrupts import signals_as_interrupts

from .errors import ExportError
from .progress import human_size

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
# The ones a library may also report inside another exception (onnxruntime's C++ code raises a
# RuntimeError whose text holds strerror), so they are recognised there too.
RESOURCE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
# A full disk seldom surfaces as ENOSPC from onnx and onnxruntime: their C++ writers fail
# quietly and the next read of the truncated file raises protobuf's DecodeError, "Failed to
# serialize", or a size mismatch. Such an error while this little space is left is a full disk.
LOW_SPACE_BYTES = 64 * 2**20
_WRITE_FAILURE = re.compile(
    r"protobuf|serializ|pars(e|ing)|writ(e|ing)|sav(e|ing)|external data|truncat|size mismatch",
    re.IGNORECASE,
)
_WRITE_FAILURE_MODULES = ("google.protobuf", "onnx", "onnxruntime")

# What a bundle folder may hold: bundle files, and what an interrupted export leaves inside it.
BUNDLE_FILES = frozenset(
    {MODEL_FILE, MODEL_FILE + ".data", TOKENIZER_FILE, MANIFEST, "genai_config.json"}
    | {"tokenizer_config.json"}  # onnxruntime-genai's tokenizer reads it (genai_config.py)
)
STAGING_LEFTOVERS = frozenset({".work"})
NAMED_AT_MOST = 5  # unexpected files named in a refusal


def absolute(out: Path) -> Path:
    """``out`` made absolute without following links, so ``.`` or ``..`` get a real name."""
    return Path(os.path.abspath(out))


def check_output(out: Path, force: bool, checkpoint: Path | None = None) -> None:
    """Refuse, before any work, an output the export may not create or replace.

    Args:
        out: the output folder as the user gave it.
        force: whether ``--force`` was passed (it replaces only bundles and empty folders).
        checkpoint: the source checkpoint folder, when known; it may never be replaced.

    Raises:
        ExportError: a sentence naming what is in the way; nothing was touched.
    """
    try:
        _check_output(out, force, checkpoint)
    except OSError as exc:  # a parent without permission, a working folder that was deleted
        raise ExportError(
            os_error_sentence(exc, out) or f"Cannot check the output {out} ({exc.strerror})."
        ) from None


def _check_output(out: Path, force: bool, checkpoint: Path | None) -> None:
    if out.is_symlink():
        raise ExportError(
            f"{out} is a symbolic link (to {os.readlink(out)}); gpt2-export neither follows nor "
            "replaces links, so pass the real folder or choose another --output."
        )
    real = out.resolve()
    if real.parent == real:
        raise ExportError(f"The output {out} is the root folder; choose another --output.")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise ExportError(
            f"The output {out} is the current folder or one that holds it; choose another --output."
        )
    if checkpoint is not None:
        source = checkpoint.resolve()
        if real == source or real in source.parents:
            what = "the checkpoint folder itself" if real == source else "a folder that holds it"
            raise ExportError(f"The output {out} is {what}; choose another --output.")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(
            f"{out} exists and is a file, not a bundle folder; choose another --output."
        )
    check_replaceable(out)  # first: --force is worth suggesting only when it would work
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it or choose --output.")


def check_replaceable(out: Path) -> None:
    """Refuse unless the existing folder ``out`` is empty or a bundle with only bundle files."""
    try:
        names = sorted(os.listdir(out))
    except OSError as exc:
        raise ExportError(f"{out} cannot be read ({exc.strerror}); remove it first.") from None
    if not names:
        return
    if not _is_bundle_manifest(out / MANIFEST):
        raise ExportError(
            f"{out} exists and is not a gpt2-edge bundle (it has no {MANIFEST} of format "
            f"{FORMAT_NAME}), so gpt2-export will not replace it, even with --force; move its "
            "files away or choose another --output."
        )
    unexpected = [name for name in names if not _bundle_entry(out / name)]
    if unexpected:
        shown = ", ".join(unexpected[:NAMED_AT_MOST])
        more = len(unexpected) - NAMED_AT_MOST
        shown += f" and {more} more" if more > 0 else ""
        raise ExportError(
            f"{out} is a bundle but also holds {shown}, so gpt2-export will not replace it, "
            "even with --force; move those files away or choose another --output."
        )


def _is_bundle_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _bundle_entry(path: Path) -> bool:
    """A bundle file (a file or a link, never a folder) or an export's leftover folder."""
    if path.name in STAGING_LEFTOVERS:
        return path.is_dir() and not path.is_symlink()
    return path.name in BUNDLE_FILES and (path.is_symlink() or not path.is_dir())


def check_free_space(out: Path, needed: int) -> None:
    """Refuse up front when the output's file system clearly cannot hold the export's files."""
    free = free_bytes(out)
    if free is not None and free < needed:
        raise ExportError(
            f"Not enough free space for {out}: the export needs about {human_size(needed)} "
            f"and {human_size(free)} is free."
        )


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system of ``path`` or its nearest existing parent (None: unknown)."""
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def os_error_sentence(exc: OSError, out: Path) -> str | None:
    """The user's sentence for an OS error while writing ``out``; None when it is not theirs."""
    reason = USER_ERRNOS.get(exc.errno or 0)
    if reason is None:
        return None
    detail = exc.strerror or str(exc)
    if exc.filename:
        detail = f"{detail}: {exc.filename}"
    return f"Cannot write the bundle to {out}: {reason} ({detail})."


def write_error_sentence(exc: BaseException, out: Path) -> str | None:
    """The sentence for any step's failure that a full disk or a permission caused, else None.

    Looks at the whole chain of causes: an ``OSError`` with a user errno; a library error whose
    text holds such an errno's message; or an onnx/onnxruntime/protobuf write or read failure
    while the output's or the temporary folder's file system is nearly full.
    """
    chain = _causes(exc)
    for link in chain:
        if isinstance(link, OSError) and (link is exc or link.errno in RESOURCE_ERRNOS):
            sentence = os_error_sentence(link, out)
            if sentence is not None:
                return sentence
    for link in chain:
        for code in RESOURCE_ERRNOS:
            if os.strerror(code).lower() in str(link).lower():
                reason = f"{USER_ERRNOS[code]} ({os.strerror(code)})"
                return f"Cannot write the bundle to {out}: {reason}."
    if not any(_looks_like_write_failure(link) for link in chain):
        return None
    for where in (absolute(out).parent, Path(tempfile.gettempdir())):
        free = free_bytes(where)
        if free is not None and free < LOW_SPACE_BYTES:
            return (
                f"Cannot write the bundle to {out}: {USER_ERRNOS[errno.ENOSPC]} "
                f"(only {human_size(free)} free on {where}; {type(exc).__name__})."
            )
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _looks_like_write_failure(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(_WRITE_FAILURE_MODULES) or bool(_WRITE_FAILURE.search(str(exc)))


@contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``out``; on success rename it to ``out``.

    Any step's failure that a full disk or a permission caused becomes one :class:`ExportError`
    sentence (see :func:`write_error_sentence`); the hidden folder is removed in every case.
    """
    target = absolute(out)
    tmp = _make_partial(target, out)
    try:
        with signals_as_interrupts(signal.SIGTERM):
            yield tmp
            _move_into_place(tmp, target, force)
    except ExportError:
        _discard(tmp)
        raise
    except Exception as exc:
        sentence = write_error_sentence(exc, out)  # before the discard frees the space again
        _discard(tmp)
        if sentence is None:
            raise
        raise ExportError(sentence) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    """Remove the partial folder; a second Ctrl-C must not leave it half removed."""
    with _sigint_ignored():
        shutil.rmtree(tmp, ignore_errors=True)


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _make_partial(target: Path, out: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target)
        prefix = f"{_partial_prefix(target)}{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
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
    prefix = _partial_prefix(out)
    for path in out.parent.glob(glob.escape(prefix) + "*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
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
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    # The export took a while: whatever is at ``out`` now must still be ours to replace.
    if out.is_symlink() or not out.is_dir():
        what = "changed" if force else "appeared"
        raise ExportError(f"{out} {what} during the export and is not a bundle folder.")
    check_replaceable(out)
    if not force:  # created by someone else while we worked, and --force could replace it
        raise ExportError(f"{out} appeared during the export; pass --force to replace it.")
    # Two renames keep the window without a bundle at ``out`` as short as possible.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.rename(out, old / out.name)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old / out.name, out)  # put the old bundle back
            raise
    finally:
        with suppress(OSError):
            old.rmdir()  # only when the old bundle is back at ``out``
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
