"""The counting fast path (numba kernel, bound outputs, counting beside inference) against the
in-graph probes and numpy, on tiny models with planted values."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from onnx_prune import fastcount
from onnx_prune.analysis import analyze_model
from onnx_prune.calibrate import _count_values
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import SampleSource
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.probes import Probe, add_probes
from tests.builders import FLOAT, make_model, save
from tests.test_probes import EPS, _check_against_numpy, _inputs, two_conv_model

pytestmark = pytest.mark.skipif(not fastcount.available(), reason="numba is not installed")

BOUND = np.float32(0.1)
PLANTED = np.array(
    [BOUND, np.nextafter(BOUND, np.float32(1)), np.nextafter(BOUND, np.float32(0)), -BOUND,
     -0.0, 0.0, 1e-30, -1e-30, 0.5, 0.25, -np.nextafter(BOUND, np.float32(1)), np.float32(-0.25)],
    np.float32,
)  # fmt: skip


def _planted(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Normal values, a third of them zero, the boundary values above, a zero channel."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 0.3, shape).astype(np.float32)
    values[rng.random(shape) < 0.3] = 0.0
    flat = values.reshape(-1)
    flat[: PLANTED.size] = PLANTED
    flat[-PLANTED.size :] = PLANTED[::-1]
    values[-1, 0] = -0.0
    return values


def _numpy_counts(values: np.ndarray, eps: tuple[float, ...], tile: tuple[int, int] | None):
    """Every statistic straight from its definition, in float32."""
    magnitude = np.abs(values)
    samples, channels = values.shape[:2]
    planes = magnitude.reshape(samples, channels, -1)
    zeros, zero_channels, zero_tiles, tile_saved = [], [], [], []
    for e in (np.float32(b) for b in eps):
        zeros.append((planes <= e).sum(axis=2).sum(axis=1))
        zero_channels.append((planes.max(axis=2) <= e).sum(axis=1))
        if tile is None:
            zero_tiles.append(int((planes.max(axis=2) <= e).sum()))
            tile_saved.append(zero_tiles[-1] * planes.shape[2])
            continue
        count = saved = 0
        for top in range(0, values.shape[2], tile[0]):
            for left in range(0, values.shape[3], tile[1]):
                block = magnitude[:, :, top : top + tile[0], left : left + tile[1]]
                within = int((block.max(axis=(2, 3)) <= e).sum())
                count, saved = count + within, saved + within * block[0, 0].size
        zero_tiles.append(count)
        tile_saved.append(saved)
    return (
        np.stack(zeros, axis=1),
        np.stack(zero_channels, axis=1),
        np.asarray(zero_tiles),
        np.asarray(tile_saved),
    )


@pytest.mark.parametrize(
    ("shape", "tile"),
    [
        ((2, 3, 10, 13), (4, 4)),  # ragged tiles on both axes
        ((3, 5, 8, 8), (8, 8)),
        ((1, 2, 3, 5), (8, 8)),  # tile larger than the plane
        ((2, 4, 7, 7), (1, 1)),
        ((4, 37), None),  # rank 2: each value its own channel
        ((2, 3, 20), None),  # rank 3: a channel is one plane, a tile a channel
        ((2, 3, 2, 3, 4), None),  # rank 5
    ],
)
def test_kernel_counts_match_numpy(shape: tuple[int, ...], tile: tuple[int, int] | None) -> None:
    values = _planted(shape)
    eps = (0.0, 0.1, 0.25, 0.5, 1e-30)
    counts = fastcount.count_map(values, np.asarray(eps, np.float32), tile)
    zeros, zero_channels, zero_tiles, tile_saved = _numpy_counts(values, eps, tile)
    assert counts.finite
    assert counts.zeros.dtype == np.int64
    np.testing.assert_array_equal(counts.zeros, zeros)
    np.testing.assert_array_equal(counts.zero_channels, zero_channels)
    np.testing.assert_array_equal(counts.zero_tiles, zero_tiles)
    np.testing.assert_array_equal(counts.tile_saved, tile_saved)


def test_kernel_boundaries_are_inclusive_in_float32() -> None:
    """|x| = ε counts, one float above does not, −0.0 is zero, −0.0 as ε means 0."""
    values = PLANTED.reshape(1, 1, 1, -1)
    counts = fastcount.count_map(values, np.asarray([0.0, -0.0, 0.1], np.float32), (1, 12))
    assert counts.zeros.tolist() == [[2, 2, 7]]
    float64_bound = fastcount.count_map(values, np.asarray([0.1]), (1, 12))  # cast to float32
    assert float64_bound.zeros.tolist() == [[7]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -np.nan])
def test_kernel_reports_values_that_are_not_finite(bad: float) -> None:
    values = _planted((2, 3, 8, 8))
    assert fastcount.count_map(values, np.asarray(EPS, np.float32), (8, 8)).finite
    values[1, 2, 3, 4] = bad
    assert not fastcount.count_map(values, np.asarray(EPS, np.float32), (8, 8)).finite


def test_host_counts_are_the_same_with_and_without_the_kernel(monkeypatch) -> None:
    probe = Probe(tensor="t", kind="tensor", shape=(0, 3, 10, 13), tile_max="t")
    eps = np.asarray(EPS, np.float32)
    for shape in ((2, 3, 10, 13), (4, 37), (2, 3, 20)):
        values = _planted(shape, seed=3)
        fast = _count_values(probe, values, eps, (4, 4), shape[0])
        with monkeypatch.context() as patch:
            patch.setattr(fastcount, "_KERNEL", None)
            slow = _count_values(probe, values, eps, (4, 4), shape[0])
        for name in ("zeros", "zero_channels", "saved", "zero_tiles", "tile_saved"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), name)
        assert (fast.tiles, fast.channels, fast.shape) == (slow.tiles, slow.channels, slow.shape)


def _three_ways(path: Path, calibration: SampleSource, monkeypatch, caplog, **options):
    """The analysis with the fast path, with the in-graph probes, and with numba missing."""
    fast = analyze_model(path, calibration, eps=EPS, fast=True, **options)
    graph = analyze_model(path, calibration, eps=EPS, fast=False, **options)
    with monkeypatch.context() as patch, caplog.at_level(logging.INFO):
        patch.setattr(fastcount, "_KERNEL", None)
        fallback = analyze_model(path, calibration, eps=EPS, **options)
    notes = [r.getMessage() for r in caplog.records if "numba is not installed" in r.getMessage()]
    assert notes == [
        "numba is not installed: counting in the graph (slower); "
        "pip install 'onnx-prune[fast]' for the one-read counting kernel"
    ]
    return fast, graph, fallback


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_fast_path_equals_the_in_graph_probes_and_numpy(
    tmp_path: Path, monkeypatch, caplog, batch_size: int
) -> None:
    """Several batches of one shape (bound buffers in turn) and a ragged last one."""
    model_path = save(two_conv_model(), tmp_path)
    inputs = _inputs(tmp_path, samples=11)
    calibration = SampleSource(tensors=inputs, batch_size=batch_size)
    fast, graph, fallback = _three_ways(model_path, calibration, monkeypatch, caplog, tile=(3, 3))
    assert fast.activations == graph.activations == fallback.activations
    _check_against_numpy(fast, model_path, np.load(inputs))


def test_fast_path_boundary_values_equal_the_in_graph_probes(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    x = np.zeros((3, 1, 4, 4), np.float32)
    x.reshape(3, -1)[:, :12] = PLANTED
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 1, 4, 4])],
        [numpy_helper.from_array(-np.ones((1, 1, 1, 1), np.float32), "w")],
    )
    np.save(tmp_path / "x.npy", x)
    calibration = SampleSource(tensors=tmp_path / "x.npy", batch_size=1)
    fast, graph, fallback = _three_ways(save(model, tmp_path), calibration, monkeypatch, caplog)
    assert fast.activations == graph.activations == fallback.activations
    assert fast.activations.tensors["y"].zeros == (3 * 6, 3 * 11, 3 * 15, 3 * 16)


def test_fast_path_refuses_nan_like_the_in_graph_probes(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    path = save(two_conv_model(), tmp_path)
    for fast in (True, False):
        calibration = SampleSource(tensors=tmp_path / "x.npy", batch_size=1)
        with pytest.raises(UnsupportedModelError, match="NaN or infinite values"):
            analyze_model(path, calibration, eps=EPS, fast=fast)


def test_host_probes_add_no_nodes_and_mark_the_maps_as_outputs(tmp_path: Path) -> None:
    loaded = load_model(save(two_conv_model(), tmp_path))
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    probed = add_probes(loaded.model, layers, eps=EPS, on_host=True)
    added = probed.model.graph.node[len(loaded.model.graph.node) :]
    assert [node.op_type for node in added] == ["Identity"]  # for the graph input x only
    outputs = [output.name for output in probed.model.graph.output]
    assert outputs == ["y", added[0].output[0], "r1", "r2", "f"]
    assert {probe.kind for probe in probed.manifest.probes} == {"tensor"}
    assert loaded.model.graph.output[0].name == "y" and len(loaded.model.graph.output) == 1


def test_embedded_model_in_graph_probes_equal_the_fast_path(tmp_path: Path) -> None:
    """The real model's maps, two photos, tiles 8×8 and a ragged 5×5."""
    from onnx_prune.cli import DEFAULT_IMAGES, DEFAULT_MODEL

    calibration = SampleSource(images=(DEFAULT_IMAGES,), limit=3, batch_size=1)
    for tile in ((8, 8), (5, 5)):
        runs = [
            analyze_model(DEFAULT_MODEL, calibration, eps=EPS, tile=tile, fast=fast)
            for fast in (True, False)
        ]
        assert runs[0].activations == runs[1].activations


