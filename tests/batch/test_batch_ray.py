"""``gpt2-batch --ray``: on a Ray cluster that the test starts on 127.0.0.1 only (with a token of
its own), two actors give exactly the results of a run on this machine; the bundle reaches each
actor through Ray's object store and is checked by its SHA-256 on arrival."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("starlette")  # the serve extra

from batch_support import comparable, read_output, request, run_batch_process, write_lines  # noqa: E402
from gpt2_edge.batch.ray_run import place_bundle  # noqa: E402
from gpt2_edge.runtime import EdgeError  # noqa: E402

START_TIMEOUT_S = 60.0


def test_a_bundle_file_that_arrives_changed_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    names, blobs = ["bundle.json", "model.onnx"], (b"{}", b"weights")
    hashes = [hashlib.sha256(b).hexdigest() for b in blobs]
    folder = place_bundle(names, hashes, blobs)
    assert sorted(p.name for p in folder.iterdir()) == names
    assert place_bundle(names, hashes, blobs) == folder  # a second actor of the node reuses it
    (folder / "model.onnx").write_bytes(b"tampered")
    assert place_bundle(names, hashes, blobs) == folder  # a damaged copy is replaced
    assert (folder / "model.onnx").read_bytes() == b"weights"
    shutil.rmtree(folder)
    with pytest.raises(EdgeError, match="model.onnx reached Ray worker node .* with SHA-256"):
        place_bundle(names, hashes, (b"{}", b"weightz"))  # damaged on its way
    assert list(folder.parent.iterdir()) == []  # nothing half-written is left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    address: str  # host:port of its head
    env: dict[str, str]  # what a driver needs to join it
    group: int  # the process group of every process it runs


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    """``ray start --head`` on 127.0.0.1 (every port on loopback), with a token of its own."""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(ray).exists():
        pytest.skip("needs the ray extra: pip install 'gpt2-edge[ray]'")
    work = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    token = work / "token"
    token.write_text(secrets.token_hex(32))
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray swaps 127.0.0.1 for the LAN address
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    port = free_port()
    command = [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    command += ["--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
    command += ["--disable-usage-stats", "--temp-dir", str(work / "t")]
    head = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the test ends exactly what it started
    )
    try:
        wait_for_port(port, head)
        yield Cluster(f"127.0.0.1:{port}", env, head.pid)
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(work, ignore_errors=True)


def wait_for_port(port: int, head: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert head.poll() is None, "ray start failed"
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.2)


def listening(group: int) -> set[str]:
    """The addresses that processes of process group ``group`` listen on (from /proc)."""
    sockets: set[str] = set()
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if os.getpgid(int(pid)) != group:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    sockets.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                found.add(_address(fields[1].split(":")[0]))
    return found


def _address(hexa: str) -> str:
    raw = bytes.fromhex(hexa)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


@pytest.mark.ray
def test_two_ray_workers_give_the_local_results(
    ray_cluster: Cluster, bundle: Path, tmp_path: Path
) -> None:
    address, env = ray_cluster.address, ray_cluster.env
    job = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(16)] + ["[]"])
    model = ["--model", str(bundle), "--threads", "1"]
    local = run_batch_process(str(job), "-o", str(tmp_path / "local.jsonl"), *model)
    assert local.returncode == 0, local.stderr
    on_ray = run_batch_process(
        str(job),
        "-o",
        str(tmp_path / "ray.jsonl"),
        *model,
        "--ray",
        address,
        "--workers",
        "2",
        env=env,
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert "2 Ray workers (1 CPU each" in on_ray.stderr
    assert comparable(read_output(tmp_path / "ray.jsonl")) == comparable(
        read_output(tmp_path / "local.jsonl")
    )
    addresses = listening(ray_cluster.group)
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


@pytest.mark.ray
def test_a_model_that_does_not_load_on_the_workers_is_one_sentence(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    address, env = ray_cluster.address, ray_cluster.env
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bundle.json").write_text("{}")
    job = write_lines(tmp_path / "in.jsonl", [request(1)])
    done = run_batch_process(
        str(job), "-o", str(tmp_path / "out.jsonl"), "--model", str(bad), "--ray", address, env=env
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "bundle.json" in errors[0], done.stderr
    assert not (tmp_path / "out.jsonl").exists()
