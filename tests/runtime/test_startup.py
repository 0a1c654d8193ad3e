"""Cold start: what ``gpt2-generate`` skips or overlaps, and that each shortcut stays sound.

- The verified-files record (``runtime/contract/verified.py``): a file hashed once is not read
again while
  it is unchanged, and every way of changing it makes the next load hash it again.
- ``Tokenizer.token_count`` counts every distinct token without copying the vocabulary.
- The CLI imports nothing it does not need to generate (rich, onnx, torch, the exporter...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError
from gpt2_edge.runtime.contract import files as bundle_mod
from gpt2_edge.runtime.contract import verified
from gpt2_edge.runtime.contract.bundle import check_hashes_of, load_bundle
from gpt2_edge.runtime.contract.files import file_entry
from gpt2_edge.runtime.contract.manifest import (
    Architecture,
    Manifest,
    read_manifest,
    write_manifest,
)
from gpt2_edge.runtime.contract.tokenizer import Tokenizer
from support.tiny_models import train_small_bpe
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

SETTLE_S = 0.05  # the tests' stand-in for verified.SETTLE_S; above any file clock's tick
DATA = bytes(range(256)) * 64  # 16 KiB of "weights"


def small_tokenizer(path: Path) -> int:
    """A byte-level BPE trained on two sentences, saved as ``tokenizer.json``; its size."""
    tok = train_small_bpe(["The quick brown fox jumps over the lazy dog."] * 4, 300)
    tok.save(str(path))
    return tok.get_vocab_size()


def make_bundle(folder: Path) -> Path:
    """A bundle folder whose files are listed with their hashes; its model.onnx is no graph
    (the tests' ``open_graph`` never parses it)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(DATA)
    vocab = small_tokenizer(folder / "tokenizer.json")
    files = {name: file_entry(folder / name) for name in ("model.onnx", "tokenizer.json")}
    arch = Architecture(2, 4, 16, 64, 128, vocab)
    write_manifest(folder, Manifest("tiny", arch, files=files))
    return folder


@pytest.fixture()
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty records folder of its own, and a settle time short enough for a test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(verified.CACHE_ENV, str(folder))
    monkeypatch.setattr(verified, "SETTLE_S", SETTLE_S)
    return folder


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files hashed in full, in order."""
    seen: list[str] = []
    real = bundle_mod.sha256_of

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        seen.append(Path(path).name)
        return real(path, chunk)

    monkeypatch.setattr(bundle_mod, "sha256_of", counting)
    return seen


@pytest.fixture()
def settled(tmp_path: Path) -> Path:
    """A bundle whose files were last changed longer than ``SETTLE_S`` ago."""
    folder = make_bundle(tmp_path / "bundle")
    time.sleep(2 * SETTLE_S)
    return folder


def check(folder: Path) -> None:
    check_hashes_of(folder, read_manifest(folder))


# --- The verified-files record ------------------------------------------------------------------


def test_a_verified_file_is_not_read_again(records: Path, settled: Path, reads: list[str]) -> None:
    check(settled)
    assert sorted(reads) == ["model.onnx", "tokenizer.json"]
    check(settled)
    load_bundle(settled)
    assert len(reads) == 2  # neither check read a file again
    assert len(list((records / "verified").glob("*.json"))) == 2


def edit_in_place(path: Path) -> None:
    with open(path, "r+b") as fh:  # same size, same inode
        fh.seek(100)
        fh.write(b"\xff")


def edit_and_restore_mtime(path: Path) -> None:
    st = path.stat()
    edit_in_place(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the ctime cannot be set back


def replace_by_rename(path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(b"\xff" + path.read_bytes()[1:])
    os.replace(other, path)  # a new inode under the old name


def copy_over_with_stat(path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(path.read_bytes()[:-1] + b"\x00")
    os.utime(other, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    shutil.copy2(other, path)  # content and mtime copied, size unchanged


CHANGES: dict[str, Callable[[Path], None]] = {
    "edit in place": edit_in_place,
    "edit, mtime restored": edit_and_restore_mtime,
    "replaced by rename": replace_by_rename,
    "copied over with its stat": copy_over_with_stat,
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_after_the_record_is_caught(
    change: Callable[[Path], None], records: Path, settled: Path, reads: list[str]
) -> None:
    check(settled)
    change(settled / "model.onnx")
    with pytest.raises(EdgeError, match=r"model\.onnx does not match its SHA-256"):
        check(settled)
    assert reads.count("model.onnx") == 2


def test_a_record_is_for_one_digest(records: Path, settled: Path, reads: list[str]) -> None:
    """A manifest rewritten to expect other content does not inherit the old record."""
    check(settled)
    manifest = read_manifest(settled)
    manifest.files["model.onnx"]["sha256"] = "0" * 64
    write_manifest(settled, manifest)
    with pytest.raises(EdgeError, match="SHA-256"):
        check(settled)
    assert reads.count("model.onnx") == 2


BAD_RECORDS = {
    "not JSON": "{",
    "a list": "[1, 2]",
    "no signature": json.dumps({"path": "x", "sha256": "y"}),
    "signature of strings": json.dumps({"path": "x", "sha256": "y", "signature": "abcde"}),
}


@pytest.mark.parametrize("text", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_bad_record_means_hashing(
    text: str, records: Path, settled: Path, reads: list[str]
) -> None:
    check(settled)
    for record in (records / "verified").glob("*.json"):
        record.write_text(text)
    check(settled)  # passes, by reading the files again
    assert len(reads) == 4


def test_another_paths_record_does_not_count(
    records: Path, settled: Path, reads: list[str], tmp_path: Path
) -> None:
    """A record copied under another file's key names the path it was made for."""
    check(settled)
    twin = make_bundle(tmp_path / "twin")
    (twin / "model.onnx").write_bytes(b"\xff" + DATA[1:])  # the same size, other bytes
    manifest = read_manifest(twin)
    manifest.files["model.onnx"] = read_manifest(settled).files["model.onnx"]
    write_manifest(twin, manifest)
    original = verified._record_path(settled / "model.onnx", manifest.files["model.onnx"]["sha256"])
    stolen = verified._record_path(twin / "model.onnx", manifest.files["model.onnx"]["sha256"])
    assert original is not None and stolen is not None
    stolen.write_text(original.read_text())
    with pytest.raises(EdgeError, match="SHA-256"):
        check(twin)


def test_files_changed_recently_are_not_recorded(
    records: Path, reads: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the settle time a change could share the clock tick of the record."""
    monkeypatch.setattr(verified, "SETTLE_S", 3600.0)
    folder = make_bundle(tmp_path / "fresh")
    reads.clear()  # make_bundle hashed them to write the manifest
    check(folder)
    check(folder)
    assert len(reads) == 4 and not (records / "verified").exists()


def test_a_file_changed_while_hashed_is_not_recorded(
    records: Path, settled: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bundle_mod.sha256_of

    def hash_then_change(path: Path, chunk: int = 1 << 20) -> str:
        reads.append(Path(path).name)
        digest = real(path, chunk)
        if Path(path).name == "model.onnx":
            edit_in_place(path)  # after the hash, before the record
        return digest

    monkeypatch.setattr(bundle_mod, "sha256_of", hash_then_change)
    check(settled)  # the digest read matches the manifest...
    monkeypatch.setattr(bundle_mod, "sha256_of", lambda path, chunk=1 << 20: real(path, chunk))
    with pytest.raises(EdgeError, match="model.onnx does not match"):  # ...but was not recorded
        check(settled)


@pytest.mark.parametrize("setting", ["", "a file"], ids=["turned off", "not a folder"])
def test_without_records_every_load_hashes(
    setting: str, settled: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if setting:
        (tmp_path / "a file").write_text("")
        setting = str(tmp_path / "a file")
    monkeypatch.setenv(verified.CACHE_ENV, setting)
    monkeypatch.setattr(verified, "SETTLE_S", SETTLE_S)
    check(settled)
    load_bundle(settled)
    assert len(reads) == 4


def test_records_of_vanished_files_are_dropped(
    records: Path, settled: Path, tmp_path: Path
) -> None:
    check(settled)
    gone = make_bundle(tmp_path / "gone")
    time.sleep(2 * SETTLE_S)
    check(gone)
    assert len(list((records / "verified").glob("*.json"))) == 4
    for name in ("model.onnx", "tokenizer.json", "bundle.json"):
        (gone / name).unlink()
    (settled / "model.onnx").write_bytes(DATA)  # a new version, recorded after a hash
    time.sleep(2 * SETTLE_S)
    check(settled)
    left = [json.loads(r.read_text())["path"] for r in (records / "verified").glob("*.json")]
    assert sorted(Path(p).name for p in left) == ["model.onnx", "tokenizer.json"]
    assert all(Path(p).parent == settled.resolve() for p in left)


def test_other_files_in_the_records_folder_are_left_alone(
    records: Path, settled: Path, tmp_path: Path
) -> None:
    """GPT2_EDGE_CACHE_DIR may name a folder the user keeps files in: only records are dropped."""
    mine = records / "verified"
    mine.mkdir(parents=True)
    theirs = {
        "settings.json": '{"my": "config"}',
        "notes.txt": "notes",
        "0123456789abcdef0123456789abcdef.json": '{"path": "/no/such/file"}',  # not a record
        "broken.json": "{",
    }
    for name, text in theirs.items():
        (mine / name).write_text(text)
    gone = make_bundle(tmp_path / "gone")
    time.sleep(2 * SETTLE_S)
    check(gone)
    shutil.rmtree(gone)
    check(settled)  # records the settled bundle, then drops the vanished one's records
    assert {name: (mine / name).read_text() for name in theirs} == theirs
    left = [json.loads(r.read_text())["path"] for r in mine.glob("*.json") if r.name not in theirs]
    assert sorted(Path(p).name for p in left) == ["model.onnx", "tokenizer.json"]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_record_that_is_no_regular_file_means_hashing(
    records: Path, settled: Path, reads: list[str], kind: str
) -> None:
    """A FIFO in a record's place would block the load, a link to /dev/zero fill the memory."""
    import threading

    model = settled / "model.onnx"
    digest = read_manifest(settled).files["model.onnx"]["sha256"]
    record = verified._record_path(model, digest)
    assert record is not None
    record.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(record)
    else:
        record.symlink_to("/dev/zero")
    done = threading.Thread(target=check, args=(settled,), daemon=True)
    done.start()
    done.join(timeout=30)
    assert not done.is_alive(), "the load blocked on the record"
    assert "model.onnx" in reads  # hashed, as without a record


def test_a_recorded_file_that_cannot_be_read_is_named(
    records: Path, settled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record does not vouch for a file this process may not open (gpt2-pack would copy it)."""
    check(settled)
    model = settled / "model.onnx"
    real_open = open

    def refusing(file, *args, **kwargs):  # chmod 000 does not stop root, which CI runs as
        if Path(file) == model:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing)
    with pytest.raises(EdgeError) as caught:
        check(settled)
    assert str(caught.value) == f"{model} cannot be read (Permission denied)."


# --- The graph opens while the checks run ------------------------------------------------------


ADDED: dict[str, Callable[[HFTokenizer], object]] = {
    "none": lambda tok: None,
    "a new token": lambda tok: tok.add_tokens(["brand-new-token"]),
    "a new special token": lambda tok: tok.add_special_tokens(["<|pad|>"]),
    "a token the vocabulary has": lambda tok: tok.add_tokens(["the", AddedToken("quick")]),
    "the special token again": lambda tok: tok.add_special_tokens(["<|endoftext|>"]),
    "a mix": lambda tok: (tok.add_tokens(["fox", "zzz-new"]), tok.add_special_tokens(["<s>"])),
}


@pytest.mark.parametrize("add", ADDED.values(), ids=ADDED.keys())
def test_token_count_is_every_distinct_token_and_the_longest_entry_is_found(
    add: Callable[[HFTokenizer], object], tmp_path: Path
) -> None:
    """``token_count`` (the tokenizer check at load) is ``get_vocab_size``, which copies
    nothing: it must count what the vocabulary really holds, added tokens included."""
    small_tokenizer(tmp_path / "tokenizer.json")
    raw = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    add(raw)
    raw.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer(tmp_path / "tokenizer.json")
    vocab = raw.get_vocab(with_added_tokens=True)
    assert tokenizer.token_count == len(vocab)
    assert tokenizer.max_token_chars == max(len(entry) for entry in vocab)


# --- What the CLI imports -----------------------------------------------------------------------

# Not needed to generate: rich (typer's help boxes and tracebacks), onnx (the graph is
# onnxruntime's to read), the export stack, the server, the evaluation; nor, for greedy decoding
# (the tiny bundle's default), numpy.random (17 ms: the random generators are made when drawn);
# nor pydantic, which typer 0.29 imports on every command (60-80 ms; pyproject pins typer<0.29).
HEAVY = (
    "pydantic",
    "numpy.random",
    "rich",
    "pygments",
    "onnx",
    "torch",
    "transformers",
    "optimum",
    "gpt2_edge.exporter",
    "gpt2_edge.serve",
    "gpt2_edge.runtime.generation.evaluate",
)
GENERATE_AND_LIST = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["gpt2-generate", *sys.argv[1:]]
from gpt2_edge.runtime.cli.generate import main
main()
"""


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer_dir: Path) -> Path:
    pytest.importorskip("onnx")  # the test's graph builder, not the runtime, needs it
    from support.fused_bundle import build_fused_bundle

    folder = tmp_path_factory.mktemp("startup") / "tiny"
    return build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")


def test_generating_imports_nothing_heavy(tiny_bundle: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny_bundle), "--provider", "cpu", "--max-new-tokens", "3", "Hi"]
    env = dict(os.environ, **{verified.CACHE_ENV: str(tmp_path / "cache")})
    done = subprocess.run(
        [sys.executable, "-c", GENERATE_AND_LIST, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # it generated
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(f"{h}.") for h in HEAVY))
    assert heavy == [], f"gpt2-generate imported {heavy}"
