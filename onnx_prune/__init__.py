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
  ``--json`` documents.

Every error a user can act on derives from ``OnnxPruneError``. Library messages go to the
``onnx_prune`` logger (``logging``); the CLI shows INFO with ``-v``.
"""

__version__ = "0.1.0"

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
