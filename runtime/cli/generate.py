"""``gpt2-generate``: parse the flags and call :class:`Generator` with settings of the same names.

Text streams to stdout as it is generated; ``--json`` prints one object instead. User errors
become one sentence on stderr and exit code 1, usage errors one line and exit code 2; Ctrl-C
exits 130, also while the libraries are still loading. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

from .startup import guarded_imports

# Ctrl-C while the libraries load ends the command as a later one does: 130, no traceback
with guarded_imports():
    import json
    import re
    from pathlib import Path
    from typing import Annotated, Any

    import typer

    from ..api import DEFAULT_PROVIDER, check_runtime_arguments, load, pick_model
    from ..contract.files import MAX_TEXT_BYTES, mib, read_bounded, read_line_bounded
    from ..contract.models_dir import MODELS_DIR, listing
    from ..errors import EdgeError
    from ..generation.generator import Generator, Settings
    from ..settings.resolve import resolve_user_settings
    from .errors import VERSION_HELP, EdgeCommand, report, run_app, show_version, user_errors

STDIN_PROMPT = "-"
INTERACTIVE_PROMPT = "> "
# The escapes --stop understands, so that a shell's "\n\n" can mean two newlines.
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
# A backslash and what follows it: \u with up to four hex digits, any one character, or nothing.
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,4}|.?)", re.DOTALL)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=EdgeCommand)
def generate(
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The prompt; '-' reads it from stdin (one trailing newline is dropped).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle folder, or the name of one in models/ (default: the one bundle in "
            "models/; among several, the int8 one on a CPU, the fp16 one on CUDA).",
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens to generate (default: the bundle's, else 128).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="0 is greedy.")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 turns it off.")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 turns it off.")] = None,
    min_p: Annotated[float | None, typer.Option(help="0 turns it off.")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="1 turns it off.")] = None,
    presence_penalty: Annotated[float | None, typer.Option(help="0 turns it off.")] = None,
    frequency_penalty: Annotated[float | None, typer.Option(help="0 turns it off.")] = None,
    no_repeat_ngram_size: Annotated[int | None, typer.Option(help="0 turns it off.")] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            help="Stop string (repeat the flag for several); \\n, \\t, \\r, \\\\ and \\uXXXX "
            "in it are escapes, so --stop '\\n\\n' stops at a blank line (any other "
            "backslash is an error: write \\\\ for one).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Prompt plus new tokens, as transformers counts it (replaces --max-new-tokens)."
        ),
    ] = None,
    num_beams: Annotated[
        int | None, typer.Option(help="Beam search with N beams; 1 is off.")
    ] = None,
    length_penalty: Annotated[
        float | None, typer.Option(help="Beam score = log-probability / length ** this (1.0).")
    ] = None,
    early_stopping: Annotated[
        str | None,
        typer.Option(
            help="Beam search stops: 'true' when N beams finished, 'false' by "
            "transformers' heuristic (default), 'never' at the budget only."
        ),
    ] = None,
    num_return_sequences: Annotated[
        int | None,
        typer.Option(help="Sequences per prompt: the best beams, or independent samples."),
    ] = None,
    logprobs: Annotated[
        int | None,
        typer.Option(
            help="With --json: each token's log-probability and the K likeliest "
            "alternatives (0 to 20)."
        ),
    ] = None,
    draft: Annotated[
        str | None,
        typer.Option(
            help="'prompt-lookup': draft tokens from earlier text and verify them in "
            "one step (off by default)."
        ),
    ] = None,
    truncate: Annotated[
        str | None,
        typer.Option(
            help="'left': drop the oldest prompt tokens so that --max-new-tokens new ones fit "
            "the context (without it, a prompt that fits is kept whole and generation stops at "
            "the context's end)."
        ),
    ] = None,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Keep going past end-of-text.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming.")
    ] = False,
    provider: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = DEFAULT_PROVIDER,
    threads: Annotated[
        int | None,
        typer.Option(help="onnxruntime intra-op threads, 1 to the CPUs available."),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="Prompt loop until end of input (Ctrl-D); Ctrl-C stops an answer. A PROMPT "
            "argument is the first turn.",
        ),
    ] = False,
    list_bundles: Annotated[
        bool,
        typer.Option(
            "--list",
            callback=show_bundles,
            is_eager=True,
            help="List the bundles in models/ (name, precision, size, context) and exit.",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP)
    ] = False,
) -> None:
    """Generate text from a gpt2-edge bundle, without PyTorch."""
    with user_errors():
        settings: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            stop=[unescape(s) for s in stop] if stop else None,
            seed=seed,
            truncate=truncate,
            ignore_eos=ignore_eos or None,
            max_length=max_length,
            num_beams=num_beams,
            length_penalty=length_penalty,
            early_stopping=parse_early_stopping(early_stopping),
            num_return_sequences=num_return_sequences,
            logprobs=logprobs,
            draft=draft,
        )
        run(prompt, model, settings, json_output, provider, threads, interactive)


def show_bundles(value: bool) -> None:
    """``--list``: the bundles in models/ as a table, then exit."""
    if not value:
        return
    found = listing(MODELS_DIR)
    if not found:
        typer.echo(f"{MODELS_DIR}/ holds no bundle; export one with gpt2-export.")
        raise typer.Exit()
    rows = [("NAME", "PRECISION", "SIZE", "CONTEXT")] + [
        (b.name, b.precision, f"{b.size / 2**20:,.1f} MiB", str(b.context or "?")) for b in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        typer.echo("  ".join(cells).rstrip())
    raise typer.Exit()


def run(
    prompt: str | None,
    model: Path | None,
    settings: dict[str, Any],
    json_output: bool,
    provider: str,
    threads: int | None,
    interactive: bool,
) -> None:
    """Check the cheap things first (the flags alone, the input), then load the model, resolve
    the settings with its defaults into the typed objects generation takes, and generate."""
    _, options = resolve_user_settings(None, **settings)  # a bad value fails before any loading
    if options.logprobs is not None and not json_output:
        raise EdgeError("--logprobs shows in the --json output only; add --json.", "logprobs")
    choice = check_runtime_arguments(provider, threads)
    if interactive and prompt == STDIN_PROMPT:
        raise EdgeError(
            "--interactive reads its prompts from stdin, so the prompt cannot be '-' as well."
        )
    if not interactive:
        prompt = read_prompt(prompt)
    elif prompt is not None:
        prompt = check_utf8(prompt, "The prompt")
    path, choice, notice = pick_model(model, choice)
    generator = load(path, choice, threads)
    resolved = generator.resolve(**settings)  # with the bundle's defaults: the one resolution
    for line in [notice, *generator.notices]:
        if line:
            typer.echo(line, err=True)
    if interactive:
        interact(generator, resolved, json_output, prompt)
    else:
        answer(generator, prompt or "", resolved, json_output)


def answer(generator: Generator, prompt: str, settings: Settings, json_output: bool) -> None:
    """Generate for one prompt: stream the text, or print one JSON object.

    Several sequences (``--num-return-sequences``) print as ``{"choices": [...]}`` with one
    object per sequence, or as texts separated by a blank line; beam search prints at the end.
    """
    sampling, options = settings
    several = options.num_return_sequences > 1
    if json_output or several or options.beam_search:
        results = generator.complete([prompt], sampling, options)
        if not json_output:
            typer.echo("\n\n".join(r.text for r in results))
        elif several:
            choices = [{"index": i, **r.to_json()} for i, r in enumerate(results)]
            typer.echo(json.dumps({"choices": choices}, ensure_ascii=False))
        else:
            typer.echo(json.dumps(results[0].to_json(), ensure_ascii=False))
        return
    for event in generator.events([prompt], sampling, options):
        if event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def interact(
    generator: Generator, settings: Settings, json_output: bool, first: str | None = None
) -> None:
    """Answer ``first``, then prompts read line by line until end of input.

    Blank lines are skipped. A user error in one turn (a line with more tokens than the context,
    or not UTF-8) is reported and the loop goes on; Ctrl-C stops the answer being written and
    returns to the prompt, and Ctrl-C at the prompt ends the loop (exit 130), as does Ctrl-D
    (exit 0). A line longer than :data:`MAX_TEXT_BYTES` ends the loop with one sentence (exit
    1): its rest cannot be skipped without reading it, and it may never end (``/dev/zero``).
    """
    if first is not None and first.strip():
        turn(generator, first, settings, json_output)
    while True:
        sys.stderr.write(INTERACTIVE_PROMPT)
        sys.stderr.flush()
        try:
            line = read_line_bounded(
                sys.stdin.buffer,
                MAX_TEXT_BYTES,
                f"An input line is longer than {mib(MAX_TEXT_BYTES)}, the most gpt2-generate "
                "reads; give shorter lines.",
            )
        except EdgeError:
            sys.stderr.write("\n")  # the prompt's line ends before the sentence: no Enter came
            raise
        if not line:
            sys.stderr.write("\n")
            return
        turn(generator, line, settings, json_output)


def turn(generator: Generator, line: str | bytes, settings: Settings, json_output: bool) -> None:
    """One turn of the loop: a line in, an answer (or one error line) out."""
    try:
        text = line if isinstance(line, str) else drop_newline(decode_utf8(line, "The input"))
        if text.strip():
            answer(generator, text, settings, json_output)
    except EdgeError as exc:  # a bad line in the loop is reported, and the loop goes on
        report(exc)
    except KeyboardInterrupt:  # stops this answer only
        sys.stdout.write("\n")
        sys.stdout.flush()


def read_prompt(prompt: str | None) -> str:
    """The prompt argument, or stdin for '-' without its trailing newline; UTF-8 only, and from
    stdin at most :data:`MAX_TEXT_BYTES`."""
    if prompt is None:
        raise EdgeError("No prompt given; pass one, or '-' to read it from stdin.")
    if prompt != STDIN_PROMPT:
        return check_utf8(prompt, "The prompt")
    too_long = (
        f"Standard input holds more than {mib(MAX_TEXT_BYTES)}, the most gpt2-generate reads; "
        f"pass a shorter prompt (with --truncate left, its end: tail -c {MAX_TEXT_BYTES >> 20}M)."
    )
    data = read_bounded(sys.stdin.buffer, MAX_TEXT_BYTES, too_long)
    return drop_newline(decode_utf8(data, "Standard input"))


def drop_newline(text: str) -> str:
    """``text`` without one trailing "\\n" or "\\r\\n" (the one ``echo`` and Enter add)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgeError(f"{what} is not valid UTF-8 text.") from None


