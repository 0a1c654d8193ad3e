"""``--ray ADDRESS``: the same job on a Ray cluster, one actor per worker, each with its own loaded
generator and running batch (the ``ray`` extra).

How the bundle reaches the workers: the driver reads every file of the bundle folder, notes its
SHA-256 and puts its bytes in Ray's object store; each actor writes them into a folder on its own
node (``<tmp>/gpt2-batch-bundles/<digest>``, shared by the actors of that node), refuses any file
whose SHA-256 is not the driver's, and loads that folder (``load`` then checks the files against
the manifest as always). No shared file system is needed, and no node runs another bundle than
the driver's.

``--ray local`` starts a one-machine cluster inside this command, on the loopback address only,
and stops it at the end; any other address (``host:port``, ``auto``) joins a running cluster,
from one of its nodes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import EdgeError, load

from .engine import BodyRunner
from .pools import WorkerLost, available_cpus, plural

LOCAL = "local"
START_TIMEOUT_S = 600.0  # for every actor to load its model (a big bundle on a busy cluster)
CACHE_FOLDER = "gpt2-batch-bundles"


class RayPool:
    """Ray actors, each with a generator.

    Args:
        address: the cluster (``host:port``, ``auto``), or ``local`` for one started here.
        path: the bundle, on this machine.
        model_id: the name request bodies may give as ``model``.
        workers: actors.
        threads: onnxruntime threads (and Ray CPUs) per actor (None: the cluster's CPUs shared
            out).
        max_batch: most rows each actor decodes together.
        provider: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(
        self,
        address: str,
        path: Path,
        model_id: str,
        workers: int,
        threads: int | None,
        max_batch: int,
        provider: str,
    ):
        self.address, self.path, self.model_id = address, path, model_id
        self.count, self.threads = workers, threads
        self.max_batch, self.provider = max_batch, provider
        self.slots = 0
        self.notices: list[str] = []
        self._ray: Any = None
        self._actors: list[Any] = []
        self._in_flight: list[int] = []

    def describe(self) -> str:
        where = "a local Ray cluster" if self.address == LOCAL else f"Ray at {self.address}"
        cpus = plural(self.threads, "CPU") + " each" if self.threads else "the CPUs shared out"
        workers = plural(self.count, "Ray worker")
        rows = plural(self.max_batch, "row")
        return f"{workers} ({cpus}, up to {rows} a step each) on {where}"

    def open(self) -> None:
        self._ray = ray = _connect(self.address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        threads = self.threads or max(1, cpus // self.count)
        if self.count * threads > cpus:
            raise EdgeError(
                f"The Ray cluster has {cpus} CPUs; {self.count} workers of {threads} threads "
                f"need {self.count * threads}."
            )
        names, hashes, blobs = bundle_files(self.path)
        refs = [ray.put(blob) for blob in blobs]
        del blobs
        actor = ray.remote(BundleWorker).options(num_cpus=threads)
        args = (names, hashes, self.model_id, threads, self.max_batch, self.provider)
        self._actors = [actor.remote(*args, *refs) for _ in range(self.count)]
        try:
            ready = ray.get([a.ready.remote() for a in self._actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise EdgeError(
                f"The Ray workers did not load the model within {START_TIMEOUT_S:.0f} s; is the "
                "cluster busy?"
            ) from None
        except ray.exceptions.RayError as exc:
            raise EdgeError(f"A Ray worker failed to start: {_first_line(exc)}") from None
        for problem, _, _ in ready:
            if problem:
                raise EdgeError(problem)
        self.threads = threads
        self.slots = sum(slots for _, slots, _ in ready)
        self.notices = sorted({n for _, _, notices in ready for n in notices})
        self._in_flight = [0] * self.count

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        number = min(range(self.count), key=self._in_flight.__getitem__)
        self._in_flight[number] += 1
        try:
            return await self._actors[number].run.remote(url, body)
        except self._ray.exceptions.RayActorError as exc:
            raise WorkerLost(
                f"Ray worker {number + 1} stopped ({_first_line(exc)}); OUTPUT holds every "
                "request finished before it: run the same command again to go on."
            ) from None
        finally:
            self._in_flight[number] -= 1

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            ray.kill(actor)
        ray.shutdown()  # a local cluster stops with it


def _connect(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise EdgeError("--ray needs the ray extra: pip install 'gpt2-edge[ray]'.") from None
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == LOCAL:
            # A one-machine cluster needs no other machine to reach it: Ray takes the loopback
            # address only where this is off (by default it listens on the machine's network
            # address), and then binds every port to 127.0.0.1.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(address=LOCAL, num_cpus=available_cpus(), include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise EdgeError(f"Cannot reach the Ray cluster at {address}: {_first_line(exc)}") from None
    return ray


def bundle_files(folder: Path) -> tuple[list[str], list[str], list[bytes]]:
    """The bundle's files (those directly in ``folder``): names, SHA-256s and bytes."""
    names, hashes, blobs = [], [], []
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for file in files:
            data = file.read_bytes()
            names.append(file.name)
            hashes.append(hashlib.sha256(data).hexdigest())
            blobs.append(data)
    except OSError as exc:
        raise EdgeError(f"Cannot read the bundle {folder}: {exc.strerror or exc}.") from None
    if not names:
        raise EdgeError(f"The bundle {folder} holds no files.")
    return names, hashes, blobs


def place_bundle(names: list[str], hashes: list[str], blobs: tuple[Any, ...]) -> Path:
    """The bundle as a folder on this node, every file checked against the driver's SHA-256."""
    listing = "\n".join(f"{h}  {n}" for n, h in zip(names, hashes, strict=True))
    digest = hashlib.sha256(listing.encode()).hexdigest()[:32]
    root = Path(tempfile.gettempdir()) / CACHE_FOLDER
    folder = root / digest
    if folder.is_dir() and _holds(folder, names, hashes):
        return folder
    staging = root / f".{digest}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, expected, blob in zip(names, hashes, blobs, strict=True):
            found = hashlib.sha256(blob).hexdigest()
            if found != expected:
                raise EdgeError(
                    f"The bundle file {name} reached Ray worker node {socket.gethostname()} with "
                    f"SHA-256 {found[:16]}..., not {expected[:16]}... as the driver sent it."
                )
            (staging / name).write_bytes(blob)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(folder)
    except OSError:  # a copy is there: another actor's, or a damaged one (then set aside)
        if not _holds(folder, names, hashes):
            trash = root / f".old.{digest}.{os.getpid()}"
            for source, target in ((folder, trash), (staging, folder)):
                try:
                    source.rename(target)
                except OSError:  # another actor of this node did it first
                    pass
            shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        if not _holds(folder, names, hashes):
            raise EdgeError(
                f"{folder} on Ray worker node {socket.gethostname()} does not hold the bundle "
                "sent; remove it."
            ) from None
    return folder


def _holds(folder: Path, names: list[str], hashes: list[str]) -> bool:
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    if present != sorted(names):
        return False
    return all(
        hashlib.sha256((folder / n).read_bytes()).hexdigest() == h
        for n, h in zip(names, hashes, strict=True)
    )


class BundleWorker:
    """A Ray actor: the bundle placed on its node, loaded once, answering request bodies.

    A user's mistake while it starts (a bundle that does not load, a bad thread count) is kept
    as a sentence for :meth:`ready`, so that the driver says it as every command does.
    """

    def __init__(
        self,
        names: list[str],
        hashes: list[str],
        model_id: str,
        threads: int,
        max_batch: int,
        provider: str,
        *blobs: Any,
    ):
        self.problem: str | None = None
        self.runner: BodyRunner | None = None
        self.notices: list[str] = []
        try:
            gen = load(place_bundle(names, hashes, blobs), provider, threads)
        except EdgeError as exc:
            self.problem = str(exc)
            return
        self.notices = [n for n in gen.notices if n]
        self.runner = BodyRunner(gen, model_id, max_batch)
        self.runner.start()

    def ready(self) -> tuple[str | None, int, list[str]]:
        """The start-up problem (or None), the requests worth having in flight, the notices."""
        return self.problem, self.runner.slots if self.runner else 0, self.notices

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self.runner is not None
        return await self.runner.run(url, body)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    return line if line.endswith(".") else f"{line}."
