"""Turning one row's generated tokens into text pieces: incremental decode plus stop strings.

A stop string can arrive split over several tokens (``"\\n\\n"`` as two ``"\\n"``), so text that
could be the start of a stop string is held back until it either completes one (generation stops
and the returned text ends before it) or cannot any more (the text is released).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..contract.tokenizer import TextStream, Tokenizer


class StopFilter:
    """Holds back text that may be the beginning of a stop string.

    Args:
        stops: the stop strings; none may be empty. With no stop strings, text passes through.

    Attributes:
        stopped: True once a stop string has appeared; later input is ignored.
        text: all text released so far, which never contains a stop string.
    """

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stops)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._buffer = ""  # text received but not yet released
        self.text = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add decoded text; return the part that can no longer be part of a stop string."""
        if self.stopped or not piece:
            return ""
        self._buffer += piece
        # A match can only start inside the buffer: released text was checked when it was held.
        hits = [i for i in (self._buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(min(hits))
        return self._release(len(self._buffer) - self._held_back())

    def flush(self) -> str:
        """Release what is held back (generation ended for another reason)."""
        return "" if self.stopped else self._release(len(self._buffer))

    def _held_back(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of some stop string."""
        buffer = self._buffer
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0

    def _release(self, upto: int) -> str:
        out, self._buffer = self._buffer[:upto], self._buffer[upto:]
        self.text += out
        return out


class RowText:
    """The text side of one row: detokenize each token, then apply the stop strings (if any).

    Args:
        tokenizer: the bundle's tokenizer.
        stops: stop strings; empty for none.
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]):
        self._decoder: TextStream = tokenizer.stream()
        self._stops = StopFilter(stops)

    @property
    def stopped(self) -> bool:
        """True once a stop string has been seen."""
        return self._stops.stopped

    @property
    def text(self) -> str:
        """All text released so far."""
        return self._stops.text

    def push(self, token: int) -> str:
        """Add one generated token; return the text it releases (may be "")."""
        return self._stops.push(self._decoder.push(token))

    def finish(self) -> str:
        """Release the rest: incomplete characters (as U+FFFD) and held-back text."""
        if self.stopped:
            return ""
        piece = self._stops.push(self._decoder.finish())
        return piece + self._stops.flush()
