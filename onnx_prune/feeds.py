"""One feeder for every command: samples from images or tensor files, in batches that fit the model.

``analyze``, ``accuracy`` and ``zoo`` (and the commands built on them) plan their samples here, so
that the same input file is fed the same way everywhere. The policy:

- **Batch axis.** Each input's batch axis is the axis holding the symbolic dim that the inputs
  share (``batch`` in ``input [batch, seq]`` and ``state [2, batch, 128]``); with one input, or
  when no symbolic dim is shared, it is axis 0. ``--batch-axis NAME=AXIS`` overrides it
  (``NAME=none``: the input has no batch axis). An input with no batch axis (a scalar such as
  ``sr []``, or an input without the shared dim) is passed as it is stored to every batch.
- **Element types.** Arrays are cast to the model's input type when every value survives the
  cast (float64 into a float32 model; integer-valued floats into an int64 input); otherwise the
  input is refused with one line naming the value that does not fit.
- **Fixed batch.** A model that fixes its batch dim runs with batches of that size; a last batch
  with fewer samples is padded with copies of its last sample, and the padded rows are dropped
  from every result (``Batch.padding`` says how many; reports say so).
- **Sample range.** Samples are numbered from 0 (files in sorted order; positions on the batch
  axis) and a source selects ``[start, start + limit)``, so workers that each take a range
  together see every sample exactly once. Unreadable images in the range are skipped and listed.
  A source can instead select a list of sample numbers (``indices``, in the order given; then
  ``start`` and ``limit`` count positions in that list): ``tune``'s interleaved splits travel to
  workers this way, as numbers, never as arrays.

Pure library: no printing; problems are ``InputDataError``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from onnx_prune.errors import InputDataError
from onnx_prune.inputs import (
    Batch,
    SkippedInput,
    check_input_shape,
    find_images,
    get_preset,
    image_size_for,
    iter_image_batches,
    open_tensor_inputs,
)
from onnx_prune.runtime import ModelSource, Session, SessionOptions, TensorSpec

logger = logging.getLogger(__name__)

Array = npt.NDArray[Any]
Dim = int | str | None

DEFAULT_EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
"""The ε every command sweeps unless told otherwise."""

Progress = Callable[[int, int], None]
"""Called after every batch with (samples done, samples in the range; 0 when unknown)."""

SessionFactory = Callable[[ModelSource, SessionOptions], Session]
"""Builds the inference session of a model source; tests pass fakes."""

BatchAxes = tuple[tuple[str, int | None], ...]
"""``--batch-axis`` overrides: (input name, axis or None for "no batch axis")."""


@dataclass(frozen=True)
class SampleSource:
    """Where samples come from and how they are batched: image files/folders (preprocessed by
    ``preset`` to ``size``, None: the model's), or a .npy/.npz of ready tensors.

    ``start`` and ``limit`` select the samples ``[start, start + limit)`` (``limit`` None: to
    the end). ``strict`` makes an unreadable image an error instead of a skipped sample.
    ``indices`` (None: every sample) selects these sample numbers, in this order; ``start`` and
    ``limit`` then count positions in it.
    """

    images: tuple[Path, ...] = ()
    tensors: Path | None = None
    preset: str = "imagenet"
    size: tuple[int, int] | None = None
    batch_size: int = 8
    limit: int | None = None
    strict: bool = False
    start: int = 0
    batch_axes: BatchAxes = ()
    indices: tuple[int, ...] | None = None

    def select(self, available: int) -> Sequence[int]:
        """The sample numbers this source feeds, of ``available`` (a range, or the chosen
        positions of ``indices``)."""
        if self.indices is None:
            return range(self.start, _stop(self, available))
        chosen = self.indices[self.start : _stop(self, len(self.indices))]
        if any(not 0 <= index < available for index in chosen):
            raise InputDataError(
                f"sample numbers {min(chosen)} to {max(chosen)} asked for, of {available} samples"
            )
        return chosen

    def sample_range(self, start: int, stop: int) -> SampleSource:
        """This source restricted to samples ``[start, stop)`` (for one worker of several)."""
        if not 0 <= start < stop:
            raise InputDataError(f"sample range [{start}, {stop}) is empty or negative")
        return replace(self, start=start, limit=stop - start)


@dataclass(frozen=True)
class InputLayout:
    """One model input as the feeder sees it: its type, shape and batch axis (None: none)."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[Dim, ...]
    axis: int | None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model fixes on this input's batch axis, or None when free."""
        if self.axis is None or self.axis >= len(self.shape):
            return None
        dim = self.shape[self.axis]
        return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def parse_batch_axis(text: str) -> tuple[str, int | None]:
    """``NAME=AXIS`` (``AXIS`` a whole number, or ``none`` for an input with no batch axis)."""
    name, separator, axis = text.rpartition("=")
    if not separator or not name:
        raise ValueError(f"--batch-axis takes NAME=AXIS (e.g. state=1 or sr=none), got '{text}'")
    if axis.strip().lower() == "none":
        return name, None
    try:
        value = int(axis)
    except ValueError:
        raise ValueError(f"--batch-axis takes NAME=AXIS with a whole AXIS, got '{text}'") from None
    if value < 0:
        raise ValueError(f"--batch-axis AXIS must be 0 or more, got '{text}'")
    return name, value


def plan_inputs(specs: Sequence[TensorSpec], overrides: BatchAxes = ()) -> tuple[InputLayout, ...]:
    """Each input's batch axis: the axis of the symbolic dim the inputs share, else axis 0;
    ``overrides`` win. Inputs of rank 0, or without the shared dim, have none."""
    _check_overrides(specs, overrides)
    chosen = dict(overrides)
    shared = _shared_dim(specs)
    layouts = []
    for spec in specs:
        if spec.name in chosen:
            axis = chosen[spec.name]
        elif shared is not None:
            axis = spec.shape.index(shared) if shared in spec.shape else None
        else:
            axis = 0 if spec.shape else None
        layouts.append(InputLayout(spec.name, spec.dtype, tuple(spec.shape), axis))
    return tuple(layouts)


def _shared_dim(specs: Sequence[TensorSpec]) -> str | None:
    """The symbolic dim name found in the most inputs (at least two); ties go to the one that
    comes first in the first input holding one. None for one input or no shared name."""
    if len(specs) < 2:
        return None
    counts = Counter(name for spec in specs for name in {d for d in spec.shape if _named(d)})
    best = max(counts.values(), default=0)
    if best < 2:
        return None
    for spec in specs:
        for dim in spec.shape:
            if isinstance(dim, str) and counts.get(dim) == best:
                return dim
    return None


def _named(dim: Dim) -> bool:
    return isinstance(dim, str) and bool(dim)


def _check_overrides(specs: Sequence[TensorSpec], overrides: BatchAxes) -> None:
    ranks = {spec.name: len(spec.shape) for spec in specs}
    for name, axis in overrides:
        if name not in ranks:
            known = ", ".join(f"'{spec.name}'" for spec in specs)
            raise InputDataError(
                f"--batch-axis names '{name}', which is not an input of the model: "
                f"its inputs are {known}"
            )
        if axis is not None and ranks[name] and axis >= ranks[name]:
            raise InputDataError(
                f"--batch-axis {name}={axis}: input '{name}' has rank {ranks[name]}: "
                f"give an axis below {ranks[name]}, or {name}=none"
            )


def fixed_batch(layouts: Sequence[InputLayout]) -> int | None:
    """The batch size the model fixes on its inputs' batch axes, or None when it is free."""
    fixed = {layout.fixed_batch for layout in layouts} - {None}
    if len(fixed) > 1:
        found = ", ".join(f"'{lay.name}' {lay.fixed_batch}" for lay in layouts if lay.fixed_batch)
        raise InputDataError(
            f"the model's inputs fix different batch sizes ({found}): give --batch-axis "
            "NAME=AXIS for the inputs whose batch axis was misread"
        )
    return fixed.pop() if fixed else None


class Feeder:
    """The batches of one sample source for one model's inputs, all checked and cast.

    ``total`` is the number of samples in the range (files, for images); ``skipped`` and
    ``padded`` fill up as batches are drawn.
    """

    def __init__(
        self, source: SampleSource, specs: Sequence[TensorSpec], *, constants: Collection[str] = ()
    ) -> None:
        _check_range(source)
        self.source = source
        self.layouts = plan_inputs([s for s in specs if s.name not in constants], source.batch_axes)
        if not any(layout.axis is not None for layout in self.layouts):
            raise InputDataError(
                "no model input has a batch axis: give --batch-axis NAME=AXIS for one of "
                + ", ".join(f"'{layout.name}'" for layout in self.layouts)
            )
        self.fixed = fixed_batch(self.layouts)
        self.batch_size = self.fixed or source.batch_size
        if self.fixed is not None and self.fixed != source.batch_size:
            logger.info("the model fixes its batch at %d; using batches of %d", *(self.fixed,) * 2)
        self.skipped: list[SkippedInput] = []
        self.padded = 0
        self._files: tuple[Path, ...] = ()
        self._indexes: Sequence[int] = ()
        self._batches, self.total = self._open()

    def sample_keys(self) -> Sequence[Path | int]:
        """The samples of the range: image files, or sample numbers in the tensor file."""
        if self.source.tensors is None:
            return self._files
        return self._indexes

    @property
    def batch_name(self) -> str | None:
        """The symbolic name of the batch dim (e.g. ``batch``), None when it has none."""
        for layout in self.layouts:
            if layout.axis is not None and layout.axis < len(layout.shape):
                dim = layout.shape[layout.axis]
                if isinstance(dim, str) and dim:
                    return dim
        return None

    @property
    def axes(self) -> dict[str, int | None]:
        """The batch axis of each input (None: passed whole to every batch)."""
        return {layout.name: layout.axis for layout in self.layouts}

    def batches(self) -> Iterator[Batch]:
        """The batches, checked against the model's input shapes, padded to a fixed batch."""
        for batch in self._batches:
            self.skipped.extend(batch.skipped)
            fed = self._padded(batch)
            for layout in self.layouts:
                check_input_shape(layout.name, layout.shape, tuple(fed.arrays[layout.name].shape))
            yield fed

    def _open(self) -> tuple[Iterator[Batch], int]:
        if self.source.tensors is not None:
            return self._tensor_batches(self.source.tensors)
        return self._image_batches()

    def _image_batches(self) -> tuple[Iterator[Batch], int]:
        source = self.source
        layout = self._image_input()
        files = find_images(list(source.images))
        chosen = [files[index] for index in source.select(len(files))]
        if not chosen:
            raise InputDataError(f"no image in sample range {_range_text(source, len(files))}")
        size = image_size_for(layout.shape, source.size, name=layout.name)
        self._files = tuple(chosen)
        images = iter_image_batches(
            chosen,
            get_preset(source.preset),
            size,
            self.batch_size,
            input_name=layout.name,
            strict=source.strict,
            found=True,
        )
        return (self._cast_images(batch, layout) for batch in images), len(chosen)

    def _cast_images(self, batch: Batch, layout: InputLayout) -> Batch:
        arrays = {layout.name: cast_input(batch.arrays[layout.name], layout, batch.names[0])}
        return replace(batch, arrays=arrays, axes={layout.name: 0})

    def _image_input(self) -> InputLayout:
        if len(self.layouts) != 1:
            described = ", ".join(f"'{lay.name}' {_shape_text(lay.shape)}" for lay in self.layouts)
            raise InputDataError(
                f"the model has {len(self.layouts)} inputs ({described}): images can feed only "
                "one; give --inputs FILE.npz with one array per input name"
            )
        return self.layouts[0]

    def _tensor_batches(self, path: Path) -> tuple[Iterator[Batch], int]:
        tensors = open_tensor_inputs(path, [lay.name for lay in self.layouts], axes=self.axes)
        source = self.source
        chosen = source.select(tensors.count)
        if not chosen:
            raise InputDataError(
                f"{path} holds {tensors.count} samples: sample range "
                f"{_range_text(source, tensors.count)} is empty"
            )
        fixed = {
            lay.name: cast_input(np.asarray(tensors.arrays[lay.name]), lay, str(path))
            for lay in self.layouts
            if lay.axis is None
        }
        self._indexes = chosen
        batches = (
            self._tensor_batch(
                path, tensors.arrays, fixed, tuple(chosen[start : start + self.batch_size])
            )
            for start in range(0, len(chosen), self.batch_size)
        )
        return batches, len(chosen)

    def _tensor_batch(
        self,
        path: Path,
        arrays: Mapping[str, Array],
        fixed: Mapping[str, Array],
        indexes: tuple[int, ...],
    ) -> Batch:
        sliced = dict(fixed)
        for layout in self.layouts:
            if layout.axis is not None:
                part = np.array(_take_indexes(arrays[layout.name], layout.axis, indexes))
                sliced[layout.name] = cast_input(part, layout, str(path))
        names = tuple(f"{path.name}[{index}]" for index in indexes)
        return Batch(sliced, names, axes=self.axes, indexes=indexes)

    def _padded(self, batch: Batch) -> Batch:
        if self.fixed is None or batch.size >= self.fixed:
            return batch
        missing = self.fixed - batch.size
        self.padded += missing
        logger.info(
            "the model fixes its batch at %d: padding the last batch of %d with %d copies of its "
            "last sample (left out of every result)",
            self.fixed,
            batch.size,
            missing,
        )
        arrays = {
            name: _pad(array, batch.axis(name), missing) for name, array in batch.arrays.items()
        }
        return replace(batch, arrays=arrays, padding=missing)


def cast_input(array: Array, layout: InputLayout, origin: str) -> Array:
    """``array`` in the input's element type, when every value survives the cast unchanged in
    value (float64 into float32 keeps the value to float32's precision); else an error."""
    target = layout.dtype
    if array.dtype == target:
        return array
    problem = _cast_problem(array, target)
    if problem is not None:
        raise InputDataError(
            f"input '{layout.name}' of the model is {target.name} but {origin} holds "
            f"{array.dtype.name} values {problem}: save the array as {target.name}"
        )
    return array.astype(target)


def _cast_problem(array: Array, target: np.dtype[np.generic]) -> str | None:
    """Why ``array`` cannot become ``target`` without changing a value; None when it can."""
    kind, wanted = array.dtype.kind, target.kind
    if array.size == 0:
        return None
    if wanted == "b" or kind == "b":
        return "that are not booleans" if kind != wanted else None
    if kind not in "biuf" or wanted not in "iuf":
        return "of another kind"
    if wanted == "f" and kind == "f":
        finite = array[np.isfinite(array)]
        largest = float(np.finfo(np.dtype(target.str)).max)
        outside = finite[np.abs(finite) > largest]
        return f"beyond its range (e.g. {outside.flat[0]})" if outside.size else None
    converted = array.astype(target)
    with np.errstate(invalid="ignore"):
        differs = converted.astype(array.dtype) != array
    if np.any(differs):
        example = array[differs].flat[0]
        return f"that it cannot hold exactly (e.g. {example})"
    return None


def _take(array: Array, axis: int, start: int, stop: int) -> Array:
    index: list[slice] = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]


