"""lm-evaluation-harness against gpt2-serve: three local tasks built from WikiText-2, run with
lm-eval's ``hf`` backend on a checkpoint and with ``local-completions`` against a served export,
compared sample by sample. Used by ``tests/serve/test_lm_eval.py`` (fp32, in CI) and
``benchmarks/lm_eval_compare.py`` (fp32 and int8, the figures).

The tasks are YAML files in a folder (lm-eval's ``include_path``) over JSON-lines files written
here, so lm-eval downloads nothing:

- ``edge_cloze`` (multiple_choice): a WikiText-2 test paragraph cut before a word; the choices are
  that word and three words drawn from other paragraphs. An eighth of the contexts join the
  paragraphs before them to ~900 tokens.
- ``edge_rolling`` (loglikelihood_rolling): WikiText-2 test paragraphs, a quarter of them joined
  to 1,500-2,600 tokens, so lm-eval scores them in several windows and the first window fills the
  context.
- ``edge_greedy`` (generate_until): the first words of a paragraph, greedy, stopped at " ." or a
  newline, or after :func:`greedy_tokens` tokens.

Windows: lm-eval's API models keep one position for the token they ask the server to generate
(``max_length - 1``) and their rolling windows one more, so ``local-completions`` with
``max_length=1024`` scores rolling windows of 1,022 tokens (1,023 sent, one generated: the whole
context); the ``hf`` backend is run with ``max_length=1022`` so that its windows are the same ones.
Nothing else in these tasks comes near either bound.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CLOZE, ROLLING, GREEDY = "edge_cloze", "edge_rolling", "edge_greedy"
TASKS = (CLOZE, ROLLING, GREEDY)
API_MAX_LENGTH = 1024  # the model's context (FACTS: lm-eval's default 2048 is too long for GPT-2)
HF_MAX_LENGTH = API_MAX_LENGTH - 2  # the same rolling windows as the API's (see the module doc)
GREEDY_TOKENS = 32  # unless the checkpoint's generation_config.json says (see greedy_tokens)
GREEDY_STOPS = [" .", "\n"]
SEED = 20  # the issue's number: the tasks' draws (positions, distractors) are fixed by it
# No hub, no dataset downloads: lm-eval reads the local files only.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

_WORD = re.compile(r"^[A-Za-z]+$")


@dataclass(frozen=True)
class TaskSizes:
    """Documents per task."""

    cloze: int = 32
    rolling: int = 8
    greedy: int = 24


def _paragraphs(wikitext: Path) -> list[list[str]]:
    """WikiText-2 test paragraphs (no headings), in file order, grouped by article
    (each inner list is one article's paragraphs)."""
    articles: list[list[str]] = []
    for line in (wikitext / "test.txt").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("= ") and not text.startswith("= ="):
            articles.append([])  # " = Title = " starts an article
        elif text and not text.startswith("="):
            if not articles:
                articles.append([])
            articles[-1].append(text)
    return [a for a in articles if a]


def greedy_tokens(checkpoint: Path) -> int:
    """``max_gen_toks`` for the greedy task: the checkpoint's ``max_new_tokens`` when its
    ``generation_config.json`` sets one (the trained fixture's says 40), else ``GREEDY_TOKENS``.

    transformers' ``generate()`` takes a ``max_new_tokens`` from the model's generation config
    before the ``max_length`` that lm-eval's ``hf`` backend passes (prompt + ``max_gen_toks``),
    so the ``hf`` backend generates that many whatever the task asks; the server takes the
    ``max_tokens`` that lm-eval sends.
    """
    config = checkpoint / "generation_config.json"
    if config.is_file():
        wanted = json.loads(config.read_text(encoding="utf-8")).get("max_new_tokens")
        if isinstance(wanted, int) and wanted > 0:
            return wanted
    return GREEDY_TOKENS


def build_tasks(wikitext: Path, checkpoint: Path, folder: Path, sizes: TaskSizes) -> Path:
    """Write the three tasks' data and YAML files into ``folder`` (lm-eval's include_path), for
    ``checkpoint`` (its tokenizer counts the tokens; see :func:`greedy_tokens`)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))

    def count(text: str) -> int:
        return len(tok.encode(text).ids)

    rng = random.Random(SEED)
    articles = _paragraphs(wikitext)
    flat = [(a, i) for a, paras in enumerate(articles) for i in range(len(paras))]
    long = [(a, i) for a, i in flat if len(articles[a][i].split()) >= 60]
    vocab = sorted({w for paras in articles for p in paras for w in p.split() if _WORD.match(w)})
    folder.mkdir(parents=True, exist_ok=True)

    cloze = []
    for k, (a, i) in enumerate(rng.sample(long, sizes.cloze)):
        words = articles[a][i].split()
        spots = [p for p in range(20, len(words)) if _WORD.match(words[p])]
        p = rng.choice(spots)
        context = " ".join(words[:p])
        if k % 8 == 0:  # an eighth of them: the paragraphs before, up to ~900 tokens
            for before in reversed(articles[a][:i]):
                joined = before + "\n" + context
                if count(joined) > 900:
                    break
                context = joined
        answer = words[p]
        choices = [answer, *rng.sample([w for w in vocab if w != answer], 3)]
        rng.shuffle(choices)
        cloze.append({"context": context, "choices": choices, "label": choices.index(answer)})

    rolling = []
    for k, (a, i) in enumerate(rng.sample(long, sizes.rolling)):
        text = articles[a][i]
        if k % 4 == 0:  # a quarter of them: the article from here on, 1,500 to ~2,600 tokens
            for after in articles[a][i + 1 :]:
                if count(text) >= 1500:
                    break
                text = text + "\n" + after
            if count(text) < 1500:  # too short an article: the next ones' paragraphs
                for after in (p for paras in articles[a + 1 :] for p in paras):
                    text = text + "\n" + after
                    if count(text) >= 1500:
                        break
            words = text.split(" ")  # the last paragraph may be long: at most ~2,600 tokens
            while count(" ".join(words)) > 2600:
                words = words[: int(len(words) * 0.9)]
            text = " ".join(words)
        rolling.append({"text": text})

    greedy = []
    for a, i in rng.sample(long, sizes.greedy):
        words = articles[a][i].split()
        cut = rng.randrange(8, 20)
        rest = " ".join(words[cut:]).split(" . ", 1)[0]
        greedy.append({"prompt": " ".join(words[:cut]), "target": " " + rest})

    for name, rows in ((CLOZE, cloze), (ROLLING, rolling), (GREEDY, greedy)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    cache = folder / "datasets-cache"
    common = (
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        "    test: {data}\n"
        f"  cache_dir: {json.dumps(str(cache))}\n"
        "test_split: test\n"
    )

    def data(name: str) -> str:
        return json.dumps(str(folder / f"{name}.jsonl"))

    (folder / f"{CLOZE}.yaml").write_text(
        f"task: {CLOZE}\n{common.format(data=data(CLOZE))}"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n"
        "  - metric: acc\n"
        "  - metric: acc_norm\n",
        encoding="utf-8",
    )
    (folder / f"{ROLLING}.yaml").write_text(
        f"task: {ROLLING}\n{common.format(data=data(ROLLING))}"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n"
        "  - metric: word_perplexity\n"
        "  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n",
        encoding="utf-8",
    )
    (folder / f"{GREEDY}.yaml").write_text(
        f"task: {GREEDY}\n{common.format(data=data(GREEDY))}"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{target}}"\n'
        'target_delimiter: ""\n'
        "generation_kwargs:\n"
        f"  until: {json.dumps(GREEDY_STOPS)}\n"
        "  do_sample: false\n"
        f"  max_gen_toks: {greedy_tokens(checkpoint)}\n"
        "metric_list:\n"
        "  - metric: exact_match\n",
        encoding="utf-8",
    )
    return folder


@dataclass
class Run:
    """One lm-eval run: the tasks' metrics and, per task, each document's responses (by doc id):
    the choices' (loglikelihood, is_greedy) for the cloze, the sum for rolling, the text for
    greedy."""

    metrics: dict[str, dict[str, float]]
    samples: dict[str, dict[int, Any]]
    seconds: float


@contextmanager
def _offline() -> Iterator[None]:
    """The hub and dataset libraries offline while lm-eval runs (they read these variables when
    first imported, so a process that imports them here stays offline)."""
    before = {name: os.environ.get(name) for name in OFFLINE}
    os.environ.update(OFFLINE)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def evaluate(model: str, model_args: dict[str, Any], tasks: Path, batch_size: int) -> Run:
    """Run lm-eval's Python API on the three tasks in ``tasks`` (an include_path)."""
    with _offline():
        import lm_eval
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=str(tasks), include_defaults=False)
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=list(TASKS),
            task_manager=manager,
            batch_size=batch_size,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
        )
        seconds = time.perf_counter() - start
    metrics = {
        task: {k.split(",")[0]: v for k, v in values.items() if isinstance(v, (int, float))}
        for task, values in out["results"].items()
    }
    samples: dict[str, dict[int, Any]] = {}
    for task, rows in out["samples"].items():
        mine = samples.setdefault(task, {})
        for row in rows:
            resps = row["resps"]  # one list per request, each with one response
            if task == CLOZE:
                mine[row["doc_id"]] = [(float(r[0][0]), bool(r[0][1])) for r in resps]
            elif task == ROLLING:
                mine[row["doc_id"]] = float(resps[0][0])
            else:
                mine[row["doc_id"]] = resps[0][0]
    return Run(metrics, samples, seconds)


