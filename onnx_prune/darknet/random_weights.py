"""Random Darknet weights for a cfg, calibrated so that deep networks give a usable softmax.

Random weights let the converter be compared with Darknet on any cfg, and the paper's networks
be analysed, without trained weights; :func:`convert_darknet` marks the model as random.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from onnx_prune.darknet.cfg import parse_darknet_cfg
from onnx_prune.darknet.forward import apply_weights, finish_weighted, forward_unweighted
from onnx_prune.darknet.layers import (
    ConnectedLayer,
    DarknetNetwork,
    Shape,
    SoftmaxLayer,
    WeightedLayer,
)
from onnx_prune.darknet.weights_file import (
    Block,
    FloatArray,
    LayerArrays,
    Parameters,
    all_blocks,
    write_weights,
)

LOGIT_SPREAD = 3.0
"""Standard deviation of the softmax input that random weights are calibrated to."""
_CALIBRATION_IMAGES = 2


def write_random_weights(cfg_path: Path, out_path: Path, *, seed: int = 0) -> None:
    """Write a Darknet weights file of random values for ``cfg_path`` (deterministic in ``seed``).

    Weights start He-scaled (normal, standard deviation ``sqrt(2 / fan_in)``), then are
    calibrated on two synthetic images, layer by layer (LSUV-style): batch norm gets the
    measured mean and variance of its input (with scales in [0.75, 1.25] and biases near 0),
    a layer without batch norm is scaled to unit variance, and the last conv/connected layer is
    scaled so that the softmax input has a standard deviation of :data:`LOGIT_SPREAD`. So deep
    networks neither vanish nor overflow and the softmax has a clear top-5. The header's revision
    is :data:`RANDOM_REVISION`: Darknet ignores it, :func:`convert_darknet` marks the model random.
    """
    network = parse_darknet_cfg(Path(cfg_path))
    rng = np.random.default_rng(seed)
    parameters = _random_parameters(network, rng)
    _calibrate(network, parameters, _calibration_images(network.input_shape, rng))
    write_weights(out_path, network, parameters)


def _random_parameters(network: DarknetNetwork, rng: np.random.Generator) -> Parameters:
    parameters: Parameters = {}
    for block in all_blocks(network):
        values = _random_values(rng, block).reshape(block.shape)
        parameters.setdefault(block.layer.index, {})[block.name] = values
    return parameters


def _random_values(rng: np.random.Generator, block: Block) -> FloatArray:
    layer = block.layer
    if block.name == "weights" and isinstance(layer, WeightedLayer):
        values = rng.standard_normal(block.count, dtype=np.float32)
        values *= np.float32(math.sqrt(2.0 / _fan_in(layer)))
        return values
    if block.name == "scales":
        return rng.uniform(0.75, 1.25, block.count).astype(np.float32)
    if block.name == "rolling_variance":
        return np.ones(block.count, np.float32)
    return (0.05 * rng.standard_normal(block.count)).astype(np.float32)  # biases, rolling_mean


def _fan_in(layer: WeightedLayer) -> int:
    if isinstance(layer, ConnectedLayer):
        return layer.input_shape.size
    return layer.input_shape.channels // layer.groups * layer.size * layer.size


def _calibration_images(shape: Shape, rng: np.random.Generator) -> FloatArray:
    """Blocky random images in [0, 1] with a little noise: enough structure for statistics."""
    count, block = _CALIBRATION_IMAGES, 16
    coarse = rng.uniform(
        0, 1, (count, shape.channels, shape.height // block + 1, shape.width // block + 1)
    )
    images = coarse.repeat(block, axis=2).repeat(block, axis=3)[:, :, : shape.height, : shape.width]
    images += rng.normal(0, 0.05, images.shape)
    return np.clip(images, 0, 1).astype(np.float32)


def _calibrate(network: DarknetNetwork, parameters: Parameters, images: FloatArray) -> None:
    """Run the network in numpy, fixing each weighted layer's statistics on the way (in place)."""
    outputs = [images]
    for layer in network.layers:
        arrays = parameters.get(layer.index, {})
        if isinstance(layer, WeightedLayer):
            product = apply_weights(layer, arrays, outputs[-1])
            _normalize_statistics(layer, arrays, product)
            outputs.append(finish_weighted(layer, arrays, product))
        else:
            outputs.append(forward_unweighted(layer, outputs))
    _spread_logits(network, parameters, outputs)


def _normalize_statistics(layer: WeightedLayer, arrays: LayerArrays, product: FloatArray) -> None:
    """Batch norm gets the measured statistics; other layers are scaled to unit variance."""
    if layer.batch_normalize:
        variance = product.var(axis=(0, 2, 3))
        arrays["rolling_mean"][:] = product.mean(axis=(0, 2, 3))
        arrays["rolling_variance"][:] = np.maximum(
            variance, max(0.05 * float(variance.mean()), 1e-6)
        )
        return
    deviation = float(product.std())
    if deviation > 0:
        arrays["weights"] /= np.float32(deviation)
        product /= np.float32(deviation)


def _spread_logits(
    network: DarknetNetwork, parameters: Parameters, outputs: list[FloatArray]
) -> None:
    """Scale the last weighted layer so that the last softmax's input has LOGIT_SPREAD."""
    softmaxes = [layer for layer in network.layers if isinstance(layer, SoftmaxLayer)]
    weighted = [layer.index for layer in network.layers if layer.index in parameters]
    if not softmaxes or not weighted:
        return
    logits = outputs[softmaxes[-1].index].reshape(_CALIBRATION_IMAGES, -1)
    spread = float(logits.std(axis=1).mean())
    if spread > 0:
        arrays = parameters[weighted[-1]]
        factor = np.float32(LOGIT_SPREAD / spread)
        for name in ("scales" if "scales" in arrays else "weights", "biases"):
            arrays[name] *= factor  # batch norm's output scales with its scales, not weights
