"""Maps taken out in onnxruntime's blocked layout: the rewrite, and the kernel against numpy."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from onnx_prune import fastcount, nchwc
from onnx_prune.analysis import analyze_model
from onnx_prune.calibrate import _count_probe
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import SampleSource
from onnx_prune.probes import Probe
from onnx_prune.runtime import ModelSource, Session, SessionOptions, open_session
from onnx_prune.shards import CountOptions, count_in_one_piece, prepare
from tests.builders import FLOAT, conv_relu_model, make_model, save
from tests.test_fastcount import _numpy_counts, _planted
from tests.test_probes import EPS, _inputs, two_conv_model

pytestmark = pytest.mark.skipif(not fastcount.available(), reason="numba is not installed")
BLOCK = nchwc.block_size()
needs_blocks = pytest.mark.skipif(not BLOCK, reason="onnxruntime has no blocked layout here")


def _blocked(values: np.ndarray, block: int, seed: int = 5) -> np.ndarray:
    """``values`` [N, C, H, W] in the blocked layout, the padding channels filled with values
    that would change every count if they were counted."""
    samples, channels, height, width = values.shape
    padded = -(-channels // block) * block
    full = np.random.default_rng(seed).uniform(-2, 2, (samples, padded, height, width))
    full = full.astype(np.float32)
    full[:, :channels] = values
    lanes = full.reshape(samples, padded // block, block, height, width).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(lanes).reshape(samples, padded, height, width)


@pytest.mark.parametrize("block", [4, 8, 16])
@pytest.mark.parametrize(
    ("shape", "tile"),
    [
        ((2, 24, 10, 13), (4, 4)),  # a padded last block, ragged tiles on both axes
        ((3, 16, 8, 8), (8, 8)),  # whole blocks
        ((1, 3, 3, 5), (8, 8)),  # one partial block, tile larger than the plane
        ((2, 40, 7, 7), (3, 7)),
        ((1, 5, 6, 6), (1, 1)),
        ((2, 24, 64, 72), (8, 8)),  # a sample over 256 KB: counted a band at a time
        ((1, 40, 50, 70), (5, 7)),
    ],
)
def test_blocked_counts_match_numpy_and_leave_the_padding_out(
    block: int, shape: tuple[int, ...], tile: tuple[int, int]
) -> None:
    values = _planted(shape)
    for eps in ((0.0,), (0.0, 0.1, 0.25, 0.5, 1e-30), tuple(np.linspace(0, 1, 9))):
        counts = fastcount.count_blocked(
            _blocked(values, block), block, shape[1], np.asarray(eps, np.float32), tile
        )
        zeros, zero_channels, zero_tiles, tile_saved = _numpy_counts(values, eps, tile)
        assert counts.finite
        np.testing.assert_array_equal(counts.zeros, zeros)
        np.testing.assert_array_equal(counts.zero_channels, zero_channels)
        np.testing.assert_array_equal(counts.zero_tiles, zero_tiles)
        np.testing.assert_array_equal(counts.tile_saved, tile_saved)


def test_unblock_inverts_the_layout() -> None:
    values = _planted((2, 24, 5, 6))
    np.testing.assert_array_equal(nchwc.unblock(_blocked(values, 16), 24, 16), values)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_blocked_map_with_nan_or_inf_is_an_error_but_its_padding_is_not_read(bad: float) -> None:
    values = _planted((1, 3, 4, 4))
    blocked = _blocked(values, 8)
    lanes = blocked.reshape(1, 1, 4, 4, 8)
    lanes[0, 0, 1, 2, 6] = bad  # a padding channel: not the map's
    eps = np.asarray([0.0], np.float32)
    assert fastcount.count_blocked(blocked, 8, 3, eps, (2, 2)).finite
    lanes[0, 0, 1, 2, 1] = bad
    assert not fastcount.count_blocked(blocked, 8, 3, eps, (2, 2)).finite
    probe = Probe(tensor="t", kind="tensor", shape=(3, 4, 4), tile_max="t", block=8, channels=3)
    with pytest.raises(UnsupportedModelError, match="NaN or infinite"):
        _count_probe(probe, {"t": blocked}, eps, (2, 2), 1)


def residual_model() -> object:
    """x[N,16,8,8] -> conv a (ReLU) -> conv b (24 channels) -> c; conv d of x (24) -> + c:
    a residual Add that onnxruntime fuses into conv b in the plain model (not in the probed one,
    where conv b's output is a probed map), and padded 24-channel blocks."""
    rng = np.random.default_rng(3)
    arrays = {
        "wa": rng.normal(0, 0.3, (16, 16, 3, 3)).astype(np.float32),
        "wb": rng.normal(0, 0.3, (24, 16, 1, 1)).astype(np.float32),
        "wd": rng.normal(0, 0.3, (24, 16, 1, 1)).astype(np.float32),
        "ba": np.linspace(-1, 0.2, 16).astype(np.float32),
    }
    arrays["wb"][3] = 0.0  # an all-zero channel
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b"),
        helper.make_node("Conv", ["x", "wd"], ["d"], name="conv_d"),
        helper.make_node("Add", ["b", "d"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 16, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 24, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )


@needs_blocks
def test_prepare_takes_the_maps_out_blocked(tmp_path: Path) -> None:
    path = save(residual_model(), tmp_path)  # type: ignore[arg-type]
    prepared = prepare(path, CountOptions(eps=EPS, tile=(8, 8)))
    assert prepared.optimized
    blocked = {p.tensor: p for p in prepared.probed.manifest.probes if p.block}
    assert blocked and all(p.block == BLOCK for p in blocked.values())
    assert blocked["ra"].channels == 16 and blocked["b"].channels == 24
    outputs = [output.name for output in prepared.probed.model.graph.output]
    assert all(p.tile_max in outputs and p.tile_max != p.tensor for p in blocked.values())
    assert prepared.session_options(CountOptions(eps=EPS, tile=(8, 8))).optimize is False
    plain = prepare(path, CountOptions(eps=EPS, tile=(8, 8), optimize=False))
    assert not plain.optimized and not any(p.block for p in plain.probed.manifest.probes)


@needs_blocks
@pytest.mark.parametrize("tile", [(8, 8), (3, 5)])
def test_blocked_fast_path_equals_the_in_graph_probes(
    tmp_path: Path, tile: tuple[int, int]
) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (7, 16, 8, 8)).astype(np.float32)
    x[1, 3] = 0.0
    np.save(tmp_path / "x.npy", x)
    path = save(residual_model(), tmp_path)  # type: ignore[arg-type]
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=3)
    runs = [analyze_model(path, source, eps=EPS, tile=tile, fast=fast) for fast in (True, False)]
    assert runs[0].activations == runs[1].activations
    assert runs[0].activations.tensors["b"].channels == 7 * 24


