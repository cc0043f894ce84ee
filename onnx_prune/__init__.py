"""onnx-prune: weight and feature-map sparsity, bandwidth and dynamic pruning for ONNX CNNs."""

from pathlib import Path

__version__ = "0.1.0"

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
"""The embedded model, photos and label lists: in the source checkout, not in a built wheel."""