def hf_run(checkpoint: Path, tasks: Path) -> Run:
    """lm-eval's ``hf`` backend on a transformers checkpoint, float32 on the CPU, one request at
    a time: in a batch, its ``generate_until`` lets each row generate up to the batch's longest
    prompt plus ``max_gen_toks`` (it pads the prompts on the left and sets ``max_length`` from the
    padded width), so shorter prompts get more than ``max_gen_toks`` tokens."""
    args = {
        "pretrained": str(checkpoint),
        "dtype": "float32",
        "device": "cpu",
        "max_length": HF_MAX_LENGTH,
    }
    return evaluate("hf", args, tasks, 1)


def server_run(
    base_url: str, model: str, tasks: Path, tokenizer: Path | None = None, batch_size: int = 8
) -> Run:
    """lm-eval's ``local-completions`` against a gpt2-serve at ``base_url``.

    Args:
        base_url: ``http://host:port``.
        model: the served model's name (sent as ``model``).
        tasks: the include_path of :func:`build_tasks`.
        tokenizer: a folder with the Hugging Face tokenizer files (a gpt2-edge bundle has them)
            for lm-eval's ``huggingface`` tokenizer backend; None: lm-eval's default (``auto``),
            which takes the server's own tokenizer when the server answers ``/tokenizer_info``
            and ``/tokenize`` (vLLM's routes), and else fails here: it would look for a
            tokenizer named ``model`` on the hub.
        batch_size: prompts per request.
    """
    args: dict[str, Any] = {
        "model": model,
        "base_url": f"{base_url}/v1/completions",
        "max_length": API_MAX_LENGTH,
        "max_retries": 1,  # a refused request is a failure here, not something to retry
        "timeout": 120,
    }
    if tokenizer is not None:
        args.update(tokenizer_backend="huggingface", tokenizer=str(tokenizer))
    return evaluate("local-completions", args, tasks, batch_size)


