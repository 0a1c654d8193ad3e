"""``gpt2-batch`` as a command: each user mistake is one sentence and exit code 1 before any work
(no OUTPUT is created); ``kill -9`` at any moment leaves OUTPUT whole, and the next run repeats
nothing and finishes the rest; Ctrl-C exits 130 the same way, and stops the worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")  # the serve extra

from batch_support import (  # noqa: E402
    batch_command,
    read_output,
    request,
    run_batch_process,
    write_lines,
)
from gpt2_edge.batch.cli import app  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

runner = CliRunner()
LONG_JOB = 80  # requests of 60 tokens: several seconds at two rows a step
WAIT_S = 60.0


def mistakes(tmp: Path, bundle: Path) -> list[tuple[list[str], str]]:
    good = write_lines(tmp / "good.jsonl", [request(1)])
    duplicate = write_lines(tmp / "dup.jsonl", [request(1, "x"), request(2, "x")])
    not_jsonl = tmp / "data.json"
    not_jsonl.write_text(json.dumps([request(1)], indent=2))
    binary = tmp / "model.bin"
    binary.write_bytes(bytes(range(256)))
    (tmp / "empty-folder").mkdir()
    out = str(tmp / "out.jsonl")
    m = ["--model", str(bundle)]
    return [
        ([str(tmp / "missing.jsonl"), "-o", out, *m], "Cannot read INPUT"),
        ([str(tmp), "-o", out, *m], "is a folder; give a batch file"),
        ([str(not_jsonl), "-o", out, *m], "is not JSON lines"),
        ([str(binary), "-o", out, *m], "is not UTF-8 text"),
        ([str(duplicate), "-o", out, *m], 'custom_id "x" is on lines 1 and 2'),
        ([str(good), "-o", str(tmp / "no" / "out.jsonl"), *m], "The folder of --output"),
        ([str(good), "-o", str(tmp), *m], "is a folder; give a file name"),
        ([str(good), "-o", out, "--model", str(tmp / "empty-folder")], "empty-folder"),
        ([str(good), "-o", out, "--model", str(tmp / "nowhere")], "nowhere"),
        ([str(good), "-o", out, *m, "--workers", "0"], "--workers must be from 1 to 256"),
        ([str(good), "-o", out, *m, "--max-batch", "999"], "--max-batch must be from 1 to"),
        ([str(good), "-o", out, *m, "--threads", "0"], "threads must be from 1 to"),
        (["", "-o", out, *m], "INPUT is empty"),
    ]


def test_each_mistake_is_one_sentence_before_any_work(tmp_path: Path, bundle: Path) -> None:
    for args, expected in mistakes(tmp_path, bundle):
        result = runner.invoke(app, args)
        lines = result.stderr.splitlines()
        assert result.exit_code == 1, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert expected in lines[0], (args, lines[0])
        assert not (tmp_path / "out.jsonl").exists(), args


def test_version_and_python_m(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--version"], prog_name="gpt2-batch")
    assert result.exit_code == 0 and result.stdout.startswith("gpt2-batch ")
    done = run_batch_process("--help")
    assert done.returncode == 0 and "OpenAI" in done.stdout


def long_job(tmp: Path) -> Path:
    lines = []
    for i in range(LONG_JOB):
        body = {"prompt": f"The city {i} was", "max_tokens": 60, "temperature": 0}
        body["ignore_eos"] = True
        lines.append(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions", "body": body}
        )
    return write_lines(tmp / "in.jsonl", lines + ["a line that is not JSON"])


def start(job: Path, out: Path, bundle: Path, *extra: str) -> subprocess.Popen:
    args = [str(job), "-o", str(out), "--model", str(bundle), "--threads", "1", *extra]
    return subprocess.Popen(batch_command(*args), stderr=subprocess.PIPE, text=True)


def wait_for_lines(out: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not out.exists() or out.read_bytes().count(b"\n") < count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no results came"
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]:
            return True
        time.sleep(0.05)
    return False


def end_all(pids: list[int]) -> None:
    """Kill what is left of the test's own worker processes (after a failed check): those still
    running multiprocessing's spawned worker, so that a pid used again is left alone."""
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in command and not _zombie(pid):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return True


def check_resumed(job: Path, out: Path, bundle: Path, before: bytes) -> None:
    """Every line left is whole; the next run keeps them and adds each missing request once."""
    assert before.endswith(b"\n")
    records = [json.loads(line) for line in before.decode().splitlines()]
    assert 3 <= len(records) < LONG_JOB + 1  # stopped mid-run
    done = run_batch_process(str(job), "-o", str(out), "--model", str(bundle), "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert f"({len(records)} done before)" in done.stderr
    assert out.read_bytes().startswith(before)  # nothing done is rewritten
    final = read_output(out)
    ids = [r["custom_id"] or r["id"] for r in final]
    assert len(ids) == len(set(ids)) == LONG_JOB + 1  # every request exactly once
    assert sum(r["response"] is not None for r in final) == LONG_JOB


def test_kill_9_mid_run_repeats_nothing_and_leaves_no_worker(tmp_path: Path, bundle: Path) -> None:
    job, out = long_job(tmp_path), tmp_path / "out.jsonl"
    proc = start(job, out, bundle, "--workers", "2", "--max-batch", "2")
    workers: list[int] = []
    try:
        wait_for_lines(out, 3, proc)
        workers = children(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's helper)
        time.sleep(0.3)  # mid-run, at no particular moment
        proc.kill()
        proc.wait(timeout=WAIT_S)
        assert gone(workers), "a worker outlived its driver"
    finally:
        proc.kill()
        proc.wait()
        end_all(workers)
    check_resumed(job, out, bundle, out.read_bytes())


def test_ctrl_c_exits_130_with_output_whole(tmp_path: Path, bundle: Path) -> None:
    job, out = long_job(tmp_path), tmp_path / "out.jsonl"
    proc = start(job, out, bundle, "--max-batch", "2")
    try:
        wait_for_lines(out, 3, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_S) == 130
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    assert "Interrupted; OUTPUT holds every finished request" in stderr
    assert "Traceback" not in stderr
    check_resumed(job, out, bundle, out.read_bytes())


def test_sigterm_stops_the_workers_and_exits_143(tmp_path: Path, bundle: Path) -> None:
    job, out = long_job(tmp_path), tmp_path / "out.jsonl"
    proc = start(job, out, bundle, "--workers", "2", "--max-batch", "2")
    workers: list[int] = []
    try:
        wait_for_lines(out, 3, proc)
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 143
        assert gone(workers)
    finally:
        proc.kill()
        proc.wait()
        end_all(workers)
    check_resumed(job, out, bundle, out.read_bytes())
