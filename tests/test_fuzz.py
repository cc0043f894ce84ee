"""Fuzz tests of the bad-input guarantees (issue 14), bounded to a few seconds each.

Hypothesis mutates tiny models structurally, writes random .npy/.npz headers and points output
flags at input files through every spelling of a path. Whatever it draws, the command line must
end with exit 0 or 2, print at most one line on standard error when it refuses, never a
traceback, and leave every input byte-identical. The runs are derandomized (the same examples
on every run, so CI is reproducible) and keep no example database.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tests.builders import conv_relu_model, conv_weight, save
from tests.test_faults import Outcome, npy_header, run_cli, snapshot

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_clean(outcome: Outcome) -> None:
    """Exit 0, or exit 2 with one ``error:`` line; never a traceback."""
    assert outcome.status in (0, 2), outcome
    assert "Traceback" not in outcome.out + outcome.err
    if outcome.status == 2:
        errors = [line for line in outcome.err_lines if line.startswith("error: ")]
        assert len(errors) == 1 and outcome.err_lines[-1] == errors[0], outcome.err


def _fresh(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# ---------------------------------------------------------------------------------------------
# Structural mutations of a tiny model

Mutation = Callable[[onnx.ModelProto], None]
NAMES = ("x", "w", "conv_out", "y", "", "missing")


def _retype(data_type: int) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer[:1]:
            tensor.data_type = data_type

    return mutate


def _redim(dims: list[int]) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer[:1]:
            del tensor.dims[:]
            tensor.dims.extend(dims)

    return mutate


def _cut(keep: int) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer[:1]:
            tensor.raw_data = tensor.raw_data[:keep]

    return mutate


def _rewire(node: int, slot: int, output: bool, name: str) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        if model.graph.node:
            target = model.graph.node[node % len(model.graph.node)]
            names = target.output if output else target.input
            names[slot % len(names)] = name

    return mutate


def _retag(node: int, op_type: str) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        if model.graph.node:
            model.graph.node[node % len(model.graph.node)].op_type = op_type

    return mutate


def _drop(kind: str) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        if kind == "initializer":
            del model.graph.initializer[:]
        elif kind == "node":
            del model.graph.node[:1]
        else:
            del model.graph.input[:]

    return mutate


def _external(key: str, value: str) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer[:1]:
            tensor.data_location = TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            tensor.external_data.add(key="location", value="model.data")
            tensor.external_data.add(key=key, value=value)

    return mutate


def _pads(values: list[int]) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        for conv in model.graph.node[:1]:
            del conv.attribute[:]
            conv.attribute.append(helper.make_attribute("pads", values))

    return mutate


mutations = st.one_of(
    st.integers(-1, 40).map(_retype),
    st.lists(st.integers(-3, 2**41), max_size=5).map(_redim),
    st.integers(0, 863).map(_cut),
    st.builds(_rewire, st.integers(0, 3), st.integers(0, 2), st.booleans(), st.sampled_from(NAMES)),
    st.builds(
        _retag,
        st.integers(0, 3),
        st.sampled_from(["Relu", "Conv", "Gemm", "MatMul", "Add", "Identity", "NoSuchOp"]),
    ),
    st.sampled_from(["initializer", "node", "input"]).map(_drop),
    st.builds(
        _external,
        st.sampled_from(["offset", "length", "location"]),
        st.text(st.characters(codec="utf-8"), max_size=40) | st.integers(-5, 10**6).map(str),
    ),
    st.lists(st.integers(-4, 4), min_size=1, max_size=6).map(_pads),
)


def _mutated_model(folder: Path, chosen: list[Mutation]) -> Path:
    model = conv_relu_model(conv_weight())
    for mutate in chosen:
        mutate(model)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    (folder / "model.data").write_bytes(conv_weight().tobytes()[:500])
    np.save(folder / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    return path


def _assert_mutated_model_is_clean(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chosen: list[Mutation],
    command: str,
    options: Callable[[Path], tuple[str | Path, ...]] = lambda folder: (),
) -> None:
    """``command`` on the mutated model, then ``options(folder)``, is a clean outcome and changes
    no file in the model's folder."""
    folder = _fresh(tmp_path)
    path = _mutated_model(folder, chosen)
    before = snapshot(folder)
    assert_clean(run_cli(capsys, command, path, *options(folder)))
    assert snapshot(folder) == before


@FUZZ
@given(chosen=st.lists(mutations, min_size=1, max_size=3))
def test_mutated_models_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chosen: list[Mutation]
) -> None:
    _assert_mutated_model_is_clean(tmp_path, capsys, chosen, "weights")


