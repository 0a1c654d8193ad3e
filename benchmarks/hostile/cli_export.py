"""Hostile inputs for ``gpt2-export``: folders and files that are not what they claim, configs
that contradict themselves or their weights (new ones), flags out of range, outputs in the way,
a full disk, and signals during a real export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
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

X = "gpt2-export"


def _copy(fx: Fixtures, name: str) -> Path:
    folder = fx.scratch(name) / "ckpt"
    shutil.copytree(fx.checkpoint, folder)
    return folder


def _config(**changes: object):
    def make(fx: Fixtures) -> Path:
        ckpt = _copy(fx, "config")
        config = json.loads((ckpt / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        (ckpt / "config.json").write_text(json.dumps(config))
        return ckpt

    return make


def _replace(name: str, data: bytes | str | None, how: str = "bytes"):
    def make(fx: Fixtures) -> Path:
        ckpt = _copy(fx, f"replace-{name}")
        target = ckpt / name
        if target.exists() or target.is_symlink():
            target.unlink()
        if how == "fifo":
            os.mkfifo(target)
        elif how == "link":
            target.symlink_to(str(data))
        elif how == "dir":
            target.mkdir()
        elif how == "sparse":
            with open(target, "wb") as fh:
                fh.truncate(1 << 40)
        elif data is not None:
            target.write_bytes(data if isinstance(data, bytes) else data.encode())
        return ckpt

    return make


def _tokenizer_broken(fx: Fixtures) -> Path:
    """vocab.json of binary bytes, and no tokenizer.json to fall back on."""
    ckpt = _replace("vocab.json", b"\x00\xff" * 100)(fx)
    (ckpt / "tokenizer.json").unlink()
    return ckpt


SOURCES = [
    ("config n_embd zero", _config(n_embd=0)),
    ("config n_layer float", _config(n_layer=2.5)),
    ("config vocab 2**70", _config(vocab_size=2**70)),
    ("config epsilon negative", _config(layer_norm_epsilon=-1e-5)),
    ("config architectures empty list", _config(architectures=[], n_head=3)),
    ("config model_type GPT2 (case)", _config(model_type="GPT2")),
    ("config n_positions null", _config(n_positions=None, max_position_embeddings=None)),
    ("config pad id negative", _config(pad_token_id=-1)),
    ("config activation list", _config(activation_function=["gelu"])),
    ("config n_inner zero", _config(n_inner=0)),
    ("config.json a list", _replace("config.json", "[]")),
    ("config.json null", _replace("config.json", "null")),
    ("config.json deep nesting", _replace("config.json", "[" * 100_000 + "]" * 100_000)),
    ("config.json not utf-8", _replace("config.json", b'{"model_type": "\xff"}')),
    ("config.json a FIFO", _replace("config.json", None, "fifo")),
    ("config.json a folder", _replace("config.json", None, "dir")),
    ("config.json to /dev/zero", _replace("config.json", "/dev/zero", "link")),
    ("config.json sparse 1 TB", _replace("config.json", None, "sparse")),
    ("weights header absurd", _replace("model.safetensors", b"\xff" * 8 + b"{}")),
    ("weights a FIFO", _replace("model.safetensors", None, "fifo")),
    ("weights a folder", _replace("model.safetensors", None, "dir")),
    ("weights to /dev/zero", _replace("model.safetensors", "/dev/zero", "link")),
    ("tokenizer vocab binary", _tokenizer_broken),
    ("tokenizer.json a list", _replace("tokenizer.json", "[1, 2]")),
]


def _source_case(name: str, make) -> Case:
    def go(fx: Fixtures) -> Outcome:
        ckpt = make(fx)
        return judge_error(run([X, str(ckpt), "-o", str(ckpt.parent / "out")], timeout=120))

    return Case(X, name, go)


FLAGS = [
    ("bits 3", ["--bits", "3"]),
    ("dtype fp8", ["--dtype", "fp8"]),
    ("target bogus", ["-q", "--target", "riscv"]),
    ("opset 7", ["--opset", "7"]),
    ("opset 99", ["--opset", "99"]),
    ("block-size 3", ["--bits", "4", "--block-size", "3"]),
    ("accuracy-level 9", ["--bits", "4", "--accuracy-level", "9"]),
    ("eval-text /dev/zero", ["-q", "--eval-text", "/dev/zero"]),
    ("eval-text missing", ["-q", "--eval-text", "/nonexistent/text"]),
    ("max-ppl-increase nan", ["-q", "--max-ppl-increase", "nan"]),
    ("min-greedy-agreement 2", ["-q", "--min-greedy-agreement", "2"]),
    ("gate with no-verify", ["-q", "--no-verify", "--max-ppl-increase", "0.1"]),
    ("kv-cache int4", ["--kv-cache", "int4"]),
    ("graph unknown", ["--graph", "tflite"]),
]


def _flag_case(name: str, flags: list[str]) -> Case:
    def go(fx: Fixtures) -> Outcome:
        out = fx.scratch("flags") / "out"
        ran = run([X, str(fx.checkpoint), "-o", str(out), *flags], timeout=120)
        made = out.exists()
        outcome = judge_error(ran, (1, 2))
        return Outcome("defect", "an output was written") if made else outcome

    return Case(X, name, go)


def _output(kind: str):
    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch(f"out-{kind}")
        target = base / "out"
        if kind == "file":
            target.write_text("mine")
        elif kind == "user folder":
            target.mkdir()
            (target / "thesis.md").write_text("mine")
        elif kind == "under a file":
            (base / "f").write_text("x")
            target = base / "f" / "out"
        elif kind == "symlink":
            (base / "real").mkdir()
            target.symlink_to(base / "real")
        elif kind == "root":
            target = Path("/")
        elif kind == "bundle with user file":
            target.mkdir()
            (target / "bundle.json").write_text('{"format": "gpt2-edge-bundle"}')
            (target / "notes.txt").write_text("mine")
        before = sorted(str(p) for p in base.rglob("*"))
        ran = run([X, str(fx.checkpoint), "-o", str(target), "--force"], timeout=120)
        after = sorted(str(p) for p in base.rglob("*"))
        if before != after:
            return Outcome("defect", f"the folder changed: {set(before) ^ set(after)}")
        return judge_error(ran)

    return go


def _hub_offline(fx: Fixtures) -> Outcome:
    ran = run([X, "openai-community/not-a-model-xyz", "-o", str(fx.scratch("hub") / "o")],
              env={"HF_HUB_OFFLINE": "1"}, timeout=120)  # fmt: skip
    return judge_error(ran)


def _real_export_interrupted(signum: int, twice: bool, codes: tuple[int, ...]):
    """A real export, a signal (or two 5 ms apart) once Optimum's step has started."""

    def go(fx: Fixtures) -> Outcome:
        base = fx.scratch("signal")
        out = base / "made" / "out"
        proc = subprocess.Popen(
            [str(BIN / X), str(fx.checkpoint), "-o", str(out), "--no-verify"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not list(base.glob("made/.out.partial-*/.work")):
            if time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signum)
        if twice:
            time.sleep(0.005)
            proc.send_signal(signum)
        try:
            err = proc.communicate(timeout=120)[1].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome("defect", "did not stop")
        left = list(base.rglob("*"))
        return judge_interrupted(Ran(proc.returncode, "", err, 0), codes, left)

    return go


def _full_disk(size_mb: int):
    """A real export onto a tmpfs too small for it: one sentence, nothing left."""

    def go(fx: Fixtures) -> Outcome:
        mount = fx.scratch(f"tmpfs-{size_mb}")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                               str(mount)], capture_output=True)  # fmt: skip
        if done.returncode:
            return Outcome("defect", "could not mount a tmpfs (needs root)")
        try:
            ran = run([X, str(fx.checkpoint), "-o", str(mount / "out"), "--no-verify"], timeout=240)
            left = list(mount.iterdir())
            if ran.code == 0:  # it fitted: a whole bundle, nothing else
                whole = left == [mount / "out"] and (mount / "out" / "bundle.json").is_file()
                return judge_ok(ran, lambda r: None if whole else f"left {left}")
            outcome = judge_error(ran, (1,), "space")
            return Outcome("defect", f"left {left}") if left else outcome
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)

    return go