def _take_indexes(array: Array, axis: int, indexes: tuple[int, ...]) -> Array:
    """The samples ``indexes`` along ``axis`` (a slice when they are consecutive)."""
    if indexes == tuple(range(indexes[0], indexes[0] + len(indexes))):
        return _take(array, axis, indexes[0], indexes[0] + len(indexes))
    return np.take(array, list(indexes), axis=axis)


def _pad(array: Array, axis: int | None, missing: int) -> Array:
    if axis is None:
        return array
    last = _take(array, axis, array.shape[axis] - 1, array.shape[axis])
    return np.concatenate([array, np.repeat(last, missing, axis=axis)], axis=axis)


def _stop(source: SampleSource, available: int) -> int:
    if source.limit is None:
        return available
    return min(available, source.start + source.limit)


def _check_range(source: SampleSource) -> None:
    if source.batch_size < 1:
        raise InputDataError(f"batch size {source.batch_size} is not positive: give 1 or more")
    if source.limit is not None and source.limit < 1:
        raise InputDataError(f"sample limit {source.limit} is not positive: give 1 or more")
    if source.start < 0:
        raise InputDataError(f"first sample {source.start} is negative: give 0 or more")


def _range_text(source: SampleSource, available: int) -> str:
    stop = available if source.limit is None else source.start + source.limit
    return f"[{source.start}, {stop}) of {available}"


def _shape_text(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"
