"""onnx-prune: weight and feature-map sparsity, bandwidth and dynamic pruning for ONNX CNNs.

The library entry points, one per command; each returns a frozen dataclass and prints nothing::

    from onnx_prune import SampleSource, analyze_model, count_zero_weights, load_model

    weights = count_zero_weights(load_model("model.onnx"), eps=(0.0, 1e-3))
    analysis = analyze_model(Path("model.onnx"), SampleSource(images=(Path("photos"),)))

- ``count_zero_weights`` (``onnx-prune weights``): a ``WeightReport`` of a ``LoadedModel``.
- ``analyze_model`` (``onnx-prune analyze``): an ``Analysis`` over a ``SampleSource``.
- ``measure_accuracy`` (``onnx-prune accuracy``): an ``AccuracyReport`` over a ``SampleSource``,
  optionally against ``Labels``. Both feed samples through ``feeds.Feeder``.
- ``weights_document``, ``analysis_document``, ``accuracy_document`` and ``dumps``: the
  ``--json`` documents (their JSON Schemas: ``onnx_prune/schemas/``).

Every error a user can act on derives from ``OnnxPruneError``. Library messages go to the
``onnx_prune`` logger (``logging``); the CLI shows INFO with ``-v``.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The names below are imported on first use, not with the package: ``onnx-prune``'s command
# line imports its heavy dependencies (onnx, numpy, onnxruntime) inside ``main``, where Ctrl-C
# during the imports is one line, and ``import onnx_prune`` stays cheap.
if TYPE_CHECKING:
    from onnx_prune.accuracy import (
        AccuracyReport,
        EpsAccuracy,
        measure_accuracy,
    )
    from onnx_prune.analysis import Analysis, analyze_model
    from onnx_prune.data import DATA_DIR, EMBEDDED_IMAGES, EMBEDDED_MODEL
    from onnx_prune.errors import (
        InputDataError,
        ModelLoadError,
        OnnxPruneError,
        OutputPathError,
        UnsupportedModelError,
    )
    from onnx_prune.feeds import DEFAULT_EPS, SampleSource
    from onnx_prune.inputs import PRESETS, Preprocess, get_preset
    from onnx_prune.jsondoc import accuracy_document, analysis_document, dumps, weights_document
    from onnx_prune.labels import Labels, load_labels
    from onnx_prune.load import LoadedModel, load_model
    from onnx_prune.runtime import Providers
    from onnx_prune.weights import LayerWeights, TensorSparsity, WeightReport, count_zero_weights

_EXPORTS = {
    "AccuracyReport": "onnx_prune.accuracy",
    "Analysis": "onnx_prune.analysis",
    "DATA_DIR": "onnx_prune.data",
    "DEFAULT_EPS": "onnx_prune.feeds",
    "EMBEDDED_IMAGES": "onnx_prune.data",
    "EMBEDDED_MODEL": "onnx_prune.data",
    "EpsAccuracy": "onnx_prune.accuracy",
    "InputDataError": "onnx_prune.errors",
    "Labels": "onnx_prune.labels",
    "LayerWeights": "onnx_prune.weights",
    "LoadedModel": "onnx_prune.load",
    "ModelLoadError": "onnx_prune.errors",
    "OnnxPruneError": "onnx_prune.errors",
    "OutputPathError": "onnx_prune.errors",
    "PRESETS": "onnx_prune.inputs",
    "Preprocess": "onnx_prune.inputs",
    "Providers": "onnx_prune.runtime",
    "SampleSource": "onnx_prune.feeds",
    "TensorSparsity": "onnx_prune.weights",
    "UnsupportedModelError": "onnx_prune.errors",
    "WeightReport": "onnx_prune.weights",
    "accuracy_document": "onnx_prune.jsondoc",
    "analysis_document": "onnx_prune.jsondoc",
    "analyze_model": "onnx_prune.analysis",
    "count_zero_weights": "onnx_prune.weights",
    "dumps": "onnx_prune.jsondoc",
    "get_preset": "onnx_prune.inputs",
    "load_labels": "onnx_prune.labels",
    "load_model": "onnx_prune.load",
    "measure_accuracy": "onnx_prune.accuracy",
    "weights_document": "onnx_prune.jsondoc",
}


def __getattr__(name: str) -> object:
    """Import an exported name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnx_prune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "DATA_DIR",
    "DEFAULT_EPS",
    "EMBEDDED_IMAGES",
    "EMBEDDED_MODEL",
    "PRESETS",
    "AccuracyReport",
    "Analysis",
    "EpsAccuracy",
    "InputDataError",
    "Labels",
    "LayerWeights",
    "LoadedModel",
    "ModelLoadError",
    "OnnxPruneError",
    "OutputPathError",
    "Preprocess",
    "Providers",
    "SampleSource",
    "TensorSparsity",
    "UnsupportedModelError",
    "WeightReport",
    "__version__",
    "accuracy_document",
    "analysis_document",
    "analyze_model",
    "count_zero_weights",
    "dumps",
    "get_preset",
    "load_labels",
    "load_model",
    "measure_accuracy",
    "weights_document",
]
