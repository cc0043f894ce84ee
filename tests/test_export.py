"""The export module's paths that need no torch: missing extras, bad names, the random-weights mark.

torch is never imported here: the exports themselves are checked by hand (see models/NOTICE.md).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import onnx
import pytest
from onnx import helper

from onnx_prune.errors import ConversionError, MissingExtraError
from onnx_prune.export import EXPORTABLE_MODELS, export_torchvision
from onnx_prune.load import RANDOM_WEIGHTS_KEY, is_random_weights


def tiny_model(metadata: dict[str, str]) -> onnx.ModelProto:
    """An Identity model with the given metadata_props."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    helper.set_model_props(model, metadata)
    return model


def test_exportable_models_are_the_papers_torchvision_networks() -> None:
    assert EXPORTABLE_MODELS == ("alexnet", "mobilenet_v2", "resnet50", "squeezenet1_1", "vgg16")


def test_missing_torch_names_the_export_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError) as caught:
        export_torchvision("squeezenet1_1", tmp_path / "m.onnx", random_weights=True)
    message = str(caught.value)
    assert "needs the export extra: pip install 'onnx-prune[export]'" in message
    assert "(torch is not installed)" in message
    assert list(tmp_path.iterdir()) == []


def test_missing_torchvision_names_it_in_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(MissingExtraError) as caught:
        export_torchvision("resnet50", tmp_path / "m.onnx", random_weights=False)
    assert "pip install 'onnx-prune[export]' torchvision" in str(caught.value)
    assert "(torchvision is not installed)" in str(caught.value)


def test_unknown_model_name_is_refused_before_importing_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConversionError) as caught:
        export_torchvision("tinynet", tmp_path / "m.onnx", random_weights=True)
    choices = "alexnet, mobilenet_v2, resnet50, squeezenet1_1, vgg16"
    assert str(caught.value) == f"cannot export 'tinynet': choose one of {choices}"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({RANDOM_WEIGHTS_KEY: "true"}, True),
        ({RANDOM_WEIGHTS_KEY: "True"}, True),
        ({RANDOM_WEIGHTS_KEY: "false"}, False),
        ({"other": "true"}, False),
        ({}, False),
    ],
)
def test_is_random_weights_reads_the_metadata_mark(
    metadata: dict[str, str], expected: bool
) -> None:
    assert is_random_weights(tiny_model(metadata)) is expected


def test_random_weights_mark_survives_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "marked.onnx"
    onnx.save(tiny_model({RANDOM_WEIGHTS_KEY: "true"}), str(path))
    assert is_random_weights(onnx.load(str(path)))
