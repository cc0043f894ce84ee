"""Accuracy under ε-pruning: exact numbers on a tiny classifier, labels, batches, report, CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from onnx_prune import runtime
from onnx_prune.accuracy import (
    AccuracyReport,
    EpsAccuracy,
    TopK,
    measure_accuracy,
)
from onnx_prune.cli import DEFAULT_MODEL, main
from onnx_prune.data import EMBEDDED_IMAGES, IMAGENET_SYNSETS
from onnx_prune.errors import InputDataError, UnsupportedModelError
from onnx_prune.feeds import SampleSource
from onnx_prune.fidelity import Fidelity
from onnx_prune.inputs import PRESETS, SkippedInput
from onnx_prune.jsondoc import accuracy_document
from onnx_prune.labels import Labels, load_labels, read_synsets
from onnx_prune.load import load_model
from onnx_prune.pruning import EPS_INPUT, NotPruned
from onnx_prune.report.accuracy import format_accuracy
from tests.builders import FLOAT, make_model, save
from tests.golden_util import assert_golden, render

DARKNET = PRESETS["darknet"]
EPS = (0.0, 0.1, 0.2)
# RGB colours of 2x2 images; the tiny classifier's class is the strongest channel.
COLOURS = {
    "red.png": (255, 0, 0),
    "green.png": (0, 255, 0),
    "blue.png": (0, 0, 255),
    "dim.png": (20, 40, 0),  # class 1; both channels are within 0.2, not within 0.1
    "extra.png": (0, 0, 200),  # never labelled
}
CSV = "name,class_index\nred.png,0\ngreen.png,1\nblue.png,2\ndim.png,1\n"


# --- the tiny classifier ------------------------------------------------------------------------


def classifier(
    *, batch: int | str = "N", softmax: bool = False, reshape_to_one: bool = False
) -> onnx.ModelProto:
    """x[N,3,2,2] -> 1x1 Conv (identity) -> GlobalAveragePool -> Flatten -> Gemm -> 6 logits.

    Logits are the mean colour of the image (classes 0-2) plus a small bias whose order,
    classes 3, 4, 5, 0, 1, 2, decides between equal scores: an all-zero input is class 3.
    """
    gemm = np.zeros((3, 6), np.float32)
    gemm[:, :3] = np.eye(3)
    bias = np.array([0.003, 0.002, 0.001, 0.006, 0.005, 0.004], np.float32)
    initializers = [
        numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w"),
        numpy_helper.from_array(gemm, "w_fc"),
        numpy_helper.from_array(bias, "b_fc"),
    ]
    flatten = helper.make_node("Flatten", ["g"], ["f"], name="flatten")
    if reshape_to_one:  # old zoo models reshape to a fixed batch of 1
        initializers.append(numpy_helper.from_array(np.array([1, 3], np.int64), "one_row"))
        flatten = helper.make_node("Reshape", ["g", "one_row"], ["f"], name="reshape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        flatten,
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["logits"], name="fc"),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        output = "probabilities"
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [batch, 3, 2, 2])],
        [helper.make_tensor_value_info(output, FLOAT, [batch, 6])],
        initializers,
    )


def write_images(folder: Path, colours: Mapping[str, tuple[int, int, int]] = COLOURS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in colours.items():
        Image.new("RGB", (2, 2), colour).save(folder / name)
    return folder


def write_csv(folder: Path, text: str = CSV, name: str = "labels.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def images_tensor(colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    values = np.array(colours, np.float32)[:, :, None, None] / 255
    return np.broadcast_to(values, (len(colours), 3, 2, 2)).astype(np.float32)


_SOURCE_OPTIONS = ("batch_size", "limit", "strict", "batch_axes")


def measure(
    tmp_path: Path,
    model: onnx.ModelProto,
    *,
    labelled: bool = True,
    labels: Labels | None = None,
    **options: Any,
) -> AccuracyReport:
    """The sweep over the five COLOURS images, labelled by CSV unless ``labelled`` is False."""
    images = write_images(tmp_path / "images")
    if labels is None and labelled:
        labels = load_labels(write_csv(tmp_path))
    loaded = load_model(save(model, tmp_path))
    feeding = {key: options.pop(key) for key in _SOURCE_OPTIONS if key in options}
    source = SampleSource(images=(images,), preset="darknet", **feeding)
    options.setdefault("model_inputs", True)  # the tiny classifier's only conv reads the image
    return measure_accuracy(loaded, source, eps=EPS, labels=labels, **options)


# --- exact numbers ------------------------------------------------------------------------------


def test_labelled_images_give_exact_numbers(tmp_path: Path) -> None:
    report = measure(tmp_path, classifier())
    assert (report.samples, report.labelled) == (5, 4)
    assert report.baseline == TopK(1.0, 1.0)
    assert report.output_kind == "logits"
    assert report.pruned_layers == 2
    zero, tenth, fifth = report.results
    assert [r.eps for r in report.results] == list(EPS)
    # ε = 0 and 0.1 change no decision; at 0.2 dim.png is all zeros, scored as class 3.
    assert (zero.top1, tenth.top1, fifth.top1) == (1.0, 1.0, 0.75)
    assert (zero.top5, fifth.top5) == (1.0, 1.0)  # classes 3, 4, 5, 0, 1 include dim's 1
    assert (zero.agreement, tenth.agreement, fifth.agreement) == (1.0, 1.0, 0.8)
    assert tenth.kl is not None and fifth.kl is not None
    assert zero.kl == 0.0 and 0 < tenth.kl < fifth.kl
    # IFM values: conv 12 and Gemm 3 per image, 75 in all. Pruned at ε = 0: two zero colour
    # planes (8) and two zero means (2) for each pure colour, one plane (4) + one mean for dim.
    assert [(r.pruned_elements, r.ifm_elements) for r in report.results] == [
        (45, 75),
        (50, 75),
        (55, 75),
    ]
    assert fifth.saved_fraction == pytest.approx(55 / 75)


def test_without_labels_top1_is_none_and_agreement_still_measured(tmp_path: Path) -> None:
    report = measure(tmp_path, classifier(), labelled=False)
    assert report.labelled == 0
    assert report.baseline == TopK(None, None)
    assert [r.top1 for r in report.results] == [None, None, None]
    assert [r.agreement for r in report.results] == [1.0, 1.0, 0.8]


def test_element_granularity_counts_values(tmp_path: Path) -> None:
    report = measure(tmp_path, classifier(), granularity="element", labelled=False)
    # No value is within ε except those of whole zero planes/means here, so the counts agree.
    assert [r.pruned_elements for r in report.results] == [45, 50, 55]
    assert report.granularity == "element"


def test_probabilities_are_recognised_and_give_the_same_kl(tmp_path: Path) -> None:
    logits = measure(tmp_path / "a", classifier())
    probabilities = measure(tmp_path / "b", classifier(softmax=True))
    assert probabilities.output_kind == "probabilities"
    for left, right in zip(logits.results, probabilities.results, strict=True):
        assert right.agreement == left.agreement and right.top1 == left.top1
        assert right.kl == pytest.approx(left.kl, rel=1e-4, abs=1e-9)


def test_tensor_inputs_with_labels_by_sample_index(tmp_path: Path) -> None:
    colours = [COLOURS[name] for name in ("red.png", "green.png", "dim.png")]
    np.save(tmp_path / "x.npy", images_tensor(colours))
    labels = load_labels(write_csv(tmp_path, "0,0\n1,1\n2,1\n"))
    loaded = load_model(save(classifier(), tmp_path))
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=2)
    report = measure_accuracy(loaded, source, eps=EPS, labels=labels)
    assert (report.samples, report.labelled) == (3, 3)
    assert [r.top1 for r in report.results] == [1.0, 1.0, pytest.approx(2 / 3)]


def test_float64_tensors_are_cast_as_analyze_casts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    colours = [COLOURS[name] for name in ("red.png", "green.png", "dim.png")]
    np.save(tmp_path / "x32.npy", images_tensor(colours))
    np.save(tmp_path / "x64.npy", images_tensor(colours).astype(np.float64))
    loaded = load_model(save(classifier(batch=2), tmp_path))  # a fixed batch: 3 = 2 + 1 padded
    reports = [
        measure_accuracy(loaded, SampleSource(tensors=tmp_path / name), eps=EPS)
        for name in ("x32.npy", "x64.npy")
    ]
    assert "one sample at a time" not in caplog.text
    assert _numbers(reports[0]) == _numbers(reports[1])
    assert [(r.samples, r.padded_samples) for r in reports] == [(3, 1), (3, 1)]


# --- batches ------------------------------------------------------------------------------------


def _numbers(report: AccuracyReport) -> list[tuple[object, ...]]:
    return [dataclasses.astuple(result) for result in report.results]


@pytest.mark.parametrize("batch", [1, 2])
def test_fixed_batch_models_run_with_their_batch(tmp_path: Path, batch: int) -> None:
    expected = measure(tmp_path / "dynamic", classifier())
    report = measure(tmp_path / "fixed", classifier(batch=batch), batch_size=8)
    assert report.batch_size == batch
    assert report.padded_samples == (batch - 5 % batch) % batch  # five images
    assert _numbers(report) == _numbers(expected)


def test_models_failing_on_batches_fall_back_to_one_sample(tmp_path: Path) -> None:
    expected = measure(tmp_path / "dynamic", classifier())
    report = measure(tmp_path / "reshape", classifier(reshape_to_one=True), batch_size=3)
    assert report.batch_size == 1
    assert report.samples == 5
    assert _numbers(report) == _numbers(expected)


class RecordingSession:
    """A session that records the ε fed to every run (the same for every pruned tensor)."""

    def __init__(self, inner: runtime.Session) -> None:
        self.inner = inner
        self.eps: list[float] = []
        self.rows: list[int] = []

    def inputs(self) -> Sequence[runtime.TensorSpec]:
        return self.inner.inputs()

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        (eps,) = set(feeds[EPS_INPUT].tolist())
        self.eps.append(float(eps))
        self.rows.append(len(feeds["x"]))
        return self.inner.run(outputs, feeds)


def test_one_session_runs_the_baseline_then_each_eps_per_batch(tmp_path: Path) -> None:
    sessions: list[RecordingSession] = []

    def open_session(
        source: runtime.ModelSource, options: runtime.SessionOptions
    ) -> runtime.Session:
        sessions.append(RecordingSession(runtime.open_session(source, options)))
        return sessions[-1]

    done: list[tuple[int, int]] = []

    def progress(samples: int, total: int) -> None:
        done.append((samples, total))

    measure(tmp_path, classifier(), batch_size=2, session_factory=open_session, progress=progress)
    (session,) = sessions
    assert session.eps == [float(np.float32(e)) for e in (-1.0, *EPS)] * 3
    assert session.rows == [2] * 8 + [1] * 4
    assert done == [(2, 5), (4, 5), (5, 5)]


# --- labels -------------------------------------------------------------------------------------


def test_csv_header_is_optional_and_wordnet_ids_are_read(tmp_path: Path) -> None:
    synsets = read_synsets(IMAGENET_SYNSETS)
    text = "# a comment\nsub/a.JPEG,n01443537\n\nb.png,7, extra column\n"
    labels = load_labels(write_csv(tmp_path, text))
    assert labels.by_key == {"a.JPEG": synsets["n01443537"], "b.png": 7}
    assert labels.label_for(Path("elsewhere/a.JPEG")) == 1
    assert labels.label_for(Path("c.png")) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,0\nb.png,x\n", "labels.csv:2: 'b.png,x' is not name,class_index"),
        ("a.png,0\na.png,1\n", "labels.csv:2: 'a.png' is labelled both 0 and 1"),
        ("name,class\n", "labels.csv holds no label: write one name,class_index row per image"),
    ],
)
def test_bad_csv_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputDataError) as caught:
        load_labels(write_csv(tmp_path, text))
    assert message in str(caught.value)


def test_labels_matching_no_image_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "wrong").mkdir()
    with pytest.raises(InputDataError) as caught:
        measure(tmp_path, classifier(), labels=load_labels(write_csv(tmp_path / "wrong", "x,0\n")))
    assert str(caught.value).startswith(
        f"none of the 5 samples has a label in {tmp_path / 'wrong' / 'labels.csv'}: its names "
        "(such as 'x') must be image file names, or sample indices 0, 1, ... for --inputs"
    )


def test_strict_makes_an_unlabelled_image_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError) as caught:
        measure(tmp_path, classifier(), strict=True)
    assert str(caught.value) == (
        f"1 of 5 samples have no label in {tmp_path / 'labels.csv'} (first: "
        f"{tmp_path / 'images' / 'extra.png'}): label them, or drop --strict to leave them "
        "out of top-1/top-5"
    )


def test_a_label_beyond_the_models_classes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError) as caught:
        measure(tmp_path, classifier(), labels=load_labels(write_csv(tmp_path, "red.png,6\n")))
    assert str(caught.value) == (
        f"{tmp_path / 'labels.csv'} labels 'red.png' as class 6 but the model outputs 6 "
        "classes: the labels do not belong to this model"
    )


def _tree(root: Path) -> Path:
    write_images(root / "n01440764", {"red.png": (255, 0, 0)})  # class 0
    write_images(root / "n01443537", {"green.png": (0, 255, 0), "dim.png": (20, 40, 0)})
    write_images(root / "unsorted", {"blue.png": (0, 0, 255)})
    return root


def test_wordnet_tree_labels_its_own_images(tmp_path: Path) -> None:
    root = _tree(tmp_path / "val")
    labels = load_labels(root)
    assert labels.kind == "tree"
    assert labels.label_for(root / "n01443537" / "dim.png") == 1
    assert labels.label_for(root / "unsorted" / "blue.png") is None
    loaded = load_model(save(classifier(), tmp_path))
    report = measure_accuracy(
        loaded, SampleSource(images=(root,), preset="darknet"), eps=EPS, labels=labels
    )
    assert (report.samples, report.labelled) == (4, 3)
    assert [r.top1 for r in report.results] == [1.0, 1.0, pytest.approx(2 / 3)]


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["cats", "dogs"], "has no WordNet-id subfolders (such as n01440764)"),
        (["n01440764", "n99999999"], "'n99999999' is not one of the 1000 ImageNet-1k WordNet ids"),
    ],
)
def test_bad_label_tree_is_an_error(tmp_path: Path, folders: list[str], message: str) -> None:
    for folder in folders:
        (tmp_path / folder).mkdir()
    with pytest.raises(InputDataError) as caught:
        load_labels(tmp_path)
    assert message in str(caught.value)


# --- budget, report, JSON -----------------------------------------------------------------------


def _report(*, labelled: bool = True, random_weights: bool = False) -> AccuracyReport:
    top = (0.75, 0.75, 0.7375, 0.70) if labelled else (None,) * 4
    results = tuple(
        EpsAccuracy(
            eps=eps,
            top1=top1,
            top5=None if top1 is None else 0.9,
            agreement=agreement,
            kl=kl,
            saved_fraction=saved,
            pruned_elements=int(saved * 1000),
            ifm_elements=1000,
            outputs={
                "logits": Fidelity(1.0 - kl, kl / 2),
                "/model.22/cv2.2/cv2.2.0/conv/Conv_output_0": Fidelity(1.0 - 2 * kl, kl),
            },
        )
        for eps, top1, agreement, kl, saved in zip(
            (0.0, 0.1, 0.2, 0.3),
            top,
            (1.0, 0.995, 0.98, 0.9),
            (0.0, 0.0012, 0.0101, 0.2),
            (0.078, 0.103, 0.1086, 0.1134),
            strict=True,
        )
    )
    return AccuracyReport(
        model="model.onnx",
        granularity="channel",
        samples=200,
        labelled=190 if labelled else 0,
        baseline=TopK(0.75, 0.9) if labelled else TopK(None, None),
        results=results,
        random_weights=random_weights,
        output_kind="logits",
        batch_size=8,
        pruned_layers=54,
        skipped_inputs=(SkippedInput("broken.jpg", "cannot read image broken.jpg"),),
        not_pruned=(NotPruned("q", ("qconv",), "quantized (integer) feature map"),),
        outputs=("logits", "/model.22/cv2.2/cv2.2.0/conv/Conv_output_0"),
        classifier_outputs=("logits",),
        scored_output="logits",
        classes=1000,
    )


def test_budget_names_the_largest_eps_within_the_drop() -> None:
    report = _report()
    assert report.max_eps_within_budget(0.0) == 0.1
    assert report.max_eps_within_budget(1.25) == 0.2
    assert report.max_eps_within_budget(10.0) == 0.3
    unlabelled = _report(labelled=False)
    assert unlabelled.max_eps_within_budget(1.0) == 0.1  # agreement drop 0.5 points
    assert unlabelled.max_eps_within_budget(0.1) == 0.0


def test_report_golden_labelled() -> None:
    text = render(format_accuracy(_report(), max_drop=1.5))
    assert_golden(text, "accuracy_labelled.txt")


def test_report_golden_unlabelled_random_weights() -> None:
    text = render(format_accuracy(_report(labelled=False, random_weights=True), max_drop=0.1))
    assert text.startswith("RANDOM WEIGHTS")
    assert_golden(text, "accuracy_unlabelled_random.txt")


def test_json_document_has_the_documented_fields() -> None:
    document = accuracy_document(_report(), max_drop=1.5)
    assert document["schema_version"] == 1
    assert document["eps"] == [0.0, 0.1, 0.2, 0.3]
    assert document["samples"] == 200
    assert document["results"][1] == {
        "eps": 0.1,
        "top1": 0.75,
        "top5": 0.9,
        "agreement": 0.995,
        "kl": 0.0012,
        "saved_fraction": 0.103,
        "pruned_elements": 103,
        "ifm_elements": 1000,
        "outputs": {
            "logits": {"cosine": 1.0 - 0.0012, "relative_l2": 0.0006},
            "/model.22/cv2.2/cv2.2.0/conv/Conv_output_0": {
                "cosine": 1.0 - 0.0024,
                "relative_l2": 0.0012,
            },
        },
    }
    assert document["classifier_outputs"] == ["logits"]
    assert document["scored_output"] == "logits"
    assert document["baseline"] == {"top1": 0.75, "top5": 0.9}
    assert document["max_eps_within_budget"] == 0.2
    assert document["granularity"] == "channel"
    assert document["skipped_inputs"] == [
        {"name": "broken.jpg", "reason": "cannot read image broken.jpg"}
    ]


# --- command line -------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, " ".join((captured.err + captured.out).split())


def test_cli_writes_json_with_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save(classifier(), tmp_path)
    images = write_images(tmp_path / "images")
    out = tmp_path / "out.json"
    args = ["accuracy", str(model), "--images", str(images), "--labels", str(write_csv(tmp_path))]
    args += ["--preset", "darknet", "--eps", "0,0.2", "--max-top1-drop", "1", "--json", str(out)]
    status, text = _run(capsys, *args)
    assert status == 0, text
    document = json.loads(out.read_text())
    assert [r["top1"] for r in document["results"]] == [1.0, 0.75]
    assert document["max_eps_within_budget"] == 0.0
    assert "Largest ε within a 1-point top-1 drop: 0" in text


def test_cli_takes_images_from_a_wordnet_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(classifier(), tmp_path)
    root = _tree(tmp_path / "val")
    args = ["accuracy", str(model), "--labels", str(root), "--preset", "darknet", "--json", "-"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["labelled"] == 3
    assert "1 of 4 samples have no label" in captured.err  # the warning reaches the user


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "error: no samples: give --images DIR|FILE..., --inputs X.npz, or --labels DIR"),
        (["--inputs", "x.npy", "--labels", "tree"], "labels images by folder, but the samples"),
    ],
)
def test_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    model = save(classifier(), tmp_path)
    np.save(tmp_path / "x.npy", images_tensor([(0, 0, 0)]))
    _tree(tmp_path / "tree")
    extra = [str(tmp_path / arg) if arg in ("x.npy", "tree") else arg for arg in extra]
    status, text = _run(capsys, "accuracy", str(model), *extra)
    assert status == 2
    assert message in text
    assert "Traceback" not in text


def test_opset_8_model_is_refused(tmp_path: Path) -> None:
    model = classifier()
    model.opset_import[0].version = 8
    loaded = load_model(save(model, tmp_path))
    with pytest.raises(UnsupportedModelError, match="ε-pruning needs opset 9 or later"):
        measure_accuracy(loaded, SampleSource(images=(write_images(tmp_path / "i"),)))


@pytest.mark.slow
def test_embedded_model_at_eps_zero_agrees_exactly() -> None:
    loaded = load_model(DEFAULT_MODEL)
    source = SampleSource(
        images=(EMBEDDED_IMAGES,), preset="efficientnet-lite", limit=2, batch_size=2
    )
    report = measure_accuracy(loaded, source, eps=(0.0, 0.1))
    assert report.samples == 2 and report.pruned_layers == 49  # all but the one reading the image
    assert report.results[0].agreement == 1.0 and report.results[0].kl == 0.0
    assert 0.0 < report.results[0].saved_fraction < report.results[1].saved_fraction < 1.0
