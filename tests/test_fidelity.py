"""Output fidelity: cosine and relative L2 per output, classifier detection, and ``accuracy`` on
a detector-shaped model ([N, 6, 100]) checked against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_prune.accuracy import _model_outputs, measure_accuracy
from onnx_prune.cli import main
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import SampleSource
from onnx_prune.fidelity import (
    Fidelity,
    FidelityTotals,
    is_classifier,
    output_fidelity,
    per_sample,
    sample_fidelity,
)
from onnx_prune.load import load_model
from tests.builders import FLOAT, make_model, save
from tests.test_feeds import vad_inputs, vad_model

EPS = (0.0, 0.1, 0.3)


# --- the metrics --------------------------------------------------------------------------------


def test_sample_fidelity_edge_cases() -> None:
    reference = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    pruned = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    cosine, relative = sample_fidelity(reference, pruned)
    np.testing.assert_allclose(cosine, [0.0, 1.0, 1.0, 0.0, 0.6])
    np.testing.assert_allclose(relative, [np.sqrt(2), 1.0, 0.0, np.inf, 0.8])


def test_per_sample_takes_the_batch_axis_and_drops_padding() -> None:
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # batch on axis 1, 3 rows of which 2 are real
    rows = per_sample(array, 2, axis=1)
    np.testing.assert_array_equal(rows, [array[:, 0].reshape(-1), array[:, 1].reshape(-1)])
    assert per_sample(array, 2, axis=None).shape == (1, 24)


def test_totals_are_means_over_samples() -> None:
    totals = FidelityTotals()
    totals.add(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), 1)
    totals.add(np.array([[1.0, 0.0], [9.0, 9.0]]), np.array([[0.0, 1.0], [9.0, 9.0]]), 1)
    assert totals.samples == 2
    result = totals.result()
    assert result.cosine == 0.5
    assert result.relative_l2 == pytest.approx(np.sqrt(2) / 2)


def test_output_fidelity_per_output() -> None:
    reference = {"a": np.ones((2, 3)), "b": np.ones((4, 2, 5))}
    pruned = {"a": np.ones((2, 3)), "b": -np.ones((4, 2, 5))}
    result = output_fidelity(reference, pruned, axes={"b": 1})
    assert result["a"] == Fidelity(1.0, 0.0)
    assert result["b"].cosine == pytest.approx(-1.0)
    assert result["b"].relative_l2 == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("shape", "axis", "expected"),
    [
        ((8, 1000), 0, True),
        ((8, 1000, 1, 1), 0, True),
        ((8, 2), 0, True),
        ((8, 1), 0, False),
        ((1, 22, 2100), 0, False),  # YOLOv8n's boxes and scores
        ((8, 6, 100), 0, False),
        ((8, 40, 6625), 0, False),  # OCR: per time step
        ((1000,), None, True),
        ((2, 8, 128), 1, False),
    ],
)
def test_classifier_outputs_are_decided_from_shape(
    shape: tuple[int, ...], axis: int | None, expected: bool
) -> None:
    assert is_classifier(shape, batch_axis=axis) is expected


# --- a detector-shaped model --------------------------------------------------------------------


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    w1 = rng.normal(0, 1, (4, 3)).astype(np.float32)
    w1[1] *= 0.002  # channel 1 of the hidden map stays within 0.1: pruned from ε = 0.1
    w1[3] *= 0.05  # within 0.3 for some samples
    w2 = rng.normal(0, 1, (6, 4)).astype(np.float32)
    return w1, w2


def detector() -> onnx.ModelProto:
    """x [N, 3, 10, 10] -> 1x1 conv (4) -> Relu -> 1x1 conv (6) -> Reshape -> boxes [N, 6, 100]."""
    w1, w2 = _weights()
    initializers = [
        numpy_helper.from_array(w1.reshape(4, 3, 1, 1), "w1"),
        numpy_helper.from_array(w2.reshape(6, 4, 1, 1), "w2"),
        numpy_helper.from_array(np.array([0, 6, 100], np.int64), "box_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="head"),
        helper.make_node("Reshape", ["c2", "box_shape"], ["boxes"], name="reshape"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 10, 10])],
        [helper.make_tensor_value_info("boxes", FLOAT, ["N", 6, 100])],
        initializers,
    )


def _numpy_boxes(x: np.ndarray, eps: float) -> np.ndarray:
    """The detector with channel pruning at the head's IFM, in float64."""
    w1, w2 = (w.astype(np.float64) for w in _weights())
    hidden = np.maximum(np.einsum("oc,nchw->nohw", w1, x), 0)
    zero = np.abs(hidden).max(axis=(2, 3), keepdims=True) <= eps
    hidden = np.where(zero, 0.0, hidden)
    return np.einsum("oc,nchw->nohw", w2, hidden).reshape(len(x), 6, 100)


