"""A small float CNN and its copies made by onnxruntime's own quantizer (QDQ, QOperator, dynamic).

The quantized copies are what users bring (DESIGN.md §4): they are built in the test's temporary
folder, never committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.builders import make_model

FLOAT = TensorProto.FLOAT
INPUT_SHAPE = (3, 12, 12)
COMPUTE_LAYERS = 5


def small_cnn(*, opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu, depthwise Conv+Relu, pointwise Conv, GlobalAveragePool, MatMul+Relu, Gemm.

    Filters 1 and 5 of the first convolution and column 3 of the MatMul weight are zero.
    """
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

    conv1 = weight(8, 3, 3, 3)
    conv1[[1, 5]] = 0.0
    matmul = weight(16, 8)
    matmul[:, 3] = 0.0
    tensors = {
        "conv1_w": conv1,
        "conv1_b": weight(8),
        "dw_w": weight(8, 1, 3, 3),
        "dw_b": weight(8),
        "pw_w": weight(16, 8, 1, 1),
        "pw_b": weight(16),
        "fc1_w": matmul,
        "fc1_b": weight(8),
        "fc2_w": weight(4, 8),
        "fc2_b": weight(4),
    }
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Conv", ["r1", "dw_w", "dw_b"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("Conv", ["r2", "pw_w", "pw_b"], ["c3"], name="pw"),
        node("GlobalAveragePool", ["c3"], ["pool"], name="pool"),
        node("Flatten", ["pool"], ["flat"], name="flatten"),
        node("MatMul", ["flat", "fc1_w"], ["m1"], name="fc1"),
        node("Add", ["m1", "fc1_b"], ["a1"], name="fc1_bias"),
        node("Relu", ["a1"], ["r3"], name="relu3"),
        node("Gemm", ["r3", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", *INPUT_SHAPE])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4])],
        [numpy_helper.from_array(value, name) for name, value in tensors.items()],
        opset=opset,
    )


def calibration_samples(count: int = 8, seed: int = 1) -> np.ndarray:
    """Inputs with a share of exact zeros, as images after a ReLU-like preprocessing would be."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, 1.0, size=(count, *INPUT_SHAPE)).astype(np.float32)
    samples[samples < -0.5] = 0.0
    return samples


class _Reader:
    """A tiny onnxruntime CalibrationDataReader over ``calibration_samples``."""

    def __init__(self, name: str, samples: np.ndarray) -> None:
        self._rows: Iterator[dict[str, np.ndarray]] = iter(
            [{name: samples[i : i + 1]} for i in range(len(samples))]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._rows, None)


def quantize_static_copy(
    float_model: Path,
    folder: Path,
    *,
    qdq: bool,
    per_channel: bool,
    name: str,
    samples: np.ndarray | None = None,
    input_name: str = "x",
) -> Path:
    """``quantize_static`` of ``float_model`` in QDQ or QOperator format, calibrated on
    ``samples`` (default: ``calibration_samples()``)."""
    from onnxruntime.quantization import (  # noqa: TID251 (the quantizer is what users run)
        QuantFormat,
        QuantType,
        quantize_static,
    )

    destination = folder / name
    quantize_static(
        str(float_model),
        str(destination),
        _Reader(input_name, calibration_samples() if samples is None else samples),
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return destination


def quantize_dynamic_copy(float_model: Path, folder: Path, *, name: str = "dynamic.onnx") -> Path:
    """``quantize_dynamic``: ConvInteger, MatMulInteger and DynamicQuantizeLinear."""
    from onnxruntime.quantization import (  # noqa: TID251 (the quantizer is what users run)
        QuantType,
        quantize_dynamic,
    )

    destination = folder / name
    quantize_dynamic(str(float_model), str(destination), weight_type=QuantType.QUInt8)
    return destination
