"""Output the commands cannot write, and the command line's rough edges, in real subprocesses.

A full disk behind stdout (/dev/full) is one ``Error: ...`` line and exit 1 in every command; a
closed pipe (``| head``) stays a silent exit 1; an OSError that is not stdout's keeps its
traceback. SIGTERM ends ``gpt2-generate`` by the signal (the shell's 143), and a prompt starting
with '-' gets a hint on how to pass it (``runtime/cli/errors.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fused_bundle import build_fused_bundle
from support.tiny_models import HAS_EXPORT_EXTRA

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
NO_SPACE = "Error: Cannot write to standard output (No space left on device).\n"
# Each command as a module, so the tests run the installed code without its console script.
COMMANDS = {
    "gpt2-generate": ["-m", "gpt2_edge.runtime"],
    "gpt2-eval": ["-m", "gpt2_edge.runtime.cli.evaluate"],
    "gpt2-export": ["-m", "gpt2_edge.exporter"],
    "gpt2-pack": ["-m", "gpt2_edge.pack"],
    "gpt2-serve": ["-m", "gpt2_edge.serve"],
}
TIMEOUT_S = 120
# stdout buffered as a user's is (this environment may set PYTHONUNBUFFERED), so that output
# still buffered when a write fails is exercised too.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
PROG = "python -m gpt2_edge.runtime"  # click's name for gpt2-generate run as a module


def run(command: str, *args: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *PROGRAMS[command], *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=TIMEOUT_S,
        env=ENV,
    )


def run_to_full(command: str, *args: str) -> subprocess.CompletedProcess:
    with FULL.open("w") as full:
        return run(command, *args, stdout=full)


def run_to_closed_pipe(command: str, *args: str) -> subprocess.CompletedProcess:
    """``command | head -c 0``: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(command, *args, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("output-errors") / "tiny"
    return build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")


def generate_args(bundle: Path, *extra: str) -> list[str]:
    return ["-m", str(bundle), "--threads", "1", "--max-new-tokens", "4", *extra, "hi"]


@needs_dev_full
@pytest.mark.parametrize("json_output", [False, True], ids=["stream", "json"])
def test_generate_to_a_full_disk_is_one_line(bundle: Path, json_output: bool) -> None:
    extra = ["--json"] if json_output else []
    proc = run_to_full("gpt2-generate", *generate_args(bundle, *extra))
    assert (proc.returncode, proc.stderr) == (1, NO_SPACE)  # no traceback, no "Exception ignored"


@needs_dev_full
@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_eval_to_a_full_disk_is_one_line(bundle: Path, tmp_path: Path, json_output: bool) -> None:
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n", encoding="utf-8")
    args = ["--model", str(bundle), "--text", str(text), "--threads", "1"]
    proc = run_to_full("gpt2-eval", *args, *(["--json"] if json_output else []))
    assert (proc.returncode, proc.stderr) == (1, NO_SPACE)


@needs_dev_full
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_to_a_full_disk_are_one_line(command: str, flag: str) -> None:
    if command == "gpt2-export" and not HAS_EXPORT_EXTRA:
        pytest.skip("gpt2-export needs the export extra: pip install '.[export]'")
    proc = run_to_full(command, flag)
    assert (proc.returncode, proc.stderr) == (1, NO_SPACE)


@pytest.mark.parametrize("json_output", [False, True], ids=["stream", "json"])
def test_generate_to_a_closed_pipe_exits_quietly(bundle: Path, json_output: bool) -> None:
    extra = ["--json"] if json_output else []
    proc = run_to_closed_pipe("gpt2-generate", *generate_args(bundle, *extra))
    assert (proc.returncode, proc.stderr) == (1, "")


def test_help_to_a_closed_pipe_exits_quietly() -> None:
    proc = run_to_closed_pipe("gpt2-generate", "--help")
    assert (proc.returncode, proc.stderr) == (1, "")


# A one-command program on EdgeCommand, around the body of its command.
PROGRAM = """
import errno, typer
from gpt2_edge.runtime.cli.errors import EdgeCommand
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
@app.command(cls=EdgeCommand)
def command() -> None:
{body}
app()
"""
# A command whose output stays in stdout's buffer until the command returns.
BUFFERED = PROGRAM.format(body='    print("hello")')
PROGRAMS = {**COMMANDS, "buffered": ["-c", BUFFERED]}


@needs_dev_full
def test_buffered_output_to_a_full_disk_fails_once() -> None:
    """The last flush fails inside the command, not again at exit ("Exception ignored")."""
    proc = run_to_full("buffered")
    assert (proc.returncode, proc.stderr) == (1, NO_SPACE)


def test_buffered_output_to_a_closed_pipe_exits_quietly() -> None:
    proc = run_to_closed_pipe("buffered")
    assert (proc.returncode, proc.stderr) == (1, "")


# A command that prints, then fails to write a file with the very errno a full stdout has.
OTHER_OSERROR = PROGRAM.format(
    body='    print("writing")\n'
    '    raise OSError(errno.ENOSPC, "No space left on device", "out.bin")'
)


def test_an_oserror_not_of_stdout_keeps_its_traceback() -> None:
    """Only stdout's own write errors become the one line; a bug elsewhere stays visible."""
    proc = subprocess.run(
        [sys.executable, "-c", OTHER_OSERROR],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=ENV,
    )
    assert proc.stdout == "writing\n"
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "out.bin" in proc.stderr
    assert "standard output" not in proc.stderr


def test_sigterm_ends_generate_by_the_signal() -> None:
    """``kill`` ends gpt2-generate as the signal does (the shell shows 143), not as Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, *COMMANDS["gpt2-generate"], "-"],  # waits for its prompt on stdin
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    time.sleep(1)  # loaded or not, the signal's effect must be the same
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == -signal.SIGTERM, stderr


def test_a_prompt_starting_with_a_dash_gets_a_hint() -> None:
    proc = run("gpt2-generate", "-hello")
    assert proc.returncode == 2
    hint = f"(a prompt that starts with '-' goes after '--': {PROG} -- -hello)"
    assert proc.stderr == f"Error: No such option: -h {hint}. See '{PROG} --help'.\n"


def test_a_spaced_prompt_starting_with_dashes_is_quoted_in_the_hint() -> None:
    proc = run("gpt2-generate", "--max-new-tokens", "3", "--hello there")
    assert proc.returncode == 2
    assert f"{PROG} -- '--hello there')" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_near_miss_of_a_flag_gets_no_prompt_hint() -> None:
    proc = run("gpt2-generate", "--top_p", "0.5", "hi")
    assert proc.returncode == 2
    assert "--top-p" in proc.stderr and "prompt" not in proc.stderr


def test_a_command_without_free_text_gets_no_prompt_hint() -> None:
    proc = run("gpt2-eval", "-hello")
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "Error: No such option: -h. See 'python -m gpt2_edge.runtime.cli.evaluate --help'.\n"
    )
