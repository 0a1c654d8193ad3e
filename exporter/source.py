"""Resolve the MODEL argument (a hub id or a local folder) to a checked GPT-2 checkpoint folder.

The config is checked before any weights are fetched, so a wrong model fails in a second, and the
hub is asked with a short timeout so a machine without network fails fast with a hint to pass a
local folder.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.contract.files import not_a_regular_file, read_json
from gpt2_edge.runtime.errors import EdgeError

from .checkpoint import check_config, check_weights_match
from .disk_errors import RESOURCE_ERRNOS, USER_ERRNOS
from .errors import ExportError

HUB_TIMEOUT_S = 10.0  # per hub request; huggingface_hub's default would retry for much longer
ARCHITECTURE = "GPT2LMHeadModel"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CONFIG_FILES = ["config.json", "generation_config.json"]
_TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
]
# A hub id is "name" or "owner/name"; anything else that does not exist is a missing folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class Source:
    """A local checkpoint folder ready to export, and where it came from."""

    path: Path  # folder with config.json, weights and tokenizer files
    model: str  # what the user passed: hub id or folder
    name: str  # short name for the default output folder, e.g. "gpt2"
    config: dict[str, Any]
    revision: str | None = None  # hub commit hash when downloaded

    def weight_bytes(self) -> int:
        """Size of the checkpoint's weight files (an estimate of the fp32 ONNX file's size)."""
        files = [*self.path.glob("*.safetensors"), *self.path.glob("pytorch_model*.bin")]
        return sum(f.stat().st_size for f in files)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "path": str(self.path), "revision": self.revision}


def model_name(model: str) -> str:
    """The short name used for the default output folder: last part of a hub id or folder."""
    path = Path(model).expanduser()
    if path.is_dir():  # "." or "../ckpt/" name the folder, not the text typed
        return path.resolve().name or "model"
    return Path(model.rstrip("/\\")).name or "model"


def local_folder(model: str) -> Path | None:
    """The checkpoint folder ``model`` names, when it is a local folder; None for a hub id."""
    folder = Path(model).expanduser()
    return folder.resolve() if folder.is_dir() else None


def resolve_source(model: str) -> Source:
    """Return the checkpoint for ``model``, downloading it from the hub when it is not a folder."""
    if not model.strip():  # Path("") is ".": the working folder would be taken for a checkpoint
        raise ExportError("The model is empty; pass a hub id or a checkpoint folder.")
    folder = Path(model).expanduser()
    if folder.is_dir():
        return _local_source(folder, model)
    if folder.exists():
        raise ExportError(f"{model} is a file, not a checkpoint folder or a hub id.")
    if not _HUB_ID.match(model) or model.startswith((".", "~")):
        raise ExportError(f"Folder {model} does not exist (and it is not a valid hub id).")
    return _hub_source(model)


def _local_source(folder: Path, model: str) -> Source:
    config = read_config(folder, model)
    for name in WEIGHT_FILES:  # a FIFO there would hang transformers' loader
        path = folder / name
        odd = path.exists() and not_a_regular_file(path)
        if odd:
            raise ExportError(odd)
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ExportError(
            f"{model} has a config.json but no model weights (model.safetensors or "
            "pytorch_model.bin); it is not a complete transformers checkpoint."
        )
    return Source(folder.resolve(), model, model_name(str(folder.resolve())), config)


def read_config(folder: Path, model: str) -> dict[str, Any]:
    """Read and check ``config.json``: it must describe a GPT-2 causal language model."""
    path = folder / "config.json"
    if not path.exists():  # one that is a FIFO or a folder is named by checkpoint_json
        raise ExportError(
            f"{model} is not a transformers checkpoint folder (it has no config.json)."
        )
    config = checkpoint_json(path)
    check_gpt2(config, model)
    return config


def checkpoint_json(path: Path) -> Any:
    """A JSON file of the checkpoint, read as the runtime reads a bundle's: a regular file of at
    most 16 MiB (a FIFO or a link to /dev/zero is one sentence, not a hang)."""
    try:
        return read_json(path, "a checkpoint")
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist.") from None
    except EdgeError as exc:
        raise ExportError(str(exc)) from None


def check_gpt2(config: Any, model: str) -> None:
    if not isinstance(config, dict):
        raise ExportError(f"The config.json of {model} is not a JSON object.")
    kind = config.get("model_type")
    if kind != "gpt2":
        raise ExportError(
            f"{model} is a '{kind}' model, not GPT-2; gpt2-export converts GPT-2 checkpoints only."
        )
    architectures = config.get("architectures") or [ARCHITECTURE]
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ExportError(f"The config.json of {model} gives architectures that are not names.")
    if ARCHITECTURE not in architectures:
        raise ExportError(
            f"{model} is a GPT-2 {', '.join(architectures)} without a language-model head; "
            f"gpt2-export needs a {ARCHITECTURE} checkpoint."
        )
    check_config(config, model)  # its sizes and fields, before any weight is downloaded


def check_weights(source: Source) -> None:
    """Open the weight files transformers will load, so a corrupt or truncated one fails now,
    then check their tensors' shapes against the config (:mod:`.checkpoint`).

    Reading the headers takes milliseconds (a zip archive's checksums about a second per GB);
    without this, a damaged file fails 10-30 s into the export with the loader's traceback, or
    (a pytorch_model.bin whose data was damaged) loads silently.
    """
    for name in WEIGHT_FILES:
        path = source.path / name
        if not path.is_file():
            continue
        shards = _index_shards(path) if name.endswith(".index.json") else [path]
        for shard in shards:
            if shard.suffix == ".safetensors":
                _check_safetensors(shard)
            else:
                _check_torch_file(shard)
        # transformers loads the first of WEIGHT_FILES that exists
        check_weights_match(source.path, shards, source.config, source.model)
        return


def _index_shards(index: Path) -> list[Path]:
    try:
        weight_map = checkpoint_json(index)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ExportError, KeyError, TypeError, AttributeError):
        raise ExportError(f"{index} is not a readable index of weight shards.") from None
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise ExportError(f"{index} lists weight shards that are missing: {', '.join(missing)}.")
    return [index.parent / n for n in names]


def _check_safetensors(path: Path) -> None:
    try:
        from safetensors import safe_open
    except ImportError:  # no export extra: the export itself says so
        return
    try:
        # The header must parse and its tensors must exactly cover the file.
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as exc:  # SafetensorError has no importable base; OSError for access
        raise ExportError(
            f"{path} is not a readable safetensors file ({_first_line(exc)}); it is corrupt or "
            "truncated, so download or save the checkpoint again."
        ) from None


def _check_torch_file(path: Path) -> None:
    """torch.save's zip archive: the directory must be intact and every member's CRC match."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        if _legacy_pickle(path):  # torch < 1.6 wrote a bare pickle: nothing cheap to check
            return
        raise ExportError(
            f"{path} is not a readable PyTorch checkpoint (not a complete zip archive); it is "
            "corrupt or truncated, so download or save the checkpoint again."
        ) from None
    except OSError as exc:
        raise ExportError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if damaged is not None:
        raise ExportError(
            f"{path} is corrupt (the checksum of {damaged} does not match); download or save "
            "the checkpoint again."
        )


def _legacy_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"  # pickle's PROTO opcode


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")


def _hub_source(repo_id: str) -> Source:
    # Config first: a wrong model type should not cost a multi-GB download.
    snapshot = _download(repo_id, _CONFIG_FILES)
    config = read_config(snapshot, repo_id)
    snapshot = _download(
        repo_id,
        [*_CONFIG_FILES, *_TOKENIZER_FILES, "*.safetensors", "model.safetensors.index.json"],
    )
    if not any((snapshot / name).is_file() for name in WEIGHT_FILES):
        snapshot = _download(repo_id, ["pytorch_model*.bin", "pytorch_model.bin.index.json"])
    if not any((snapshot / name).is_file() for name in WEIGHT_FILES):
        raise ExportError(f"Hub model {repo_id} has no PyTorch weights to export.")
    return Source(snapshot, repo_id, model_name(repo_id), config, revision=snapshot.name)


def _download(repo_id: str, patterns: list[str]) -> Path:
    """snapshot_download with our errors; the snapshot folder's name is the commit hash."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=HUB_TIMEOUT_S))
    except GatedRepoError:
        raise ExportError(
            f"Hub model {repo_id} is gated; accept its licence on the hub and log in with "
            "`hf auth login`, or pass a local checkpoint folder."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError):
        raise ExportError(
            f"{repo_id} is neither a local folder nor a model on the Hugging Face hub."
        ) from None
    except LocalEntryNotFoundError:
        raise ExportError(hub_unreachable(repo_id)) from None
    except OSError as exc:
        if exc.errno not in RESOURCE_ERRNOS:
            raise ExportError(f"{hub_unreachable(repo_id)[:-1]} ({type(exc).__name__}).") from None
        raise ExportError(
            f"Cannot download {repo_id} into the Hugging Face cache: {USER_ERRNOS[exc.errno]} "
            f"({exc.strerror})."
        ) from None
    except Exception as exc:
        if not is_network_error(exc):
            raise
        raise ExportError(f"{hub_unreachable(repo_id)[:-1]} ({type(exc).__name__}).") from None


def is_network_error(exc: BaseException) -> bool:
    """Connection and timeout errors of the HTTP clients huggingface_hub uses (requests, httpx)."""
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, (OSError, TimeoutError)) or module in ("requests", "httpx", "urllib3")


def hub_unreachable(repo_id: str) -> str:
    return (
        f"Cannot reach the Hugging Face hub to download {repo_id} and it is not in the local "
        "cache; connect once, or pass a local checkpoint folder instead."
    )
