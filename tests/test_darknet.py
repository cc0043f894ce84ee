"""The Darknet converter: tiny networks against a numpy Darknet, its errors, and real Darknet.

The unit tests build cfgs in code and compare every layer's ONNX output with
``tests/darknet_reference.py``. The slow tests run Debian's ``darknet`` binary on the paper's
six cfgs and Debian's four with random weights and require the same top-5 classes and
probabilities within 0.01 percentage points; they skip with the reason when darknet is missing.
The ``onnx-prune darknet`` command is run through ``onnx_prune.cli.main``.

The paper's cfgs are looked up in ``$ONNX_PRUNE_PAPER_CFG_DIR`` or ``onnx_prune/data/darknet/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, shape_inference

from onnx_prune.cli import main
from onnx_prune.darknet import (
    RANDOM_REVISION,
    convert_darknet,
    parse_darknet_cfg,
    write_random_weights,
)
from onnx_prune.data import DARKNET_CFG_DIR
from onnx_prune.errors import ConversionError
from onnx_prune.load import is_random_weights
from tests import darknet_binary
from tests.darknet_reference import (
    CURRENT_HEADER,
    OLD_HEADER,
    TRANSPOSED_HEADER,
    Parameters,
    Section,
    cfg_text,
    forward,
    write_weights,
)

PAPER_CFG_DIR = Path(os.environ.get("ONNX_PRUNE_PAPER_CFG_DIR", DARKNET_CFG_DIR))
PAPER_CFGS = ("alexnet", "mobilenet", "resnet50", "squeezenet", "tiny", "vgg16")
DEBIAN_CFGS = ("alexnet", "resnet50", "tiny", "vgg-16")
PAPER_TWINS = {"vgg-16": "vgg16"}  # Debian cfg name -> paper cfg name, where they differ
ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "leaky", "relie", "ramp", "logistic", "loggy")
ACTIVATIONS += ("tanh", "elu", "selu", "hardtan")


def run_onnx(model: onnx.ModelProto, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` with onnxruntime, returning the tensors named ``names``."""
    import onnxruntime  # noqa: TID251 (tests may run a model directly; the library may not)

    probe = model
    missing = [name for name in names if name not in {o.name for o in model.graph.output}]
    if missing:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in missing)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, session.run(list(names), {"input": x}), strict=True))


def build(
    tmp_path: Path, sections: list[Section], *, height: int, width: int, seed: int = 0
) -> tuple[Path, Path, Parameters]:
    """Write the cfg and reference weights of ``sections``; return their paths and parameters."""
    cfg = tmp_path / "net.cfg"
    cfg.write_text(cfg_text(sections, height=height, width=width))
    parameters = Parameters(np.random.default_rng(seed))
    forward(sections, parameters, np.zeros((3, height, width), np.float32))  # draws them all
    weights = tmp_path / "net.weights"
    write_weights(weights, sections, parameters)
    return cfg, weights, parameters


def check_against_reference(
    tmp_path: Path, sections: list[Section], *, height: int, width: int
) -> onnx.ModelProto:
    """Convert ``sections`` and compare every layer output for two images with the reference."""
    cfg, weights, parameters = build(tmp_path, sections, height=height, width=width)
    model = convert_darknet(cfg, weights)
    onnx.checker.check_model(model, full_check=True)
    images = np.random.default_rng(1).uniform(0, 1, (2, 3, height, width)).astype(np.float32)
    network = parse_darknet_cfg(cfg)
    produced = {output for node in model.graph.node for output in node.output}
    names = [layer.name for layer in network.layers if layer.name in produced] + ["output"]
    results = run_onnx(model, images, names)
    for image_index, image in enumerate(images):
        expected = forward(sections, parameters, image)
        for layer in network.layers:
            name = "output" if layer is network.output_layer else layer.name
            if name in results:
                got = results[name][image_index].reshape(-1)
                want = expected[layer.index].reshape(-1)
                np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=name)
    return model


def conv(filters: int, size: int, activation: str = "leaky", **options: object) -> Section:
    return (
        "convolutional",
        {"filters": filters, "size": size, "activation": activation, **options},
    )


