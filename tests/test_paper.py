"""``models/paper.py`` (``make paper``): finding weights, labels, fetch hints and the stand-in.

The script is loaded from its file (``models/`` is not a package) and its ``main`` is run with a
rich Console that writes to a string. The weights folder is pytest's ``tmp_path``: random Tiny
Darknet weights stand for a user's download, so every run is small (a few seconds).
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from onnx_prune.analysis import analyze_model
from onnx_prune.darknet import write_random_weights
from onnx_prune.data import DARKNET_CFG_DIR
from onnx_prune.feeds import SampleSource

REPOSITORY = Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY / "models" / "paper.py"
TINY_CFG = DARKNET_CFG_DIR / "tiny.cfg"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


paper = load_script()


def run_script(*argv: str) -> tuple[int, str]:
    output = io.StringIO()
    console = Console(file=output, width=100, color_system=None)
    status = paper.main(list(argv), console)
    return status, output.getvalue()


def flat(text: str) -> str:
    """``text`` with every run of whitespace as one space, so that wrapping does not matter."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_random_weights(TINY_CFG, folder / "tiny.weights")
    return folder


def test_measures_the_weights_found_labels_them_random_and_hints_the_missing(
    tiny_weights: Path, tmp_path: Path
) -> None:
    before = sorted(path.name for path in tiny_weights.iterdir())
    document = tmp_path / "paper.json"
    status, text = run_script(
        "--weights-dir", str(tiny_weights), "--networks", "tiny,alexnet", "--limit", "2",
        "--json", str(document),
    )  # fmt: skip
    assert status == 0
    assert "TinyNet: RANDOM WEIGHTS, tiny.cfg + tiny.weights" in text
    assert "preset darknet; 16 conv layers, paper 16" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["Fig", "3", "paper", "0%", "12%", "23%", "32%", "38%", "43%"] in rows
    assert any(row[:3] == ["RANDOM", "WEIGHTS", "0.0%"] for row in rows)  # leaky: no zero at ε=0
    assert "https://pjreddie.com/media/files/alexnet.weights" in text
    assert "STAND-IN" not in text  # MobileNet v2 was not asked for
    # Converted in a temporary folder: nothing is written next to the user's weights.
    assert sorted(path.name for path in tiny_weights.iterdir()) == before
    written = json.loads(document.read_text())
    [tiny] = written["networks"]
    assert (tiny["network"], tiny["kind"], tiny["random_weights"]) == ("tiny", "random", True)
    assert tiny["measured"]["photos"] == 2 and tiny["measured"]["conv_layers"] == 16
    assert tiny["paper"]["fig3"] == [0.0, 0.12, 0.23, 0.32, 0.38, 0.43]
    assert [item["network"] for item in written["missing"]] == ["alexnet"]


def test_missing_mobilenet_runs_the_embedded_stand_in_labelled_as_such(tmp_path: Path) -> None:
    document = tmp_path / "paper.json"
    status, text = run_script(
        "--weights-dir", str(tmp_path), "--networks", "mobilenet", "--limit", "1",
        "--json", str(document),
    )  # fmt: skip
    assert status == 0
    assert "MobileNet v2: STAND-IN EfficientNet-Lite0, not the paper's network" in text
    assert "preset efficientnet-lite; 49 conv layers (+1 FC" in text
    rows = [line.split() for line in text.splitlines()]
    assert any(row[:2] == ["STAND-IN", "36.0%"] for row in rows)  # Fig 3 on dog.jpg
    assert ["Fig", "3", "paper", "32%", "41%", "48%", "55%", "63%", "69%"] in rows
    assert "shicai/MobileNet-Caffe" in text
    assert "T3 samples: 1, labelled: 0" in flat(text)
    [stand_in] = json.loads(document.read_text())["networks"]
    assert (stand_in["kind"], stand_in["stand_in"], stand_in["random_weights"]) == (
        "stand-in",
        True,
        False,
    )
    assert stand_in["measured"]["agreement"][0] == 1.0


def test_labels_and_images_pass_through_to_table_3(tiny_weights: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("name,class_index\ndog.jpg,235\n")
    dog = str(paper.IMAGES / "dog.jpg")
    status, text = run_script(
        "--weights-dir", str(tiny_weights), "--networks", "tiny", "--images", dog,
        "--labels", str(labels),
    )  # fmt: skip
    assert status == 0
    rows = [line.split() for line in text.splitlines()]
    [top1] = [row for row in rows if row[:2] == ["T3", "top-1"]]
    assert top1[2:4] == ["RANDOM", "WEIGHTS"] and top1[4] in ("0.00%", "100.00%")
    assert "T3 samples: 1, labelled: 1" in flat(text)


def test_conv_figures_are_the_summary_of_an_all_conv_network(
    tiny_weights: Path, tmp_path: Path
) -> None:
    options = paper.Options(
        weights_dir=tiny_weights,
        cfg_dir=TINY_CFG.parent,
        networks=(),
        random_weights=False,
        images=None,
        labels=None,
        limit=None,
    )
    tiny = next(network for network in paper.NETWORKS if network.key == "tiny")
    subject = paper.prepare(tiny, options, tmp_path)
    images = tuple(paper.IMAGES / name for name in paper.PHOTOS[:2])
    calibration = SampleSource(images=images, preset="darknet", batch_size=1)
    analysis = analyze_model(subject.path, calibration, eps=paper.EPS, bits=16)
    figures = paper.conv_figures(analysis)
    assert figures.conv_layers == figures.compute_layers == 16
    assert figures.paper_mean == pytest.approx(analysis.summary.ofm.paper_mean)
    assert figures.saved_share == pytest.approx(analysis.summary.ofm.channel_saved_share)
    assert figures.layers_with_zero_channels == analysis.summary.ofm.layers_with_zero_channels


def test_ready_onnx_wins_and_vgg_takes_pjreddies_file_name(tmp_path: Path) -> None:
    by_key = {network.key: network for network in paper.NETWORKS}
    (tmp_path / "vgg-16.weights").touch()
    assert paper.find_weights(by_key["vgg16"], tmp_path) == tmp_path / "vgg-16.weights"
    (tmp_path / "vgg16.onnx").touch()
    assert paper.find_weights(by_key["vgg16"], tmp_path) == tmp_path / "vgg16.onnx"
    assert paper.find_weights(by_key["alexnet"], tmp_path) is None


def test_unknown_network_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        paper.main(["--networks", "lenet"])
    assert "choose from alexnet, mobilenet, resnet50, squeezenet, tiny, vgg16" in (
        capsys.readouterr().err
    )
