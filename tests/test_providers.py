"""Execution providers: the flags, the exact-math options, the check that a session really runs
on what was asked (onnxruntime falls back to the CPU silently), and CPU/CUDA parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnx_prune import runtime
from onnx_prune.baseline import compare_to_baseline, read_baseline
from onnx_prune.cli import main
from onnx_prune.errors import ProviderError
from onnx_prune.runtime import CPU, Providers, SessionOptions, nodes_on_cpu
from tests.builders import conv_relu_model, conv_weight, save

CUDA = "CUDAExecutionProvider"
HAS_CUDA = CUDA in runtime.available_providers()


def test_short_names_any_case_in_priority_order() -> None:
    providers = Providers.parse("TensorRT,cuda,Cpu")
    assert providers.names == ("TensorrtExecutionProvider", CUDA, CPU)
    assert Providers.parse(None).names == (CPU,)
    assert Providers.parse("OpenVINOExecutionProvider").names == ("OpenVINOExecutionProvider",)
    assert Providers.parse("cuda,cuda").names == (CUDA,)


def test_unknown_name_names_the_known_ones() -> None:
    with pytest.raises(ProviderError, match="unknown execution provider 'gpu': give one of cuda"):
        Providers.parse("gpu")


def test_provider_options_polygraphy_form() -> None:
    providers = Providers.parse("cuda", ["cuda:device_id=1", "CUDA:cudnn_conv_algo_search=DEFAULT"])
    options = dict(providers.session_options())
    assert options[CUDA] == {
        "use_tf32": "0",
        "device_id": "1",
        "cudnn_conv_algo_search": "DEFAULT",
    }
    assert options[CPU] == {}
    assert list(options) == [CUDA, CPU]  # the CPU is the fallback, last


def test_exact_math_defaults_and_user_override_are_recorded() -> None:
    assert Providers.parse("cuda").document() == {
        "providers": [CUDA],
        "provider_options": {CUDA: {"use_tf32": "0"}},
    }
    overridden = Providers.parse("cuda", ["cuda:use_tf32=1"])
    assert overridden.document()["provider_options"] == {CUDA: {"use_tf32": "1"}}
    trt = dict(Providers.parse("tensorrt").session_options())["TensorrtExecutionProvider"]
    assert trt == {"trt_fp16_enable": "False", "trt_int8_enable": "False"}
    assert Providers.parse("cuda").label() == "CUDA (use_tf32=0)"
    assert Providers().document() == {"providers": [CPU], "provider_options": {}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cuda", "--provider-option takes NAME:KEY=VALUE (e.g. cuda:device_id=1), got 'cuda'"),
        ("cuda:device_id", "--provider-option takes NAME:KEY=VALUE"),
        (":a=b", "--provider-option takes NAME:KEY=VALUE"),
        ("cuda:device_id=1", "CUDAExecutionProvider is not in --providers (CPUExecutionProvider)"),
    ],
)
def test_bad_provider_options(text: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Providers.parse("cpu", [text])


class _FallbackSession:
    """An onnxruntime session that, like the real one without CUDA libraries, runs on the CPU."""

    def __init__(self, model: Any, options: Any, providers: Any) -> None:
        self.asked = providers

    def get_providers(self) -> list[str]:
        return [CPU]


def test_a_silent_fallback_to_the_cpu_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(conv_relu_model(conv_weight()), tmp_path)
    monkeypatch.setattr("onnxruntime.InferenceSession", _FallbackSession)
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: [CUDA, CPU])
    options = SessionOptions(providers=Providers.parse("cuda"))
    with pytest.raises(ProviderError) as caught:
        runtime.open_session(path, options)
    assert str(caught.value) == (
        "--providers asked for CUDAExecutionProvider but the session fell back to "
        "CPUExecutionProvider (available: CUDAExecutionProvider, CPUExecutionProvider): install "
        "onnxruntime-gpu in place of onnxruntime, with the libraries it needs, or leave the "
        "provider out"
    )


def test_the_session_is_given_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[_FallbackSession] = []

    def session(model: Any, options: Any, providers: Any) -> _FallbackSession:
        made.append(_FallbackSession(model, options, providers))
        return made[-1]

    monkeypatch.setattr("onnxruntime.InferenceSession", session)
    runtime.open_session(save(conv_relu_model(conv_weight()), tmp_path))
    assert made[0].asked == [(CPU, {})]


def test_nodes_left_on_the_cpu_are_read_from_the_profile() -> None:
    profile = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "conv_kernel_time", "args": {"op_name": "Conv", "provider": CUDA}},
        {"cat": "Node", "name": "shape_kernel_time", "args": {"op_name": "Shape", "provider": CPU}},
        {"cat": "Node", "name": "shape_kernel_time", "args": {"op_name": "Shape", "provider": CPU}},
    ]
    assert nodes_on_cpu(profile) == ("Shape shape",)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_onnxruntime_gpu_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save(conv_relu_model(conv_weight()), tmp_path)
    np.save(tmp_path / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    status = main(
        ["analyze", str(path), "--inputs", str(tmp_path / "x.npy"), "--providers", "cuda"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert (
        "--providers asked for CUDAExecutionProvider but this onnxruntime does not have it" in err
    )
    assert "install onnxruntime-gpu" in err
    assert "CPUExecutionProvider" in err  # what is available


def test_every_document_records_the_providers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save(conv_relu_model(conv_weight()), tmp_path)
    np.save(tmp_path / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    for command in ("analyze", "accuracy"):
        out = tmp_path / f"{command}.json"
        args = [command, str(path), "--inputs", str(tmp_path / "x.npy"), "--providers", "CPU"]
        assert main([*args, "--json", str(out)]) == 0
        document = json.loads(out.read_text())
        assert document["providers"] == [CPU], command
        assert document["provider_options"] == {}, command
    zoo = tmp_path / "zoo.json"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "model.npy", np.ones((2, 3, 8, 8), np.float32))
    assert main(["zoo", str(path), "--inputs-dir", str(inputs), "--json", str(zoo)]) == 0
    document = json.loads(zoo.read_text())
    assert document["providers"] == [CPU]
    assert document["models"][0]["analysis"]["providers"] == [CPU]


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device")
def test_cuda_counts_equal_cpu_counts(tmp_path: Path) -> None:
    """The embedded model over the embedded photos: every count on CUDA equals the CPU's."""
    documents = []
    for providers in ("cpu", "cuda"):
        out = tmp_path / f"{providers}.json"
        assert main(["analyze", "--providers", providers, "--limit", "4", "--json", str(out)]) == 0
        document = json.loads(out.read_text())
        document.pop("providers")
        document.pop("provider_options")
        documents.append(document)
    assert documents[0] == documents[1]


def test_a_baseline_made_on_another_provider_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    document = {
        "schema_version": 1,
        "tool": "onnx-prune zoo",
        "eps": [0.0],
        "providers": [CUDA, CPU],
        "provider_options": {},
        "models": {},
    }
    path.write_text(json.dumps(document))
    baseline = read_baseline(path)
    assert baseline.providers == (CUDA, CPU)
    comparison = compare_to_baseline({}, baseline, eps=(0.0,), providers=Providers())
    assert comparison.notes == (
        "the baseline was made on CUDAExecutionProvider, CPUExecutionProvider and this run is on "
        "CPUExecutionProvider: figures are compared across providers",
    )
    same = compare_to_baseline({}, baseline, eps=(0.0,), providers=Providers.parse("cuda,cpu"))
    assert same.notes == ()