# ---------------------------------------------------------------------------------------------
# Tiny networks against the numpy Darknet


def test_convolutions_with_batch_norm_groups_padding_and_default_activation(
    tmp_path: Path,
) -> None:
    sections: list[Section] = [
        conv(6, 3, stride=1, pad=1, batch_normalize=1),
        conv(6, 3, "relu", stride=2, padding=1, groups=3),  # padding= without pad=
        conv(4, 1, "linear"),
        ("convolutional", {"filters": 5, "size": 2}),  # Darknet's default: logistic
    ]
    check_against_reference(tmp_path, sections, height=9, width=11)


def test_maxpool_uses_darknet_padding_and_avgpool_is_global(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(4, 3, pad=1),
        ("maxpool", {"size": 2, "stride": 2}),  # default padding 1: 9x11 -> 5x6
        ("maxpool", {"size": 3, "stride": 1}),  # default padding 2: same size
        ("maxpool", {"size": 3, "stride": 2, "padding": 0}),
        ("avgpool", {}),
    ]
    check_against_reference(tmp_path, sections, height=9, width=11)


def test_route_and_shortcuts_between_layers_of_different_sizes(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(8, 3, pad=1),
        conv(4, 1, "linear"),
        ("shortcut", {"from": -2, "activation": "leaky"}),  # 8 channels added to 4
        conv(8, 3, "linear", stride=2, pad=1),
        ("shortcut", {"from": 0}),  # 10x12 added to 5x6: subsampled by 2
        ("route", {"layers": "-1,3"}),
        ("route", {"layers": "1"}),  # absolute index, one input
        conv(6, 1, "relu"),
        ("shortcut", {"from": 2, "beta": 0.5}),  # 4 channels added to 6
        conv(6, 1, "linear"),
        ("shortcut", {"from": -2, "alpha": 2.0, "beta": -1.0, "activation": "logistic"}),
    ]
    check_against_reference(tmp_path, sections, height=10, width=12)


def test_shortcut_from_a_slightly_larger_layer_takes_its_top_left(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(4, 3, pad=1),
        conv(4, 3, "linear", stride=2, pad=1),
        ("shortcut", {"from": 0}),
    ]
    check_against_reference(tmp_path, sections, height=9, width=9)  # 9x9 -> 5x5: stride 1


def test_connected_dropout_softmax_and_cost(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(3, 3, "relu", pad=1),
        ("connected", {"output": 12, "batch_normalize": 1, "activation": "leaky"}),
        ("dropout", {"probability": 0.5}),
        ("connected", {"output": 10, "activation": "linear"}),
        ("softmax", {"groups": 2, "temperature": 0.5}),
        ("cost", {"type": "sse"}),
    ]
    check_against_reference(tmp_path, sections, height=7, width=5)


def test_crop_takes_the_centre_and_rescales_to_minus_one_one(tmp_path: Path) -> None:
    sections: list[Section] = [
        ("crop", {"crop_height": 6, "crop_width": 5, "flip": 1, "angle": 7, "exposure": 1.5}),
        conv(3, 3, "linear", pad=1),
        ("crop", {"crop_height": 4, "crop_width": 4, "noadjust": 1}),
        ("softmax", {}),
    ]
    check_against_reference(tmp_path, sections, height=9, width=8)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation(tmp_path: Path, activation: str) -> None:
    sections: list[Section] = [
        conv(4, 3, activation, pad=1, batch_normalize=1),
        conv(3, 1, activation),
    ]
    check_against_reference(tmp_path, sections, height=5, width=6)


def test_batch_norm_adds_the_epsilon_after_the_square_root(tmp_path: Path) -> None:
    sections: list[Section] = [conv(2, 1, "linear", batch_normalize=1)]
    cfg, weights, parameters = build(tmp_path, sections, height=2, width=2)
    parameters.arrays[0]["rolling_variance"][:] = [1e-10, 0.0]  # sqrt + 1e-6 ≠ sqrt(var + 1e-6)
    write_weights(weights, sections, parameters)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 2, 2)).astype(np.float32)
    got = run_onnx(convert_darknet(cfg, weights), x, ["output"])["output"][0]
    want = forward(sections, parameters, x[0])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.abs(got).max() > 1e4  # sqrt(var + 1e-6) would give about 1e3 times less


