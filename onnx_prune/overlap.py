"""Feeding the calibration loop: outputs written into reused buffers, counting beside inference.

Two pieces, both independent of what is counted:

- :class:`BoundRunner` runs a session so that its outputs land in preallocated arrays (two sets,
  used in turn), when the session can (onnxruntime's IOBinding); otherwise it runs it plainly.
- :func:`overlapped` counts item k in a worker thread while item k + 1 is being produced, so
  inference (which releases the GIL) and counting (a kernel that releases it too) share the
  cores. With two buffer sets, item k's set is never written while it is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from onnx_prune.errors import OutOfMemoryError, UnsupportedModelError
from onnx_prune.inputs import Batch
from onnx_prune.runtime import Session

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Produced = TypeVar("Produced")
Result = TypeVar("Result")


@runtime_checkable
class BindingSession(Protocol):
    """A session that can write its outputs into arrays it is given."""

    def run_into(self, outputs: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        """Run once, each output written into its array."""
        ...


_SETS = 2


class BoundRunner:
    """Runs ``outputs`` of a session into two buffer sets used in turn.

    Before the first batch of each sample shape, one sample runs plainly: its outputs tell the
    buffers' per-sample shapes, and both sets are allocated at once for the batch, so memory is
    at its steady level from the first batch on (smaller batches write into the sets' leading
    rows). Outputs that do not hold samples on axis 0, a model that takes no single sample, or
    a bound run that fails: plain runs from then on, so a real error surfaces as onnxruntime's.
    """

    def __init__(self, session: Session, outputs: Sequence[str]) -> None:
        self._session = session
        self._outputs = list(outputs)
        self._binding = isinstance(session, BindingSession)
        self._key: tuple[object, ...] | None = None
        self._sets: list[list[np.ndarray]] = []
        self._turn = 0

    def run(self, batch: Batch) -> list[np.ndarray]:
        """The outputs for ``batch``'s feeds, in the order of ``outputs``."""
        feeds = batch.arrays
        if self._binding and not self._ready(batch):
            self._binding = self._allocate(batch)
        if not self._binding:
            return self._session.run(self._outputs, feeds)
        buffers = [array[: batch.rows] for array in self._sets[self._turn]]
        self._turn = (self._turn + 1) % _SETS
        try:
            self._bound(buffers, feeds)
        except UnsupportedModelError as error:
            logger.debug("bound outputs failed (%s): running without binding", error)
            self._binding = False
            return self._session.run(self._outputs, feeds)
        return buffers

    def _ready(self, batch: Batch) -> bool:
        return self._key == _sample_key(batch) and len(self._sets[0][0]) >= batch.rows

    def _allocate(self, batch: Batch) -> bool:
        """Both buffer sets for ``batch``, shaped after one sample's outputs; False: cannot."""
        self._sets = []
        try:
            single = self._session.run(self._outputs, batch.sample(0))
        except (UnsupportedModelError, OutOfMemoryError):
            return False  # e.g. a batch fixed inside the model: the plain run will tell
        if any(array.ndim == 0 or len(array) != 1 for array in single):
            return False
        self._key = _sample_key(batch)
        self._sets = [
            [np.empty((batch.rows, *a.shape[1:]), a.dtype) for a in single] for _ in range(_SETS)
        ]
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


def overlapped(
    items: Iterable[Item],
    produce: Callable[[Item], Produced],
    consume: Callable[[Item, Produced], Result],
) -> Iterator[Result]:
    """``consume(item, produce(item))`` for every item, in order, each consume running in a
    worker thread while the next item is produced. At most one consume is in flight."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-prune-count") as pool:
        pending: Future[Result] | None = None
        for item in items:
            produced = produce(item)
            if pending is not None:
                yield pending.result()
            pending = pool.submit(consume, item, produced)
        if pending is not None:
            yield pending.result()
