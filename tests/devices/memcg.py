"""Run a command inside a memory cgroup (cgroup v1) and report whether it fit and its peak RSS.

The v1 memory controller at ``/sys/fs/cgroup/memory`` is writable as root on the machines this
project runs on: a child group with ``memory.limit_in_bytes`` caps every process put into it
(the kernel's OOM killer ends one that needs more: exit 137), after reclaiming the page cache the
group holds. ``memory.max_usage_in_bytes`` counts that page cache too (the bundle's files read to
check their hashes), so the process's own peak comes from ``ru_maxrss``. A group is made under
this process's own memory cgroup, so a limit above this one's still holds, and removed afterwards.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/memory")
MIB = 1 << 20


@dataclass(frozen=True)
class CgroupRun:
    returncode: int
    oom_killed: bool  # the kernel's OOM killer ended it (exit 137 with an OOM event in the group)
    peak_rss_mib: float  # the process's own peak resident set (its ru_maxrss)
    peak_charged_mib: float  # the group's peak charge: RSS plus the page cache it read
    stdout: str
    stderr: str


def own_group() -> Path:
    """This process's memory cgroup folder (v1), e.g. /sys/fs/cgroup/memory/x/y."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return ROOT / path.lstrip("/")
    return ROOT


def unavailable() -> str | None:
    """Why no memory cgroup can be made here, or None when one can."""
    if not (ROOT / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller at {ROOT}"
    probe = own_group() / f"gpt2-edge-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot make a memory cgroup under {probe.parent} ({exc.strerror})"
    probe.rmdir()
    return None


def run_limited(
    command: list[str], limit_mib: int, cwd: Path | None = None, env: dict | None = None,
    timeout: float = 300,
) -> CgroupRun:  # fmt: skip
    """Run ``command`` in a fresh memory cgroup capped at ``limit_mib`` MiB (no swap here)."""
    group = own_group() / f"gpt2-edge-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit_mib * MIB))
        swap_limit = group / "memory.memsw.limit_in_bytes"  # present when swap accounting is on
        if swap_limit.exists():
            swap_limit.write_text(str(limit_mib * MIB))
        # The child joins the group before it runs the command: its whole life is charged there.
        enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                ["sh", "-c", enter, str(group), *command], cwd=cwd, env=env, stdout=out, stderr=err
            )
            status, usage = _wait(proc, timeout)
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        oom = _oom_kills(group) > 0
        charged = int((group / "memory.max_usage_in_bytes").read_text()) / MIB
    finally:
        _remove(group)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # a signal, as a shell reports it (137 = SIGKILL)
    return CgroupRun(code, oom, usage.ru_maxrss / 1024, charged, stdout, stderr)


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, resource.struct_rusage]:
    """Wait for ``proc`` and return its status and its own resource usage (not its siblings')."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = status  # Popen must not wait for it again
            return status, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = status
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.05)


def _oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    # Older kernels have no counter: a hit of the limit that ended in SIGKILL is the sign.
    return int((group / "memory.failcnt").read_text())


def _remove(group: Path) -> None:
    """Remove the group once its processes are gone (a killed one may take a moment)."""
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)