@settings(FUZZ, max_examples=15)
@given(chosen=st.lists(mutations, min_size=1, max_size=2))
def test_mutated_models_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chosen: list[Mutation]
) -> None:
    _assert_mutated_model_is_clean(
        tmp_path,
        capsys,
        chosen,
        "analyze",
        lambda folder: ("--inputs", folder / "x.npy", "--eps", "0"),
    )


# ---------------------------------------------------------------------------------------------
# Random tensor-file headers

shapes = st.lists(st.integers(-2, 2**40), max_size=5).map(lambda dims: repr(tuple(dims)))
shapes |= st.sampled_from(["(2, 3, 8, 8)", "(1, 3, 8, 8)", "(0, 3, 8, 8)", "()", "[2]", "'x'"])
descrs = st.sampled_from(["<f4", "<f8", "|u1", "<i8", ">f4", "|O", "<U3", "xyz", "<f2"])


@FUZZ
@given(
    shape=shapes,
    descr=descrs,
    version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]),
    data=st.binary(max_size=2000) | st.integers(0, 1600).map(bytes),
    container=st.sampled_from(["npy", "stored", "deflated"]),
)
def test_random_tensor_file_headers(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shape: str,
    descr: str,
    version: bytes,
    data: bytes,
    container: str,
) -> None:
    folder = _fresh(tmp_path)
    save(conv_relu_model(conv_weight()), folder)
    payload = npy_header(shape, descr, version) + data
    path = folder / ("t.npy" if container == "npy" else "t.npz")
    if container == "npy":
        path.write_bytes(payload)
    else:
        mode = zipfile.ZIP_STORED if container == "stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(path, "w", compression=mode) as archive:
            archive.writestr("x.npy", payload)
    before = snapshot(folder)
    outcome = run_cli(capsys, "analyze", folder / "model.onnx", "--inputs", path, "--eps", "0")
    assert_clean(outcome)
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------
# Random output/input path collisions

COMMANDS = {
    "weights": (["weights", "model.onnx"], ["--json"], ["model.onnx"]),
    "analyze": (
        ["analyze", "model.onnx", "--inputs", "x.npy", "--eps", "0"],
        ["--json", "--plot"],
        ["model.onnx", "x.npy"],
    ),
    "images": (
        ["analyze", "model.onnx", "--images", "images", "--eps", "0"],
        ["--json", "--plot"],
        ["model.onnx", "images/a.png"],
    ),
    "darknet": (["darknet", "net.cfg", "net.weights"], ["-o"], ["net.cfg", "net.weights"]),
    "zoo": (
        ["zoo", "zoo", "--inputs-dir", "zin", "--eps", "0"],
        ["--json", "--markdown", "--save-baseline"],
        ["zoo/z.onnx", "zin/z.npy"],
    ),
}
SPELLINGS = ("plain", "dot", "absolute", "parent", "symlink", "hardlink", "double-slash")


def _spell(folder: Path, target: str, spelling: str) -> str:
    """``target`` (relative to ``folder``, the current folder) written another way."""
    if spelling == "dot":
        return f"./{target}"
    if spelling == "absolute":
        return str(folder / target)
    if spelling == "parent":
        return f"../{folder.name}/{target}"
    if spelling == "double-slash":
        return target.replace("/", "//") if "/" in target else f".//{target}"
    if spelling in ("symlink", "hardlink"):
        alias = folder / f"alias-{spelling}{Path(target).suffix}"
        if spelling == "symlink":
            alias.symlink_to(folder / target)
        else:
            os.link(folder / target, alias)
        return alias.name
    return target


@settings(FUZZ, max_examples=40)
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    pick=st.integers(0, 10),
    spelling=st.sampled_from(SPELLINGS),
)
def test_random_output_input_collisions_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    pick: int,
    spelling: str,
) -> None:
    from tests.test_faults import _darknet_pair

    folder = _fresh(tmp_path)
    monkeypatch.chdir(folder)
    model = conv_relu_model(conv_weight())
    save(model, folder)
    np.save(folder / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    (folder / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), (30, 60, 90)).save(folder / "images" / "a.png")
    (folder / "zoo").mkdir()
    save(model, folder / "zoo", "z.onnx")
    (folder / "zin").mkdir()
    np.save(folder / "zin" / "z.npy", np.ones((2, 3, 8, 8), np.float32))
    _darknet_pair(folder)
    argv, flags, targets = COMMANDS[command]
    flag = flags[pick % len(flags)]
    target = _spell(folder, targets[pick % len(targets)], spelling)
    before = snapshot(folder)
    outcome = run_cli(capsys, *argv, flag, target)
    assert outcome.status == 2, outcome
    assert outcome.err_lines == [outcome.err_lines[-1]] and "is the input file" in outcome.err
    assert snapshot(folder) == before
