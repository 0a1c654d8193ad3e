"""The output's file system as the user meets it: OS errors a user can fix (space, permissions, a
file in the way) as one sentence, free space checked up front, and a full disk recognised where
libraries report it as something else.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

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


def absolute(out: Path) -> Path:
    """``out`` made absolute without following links, so ``.`` or ``..`` get a real name."""
    return Path(os.path.abspath(out))


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
