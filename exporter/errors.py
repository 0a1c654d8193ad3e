"""The exporter's one error type for mistakes a user can cause.

Only ``cli.py`` turns these into a message and an exit code; anything else is a bug and keeps its
traceback.
"""

from gpt2_edge.runtime.errors import EdgeError


class ExportError(EdgeError):
    """A problem the user can fix (bad model id, bad folder, output in the way), as one sentence."""
