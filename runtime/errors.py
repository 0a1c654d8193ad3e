"""The runtime's one error type for mistakes a user can cause.

The CLI prints these as a single sentence and exits non-zero; anything else is a bug and keeps
its traceback.
"""

import signal


class EdgeError(Exception):
    """A problem the user can fix (bad bundle, bad setting, bad input), stated as one sentence."""


class PromptTooLong(EdgeError):
    """A prompt longer than the context holds; ``what`` states the figures, and the sentence
    adds what a caller of the runtime can do. The HTTP server, which offers no truncation, says
    what its callers can do instead (``serve/protocol.py``)."""

    def __init__(self, what: str):
        super().__init__(f"{what}; shorten it or truncate it from the left.")
        self.what = what


class Terminated(KeyboardInterrupt):
    """A signal that ends the process (SIGTERM, SIGHUP) raised as an interrupt, so that every
    cleanup written for Ctrl-C runs for it too (:func:`.interrupts.signals_as_interrupts`); the
    command then exits 128 + the signal's number, as a process ended by the signal would."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum
