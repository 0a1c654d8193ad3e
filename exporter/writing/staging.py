"""Build a bundle in a hidden folder beside the output and rename it into place only when complete.

A bundle on disk is either complete and verified or absent: an error, Ctrl-C or SIGTERM removes the
partial folder (and the folders made above the output for it), and even SIGKILL leaves only a
hidden ``.<name>.partial-<pid>-*`` folder, which the next export into the same place removes. The
export marks the folders it makes (:data:`MARKER`) and removes no folder without that mark: a
user's folder that happens to be named like one is never deleted.

``--force`` replaces only what an export made: an empty folder, or a gpt2-edge bundle that holds
nothing but bundle files. Anything else (someone's files, the working directory, the folder that
holds the checkpoint, a symbolic link) is refused before any work, and checked again just before
the old bundle is swapped out, since the export can take minutes.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from gpt2_edge.runtime.cli.folders import make_parents, remove_made
from gpt2_edge.runtime.cli.interrupts import signals_as_interrupts, signals_ignored
from gpt2_edge.runtime.contract.files import read_json
from gpt2_edge.runtime.contract.manifest import FORMAT_NAME, MANIFEST, MODEL_FILE, TOKENIZER_FILE
from gpt2_edge.runtime.errors import EdgeError

from ..disk_errors import absolute, os_error_sentence, write_error_sentence
from ..errors import ExportError

# What a bundle folder may hold: bundle files, and what an interrupted export leaves inside it.
BUNDLE_FILES = frozenset(
    {MODEL_FILE, MODEL_FILE + ".data", TOKENIZER_FILE, MANIFEST, "genai_config.json"}
    | {"tokenizer_config.json"}  # onnxruntime-genai's tokenizer reads it (genai_config.py)
)
STAGING_LEFTOVERS = frozenset({".work"})
# The file an export writes into each folder it makes (the hidden staging folder, its .work):
# only a folder holding it is ever removed as an export's leftover.
MARKER = ".gpt2-export-made-this"
MARKER_TEXT = "gpt2-export made this folder and removes it when the export ends.\n"
# What ends an export early; the cleanup must survive a second one of any.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMED_AT_MOST = 5  # unexpected files named in a refusal


def check_output(out: Path, force: bool, checkpoint: Path | None = None) -> None:
    """Refuse, before any work, an output the export may not create or replace.

    Args:
        out: the output folder as the user gave it.
        force: whether ``--force`` was passed (it replaces only bundles and empty folders).
        checkpoint: the source checkpoint folder, when known; it may never be replaced.

    Raises:
        ExportError: a sentence naming what is in the way; nothing was touched.
    """
    try:
        _check_output(out, force, checkpoint)
    except OSError as exc:  # a parent without permission, a working folder that was deleted
        raise ExportError(
            os_error_sentence(exc, out) or f"Cannot check the output {out} ({exc.strerror})."
        ) from None


def _check_output(out: Path, force: bool, checkpoint: Path | None) -> None:
    if out.is_symlink():
        raise ExportError(
            f"{out} is a symbolic link (to {os.readlink(out)}); gpt2-export neither follows nor "
            "replaces links, so pass the real folder or choose another --output."
        )
    real = out.resolve()
    if real.parent == real:
        raise ExportError(f"The output {out} is the root folder; choose another --output.")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise ExportError(
            f"The output {out} is the current folder or one that holds it; choose another --output."
        )
    if checkpoint is not None:
        source = checkpoint.resolve()
        if real == source or real in source.parents:
            what = "the checkpoint folder itself" if real == source else "a folder that holds it"
            raise ExportError(f"The output {out} is {what}; choose another --output.")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(
            f"{out} exists and is a file, not a bundle folder; choose another --output."
        )
    check_replaceable(out)  # first: --force is worth suggesting only when it would work
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it or choose --output.")


def check_replaceable(out: Path) -> None:
    """Refuse unless the existing folder ``out`` is empty or a bundle with only bundle files."""
    try:
        names = sorted(os.listdir(out))
    except OSError as exc:
        raise ExportError(f"{out} cannot be read ({exc.strerror}); remove it first.") from None
    if not names:
        return
    if not _is_bundle_manifest(out / MANIFEST):
        raise ExportError(
            f"{out} exists and is not a gpt2-edge bundle (it has no {MANIFEST} of format "
            f"{FORMAT_NAME}), so gpt2-export will not replace it, even with --force; move its "
            "files away or choose another --output."
        )
    unexpected = [name for name in names if not _bundle_entry(out / name)]
    if unexpected:
        shown = ", ".join(unexpected[:NAMED_AT_MOST])
        more = len(unexpected) - NAMED_AT_MOST
        shown += f" and {more} more" if more > 0 else ""
        raise ExportError(
            f"{out} is a bundle but also holds {shown}, so gpt2-export will not replace it, "
            "even with --force; move those files away or choose another --output."
        )


def _is_bundle_manifest(path: Path) -> bool:
    try:  # bounded, regular files only: a FIFO or a link to /dev/zero there is no manifest
        data = read_json(path)
    except (OSError, EdgeError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _bundle_entry(path: Path) -> bool:
    """A bundle file (a file or a link, never a folder) or an export's leftover folder (one that
    holds the export's mark: a user's files put in a folder of that name are theirs)."""
    if path.name in STAGING_LEFTOVERS:
        return is_marked(path)
    return path.name in BUNDLE_FILES and (path.is_symlink() or not path.is_dir())


@contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``out``, marked as the export's; on success rename it
    to ``out``.

    Any step's failure that a full disk or a permission caused becomes one :class:`ExportError`
    sentence (see :func:`write_error_sentence`). The hidden folder, and the folders above ``out``
    that were made for it, are removed in every other case, with the signal handlers still in
    place: a second signal is only recorded (:func:`signals_as_interrupts`), so it can stop
    neither the way to the cleanup nor the cleanup.
    """
    target = absolute(out)
    with signals_as_interrupts(*SIGNALS) as pending:
        made: list[Path] = []
        # Named before it exists, so that a signal cannot come between making it and knowing it.
        tmp = target.parent / f"{_partial_prefix(target)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _make_partial(tmp, target, out, made)
            yield tmp
            pending()  # a signal whose exception a finalizer swallowed stops it here
            with signals_ignored(*SIGNALS):  # milliseconds: a signal now comes too late
                unmark(tmp)
                _move_into_place(tmp, target, force)
        except ExportError:
            _discard(tmp, made)
            raise
        except Exception as exc:
            sentence = write_error_sentence(exc, out)  # before the discard frees the space again
            _discard(tmp, made)
            if sentence is None:
                raise
            raise ExportError(sentence) from None
        except BaseException:
            _discard(tmp, made)
            raise


