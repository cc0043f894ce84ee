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

from onnx_prune.errors import UnsupportedModelError
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

    The first batch of each input shape runs plainly (its outputs tell the buffers' shapes);
    the following ones write into the buffers. A bound run that fails is retried plainly and
    binding is given up, so a real error surfaces as onnxruntime's own.
    """

    def __init__(self, session: Session, outputs: Sequence[str]) -> None:
        self._session = session
        self._outputs = list(outputs)
        self._binding = isinstance(session, BindingSession)
        self._key: tuple[object, ...] | None = None
        self._sets: list[list[np.ndarray]] = []
        self._turn = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for ``feeds``, in the order of ``outputs``."""
        key = tuple((name, array.shape, array.dtype.str) for name, array in feeds.items())
        if not self._binding or key != self._key:
            arrays = self._session.run(self._outputs, feeds)
            if self._binding:
                self._start_sets(key, arrays)
            return arrays
        buffers = self._sets[self._turn]
        self._turn = (self._turn + 1) % _SETS
        try:
            self._bound(buffers, feeds)
        except UnsupportedModelError as error:
            logger.debug("bound outputs failed (%s): running without binding", error)
            self._binding = False
            return self._session.run(self._outputs, feeds)
        return buffers

    def _start_sets(self, key: tuple[object, ...], arrays: list[np.ndarray]) -> None:
        """The plain run's own arrays become the first set (one set less in memory); the next
        run writes the second."""
        reusable = all(a.flags.writeable and a.flags.c_contiguous for a in arrays)
        first = arrays if reusable else [np.empty_like(a) for a in arrays]
        self._key = key
        self._sets = [first] + [[np.empty_like(a) for a in arrays] for _ in range(_SETS - 1)]
        self._turn = 1

    def _bound(self, buffers: list[np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        assert isinstance(self._session, BindingSession)
        self._session.run_into(dict(zip(self._outputs, buffers, strict=True)), feeds)


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
