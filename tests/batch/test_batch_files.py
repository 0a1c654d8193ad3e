"""INPUT and OUTPUT without a model: which files are refused before any work (one sentence),
which lines become error lines, how OUTPUT names the INPUT it answers, and that OUTPUT only ever
holds whole lines."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")  # the serve extra: gpt2-batch checks with the server's code

from batch_support import request, write_lines  # noqa: E402
from gpt2_edge.batch.jobfile import MAX_REQUESTS, read_job  # noqa: E402
from gpt2_edge.batch.output import (  # noqa: E402
    Appender,
    check_output,
    done_lines,
    invalid_record,
    line_id,
)
from gpt2_edge.runtime import EdgeError  # noqa: E402


def refusal(path: Path) -> str:
    with pytest.raises(EdgeError) as caught:
        read_job(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "holds no requests"),
        (b"\n  \n", "holds no requests"),
        (b'[{"custom_id": "a"}, {"custom_id": "b"}]\n', "not JSON lines"),
        (b"custom_id,url\na,/v1/completions\n", "not JSON lines"),
        (b'{"custom_id": "a"}\n\xff\xfe\n', "not UTF-8 text (bad byte at offset 19)"),
    ],
)
def test_files_that_are_no_batch_file_are_refused(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    message = refusal(path)
    assert expected in message and message.count(".") >= 1 and "\n" not in message


def test_unreadable_inputs_are_refused(tmp_path: Path) -> None:
    assert "Cannot read INPUT" in refusal(tmp_path / "missing.jsonl")
    assert "No such file" in refusal(tmp_path / "missing.jsonl")
    assert "is a folder" in refusal(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in refusal(fifo)  # never a read that blocks


def test_duplicate_custom_ids_are_refused_naming_both_lines(tmp_path: Path) -> None:
    lines = [request(0, "a"), request(1, "b"), "", request(2, "a")]
    message = refusal(write_lines(tmp_path / "in.jsonl", lines))
    assert message.startswith('custom_id "a" is on lines 1 and 4 of INPUT')


def test_too_many_requests_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    line = json.dumps(request(0)) + "\n"
    path.write_text("".join(line.replace("req-0", f"r{i}") for i in range(MAX_REQUESTS + 1)))
    assert "more than 50,000 requests" in refusal(path)


def test_bad_lines_are_kept_with_their_problem(tmp_path: Path) -> None:
    lines = [
        request(0, "ok"),
        "not json",
        "[1, 2]",
        {"method": "POST", "url": "/v1/completions", "body": {}},
        {**request(1, "get"), "method": "GET"},
        {**request(2, "embed"), "url": "/v1/embeddings"},
        {**request(3, "nobody"), "body": "hello"},
        '{"custom_id": "nan", "method": "POST", "url": "/v1/completions", "body": {"x": NaN}}',
    ]
    job = read_job(write_lines(tmp_path / "in.jsonl", lines))
    problems = {line.number: line.problem for line in job.lines}
    assert problems == {
        1: None,
        2: "Line 2 is not valid JSON: expecting value at column 1.",
        3: "Line 3 is not a JSON object.",
        4: "Line 4 needs a custom_id, a non-empty string.",
        5: 'Line 5: method must be POST, got "GET".',
        6: 'Line 6: url must be /v1/completions or /v1/chat/completions, got "/v1/embeddings".',
        7: 'Line 7: body must be a JSON object, got "hello".',
        8: "Line 8 is not valid JSON: NaN is not a JSON number.",
    }
    assert [line.custom_id for line in job.lines][:5] == ["ok", None, None, None, "get"]
    assert job.lines[0].request() == (request(0)["url"], request(0)["body"])


def test_lines_end_at_newlines_only(tmp_path: Path) -> None:
    """A JSON string may hold U+2028 and a carriage return; a CRLF file and a BOM are fine."""
    first = request(0, "a")
    first["body"]["prompt"] = "one\u2028two\rthree"
    path = tmp_path / "in.jsonl"
    text = json.dumps(first, ensure_ascii=False) + "\r\n" + json.dumps(request(1, "b")) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    job = read_job(path)
    assert [(x.number, x.custom_id, x.problem) for x in job.lines] == [
        (1, "a", None),
        (2, "b", None),
    ]
    assert job.lines[0].request()[1]["prompt"] == "one\u2028two\rthree"


def test_output_places_that_cannot_be_written_are_refused(tmp_path: Path) -> None:
    for path, expected in [
        (tmp_path / "missing" / "out.jsonl", "The folder of --output"),
        (tmp_path, "is a folder"),
        (Path("/dev/null"), "not a regular file"),
    ]:
        with pytest.raises(EdgeError, match=expected):
            check_output(path)
    check_output(tmp_path / "new.jsonl")  # a new file in a writable folder
    assert not (tmp_path / "new.jsonl").exists()  # checking creates nothing


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Makes a path read-only even for root (which ignores the mode): immutable where the file
    system allows it."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("root can write anything here: chattr +i does not work on this folder")
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def test_a_read_only_output_is_refused(tmp_path: Path, read_only: Callable) -> None:
    path, folder = tmp_path / "out.jsonl", tmp_path / "folder"
    path.write_text("")
    folder.mkdir()
    read_only(path)
    read_only(folder)
    with pytest.raises(
        EdgeError, match="Cannot write --output .*out.jsonl: (Permission|Operation)"
    ):
        check_output(path)
    with pytest.raises(EdgeError, match="its folder is not writable"):
        check_output(folder / "out.jsonl")


def test_output_lines_name_their_input(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sha, other = "ab" * 32, "cd" * 32
    assert done_lines(out, sha) == set()  # no OUTPUT yet: nothing done
    with Appender(out) as appender:
        appender.write(invalid_record(sha, 3, "x", "Line 3 is not a JSON object."))
        appender.write(invalid_record(sha, 7, None, "Line 7 is not valid JSON."))
    assert done_lines(out, sha) == {3, 7}
    assert read_id(out, 0) == line_id(sha, 3) == f"batch_req_{'ab' * 12}_3"
    with pytest.raises(EdgeError, match="holds results of another input file"):
        done_lines(out, other)
    out.write_text(out.read_text() + '{"id": "something else"}\n')
    with pytest.raises(EdgeError, match=r"is not a gpt2-batch output \(its line 3 is not one\)"):
        done_lines(out, sha)


def read_id(path: Path, index: int) -> str:
    return json.loads(path.read_text().splitlines()[index])["id"]


def test_a_partial_last_line_is_not_done_and_is_cut_off(tmp_path: Path) -> None:
    """What a machine crash between write() and the disk can leave: the line is done again."""
    out, sha = tmp_path / "out.jsonl", "ab" * 32
    whole = json.dumps(invalid_record(sha, 1, "a", "x")) + "\n"
    out.write_text(whole + json.dumps(invalid_record(sha, 2, "b", "y"))[:40])
    assert done_lines(out, sha) == {1}
    Appender(out).close()
    assert out.read_text() == whole


def test_a_failed_write_leaves_no_part_of_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, sha = tmp_path / "out.jsonl", "ab" * 32
    appender = Appender(out)
    appender.write(invalid_record(sha, 1, "a", "x"))
    before = out.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(EdgeError, match="No space left on device; the lines before"):
        appender.write(invalid_record(sha, 2, "b", "y" * 100))
    monkeypatch.undo()
    appender.close()
    assert out.read_bytes() == before


def test_a_second_writer_of_the_same_output_is_refused(tmp_path: Path) -> None:
    """Two runs on one OUTPUT at once would both run the requests it lacks."""
    out = tmp_path / "out.jsonl"
    with Appender(out):
        with pytest.raises(EdgeError, match="Another gpt2-batch is writing --output"):
            Appender(out)
    Appender(out).close()  # free again once the first has closed
