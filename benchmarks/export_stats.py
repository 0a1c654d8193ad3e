"""Run ``gpt2-export`` and record what it costs: wall time, peak RSS, and both per step.

The exporter prints one line as each step ends (``✓ Quantize ... (36.2 s)``); this runs it as a
child, samples the RSS of its process tree every ``SAMPLE_S`` seconds, and gives each step the
largest sample taken while it ran. So an export that does not fit says where it stopped growing
and which step was running when it was killed. ``/usr/bin/time -v`` wraps the child for the
kernel's own peak figure.

With ``limit_mib`` the child runs in a fresh cgroup-v1 memory group capped there (the machine's
other users keep the rest; an OOM kill is then exit 137 inside the group, not a machine-wide one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

SAMPLE_S = 0.25
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants (KiB)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total


def _own_group() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / path.lstrip("/")
    return CGROUP_ROOT


def timed_export(
    args: list[str], limit_mib: int | None = None, over_2gb: bool = False
) -> dict[str, Any]:
    """``python -m gpt2_edge.exporter ARGS`` (``-m`` so that a ``PYTHONPATH`` snapshot of the
    package is honoured), or with ``over_2gb`` the same command through ``export_over_2gb.py``
    (workarounds for graphs over 2 GiB); returns exit code, wall s, peak RSS MiB, per-step
    figures, output tail."""
    cmd = [sys.executable, "-m", "gpt2_edge.exporter", *args]
    if over_2gb:
        cmd = [sys.executable, str(Path(__file__).with_name("export_over_2gb.py")), *args]
    if Path("/usr/bin/time").is_file():
        cmd = ["/usr/bin/time", "-v", *cmd]
    group = None
    if limit_mib and (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        group = _own_group() / f"gpt2-edge-export-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
        cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group), *cmd]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    peak = {"now": 0, "all": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            kib = tree_rss_kib(proc.pid)
            peak["now"], peak["all"] = max(peak["now"], kib), max(peak["all"], kib)
            time.sleep(SAMPLE_S)

    threading.Thread(target=sample, daemon=True).start()
    steps, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(("✓", "✗")):
            steps.append({"step": line[1:].strip(), "ok": line.startswith("✓"),
                          "at_s": round(time.perf_counter() - t0, 1),
                          "peak_rss_mib": round(peak["now"] / 1024)})  # fmt: skip
            peak["now"] = 0
            print(
                f"[export] {line.strip()} peak {steps[-1]['peak_rss_mib']} MiB",
                file=sys.stderr,
                flush=True,
            )
    code = proc.wait()
    done.set()
    wall = time.perf_counter() - t0
    text = "\n".join(lines)
    kernel_peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    out: dict[str, Any] = {
        "command": " ".join(["gpt2-export", *args]),
        "returncode": code,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(int(kernel_peak.group(1)) / 1024)
        if kernel_peak
        else round(peak["all"] / 1024),
        "sampled_peak_rss_mib": round(peak["all"] / 1024),
        "steps": steps,
        "running_when_stopped_peak_rss_mib": round(peak["now"] / 1024) if code else None,
        "limit_mib": limit_mib if group else None,
        "workarounds": "export_over_2gb.py (Optimum post-processing off, external data when "
        "protobuf cannot size the graph, type_intermediates on a graph without weight bytes)"
        if over_2gb
        else None,
        "output_tail": "\n".join(ln for ln in lines[-60:] if not ln.startswith("\t"))[-4000:],
    }
    if group is not None:
        out["cgroup_peak_charged_mib"] = round(
            int((group / "memory.max_usage_in_bytes").read_text()) / 2**20
        )
        oom = (group / "memory.oom_control").read_text()
        out["oom_killed"] = bool(
            re.search(r"oom_kill (\d+)", oom) and int(re.search(r"oom_kill (\d+)", oom).group(1))
        )
        for _ in range(50):  # the group can be removed once its last process has left
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    return out
