"""One line per pipeline step: a spinner while it runs, then a tick and its time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Steps:
    """Report steps on stderr with rich; silent unless ``enabled``; keeps step times."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._console is None:
            yield
            self.seconds[label] = time.perf_counter() - start
            return
        try:
            with self._console.status(f"{label}…"):
                yield
        except BaseException:
            self._console.print(f"[red]✗[/red] {label}")
            raise
        self.seconds[label] = elapsed = time.perf_counter() - start
        self._console.print(f"[green]✓[/green] {label} [dim]({elapsed:.1f} s)[/dim]")
