"""The JSON document that every command writes with ``--json`` (schema_version 1).

``weights`` writes the base document; ``analyze`` extends the same document with feature-map,
bandwidth and pruning fields, so one parser serves every command. Field names are an interface
that CI scripts depend on: add fields freely, never rename or remove them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from onnx_prune.weights import SparsityTotal, TensorSparsity, WeightReport

SCHEMA_VERSION = 1

Document = dict[str, Any]


def weights_document(report: WeightReport) -> Document:
    """The base document: per-layer weight and bias sparsity, totals and what was unresolved."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": report.model,
        "random_weights": report.random_weights,
        "eps": list(report.eps),
        "layers": [
            {
                "name": layer.name,
                "op_type": layer.op_type,
                "weight": tensor_document(layer.weight),
                "bias": tensor_document(layer.bias) if layer.bias else None,
            }
            for layer in report.layers
        ],
        "totals": _totals_document(report),
        "unresolved": [
            {"name": item.name, "op_type": item.op_type, "reason": item.reason}
            for item in report.unresolved
        ],
    }


def tensor_document(tensor: TensorSparsity) -> Document:
    """One stored tensor's counts; ``zeros[i]`` is the count for ``eps[i]``."""
    document: Document = {
        "tensor": tensor.tensor,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "elements": tensor.elements,
        "zeros": list(tensor.zeros),
        "zero_filters": tensor.zero_filters,
    }
    if tensor.filters is not None:
        document["filters"] = tensor.filters
        document["zero_input_channels"] = tensor.zero_input_channels
    if tensor.quantized:
        document["quantized"] = True
    return document


def _totals_document(report: WeightReport) -> Document:
    document = _total(report.total())
    document["by_op_type"] = {op: _total(report.total(op)) for op in report.op_types()}
    return document


def _total(total: SparsityTotal) -> Document:
    return {
        "layers": total.layers,
        "elements": total.elements,
        "zeros": list(total.zeros),
        "filters": total.filters,
        "zero_filters": total.zero_filters,
    }


def dumps(document: Document) -> str:
    """Serialise with NaN/inf written as null, so strict JSON parsers accept the output."""
    return json.dumps(_finite(document), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
