"""The package data: the embedded model, its photos, ImageNet label lists, the paper's Darknet cfgs.

Everything here ships in the wheel (19 MB unpacked, nearly all of it the model) with its provenance
in ``NOTICE.md`` beside it. ``DATA_DIR`` is the one place every user of these files starts from.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
"""This folder, in the source checkout and in an installed package alike."""

EMBEDDED_MODEL = DATA_DIR / "efficientnet_lite0.onnx"
"""EfficientNet-Lite0 with real ImageNet weights: the default model of the commands."""

EMBEDDED_IMAGES = DATA_DIR / "images"
"""Nine freely licensed photos: the default calibration images."""

IMAGENET_CLASSES = DATA_DIR / "imagenet_classes.txt"
"""The ImageNet-1k class names in class-index order, one per line."""

IMAGENET_SYNSETS = DATA_DIR / "imagenet_synsets.txt"
"""The WordNet ids of the same classes in the same order."""

DARKNET_CFG_DIR = DATA_DIR / "darknet"
"""The Darknet cfgs of the paper's six networks, unmodified."""
