"""Signals that end a process, turned into interrupts while something must be cleaned up.

A plain ``kill`` (SIGTERM) or a closed terminal (SIGHUP) ends a process at once by default,
leaving whatever it was writing half done; raised as :class:`.errors.Terminated` they run the
same cleanup as Ctrl-C. gpt2-export and gpt2-pack write through it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Terminated


@contextmanager
def signals_as_interrupts(*signums: int) -> Iterator[None]:
    """Raise :class:`.errors.Terminated` for each of ``signums`` while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
