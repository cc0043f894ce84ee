"""onnx-prune: weight and feature-map sparsity, bandwidth and dynamic pruning for ONNX CNNs."""

__version__ = "0.1.0"
