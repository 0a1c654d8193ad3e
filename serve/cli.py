"""``gpt2-serve``: parse the flags, load the bundle once, bind, and serve until Ctrl-C.

User errors (a bad flag value, a bundle that cannot load, a port in use, the serve extra
missing) are one sentence on stderr and exit code 1, as in the other commands.
"""

from __future__ import annotations

from gpt2_edge.runtime import guarded_imports

# Ctrl-C while the libraries load ends the command as a later one does: 130, no traceback
with guarded_imports():
    import importlib
    import os
    from pathlib import Path
    from typing import Annotated

    import typer
    from gpt2_edge.runtime import (
        DEFAULT_PROVIDER,
        VERSION_HELP,
        EdgeCommand,
        EdgeError,
        load,
        pick_model,
        run_app,
        show_version,
        user_errors,
    )

    from .config import (
        ANY_MODEL,
        DEFAULT_HOST,
        DEFAULT_LOG_FORMAT,
        DEFAULT_LOG_LEVEL,
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_QUEUE,
        DEFAULT_PORT,
        LOG_FORMATS,
        LOG_LEVELS,
        MAX_NAME_CHARS,
    )

API_KEY_ENV = "GPT2_SERVE_API_KEY"
MAX_BATCH_LIMIT = 256  # rows; each holds a KV cache of up to the whole context
SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=EdgeCommand)
def serve(
    ctx: typer.Context,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle folder, or the name of one in models/ (default: as gpt2-generate).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; one that other machines can reach prints a warning "
            "unless --api-key is set."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port; 0 takes a free one.")] = DEFAULT_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_ENV,
            help="Require 'Authorization: Bearer KEY' on the API routes; printable ASCII "
            "without spaces, as HTTP headers carry it.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Origin allowed to call from a browser (repeat for several); "
            "CORS is off without it."
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="Most rows (choices of requests) decoded together.")
    ] = DEFAULT_MAX_BATCH,
    max_queue: Annotated[
        int, typer.Option(help="Most requests waiting for a row; more get a 503.")
    ] = DEFAULT_MAX_QUEUE,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime intra-op threads, 1 to the CPUs available.")
    ] = None,
    provider: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = DEFAULT_PROVIDER,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(
            help="A name clients may pass as model (repeat for several; /v1/models lists them, "
            "the first answers requests that name none); '*' takes any name, for clients that "
            "send their own default (default: the bundle folder's name).",
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            help="debug, info (a line per request on stderr), warning (errors only) or error."
        ),
    ] = DEFAULT_LOG_LEVEL,
    log_format: Annotated[
        str, typer.Option(help="text, or json (one object a line).")
    ] = DEFAULT_LOG_FORMAT,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP)
    ] = False,
) -> None:
    """Serve a gpt2-edge bundle over OpenAI's API, with a small page at /."""
    # By name: typer carries its own click (or not, when older), each with its own enum.
    source = ctx.get_parameter_source("api_key")
    from_env = getattr(source, "name", None) == "ENVIRONMENT"
    with user_errors():
        from .config import check_api_key  # the rule ServeConfig holds any key to

        api_key, where = given_api_key(api_key, from_env)
        check_api_key(api_key, where)
        check_logging(log_level, log_format)
        run(
            model, host, port, threads, provider, names=check_names(served_model_name),
            api_key=api_key, cors=tuple(cors_origins(cors_origin)), max_batch=max_batch,
            max_queue=max_queue, logging=(log_level.lower(), log_format.lower()),
        )  # fmt: skip


def cors_origins(values: list[str] | None) -> list[str]:
    """The ``--cors-origin`` values, each an origin (``scheme://host[:port]``) or ``*``."""
    origins = values or []
    for origin in origins:
        if origin != "*" and (
            "://" not in origin or origin.endswith("/") or origin.count("/") != 2
        ):
            raise EdgeError(
                f"--cors-origin must be an origin such as http://localhost:3000 (no path), "
                f"got {origin!r}."
            )
    return origins


def given_api_key(flag: str | None, from_env: bool) -> tuple[str | None, str]:
    """The key and where it came from, the flag or the environment variable: click reads an
    empty variable as unset, which would start an open server without a word, so it is read
    here too and refused as an empty ``--api-key`` is (:func:`.config.check_api_key`)."""
    if flag is None and API_KEY_ENV in os.environ:
        return os.environ[API_KEY_ENV], API_KEY_ENV
    return flag, API_KEY_ENV if from_env else "--api-key"


def check_names(given: list[str] | None) -> tuple[str, ...]:
    """The ``--served-model-name`` values, checked, once each."""
    for name in given or ():
        if not name.strip() or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise EdgeError(
                f"--served-model-name must be printable text of 1 to {MAX_NAME_CHARS} "
                f"characters, got {name[:MAX_NAME_CHARS]!r}."
            )
    return tuple(dict.fromkeys(given or ()))


def model_names(given: tuple[str, ...], bundle_name: str) -> tuple[str, ...]:
    """The names the server answers to: the bundle folder's name unless others are given; with
    only ``*`` given, any name, the bundle's listed."""
    if not [n for n in given if n != ANY_MODEL]:
        return (bundle_name, *given)
    return given


def check_logging(level: str, fmt: str) -> None:
    """``--log-level`` and ``--log-format``, each one of its words (any case)."""
    if level.lower() not in LOG_LEVELS:
        raise EdgeError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {level!r}.")
    if fmt.lower() not in LOG_FORMATS:
        raise EdgeError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}.")


def run(
    model: Path | None,
    host: str,
    port: int,
    threads: int | None,
    provider: str,
    *,
    names: tuple[str, ...],
    api_key: str | None,
    cors: tuple[str, ...],
    max_batch: int,
    max_queue: int,
    logging: tuple[str, str],
) -> None:
    """Check the flags, load the bundle, bind and serve."""
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise EdgeError(f"--max-batch must be from 1 to {MAX_BATCH_LIMIT}, got {max_batch}.")
    if max_queue < 0:
        raise EdgeError(f"--max-queue must be 0 or more, got {max_queue}.")
    if not 0 <= port <= 65535:
        raise EdgeError(f"--port must be from 0 to 65535, got {port}.")
    missing = [m for m in SERVE_MODULES if not _importable(m)]
    if missing:
        raise EdgeError(
            f"gpt2-serve needs the serve extra ({', '.join(missing)} missing): "
            "pip install 'gpt2-edge[serve]'."
        )
    from .access import configure_logging
    from .app import create_app
    from .config import ServeConfig
    from .server import bind, exposure_warning, serve, url

    path, choice, notice = pick_model(model, provider)
    gen = load(path, choice, threads)
    for line in [notice, *gen.notices]:
        if line:
            typer.echo(line, err=True)
    sock = bind(host, port)
    warning = exposure_warning(sock, api_key)
    if warning:
        typer.echo(warning, err=True)
    names = model_names(names, Path(path).resolve().name)
    config = ServeConfig(names, max_batch, max_queue, api_key, cors)
    configure_logging(*logging)
    typer.echo(
        f"gpt2-serve: {', '.join(config.listed)} on {url(sock)}/ (OpenAI API under /v1, page "
        "at /); Ctrl-C stops.",
        err=True,
    )
    serve(create_app(gen, config), sock)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def main() -> None:
    """Entry point of ``gpt2-serve``."""
    run_app(app)
