"""The runtime's one error type for mistakes a user can cause.

The CLI prints these as a single sentence and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class EdgeError(Exception):
    """A problem the user can fix (bad bundle, bad setting, bad input), stated as one sentence."""
