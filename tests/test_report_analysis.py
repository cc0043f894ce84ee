"""The report of ``onnx-prune analyze`` (the main command) against golden files.

A two-conv model whose first conv has two all-zero filters, so the second conv's IFM has exactly
two zero channels per sample; four deterministic samples. ``UPDATE_GOLDEN=1`` rewrites the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.feeds import SampleSource
from onnx_prune.report.analysis import format_analysis
from tests.builders import save
from tests.golden_util import assert_golden, render
from tests.test_zoo import two_conv_model


def _analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: object) -> Analysis:
    monkeypatch.chdir(tmp_path)  # relative paths keep the tmp folder out of the report
    save(two_conv_model([2, 5], free_size=True), tmp_path)
    samples = np.random.default_rng(11).normal(size=(4, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    calibration = SampleSource(tensors=Path("x.npy"), batch_size=2)
    return analyze_model(Path("model.onnx"), calibration, eps=(0.0, 0.5), **options)  # type: ignore[arg-type]


def test_analyze_report_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    analysis = _analysis(tmp_path, monkeypatch)
    conv2 = analysis.activations.tensors[analysis.layers[1].ifm]
    assert conv2.zero_channels == (8, 8)  # the 2 planted zero filters, in each of 4 samples
    assert_golden(render(format_analysis(analysis)), "analysis_report.txt")


def test_analyze_report_with_the_paper_golden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysis = _analysis(tmp_path, monkeypatch, bits=16)
    assert_golden(render(format_analysis(analysis, paper=True)), "analysis_report_paper.txt")
