"""The peer engines' model files and the machine's facts, for ``bench_peers.py``.

The peers live in their own venv (``benchmarks/setup_peers.sh``; default ``benchmarks/.venv-peers``,
or ``$GPT2_EDGE_PEERS_VENV``), never in the project's: llama.cpp through llama-cpp-python built
from source for this CPU, and CTranslate2. Their model files are made from the same random-weight
checkpoints as our bundles (``models.py``), each with the engine's own converter, run inside the
peers venv:

- GGUF q8_0: llama.cpp's ``convert_hf_to_gguf.py --outtype q8_0`` (from the llama.cpp that the
  llama-cpp-python sdist vendors);
- GGUF q4_0: the converter's f16 file, then ``llama_model_quantize`` (``llama-quantize``'s library
  call) to Q4_0 with its defaults (which keep the tied embedding/LM head at Q6_K);
- CTranslate2 int8: ``ct2-transformers-converter --quantization int8``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402

PEERS_VENV = Path(os.environ.get("GPT2_EDGE_PEERS_VENV", HERE / ".venv-peers"))
LLAMA_SRC = "llama_cpp_python-*/vendor/llama.cpp"
# The ISA flags worth naming in a table (the full list goes into the JSON).
ISA_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def peers_ready() -> str | None:
    """None when the peers venv imports both engines; else why not, in a sentence."""
    if not peers_python().is_file():
        return f"no peers venv at {PEERS_VENV} (run: bash benchmarks/setup_peers.sh)"
    code = "import llama_cpp, ctranslate2"
    proc = subprocess.run([str(peers_python()), "-c", code], capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def peer_versions() -> dict[str, str]:
    code = (
        "import json, llama_cpp, ctranslate2; print(json.dumps({'llama-cpp-python': "
        "llama_cpp.__version__, 'ctranslate2': ctranslate2.__version__, 'llama.cpp system': "
        "llama_cpp.llama_print_system_info().decode().strip()}))"
    )
    proc = subprocess.run([str(peers_python()), "-c", code], capture_output=True, text=True)
    out = json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else {}
    args = PEERS_VENV / "llama-cmake-args.txt"
    if args.is_file():
        out["llama.cpp CMAKE_ARGS"] = args.read_text().strip().removeprefix("CMAKE_ARGS=")
    return out


def cpu_info() -> dict[str, Any]:
    """The CPU's model name, family/model, cache, the ISA flags that matter, and the full list."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first CPU is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = fields.get("flags", "").split()
    info.update(
        model_name=fields.get("model name", "?"),
        vendor=fields.get("vendor_id", "?"),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        cache=fields.get("cache size"),
        hypervisor="hypervisor" in flags,
        isa=[f for f in ISA_FLAGS if f in flags],
        flags=flags,
    )
    lscpu = shutil.which("lscpu")
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("L2 cache", "L3 cache", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    with open("/proc/meminfo", encoding="utf-8") as f:
        info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    return info


def cpu_line(info: dict[str, Any]) -> str:
    """One line naming the CPU for a table's caption."""
    l3 = info.get("L3 cache", info.get("cache", "?"))
    return (
        f"{info['model_name']} ({info['vendor']} family {info['family']} model {info['model']}"
        f"{', KVM' if info.get('hypervisor') else ''}), {info['cpus']} CPUs, L3 {l3}, "
        f"{info['mem_total_gib']} GiB; ISA: {' '.join(info['isa'])}"
    )


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_busy(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over the next ``seconds`` (from /proc/stat), 0 to 1."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_for_quiet(max_busy: float, timeout_s: float) -> dict[str, float]:
    """Wait until the CPUs are at most ``max_busy`` busy (other people's jobs share this machine),
    at most ``timeout_s``; returns how long it waited and the busy fraction it started at."""
    t0 = time.perf_counter()
    busy = cpu_busy()
    while busy > max_busy and time.perf_counter() - t0 < timeout_s:
        time.sleep(10)
        busy = cpu_busy()
    return {"waited_s": round(time.perf_counter() - t0, 1), "busy_at_start": round(busy, 2)}


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def build_stats(path: Path) -> dict[str, Any]:
    """How long making ``path`` took and its peak RSS: the ``.export.json`` (ours) or
    ``.convert.json`` (peers) written beside it; empty when it was made before they were kept."""
    for suffix in (".export.json", ".convert.json"):
        side = path.with_name(path.name + suffix)
        if side.is_file():
            stats = json.loads(side.read_text())
            walls = [v["wall_s"] for v in _leaves(stats)]
            peaks = [v["peak_rss_mib"] for v in _leaves(stats) if v.get("peak_rss_mib")]
            return {"build_wall_s": round(sum(walls), 1),
                    "build_peak_rss_mib": max(peaks) if peaks else None}  # fmt: skip
    return {}


def _leaves(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The {wall_s, peak_rss_mib} records of a build (one, or one per stage)."""
    if "wall_s" in stats:
        return [stats]
    return [v for v in stats.values() if isinstance(v, dict) and "wall_s" in v]


# ----------------------------------------------------------------------------- conversions
def _llama_dir() -> Path:
    found = sorted((PEERS_VENV / "src").glob(LLAMA_SRC))
    if not found:
        raise RuntimeError(f"no llama.cpp source under {PEERS_VENV / 'src'} (setup_peers.sh)")
    return found[-1]


def _run_peers(args: list[str], what: str) -> dict[str, Any]:
    """Run a command with the peers venv's python; its wall time and peak RSS."""
    cmd = [str(peers_python()), *args]
    if Path("/usr/bin/time").is_file():
        cmd = ["/usr/bin/time", "-f", "PEAK_KB %M", *cmd]
    bench_models.log(what)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr[-2000:]}")
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KB")]
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(int(peak[-1].split()[1]) / 1024)
            if peak else None}  # fmt: skip


def _record(path: Path, stats: dict[str, Any]) -> None:
    path.with_name(path.name + ".convert.json").write_text(json.dumps(stats, indent=2) + "\n")


def gguf(model: str, quant: str, workdir: Path = bench_models.DEFAULT_WORKDIR) -> Path:
    """The checkpoint as a GGUF file, ``quant`` q8_0 or q4_0 (see the module doc)."""
    out = workdir / model / f"llama-{quant}.gguf"
    if out.is_file():
        return out
    ckpt = bench_models.checkpoint(model, workdir)
    converter = str(_llama_dir() / "convert_hf_to_gguf.py")
    tmp = out.with_name(out.name + ".tmp")
    if quant == "q8_0":
        args = [converter, str(ckpt), "--outfile", str(tmp), "--outtype", "q8_0"]
        stats = _run_peers(args, f"converting {model} to GGUF q8_0")
    elif quant == "q4_0":
        f16 = workdir / model / "llama-f16.gguf"
        stats = {}
        if not f16.is_file():
            ftmp = f16.with_name(f16.name + ".tmp")
            args = [converter, str(ckpt), "--outfile", str(ftmp), "--outtype", "f16"]
            stats["f16"] = _run_peers(args, f"converting {model} to GGUF f16")
            ftmp.rename(f16)
        code = (
            "import sys, llama_cpp as L; p = L.llama_model_quantize_default_params(); "
            "p.ftype = L.LLAMA_FTYPE_MOSTLY_Q4_0; p.nthread = 2; "
            "sys.exit(L.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))"
        )
        q = _run_peers(["-c", code, str(f16), str(tmp)], f"quantizing {model} GGUF to q4_0")
        stats = {**stats, "quantize": q}
    else:
        raise ValueError(f"unknown GGUF type {quant}")
    tmp.rename(out)
    _record(out, {"tool": "convert_hf_to_gguf.py (+ llama_model_quantize)", **stats})
    return out


def ct2_int8(model: str, workdir: Path = bench_models.DEFAULT_WORKDIR) -> Path:
    """CTranslate2's int8 conversion of the checkpoint, made in the peers venv."""
    out = workdir / model / "ct2-int8"
    if (out / "model.bin").is_file():
        return out
    ckpt = bench_models.checkpoint(model, workdir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # the converter refuses an existing folder
    exe = str(PEERS_VENV / "bin" / "ct2-transformers-converter")
    args = [exe, "--model", str(ckpt), "--output_dir", str(tmp), "--quantization", "int8"]
    stats = _run_peers(args, f"converting {model} with ctranslate2 (int8)")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    _record(out, {"tool": "ct2-transformers-converter --quantization int8", **stats})
    return out


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    """Each tensor's bytes in a GGUF file, by name (empty when the reader fails)."""
    code = (
        "import sys, json, gguf; r = gguf.GGUFReader(sys.argv[1]); "
        "print(json.dumps({t.name: int(t.n_bytes) for t in r.tensors}))"
    )
    proc = subprocess.run([str(peers_python()), "-c", code, str(path)], capture_output=True,
                          text=True)  # fmt: skip
    return json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else {}


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type a GGUF file holds (q8_0 / q4_0 / q6_K / f32...)."""
    code = (
        "import sys, json, collections, gguf; r = gguf.GGUFReader(sys.argv[1]); "
        "print(json.dumps(collections.Counter(t.tensor_type.name for t in r.tensors)))"
    )
    proc = subprocess.run([str(peers_python()), "-c", code, str(path)], capture_output=True,
                          text=True)  # fmt: skip
    return json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else {}
