"""Dask, as an optional extra (``pip install 'onnx-prune[dask]'``): shards and models on workers.

Nothing here imports Dask until a runner is opened, so a run without ``--workers`` or
``--scheduler`` never imports it. ``open_runner`` connects to a scheduler (``--scheduler
ADDRESS`` or ``DASK_SCHEDULER_ADDRESS``), starts a local cluster of N worker processes
(``--workers N``: one thread each, onnxruntime given cores / N intra-op threads, so the workers do
not oversubscribe the cores), or, for ``synchronous``, runs the same task graph in this process
with Dask's synchronous scheduler (no servers: for debugging and for measuring the overhead).

``DaskRunner.count`` splits a model's samples into shards of whole batches
(``shards.plan_shards``), runs ``shards.count_shard`` on each and adds the partial totals in
sample order, so the result is bit-identical to the one-piece run. ``DaskRunner.map`` runs one
task per item (zoo: one per model) and hands back results as they complete. A task that raises,
or whose worker dies, is retried once; a second failure is an error naming the model and shard.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from onnx_prune.accuracy import AccuracyPartial, SweepTask, sweep_shard
from onnx_prune.binding import cores
from onnx_prune.errors import MissingExtraError, OnnxPruneError, first_line
from onnx_prune.feeds import Progress, SampleSource
from onnx_prune.shards import (
    CountOptions,
    PartialCounts,
    Prepared,
    Shard,
    count_shard,
    merge,
    plan_run,
    plan_shards,
    shard_source,
)

logger = logging.getLogger(__name__)

SYNCHRONOUS = "synchronous"
INSTALL = "pip install 'onnx-prune[dask]'"
CONNECT_TIMEOUT = "10s"
SHARDS_PER_WORKER = 4
"""Shards per worker: enough for the progress bar to move and for uneven workers to balance."""

Item = TypeVar("Item")
Part = TypeVar("Part")
Result = TypeVar("Result")


class DistributedError(OnnxPruneError):
    """The scheduler cannot be reached, or a task failed twice."""


@dataclass
class DaskRunner:
    """Runs shards and tasks on a Dask client (None: Dask's synchronous scheduler, in process).

    ``shards``: how many shards a model's samples are cut into (None: ``SHARDS_PER_WORKER`` per
    worker). ``threads``: onnxruntime intra-op threads in each worker (None: its default).
    """

    client: Any
    workers: int = 1
    shards: int | None = None
    threads: int | None = None

    def count(
        self,
        path: Path,
        prepared: Prepared,
        source: SampleSource,
        options: CountOptions,
        progress: Progress | None,
    ) -> PartialCounts:
        """The partial totals of every sample of ``source``, counted in shards and merged."""
        options = replace(options, threads=self.threads)

        def task(shard: SampleSource) -> PartialCounts:
            return count_shard(path, shard, options)

        return merge(self.in_shards(path, source, plan_run(prepared, source), task, progress))

    def sweep(
        self,
        path: Path,
        source: SampleSource,
        task: SweepTask,
        plan: tuple[int, int],
        progress: Progress | None,
    ) -> AccuracyPartial:
        """The exact sums of an accuracy sweep over every sample of ``source`` (``plan``: how
        many, and the batch size), measured in shards (``accuracy.sweep_shard``) and added in
        sample order."""
        task = replace(task, threads=self.threads)

        def measure(shard: SampleSource) -> AccuracyPartial:
            return sweep_shard(path, shard, task)

        return functools.reduce(operator.add, self.in_shards(path, source, plan, measure, progress))

    def in_shards(
        self,
        path: Path,
        source: SampleSource,
        plan: tuple[int, int],
        function: Callable[[SampleSource], Part],
        progress: Progress | None,
    ) -> list[Part]:
        """``function`` on each shard of ``source`` (``plan``: how many samples, and the batch
        size; shards of whole batches), the parts in sample order (``count``, ``sweep`` and
        ``tune``'s evaluations)."""
        total, batch_size = plan
        shards = plan_shards(total, batch_size, self.shards or self.workers * SHARDS_PER_WORKER)
        done = [0]
        parts: dict[int, Part] = {}

        def finished(shard: Shard, part: Part) -> None:
            parts[shard.index] = part
            done[0] += shard.samples
            if progress is not None:
                progress(done[0], total)

        def task(shard: Shard) -> Part:
            return function(shard_source(source, shard))

        self.map(shards, task, finished, lambda shard: _shard_name(path, shard, len(shards)))
        return [parts[shard.index] for shard in shards]

    def map(
        self,
        items: Sequence[Item],
        function: Callable[[Item], Result],
        on_result: Callable[[Item, Result], None],
        name: Callable[[Item], str],
        on_failure: Callable[[Item, DistributedError], None] | None = None,
    ) -> None:
        """``function`` on every item as one task each; ``on_result`` as each completes.
        A task that failed twice goes to ``on_failure`` (None: it is raised)."""

        def failed(item: Item, error: DistributedError) -> None:
            if on_failure is None:
                raise error
            on_failure(item, error)

        if self.client is None:
            _run_synchronously(items, function, on_result, name, failed)
        else:
            _run_on_client(self.client, items, function, on_result, name, failed)


def _run_synchronously(
    items: Sequence[Item],
    function: Callable[[Item], Result],
    on_result: Callable[[Item, Result], None],
    name: Callable[[Item], str],
    failed: Callable[[Item, DistributedError], None],
) -> None:
    """The same tasks as a Dask graph, computed by the synchronous scheduler in this process."""
    import dask

    for item in items:
        task = dask.delayed(_retried)(function, item, name(item))
        try:
            (result,) = dask.compute(task, scheduler=SYNCHRONOUS)
        except DistributedError as error:
            failed(item, error)
            continue
        on_result(item, result)


def _retried(function: Callable[[Item], Result], item: Item, name: str) -> Result:
    try:
        return function(item)
    except Exception as error:  # any failure gets one retry, as on a cluster
        logger.warning("%s failed (%s): retrying once", name, first_line(error))
    try:
        return function(item)
    except Exception as error:
        raise _failed(name, error) from None


def _run_on_client(
    client: Any,
    items: Sequence[Item],
    function: Callable[[Item], Result],
    on_result: Callable[[Item, Result], None],
    name: Callable[[Item], str],
    failed: Callable[[Item, DistributedError], None],
) -> None:
    from dask.distributed import as_completed

    futures = {client.submit(function, item, retries=1, pure=False): item for item in items}
    try:
        for future in as_completed(futures):
            item = futures[future]
            try:
                result = future.result()
            except Exception as error:  # raised again after its retry: name model and shard
                failed(item, _failed(name(item), error))
                continue
            on_result(item, result)
    finally:
        client.cancel(list(futures))


def _failed(name: str, error: BaseException) -> DistributedError:
    reason = first_line(error) or type(error).__name__
    return DistributedError(f"{name} failed twice (retried once): {reason}")


def _shard_name(path: Path, shard: Shard, shards: int) -> str:
    return (
        f"{path.name} shard {shard.index + 1} of {shards} "
        f"(samples {shard.start} to {shard.stop - 1})"
    )


@contextlib.contextmanager
def open_runner(scheduler: str | None, workers: int | None) -> Iterator[DaskRunner]:
    """A runner on the scheduler at ``scheduler`` (``synchronous``: in process), else on a local
    cluster of ``workers`` processes; closed (and the cluster stopped) on exit."""
    _require_dask()
    if scheduler == SYNCHRONOUS:
        yield DaskRunner(client=None, workers=1)
        return
    if scheduler:
        with _connect(scheduler) as client:
            yield DaskRunner(client=client, workers=_worker_count(client))
        return
    count = workers or 1
    with _local_cluster(count) as client:
        yield DaskRunner(client=client, workers=count, threads=max(1, cores() // count))


def _require_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"--workers and --scheduler need Dask, which is not installed: {INSTALL}"
        ) from None


@contextlib.contextmanager
def _connect(address: str) -> Iterator[Any]:
    from dask.distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise DistributedError(
            f"cannot reach the Dask scheduler at {address} ({first_line(error)}): start it "
            "(dask scheduler) or give the right --scheduler / DASK_SCHEDULER_ADDRESS"
        ) from None
    with client:
        yield client


@contextlib.contextmanager
def _local_cluster(workers: int) -> Iterator[Any]:
    import dask
    from dask.distributed import Client, LocalCluster

    # a task whose worker dies is run once more, like a task that raises (Dask's default: 3);
    # a worker holds only the task it runs (saturation 1.0; Dask's default 1.1 queues a second
    # one there, which a dying worker takes down with it, blamed on the wrong model or shard);
    # a scheduler whose HTTP port is taken warns and takes another: nothing to tell the user
    settings = {
        "distributed.scheduler.allowed-failures": 1,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(
            host="127.0.0.1",
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    with cluster, Client(cluster) as client:
        yield client


def _worker_count(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))
