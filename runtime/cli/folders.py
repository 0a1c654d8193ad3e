"""Folders a command makes for its output, and only those removed when it fails.

``gpt2-export -o a/b/bundle`` and ``gpt2-pack -o a/b/pack`` create ``a/b`` when it is missing; an
error or Ctrl-C must leave the disk as it was, so the folders made are remembered (each before
it is created, so that a signal cannot come between making one and remembering it) and removed
again if they are still empty. A folder that was there before is never touched.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def make_parents(path: Path, made: list[Path]) -> None:
    """Create the missing folders above ``path``, outermost first, appending each to ``made``.

    Raises:
        OSError: one cannot be created (``made`` holds those that were).
    """
    missing = []
    for parent in Path(path).absolute().parents:
        if parent.is_dir():
            break
        if parent.exists():  # a file where a folder is needed
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
        missing.append(parent)
    for folder in reversed(missing):
        made.append(folder)
        try:
            folder.mkdir()
        except FileExistsError:  # made by someone else meanwhile: theirs, not ours
            made.remove(folder)
            if not folder.is_dir():
                raise


def remove_made(made: list[Path]) -> None:
    """Remove the folders :func:`make_parents` made, innermost first, where they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty (someone put something there), or gone
            return
    made.clear()
