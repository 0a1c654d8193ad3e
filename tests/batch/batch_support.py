"""Helpers for the batch command's tests: batch files of varied requests, output lines made
comparable across runs, and ``gpt2-batch`` as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT_TIMEOUT_S = 120

WORDS = "the a of city river music old new light stone".split()


def body(i: int, max_tokens: int = 12) -> dict[str, Any]:
    """Request i: completions and chats, greedy and seeded samples, with and without logprobs."""
    prompt = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 4))
    settings: dict[str, Any] = {"temperature": 0}
    if i % 3 == 1:
        settings = {"temperature": 0.9, "top_k": 40, "seed": i}
    if i % 4 == 0:
        return {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            **settings,
        }
    if i % 5 == 2:
        settings["logprobs"] = 2
    return {"prompt": prompt, "max_tokens": max_tokens + i % 7, **settings}


def request(i: int, custom_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Line i of a batch file."""
    payload = body(i, **extra)
    url = "/v1/chat/completions" if "messages" in payload else "/v1/completions"
    return {"custom_id": custom_id or f"req-{i}", "method": "POST", "url": url, "body": payload}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """A batch file: each item a JSON line (a str is written as it is)."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def comparable(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Output lines by custom_id, without what differs from run to run (response ids, times)."""
    out = {}
    for record in records:
        record = json.loads(json.dumps(record))
        response = record["response"]
        if response is not None:
            response.pop("request_id")
            response["body"].pop("id", None)
            response["body"].pop("created", None)
        out[record["custom_id"] or record["id"]] = record
    return out


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpt2_edge.batch", *args]


def run_batch_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``gpt2-batch ARGS`` as its own process, with the model on one thread."""
    return subprocess.run(
        batch_command(*args),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