def check_utf8(text: str, what: str) -> str:
    """Undecodable bytes reach Python as lone surrogates; reject them here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EdgeError(f"{what} is not valid UTF-8 text.") from None
    return text


def parse_early_stopping(value: str | None) -> bool | str | None:
    """``--early-stopping``'s word as the setting: true, false or never (any case)."""
    if value is None:
        return None
    words: dict[str, bool | str] = {"true": True, "false": False, "never": "never"}
    if value.lower() not in words:
        raise EdgeError(f"--early-stopping must be true, false or never, got {value!r}.")
    return words[value.lower()]


def unescape(text: str) -> str:
    """``text`` with ``\\n``, ``\\t``, ``\\r``, ``\\\\`` and ``\\uXXXX`` replaced.

    Raises:
        EdgeError: any other backslash (an unknown or incomplete escape, or one at the end), or
            a ``\\uXXXX`` escape that names half of a surrogate pair.
    """
    return _ESCAPE.sub(lambda match: _unescaped(match.group(1)), text)


def _unescaped(code: str) -> str:
    """What a backslash and ``code`` stand for in ``--stop``; EdgeError if no escape."""
    if code in _ESCAPES:
        return _ESCAPES[code]
    if code.startswith("u") and len(code) == 5:
        char = chr(int(code[1:], 16))
        if "\ud800" <= char <= "\udfff":
            raise EdgeError(f"--stop holds \\{code}, half of a surrogate pair.")
        return char
    if code.startswith("u"):
        raise EdgeError(f"--stop holds \\{code}, an incomplete escape: \\u takes 4 hex digits.")
    if not code:
        shown = "a backslash at its end"
    else:
        shown = f"\\{code}" if code.isprintable() else f"a backslash before {code!r}"
    raise EdgeError(
        f"--stop holds {shown}, which is no escape; the escapes are \\n, \\t, \\r, \\\\ "
        "(a backslash) and \\uXXXX."
    )


def main() -> None:
    """Entry point of ``gpt2-generate``."""
    run_app(app)
