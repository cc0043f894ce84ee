"""Output fidelity: how close a pruned model's outputs stay to the unpruned model's, per output.

For every output (class scores, boxes, sequences, maps, audio) and every sample: the cosine
similarity and the relative L2 error between the pruned output ``p`` and the unpruned ``u``,
both flattened to vectors and computed in float64:

- cosine = u·p / (‖u‖ ‖p‖); 1 when both are all zero, 0 when only one is;
- relative L2 = ‖p − u‖ / ‖u‖; 0 when both are all zero, infinite when only ``u`` is.

A report gives their means over samples. ``is_classifier`` decides from an output's shape
alone which outputs are class scores (``[N, classes]``, classes ≥ 2, trailing 1-dims ignored);
top-1, top-5 and KL are computed only for those (``accuracy``). Pure numpy, no onnxruntime, so
other commands (``tune``) can score candidate assignments with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Fidelity:
    """The mean over samples of the per-sample cosine similarity and relative L2 error."""

    cosine: float
    relative_l2: float


def is_classifier(shape: Sequence[int], *, batch_axis: int | None = 0) -> bool:
    """True for class scores: one row of 2 or more values per sample (``[N, C]``, ``[N, C, 1,
    1]``). Detector heads (``[N, 4 + C, anchors]``), sequences and maps are not."""
    dims = [int(dim) for index, dim in enumerate(shape) if index != batch_axis]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return len(dims) == 1 and dims[0] >= 2


def per_sample(array: Array, count: int, *, axis: int | None = 0) -> Floats:
    """The first ``count`` samples of ``array`` on ``axis``, one flattened float64 row each
    (``axis`` None: the whole array is one sample)."""
    values = np.asarray(array, dtype=np.float64)
    if axis is None:
        return values.reshape(1, -1)
    rows = np.moveaxis(values, axis, 0)[:count]
    return rows.reshape(rows.shape[0], -1)


def sample_fidelity(reference: Floats, pruned: Floats) -> tuple[Floats, Floats]:
    """Per row (sample): the cosine similarity and the relative L2 error of ``pruned``
    against ``reference`` (rows as ``per_sample`` makes them)."""
    if reference.shape != pruned.shape:
        raise ValueError(f"outputs differ in shape: {reference.shape} and {pruned.shape}")
    norm_u = np.linalg.norm(reference, axis=1)
    norm_p = np.linalg.norm(pruned, axis=1)
    error = np.linalg.norm(pruned - reference, axis=1)
    dot = np.einsum("ij,ij->i", reference, pruned)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(norm_u * norm_p > 0, dot / (norm_u * norm_p), 0.0)
        relative = np.where(norm_u > 0, error / norm_u, np.where(error > 0, np.inf, 0.0))
    cosine = np.where((norm_u == 0) & (norm_p == 0), 1.0, np.clip(cosine, -1.0, 1.0))
    return cosine, relative


class FidelityTotals:
    """Running sums of per-sample cosine and relative L2 for one output (constant memory)."""

    def __init__(self) -> None:
        self.samples = 0
        self._cosine = 0.0
        self._relative = 0.0

    def add(self, reference: Array, pruned: Array, count: int, *, axis: int | None = 0) -> None:
        """Add the first ``count`` samples (on ``axis``) of one batch's two outputs."""
        cosine, relative = sample_fidelity(
            per_sample(reference, count, axis=axis), per_sample(pruned, count, axis=axis)
        )
        self.samples += len(cosine)
        self._cosine += float(np.sum(cosine))
        self._relative += float(np.sum(relative))

    def result(self) -> Fidelity:
        """The means so far (NaN before any sample)."""
        if self.samples == 0:
            return Fidelity(float("nan"), float("nan"))
        return Fidelity(self._cosine / self.samples, self._relative / self.samples)


def output_fidelity(
    reference: Mapping[str, Array],
    pruned: Mapping[str, Array],
    *,
    axes: Mapping[str, int | None] | None = None,
) -> dict[str, Fidelity]:
    """Cosine and relative L2 per output of one run of both models (samples on ``axes[name]``,
    default axis 0): the library form of what ``accuracy`` reports per output."""
    fidelity = {}
    for name, array in reference.items():
        totals = FidelityTotals()
        axis = (axes or {}).get(name, 0)
        count = array.shape[axis] if axis is not None and array.ndim > axis else 1
        totals.add(array, pruned[name], count, axis=axis if array.ndim else None)
        fidelity[name] = totals.result()
    return fidelity