@contextmanager
def serving(bundle: Path, *flags: str, threads: int = 1) -> Iterator[str]:
    """``gpt2-serve`` on a free 127.0.0.1 port; yields its URL and stops it (SIGINT) after."""
    command = [
        sys.executable, "-m", "gpt2_edge.serve", "--model", str(bundle), "--host", "127.0.0.1",
        "--port", "0", "--threads", str(threads), "--provider", "cpu", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        deadline, line = time.monotonic() + 120, ""
        while "http://" not in line:
            line = process.stderr.readline()
            seen.append(line)
            if (not line and process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError("gpt2-serve did not start:\n" + "".join(seen))
        url = "http://" + line.split("http://", 1)[1].split()[0].rstrip("/")
        _drain(process)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _drain(process: subprocess.Popen) -> None:
    """Read the server's stderr (a line per request) on a thread, so that its pipe never fills."""
    import threading

    def read() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    threading.Thread(target=read, daemon=True).start()


@dataclass
class Comparison:
    """One run against the reference, sample by sample."""

    choices: int  # cloze choices compared
    max_abs_ll: float  # max |delta loglikelihood| over them
    mean_abs_ll: float
    answers_changed: int  # cloze documents whose argmax choice differs
    greedy_flags_changed: int  # choices whose is_greedy differs
    rolling_docs: int
    max_abs_rolling: float  # max |delta sum| over the rolling documents
    mean_abs_rolling: float
    generations: int
    generations_identical: int
    first_differing: tuple[int, str, str] | None  # (doc id, reference, this run)
    accuracy: float  # the cloze acc of this run
    reference_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(reference: Run, other: Run) -> Comparison:
    """Compare ``other`` with ``reference`` sample by sample (the same documents)."""
    ref, got = reference.samples, other.samples
    assert ref[CLOZE].keys() == got[CLOZE].keys(), "the runs scored different cloze documents"
    deltas, changed, flags = [], 0, 0
    for doc, choices in ref[CLOZE].items():
        mine = got[CLOZE][doc]
        deltas += [abs(a[0] - b[0]) for a, b in zip(choices, mine, strict=True)]
        flags += sum(a[1] != b[1] for a, b in zip(choices, mine, strict=True))
        best = max(range(len(choices)), key=lambda j: choices[j][0])
        changed += best != max(range(len(mine)), key=lambda j: mine[j][0])
    rolling = [abs(ref[ROLLING][d] - got[ROLLING][d]) for d in ref[ROLLING]]
    same = [ref[GREEDY][d] == got[GREEDY][d] for d in ref[GREEDY]]
    first = next(
        (
            (d, ref[GREEDY][d], got[GREEDY][d])
            for d in ref[GREEDY]
            if ref[GREEDY][d] != got[GREEDY][d]
        ),
        None,
    )
    return Comparison(
        choices=len(deltas),
        max_abs_ll=max(deltas),
        mean_abs_ll=sum(deltas) / len(deltas),
        answers_changed=changed,
        greedy_flags_changed=flags,
        rolling_docs=len(rolling),
        max_abs_rolling=max(rolling),
        mean_abs_rolling=sum(rolling) / len(rolling),
        generations=len(same),
        generations_identical=sum(same),
        first_differing=first,
        accuracy=other.metrics[CLOZE]["acc"],
        reference_accuracy=reference.metrics[CLOZE]["acc"],
    )
