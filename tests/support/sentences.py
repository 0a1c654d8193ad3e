"""What a user error must look like from every command: one ``Error:`` sentence on stderr, the
right exit code, no traceback (``rich``'s boxed one included), and no numpy RuntimeWarning."""

from __future__ import annotations

import pytest
from typer.testing import Result

# numpy reports overflow and invalid values as RuntimeWarning; any of them fails a test so marked.
no_numpy_warnings = pytest.mark.filterwarnings("error::RuntimeWarning")


def assert_one_line(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said one ``Error:`` line holding ``fragments``."""
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    assert "Traceback" not in result.output and "╭" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    return message