def test_old_headers_and_transposed_connected_weights(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(2, 3, pad=1),
        ("connected", {"output": 7, "activation": "linear"}),
    ]
    cfg, weights, parameters = build(tmp_path, sections, height=4, width=3)
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 4, 3)).astype(np.float32)
    want = forward(sections, parameters, x[0])[-1]
    for header in (OLD_HEADER, CURRENT_HEADER, TRANSPOSED_HEADER):
        write_weights(weights, sections, parameters, header=header)
        got = run_onnx(convert_darknet(cfg, weights), x, ["output"])["output"][0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=str(header))


# ---------------------------------------------------------------------------------------------
# The ONNX model's structure and names


def test_model_names_layers_by_index_and_has_input_and_output(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(4, 3, pad=1, batch_normalize=1),
        ("maxpool", {"size": 2, "stride": 2}),
        ("dropout", {}),
        ("connected", {"output": 10, "activation": "linear"}),
        ("softmax", {}),
        ("cost", {}),
    ]
    cfg, weights, _ = build(tmp_path, sections, height=8, width=8)
    model = convert_darknet(cfg, weights)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert model.opset_import[0].version == 13
    assert [i.name for i in graph.input] == ["input"]
    input_dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in input_dims] == ["N", 3, 8, 8]
    assert [o.name for o in graph.output] == ["output"]
    nodes = {node.name: node for node in graph.node}
    assert nodes["layer_000_convolutional"].op_type == "Conv"
    assert nodes["layer_000_convolutional/batch_norm"].op_type == "BatchNormalization"
    leaky = nodes["layer_000_convolutional/leaky"]
    assert leaky.op_type == "LeakyRelu" and leaky.attribute[0].f == pytest.approx(0.1)
    assert leaky.output[0] == "layer_000_convolutional"
    assert nodes["layer_001_maxpool"].op_type == "MaxPool"
    assert nodes["layer_003_connected"].op_type == "Gemm"
    assert nodes["layer_004_softmax"].output[0] == "output"
    assert not any("dropout" in name or "cost" in name for name in nodes)
    assert not is_random_weights(model)


def test_inferred_shapes_match_darknet_shapes(tmp_path: Path) -> None:
    sections: list[Section] = [
        ("crop", {"crop_height": 9, "crop_width": 10}),
        conv(8, 3, pad=1),
        ("maxpool", {"size": 2, "stride": 2}),
        conv(8, 3, "linear", stride=2, pad=1),
        ("shortcut", {"from": -2}),
        ("route", {"layers": "-1,-2"}),
        ("avgpool", {}),
        conv(10, 1, "linear"),
        ("softmax", {}),
    ]
    cfg, weights, _ = build(tmp_path, sections, height=11, width=12)
    model = shape_inference.infer_shapes(convert_darknet(cfg, weights), strict_mode=True)
    shapes = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*model.graph.value_info, *model.graph.output]
    }
    for layer in parse_darknet_cfg(cfg).layers[:-1]:
        out = layer.output_shape
        assert shapes[layer.name] == ["N", out.channels, out.height, out.width], layer.name
    assert shapes["output"] == ["N", 10]


# ---------------------------------------------------------------------------------------------
# Random weights


def test_random_weights_are_deterministic_marked_and_sized(tmp_path: Path) -> None:
    sections: list[Section] = [
        conv(8, 3, pad=1, batch_normalize=1),
        ("avgpool", {}),
        conv(20, 1, "linear"),
    ]
    sections.append(("softmax", {}))
    cfg = tmp_path / "net.cfg"
    cfg.write_text(cfg_text(sections, height=12, width=12))
    first, second, other = tmp_path / "a.weights", tmp_path / "b.weights", tmp_path / "c.weights"
    write_random_weights(cfg, first, seed=7)
    write_random_weights(cfg, second, seed=7)
    write_random_weights(cfg, other, seed=8)
    floats = (8 + 3 * 8 + 8 * 27) + (20 + 20 * 8)
    assert first.stat().st_size == 20 + 4 * floats
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()
    header = np.fromfile(first, "<i4", count=3)
    assert header.tolist() == [0, 2, RANDOM_REVISION]
    assert is_random_weights(convert_darknet(cfg, first))


