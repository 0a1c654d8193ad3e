"""Reading with bounds: a bundle's JSON files (at most :data:`MAX_JSON_BYTES`, regular files only),
SHA-256 hashes (remembered per user for unchanged files, see ``verified.py``), and every input a
command reads whole (:func:`read_bounded`: a prompt on standard input, a text to score), so that
an endless input (``/dev/zero``, a pipe that never ends) costs no more than the largest one that
can be used, and ends in one sentence.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import EdgeError
from . import verified
from .schema import shown

# bundle.json, config.json and generation_config.json are a few kilobytes.
MAX_JSON_BYTES = 16 << 20
# The most a command reads of a text from a stream or a file: a prompt on gpt2-generate's stdin
# or a line of --interactive (GPT-2's context takes 131,072 characters of prompt, 512 KiB of
# UTF-8 at worst, but truncate="left" keeps the end of a longer one, so a log file may be piped
# in whole), or a text gpt2-eval scores: three times WikiText-2's training set (10.8 MB, 2.4M
# GPT-2 tokens, about a minute to tokenize on two cores; WikiText-103's test set is 1.3 MB).
MAX_TEXT_BYTES = 32 << 20


def read_bounded(source: str | os.PathLike[str] | BinaryIO, limit: int, too_long: str) -> bytes:
    """All of a file or binary stream, when it holds at most ``limit`` bytes.

    At most ``limit + 1`` bytes are read, so an endless input stops there.

    Raises:
        EdgeError: ``too_long``, for an input longer than ``limit``.
        OSError: the file cannot be opened or read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            data = fh.read(limit + 1)
    else:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise EdgeError(too_long)
    return data


def read_line_bounded(stream: BinaryIO, limit: int, too_long: str) -> bytes:
    """One line of ``stream`` (with its newline; b"" at the end of input), at most ``limit``
    bytes before the newline; EdgeError ``too_long`` past that (the rest of the line unread)."""
    line = stream.readline(limit + 1)
    if len(line) > limit and not line.endswith(b"\n"):
        raise EdgeError(too_long)
    return line


def mib(size: int) -> str:
    """``size`` bytes in MiB, as the sentences above show a bound ("32 MiB")."""
    return f"{size / (1 << 20):g} MiB"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of one file, as stored under ``files`` in the manifest."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def read_json(path: Path, owner: str = "a bundle") -> Any:
    """A JSON file's value, or a sentence saying why it cannot be read.

    Only a regular file of at most :data:`MAX_JSON_BYTES` is read: a FIFO in its place would
    block the load for ever, and a link to ``/dev/zero`` would fill the memory.

    Args:
        path: the file.
        owner: what it belongs to, for the sentence on a file that is too large.
    """
    try:
        not_regular = not_a_regular_file(path)
        if not_regular:
            raise EdgeError(not_regular)
        too_long = f"{path} is larger than {mib(MAX_JSON_BYTES)}, which no JSON file of {owner} is."
        return json.loads(read_bounded(path, MAX_JSON_BYTES, too_long).decode("utf-8"))
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