def _discard(tmp: Path, made: list[Path]) -> None:
    """Remove the partial folder and the parents made for it; no signal stops this half done."""
    with signals_ignored(*SIGNALS):
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made(made)


def mark(folder: Path) -> None:
    """Mark ``folder`` as one the export made, so that a later export may remove it."""
    (folder / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def unmark(folder: Path) -> None:
    """Remove the mark (a finished bundle holds bundle files only)."""
    (folder / MARKER).unlink(missing_ok=True)


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` is a real folder holding the export's mark as a regular file."""
    try:
        return (
            not folder.is_symlink()
            and folder.is_dir()
            and stat.S_ISREG(os.lstat(folder / MARKER).st_mode)
        )
    except OSError:
        return False


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _make_partial(tmp: Path, target: Path, out: Path, made: list[Path]) -> None:
    try:
        make_parents(target, made)
        _remove_abandoned(target)
        tmp.mkdir(mode=0o777)  # as the umask allows: the bundle should not be private
        mark(tmp)
    except OSError as exc:
        sentence = os_error_sentence(exc, out)
        if sentence is None:
            raise
        raise ExportError(sentence) from None


def _remove_abandoned(out: Path) -> None:
    """Remove partial folders of exports whose process is gone (killed with SIGKILL): only
    those that hold the export's mark, so that a user's folder of the same name stays."""
    prefix = _partial_prefix(out)
    for path in out.parent.glob(glob.escape(prefix) + "*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and is_marked(path):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    # The export took a while: whatever is at ``out`` now must still be ours to replace.
    if out.is_symlink() or not out.is_dir():
        what = "changed" if force else "appeared"
        raise ExportError(f"{out} {what} during the export and is not a bundle folder.")
    check_replaceable(out)
    if not force:  # created by someone else while we worked, and --force could replace it
        raise ExportError(f"{out} appeared during the export; pass --force to replace it.")
    # Two renames keep the window without a bundle at ``out`` as short as possible.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.rename(out, old / out.name)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old / out.name, out)  # put the old bundle back
            raise
    finally:
        with suppress(OSError):
            old.rmdir()  # only when the old bundle is back at ``out``
    shutil.rmtree(old, ignore_errors=True)
