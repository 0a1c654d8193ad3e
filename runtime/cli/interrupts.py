"""Signals that end a process, turned into interrupts while something must be cleaned up.

A plain ``kill`` (SIGTERM) or a closed terminal (SIGHUP) ends a process at once by default,
leaving whatever it was writing half done; raised as :class:`.errors.Terminated` they run the
same cleanup as Ctrl-C. gpt2-export and gpt2-pack write through it.

Python drops an exception raised inside a finalizer (``__del__``) or a weakref callback with only
a printed warning, so a signal that lands there would be lost and the work would go on: the
context manager also gives a ``pending()`` check that raises for a signal that came, to call
before anything that must not happen after one (renaming a finished folder into place), and the
block's end raises for it too. Only the first signal raises: a second one (two kills 5 ms apart,
Ctrl-C pressed twice) would otherwise land in the first one's cleanup, on its way there or
inside it, and stop it half done; later ones are only recorded. Run the cleanup inside the block,
so that no signal finds the default handler back before it ends; :func:`signals_ignored` shields
the cleanup itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import Terminated


@contextmanager
def signals_as_interrupts(*signums: int) -> Iterator[Callable[[], None]]:
    """Raise :class:`.errors.Terminated` (KeyboardInterrupt for SIGINT) for the first of
    ``signums`` that comes while the block runs; yields ``pending()``, which raises it again
    for a signal whose exception was swallowed."""
    received: list[int] = []

    def pending() -> None:
        if received:
            raise Terminated(received[0])

    if threading.current_thread() is not threading.main_thread():
        yield pending  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:  # the first one interrupts; later ones must not stop its cleanup
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield pending
        pending()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_ignored(*signums: int) -> Iterator[None]:
    """Ignore ``signums`` while the block runs (a cleanup that must not stop half done)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
