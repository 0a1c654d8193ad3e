"""``run_batch`` on the tiny model: every line's result is what ``gpt2-serve`` answers the same
body over HTTP (errors included), a second run goes on where the first stopped and repeats
nothing, an OUTPUT of another INPUT is refused before any work, and worker processes give the
same results as one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")  # the serve extra
httpx = pytest.importorskip("httpx")

from batch_support import comparable, read_output, request, write_lines  # noqa: E402
from gpt2_edge.batch import Counts, run_batch  # noqa: E402
from gpt2_edge.batch.output import line_id  # noqa: E402
from gpt2_edge.batch.progress import Progress  # noqa: E402
from gpt2_edge.runtime import EdgeError  # noqa: E402
from serve_support import running  # noqa: E402

# Bodies the server refuses, each for its own reason; and bodies with less common forms.
REFUSED = [
    {"prompt": "x", "temperature": -1},
    {"prompt": "x", "model": "gpt-4o-mini"},
    {"prompt": "x", "stream": True},
    {"prompt": "x", "best_of": 2},
    {"prompt": "x", "num_beams": 2},
    {"messages": [{"role": "robot", "content": "hi"}]},
]
ODD = [
    {"prompt": [464, 1748, 286], "max_tokens": 5},  # token ids
    {"prompt": ["one", "two"], "max_tokens": 4, "temperature": 0.7, "seed": 3, "n": 2},
    {"prompt": ["a", "b", "c"], "max_tokens": 3, "n": 3, "temperature": 1.0, "seed": 5},  # 9 rows
    {"prompt": "The old stone", "max_tokens": 0, "echo": True, "logprobs": 1},  # scoring
    {"prompt": "The river", "max_tokens": 8, "stop": [" the"], "model": "tiny"},
]
MAX_BATCH = 4


def lines_for(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, body in enumerate(bodies):
        url = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        out.append({"custom_id": f"b{i}", "method": "POST", "url": url, "body": body})
    return out


def quiet_run(input: Path, output: Path, bundle: Path, **options: Any) -> Counts:
    options.setdefault("max_batch", MAX_BATCH)
    return run_batch(input, output, bundle, threads=1, log=lambda line: None, **options)


def test_each_result_is_what_gpt2_serve_answers(tmp_path: Path, bundle: Path, gen: Any) -> None:
    bodies = [request(i)["body"] for i in range(10)] + REFUSED + ODD
    lines = lines_for(bodies)
    job = write_lines(tmp_path / "in.jsonl", lines)
    counts = quiet_run(job, tmp_path / "out.jsonl", bundle)
    got = comparable(read_output(tmp_path / "out.jsonl"))

    with running(gen, max_batch=MAX_BATCH) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answers = [http.post(line["url"], json=line["body"]) for line in lines]
    statuses = []
    for line, answer in zip(lines, answers, strict=True):
        if line["body"].get("stream") is True:  # the server streams; a batch line cannot
            assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
            expected_body = {
                "error": {
                    "message": "stream is not available in a batch: each output line holds a "
                    "whole response.",
                    "type": "invalid_request_error",
                    "param": "stream",
                    "code": None,
                }
            }
        else:
            expected_body = answer.json()
            expected_body.pop("id", None)
            expected_body.pop("created", None)
        status = 400 if line["body"].get("stream") is True else answer.status_code
        assert got[line["custom_id"]]["response"] == {"status_code": status, "body": expected_body}
        statuses.append(status)
    assert statuses[: 10 + len(REFUSED)] == [200] * 10 + [400, 404, 400, 400, 400, 400]
    assert (counts.succeeded, counts.failed) == (
        statuses.count(200),
        len(statuses) - statuses.count(200),
    )


def test_output_lines_are_openais_batch_output(tmp_path: Path, bundle: Path) -> None:
    lines = lines_for([request(1)["body"], REFUSED[0]]) + ["not json"]
    job = write_lines(tmp_path / "in.jsonl", lines)
    quiet_run(job, tmp_path / "out.jsonl", bundle)
    records = {r["id"]: r for r in read_output(tmp_path / "out.jsonl")}
    sha = _sha(job)
    ok, refused, broken = (records[line_id(sha, n)] for n in (1, 2, 3))
    assert set(ok) == {"id", "custom_id", "response", "error"}
    assert ok["custom_id"] == "b0" and ok["error"] is None
    assert ok["response"]["request_id"] == ok["response"]["body"]["id"]
    assert ok["response"]["body"]["object"] == "text_completion"
    assert refused["response"]["status_code"] == 400 and refused["error"] is None
    assert refused["response"]["body"]["error"]["param"] == "temperature"
    assert broken == {
        "id": line_id(sha, 3),
        "custom_id": None,
        "response": None,
        "error": {
            "code": "invalid_request_line",
            "message": "Line 3 is not valid JSON: expecting value at column 1.",
        },
    }


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_run_goes_on_where_the_first_stopped(tmp_path: Path, bundle: Path) -> None:
    job = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(12)] + ["[]"])
    out = tmp_path / "out.jsonl"
    quiet_run(job, out, bundle)
    whole = out.read_text().splitlines(keepends=True)
    kept = whole[:5]  # as if the first run had stopped after five lines
    out.write_text("".join(kept))

    counts = quiet_run(job, out, bundle)
    assert (counts.done_before, counts.succeeded + counts.failed) == (5, 8)
    final = out.read_text().splitlines(keepends=True)
    assert final[:5] == kept  # what was done stays, untouched
    ids = [json.loads(line)["id"] for line in final]
    assert sorted(ids) == sorted(json.loads(line)["id"] for line in whole)  # each once
    assert comparable(read_output(out)) == comparable([json.loads(x) for x in whole])

    again = quiet_run(job, out, Path("no such bundle"))  # all done: no model is even loaded
    assert (again.done_before, again.succeeded, again.failed) == (13, 0, 0)


def test_an_output_of_another_input_is_refused_before_any_work(
    tmp_path: Path, bundle: Path
) -> None:
    out = tmp_path / "out.jsonl"
    quiet_run(write_lines(tmp_path / "a.jsonl", [request(0)]), out, bundle)
    before = out.read_bytes()
    other = write_lines(tmp_path / "b.jsonl", [request(0), request(1)])
    with pytest.raises(EdgeError, match="holds results of another input file"):
        quiet_run(other, out, bundle)
    assert out.read_bytes() == before


def test_a_model_that_does_not_load_is_refused_before_output_exists(tmp_path: Path) -> None:
    job = write_lines(tmp_path / "in.jsonl", [request(0)])
    (tmp_path / "not-a-bundle").mkdir()
    with pytest.raises(EdgeError):
        quiet_run(job, tmp_path / "out.jsonl", tmp_path / "not-a-bundle")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("option", "value"), [("workers", 0), ("max_batch", 0)])
def test_bad_settings_are_refused(tmp_path: Path, bundle: Path, option: str, value: int) -> None:
    job = write_lines(tmp_path / "in.jsonl", [request(0)])
    flag = "--" + option.replace("_", "-")
    with pytest.raises(EdgeError, match=f"{flag} must be from 1 to"):
        quiet_run(job, tmp_path / "out.jsonl", bundle, **{option: value})


def test_worker_processes_give_the_results_of_one_process(tmp_path: Path, bundle: Path) -> None:
    job = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(16)] + ["{}"])
    quiet_run(job, tmp_path / "one.jsonl", bundle)
    counts = quiet_run(job, tmp_path / "two.jsonl", bundle, workers=2)
    assert counts.succeeded == 16
    assert comparable(read_output(tmp_path / "two.jsonl")) == comparable(
        read_output(tmp_path / "one.jsonl")
    )


def test_progress_lines_and_counts() -> None:
    import io

    stream = io.StringIO()
    counts = Counts(total=10, done_before=4)
    bar = Progress(counts, stream=stream, live=False)
    with bar:
        for ok in (True, True, False):
            bar.add(ok, tokens=5)
        now = bar.started + 3.0
        assert bar.line(now) == ("7/10 done (1 failed), 1.0 requests/s, 5 tokens/s, about 3s left")
    summary = bar.summary()
    assert summary.startswith("gpt2-batch: 7/10 requests done: 2 succeeded, 1 failed in this run")
    assert "4 were done before this run; 15 tokens in" in summary