def _samples(folder: Path) -> np.ndarray:
    x = np.random.default_rng(4).normal(0, 1, (5, 3, 10, 10)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return x


def test_accuracy_on_a_detector_reports_cosine_and_relative_l2_only(tmp_path: Path) -> None:
    x = _samples(tmp_path).astype(np.float64)
    loaded = load_model(save(detector(), tmp_path))
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=2)
    report = measure_accuracy(loaded, source, eps=EPS)
    assert (report.outputs, report.classifier_outputs, report.scored_output) == (
        ("boxes",),
        (),
        None,
    )
    unpruned = _numpy_boxes(x, -1.0)
    for result in report.results:
        assert (result.top1, result.top5, result.agreement, result.kl) == (None,) * 4
        cosine, relative = sample_fidelity(
            per_sample(unpruned, 5), per_sample(_numpy_boxes(x, result.eps or 0.0), 5)
        )
        fidelity = result.outputs["boxes"]
        assert fidelity.cosine == pytest.approx(float(np.mean(cosine)), abs=1e-6)
        assert fidelity.relative_l2 == pytest.approx(float(np.mean(relative)), abs=1e-5)
    cosines = [result.outputs["boxes"].cosine for result in report.results]
    assert cosines[0] == pytest.approx(1.0) and cosines[1] < 1.0 and cosines[2] < cosines[1]
    assert report.max_eps_within_cosine(cosines[1] - 1e-9) == 0.1


def test_the_detector_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _samples(tmp_path)
    model = save(detector(), tmp_path)
    arguments = ["accuracy", str(model), "--inputs", str(tmp_path / "x.npy"), "--eps", "0,0.1"]
    assert main([*arguments, "--min-cosine", "0.5", "--json", str(tmp_path / "a.json")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "no output is shaped as class scores" in text
    assert "boxes" in text and "rel. L2" in text
    assert "Largest ε keeping every output's cosine at 0.5 or more: 0.1" in text
    document = json.loads((tmp_path / "a.json").read_text())
    first = document["results"][0]
    assert set(first["outputs"]["boxes"]) == {"cosine", "relative_l2"}
    assert first["outputs"]["boxes"]["cosine"] == pytest.approx(1.0)
    assert (first["top1"], first["top5"], first["agreement"], first["kl"]) == (None,) * 4
    assert document["classifier_outputs"] == [] and document["scored_output"] is None
    assert document["max_eps_within_cosine"] == 0.1


def test_the_fidelity_title_and_caption_do_not_wrap_with_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a pipe (120 columns) the narrow fidelity table wrapped its title over two lines."""
    _samples(tmp_path)
    model = save(detector(), tmp_path)
    assert main(["accuracy", str(model), "--inputs", str(tmp_path / "x.npy"), "--eps", "0"]) == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert "Output fidelity (pruned vs unpruned, mean over samples)" in lines
    assert "cosine: 1 = same direction; rel. L2: ‖pruned − unpruned‖ / ‖unpruned‖" in lines
    assert any("; 1 layer pruned at its input;" in line for line in lines), lines


def test_output_must_name_a_classifier_output(tmp_path: Path) -> None:
    _samples(tmp_path)
    loaded = load_model(save(detector(), tmp_path))
    source = SampleSource(tensors=tmp_path / "x.npy")
    with pytest.raises(InputDataError, match="--output 'logits' is not an output of the model"):
        measure_accuracy(loaded, source, eps=EPS, output="logits")
    with pytest.raises(InputDataError) as caught:
        measure_accuracy(loaded, source, eps=EPS, output="boxes")
    assert str(caught.value) == (
        "--output 'boxes' has shape [5, 6, 100], not one row of class scores per sample: top-1 "
        "needs a classifier output; drop --output for cosine and relative L2 only"
    )


def test_outputs_with_their_own_batch_axis(tmp_path: Path) -> None:
    """The voice-activity model: out [batch, 8] and z [batch, 4] are read as class scores
    (shape decides), new_state [2, batch, 128] is compared per sample on its axis 1."""
    vad_inputs(tmp_path / "vad.npz", samples=2)  # a batch of 2 next to the state's leading 2
    loaded = load_model(save(vad_model(), tmp_path))
    source = SampleSource(tensors=tmp_path / "vad.npz")
    report = measure_accuracy(loaded, source, eps=(0.0, 0.5))
    assert report.outputs == ("out", "z", "new_state")
    assert report.classifier_outputs == ("out", "z") and report.scored_output == "out"
    assert report.classes == 8 and report.results[0].top5 is None  # no labels
    state = report.results[1].outputs["new_state"]  # not pruned: a tanh of the input
    assert (state.cosine, state.relative_l2) == (pytest.approx(1.0), 0.0)
    assert _model_outputs(loaded.model, "batch", None).axes == {"out": 0, "z": 0, "new_state": 1}
    z = report.results[1].outputs["z"]
    assert z.cosine < 1.0 and z.relative_l2 > 0.0  # fc2's IFM is pruned at ε = 0.5
    assert report.samples == 2
