"""Run the real Darknet (Debian's ``darknet`` package) and read its top-5 predictions.

``darknet classifier predict`` letterboxes the image to the network's size; at equal size that
is the identity (resize_image's bilinear weights are exactly 1 and 0, and the letterbox offset
is 0), so the tests feed PNGs already at the network's input size and give onnxruntime the very
same pixels, divided by 255 as Darknet does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DARKNET_DATA = Path("/usr/share/darknet")
_PREDICTION = re.compile(r"^\s*(\S+)%: (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Prediction:
    """One line of Darknet's top-k: a probability in percent and a class name."""

    percent: float
    label: str


def missing_reason() -> str | None:
    """Why the comparison with Darknet cannot run here, or None when it can."""
    if shutil.which("darknet") is None:
        return "darknet is not installed (apt-get install darknet): comparison with Darknet skipped"
    if not (DARKNET_DATA / "cfg" / "imagenet1k.data").is_file():
        return f"{DARKNET_DATA}/cfg/imagenet1k.data is missing: comparison with Darknet skipped"
    return None


def labels() -> list[str]:
    """The class names Darknet prints, in index order (imagenet1k.data's ``names`` file)."""
    names = DARKNET_DATA / "data" / "imagenet.shortnames.list"
    return names.read_text(encoding="utf-8").splitlines()


def write_photo(path: Path, height: int, width: int) -> np.ndarray:
    """Darknet's dog.jpg resized to height×width, saved as a PNG; returns its pixels (H×W×3)."""
    photo = Image.open(DARKNET_DATA / "data" / "dog.jpg").convert("RGB")
    pixels = np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR), np.uint8)
    Image.fromarray(pixels).save(path)  # a fresh image: no colour profile in the PNG
    return pixels


def network_input(pixels: np.ndarray) -> np.ndarray:
    """The 1×3×H×W float input Darknet builds from 8-bit RGB pixels."""
    return (pixels.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]


def predict(cfg: Path, weights: Path, image: Path) -> list[Prediction]:
    """Run ``darknet classifier predict`` on one image and parse its top-5 lines."""
    command = ["darknet", "classifier", "predict", "cfg/imagenet1k.data"]
    result = subprocess.run(
        [*command, str(cfg), str(weights), str(image)],
        cwd=DARKNET_DATA,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    found = [Prediction(float(p), label) for p, label in _PREDICTION.findall(result.stdout)]
    if result.returncode != 0 or len(found) != 5:
        raise AssertionError(
            f"darknet failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-2000:]}"
        )
    return found


def compare_top5(found: list[Prediction], probabilities: np.ndarray, names: list[str]) -> float:
    """Check the ONNX probabilities against Darknet's top-5; return the largest difference (pp).

    Each rank's probability must agree within 0.01 percentage points (Darknet prints two
    decimals), and each class Darknet names must have that probability in the ONNX output;
    classes whose probabilities print the same may come in either order.
    """
    percent = probabilities.astype(np.float64) * 100
    order = np.argsort(-percent, kind="stable")[:5]
    worst = 0.0
    for rank, prediction in enumerate(found):
        worst = max(worst, abs(percent[order[rank]] - prediction.percent))
        same_name = [i for i, name in enumerate(names[: percent.size]) if name == prediction.label]
        closest = min(abs(percent[i] - prediction.percent) for i in same_name)
        assert closest <= 0.01, f"rank {rank}: darknet {prediction}, onnx has {closest:.4f} pp off"
    assert worst <= 0.01, f"top-5 differ by {worst:.4f} pp: darknet {found}"
    return worst
