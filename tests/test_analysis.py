"""The whole analysis of one model (``analysis.analyze_model``): summaries, external data, fixed
batches, the embedded and onnx's light models, non-finite maps, unoptimized runs; every count
checked against numpy on the same tensors (the probe pass itself: ``test_probes.py``)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_prune.analysis import analyze_model
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import DEFAULT_EPS, SampleSource
from tests.builders import FLOAT, make_model, save
from tests.test_probes import EPS, _check_against_numpy, _inputs, two_conv_model

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")


def test_summary_figures(tmp_path: Path) -> None:
    model_path = save(two_conv_model(), tmp_path)
    analysis = analyze_model(model_path, SampleSource(tensors=_inputs(tmp_path)), eps=EPS)
    stats = analysis.activations.tensors
    ofm = [stats[layer.ofm] for layer in analysis.layers]
    for k in range(len(EPS)):
        mean = sum(m.zeros[k] / m.elements for m in ofm) / len(ofm)
        weighted = sum(m.zeros[k] for m in ofm) / sum(m.elements for m in ofm)
        assert analysis.summary.ofm.paper_mean[k] == pytest.approx(mean)
        assert analysis.summary.ofm.weighted[k] == pytest.approx(weighted)
    per_sample_saved = sum(sample.ofm_saved[0] for sample in analysis.activations.per_sample)
    assert per_sample_saved == sum(m.saved_elements[0] for m in ofm)


def test_external_data_model(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "ext.onnx"
    onnx.save(
        two_conv_model(),
        str(path),
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    inputs = _inputs(tmp_path)
    analysis = analyze_model(path, SampleSource(tensors=inputs), eps=EPS)
    _check_against_numpy(analysis, path, np.load(inputs))
    assert sorted(p.name for p in folder.iterdir()) == ["ext.data", "ext.onnx"]


def test_batch_fixed_inside_the_graph_falls_back_to_single_samples(tmp_path: Path) -> None:
    """The input says N, but a Reshape fixes the batch at 1, as old zoo models do."""
    weight = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    shape = numpy_helper.from_array(np.array([1, 256], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 256])],
        [numpy_helper.from_array(weight, "w"), shape],
    )
    inputs = _inputs(tmp_path, samples=5)
    analysis = analyze_model(
        save(model, tmp_path), SampleSource(tensors=inputs, batch_size=4), eps=EPS
    )
    assert analysis.activations.samples == 5
    assert analysis.activations.tensors["r"].elements == 5 * 4 * 64


@pytest.mark.slow
def test_light_resnet50_runs_at_its_fixed_batch(tmp_path: Path) -> None:
    path = Path(LIGHT) / "light_resnet50.onnx"
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    calibration = SampleSource(tensors=tmp_path / "x.npy", batch_size=8)
    analysis = analyze_model(path, calibration, eps=(0.0,))
    assert analysis.batch_size == 1
    assert analysis.activations.samples == 2
    assert len(analysis.layers) == 54


def test_light_models_are_available() -> None:
    assert len(glob.glob(os.path.join(LIGHT, "*.onnx"))) >= 9


@pytest.mark.slow
def test_embedded_model_counts_match_numpy(tmp_path: Path) -> None:
    """The embedded EfficientNet-Lite0 on two photos: every probed tensor against numpy."""
    from onnx_prune.cli import DEFAULT_IMAGES, DEFAULT_MODEL
    from onnx_prune.inputs import get_preset, load_image

    preset = get_preset("efficientnet-lite")
    photos = [
        load_image(DEFAULT_IMAGES / name, preset, (224, 224)) for name in ("dog.jpg", "eagle.jpg")
    ]
    x = np.stack(photos)
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(DEFAULT_MODEL, SampleSource(tensors=tmp_path / "x.npy"), eps=EPS)
    assert len(analysis.layers) == 50
    _check_against_numpy(analysis, DEFAULT_MODEL, x)


def test_infinite_values_are_a_clear_error(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    x[1, 0, 0, 0] = -np.inf
    np.save(tmp_path / "x.npy", x)
    path = save(two_conv_model(), tmp_path)
    with pytest.raises(UnsupportedModelError, match="NaN or infinite values"):
        analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"), eps=EPS)


def test_unoptimized_run_gives_the_same_counts_on_a_graph_without_fusions(tmp_path: Path) -> None:
    path = save(two_conv_model(), tmp_path)
    inputs = _inputs(tmp_path)
    runs = [
        analyze_model(path, SampleSource(tensors=inputs), eps=EPS, optimize=optimize)
        for optimize in (True, False)
    ]
    assert runs[0].activations.tensors == runs[1].activations.tensors


def test_a_batch_fixed_above_one_pads_the_last_batch_and_drops_the_copies(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, samples=11)
    fixed = analyze_model(save(two_conv_model(batch=4), tmp_path), SampleSource(tensors=inputs))
    free = analyze_model(
        save(two_conv_model(), tmp_path, "free.onnx"), SampleSource(tensors=inputs, batch_size=4)
    )
    assert (fixed.batch_size, fixed.activations.samples, fixed.padded_samples) == (4, 11, 1)
    assert free.padded_samples == 0
    assert fixed.activations.tensors == free.activations.tensors
    assert fixed.activations.per_sample == free.activations.per_sample
    x = np.load(inputs)
    expected = [int(np.count_nonzero(np.abs(x) <= e)) for e in DEFAULT_EPS]
    assert list(fixed.activations.tensors["x"].zeros) == expected
