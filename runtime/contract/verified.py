"""A record of the bundle files this user has already hashed, so a load need not read them again.

Hashing GPT-2 124M's 124 MiB of int8 weights takes 0.07-0.1 s on a desktop core (more on an
edge board), a fifth of the CLI's start. So once a file's SHA-256 has matched the manifest, a
small record of the file version is written under the user's cache folder, and a later load
skips the read when the file is unchanged.

"Unchanged" means the same device, inode, size, mtime and ctime. Every write, truncation, rename
over the file or ``touch`` changes the ctime, which user programs cannot set back, so a change
made through the filesystem is always seen. A change in the same clock tick as the hashing could
hide (racy-git's problem on coarse-clock filesystems), so a file changed less than
``SETTLE_S`` seconds before it was hashed is not recorded. What a record cannot see: bytes that
rot on the disk beneath the filesystem, or someone who may set the system clock or write to the
cache folder; set ``GPT2_EDGE_CACHE_DIR=""`` (or delete the folder) to hash every file on every
load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

CACHE_ENV = "GPT2_EDGE_CACHE_DIR"
# Coarsest common timestamp granularity (FAT's 2 s), plus a margin.
SETTLE_S = 3.0
_RECORDS = "verified"
_RECORD_BYTES = 1 << 16  # a record is ~200 bytes
_RECORD_NAME = re.compile(r"[0-9a-f]{32}\.json")  # what _record_path names a record

Signature = tuple[int, int, int, int, int]  # (device, inode, size, mtime_ns, ctime_ns)


def cache_dir() -> Path | None:
    """The user's gpt2-edge cache folder, or None when ``GPT2_EDGE_CACHE_DIR`` is set empty.

    ``GPT2_EDGE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/gpt2-edge``, else
    ``~/.cache/gpt2-edge``.
    """
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return Path(given) if given.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt2-edge"


def signature(path: Path) -> Signature:
    """What identifies one version of a file's content on disk."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _record_path(path: Path, sha256: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    key = hashlib.sha256(f"{os.path.realpath(path)}\0{sha256}".encode()).hexdigest()[:32]
    return root / _RECORDS / f"{key}.json"


def is_verified(path: Path, sha256: str) -> bool:
    """Whether this user already hashed this very version of ``path`` and got ``sha256``."""
    record = _record_path(path, sha256)
    if record is None:
        return False
    try:
        data = _read_record(record)
        if not (
            isinstance(data, dict)
            and data["path"] == os.path.realpath(path)
            and data["sha256"] == sha256
            and tuple(data["signature"]) == signature(path)
        ):
            return False
        # A file this process may not read must fail here, where the error names it, and not
        # later in whatever reads it next (gpt2-pack's copy).
        with open(path, "rb"):
            return True
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one we did not write
        return False


def remember(path: Path, sha256: str, before: Signature, started: float) -> None:
    """Record that ``path`` hashed to ``sha256``, if that is safe; a cache, so never raises.

    Args:
        path: the file that was hashed.
        sha256: the digest it had, which the manifest expects.
        before: its :func:`signature` taken before the hashing began.
        started: ``time.time()`` when the hashing began.
    """
    record = _record_path(path, sha256)
    if record is None:
        return
    try:
        now = signature(path)
        changed_at = max(now[3], now[4]) / 1e9
        if now != before or changed_at > started - SETTLE_S:  # changed during, or too recently
            return
        record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {"path": os.path.realpath(path), "sha256": sha256, "signature": list(now)}
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")  # one writer per process
        try:
            with open(tmp, "x", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, record)  # a reader sees the old record or the new one, never half
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _forget_vanished(record.parent)
    except OSError:  # a read-only or full home folder only costs the next load a hash
        return


def _read_record(record: Path) -> object:
    """A record's JSON; ValueError for anything that is not a small regular file (a FIFO would
    block the load, a link to /dev/zero fill the memory)."""
    if not stat.S_ISREG(os.stat(record).st_mode):
        raise ValueError(f"{record} is not a regular file")
    with open(record, "rb") as fh:
        data = fh.read(_RECORD_BYTES + 1)
    if len(data) > _RECORD_BYTES:
        raise ValueError(f"{record} is too large for a record")
    return json.loads(data.decode("utf-8"))


def _forget_vanished(folder: Path) -> None:
    """Delete the records of files that no longer exist (a test's or an export's temporary
    folders), so the records do not pile up; only after a hash, which is rare and slower.

    Only what this module wrote is deleted: a file named and shaped as a record. Anything else
    in the folder (``GPT2_EDGE_CACHE_DIR`` may point at a folder the user keeps other files in)
    is left alone.
    """
    for record in folder.iterdir():
        if not _RECORD_NAME.fullmatch(record.name):
            continue
        try:
            data = _read_record(record)
            gone = (
                isinstance(data, dict)
                and set(data) == {"path", "sha256", "signature"}
                and not os.path.exists(data["path"])
            )
        except (OSError, ValueError, TypeError):
            gone = False  # unreadable or not a record: not ours to delete
        if gone:
            record.unlink(missing_ok=True)
