"""Convert a Darknet cfg and weights file to ONNX: parse, read the weights, emit the graph."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnx import helper

from onnx_prune.darknet.cfg import parse_darknet_cfg
from onnx_prune.darknet.emit import build_model
from onnx_prune.darknet.weights_file import RANDOM_REVISION, read_weights
from onnx_prune.load import RANDOM_WEIGHTS_KEY

logger = logging.getLogger(__name__)


def convert_darknet(cfg_path: Path, weights_path: Path) -> onnx.ModelProto:
    """Convert a Darknet cfg and its weights file to an ONNX model (opset 13).

    The model's input is ``input`` ``[N, C, H, W]``, RGB in [0, 1]; its output ``output`` is the
    network's last non-cost layer (the softmax probabilities of a classifier). A weights file
    written by :func:`write_random_weights` is marked as random in the model's metadata.
    Raises :class:`ConversionError` for a missing or malformed file, an unsupported layer or
    option, or a weights file whose size does not match the cfg.
    """
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    network = parse_darknet_cfg(cfg_path)
    header, parameters = read_weights(weights_path, network)
    doc = f"Converted by onnx-prune from Darknet {cfg_path.name} with {weights_path.name}"
    model = build_model(network, parameters, doc)
    if header.revision == RANDOM_REVISION:
        helper.set_model_props(model, {RANDOM_WEIGHTS_KEY: "true"})
    logger.info("converted %s (%d layers) with %s", cfg_path, len(network.layers), weights_path)
    return model
