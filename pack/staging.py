"""A pack is written in a hidden folder beside its output and renamed into place only when whole.

Every pack (a device's, a web page's) is written through :func:`staged`: on an error, Ctrl-C,
SIGTERM or SIGHUP the hidden folder is removed, and so are the folders made above the output for
it (``-o new/place/pack``), with the signal handlers still in place (a second signal is only
recorded, so it cannot stop the cleanup half done); a full disk or a folder that cannot be
written is one sentence.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gpt2_edge.runtime import (
    EdgeError,
    make_parents,
    remove_made,
    signals_as_interrupts,
    signals_ignored,
)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def staged(out: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Yield an empty hidden folder beside ``out`` and ``pending()`` (which raises for a signal
    whose exception was swallowed); rename the folder to ``out`` when the block ends.

    Raises:
        EdgeError: the pack cannot be written (a full disk, no permission), or ``out``
            appeared meanwhile; nothing is left then.
    """
    made: list[Path] = []
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    with signals_as_interrupts(*SIGNALS) as pending:
        try:
            make_parents(staging, made)
            staging.mkdir()
            yield staging, pending
            pending()  # no pack is renamed into place after a signal
            if out.exists() or out.is_symlink():
                raise EdgeError(f"{out} appeared while the pack was written; nothing was replaced.")
            with signals_ignored(*SIGNALS):  # milliseconds: a signal now comes too late
                os.rename(staging, out)
        except OSError as exc:  # a full disk, a folder that cannot be written
            _discard(staging, made)
            reason = exc.strerror or str(exc)
            raise EdgeError(f"The pack cannot be written to {out} ({reason}).") from None
        except BaseException:
            _discard(staging, made)
            raise


def discard_pack(folder: Path) -> None:
    """Remove a pack this run has just written (its path could not be printed, say), with no
    signal stopping it half done."""
    with signals_ignored(*SIGNALS):
        shutil.rmtree(folder, ignore_errors=True)


def _discard(staging: Path, made: list[Path]) -> None:
    with signals_ignored(*SIGNALS):
        shutil.rmtree(staging, ignore_errors=True)
        remove_made(made)
