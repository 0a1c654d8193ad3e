"""A batch job from INPUT to OUTPUT: check everything first, skip what OUTPUT holds, run the
rest through a pool with as many requests in flight as keep its batches full, and append each
answer as it comes.

Order of the checks, each a sentence before any work: the arguments, INPUT (:mod:`.jobfile`),
OUTPUT's place (:func:`.output.check_output`), what OUTPUT holds (another INPUT's results are
refused), the model (loaded by the pool). OUTPUT is created only after all of them pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import EdgeError

from .engine import DEFAULT_MAX_BATCH, DEFAULT_PROVIDER, MAX_BATCH_LIMIT, model_path
from .jobfile import JobFile, Line, read_job
from .output import Appender, check_output, done_lines, invalid_record, result_record
from .pools import InProcessPool, Pool, WorkerLost
from .progress import Counts, Progress

MAX_WORKERS = 256


def run_batch(
    input: Path,
    output: Path,
    model: Path | None = None,
    workers: int = 1,
    ray: str | None = None,
    max_batch: int | None = None,
    threads: int | None = None,
    provider: str | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[Counts], Progress] = Progress,
) -> Counts:
    """Run every request of ``input`` that ``output`` does not hold yet; append the answers.

    Args:
        input: the batch file (OpenAI's batch format).
        output: the results file (OpenAI's batch output format); appended to when it exists.
        model: the bundle folder, or the name of one in ``models/`` (default: as gpt2-serve).
        workers: generators working at once: processes on this machine, or Ray actors.
        ray: a Ray cluster's address (``host:port``, ``auto``), or ``local`` to start one here;
            None runs on this machine.
        max_batch: most rows each generator decodes together (default: gpt2-serve's, 16).
        threads: onnxruntime threads per generator (default: this machine's CPUs shared out
            between the workers; with Ray, the cluster's).
        provider: ``cpu``, ``cuda`` or ``auto`` (default ``auto``).
        log: where to say what runs and the counts at the end.
        progress: shows the progress (default: a bar on a terminal, lines elsewhere).

    Raises:
        EdgeError: a bad argument, INPUT, OUTPUT or model (before any work), OUTPUT that cannot
            be written, or a worker that stopped (the lines already written stay whole).
    """
    max_batch = DEFAULT_MAX_BATCH if max_batch is None else max_batch
    provider = DEFAULT_PROVIDER if provider is None else provider
    _check_arguments(workers, max_batch)
    job = read_job(input)
    check_output(output)
    done = done_lines(output, job.sha256)
    todo = [line for line in job.lines if line.number not in done]
    counts = Counts(total=len(job.lines), done_before=len(job.lines) - len(todo))
    if not todo:
        log(f"gpt2-batch: all {counts.total} requests are in {output} already; nothing to run.")
        return counts
    path, notice = model_path(model, provider)
    pool = _pool(path, workers, ray, max_batch, threads, provider)
    before = f" ({counts.done_before} done before)" if counts.done_before else ""
    try:
        pool.open()
        for line in [notice, *pool.notices]:
            if line:
                log(line)
        where = pool.describe()
        log(f"gpt2-batch: {len(todo)} of {counts.total} requests to run{before} on {where}.")
        with Appender(output) as out:
            # Read again under the lock: a run that ended meanwhile may have done more.
            done = done_lines(output, job.sha256)
            todo = [line for line in todo if line.number not in done]
            counts.done_before = len(job.lines) - len(todo)
            with progress(counts) as bar:
                asyncio.run(_drive(job, todo, pool, out, bar))
        log(bar.summary())
    finally:
        pool.close()
    return counts


def _check_arguments(workers: int, max_batch: int) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise EdgeError(f"--workers must be from 1 to {MAX_WORKERS}, got {workers}.")
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise EdgeError(f"--max-batch must be from 1 to {MAX_BATCH_LIMIT}, got {max_batch}.")


def _pool(
    path: Path, workers: int, ray: str | None, max_batch: int, threads: int | None, provider: str
) -> Pool:
    model_id = path.resolve().name  # what gpt2-serve calls it, so bodies name it alike
    if ray is not None:
        from .ray_run import RayPool

        return RayPool(ray, path, model_id, workers, threads, max_batch, provider)
    if workers > 1:
        from .workers import WorkerPool

        return WorkerPool(path, model_id, workers, threads, max_batch, provider)
    return InProcessPool(path, model_id, threads, max_batch, provider)


async def _drive(job: JobFile, todo: list[Line], pool: Pool, out: Appender, bar: Progress) -> None:
    """Keep ``pool.slots`` requests in flight, in INPUT's order; write each answer as it comes.
    The first failure (OUTPUT not writable, a worker lost) stops the rest."""
    free = asyncio.Semaphore(pool.slots)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def one(line: Line) -> None:
        try:
            url, body = line.request()
            status, answer = await pool.run(url, body)
        finally:
            free.release()
        out.write(result_record(job.sha256, line.number, line.custom_id or "", status, answer))
        bar.add(status == 200, _tokens(status, answer))

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            errors.append(error)

    try:
        for line in todo:
            if line.problem is not None:  # its error line needs no model
                out.write(invalid_record(job.sha256, line.number, line.custom_id, line.problem))
                bar.add(False)
                continue
            await free.acquire()
            if errors:
                break
            task = asyncio.create_task(one(line))
            tasks.add(task)
            task.add_done_callback(finished)
        while tasks and not errors:
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if errors:
        error = errors[0]
        if isinstance(error, WorkerLost):
            raise EdgeError(str(error)) from None
        raise error


def _tokens(status: int, answer: dict[str, Any]) -> int:
    usage = answer.get("usage") if status == 200 else None
    return int(usage.get("completion_tokens", 0)) if isinstance(usage, dict) else 0
