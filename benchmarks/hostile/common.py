"""What every case of the hostile sweep shares: the fixtures it runs against, running a command,
and the verdict on one outcome (a clean error, accepted correctly, or a defect and why).

A defect is a traceback, a hang (the case's timeout), a wrong exit code, more than one line of
error, a warning printed, something half-written or deleted that should not be, or a blocked
event loop (the HTTP cases time /health alongside).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Lines a command prints on stderr besides its one error sentence: progress steps, notes,
# the server's start line and its per-request log.
_PROGRESS = re.compile(
    r"^(✓|✗|…|Checking |Building |Downloading |Copying |Wrote |Note: |gpt2-serve: |> |"
    r"Using |INFO|\d{4}-\d\d-\d\d|\s*$)"
)
_BAD = ("Traceback", "Exception ignored", "Warning:", "MemoryError", "Fatal Python error")


@dataclass
class Fixtures:
    """What the cases run against, made once by :func:`..hostile_sweep.setup`."""

    work: Path  # a scratch folder; each case gets its own below it
    bundle: Path  # a small fused bundle with the real GPT-2 tokenizer
    checkpoint: Path  # a tiny transformers GPT-2 checkpoint (for gpt2-export)
    server: Any = None  # the running gpt2-serve (http cases)
    generator: Any = None  # the bundle loaded in this process (Python API cases)
    counter: list[int] = field(default_factory=lambda: [0])

    def scratch(self, name: str) -> Path:
        self.counter[0] += 1
        folder = self.work / f"{self.counter[0]:04d}-{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:40]}"
        folder.mkdir(parents=True)
        return folder


@dataclass
class Outcome:
    """How one case ended: ``verdict`` is "clean error", "accepted" or "defect"."""

    verdict: str
    detail: str = ""


@dataclass
class Case:
    surface: str
    name: str
    run: Callable[[Fixtures], Outcome]
    slow: bool = False  # a real export or a signal timing: run in the serial lane


@dataclass
class Ran:
    code: int | None  # None: it hung and was killed
    stdout: str
    stderr: str
    seconds: float


def run(
    command: list[str],
    *,
    stdin: Any = subprocess.DEVNULL,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    stdout: Any = subprocess.PIPE,
    preexec: Callable[[], None] | None = None,
) -> Ran:
    """Run a command (a console script of this venv by name), capturing its output."""
    if not os.path.isabs(command[0]) and (BIN / command[0]).exists():
        command = [str(BIN / command[0]), *command[1:]]
    started = time.perf_counter()
    merged = {**os.environ, "COLUMNS": "200", **(env or {})}
    try:
        done = subprocess.run(
            command, stdin=None if input is not None else stdin, input=input, cwd=cwd,
            env=merged, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
            preexec_fn=preexec,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        return Ran(None, _text(exc.stdout), _text(exc.stderr), time.perf_counter() - started)
    seconds = time.perf_counter() - started
    return Ran(done.returncode, _text(done.stdout), _text(done.stderr), seconds)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def judge_error(ran: Ran, codes: tuple[int, ...] = (1,), words: str = "") -> Outcome:
    """The verdict on a run that must end in one ``Error:`` sentence with one of ``codes``."""
    problem = _problem(ran)
    if problem:
        return Outcome("defect", problem)
    if ran.code not in codes:
        return Outcome("defect", f"exit {ran.code}, wanted {codes}: {_tail(ran)}")
    errors = [line for line in ran.stderr.splitlines() if not _PROGRESS.match(line)]
    if len(errors) != 1 or not errors[0].startswith("Error: "):
        return Outcome("defect", f"{len(errors)} error lines: {errors[:3]}")
    if words and words.lower() not in errors[0].lower():
        return Outcome("defect", f"sentence lacks {words!r}: {errors[0]}")
    return Outcome("clean error", errors[0][:160])


def judge_ok(ran: Ran, check: Callable[[Ran], str | None] | None = None) -> Outcome:
    """The verdict on a run that must succeed (exit 0); ``check`` returns a problem or None."""
    problem = _problem(ran)
    if problem:
        return Outcome("defect", problem)
    if ran.code != 0:
        return Outcome("defect", f"exit {ran.code}: {_tail(ran)}")
    problem = check(ran) if check else None
    return Outcome("defect", problem) if problem else Outcome("accepted", ran.stdout[:80])


def judge_interrupted(ran: Ran, codes: tuple[int, ...], leftovers: list[Path]) -> Outcome:
    """A run ended by a signal: one of ``codes`` (a negative one: killed by the signal after it
    finished its work), no traceback, and nothing left behind."""
    problem = _problem(ran)
    if problem:
        return Outcome("defect", problem)
    if ran.code not in codes:
        return Outcome("defect", f"exit {ran.code}, wanted {codes}: {_tail(ran)}")
    if leftovers:
        return Outcome("defect", f"left behind: {[str(p) for p in leftovers][:3]}")
    return Outcome("clean error", f"exit {ran.code}")


def _problem(ran: Ran) -> str | None:
    if ran.code is None:
        return f"hung ({ran.seconds:.0f} s): {_tail(ran)}"
    bad = next((word for word in _BAD if word in ran.stderr or word in ran.stdout), None)
    return f"{bad}: {_tail(ran)}" if bad else None


def _tail(ran: Ran) -> str:
    return " | ".join(ran.stderr.strip().splitlines()[-3:])[:300]


def expect(condition: bool, verdict: str, detail: str) -> Outcome:
    """``verdict`` when ``condition`` holds, else a defect described by ``detail``."""
    return Outcome(verdict, "") if condition else Outcome("defect", detail)
