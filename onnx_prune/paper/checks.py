"""Check a converted model against what its package says it does: predictions and weights.

A converter that gets a padding or a layout wrong still produces a model that runs; these checks
are what tell. Each converted network is run on the photos its source predicts for (the
predictions were taken with the package's own runtime), and VGG-16's biases are compared with
the VGG authors' release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from onnx_prune.data import IMAGENET_CLASSES
from onnx_prune.inputs import get_preset, load_image
from onnx_prune.paper.networks import RealSource
from onnx_prune.runtime import ModelSource, open_session

BIAS_TOLERANCE = 1e-6
BODY_TOLERANCE = 1e-5
BODY_CHECK_PHOTO = "dog.jpg"


@dataclass(frozen=True)
class Check:
    """One check: what was expected, what the converted model gave, and whether they agree."""

    what: str
    expected: str
    found: str
    passed: bool


def class_names(source: RealSource) -> tuple[str, ...]:
    """The output's class names: the source's own, or background + ImageNet-1k."""
    if source.labels is not None:
        return source.labels
    return ("background", *IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines())


def check_model(
    source: RealSource, model_path: Path, images: Path, *, original: Path | None = None
) -> tuple[Check, ...]:
    """Every check of ``source`` on the converted model at ``model_path``; with the package's
    own ONNX file ``original``, a conv body is also compared with it, run as the package runs it."""
    checks = [_bias_check(model_path, item.conv_index, item.value) for item in source.bias_checks]
    if source.photo_checks:
        checks.extend(_photo_checks(source, model_path, images))
    if source.converter == "onnx-body" and original is not None:
        checks.append(_body_check(source, original, images / BODY_CHECK_PHOTO))
    return tuple(checks)


def _body_check(source: RealSource, original: Path, photo: Path) -> Check:
    """The package's own model (onnxruntime, NHWC at its own size) and the body cut at that size
    give the same ``source.output`` tensor on ``photo``."""
    from onnx_prune.paper.onnx_body import cut_body

    assert source.output is not None
    model = onnx.load(str(original))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = (int(dims[1].dim_value), int(dims[2].dim_value))
    body = cut_body(model, output=source.output, size=size)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(source.output))
    image = load_image(photo, get_preset(source.preset), size)[None]
    package = open_session(ModelSource(original, original.parent, model))
    [expected] = package.run(
        [source.output], {model.graph.input[0].name: image.transpose(0, 2, 3, 1)}
    )
    converted = open_session(ModelSource(original, original.parent, body))
    [found] = converted.run([source.output], {body.graph.input[0].name: image})
    difference = float(np.max(np.abs(found - expected)) / max(np.max(np.abs(expected)), 1e-30))
    return Check(
        f"{source.output} vs the package's own model at {size[0]}x{size[1]}, {photo.name}",
        f"relative difference <= {BODY_TOLERANCE:g}",
        f"{difference:.1e}",
        difference <= BODY_TOLERANCE,
    )


def _bias_check(model_path: Path, index: int, expected: float) -> Check:
    model = onnx.load(str(model_path))
    values = {item.name: item for item in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    found = float(numpy_helper.to_array(values[convs[index].input[2]]).reshape(-1)[0])
    return Check(
        f"conv {index + 1} bias[0]",
        f"{expected:.8f}",
        f"{found:.8f}",
        abs(found - expected) <= BIAS_TOLERANCE,
    )


def _photo_checks(source: RealSource, model_path: Path, images: Path) -> list[Check]:
    output = onnx.load(str(model_path)).graph.output[0].name
    session = open_session(model_path)
    [spec] = session.inputs()
    names = class_names(source)
    preset = get_preset(source.preset)
    checks = []
    for item in source.photo_checks:
        image = load_image(images / item.photo, preset, source.size)[None]
        [scores] = session.run([output], {spec.name: image})
        probabilities = _probabilities(np.asarray(scores, dtype=np.float64).reshape(-1))
        top = int(np.argmax(probabilities))
        found = f"{names[top]} ({probabilities[top]:.2f})"
        checks.append(Check(item.photo, item.label, found, names[top] == item.label))
    return checks


def _probabilities(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``scores`` when they already are probabilities (a softmax output), else their softmax."""
    if scores.min() >= 0 and abs(scores.sum() - 1) < 1e-3:
        return scores
    exp = np.exp(scores - scores.max())
    result: npt.NDArray[np.float64] = exp / exp.sum()
    return result
