"""``onnx-prune zoo``: many tiny models, a baseline round trip, planted regressions, failures."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from onnx_prune.analysis import analyze_model
from onnx_prune.baseline import (
    Baseline,
    BaselineModel,
    Figure,
    ModelFigures,
    compare_to_baseline,
    read_baseline,
)
from onnx_prune.cli import main
from onnx_prune.data import DATA_DIR
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import SampleSource
from onnx_prune.report.zoo import format_zoo, format_zoo_markdown
from onnx_prune.zoo import (
    ZooJob,
    ZooModel,
    ZooOutcome,
    figures_by_key,
    find_models,
    model_figures,
    run_zoo,
)
from tests.builders import FLOAT, make_model, save
from tests.golden_util import assert_golden, render

EPS = "0,0.5"


def two_conv_model(zero_filters: Sequence[int], *, free_size: bool = False) -> Any:
    """x[1,3,16,16] -> Conv 8x3x3x3 (``zero_filters`` all zero) -> Relu -> Conv 4x8x1x1 -> Relu.

    Each zero filter of the first conv makes a zero channel in the second conv's IFM.
    """
    rng = np.random.default_rng(7)
    first = rng.uniform(0.1, 1.0, size=(8, 3, 3, 3)).astype(np.float32)
    first *= rng.choice([-1.0, 1.0], size=first.shape).astype(np.float32)
    first[list(zero_filters)] = 0.0
    second = rng.uniform(-1.0, 1.0, size=(4, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    dims: list[int | str] = ["N", 3, "H", "W"] if free_size else [1, 3, 16, 16]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, dims)],
        [helper.make_tensor_value_info("y", FLOAT, [dims[0], 4, dims[2], dims[3]])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )


def _zoo(tmp_path: Path) -> tuple[Path, Path]:
    """A zoo of two models (one in a subfolder) and a folder of their inputs."""
    zoo, inputs = tmp_path / "zoo", tmp_path / "inputs"
    (zoo / "sub").mkdir(parents=True)
    inputs.mkdir()
    save(two_conv_model([1, 4, 6]), zoo, "a.onnx")
    save(two_conv_model([2]), zoo / "sub", "b.onnx")
    for name in ("a", "b"):
        _write_inputs(inputs, name)
    return zoo, inputs


def _write_inputs(folder: Path, stem: str) -> None:
    samples = np.random.default_rng(3).normal(size=(3, 3, 16, 16)).astype(np.float32)
    np.save(folder / f"{stem}.npy", samples)


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    status = main(["zoo", *[str(arg) for arg in args]])
    captured = capsys.readouterr()
    return status, " ".join((captured.out + captured.err).split())


# Finding models


def test_models_are_found_recursively_sorted_and_keyed(tmp_path: Path) -> None:
    zoo, _ = _zoo(tmp_path)
    save(two_conv_model([]), zoo, "C.ONNX")
    (zoo / "notes.txt").write_text("not a model")
    models = find_models([zoo, zoo / "a.onnx"])
    assert [model.key for model in models] == ["C.ONNX", "a.onnx", "sub/b.onnx"]
    assert find_models([zoo / "sub" / "b.onnx"]) == (ZooModel("b.onnx", zoo / "sub" / "b.onnx"),)


def test_same_key_from_two_roots_is_refused(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        save(two_conv_model([]), tmp_path / name, "model.onnx")
    with pytest.raises(InputDataError, match=r"two models have the key 'model\.onnx'"):
        find_models([tmp_path / "one", tmp_path / "two"])


# Baselines


def test_baseline_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo, inputs = _zoo(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = (zoo, "--inputs-dir", inputs, "--eps", EPS)
    status, text = _run(capsys, *args, "--save-baseline", baseline)
    assert status == 0, text
    assert "baseline written to" in text
    document = json.loads(baseline.read_text())
    assert baseline.read_text() == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["schema_version"] == 1
    assert document["eps"] == [0.0, 0.5]
    a = document["models"]["a.onnx"]
    assert a["weight_zero"] == round(3 * 27 / (216 + 32), 6)
    # conv1's IFM (x) has 768 values per sample, conv2's 2048, of which 3 planes of 256 are zero
    assert a["ifm_channel_saved"]["0.0"] == round(768 / (768 + 2048), 6)
    assert set(a) == {
        "compute_layers",
        "opset",
        "samples",
        "weight_zero",
        "ifm_zero_paper_mean",
        "ifm_zero_weighted",
        "ifm_channel_saved",
        "load_saved",
        "ifm_load_share",
    }
    assert sorted(document["models"]) == ["a.onnx", "sub/b.onnx"]
    status, text = _run(capsys, *args, "--baseline", baseline)
    assert status == 0, text
    assert "PASSED: 2 models: 2 ok" in text


def test_planted_regression_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo, inputs = _zoo(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = (zoo, "--inputs-dir", inputs, "--eps", EPS)
    assert _run(capsys, *args, "--save-baseline", baseline)[0] == 0
    save(two_conv_model([1]), zoo, "a.onnx")  # two zero filters fewer
    status, text = _run(capsys, *args, "--baseline", baseline)
    assert status == 1
    assert "a.onnx: weights exactly zero: baseline 32.66%, now 10.89% (-21.77 points)" in text
    assert "a.onnx: IFM values in zero channels at ε=0: baseline 27.27%, now 9.09%" in text
    assert "regression (" in text
    assert "sub/b.onnx: " not in text.split("Regressions")[1]
    assert "FAILED: 2 models: 1 ok, 1 regression" in text


def test_regression_within_tolerance_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = (zoo, "--inputs-dir", inputs, "--eps", EPS)
    assert _run(capsys, *args, "--save-baseline", baseline)[0] == 0
    save(two_conv_model([1]), zoo, "a.onnx")
    assert _run(capsys, *args, "--baseline", baseline, "--tolerance", "0.5")[0] == 0


def test_missing_model_fails_and_new_model_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = (zoo, "--inputs-dir", inputs, "--eps", EPS)
    assert _run(capsys, *args, "--save-baseline", baseline)[0] == 0
    save(two_conv_model([0]), zoo, "c.onnx")
    _write_inputs(inputs, "c")
    status, text = _run(capsys, *args, "--baseline", baseline)
    assert status == 0, text
    assert "New: not in the baseline, not compared (1) c.onnx" in text
    (zoo / "sub" / "b.onnx").unlink()
    status, text = _run(capsys, *args, "--baseline", baseline)
    assert status == 1
    assert "Missing: in the baseline, not in the zoo (1) sub/b.onnx" in text


def test_comparison_directions_and_tolerance(tmp_path: Path) -> None:
    figures = ModelFigures(
        opset=13,
        compute_layers=2,
        random_weights=False,
        samples=3,
        weight_zero=0.30,
        ifm_zero_paper_mean=(0.40,),
        ifm_zero_weighted=(0.50,),
        ifm_channel_saved=(0.10,),
        load_saved=(0.05,),
        ifm_load_share=0.60,
    )
    stored = (
        Figure("weight_zero", None, 0.305),  # 0.005 worse: exactly the tolerance, not a regression
        Figure("ifm_zero_weighted", 0.0, 0.52),  # 0.02 worse
        Figure("ifm_load_share", None, 0.55),  # the IFMs' share grew: more load, worse
        Figure("ifm_channel_saved", 0.0, 0.05),  # better
    )
    baseline = Baseline(tmp_path / "b.json", (0.0,), {"m.onnx": BaselineModel(stored, 13, 3, 3)})
    comparison = compare_to_baseline({"m.onnx": figures}, baseline, eps=(0.0,), tolerance=0.005)
    assert [(c.name, c.baseline, c.now) for c in comparison.regressions] == [
        ("ifm_zero_weighted", 0.52, 0.50),
        ("ifm_load_share", 0.55, 0.60),
    ]
    assert [c.name for c in comparison.improvements] == ["ifm_channel_saved"]
    assert comparison.notes == (
        "m.onnx: compute layers 3 → 2",
        "'ifm_zero_paper_mean' is not in the baseline: save the baseline again to track it",
        "'load_saved' is not in the baseline: save the baseline again to track it",
    )


# Failures


def test_broken_model_is_reported_and_the_rest_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    (zoo / "broken.onnx").write_bytes(b"this is not a model")
    _write_inputs(inputs, "broken")
    out = tmp_path / "zoo.json"
    status, text = _run(capsys, zoo, "--inputs-dir", inputs, "--eps", EPS, "--json", out)
    assert status == 1
    assert "broken.onnx is not a readable ONNX model" in text
    document = json.loads(out.read_text())
    statuses = {model["model"]: model["status"] for model in document["models"]}
    assert statuses == {"a.onnx": "ok", "broken.onnx": "failed", "sub/b.onnx": "ok"}
    assert document["summary"]["passed"] is False


def test_a_bug_fails_one_model_and_keeps_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo, inputs = _zoo(tmp_path)

    def analyze(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == "a.onnx":
            raise TypeError("planted")
        return analyze_model(path, *args, **kwargs)

    monkeypatch.setattr("onnx_prune.zoo.analyze_model", analyze)
    out = tmp_path / "zoo.json"
    status, text = _run(capsys, zoo, "--inputs-dir", inputs, "--eps", EPS, "--json", out)
    assert status == 1
    assert "a.onnx: unexpected TypeError (a bug in onnx-prune): planted" in text
    assert "Traceback (most recent call last)" in text
    a, b = json.loads(out.read_text())["models"]
    assert 'raise TypeError("planted")' in a["traceback"]
    assert b["status"] == "ok"


def test_missing_inputs_fail_that_model_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    (inputs / "b.npy").unlink()
    status, text = _run(capsys, zoo, "--inputs-dir", inputs, "--eps", EPS)
    assert status == 1
    assert "sub/b.onnx: no inputs for sub/b.onnx in" in text
    assert "save b.npy (one input) or b.npz" in text
    assert "1 ok, 1 failed" in text


def test_images_resize_to_each_model_and_free_sizes_need_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, images = tmp_path / "zoo", tmp_path / "images"
    zoo.mkdir()
    images.mkdir()
    for index, colour in enumerate(("red", "navy")):
        Image.new("RGB", (40, 30), colour).save(images / f"{index}.png")
    save(two_conv_model([0]), zoo, "fixed.onnx")
    save(two_conv_model([0], free_size=True), zoo, "free.onnx")
    args = (zoo, "--images", images, "--eps", "0")
    status, text = _run(capsys, *args)
    assert status == 1
    assert "free.onnx: input 'x' has shape [N,3,H,W] with a free height or width" in text
    assert "give the image size with --size HxW" in text
    status, text = _run(capsys, *args, "--size", "20x24")
    assert status == 0, text


# Outputs


def _outcome(tmp_path: Path) -> ZooOutcome:
    """A compared run in the current folder: a regressed model, a new one and a broken one."""
    _zoo(tmp_path)
    zoo, inputs, baseline = Path("zoo"), Path("inputs"), Path("zoo-baseline.json")
    flags = ["--inputs-dir", str(inputs), "--eps", "0,0.1,0.5", "--save-baseline", str(baseline)]
    assert main(["zoo", str(zoo), *flags]) == 0
    save(two_conv_model([1]), zoo, "a.onnx")
    save(two_conv_model([0, 5]), zoo, "new.onnx")
    (zoo / "sub" / "broken.onnx").write_bytes(b"")
    for stem in ("new", "broken"):
        _write_inputs(inputs, stem)
    eps = (0.0, 0.1, 0.5)
    jobs = [ZooJob(model, SampleSource(), eps, inputs_dir=inputs) for model in find_models([zoo])]
    results = run_zoo(jobs)
    comparison = compare_to_baseline(figures_by_key(results), read_baseline(baseline), eps=eps)
    return ZooOutcome(eps=eps, results=results, comparison=comparison)


def test_markdown_and_table_golden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    outcome = _outcome(tmp_path)
    capsys.readouterr()
    assert_golden(format_zoo_markdown(outcome), "zoo_summary.md")
    assert_golden(render(format_zoo(outcome)), "zoo_table.txt")


def test_json_holds_every_analysis_and_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    baseline, out = tmp_path / "baseline.json", tmp_path / "zoo.json"
    args = (zoo, "--inputs-dir", inputs, "--eps", EPS)
    assert _run(capsys, *args, "--save-baseline", baseline)[0] == 0
    save(two_conv_model([1]), zoo, "a.onnx")
    assert _run(capsys, *args, "--baseline", baseline, "--json", out)[0] == 1
    document = json.loads(out.read_text())
    assert document["command"] == "zoo"
    assert document["eps"] == [0.0, 0.5]
    a, b = document["models"]
    assert (a["model"], a["status"], b["model"], b["status"]) == (
        "a.onnx",
        "regression",
        "sub/b.onnx",
        "ok",
    )
    assert a["analysis"]["schema_version"] == 1
    assert [layer["name"] for layer in a["analysis"]["layers"]] == ["conv1", "conv2"]
    assert a["analysis"]["layers"][1]["ifm"]["zero_channels"][0] == 3  # 1 zero filter × 3 samples
    assert a["figures"]["weight_zero"] == round(27 / 248, 6)
    comparison = document["comparison"]
    assert comparison["tolerance"] == 0.005
    assert {"model": "a.onnx", "figure": "weight_zero", "eps": None}.items() <= comparison[
        "regressions"
    ][0].items()
    assert document["summary"] == {
        "models": 2,
        "ok": 1,
        "partial": 0,
        "new": 0,
        "failed": 0,
        "known_failure": 0,
        "now_passing": 0,
        "regression": 1,
        "missing": 0,
        "passed": False,
    }


def test_jobs_2_gives_the_same_results_as_jobs_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo, inputs = _zoo(tmp_path)
    (zoo / "broken.onnx").write_bytes(b"\x00" * 8)
    documents = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}.json"
        args = (zoo, "--inputs-dir", inputs, "--eps", EPS, "--json", out, "--jobs", jobs)
        assert _run(capsys, *args)[0] == 1
        document = json.loads(out.read_text())
        for model in document["models"]:
            model.pop("seconds")
        documents.append(document)
    assert documents[0] == documents[1]


def test_load_figures_come_from_the_bandwidth_model(tmp_path: Path) -> None:
    path = save(two_conv_model([1, 4]), tmp_path, "a.onnx")
    _write_inputs(tmp_path, "a")
    analysis = analyze_model(path, SampleSource(tensors=tmp_path / "a.npy"), eps=(0.0, 0.5))
    figures = model_figures(analysis)
    assert figures.load_saved == analysis.bandwidth.total.saved_share("channel")
    assert figures.ifm_load_share == analysis.bandwidth.total.ifm_share
    assert 0 < figures.load_saved[0] < figures.ifm_channel_saved[0]
    none_counted = dataclasses.replace(analysis.bandwidth.total, layers=0)
    unknown = dataclasses.replace(
        analysis, bandwidth=dataclasses.replace(analysis.bandwidth, total=none_counted)
    )
    figures = model_figures(unknown)
    assert (figures.load_saved, figures.ifm_load_share) == (None, None)
    assert [figure.name for figure in figures.tracked((0.0, 0.5))].count("load_saved") == 0


# Usage errors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baseline", "missing.json"], "cannot read baseline"),
        (["--baseline", "garbage.json"], "cannot read baseline"),
        (["--baseline", "other-eps.json"], "was made with --eps 0,0.2 but this run uses 0,0.5"),
        (["--baseline", "old.json"], "has schema_version 99"),
        (["--inputs-dir", "nowhere"], "--inputs-dir nowhere is not a folder"),
        (["--json", "no/such/folder.json"], "no/such does not exist: create the folder first"),
    ],
)
@pytest.mark.unknown_documents  # baselines of schema_version 99 and without "tool" on purpose
def test_usage_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    zoo, inputs = _zoo(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.json").write_text("{not json")
    base = {"schema_version": 1, "eps": [0.0, 0.2], "models": {}}
    (tmp_path / "other-eps.json").write_text(json.dumps(base))
    (tmp_path / "old.json").write_text(json.dumps({**base, "schema_version": 99}))
    source = [] if "--inputs-dir" in extra else ["--inputs-dir", str(inputs)]
    status, text = _run(capsys, zoo, *source, "--eps", EPS, *extra)
    assert status == 2
    assert message in text


def test_no_model_found_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, text = _run(capsys, tmp_path)
    assert status == 2
    assert f"no .onnx model in folder {tmp_path}" in text
    status, text = _run(capsys, tmp_path / "nope")
    assert status == 2
    assert "does not exist: give folders or .onnx files" in text


@pytest.mark.parametrize(
    "extra",
    [
        ["--baseline", "a.json", "--save-baseline", "b.json"],
        ["--images", "x", "--inputs-dir", "y"],
        ["--tolerance", "-1"],
        ["--jobs", "0"],
    ],
)
def test_flag_errors_exit_2(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", str(tmp_path), *extra])
    assert exit_info.value.code == 2


def test_embedded_model_matches_the_committed_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    """The CI gate of this repository: the embedded model against zoo-baseline.json."""
    root = Path(__file__).resolve().parents[1]
    status = main(["zoo", str(DATA_DIR), "--baseline", str(root / "zoo-baseline.json")])
    output = capsys.readouterr().out
    assert status == 0, output
    assert "PASSED: 1 model: 1 ok" in output
