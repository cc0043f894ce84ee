"""Numpy forward passes in TensorFlow's NHWC conventions, for checking the paper converters."""

from __future__ import annotations

import math

import numpy as np


def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented SAME padding: output ceil(size / stride), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_nhwc(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0):
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def _same_or_valid(x: np.ndarray, kernel: tuple[int, int], stride: int, padding: str):
    if padding == "VALID":
        return x
    return pad_nhwc(
        x, (tf_same(x.shape[1], kernel[0], stride), tf_same(x.shape[2], kernel[1], stride))
    )


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """NHWC input, HWIO kernel, float64."""
    kh, kw, _cin, cout = w.shape
    x = _same_or_valid(x.astype(np.float64), (kh, kw), stride, padding)
    n, h, width, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (width - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def depthwise(x: np.ndarray, w: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """NHWC input, [H, W, C, M] kernel: output channel c*M + m."""
    kh, kw, channels, multiplier = w.shape
    x = _same_or_valid(x.astype(np.float64), (kh, kw), stride, padding)
    n, h, width, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (width - kw) // stride + 1
    out = np.zeros((n, oh, ow, channels * multiplier))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            values = np.einsum("nhwc,hwcm->ncm", patch, w)
            out[:, i, j, :] = values.reshape(n, -1)
    return out


def pool(x: np.ndarray, size: int, stride: int, padding: str, kind: str) -> np.ndarray:
    """Max or average pooling; SAME padding is left out of the average, as TensorFlow does."""
    if padding == "SAME":
        pads = (tf_same(x.shape[1], size, stride), tf_same(x.shape[2], size, stride))
        x = pad_nhwc(x, pads, np.nan)
    n, h, width, c = x.shape
    oh, ow = (h - size) // stride + 1, (width - size) // stride + 1
    out = np.zeros((n, oh, ow, c))
    reduce = np.nanmax if kind == "max" else np.nanmean
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + size, j * stride : j * stride + size, :]
            out[:, i, j, :] = reduce(patch, axis=(1, 2))
    return out


def batch_norm(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    epsilon: float,
) -> np.ndarray:
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def relu6(x):
    return np.clip(x, 0.0, 6.0)
