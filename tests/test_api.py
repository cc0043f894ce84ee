"""The documented Python API: what ``onnx_prune`` exports, used the way the README shows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnx_prune
from onnx_prune import (
    OnnxPruneError,
    SampleSource,
    analysis_document,
    analyze_model,
    count_zero_weights,
    dumps,
    load_model,
    measure_accuracy,
    weights_document,
)
from tests.builders import conv_relu_model, conv_weight, save


def test_all_lists_exactly_the_public_names() -> None:
    for name in onnx_prune.__all__:  # imported on first use
        getattr(onnx_prune, name)
    public = {name for name in vars(onnx_prune) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(onnx_prune, name)).__name__ == "module"}
    lazy_loading = {"TYPE_CHECKING"}
    assert set(onnx_prune.__all__) == (public - modules - lazy_loading) | {"__version__"}
    assert len(onnx_prune.__all__) == len(set(onnx_prune.__all__))
    for name in onnx_prune.__all__:
        assert getattr(onnx_prune, name) is not None, name


def test_the_exported_entry_points_are_the_library_ones() -> None:
    from onnx_prune import accuracy, analysis, weights

    assert onnx_prune.analyze_model is analysis.analyze_model
    assert onnx_prune.measure_accuracy is accuracy.measure_accuracy
    assert onnx_prune.count_zero_weights is weights.count_zero_weights
    assert issubclass(onnx_prune.ModelLoadError, OnnxPruneError)


def test_the_three_entry_points_on_a_tiny_model(tmp_path: Path) -> None:
    path = save(conv_relu_model(conv_weight()), tmp_path)
    model = load_model(path)
    weights = count_zero_weights(model, eps=(0.0, 1e-3))
    assert weights.total().zeros == (66, 73)  # planted by conv_weight
    assert json.loads(dumps(weights_document(weights)))["totals"]["zeros"] == [66, 73]

    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"), eps=(0.0,))
    assert analysis.activations.samples == 4
    relu = np.maximum(_conv(x, conv_weight()), 0)
    ofm = analysis.activations.tensors[analysis.layers[0].ofm]
    assert ofm.zeros == (int(np.count_nonzero(relu == 0)),)
    assert analysis_document(analysis)["layers"][0]["ofm"]["zeros"] == [ofm.zeros[0]]

    report = measure_accuracy(model, SampleSource(tensors=tmp_path / "x.npy"), eps=(0.0,))
    assert (report.samples, report.pruned_layers) == (4, 0)  # its one conv reads the model input
    assert report.results[0].agreement is None  # [N, 8, 8, 8] is no class scores
    assert report.results[0].outputs["y"].cosine == pytest.approx(1.0)


def _conv(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """3×3 convolution with padding 1, in numpy."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], weight.shape[0], 8, 8), np.float64)
    for i in range(3):
        for j in range(3):
            window = padded[:, :, i : i + 8, j : j + 8]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    return out
