"""Progress on stderr while a batch runs, and the counts at the end.

On a terminal: a bar with requests done, requests/s and tokens/s, the time taken and an ETA
(rich, which typer already brings). Elsewhere (a log file, CI): one line every
:data:`REPORT_EVERY_S` seconds, so that a log shows the pace without a line per request.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

REPORT_EVERY_S = 10.0


@dataclass
class Counts:
    """What a run did.

    Attributes:
        total: requests in INPUT.
        done_before: requests OUTPUT held already when the run began.
        succeeded: requests answered with status 200 in this run.
        failed: requests answered with an error, and lines that could not run, in this run.
        tokens: tokens generated in this run.
    """

    total: int
    done_before: int = 0
    succeeded: int = 0
    failed: int = 0
    tokens: int = 0

    @property
    def finished(self) -> int:
        return self.done_before + self.succeeded + self.failed


class Progress:
    """Shows a run's progress on ``stream`` while the block runs.

    Args:
        counts: the run's counts, which :meth:`add` updates.
        stream: where to write (default stderr).
        live: draw a bar (default: when ``stream`` is a terminal).
    """

    def __init__(self, counts: Counts, stream: IO[str] | None = None, live: bool | None = None):
        self.counts = counts
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self._reported = self.started
        self._bar: Bar | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        self.started = self._reported = time.monotonic()
        if self.live:
            self._start_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def add(self, ok: bool, tokens: int = 0) -> None:
        """Count one finished request."""
        c = self.counts
        c.succeeded += ok
        c.failed += not ok
        c.tokens += tokens
        now = time.monotonic()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=c.finished, rate=self.rates(now))
        elif now - self._reported >= REPORT_EVERY_S:
            self._reported = now
            self.stream.write(f"gpt2-batch: {self.line(now)}\n")
            self.stream.flush()

    def rates(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        c = self.counts
        run = c.succeeded + c.failed
        return f"{run / seconds:.1f} requests/s, {c.tokens / seconds:.0f} tokens/s"

    def line(self, now: float) -> str:
        """``done/total (failed), rates, time left`` for the log."""
        c = self.counts
        run, left = c.succeeded + c.failed, c.total - c.finished
        eta = left * (now - self.started) / run if run else None
        shown = f", about {_duration(eta)} left" if eta is not None and left else ""
        return f"{c.finished}/{c.total} done ({c.failed} failed), {self.rates(now)}{shown}"

    def summary(self) -> str:
        """The counts at the end of a run."""
        c, seconds = self.counts, time.monotonic() - self.started
        before = f"; {c.done_before} were done before this run" if c.done_before else ""
        return (
            f"gpt2-batch: {c.finished}/{c.total} requests done: {c.succeeded} succeeded, "
            f"{c.failed} failed in this run{before}; {c.tokens:,} tokens in {_duration(seconds)} "
            f"({self.rates(time.monotonic())})."
        )

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("gpt2-batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._task = self._bar.add_task(
            "batch", total=self.counts.total, completed=self.counts.finished, rate=""
        )
        self._bar.start()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
