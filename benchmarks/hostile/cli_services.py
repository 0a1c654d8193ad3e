"""Hostile inputs for ``gpt2-pack``, ``gpt2-batch`` and ``gpt2-serve``'s command line: sources
and outputs that are not what they should be, special files, bad flags, a full stdout, and
signals. gpt2-pack's pip is faked where a pack is made (no network here)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .common import (
    BIN,
    Case,
    Fixtures,
    Outcome,
    Ran,
    judge_error,
    judge_interrupted,
    judge_ok,
    run,
)

P, B, S = "gpt2-pack", "gpt2-batch", "gpt2-serve"
FAKE_PIP = """
import os, sys, time, zipfile
from gpt2_edge.pack import cli, make

def wheel(dest, name):
    path = dest / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
    return path

def download(target, own, dest):
    for name in ("onnxruntime", "numpy", "pip"):
        wheel(dest, name)
    if os.environ.get("SLOW"):
        print("downloading", file=sys.stderr, flush=True)
        time.sleep(60)

make.own_wheel = lambda dest: wheel(dest, "gpt2_edge")
make.download_dependencies = download
sys.argv[0] = "gpt2-pack"
cli.main()
"""


def _pack(fx: Fixtures, *args: str, **kw) -> Ran:
    return run([sys.executable, "-c", FAKE_PIP, *args], **kw)


def _pack_source(kind: str):
    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch(f"pack-{kind}")
        source = base / "b"
        if kind == "file":
            source.write_text("x")
        elif kind == "empty folder":
            source.mkdir()
        elif kind in ("corrupt", "manifest fifo", "manifest zero", "extra file"):
            shutil.copytree(fx.bundle, source)
            if kind == "corrupt":
                data = bytearray((source / "tokenizer.json").read_bytes())
                data[-5] ^= 1
                (source / "tokenizer.json").write_bytes(bytes(data))
            elif kind == "extra file":
                (source / "notes.txt").write_text("mine")
            else:
                (source / "bundle.json").unlink()
                if kind == "manifest fifo":
                    os.mkfifo(source / "bundle.json")
                else:
                    (source / "bundle.json").symlink_to("/dev/zero")
        out = base / "o"
        ran = _pack(fx, str(source), "--platform", "linux_x86_64", "-o", str(out))
        if kind == "extra file":
            return judge_ok(ran, lambda r: None if out.is_dir() else "no pack")
        return judge_error(ran)

    return go


def _pack_flags(name: str, flags: list[str], code: int = 1):
    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch(f"pack-flags-{name}")
        args = [a.replace("{b}", str(fx.bundle)).replace("{w}", str(base)) for a in flags]
        (base / "file").write_text("x")
        (base / "exists").mkdir()
        ran = _pack(fx, *args)
        return judge_error(ran, (code,))

    return go


PACK_FLAGS = [
    ("platform bogus", ["{b}", "--platform", "linux_sparc", "-o", "{w}/o"]),
    ("platform armv7", ["{b}", "--platform", "linux_armv7l", "-o", "{w}/o"]),
    ("python 2.7", ["{b}", "--platform", "linux_x86_64", "--python", "2.7", "-o", "{w}/o"]),
    ("python 3.10", ["{b}", "--platform", "linux_aarch64", "--python", "3.10", "-o", "{w}/o"]),
    ("output exists", ["{b}", "--platform", "linux_x86_64", "-o", "{w}/exists"]),
    ("output under a file", ["{b}", "--platform", "linux_x86_64", "-o", "{w}/file/o"]),
    ("output inside the bundle", ["{b}", "--platform", "linux_x86_64", "-o", "{b}/o"]),
    ("bundle empty string", ["", "--platform", "linux_x86_64", "-o", "{w}/o"]),
    ("no platform", ["{b}", "-o", "{w}/o"], 2),
    ("web output exists", ["{b}", "--platform", "web", "-o", "{w}/exists"]),
]


def _pack_full_stdout(fx: Fixtures) -> Outcome:
    base = fx.scratch("pack-full")
    with open("/dev/full", "w") as full:
        ran = _pack(fx, str(fx.bundle), "--platform", "linux_x86_64", "-o", str(base / "o"),
                    stdout=full)  # fmt: skip
    outcome = judge_error(ran, (1,), "standard output")
    return Outcome("defect", "the pack stayed") if (base / "o").exists() else outcome


def _pack_ok(fx: Fixtures) -> Outcome:
    base = fx.scratch("pack-ok")
    out = base / "new" / "deep" / "o"
    ran = _pack(fx, str(fx.bundle), "--platform", "linux_aarch64", "-o", str(out))
    return judge_ok(ran, lambda r: None if r.stdout == f"{out}\n" else f"stdout {r.stdout!r}")


def _pack_signal(signum: int, codes: tuple[int, ...]):
    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch("pack-signal")
        proc = subprocess.Popen(
            [sys.executable, "-c", FAKE_PIP, str(fx.bundle), "--platform", "linux_x86_64", "-o",
             str(base / "made" / "o")], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "SLOW": "1"}, text=True,
        )  # fmt: skip
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "downloading" in line:
                break
        proc.send_signal(signum)
        time.sleep(0.005)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        return judge_interrupted(Ran(proc.returncode, out, "".join(lines) + err, 0), codes,
                                 list(base.iterdir()))  # fmt: skip

    return go


def _batch(name: str, lines: list[str] | bytes | str, flags: list[str] = (), code: object = 1):
    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch(f"batch-{name}")
        source = base / "in.jsonl"
        if isinstance(lines, bytes):
            source.write_bytes(lines)
        elif isinstance(lines, str):
            source = Path(lines.replace("{w}", str(base)))
            if lines.endswith("fifo"):
                os.mkfifo(source)
        else:
            source.write_text("".join(line + "\n" for line in lines))
        args = [a.replace("{w}", str(base)) for a in flags] or ["-o", str(base / "out.jsonl")]
        ran = run([B, str(source), "--model", str(fx.bundle), "--provider", "cpu", *args],
                  timeout=120)  # fmt: skip
        if code == "ok":
            return judge_ok(ran)
        return judge_error(ran, (code,))  # type: ignore[arg-type]

    return go


def _request(i: int, body: object, url: str = "/v1/completions", method: str = "POST") -> str:
    return json.dumps({"custom_id": f"r{i}", "method": method, "url": url, "body": body})


GOOD = {"prompt": "Hello", "max_tokens": 2}
BATCH = [
    ("input missing", "{w}/nothing.jsonl"),
    ("input a folder", "{w}"),
    ("input /dev/zero", "/dev/zero"),
    ("input a fifo", "{w}/fifo"),
    ("input empty", b""),
    ("input not json", ["{not json"]),
    ("input binary", b"\xff\xfe\x00garbage\n"),
    ("duplicate custom_id", [_request(1, GOOD), _request(1, GOOD)]),
    ("line a number", ["42"]),
    ("output same as input", [_request(1, GOOD)], ["-o", "{w}/in.jsonl"]),
    ("output a folder", [_request(1, GOOD)], ["-o", "{w}"]),
    ("output under a file", [_request(1, GOOD)], ["-o", "{w}/in.jsonl/out"]),
    ("workers zero", [_request(1, GOOD)], ["-o", "{w}/o", "--workers", "0"]),
    ("max-batch 100000", [_request(1, GOOD)], ["-o", "{w}/o", "--max-batch", "100000"]),
    ("threads zero", [_request(1, GOOD)], ["-o", "{w}/o", "--threads", "0"]),
]
BATCH_OK = [
    ("huge line answered as an error line", [_request(1, {"prompt": "x" * (5 << 20)}),
                                             _request(2, GOOD)]),
    ("bad lines answered per line", [_request(1, GOOD), _request(2, "text"),
                                     _request(3, GOOD, url="/v1/embeddings"),
                                     _request(4, GOOD, method="GET"),
                                     _request(5, {"prompt": "x", "n": True}),
                                     _request(6, {"prompt": "x", "best_of": True})]),
    ("CRLF lines and blanks", b'\r\n' + _request(1, GOOD).encode() + b"\r\n\r\n"),
    ("emoji custom_id", [json.dumps({"custom_id": "😀\u0000", "method": "POST",
                                     "url": "/v1/chat/completions",
                                     "body": {"messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 2}})]),
]  # fmt: skip


def _serve(name: str, flags: list[str], env: dict[str, str] | None = None, code: int = 1):
    def go(fx: Fixtures) -> Outcome:
        ran = run([S, "--model", str(fx.bundle), *flags], env=env, timeout=60)
        return judge_error(ran, (code,))

    return go


def _busy_port(fx: Fixtures) -> Outcome:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        return judge_error(run([S, "--model", str(fx.bundle), "--port",
                                str(taken.getsockname()[1])], timeout=60))  # fmt: skip


def _serve_signal(signum: int, codes: tuple[int, ...]):
    def go(fx: Fixtures) -> Outcome:
        proc = subprocess.Popen(
            [str(BIN / S), "--model", str(fx.bundle), "--port", "0"], stderr=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        return judge_interrupted(Ran(proc.returncode, out, err, 0), codes, [])

    return go


def cases() -> list[Case]:
    found = [
        Case(P, f"source {kind}", _pack_source(kind))
        for kind in (
            "file",
            "empty folder",
            "corrupt",
            "manifest fifo",
            "manifest zero",
            "extra file",
        )  # fmt: skip
    ]
    found += [Case(P, c[0], _pack_flags(*c)) for c in PACK_FLAGS]
    found += [
        Case(P, "stdout /dev/full", _pack_full_stdout),
        Case(P, "parents made, pack ok", _pack_ok),
        Case(P, "two SIGINTs mid-download", _pack_signal(signal.SIGINT, (130,)), slow=True),
        Case(P, "two SIGTERMs mid-download", _pack_signal(signal.SIGTERM, (143,)), slow=True),
    ]
    found += [Case(B, c[0], _batch(*c)) for c in BATCH]
    found += [Case(B, c[0], _batch(c[0], c[1], code="ok")) for c in BATCH_OK]
    found += [
        Case(S, "port 70000", _serve("port", ["--port", "70000"])),
        Case(S, "port -1", _serve("port", ["--port", "-1"])),
        Case(S, "host unknown", _serve("host", ["--host", "no.such.host.invalid", "--port", "0"])),
        Case(S, "max-batch zero", _serve("mb", ["--max-batch", "0"])),
        Case(S, "max-queue negative", _serve("mq", ["--max-queue", "-1"])),
        Case(S, "api key newline", _serve("key", ["--api-key", "a\nb"])),
        Case(S, "api key env unicode", _serve("key", [], {"GPT2_SERVE_API_KEY": "clé"})),
        Case(S, "api key env spaces", _serve("key", [], {"GPT2_SERVE_API_KEY": "  "})),
        Case(S, "cors origin path", _serve("cors", ["--cors-origin", "http://a.b/c"])),
        Case(S, "served name empty", _serve("name", ["--served-model-name", ""])),
        Case(S, "log level loud", _serve("log", ["--log-level", "loud"])),
        Case(S, "threads zero", _serve("threads", ["--threads", "0"])),
        Case(S, "port busy", _busy_port),
        Case(S, "SIGTERM after start", _serve_signal(signal.SIGTERM, (0, 143, -15)), slow=True),
        Case(S, "SIGINT after start", _serve_signal(signal.SIGINT, (0, 130)), slow=True),
    ]
    return found