@needs_blocks
def test_two_conv_model_blocked_equals_numpy_path(tmp_path: Path) -> None:
    path = save(two_conv_model(), tmp_path)
    source = SampleSource(tensors=_inputs(tmp_path), batch_size=4)
    runs = [analyze_model(path, source, eps=EPS, fast=fast) for fast in (True, False)]
    assert runs[0].activations == runs[1].activations


def test_without_a_blocked_layout_the_probed_model_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nchwc, "block_size", lambda: 0)
    path = save(residual_model(), tmp_path)  # type: ignore[arg-type]
    prepared = prepare(path, CountOptions(eps=EPS, tile=(8, 8)))
    assert not prepared.optimized
    assert not any(p.block for p in prepared.probed.manifest.probes)


def test_a_model_onnxruntime_cannot_optimize_keeps_the_probed_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(source: ModelSource) -> object:
        raise UnsupportedModelError("onnxruntime cannot optimize the model: no")

    monkeypatch.setattr(nchwc, "cpu_optimized", fail)
    path = save(residual_model(), tmp_path)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="onnx_prune.shards"):
        prepared = prepare(path, CountOptions(eps=EPS, tile=(8, 8)))
    assert not prepared.optimized
    assert "not taken out blocked" in caplog.text


@needs_blocks
def test_an_optimized_copy_that_does_not_open_falls_back_to_the_model_as_written(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (5, 16, 8, 8)).astype(np.float32))
    path = save(residual_model(), tmp_path)  # type: ignore[arg-type]
    options = CountOptions(eps=EPS, tile=(8, 8))
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=2)
    opened: list[bool] = []

    def factory(model_source: ModelSource, session_options: SessionOptions) -> Session:
        assert model_source.model is not None
        nodes = model_source.model.graph.node
        optimized = any(node.domain == "com.microsoft.nchwc" for node in nodes)
        opened.append(optimized)
        if optimized:
            raise UnsupportedModelError("onnxruntime cannot load the model: planted")
        return open_session(model_source, session_options)

    prepared = prepare(path, options)
    assert prepared.optimized
    fallen_back = count_in_one_piece(prepared, source, options, session_factory=factory)
    assert opened == [True, False]
    blocked = count_in_one_piece(prepared, source, options)
    assert fallen_back.stats == blocked.stats


