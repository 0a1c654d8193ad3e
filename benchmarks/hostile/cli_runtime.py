"""Hostile inputs for ``gpt2-generate`` and ``gpt2-eval``: flags of every wrong kind and size,
prompts and texts from special files, odd Unicode, a full standard output, signals mid-run and
memory caps."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

from .common import Case, Fixtures, Outcome, Ran, judge_error, judge_interrupted, judge_ok, run

G = "gpt2-generate"
E = "gpt2-eval"
SHORT = ["--max-new-tokens", "3"]
# (name, extra flags, stdin bytes or None, expected: "ok" | exit code of one clean error)
GENERATE_FLAGS: list[tuple[str, list[str], bytes | None, object]] = [
    ("max-new-tokens zero", ["x", "--max-new-tokens", "0"], None, 1),
    ("max-new-tokens negative", ["x", "--max-new-tokens", "-5"], None, 1),
    ("max-new-tokens 1e30", ["x", "--max-new-tokens", str(10**30)], None, "ok"),
    ("max-new-tokens word", ["x", "--max-new-tokens", "many"], None, 2),
    ("max-new-tokens huge fits", ["x", "--max-new-tokens", str(2**62)], None, "ok"),
    ("temperature nan", ["x", "--temperature", "nan"], None, 1),
    ("temperature -inf", ["x", "--temperature", "-inf"], None, 1),
    ("temperature denormal", ["x", "--temperature", "5e-324", *SHORT], None, "ok"),
    ("temperature 1e308", ["x", "--temperature", "1e308", *SHORT], None, "ok"),
    ("temperature -0.0 greedy", ["x", "--temperature", "-0.0", *SHORT], None, "ok"),
    ("top-p zero", ["x", "--temperature", "1", "--top-p", "0"], None, 1),
    ("top-p above one", ["x", "--temperature", "1", "--top-p", "1.0000001"], None, 1),
    ("top-k 2**63", ["x", "--temperature", "1", "--top-k", str(2**63), *SHORT], None, "ok"),
    ("top-k vocabulary+1", ["x", "--temperature", "1", "--top-k", "50258", *SHORT], None, "ok"),
    ("min-p two", ["x", "--temperature", "1", "--min-p", "2"], None, 1),
    ("seed negative", ["x", "--seed", "-1"], None, 1),
    ("seed 2**64", ["x", "--seed", str(2**64), "--temperature", "1", *SHORT], None, "ok"),
    ("seed float", ["x", "--seed", "1.5"], None, 2),
    ("repetition-penalty zero", ["x", "--repetition-penalty", "0"], None, 1),
    ("presence-penalty 3", ["x", "--presence-penalty", "3"], None, 1),
    ("no-repeat-ngram negative", ["x", "--no-repeat-ngram-size", "-2"], None, 1),
    ("stop empty", ["x", "--stop", ""], None, 1),
    ("stop bad escape", ["x", "--stop", "\\q"], None, 1),
    ("stop half surrogate", ["x", "--stop", "\\ud800"], None, 1),
    ("stop incomplete unicode", ["x", "--stop", "\\u12"], None, 1),
    (
        "stop 300 strings",
        ["x", *[a for i in range(300) for a in ("--stop", f"s{i}")], *SHORT],
        None,
        "ok",
    ),  # fmt: skip
    ("max-length one", ["x", "--max-length", "1"], None, 1),
    ("max-length with truncate", ["x", "--max-length", "9", "--truncate", "left"], None, 1),
    ("num-beams zero", ["x", "--num-beams", "0"], None, 1),
    ("num-beams 65", ["x", "--num-beams", "65"], None, 1),
    ("sequences over beams", ["x", "--num-beams", "2", "--num-return-sequences", "3"], None, 1),
    ("beams with stop", ["x", "--num-beams", "2", "--stop", "a"], None, 1),
    ("length-penalty 1e308", ["x", "--num-beams", "2", "--length-penalty", "1e308"], None, 1),
    ("length-penalty -3", ["x", "--num-beams", "2", "--length-penalty", "-3"], None, 1),
    ("logprobs without json", ["x", "--logprobs", "2"], None, 1),
    ("logprobs 21", ["x", "--logprobs", "21", "--json"], None, 1),
    ("logprobs json", ["x", "--logprobs", "20", "--json", *SHORT], None, "ok"),
    ("draft unknown", ["x", "--draft", "medusa"], None, 1),
    ("truncate right", ["x", "--truncate", "right"], None, 1),
    ("early-stopping maybe", ["x", "--num-beams", "2", "--early-stopping", "maybe"], None, 1),
    ("provider tpu", ["x", "--provider", "tpu"], None, 1),
    ("threads zero", ["x", "--threads", "0"], None, 1),
    ("threads million", ["x", "--threads", "1000000"], None, 1),
    ("unknown flag", ["x", "--temprature", "1"], None, 2),
    ("prompt like a flag", ["-hello"], None, 2),
    ("prompt after dashes", [*SHORT, "--", "-hello"], None, "ok"),
    ("empty prompt", ["", *SHORT], None, "ok"),
    ("emoji and RTL prompt", ["\u202eabc 😀\u0301 مرحبا", *SHORT], None, "ok"),
    ("prompt 120k characters", ["y " * 60_000], None, 1),
    ("prompt 120k truncated", ["y " * 60_000, "--truncate", "left", *SHORT], None, "ok"),
    ("stdin empty", ["-", *SHORT], b"", "ok"),
    ("stdin not utf-8", ["-"], b"\xff\xfe\xfa bad", 1),
    ("stdin NUL bytes", ["-", *SHORT], b"a\0b\0", "ok"),
    ("stdin over 32 MiB", ["-"], b"a" * ((32 << 20) + 10), 1),
    ("stdin 11 MB truncated", ["-", "--truncate", "left", *SHORT], b"word " * 2_200_000, "ok"),
    ("stdin CRLF", ["-", *SHORT], b"line\r\n", "ok"),
    ("interactive bad lines", ["-i", *SHORT], b"\xff\xfe\n\nhello\n", "ok"),
    ("interactive dash prompt", ["-i", "-"], None, 1),
    ("interactive endless line", ["-i"], b"z" * ((32 << 20) + 5), 1),
    (
        "num-return-sequences json",
        ["x", "--temperature", "1", "--num-return-sequences", "3", "--json", *SHORT],
        None,
        "ok",
    ),  # fmt: skip
    ("draft greedy", ["a b a b a b", "--draft", "prompt-lookup", *SHORT], None, "ok"),
]
MODEL_FLAGS: list[tuple[str, str, object]] = [
    ("model missing", "missing", 1),
    ("model a file", "file", 1),
    ("model /dev/null", "/dev/null", 1),
    ("model empty folder", "empty", 1),
    ("model manifest to /dev/zero", "zero", 1),
    ("model manifest a FIFO", "fifo", 1),
    ("model symlink loop", "loop", 1),
]


def _model(fx: Fixtures, kind: str) -> str:
    base = fx.scratch(f"model-{kind}")
    if kind in ("missing", "/dev/null"):
        return str(base / "nothing") if kind == "missing" else kind
    if kind == "file":
        (base / "f").write_text("x")
        return str(base / "f")
    if kind == "empty":
        return str(base)
    if kind == "loop":
        (base / "a").symlink_to(base / "b")
        (base / "b").symlink_to(base / "a")
        return str(base / "a")
    folder = base / "b"
    folder.mkdir()
    for item in fx.bundle.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "bundle.json").unlink()
    if kind == "zero":
        (folder / "bundle.json").symlink_to("/dev/zero")
    else:
        os.mkfifo(folder / "bundle.json")
    return str(folder)


def _generate_case(name: str, args: list[str], stdin: bytes | None, want: object) -> Case:
    def go(fx: Fixtures) -> Outcome:
        ran = run([G, "--model", str(fx.bundle), "--provider", "cpu", *args], input=stdin)
        if want == "ok":
            return judge_ok(ran)
        return judge_error(ran, (want,))  # type: ignore[arg-type]

    return Case(G, name, go)


def _model_case(name: str, kind: str, want: object) -> Case:
    def go(fx: Fixtures) -> Outcome:
        return judge_error(run([G, "x", "--model", _model(fx, kind), "--provider", "cpu"]))

    return Case(G, name, go)


def _full_stdout(fx: Fixtures) -> Outcome:
    with open("/dev/full", "w") as full:
        ran = run([G, "hello", "--model", str(fx.bundle), *SHORT], stdout=full)
    return judge_error(ran, (1,), "standard output")


def _closed_pipe(fx: Fixtures) -> Outcome:
    proc = subprocess.Popen(
        [str(Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / G) if os.environ.get("VIRTUAL_ENV")
         else G, "hello", "--model", str(fx.bundle), "--max-new-tokens", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # type: ignore[union-attr]  # the reader went away (| head -c0)
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    code = proc.wait(timeout=60)
    return judge_interrupted(Ran(code, "", err, 0), (0, 1), [])


def _signal_midway(signum: int, codes: tuple[int, ...]):
    def go(fx: Fixtures) -> Outcome:
        from .common import BIN

        proc = subprocess.Popen(
            [
                str(BIN / G),
                "Once",
                "--model",
                str(fx.bundle),
                "--temperature",
                "1",
                "--num-return-sequences",
                "64",
                "--max-new-tokens",
                "127",
                "--ignore-eos",
                "--json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip  (about 15 s of work)
        time.sleep(2.5)
        proc.send_signal(signum)
        try:
            err = proc.communicate(timeout=30)[1].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome("defect", "did not stop on the signal")
        return judge_interrupted(Ran(proc.returncode, "", err, 0), codes, [])

    return go


def _signal_at_prompt(signum: int, codes: tuple[int, ...]):
    """--interactive waiting for its next line (stdin open, nothing sent)."""

    def go(fx: Fixtures) -> Outcome:
        from .common import BIN

        proc = subprocess.Popen(
            [str(BIN / G), "-i", "--model", str(fx.bundle), *SHORT],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        proc.stdin.write(b"hello\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        time.sleep(3)
        proc.send_signal(signum)
        try:
            err = proc.communicate(timeout=30)[1].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome("defect", "did not stop on the signal")
        return judge_interrupted(Ran(proc.returncode, "", err, 0), codes, [])

    return go


def _memory_cap(limit_mb: int):
    def go(fx: Fixtures) -> Outcome:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

        ran = run([G, "hello", "--model", str(fx.bundle), *SHORT], preexec=cap)
        if ran.code == 0:
            return judge_ok(ran)
        return judge_error(ran, (1,), "memory")

    return go


def _fifo_stdin(fx: Fixtures) -> Outcome:
    folder = fx.scratch("fifo-stdin")
    fifo = folder / "in"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(b"from a fifo\n")

    threading.Thread(target=feed, daemon=True).start()
    with open(fifo, "rb") as fh:
        return judge_ok(run([G, "-", "--model", str(fx.bundle), *SHORT], stdin=fh))


EVAL_CASES: list[tuple[str, list[str], object]] = [
    ("text missing", ["--text", "{w}/nope.txt"], 1),
    ("text a folder", ["--text", "{w}"], 1),
    ("text /dev/null", ["--text", "/dev/null"], 1),
    ("text binary", ["--text", "{w}/binary"], 1),
    ("text utf-16", ["--text", "{w}/utf16"], 1),
    ("text one token", ["--text", "{w}/one"], 1),
    ("text sparse 40 GB", ["--text", "{w}/sparse"], 1),
    ("text symlink loop", ["--text", "{w}/loop"], 1),
    ("context one", ["--text", "{w}/good", "--context", "1"], 1),
    ("context too big", ["--text", "{w}/good", "--context", str(10**9)], 1),
    ("context word", ["--text", "{w}/good", "--context", "big"], 2),
    ("stride one", ["--text", "{w}/good", "--stride", "1"], 1),
    ("stride over context", ["--text", "{w}/good", "--context", "16", "--stride", "32"], 1),
    ("max-tokens one", ["--text", "{w}/good", "--max-tokens", "1"], 1),
    ("max-tokens negative", ["--text", "{w}/good", "--max-tokens", "-4"], 1),
    ("provider empty", ["--text", "{w}/good", "--provider", ""], 1),
    ("threads negative", ["--text", "{w}/good", "--threads", "-1"], 1),
    ("no text flag", [], 2),
    ("good json", ["--text", "{w}/good", "--json"], "ok"),
    ("good stdin", ["--text", "-", "--json"], "ok"),
    (
        "good small windows",
        ["--text", "{w}/good", "--context", "8", "--stride", "4", "--json"],
        "ok",
    ),  # fmt: skip
]


def _eval_case(name: str, args: list[str], want: object) -> Case:
    def go(fx: Fixtures) -> Outcome:
        w = fx.scratch("eval")
        (w / "binary").write_bytes(bytes(range(256)) * 10)
        (w / "utf16").write_bytes("hello world ".encode("utf-16"))
        (w / "one").write_text("a")
        (w / "good").write_text("The city was founded on the river. " * 40)
        with open(w / "sparse", "wb") as fh:
            fh.truncate(40 << 30)
        (w / "loop").symlink_to(w / "loop")
        flags = [a.replace("{w}", str(w)) for a in args]
        stdin = (w / "good").read_bytes() if "-" in flags else None
        ran = run([E, "--model", str(fx.bundle), "--provider", "cpu", *flags], input=stdin)
        return judge_ok(ran) if want == "ok" else judge_error(ran, (want,))  # type: ignore[arg-type]

    return Case(E, name, go)


def _eval_full_stdout(fx: Fixtures) -> Outcome:
    w = fx.scratch("eval-full")
    (w / "good").write_text("The city was founded on the river. " * 40)
    with open("/dev/full", "w") as full:
        ran = run([E, "--model", str(fx.bundle), "--text", str(w / "good"), "--json"], stdout=full)
    return judge_error(ran, (1,), "standard output")


def cases() -> list[Case]:
    found = [_generate_case(*c) for c in GENERATE_FLAGS]
    found += [_model_case(*c) for c in MODEL_FLAGS]
    found += [
        Case(G, "stdout /dev/full", _full_stdout),
        Case(G, "reader gone (closed pipe)", _closed_pipe),
        Case(G, "stdin a FIFO", _fifo_stdin),
        Case(G, "memory cap 300 MB", _memory_cap(300)),
        Case(G, "memory cap 1.5 GB", _memory_cap(1536)),
        Case(G, "SIGINT mid-generation", _signal_midway(signal.SIGINT, (130,)), slow=True),
        Case(G, "SIGTERM mid-generation", _signal_midway(signal.SIGTERM, (143, -15)), slow=True),
        Case(G, "SIGHUP mid-generation", _signal_midway(signal.SIGHUP, (129, -1)), slow=True),
        Case(
            G,
            "SIGINT at the interactive prompt",
            _signal_at_prompt(signal.SIGINT, (130,)),
            slow=True,
        ),
        Case(
            G,
            "SIGTERM at the interactive prompt",
            _signal_at_prompt(signal.SIGTERM, (143, -15)),
            slow=True,
        ),
    ]
    found += [_eval_case(*c) for c in EVAL_CASES]
    found.append(Case(E, "stdout /dev/full", _eval_full_stdout))
    return found
