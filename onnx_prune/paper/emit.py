"""An NCHW ONNX graph builder for the converters: shapes tracked, TF "SAME" padding exact.

The TensorFlow and Keras converters read NHWC graphs and emit NCHW ONNX through this builder, one
call per source op. Every tensor's static NCHW shape is tracked so that "SAME" padding becomes
the exact explicit pads TensorFlow uses (the odd pixel after, not before). Batch norm, bias and
zero padding are emitted as plain ``Mul``/``Add``/``Pad`` nodes; :mod:`onnx_prune.paper.fold`
folds them into the convolutions afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.errors import ConversionError

OPSET = 13
FloatArray = npt.NDArray[np.float32]
Shape = tuple[int, ...]


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one axis: (before, after), the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def pooled_size(
    size: int, kernel: int, stride: int, pads: tuple[int, int], dilation: int = 1
) -> int:
    """The output length of a convolution or pooling window along one axis."""
    return (size + pads[0] + pads[1] - ((kernel - 1) * dilation + 1)) // stride + 1


class OnnxBuilder:
    """Nodes, initializers and the NCHW shape of every tensor, in the order they are added."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}

    def add_input(self, name: str, shape: Shape) -> str:
        """A float graph input of NCHW ``shape``; its batch axis is left symbolic (``N``)."""
        dims: list[int | str] = ["N", *shape[1:]]
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        self.shapes[name] = shape
        return name

    def constant(self, name: str, values: npt.ArrayLike, *, integer: bool = False) -> str:
        """An initializer (float32, or int64 when ``integer``); returns its name."""
        array = np.asarray(values, dtype=np.int64 if integer else np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, shape: Shape, **attrs: Any) -> str:
        """A node with one output named ``name`` of NCHW ``shape``."""
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        self.shapes[name] = shape
        return name

    def conv(
        self,
        name: str,
        x: str,
        weight: FloatArray,
        *,
        strides: tuple[int, int],
        padding: str | Sequence[int],
        dilations: tuple[int, int] = (1, 1),
        group: int = 1,
    ) -> str:
        """A Conv of OIHW ``weight``; ``padding``: "SAME", "VALID" or [top, left, bottom, right]."""
        batch, _channels, height, width = self.shapes[x]
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
        pads = self._pads(padding, (height, width), kernel, strides, dilations)
        out = tuple(
            pooled_size(size, k, s, (pads[axis], pads[axis + 2]), d)
            for axis, (size, k, s, d) in enumerate(
                zip((height, width), kernel, strides, dilations, strict=True)
            )
        )
        w = self.constant(f"{name}.weight", weight)
        return self.node(
            "Conv",
            [x, w],
            name,
            (batch, int(weight.shape[0]), *out),
            kernel_shape=list(kernel),
            strides=list(strides),
            pads=list(pads),
            dilations=list(dilations),
            group=group,
        )

    def pool(
        self,
        op: str,
        name: str,
        x: str,
        *,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        padding: str,
    ) -> str:
        """MaxPool or AveragePool (padding excluded from the average, as TensorFlow does)."""
        batch, channels, height, width = self.shapes[x]
        pads = self._pads(padding, (height, width), kernel, strides, (1, 1))
        out = tuple(
            pooled_size(size, k, s, (pads[axis], pads[axis + 2]))
            for axis, (size, k, s) in enumerate(zip((height, width), kernel, strides, strict=True))
        )
        return self.node(
            op,
            [x],
            name,
            (batch, channels, *out),
            kernel_shape=list(kernel),
            strides=list(strides),
            pads=list(pads),
        )

    @staticmethod
    def _pads(
        padding: str | Sequence[int],
        size: tuple[int, int],
        kernel: tuple[int, int],
        strides: tuple[int, int],
        dilations: tuple[int, int],
    ) -> list[int]:
        if not isinstance(padding, str):
            return [int(value) for value in padding]
        if padding.upper() == "VALID":
            return [0, 0, 0, 0]
        if padding.upper() != "SAME":
            raise ConversionError(f"padding {padding!r} is not supported: only SAME and VALID")
        (top, bottom), (left, right) = (
            same_pads(n, k, s, d)
            for n, k, s, d in zip(size, kernel, strides, dilations, strict=True)
        )
        return [top, left, bottom, right]

    def channel_affine(
        self, name: str, x: str, *, scale: FloatArray | None = None, shift: FloatArray | None = None
    ) -> str:
        """``x * scale + shift`` per channel (batch norm, bias): Mul and Add of [1, C, 1, 1]."""
        shape = self.shapes[x]
        view = (1, shape[1], *([1] * (len(shape) - 2)))
        if scale is not None:
            scale_name = self.constant(
                f"{name}.scale", np.broadcast_to(scale, shape[1:2]).reshape(view)
            )
            x = self.node("Mul", [x, scale_name], f"{name}/mul", shape)
        if shift is not None:
            shift_name = self.constant(
                f"{name}.shift", np.broadcast_to(shift, shape[1:2]).reshape(view)
            )
            x = self.node("Add", [x, shift_name], f"{name}/add", shape)
        return x

    def clip(self, name: str, x: str, low: float, high: float | None) -> str:
        """Relu (no upper bound) or Clip(low, high), e.g. Relu6."""
        if high is None and low == 0.0:
            return self.node("Relu", [x], name, self.shapes[x])
        bounds = [self.constant(f"{name}.min", low)]
        if high is not None:
            bounds.append(self.constant(f"{name}.max", high))
        return self.node("Clip", [x, *bounds], name, self.shapes[x])

    def pad(self, name: str, x: str, pads: Sequence[int]) -> str:
        """Zero padding of H and W: ``pads`` = [top, left, bottom, right]."""
        batch, channels, height, width = self.shapes[x]
        top, left, bottom, right = pads
        full = self.constant(f"{name}.pads", [0, 0, top, left, 0, 0, bottom, right], integer=True)
        shape = (batch, channels, height + top + bottom, width + left + right)
        return self.node("Pad", [x, full], name, shape, mode="constant")

    def flatten(self, name: str, x: str) -> str:
        """[N, C, H, W] as [N, C*H*W] (for 1x1 maps this is also the NHWC order)."""
        shape = self.shapes[x]
        return self.node("Flatten", [x], name, (shape[0], int(np.prod(shape[1:]))), axis=1)

    def dense(self, name: str, x: str, kernel: FloatArray, bias: FloatArray | None) -> str:
        """A fully connected layer: Gemm of [N, in] by the [in, out] ``kernel``."""
        inputs = [x, self.constant(f"{name}.weight", kernel)]
        if bias is not None:
            inputs.append(self.constant(f"{name}.bias", bias))
        return self.node("Gemm", inputs, name, (self.shapes[x][0], int(kernel.shape[1])))

    def build(self, outputs: Sequence[str], *, doc: str = "") -> onnx.ModelProto:
        """The model (opset 13, IR 8) with ``outputs`` as its graph outputs."""
        infos = [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *self.shapes[name][1:]])
            for name in outputs
        ]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, infos, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx-prune"
        )
        model.ir_version = 8
        model.doc_string = doc
        return model
