"""Tables keep their numbers at 80 and 120 columns; long names lose their middle, not their end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from rich.table import Table

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.feeds import SampleSource
from onnx_prune.report import percent, plain_table
from onnx_prune.report.analysis import format_analysis, format_layers
from onnx_prune.report.fit import keep_numbers, shorten_middle, shorten_names
from tests.builders import FLOAT, make_model, save
from tests.golden_util import render

YOLO_NAMES = (
    "/model.22/cv2.2/cv2.2.0/conv/Conv",
    "/model.22/cv2.2/cv2.2.1/conv/Conv",
    "/model.22/cv3.2/cv3.2.0/conv/Conv",
)


def yolo_named() -> onnx.ModelProto:
    """Three 3x3 convs with ReLU, named as YOLOv8's head names its layers."""
    rng = np.random.default_rng(9)
    nodes, initializers, data = [], [], "x"
    for index, name in enumerate(YOLO_NAMES):
        weight = rng.normal(0, 0.5, (4, 3 if index == 0 else 4, 3, 3)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(
            helper.make_node("Conv", [data, f"w{index}"], [f"c{index}"], name=name, pads=[1] * 4)
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"{name}_relu"))
        data = f"r{index}"
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info(data, FLOAT, ["N", 4, 8, 8])],
        initializers,
    )


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    folder = tmp_path_factory.mktemp("tables")
    np.save(
        folder / "x.npy", np.random.default_rng(1).normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    )
    return analyze_model(save(yolo_named(), folder), SampleSource(tensors=folder / "x.npy"))


def _expected_cells(analysis: Analysis) -> list[list[str]]:
    rows = []
    for layer in analysis.layers:
        ifm = analysis.activations.tensors[layer.ifm]
        ofm = analysis.activations.tensors[layer.ofm]
        rows.append(
            [
                *[percent(count, ifm.elements) for count in ifm.zeros],
                percent(ifm.zero_channels[0], ifm.channels),
                percent(ofm.zeros[0], ofm.elements),
            ]
        )
    return rows


@pytest.mark.parametrize("width", [80, 120])
def test_the_layer_table_keeps_every_number_and_tells_the_layers_apart(
    analysis: Analysis, width: int
) -> None:
    text = render(format_layers(analysis), width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    cells: dict[str, list[str]] = {}  # a table split in parts repeats the name in each
    for line in lines:
        if line.startswith(" /mode"):
            name, *numbers = line.split()
            cells.setdefault(name, []).extend(numbers)
    assert len(cells) == 3  # three different names shown
    shown = {name: numbers[-8:] for name, numbers in cells.items()}
    assert list(shown.values()) == _expected_cells(analysis)
    if width == 120:
        assert list(cells) == list(YOLO_NAMES)
        assert "left out" not in text
    else:
        assert all(name.endswith(("0/conv/Conv", "1/conv/Conv")) for name in cells)
        assert "left out at 80 columns: op, IFM (a wider terminal or --json shows them)" in text


@pytest.mark.parametrize("width", [80, 120])
def test_no_number_of_the_whole_report_is_cut(analysis: Analysis, width: int) -> None:
    text = render(format_analysis(analysis), width)
    assert all(len(line) <= width for line in text.splitlines())
    for word in text.split():
        if "…" in word:  # only names are shortened, never a figure
            assert any(character.isalpha() for character in word), word


def test_shorten_middle_keeps_the_end() -> None:
    assert shorten_middle("abcdefghij", 10) == "abcdefghij"
    assert shorten_middle("/model.22/cv2.2/cv2.2.0/conv/Conv", 22) == "/model.….2.0/conv/Conv"
    assert len(shorten_middle("x" * 100, 16)) == 16


def test_names_that_would_look_alike_keep_the_part_that_differs() -> None:
    short = shorten_names(list(YOLO_NAMES), 16)
    assert len(set(short)) == 3
    assert all(len(name) <= 16 for name in short)


def test_tables_too_wide_for_the_terminal_are_split_not_cut() -> None:
    table = Table(title="wide")
    table.add_column("name")
    for index in range(12):
        table.add_column(f"column {index}", justify="right")
    table.add_row("row", *[f"{1000.0 * index + 0.25:,.2f}" for index in range(12)])
    text = render(keep_numbers(table), 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    for index in range(12):
        assert f"{1000.0 * index + 0.25:,.2f}" in text
    assert "…" not in text
    assert text.count("name") >= 2  # the name column repeated in every part


def test_a_name_column_of_several_words_is_not_squeezed_into_the_numbers() -> None:
    """Measured by its longest word, such a column let a table 'fit' that rendering then cut."""
    table = plain_table("labels")
    table.add_column("assignment", no_wrap=True)
    headers = ("split", "samples", "saved %", "pred. saved %", "agreement", "pred. agreement")
    for header in headers:
        table.add_column(header, justify="right", no_wrap=True)
    for label in ("per-layer map", "best uniform ε=0.5"):
        table.add_row(label, "calibration", "3", "6.98", "6.97", "100.00%", "100.00%")
    text = render(keep_numbers(table), 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert text.count("100.00%") == 4 and text.count("best uniform ε=0.5") >= 2, text
    for header in headers:
        assert header in text, text
