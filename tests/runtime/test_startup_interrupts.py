"""Ctrl-C at any moment of a command's start exits 130 with no traceback: while its imports run
(a C extension's init, onnxruntime importing numpy, would print one itself, so SIGINT is held
back until they are done), while typer builds the command from its signature, and while click
parses the command line or prints --help (click turns the interrupt into an Abort)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import typer
from gpt2_edge.runtime.cli.errors import EdgeCommand, run_app

HELD = textwrap.dedent(
    """
    import os, signal, sys
    from gpt2_edge.runtime.cli.startup import guarded_imports

    with guarded_imports():
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came while a C extension loads
        import onnxruntime  # initialises in C, importing numpy from there
        print("imports done", flush=True)
    print("not reached")
    """
)


def test_ctrl_c_during_the_imports_is_held_until_they_are_done() -> None:
    done = subprocess.run([sys.executable, "-c", HELD], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "imports done\n", "\n")


def test_ctrl_c_while_typer_builds_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()

    @app.command(cls=EdgeCommand)
    def command() -> None:
        pass

    def interrupted(typer_app: typer.Typer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(typer.main, "get_command", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_app(app, args=[])
    assert exit_info.value.code == 130


def test_ctrl_c_while_click_parses_is_130_not_aborted(capsys: pytest.CaptureFixture) -> None:
    app = typer.Typer()

    def interrupt(value: str) -> str:
        raise KeyboardInterrupt  # a callback stands for anything click runs while parsing

    @app.command(cls=EdgeCommand)
    def command(name: str = typer.Option("x", callback=interrupt)) -> None:
        pass

    with pytest.raises(SystemExit) as exit_info:
        run_app(app, args=["--name", "y"])
    assert exit_info.value.code == 130
    assert "Aborted" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["gpt2-generate", "gpt2-pack", "gpt2-eval"])
def test_a_command_interrupted_while_it_loads(command: str) -> None:
    """The whole command: SIGINT soon after it starts (its imports take longer than this)."""
    from shutil import which

    path = which(command)
    if path is None:
        pytest.skip(f"{command} is not installed")
    proc = subprocess.Popen(
        [path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    import time

    time.sleep(0.4)  # past Python's own start, inside the imports
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode in (130, -signal.SIGINT, 0), err  # 0: it had printed its help already
