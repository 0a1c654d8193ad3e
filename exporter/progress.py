"""What the exporter prints while it works: one line per step, and sizes in the unit that fits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps the number at 1 or more.

    ``human_size(6_000)`` is ``"5.9 KiB"`` (not ``"0.0 MiB"``), ``human_size(20 * 2**20)`` is
    ``"20.0 MiB"`` (not ``"0.0 GiB"``); below 1 KiB the bytes are counted exactly.
    """
    if abs(size) < 1024:
        return f"{int(size)} B"
    for unit in _UNITS:
        size /= 1024
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:,.1f} {unit}"
    raise AssertionError("unreachable")  # the loop always returns on its last unit


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
