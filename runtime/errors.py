"""The runtime's one error type for mistakes a user can cause.

The CLI prints these as a single sentence and exits non-zero; anything else is a bug and keeps
its traceback.
"""

import signal


class EdgeError(Exception):
    """A problem the user can fix (bad bundle, bad setting, bad input), stated as one sentence.

    Args:
        message: the sentence.
        field: the setting or argument it is about, by its runtime name (None: not one field),
            so that a caller with its own names for fields (the HTTP server) can point at it
            without reading the sentence.
    """

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


class SettingError(EdgeError):
    """A setting's value that is not what the setting accepts: the sentence is "<field> must be
    <rule>, got <shown>.", and its parts are kept so that a caller can say the same with its own
    name for the field and its own way of showing the value."""

    def __init__(self, field: str, rule: str, value: object, shown: str):
        super().__init__(f"{field} must be {rule}, got {shown}.", field)
        self.rule, self.value = rule, value


class PromptTooLong(EdgeError):
    """A prompt longer than the context holds; ``what`` states the figures, and the sentence
    adds what a caller of the runtime can do. The HTTP server, which offers no truncation, says
    what its callers can do instead (``serve/protocol.py``)."""

    def __init__(self, what: str, field: str = "prompt"):
        super().__init__(f"{what}; shorten it or truncate it from the left.", field)
        self.what = what


class Terminated(KeyboardInterrupt):
    """A signal that ends the process (SIGTERM, SIGHUP) raised as an interrupt, so that every
    cleanup written for Ctrl-C runs for it too (:func:`.interrupts.signals_as_interrupts`); the
    command then exits 128 + the signal's number, as a process ended by the signal would."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum
