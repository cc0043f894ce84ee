"""The paper's figures as one PNG (only where matplotlib is installed), and the missing extra."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.bandwidth import BandwidthReport, estimate_bandwidth
from onnx_prune.errors import MissingExtraError
from onnx_prune.feeds import SampleSource
from onnx_prune.plot import plot_analysis
from tests.builders import conv_relu_model, conv_weight, save

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Point:
    """An accuracy result with the fields ``plot_analysis`` reads."""

    eps: float
    top1: float | None
    agreement: float
    saved_fraction: float


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, BandwidthReport]:
    folder = tmp_path_factory.mktemp("plot")
    model = conv_relu_model(conv_weight(), np.full(8, -0.5, np.float32))
    inputs = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    np.save(folder / "x.npy", inputs)
    analysis = analyze_model(
        save(model, folder), SampleSource(tensors=folder / "x.npy"), eps=(0.0, 0.1, 0.2)
    )
    report = estimate_bandwidth(model, analysis.layers, analysis.activations, analysis.weights)
    return analysis, report


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000


def test_plot_without_accuracy(tmp_path: Path, measured: tuple[Analysis, BandwidthReport]) -> None:
    pytest.importorskip("matplotlib")
    out = plot_analysis(*measured, tmp_path / "figures.png")
    assert out == tmp_path / "figures.png"
    _check_png(out)


def test_plot_with_accuracy(tmp_path: Path, measured: tuple[Analysis, BandwidthReport]) -> None:
    pytest.importorskip("matplotlib")
    accuracy = [
        Point(0.0, 0.7, 1.0, 0.05),
        Point(0.1, 0.69, 0.98, 0.08),
        Point(0.2, None, 0.9, 0.1),
    ]
    without = plot_analysis(*measured, tmp_path / "plain.png")
    with_accuracy = plot_analysis(*measured, tmp_path / "accuracy.png", accuracy=accuracy)
    _check_png(with_accuracy)
    assert with_accuracy.stat().st_size > without.stat().st_size


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, measured: tuple[Analysis, BandwidthReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'onnx-prune\[plot\]'"):
        plot_analysis(*measured, tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, onnx_prune.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
