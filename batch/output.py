"""OUTPUT: OpenAI's batch output format, appended a whole line at a time, and read back to resume.

Each line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``.
A line's ``id`` is ``batch_req_<first 24 hex digits of INPUT's SHA-256>_<its INPUT line number>``,
so OUTPUT says, line by line and without a header, which INPUT and which request it answers: a
second run skips the lines done, and an OUTPUT written for another INPUT is refused.

Lines are written with one ``write`` on a file opened for appending: once it returns, the line
is in the file for every reader and survives ``kill -9`` of this process (the kernel holds it), so
nothing done is repeated and only the requests in flight are lost. A write that fails part way is
cut off again. ``fsync`` runs with the first line written :data:`FSYNC_EVERY_S` or more after the
last one, and at the end: a machine that loses power loses only the lines since (about that long of
a steady job's results), which the next run does again, and a partial last line it may leave is
cut off when the file is opened to go on. (An ``fsync`` per line takes ~3.5 ms on this machine's
disk: it would cap a job at ~290 requests/s.)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import EdgeError

ID_DIGITS = 24  # of INPUT's SHA-256 in each id: 96 bits, no two inputs alike by chance
ID_PATTERN = re.compile(rf"batch_req_([0-9a-f]{{{ID_DIGITS}}})_([1-9][0-9]*)")
INVALID_LINE = "invalid_request_line"  # the error code of a line that cannot run
TAIL_CHUNK = 1 << 16
FSYNC_EVERY_S = 0.2


def line_id(input_sha256: str, number: int) -> str:
    """The ``id`` of the output line for INPUT line ``number``."""
    return f"batch_req_{input_sha256[:ID_DIGITS]}_{number}"


def result_record(
    input_sha256: str, number: int, custom_id: str, status: int, body: dict[str, Any]
) -> dict[str, Any]:
    """The output line of a request that ran: its response, whatever its status."""
    request_id = body.get("id") if status == 200 else None
    return {
        "id": line_id(input_sha256, number),
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": request_id or f"req_{input_sha256[:ID_DIGITS]}_{number}",
            "body": body,
        },
        "error": None,
    }


def invalid_record(
    input_sha256: str, number: int, custom_id: str | None, problem: str
) -> dict[str, Any]:
    """The output line of an INPUT line that cannot run: no response, an error."""
    return {
        "id": line_id(input_sha256, number),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": INVALID_LINE, "message": problem},
    }


def check_output(path: Path) -> None:
    """Refuse, before any work, an OUTPUT that cannot be appended to: its folder missing or not
    writable, or the path itself a folder or not a regular file, or not writable."""
    folder = path.parent
    if not folder.is_dir():
        raise EdgeError(f"The folder of --output {path} does not exist; create it first.")
    try:
        info = path.stat()
    except FileNotFoundError:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise EdgeError(f"Cannot write --output {path}: its folder is not writable.") from None
        return
    except OSError as exc:
        raise EdgeError(f"Cannot use --output {path}: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise EdgeError(f"--output {path} is a folder; give a file name.")
    if not stat.S_ISREG(info.st_mode):
        raise EdgeError(f"--output {path} is not a regular file; give a file name.")
    try:  # opening for appending changes nothing, and is the check that holds for root too
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        raise EdgeError(f"Cannot write --output {path}: {exc.strerror or exc}.") from None


def done_lines(path: Path, input_sha256: str) -> set[int]:
    """The INPUT line numbers OUTPUT has answered already (none when it does not exist).

    Raises:
        EdgeError: OUTPUT holds lines of another INPUT, or lines that no gpt2-batch wrote.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise EdgeError(f"Cannot read --output {path}: {exc.strerror or exc}.") from None
    whole = data[: data.rfind(b"\n") + 1]  # a partial last line is cut off and done again
    done: set[int] = set()
    for count, raw in enumerate(whole.splitlines(), start=1):
        found = _id_of(raw)
        if found is None:
            raise EdgeError(
                f"--output {path} is not a gpt2-batch output (its line {count} is not one); "
                "give another --output."
            )
        sha, number = found
        if sha != input_sha256[:ID_DIGITS]:
            raise EdgeError(
                f"--output {path} holds results of another input file; give another --output, "
                "or the INPUT it was written for."
            )
        done.add(number)
    return done


def _id_of(raw: bytes) -> tuple[str, int] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    found = ID_PATTERN.fullmatch(str(record.get("id"))) if isinstance(record, dict) else None
    if found is None or "response" not in record or "custom_id" not in record:
        return None
    return found.group(1), int(found.group(2))


class Appender:
    """Appends whole JSON lines to OUTPUT; each is in the file when :meth:`write` returns, and
    flushed to disk by an ``fsync`` at most every :data:`FSYNC_EVERY_S` and when it closes.

    Args:
        path: the file; created if missing, locked against a second gpt2-batch writing it at the
            same time (which would repeat requests), its partial last line (if any) cut off.

    Raises:
        EdgeError: the file cannot be written, or another gpt2-batch writes it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._synced = time.monotonic()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EdgeError(f"Cannot write --output {path}: {exc.strerror or exc}.") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise EdgeError(
                f"Another gpt2-batch is writing --output {path}; wait for it to end, or give "
                "another --output."
            ) from None
        self._cut_partial_line()

    def _cut_partial_line(self) -> None:
        size = end = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            while end > 0:  # back from the end, a chunk at a time, to the last "\n"
                start = max(0, end - TAIL_CHUNK)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
        if end != size:
            os.ftruncate(self._fd, end)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line.

        Raises:
            EdgeError: the disk is full or the file cannot be written (nothing of the line stays).
        """
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one write; a short one goes on
                view = view[os.write(self._fd, view) :]
            if time.monotonic() - self._synced >= FSYNC_EVERY_S:
                self._sync()
        except BaseException as exc:  # also Ctrl-C between two writes: never half a line
            os.ftruncate(self._fd, before)
            if isinstance(exc, OSError):
                raise EdgeError(
                    f"Cannot write --output {self.path}: {exc.strerror or exc}; the lines "
                    "before this one are whole, run the same command again to go on."
                ) from None
            raise

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        try:
            self._sync()
        except OSError as exc:
            raise EdgeError(f"Cannot write --output {self.path}: {exc.strerror or exc}.") from None
        finally:
            os.close(self._fd)

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
