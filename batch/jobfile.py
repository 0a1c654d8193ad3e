"""A batch INPUT: OpenAI's batch file format, one request a line, read and checked before any
work.

Each line is a JSON object ``{"custom_id", "method": "POST", "url", "body"}``, ``url`` being
``/v1/completions`` or ``/v1/chat/completions``. A line that cannot run (not JSON, no
``custom_id``, another method or route, a body that is no object, too long) becomes its own error
line in OUTPUT and the job goes on; its body's fields are checked later, by the server's own
rules. The whole file is refused in one sentence, before any work, when it cannot be read, is
not UTF-8 text, has no line that is a JSON object (not JSON lines at all), holds no request or
too many, or gives two requests the same ``custom_id``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import EdgeError

from .engine import MAX_BODY_BYTES, URLS

# OpenAI's limits for one batch: 50,000 requests in a file of at most 200 MB.
MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200 * 1000 * 1000
# A line holds a body gpt2-serve would read (4 MiB) and the envelope around it.
MAX_LINE_BYTES = MAX_BODY_BYTES + 64 * 1024
SHOWN_CHARS = 60  # of a custom_id or value quoted in a sentence


@dataclass(frozen=True)
class Line:
    """One request line of INPUT.

    Attributes:
        number: its line number in INPUT, from 1 (blank lines count, as editors count them).
        custom_id: the line's ``custom_id``, or None when it has none that can be read.
        text: the line itself, parsed again when it runs (kept as text: a file's worth of
            parsed bodies takes several times its size in memory); "" for a line that cannot run.
        problem: why the line cannot run (a sentence), or None.
    """

    number: int
    custom_id: str | None
    text: str
    problem: str | None = None

    def request(self) -> tuple[str, dict[str, Any]]:
        """The line's ``url`` and ``body`` (only for a line without a problem)."""
        data = json.loads(self.text)
        return data["url"], data["body"]


@dataclass(frozen=True)
class JobFile:
    """A checked INPUT: its path, the SHA-256 of its bytes and its request lines in order."""

    path: Path
    sha256: str
    lines: list[Line]


def read_job(path: Path) -> JobFile:
    """Read and check INPUT.

    Raises:
        EdgeError: INPUT cannot be read, is not JSON lines, holds no request or more than
            :data:`MAX_REQUESTS`, or two of its requests share a ``custom_id``.
    """
    data = _read(path)
    text = _decode(data, path)
    lines: list[Line] = []
    objects = 0
    # JSON lines end at "\n" alone: str.splitlines() would also split at U+2028 and other
    # characters that a JSON string may hold unescaped.
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        line, is_object = _line(number, raw)
        objects += is_object
        lines.append(line)
        if len(lines) > MAX_REQUESTS:
            raise EdgeError(
                f"INPUT {path} holds more than {MAX_REQUESTS:,} requests (OpenAI's limit for one "
                "batch); split it into several files."
            )
    if not lines:
        raise EdgeError(f"INPUT {path} holds no requests; a batch file has one request a line.")
    if not objects:
        raise EdgeError(
            f"INPUT {path} is not JSON lines: none of its lines is a JSON object (a batch file "
            "has one request object a line)."
        )
    _check_unique(lines, path)
    return JobFile(path, hashlib.sha256(data).hexdigest(), lines)


def _read(path: Path) -> bytes:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise EdgeError(f"INPUT {path} is a folder; give a batch file (JSON lines).")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            raise EdgeError(f"INPUT {path} is not a regular file; give a batch file.")
        if info.st_size > MAX_INPUT_BYTES:
            raise EdgeError(
                f"INPUT {path} is larger than {MAX_INPUT_BYTES // 1000**2} MB (OpenAI's limit "
                "for one batch file); split it into several files."
            )
        return path.read_bytes()
    except OSError as exc:
        raise EdgeError(f"Cannot read INPUT {path}: {exc.strerror or exc}.") from None


def _decode(data: bytes, path: Path) -> str:
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeError(
            f"INPUT {path} is not UTF-8 text (bad byte at offset {start + exc.start}); a batch "
            "file is JSON lines."
        ) from None


def _line(number: int, raw: str) -> tuple[Line, bool]:
    """The line, and whether it is a JSON object at all."""
    where = f"Line {number}"
    if len(raw) > MAX_LINE_BYTES or len(raw.encode("utf-8")) > MAX_LINE_BYTES:
        return Line(number, None, "", f"{where} is longer than {MAX_LINE_BYTES:,} bytes."), False
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg[:1].lower()}{exc.msg[1:]} at column {exc.colno}"
        return Line(number, None, "", f"{where} is not valid JSON: {reason}."), False
    except (ValueError, RecursionError) as exc:  # NaN, an integer too long, nested too deeply
        reason = str(exc) if isinstance(exc, _Refused) else "nested too deeply or too long"
        return Line(number, None, "", f"{where} is not valid JSON: {reason}."), False
    if not isinstance(data, dict):
        return Line(number, None, "", f"{where} is not a JSON object."), False
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return Line(number, None, "", f"{where} needs a custom_id, a non-empty string."), True
    problem = _envelope_problem(data, where)
    return Line(number, custom_id, "" if problem else raw, problem), True


def _envelope_problem(data: dict[str, Any], where: str) -> str | None:
    if data.get("method") != "POST":
        return f"{where}: method must be POST, got {_shown(data.get('method'))}."
    if data.get("url") not in URLS:
        return f"{where}: url must be {' or '.join(URLS)}, got {_shown(data.get('url'))}."
    if not isinstance(data.get("body"), dict):
        return f"{where}: body must be a JSON object, got {_shown(data.get('body'))}."
    return None


def _check_unique(lines: list[Line], path: Path) -> None:
    first: dict[str, int] = {}
    for line in lines:
        if line.custom_id is None:
            continue
        if line.custom_id in first:
            raise EdgeError(
                f"custom_id {_shown(line.custom_id)} is on lines {first[line.custom_id]} and "
                f"{line.number} of INPUT {path}; each request needs its own custom_id."
            )
        first[line.custom_id] = line.number


class _Refused(ValueError):
    """A JSON text Python parses but JSON does not allow."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."
