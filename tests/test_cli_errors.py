"""Bad input gets one clear line, exit status 2, no traceback, and the file is never changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest

from onnx_prune.cli import main
from onnx_prune.data import EMBEDDED_MODEL
from tests.builders import conv_relu_model, conv_weight, save


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, " ".join((captured.err + captured.out).split())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _external_model(tmp_path: Path, location: str) -> Path:
    model = conv_relu_model(conv_weight())
    path = save(model, tmp_path, "ext.onnx")
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    loaded = onnx.load(str(path), load_external_data=False)
    for tensor in loaded.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(loaded, str(path))
    return path


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, text = _run(capsys, "weights", str(tmp_path / "nope.onnx"))
    assert status == 2
    assert "nope.onnx: no such file" in text
    assert "Traceback" not in text


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, text = _run(capsys, "weights", str(tmp_path))
    assert status == 2
    assert "is a directory: give the path of a .onnx file" in text


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "empty.onnx is empty" in text


def test_truncated_file_is_refused_and_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = save(conv_relu_model(conv_weight()), tmp_path, "whole.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    before = _digest(path)
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert (
        "cut.onnx is not a readable ONNX model" in text or "does not contain an ONNX graph" in text
    )
    assert _digest(path) == before


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", b"\x00\xff" * 64])
def test_not_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(content)
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "notes.onnx" in text
    assert "not a readable ONNX model" in text or "does not contain an ONNX graph" in text


def test_missing_external_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _external_model(tmp_path, "ext.data")
    (tmp_path / "ext.data").unlink()
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "external data file 'ext.data'" in text
    assert "is missing" in text


def test_truncated_external_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _external_model(tmp_path, "ext.data")
    data = tmp_path / "ext.data"
    data.write_bytes(data.read_bytes()[:100])
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "is truncated" in text


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], location: str
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 4096)
    path = _external_model(folder, location)
    before = _digest(path)
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "outside the model's folder: refused" in text
    assert _digest(path) == before


def test_symlink_leaving_the_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder, "link.data")
    outside = tmp_path / "outside.data"
    (folder / "ext.data").rename(outside)
    (folder / "link.data").symlink_to(outside)
    status, text = _run(capsys, "weights", str(path))
    assert status == 2
    assert "resolves outside the model's folder" in text


def test_bad_eps_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "--eps", "0,-1"])
    assert exit_info.value.code == 2
    assert "--eps values must be finite and >= 0" in capsys.readouterr().err


def test_nothing_is_written_next_to_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save(conv_relu_model(conv_weight()), tmp_path)
    before = _digest(path)
    assert _run(capsys, "weights", str(path))[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert _digest(path) == before


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_output_into_a_missing_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    target = tmp_path / "missing" / "out.file"
    status, text = _run(capsys, "analyze", flag, str(target), "--limit", "1")
    assert status == 2
    assert f"{tmp_path / 'missing'} does not exist: create the folder first" in text


def test_the_embedded_model_given_by_a_relative_path_keeps_its_photos_and_preset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    status, text = _run(capsys, "analyze", str(EMBEDDED_MODEL), "--limit", "2")
    assert status == 0, text
    assert "preset efficientnet-lite" in text


def test_bad_tile_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--tile", "0x8"])
    assert "--tile takes H or HxW above 0, got '0x8'" in capsys.readouterr().err
