"""Feeding the calibration loop: outputs written into reused buffers, maps counted in parallel.

Two pieces, both independent of what is counted:

- :class:`BoundRunner` runs a session so that its outputs land in one preallocated buffer set,
  reused by every batch, when the session can (onnxruntime's IOBinding); otherwise it runs it
  plainly. One runner serves one calibration call: calls that share a session (the shards of a
  Dask worker's threads) never share buffers, and the memory goes when the call returns.
- :func:`counting_pool` runs the counting of one batch's maps on every core while inference
  waits: onnxruntime's intra-op threads already take every core during a run, so counting
  beside the next batch would only make the two fight for them (measured: slower on 2 cores).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np

from onnx_prune.errors import OutOfMemoryError, UnsupportedModelError
from onnx_prune.inputs import Batch
from onnx_prune.runtime import Session

logger = logging.getLogger(__name__)


@runtime_checkable
class BindingSession(Protocol):
    """A session that can write its outputs into arrays it is given."""

    def run_into(self, outputs: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        """Run once, each output written into its array."""
        ...


class BoundRunner:
    """Runs ``outputs`` of a session into one buffer set, reused by every batch.

    Before the first batch of each sample shape, one sample runs plainly: its outputs tell the
    buffers' per-sample shapes, and the set is allocated for the batch, so memory is at its
    steady level from the first batch on (smaller batches write into the set's leading rows).
    The arrays returned are overwritten by the next run. Outputs that do not hold samples on
    axis 0, a model that takes no single sample, or a bound run that fails: plain runs from
    then on, so a real error surfaces as onnxruntime's.
    """

    def __init__(self, session: Session, outputs: Sequence[str]) -> None:
        self._session = session
        self._outputs = list(outputs)
        self._binding = isinstance(session, BindingSession)
        self._key: tuple[object, ...] | None = None
        self._buffers: list[np.ndarray] = []

    def run(self, batch: Batch) -> list[np.ndarray]:
        """The outputs for ``batch``'s feeds, in the order of ``outputs``."""
        feeds = batch.arrays
        if self._binding and not self._ready(batch):
            self._binding = self._allocate(batch)
        if not self._binding:
            return self._session.run(self._outputs, feeds)
        buffers = [array[: batch.rows] for array in self._buffers]
        try:
            self._bound(buffers, feeds)
        except UnsupportedModelError as error:
            logger.debug("bound outputs failed (%s): running without binding", error)
            self._binding = False
            self._buffers = []
            return self._session.run(self._outputs, feeds)
        return buffers

    def _ready(self, batch: Batch) -> bool:
        return self._key == _sample_key(batch) and len(self._buffers[0]) >= batch.rows

    def _allocate(self, batch: Batch) -> bool:
        """The buffer set for ``batch``, shaped after one sample's outputs; False: cannot."""
        self._buffers = []
        try:
            single = self._session.run(self._outputs, batch.sample(0))
        except (UnsupportedModelError, OutOfMemoryError):
            return False  # e.g. a batch fixed inside the model: the plain run will tell
        if any(array.ndim == 0 or len(array) != 1 for array in single):
            return False
        self._key = _sample_key(batch)
        self._buffers = [np.empty((batch.rows, *a.shape[1:]), a.dtype) for a in single]
        return True

    def _bound(self, buffers: list[np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        assert isinstance(self._session, BindingSession)
        self._session.run_into(dict(zip(self._outputs, buffers, strict=True)), feeds)


def _sample_key(batch: Batch) -> tuple[object, ...]:
    """What fixes the outputs' per-sample shapes: each input's dtype and shape off its batch
    axis."""
    key: list[object] = []
    for name, array in batch.arrays.items():
        axis = batch.axis(name)
        shape = array.shape if axis is None else array.shape[:axis] + array.shape[axis + 1 :]
        key.append((name, array.dtype.str, shape, axis))
    return tuple(key)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextmanager
def counting_pool(threads: int | None = None) -> Iterator[Executor | None]:
    """``threads`` threads to count one batch's maps in (None: one per core; the kernels
    release the GIL), as many as the session runs on; None for one thread, where counting in
    the calling thread is as fast."""
    workers = threads or cores()
    if workers < 2:
        yield None
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx-prune-count") as pool:
        yield pool