@pytest.mark.parametrize("name", ["tiny", "squeezenet", "mobilenet"])
def test_random_weights_give_a_finite_softmax_with_a_spread(tmp_path: Path, name: str) -> None:
    cfg = paper_cfg(name)
    weights = tmp_path / f"{name}.weights"
    write_random_weights(cfg, weights)
    shape = parse_darknet_cfg(cfg).input_shape
    rows, columns = np.mgrid[0 : shape.height, 0 : shape.width]
    x = np.stack([0.5 + 0.4 * np.sin(rows / 9 + c) * np.cos(columns / 13 - c) for c in range(3)])
    probabilities = run_onnx(convert_darknet(cfg, weights), x[None].astype(np.float32), ["output"])
    top = np.sort(probabilities["output"][0])[::-1]
    assert np.isfinite(top).all()
    assert top[0] > 5 / top.size and top[4] > 0.1 / top.size  # neither uniform nor one-hot


# ---------------------------------------------------------------------------------------------
# Errors a user can act on


def write_cfg(tmp_path: Path, body: str) -> Path:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nheight=8\nwidth=8\nchannels=3\n\n" + body)
    return cfg


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[local]\nfilters=2\n",
            r"bad.cfg:6: \[local\] layers of type \[local\] are not supported",
        ),
        (
            "[convolutional]\nfilters=2\ndilation=2\n",
            r"bad.cfg:8: \[convolutional\] option 'dilation' is not supported",
        ),
        ("[convolutional]\nactivation=mish\n", r":7: \[convolutional\] activation=mish is not"),
        ("[convolutional]\nbinary=1\n", r":7: \[convolutional\] binary=1 is not supported"),
        ("[convolutional]\ndontloadscales=1\n", r"dontloadscales=1 is not supported"),
        ("[convolutional]\nsize=three\n", r":7: \[convolutional\] size=three is not an integer"),
        ("[convolutional]\nsize=3\nsize=5\n", r":8: \[convolutional\] option 'size' is given"),
        ("[convolutional]\nfilters=4\ngroups=2\n", r"groups=2 must divide both the 3 input"),
        ("[convolutional]\nsize 3\n", r":7: \[convolutional\] expected key=value"),
        ("[route]\nlayers=1\n", r"layers=1: layer 1 is not an earlier layer"),
        (
            "[convolutional]\n\n[maxpool]\nsize=2\nstride=2\n\n[route]\nlayers=0\n\n"
            "[shortcut]\nfrom=1\n",
            r"upsampling shortcuts are not supported",
        ),
        ("[softmax]\n\n[convolutional]\n", r"must output an image, not a softmax"),
        ("[softmax]\ntree=data/9k.tree\n", r"option 'tree' is not supported"),
    ],
)
def test_cfg_errors_name_the_file_line_and_problem(
    tmp_path: Path, body: str, expected: str
) -> None:
    cfg = write_cfg(tmp_path, body)
    with pytest.raises(ConversionError, match=expected):
        parse_darknet_cfg(cfg)


def test_cfg_must_start_with_net_and_exist(tmp_path: Path) -> None:
    cfg = tmp_path / "nonet.cfg"
    cfg.write_text("[convolutional]\nfilters=2\n")
    with pytest.raises(ConversionError, match=r"nonet.cfg: the first section must be \[net\]"):
        parse_darknet_cfg(cfg)
    cfg.write_text("filters=2\n[net]\n")
    with pytest.raises(ConversionError, match=r"nonet.cfg:1: option 'filters=2' comes before"):
        parse_darknet_cfg(cfg)
    with pytest.raises(ConversionError, match=r"missing.cfg: no such Darknet cfg file"):
        parse_darknet_cfg(tmp_path / "missing.cfg")