@needs_blocks
def test_the_models_own_output_stays_when_its_map_is_taken_out(tmp_path: Path) -> None:
    """y = relu(conv(x)) is the model's output and a probed OFM: its reorder stays for y."""
    weight = np.random.default_rng(6).normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    weight[2] = 0.0
    path = save(conv_relu_model(weight), tmp_path)
    prepared = prepare(path, CountOptions(eps=EPS, tile=(8, 8)))
    probe = prepared.probed.manifest.probe("y")
    assert probe.block == BLOCK and probe.channels == 8
    outputs = [output.name for output in prepared.probed.model.graph.output]
    assert "y" in outputs and probe.tile_max in outputs
    source = SampleSource(tensors=_inputs(tmp_path), batch_size=4)
    runs = [analyze_model(path, source, eps=EPS, fast=fast) for fast in (True, False)]
    assert runs[0].activations == runs[1].activations


def test_a_map_not_in_the_blocked_layout_it_was_promised_is_one_line() -> None:
    probe = Probe(
        tensor="t", kind="tensor", shape=(0, 24, 4, 4), tile_max="t", block=16, channels=24
    )
    eps = np.asarray([0.0], np.float32)
    for values in (
        np.zeros((1, 24, 4, 4), np.float32),  # NCHW, not padded to 32
        np.zeros((1, 32, 4, 4), np.float64),
        np.zeros((1, 32, 4, 8), np.float32)[..., ::2],  # not contiguous
    ):
        with pytest.raises(UnsupportedModelError, match="not in its blocked layout of 32"):
            _count_probe(probe, {"t": values}, eps, (2, 2), 1)


@pytest.mark.parametrize(
    ("channels", "shape"), [(None, (0, 24, 8, 8)), (0, (0, 24, 8, 8)), (24, (0, 16, 8, 8))]
)
def test_a_reorder_that_does_not_say_its_channels_keeps_the_map_in_nchw(
    channels: int | None, shape: tuple[int, ...]
) -> None:
    reorder = helper.make_node("ReorderOutput", ["blocked"], ["t"], domain="com.microsoft.nchwc")
    if channels is not None:
        reorder.attribute.append(helper.make_attribute("channels", channels))
    graph = helper.make_graph([reorder], "g", [], [helper.make_tensor_value_info("t", FLOAT, None)])
    probe = Probe(tensor="t", kind="tensor", shape=shape, tile_max="t")
    probes, taken = nchwc._blocked_probes(graph, (probe,), 16)
    assert probes == (probe,) and not taken
    good = helper.make_node(
        "ReorderOutput", ["blocked"], ["t"], domain="com.microsoft.nchwc", channels=24
    )
    del graph.node[:]
    graph.node.append(good)
    probes, taken = nchwc._blocked_probes(graph, (replace(probe, shape=(0, 24, 8, 8)),), 16)
    assert probes[0].tile_max == "blocked" and probes[0].channels == 24 and list(taken) == ["t"]
