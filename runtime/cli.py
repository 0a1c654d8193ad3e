"""``gpt2-generate``: parse the flags and call :class:`Generator` with settings of the same names.

Text streams to stdout as it is generated; ``--json`` prints one object instead. User errors
become one sentence on stderr and exit code 1; Ctrl-C exits 130. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .api import DEFAULT_PROVIDER, load
from .bundle import MANIFEST, MODEL_FILE
from .cli_errors import report, user_errors
from .errors import EdgeError
from .generate import Generator
from .settings import resolve_settings

MODELS_DIR = Path("models")
STDIN_PROMPT = "-"
INTERACTIVE_PROMPT = "> "

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt; '-' reads it from stdin.", show_default=False)
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Bundle folder (default: the one bundle in models/)."),
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
        list[str] | None, typer.Option(help="Stop string (repeat the flag for several).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    truncate: Annotated[
        str | None, typer.Option(help="'left': drop the oldest prompt tokens that do not fit.")
    ] = None,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Keep going past end-of-text.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming.")
    ] = False,
    provider: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = DEFAULT_PROVIDER,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads.")] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Prompt loop until end of input.")
    ] = False,
) -> None:
    """Generate text from a gpt2-edge bundle, without PyTorch."""
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
        stop=stop or None,
        seed=seed,
        truncate=truncate,
        ignore_eos=ignore_eos or None,
    )
    with user_errors():
        run(prompt, model, settings, json_output, provider, threads, interactive)


def run(
    prompt: str | None,
    model: Path | None,
    settings: dict[str, Any],
    json_output: bool,
    provider: str,
    threads: int | None,
    interactive: bool,
) -> None:
    """Check the cheap things first (settings, input), then load the model and generate."""
    resolve_settings(None, **settings)  # invalid values fail before the model is loaded
    if not interactive:
        prompt = read_prompt(prompt)
    generator = load(model if model is not None else default_model(MODELS_DIR), provider, threads)
    for notice in generator.notices:
        typer.echo(notice, err=True)
    if interactive:
        interact(generator, settings, json_output)
    else:
        answer(generator, prompt or "", settings, json_output)


def answer(generator: Generator, prompt: str, settings: dict[str, Any], json_output: bool) -> None:
    """Generate for one prompt: stream the text, or print one JSON object."""
    if json_output:
        result = generator.generate(prompt, **settings)
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False))  # type: ignore[union-attr]
        return
    for piece in generator.stream(prompt, **settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def interact(generator: Generator, settings: dict[str, Any], json_output: bool) -> None:
    """Read prompts line by line until end of input; each one is answered on its own.

    A user error in one turn (say, a line that is too long) is reported and the loop goes on.
    """
    while True:
        sys.stderr.write(INTERACTIVE_PROMPT)
        sys.stderr.flush()
        line = sys.stdin.buffer.readline()
        if not line:
            sys.stderr.write("\n")
            return
        try:
            answer(generator, decode_utf8(line, "The input").rstrip("\r\n"), settings, json_output)
        except EdgeError as exc:  # a bad line in the loop is reported, and the loop goes on
            report(exc)


def read_prompt(prompt: str | None) -> str:
    """The prompt argument, or stdin for '-'; text that is not UTF-8 is an error."""
    if prompt is None:
        raise EdgeError("No prompt given; pass one, or '-' to read it from stdin.")
    if prompt != STDIN_PROMPT:
        return check_utf8(prompt, "The prompt")
    return decode_utf8(sys.stdin.buffer.read(), "Standard input")


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


def default_model(models: Path) -> Path:
    """The one bundle under ``models``; an error naming the candidates otherwise."""
    found = sorted(p for p in models.iterdir() if is_bundle(p)) if models.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise EdgeError(
            f"No --model given and {models}/ holds no bundle; export one with gpt2-export "
            "or pass --model DIR."
        )
    names = ", ".join(p.name for p in found)
    raise EdgeError(f"No --model given and {models}/ holds several bundles ({names}); pick one.")


def is_bundle(folder: Path) -> bool:
    """A bundle or a plain Optimum export; hidden folders (exports in progress) are not."""
    return (
        not folder.name.startswith(".")
        and folder.is_dir()
        and (
            (folder / MANIFEST).is_file()
            or ((folder / "config.json").is_file() and (folder / MODEL_FILE).is_file())
        )
    )


def main() -> None:
    """Entry point of ``gpt2-generate``."""
    app()