def test_weights_file_too_short_or_too_long_names_the_count(tmp_path: Path) -> None:
    sections: list[Section] = [conv(4, 3, pad=1, batch_normalize=1), ("connected", {"output": 5})]
    cfg, weights, _ = build(tmp_path, sections, height=4, width=4)
    data = weights.read_bytes()
    weights.write_bytes(data[:-28])
    with pytest.raises(ConversionError, match=r"is 7 floats short .* ends in the weights of "):
        convert_darknet(cfg, weights)
    weights.write_bytes(data[: 20 + 4 * 6])  # 6 floats: 4 biases, then 2 of the 4 scales
    with pytest.raises(ConversionError, match=r"ends in the scales of layer_000_convolutional"):
        convert_darknet(cfg, weights)
    weights.write_bytes(data + bytes(20))
    with pytest.raises(ConversionError, match=r"net.weights is 5 floats too long for .*net.cfg"):
        convert_darknet(cfg, weights)
    weights.write_bytes(data + bytes(2))
    with pytest.raises(ConversionError, match=r"not a whole number of float32"):
        convert_darknet(cfg, weights)


def test_weights_file_missing_or_without_a_header(tmp_path: Path) -> None:
    cfg, weights, _ = build(tmp_path, [conv(2, 1)], height=2, width=2)
    with pytest.raises(ConversionError, match=r"nothing.weights: no such Darknet weights file"):
        convert_darknet(cfg, tmp_path / "nothing.weights")
    weights.write_bytes(bytes(10))
    with pytest.raises(ConversionError, match=r"is 10 bytes long, too short for a Darknet"):
        convert_darknet(cfg, weights)
    weights.write_bytes(cfg.read_bytes())
    with pytest.raises(ConversionError, match=r"does not start with a Darknet weights header"):
        convert_darknet(cfg, weights)


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_converts_and_the_model_reads_as_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_classifier(tmp_path, [conv(8, 3, pad=1, batch_normalize=1)])
    weights, out = tmp_path / "random.weights", tmp_path / "tiny.onnx"
    write_random_weights(cfg, weights)
    assert main(["darknet", str(cfg), str(weights), "-o", str(out)]) == 0
    assert "2 conv/fc layers, opset 13" in " ".join(capsys.readouterr().out.split())
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert main(["weights", str(out), "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["random_weights"] is True
    assert [layer["name"] for layer in document["layers"]] == [
        "layer_000_convolutional",
        "layer_001_convolutional",
    ]


def test_cli_reports_a_short_weights_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights, _ = build(tmp_path, [conv(4, 3, pad=1)], height=4, width=4)
    weights.write_bytes(weights.read_bytes()[:-8])
    out = tmp_path / "net.onnx"
    status = main(["darknet", str(cfg), str(weights), "-o", str(out)])
    captured = capsys.readouterr()
    text = " ".join(captured.err.split())
    assert status == 2
    assert text.startswith("error: ") and "net.weights is 2 floats short for" in text
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# The real Darknet


def paper_cfg(name: str) -> Path:
    cfg = PAPER_CFG_DIR / f"{name}.cfg"
    if not cfg.is_file():
        pytest.skip(f"{cfg} not found: put the paper's cfgs there or set ONNX_PRUNE_PAPER_CFG_DIR")
    return cfg


def require_darknet() -> None:
    reason = darknet_binary.missing_reason()
    if reason:
        pytest.skip(reason)


def darknet_comparison(cfg: Path, tmp_path: Path, *, seed: int = 0) -> float:
    """Random weights for ``cfg``, run by Darknet and by onnxruntime: the top-5 must agree."""
    require_darknet()
    shape = parse_darknet_cfg(cfg).input_shape
    image = tmp_path / "photo.png"
    pixels = darknet_binary.write_photo(image, shape.height, shape.width)
    weights = tmp_path / "random.weights"
    try:
        write_random_weights(cfg, weights, seed=seed)
        model = convert_darknet(cfg, weights)
        onnx.checker.check_model(model)
        found = darknet_binary.predict(cfg, weights, image)
    finally:
        weights.unlink(missing_ok=True)  # hundreds of MB for VGG-16 and AlexNet
    probabilities = run_onnx(model, darknet_binary.network_input(pixels), ["output"])["output"]
    return darknet_binary.compare_top5(found, probabilities[0], darknet_binary.labels())


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_CFGS)
def test_paper_cfg_matches_darknet(tmp_path: Path, name: str) -> None:
    darknet_comparison(paper_cfg(name), tmp_path)


def debian_cfg(name: str) -> Path:
    cfg = darknet_binary.DARKNET_DATA / "cfg" / f"{name}.cfg"
    if not cfg.is_file():
        pytest.skip(f"{cfg} not found: install Debian's darknet package")
    return cfg


def same_network(first: Path, second: Path) -> bool:
    """True when two cfgs have the same layers up to the output (cfg line numbers aside)."""
    one, other = parse_darknet_cfg(first), parse_darknet_cfg(second)
    layers = [
        [replace(layer, line=0) for layer in net.layers[: net.output_layer.index + 1]]
        for net in (one, other)
    ]
    return one.input_shape == other.input_shape and layers[0] == layers[1]


@pytest.mark.parametrize(
    ("debian", "paper"), [("alexnet", "alexnet"), ("tiny", "tiny"), ("vgg-16", "vgg16")]
)
def test_debian_cfgs_describe_the_paper_networks(debian: str, paper: str) -> None:
    assert same_network(debian_cfg(debian), paper_cfg(paper))
    assert not same_network(debian_cfg("resnet50"), paper_cfg("resnet50"))  # avgpool moved


@pytest.mark.slow
@pytest.mark.parametrize("name", DEBIAN_CFGS)
def test_debian_cfg_matches_darknet(tmp_path: Path, name: str) -> None:
    require_darknet()
    cfg = debian_cfg(name)
    twin = PAPER_CFG_DIR / f"{PAPER_TWINS.get(name, name)}.cfg"
    if twin.is_file() and same_network(cfg, twin):
        pytest.skip(f"the same network as {twin}, which is compared with darknet")
    darknet_comparison(cfg, tmp_path)


def tiny_classifier(tmp_path: Path, body: list[Section], *, size: int = 12) -> Path:
    sections: list[Section] = [*body, conv(20, 1, "linear"), ("avgpool", {}), ("softmax", {})]
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(cfg_text(sections, height=size, width=size))
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_matches_darknet(tmp_path: Path, activation: str) -> None:
    body: list[Section] = [
        conv(8, 3, activation, pad=1, batch_normalize=1),
        conv(8, 3, activation, pad=1),
    ]
    darknet_comparison(tiny_classifier(tmp_path, body), tmp_path)


@pytest.mark.slow
def test_layer_options_the_paper_cfgs_do_not_use_match_darknet(tmp_path: Path) -> None:
    body: list[Section] = [
        ("crop", {"crop_height": 11, "crop_width": 11, "noadjust": 1}),
        conv(8, 3, stride=2, padding=1, groups=1),
        ("maxpool", {"size": 3, "stride": 2, "padding": 1}),
        conv(6, 1, "linear"),
        ("shortcut", {"from": -3, "alpha": 1.0, "beta": 0.5}),
        ("connected", {"output": 48, "batch_normalize": 1, "activation": "relu"}),
        ("connected", {"output": 40, "activation": "linear"}),
        ("softmax", {"groups": 2, "temperature": 2.0}),
    ]
    cfg = tmp_path / "options.cfg"
    cfg.write_text(cfg_text(body, height=13, width=13))
    darknet_comparison(cfg, tmp_path)


@pytest.mark.slow
def test_old_weights_headers_match_darknet(tmp_path: Path) -> None:
    require_darknet()
    sections: list[Section] = [
        conv(4, 3, pad=1),
        ("connected", {"output": 12, "activation": "linear"}),
    ]
    sections.append(("softmax", {}))
    cfg, weights, parameters = build(tmp_path, sections, height=6, width=5, seed=5)
    image = tmp_path / "photo.png"
    x = darknet_binary.network_input(darknet_binary.write_photo(image, 6, 5))
    for header in (OLD_HEADER, TRANSPOSED_HEADER):
        write_weights(weights, sections, parameters, header=header)
        found = darknet_binary.predict(cfg, weights, image)
        probabilities = run_onnx(convert_darknet(cfg, weights), x, ["output"])["output"][0]
        darknet_binary.compare_top5(found, probabilities, darknet_binary.labels())