@pytest.mark.parametrize("count", [1, 5, 6, 7, 9, 12])
@pytest.mark.parametrize(
    ("shape", "tile"),
    [
        ((2, 3, 14, 14), (8, 8)),  # small planes, grouped
        ((2, 2, 70, 75), (8, 8)),  # planes larger than a span: bands in chunks, ragged tiles
        ((1, 2, 70, 70), (70, 70)),  # one tile per large plane, in pieces
        ((2, 2, 5000), None),  # rank 3, one large plane per channel
        ((3, 50), None),  # rank 2: each value its own plane
    ],
)
def test_kernel_counts_any_number_of_eps(
    count: int, shape: tuple[int, ...], tile: tuple[int, int] | None
) -> None:
    """ε six a pass and the rest one a pass, on every path of the kernel."""
    values = _planted(shape, seed=count)
    eps = tuple(float(e) for e in np.linspace(0.0, 0.6, count))
    counts = fastcount.count_map(values, np.asarray(eps, np.float32), tile)
    zeros, zero_channels, zero_tiles, tile_saved = _numpy_counts(values, eps, tile)
    np.testing.assert_array_equal(counts.zeros, zeros)
    np.testing.assert_array_equal(counts.zero_channels, zero_channels)
    np.testing.assert_array_equal(counts.zero_tiles, zero_tiles)
    np.testing.assert_array_equal(counts.tile_saved, tile_saved)
