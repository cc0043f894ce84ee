"""The calibration loop (``collect_activation_stats``) driven through the ``Session`` protocol.

The session is a fake: onnx's reference evaluator runs the probed model, so no onnxruntime is
involved, and the fake records every call and can refuse batches of several samples (as models
that fix their batch inside the graph do). Counts are checked against numpy on the unprobed
model's own tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from onnx_prune.calibrate import ActivationStats, _count_values, collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.inputs import Batch
from onnx_prune.layers import ComputeLayer, find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.probes import Probe, ProbedModel, add_probes
from onnx_prune.runtime import TensorSpec
from tests.builders import conv_relu_model, conv_weight, save

EPS = (0.0, 0.5)


class FakeSession:
    """A ``Session`` over onnx's reference evaluator; records the batch size of every run."""

    def __init__(self, model: onnx.ModelProto, *, whole_batches: bool = True) -> None:
        self._evaluator = ReferenceEvaluator(model)
        self._whole_batches = whole_batches
        self.sizes: list[int] = []

    def inputs(self) -> Sequence[TensorSpec]:
        return [TensorSpec("x", np.dtype(np.float32), ("N", 3, 8, 8))]

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        size = len(feeds["x"])
        self.sizes.append(size)
        if size > 1 and not self._whole_batches:
            raise UnsupportedModelError("onnxruntime failed: the graph reshapes to [1, -1]")
        # the probes scale |x| - ε by a large power of two before clipping to [0, 1]: overflow
        # to inf is part of the design (onnxruntime does not warn; numpy would)
        with np.errstate(over="ignore"):
            results = self._evaluator.run(list(outputs), dict(feeds))
        return [np.asarray(value) for value in results]


def _setup(
    tmp_path: Path,
) -> tuple[onnx.ModelProto, Sequence[ComputeLayer], ProbedModel, np.ndarray]:
    model = conv_relu_model(conv_weight())  # filters 2 and 5 all zero: two zero OFM channels
    loaded = load_model(save(model, tmp_path))
    scan = find_compute_layers(loaded.model, ConstantResolver(loaded))
    probed = add_probes(loaded.model, scan.layers, eps=EPS, tile=(4, 4))
    x = np.random.default_rng(5).standard_normal((5, 3, 8, 8)).astype(np.float32)
    x[1, 0] = 0.0  # one zero IFM channel, in sample 1
    return model, scan.layers, probed, x


def _batches(x: np.ndarray, size: int) -> list[Batch]:
    return [
        Batch(
            {"x": x[start : start + size]},
            tuple(f"s{i}" for i in range(start, start + size))[: len(x[start : start + size])],
        )
        for start in range(0, len(x), size)
    ]


def _collect(
    tmp_path: Path, *, whole_batches: bool = True
) -> tuple[
    ActivationStats, list[int], np.ndarray, np.ndarray, tuple[Sequence[ComputeLayer], list[int]]
]:
    model, layers, probed, x = _setup(tmp_path)
    session = FakeSession(probed.model, whole_batches=whole_batches)
    done: list[int] = []
    stats = collect_activation_stats(
        session, probed.manifest, layers, _batches(x, 2), on_batch=done.append
    )
    (y,) = ReferenceEvaluator(model).run(["y"], {"x": x})
    return stats, session.sizes, x, np.asarray(y), (layers, done)


def _planes_within(values: np.ndarray, eps: float) -> int:
    planes = np.abs(values).reshape(values.shape[0], values.shape[1], -1)
    return int((planes.max(axis=2) <= eps).sum())


def test_totals_over_batches_equal_numpy(tmp_path: Path) -> None:
    stats, sizes, x, y, (layers, done) = _collect(tmp_path)
    assert sizes[-3:] == [2, 2, 1]  # 5 samples in batches of 2 (runs before may probe shapes)
    assert sum(done) == 5 and stats.samples == 5
    (layer,) = layers
    ifm, ofm = stats.tensors[layer.ifm], stats.tensors[layer.ofm]
    assert ifm.zeros == tuple(int(np.count_nonzero(np.abs(x) <= e)) for e in EPS)
    assert ifm.zero_channels[0] == _planes_within(x, 0.0) == 1
    assert ofm.zeros == tuple(int(np.count_nonzero(np.abs(y) <= e)) for e in EPS)
    assert ofm.zero_channels == tuple(_planes_within(y, e) for e in EPS)
    assert ofm.zero_channels[0] >= 2 * 5  # the two zero filters, in every sample
    assert ofm.saved_elements == tuple(64 * count for count in ofm.zero_channels)
    assert [sample.name for sample in stats.per_sample] == [f"s{i}" for i in range(5)]


def test_a_session_that_refuses_whole_batches_gives_the_same_counts(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    whole, *_ = _collect(tmp_path / "a")
    split, sizes, *_ = _collect(tmp_path / "b", whole_batches=False)
    assert 2 in sizes and sizes[-4:] == [1, 1, 1, 1]  # the failed batch, then one at a time
    assert split.tensors == whole.tensors
    assert split.per_sample == whole.per_sample


def test_a_failure_on_one_sample_is_the_models_error(tmp_path: Path) -> None:
    _, layers, probed, x = _setup(tmp_path)

    class Broken(FakeSession):
        def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            raise UnsupportedModelError("onnxruntime failed: a node cannot run")

    with pytest.raises(UnsupportedModelError, match="a node cannot run"):
        collect_activation_stats(Broken(probed.model), probed.manifest, layers, _batches(x[:1], 1))


@pytest.mark.parametrize(
    "values",
    [
        np.zeros((2, 0, 4, 4), np.float32),
        np.zeros((2, 0), np.float32),
        np.zeros((2, 0, 3), np.int8),
    ],
)
def test_a_map_without_channels_counts_nothing(values: np.ndarray) -> None:
    """A map of 0 channels (say, a Slice that keeps none) has no values, channels or tiles."""
    probe = Probe(tensor="t", kind="tensor", shape=values.shape[1:], tile_max="t")
    counts = _count_values(probe, values, np.asarray([0.0, 0.1], np.float32), (8, 8), 2)
    assert counts.elements_per_sample == counts.channels == counts.tiles == 0
    assert counts.zeros.tolist() == counts.zero_channels.tolist() == [[0, 0], [0, 0]]
    assert counts.zero_tiles.tolist() == counts.tile_saved.tolist() == [0, 0]
