"""``onnx-prune tune``: sensitivity, selection under a budget, the held-out split, the ε map."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from onnx_prune.accuracy import EpsSetting
from onnx_prune.assignments import Split, TensorSavings, is_held_out
from onnx_prune.budget import Budget, Measured
from onnx_prune.cli import main
from onnx_prune.feeds import SampleSource
from onnx_prune.load import load_model
from onnx_prune.report.tune import format_tune
from onnx_prune.tune import search_eps, tune_model
from tests.builders import (
    prunable_and_sensitive_map_model,
    prunable_and_sensitive_model,
    save,
    save_tune_samples,
)
from tests.golden_util import assert_golden, render


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(prunable_and_sensitive_model(), tmp_path)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return save_tune_samples(tmp_path)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, " ".join((captured.err + captured.out).split())


def _tune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: Path, inputs: Path, *extra: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    out, eps_map = tmp_path / "tune.json", tmp_path / "map.json"
    status, text = _run(
        capsys, "tune", str(model), "--inputs", str(inputs), "--json", str(out),
        "--eps-map", str(eps_map), *extra,
    )  # fmt: skip
    assert status == 0, text
    return json.loads(out.read_text()), json.loads(eps_map.read_text()), text


def test_the_prunable_layer_gets_a_large_eps_and_the_sensitive_one_zero(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document, eps_map, text = _tune(tmp_path, capsys, model, inputs, "--min-agreement", "1")
    assert eps_map["schema_version"] == 1
    assert eps_map["metric"] == "agreement >= 1"
    assert eps_map["eps"] == {"r1": 0.3, "flat": 0.0}
    layers = {layer["tensor"]: layer for layer in document["sensitivity"]}
    r1 = {point["eps"]: point for point in layers["r1"]["points"]}
    flat = {point["eps"]: point for point in layers["flat"]["points"]}
    # r1: channels 0-1 (at most 0.3) are pruned from 0.3 on, and change nothing.
    assert r1[0.3]["source"] == "measured" and r1[0.3]["metric"] == 1.0
    assert r1[1.0]["source"] == "same pruning" and r1[1.0]["same_as"] == 0.3
    # flat: pruned at 0.05 every sample flips to the bias's class; the sweep stops there.
    assert flat[0.05]["metric"] == 0.0 and flat[0.05]["within"] is False
    assert [flat[e]["source"] for e in (0.1, 0.2, 0.3, 0.5, 1.0)] == ["not run"] * 5
    assert "Per-layer ε under agreement >= 1" in text
    assert "per-layer map calibration 7 47.76 47.76 100.00% 100.00%" in text
    assert "best uniform ε=0 calibration 7 0.00 0.00 100.00%" in text
    splits = document["splits"]
    assert splits["calibration"]["samples"] == 7 and splits["holdout"]["samples"] == 3


def test_the_map_through_accuracy_reproduces_the_measured_metric_exactly(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{index},{index % 2}\n" for index in range(10)))
    document, _, _ = _tune(
        tmp_path, capsys, model, inputs, "--labels", str(labels), "--max-top1-drop", "0",
        "--holdout", "0",
    )  # fmt: skip
    tuned = document["splits"]["calibration"]["map"]
    out = tmp_path / "accuracy.json"
    status, text = _run(
        capsys, "accuracy", str(model), "--inputs", str(inputs), "--labels", str(labels),
        "--eps-map", str(tmp_path / "map.json"), "--json", str(out),
    )  # fmt: skip
    assert status == 0, text
    accuracy = json.loads(out.read_text())
    (result,) = accuracy["results"]
    assert 100 * (accuracy["baseline"]["top1"] - result["top1"]) == tuned["metric"]
    assert result["saved_fraction"] == tuned["saved_fraction"]
    assert result["kl"] == tuned["score"]


def test_cosine_budget_serves_a_model_without_class_scores(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(prunable_and_sensitive_map_model(), tmp_path, "map_model.onnx")
    document, eps_map, text = _tune(tmp_path, capsys, model, inputs, "--min-cosine", "0.999")
    assert eps_map["metric"] == "cosine >= 0.999"
    assert eps_map["eps"] == {"r1": 0.3, "r2": 0.0}
    layers = {layer["tensor"]: layer for layer in document["sensitivity"]}
    r2 = {point["eps"]: point for point in layers["r2"]["points"]}
    assert r2[0.05]["within"] is False and r2[0.05]["metric"] < 0.999
    calibration = document["splits"]["calibration"]["map"]
    assert calibration["metric"] == pytest.approx(1.0, abs=1e-12)
    assert "cosine" in text


def test_holdout_is_deterministic_and_spread_evenly() -> None:
    assert [i for i in range(10) if is_held_out(i, 0.3)] == [3, 6, 9]
    assert [i for i in range(9) if is_held_out(i, 0.3)] == [3, 6]
    assert [i for i in range(100) if is_held_out(i, 0.29)] == [
        i for i in range(100) if (i + 1) * 29 // 100 > i * 29 // 100
    ]
    assert not any(is_held_out(i, 0.0) for i in range(50))


def test_top1_budget_without_labels_is_an_error(
    model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, text = _run(capsys, "tune", str(model), "--inputs", str(inputs), "--max-top1-drop", "1")
    assert status == 2
    assert "--max-top1-drop needs --labels; without labels use --min-agreement" in text


def test_plot_draws_the_curves_and_the_frontier(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    _tune(tmp_path, capsys, model, inputs, "--plot", str(tmp_path / "tune.png"))
    assert (tmp_path / "tune.png").read_bytes()[:4] == b"\x89PNG"


# --- the selection on a scripted evaluator ------------------------------------------------------


class ScriptedEvaluator:
    """Agreement drops by 1/7 for each "loud" layer pruned beyond 0: A and B are each fine alone
    (a quiet sample), but together they flip one sample. Scores: 0.1·ε for A, 0.3·ε for B."""

    def __init__(self) -> None:
        self.calls: list[list[EpsSetting]] = []

    def measure(self, settings: Sequence[EpsSetting], split: Split) -> tuple[Measured, ...]:
        self.calls.append(list(settings))
        return tuple(self._one(setting) for setting in settings)

    def _one(self, setting: EpsSetting) -> Measured:
        eps: Mapping[str, float] = (
            setting if isinstance(setting, Mapping) else dict.fromkeys("AB", setting)
        )
        loud = [name for name in "AB" if eps.get(name, -1.0) > 0]
        metric = 1.0 - (1 / 7 if len(loud) == 2 else 0.0)
        score = sum({"A": 0.1, "B": 0.3}[name] * eps[name] for name in loud)
        return Measured(metric, score, 0.0, metric >= 1.0, 7)


def test_combined_assignment_out_of_budget_steps_back_by_bisection() -> None:
    savings = [
        TensorSavings("A", ("a",), 100, (0.0, 30.0, 60.0)),
        TensorSavings("B", ("b",), 100, (0.0, 20.0, 50.0)),
    ]
    evaluator = ScriptedEvaluator()
    search = search_eps(evaluator, savings, (0.0, 0.5, 1.0), Budget("agreement", 1.0))
    assert search.best_uniform == 0
    assert search.chosen is not None and dict(search.chosen.eps) == {"A": 1.0, "B": 0.0}
    assert search.chosen.predicted_saved_bytes == 60.0
    # The uniform sweep, two rounds of single-layer runs, then the validations.
    assert evaluator.calls[0] == [0.0, 0.5, 1.0]
    assert evaluator.calls[1] == [{"A": 0.5}, {"B": 0.5}]
    assert evaluator.calls[2] == [{"A": 1.0}, {"B": 1.0}]
    assert [dict(v.eps) for v in search.validations] == [
        {"A": 1.0, "B": 1.0},
        {"A": 1.0, "B": 0.0},
        {"A": 1.0, "B": 0.5},
    ]
    assert [v.threshold for v in search.validations] == [0.3, 0.1, 0.15]
    assert [v.measured.within for v in search.validations] == [False, True, False]


def test_report_text_is_golden(model: Path, inputs: Path) -> None:
    loaded = load_model(model)
    source = SampleSource(tensors=inputs)
    report = tune_model(loaded, source, budget=Budget("agreement", 1.0))
    assert_golden(render(format_tune(replace(report, model="model.onnx"))), "tune_tiny.txt")


def test_report_keeps_every_cell_whole_at_80_columns(model: Path, inputs: Path) -> None:
    """The comparison table cut its headers and labels ('sam…', 'calibra…') at 80 columns."""
    loaded = load_model(model)
    report = tune_model(loaded, SampleSource(tensors=inputs), budget=Budget("agreement", 1.0))
    text = render(format_tune(replace(report, model="model.onnx")), width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text, text
    for word in ("samples", "calibration", "held-out", "pred. agreement"):
        assert word in text
