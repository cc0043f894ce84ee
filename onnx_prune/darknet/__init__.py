"""Convert a Darknet network (``.cfg`` and ``.weights``) to ONNX; write random Darknet weights.

The semantics are those of pjreddie's Darknet as Debian packages it (git 2018-09-14), checked
against that binary by the tests: the cfg grammar, each layer's arithmetic at inference and the
weights-file layout. Darknet's own quirks are kept, because the paper's numbers come from them:

- batch norm divides by ``sqrt(variance) + 1e-6`` (the epsilon sits outside the square root);
- ``[maxpool]`` pads ``size - 1`` by default, ``padding // 2`` before and the rest after;
- ``[crop]`` takes the centre and maps the input from [0, 1] to [-1, 1] (unless ``noadjust``);
- ``[shortcut]`` between layers of different sizes adds the overlapping channels, subsampling the
  larger input (Darknet's ResNet-50 has such shortcuts instead of projection convolutions).

``transpose=1`` in a ``[connected]`` section (the paper authors' fork, in their alexnet.cfg) only
selects the in-memory layout of their gemm: the weights file and the arithmetic are unchanged,
and Debian's Darknet ignores the option, so the converter does too.

The ONNX model (opset 13) has one input ``input`` of shape ``[N, C, H, W]`` (RGB in [0, 1], as
Darknet feeds it) and one output ``output``, the last non-cost layer. Each Darknet layer that
computes something has a main node named after its index, e.g. ``layer_003_convolutional``;
batch norm and activation follow as ``layer_003_convolutional/batch_norm`` and
``layer_003_convolutional/leaky``, and the layer's last tensor (Darknet's layer output) is named
``layer_003_convolutional`` too. ``[dropout]``, ``[cost]`` and one-input ``[route]`` layers are
identities at inference and emit no node.

Code organization, in the order of the stages:

- ``layers.py``: the layer dataclasses and the constants of Darknet's arithmetic;
- ``sections.py``: the cfg file as sections of ``key=value`` options, with typed lookups;
- ``cfg.py``: :func:`parse_darknet_cfg`, a layer per section with its shapes;
- ``weights_file.py``: the weights file's layout, reading it and writing it;
- ``forward.py``: Darknet's inference in numpy, for calibrating random weights;
- ``random_weights.py``: :func:`write_random_weights`;
- ``graph.py``: the ONNX pieces layers share (builder, activations, batch norm);
- ``emit.py``: one ONNX emitter per layer kind, and the model;
- ``convert.py``: :func:`convert_darknet`.
"""

from onnx_prune.darknet.cfg import parse_darknet_cfg
from onnx_prune.darknet.convert import convert_darknet
from onnx_prune.darknet.emit import INPUT_NAME, OPSET, OUTPUT_NAME
from onnx_prune.darknet.layers import (
    BATCH_NORM_EPSILON,
    AvgpoolLayer,
    ConnectedLayer,
    ConvolutionalLayer,
    CostLayer,
    CropLayer,
    DarknetNetwork,
    DropoutLayer,
    Layer,
    MaxpoolLayer,
    RouteLayer,
    Shape,
    ShortcutLayer,
    SoftmaxLayer,
)
from onnx_prune.darknet.random_weights import LOGIT_SPREAD, write_random_weights
from onnx_prune.darknet.weights_file import RANDOM_REVISION, FloatArray

__all__ = [
    "BATCH_NORM_EPSILON",
    "INPUT_NAME",
    "LOGIT_SPREAD",
    "OPSET",
    "OUTPUT_NAME",
    "RANDOM_REVISION",
    "AvgpoolLayer",
    "ConnectedLayer",
    "ConvolutionalLayer",
    "CostLayer",
    "CropLayer",
    "DarknetNetwork",
    "DropoutLayer",
    "FloatArray",
    "Layer",
    "MaxpoolLayer",
    "RouteLayer",
    "Shape",
    "ShortcutLayer",
    "SoftmaxLayer",
    "convert_darknet",
    "parse_darknet_cfg",
    "write_random_weights",
]
