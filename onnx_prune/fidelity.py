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


_SCALE = 1 << 1074
"""Every finite float64 is an integer multiple of 2**-1074 (the smallest subnormal)."""


@dataclass(frozen=True)
class ExactSum:
    """A sum of float64 values kept exactly: the finite ones as one integer in units of
    2**-1074, the infinite and NaN ones counted.

    Chosen over per-sample values concatenated in sample order: the merge is integer addition,
    so any split of the samples into shards, in any order, gives the very same sum, and memory
    stays constant in the number of samples (a float running sum depends on the split). The
    mean is rounded once, at the end (``mean``), and is the correctly rounded true mean.
    """

    units: int = 0
    positive_inf: int = 0
    negative_inf: int = 0
    nan: int = 0

    @staticmethod
    def of(values: Floats) -> ExactSum:
        """The exact sum of ``values``."""
        units = positive = negative = nan = 0
        for value in np.asarray(values, dtype=np.float64).ravel().tolist():
            if value != value:
                nan += 1
            elif value in (float("inf"), float("-inf")):
                positive += value > 0
                negative += value < 0
            else:
                numerator, denominator = value.as_integer_ratio()
                units += numerator * (_SCALE // denominator)
        return ExactSum(units, positive, negative, nan)

    def __add__(self, other: ExactSum) -> ExactSum:
        """The exact sum of both sets of values."""
        return ExactSum(
            self.units + other.units,
            self.positive_inf + other.positive_inf,
            self.negative_inf + other.negative_inf,
            self.nan + other.nan,
        )

    def mean(self, count: int) -> float:
        """The sum divided by ``count``, rounded once (NaN for no value, or inf − inf)."""
        if count == 0 or self.nan or (self.positive_inf and self.negative_inf):
            return float("nan")
        if self.positive_inf or self.negative_inf:
            return float("inf") if self.positive_inf else float("-inf")
        return self.units / (_SCALE * count)  # int / int: correctly rounded


@dataclass(frozen=True)
class FidelitySums:
    """The exact sums of per-sample cosine and relative L2 for one output; ``+`` merges."""

    samples: int = 0
    cosine: ExactSum = ExactSum()
    relative: ExactSum = ExactSum()

    @staticmethod
    def of(reference: Array, pruned: Array, count: int, *, axis: int | None = 0) -> FidelitySums:
        """The sums over the first ``count`` samples (on ``axis``) of one batch's outputs."""
        cosine, relative = sample_fidelity(
            per_sample(reference, count, axis=axis), per_sample(pruned, count, axis=axis)
        )
        return FidelitySums(len(cosine), ExactSum.of(cosine), ExactSum.of(relative))

    def __add__(self, other: FidelitySums) -> FidelitySums:
        """The sums of both sets of samples."""
        return FidelitySums(
            self.samples + other.samples,
            self.cosine + other.cosine,
            self.relative + other.relative,
        )

    def result(self) -> Fidelity:
        """The means (NaN before any sample)."""
        return Fidelity(self.cosine.mean(self.samples), self.relative.mean(self.samples))


class FidelityTotals:
    """Running sums of per-sample cosine and relative L2 for one output (constant memory)."""

    def __init__(self) -> None:
        self.sums = FidelitySums()

    @property
    def samples(self) -> int:
        """Samples added so far."""
        return self.sums.samples

    def add(self, reference: Array, pruned: Array, count: int, *, axis: int | None = 0) -> None:
        """Add the first ``count`` samples (on ``axis``) of one batch's two outputs."""
        self.sums = self.sums + FidelitySums.of(reference, pruned, count, axis=axis)

    def result(self) -> Fidelity:
        """The means so far (NaN before any sample)."""
        return self.sums.result()


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