def cases() -> list[Case]:
    found = [_source_case(*c) for c in SOURCES]
    found += [_flag_case(*c) for c in FLAGS]
    found += [
        Case(X, f"output {kind}", _output(kind))
        for kind in (
            "file",
            "user folder",
            "under a file",
            "symlink",
            "root",
            "bundle with user file",
        )  # fmt: skip
    ]
    found += [
        Case(X, "hub id offline", _hub_offline),
        Case(X, "model id with ..", lambda fx: judge_error(run([X, "../../etc", "-o", "/tmp/x"]))),
        Case(X, "model empty string", lambda fx: judge_error(run([X, "", "-o", "/tmp/x"]))),
        Case(
            X,
            "two SIGINTs 5 ms apart",
            _real_export_interrupted(signal.SIGINT, True, (130, -2)),
            slow=True,
        ),  # fmt: skip
        Case(
            X,
            "two SIGHUPs 5 ms apart",
            _real_export_interrupted(signal.SIGHUP, True, (129, -1)),
            slow=True,
        ),  # fmt: skip
        Case(X, "SIGTERM once", _real_export_interrupted(signal.SIGTERM, False, (143,)), slow=True),
        *(Case(X, f"full disk {mb} MB", _full_disk(mb), slow=True) for mb in (6, 29, 31, 34)),
    ]
    return found
