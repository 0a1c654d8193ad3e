"""Reading a bundle's files with bounds: JSON of at most :data:`MAX_JSON_BYTES`, regular files
only, and SHA-256 hashes (remembered per user for unchanged files, see ``verified.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..errors import EdgeError
from . import verified
from .schema import shown

# bundle.json, config.json and generation_config.json are a few kilobytes.
MAX_JSON_BYTES = 16 << 20


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of one file, as stored under ``files`` in the manifest."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def read_json(path: Path) -> Any:
    """A JSON file's value, or a sentence saying why it cannot be read.

    Only a regular file of at most :data:`MAX_JSON_BYTES` is read: a FIFO in its place would
    block the load for ever, and a link to ``/dev/zero`` would fill the memory.
    """
    try:
        not_regular = not_a_regular_file(path)
        if not_regular:
            raise EdgeError(not_regular)
        with open(path, "rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise EdgeError(
                f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB, which no JSON file of a bundle "
                "is."
            )
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise
    # ValueError: bad JSON, or an integer over Python's digit limit; RecursionError: nesting.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EdgeError(f"{path} cannot be read as JSON ({reason}).") from None


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` (which exists) cannot be read as a file, or None when it is a regular file.

    Raises:
        FileNotFoundError: nothing is there (a broken link included).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    what = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
    return f"{path} is {what}, where a file is expected."


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a config, not a list or a number)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise EdgeError(f"{path} must hold a JSON object, got {shown(data)}.")
    return data


def matches_sha256(path: Path, expected: str) -> bool:
    """Whether ``path`` hashes to ``expected``: read in full, unless this user already hashed
    this unchanged file version (then it is remembered, see ``verified.py``)."""
    if verified.is_verified(path, expected):
        return True
    before, started = verified.signature(path), time.time()
    if sha256_of(path) != expected:
        return False
    verified.remember(path, expected, before, started)
    return True
