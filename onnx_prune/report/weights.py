"""The ``weights`` report: per-layer weight sparsity, totals by op type, what was not analysed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from onnx_prune.layers import NotAnalysed
from onnx_prune.report import eps_label, format_random_banner, format_shape, percent, plain_table
from onnx_prune.report.fit import keep_numbers
from onnx_prune.weights import Coverage, SparsityTotal, TensorSparsity, WeightReport


def format_weights(report: WeightReport) -> RenderableType:
    """The per-layer weight table, the totals by op type, and what could not be analysed."""
    parts: list[RenderableType] = []
    if report.random_weights:
        parts.append(format_random_banner(True))
    parts.append(_weights_table(report))
    parts.append(_totals_table(report))
    if report.unresolved:
        parts.append(_unresolved_table(report))
    biases = format_unresolved_biases(report)
    if biases.plain:
        parts.append(biases)
    coverage = format_coverage(report.coverage)
    if coverage.plain:
        parts.append(coverage)
    return Group(*parts)


def format_coverage(coverage: Coverage) -> Text:
    """One warning line when some compute-like ops were not analysed (empty when all were)."""
    if coverage.complete:
        return Text("")
    return Text(
        f"PARTIAL: {coverage.layers} of {coverage.of} compute-like ops analysed; the others are "
        "listed as not analysed and are in no figure",
        style="bold yellow",
    )


def format_unresolved_biases(report: WeightReport) -> Text:
    """Layers whose bias could not be read (their weights are counted), one line each."""
    lines = [
        f"bias of {layer.name} not read (its weight is counted): {layer.bias_unresolved}"
        for layer in report.layers
        if layer.bias_unresolved
    ]
    return Text("\n".join(lines), style="yellow")


def describe_not_analysed(item: NotAnalysed) -> str:
    """The reason an op is not analysed, with its share of the model's weights when known."""
    if item.weight_share is None:
        return item.reason
    return f"{item.reason} ({item.weight_share:.1%} of the model's weight values)"


def _weights_table(report: WeightReport) -> RenderableType:
    table = plain_table(
        f"Weight sparsity: {report.model}\nzero %: weights with |w| <= ε",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("weight", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("elements", justify="right")
    for eps in report.eps:
        table.add_column(f"zero % {eps_label(eps)}", justify="right")
    table.add_column("zero filters", justify="right")
    for layer in report.layers:
        table.add_row(
            layer.name,
            layer.op_type,
            format_shape(layer.weight.shape),
            layer.weight.dtype,
            f"{layer.weight.elements:,}",
            *_zero_cells(layer.weight.zeros, layer.weight.elements),
            _filters_cell(layer.weight),
        )
    return keep_numbers(table, names=(0,), optional=(1, 2, 3))


def _zero_cells(zeros: Sequence[int], elements: int) -> list[str]:
    return [percent(count, elements) for count in zeros]


def _filters_cell(tensor: TensorSparsity) -> str:
    if tensor.filters is None:
        return "-"
    return f"{tensor.zero_filters}/{tensor.filters}"


def _totals_table(report: WeightReport) -> RenderableType:
    table = Table(title="Totals (weights, biases excluded)", title_justify="left")
    table.add_column("op type")
    table.add_column("layers", justify="right")
    table.add_column("elements", justify="right")
    for eps in report.eps:
        table.add_column(f"zero % {eps_label(eps)}", justify="right")
    table.add_column("zero filters", justify="right")
    for op_type in report.op_types():
        table.add_row(op_type, *_total_cells(report.total(op_type)))
    table.add_row("all", *_total_cells(report.total()), style="bold")
    return keep_numbers(table, names=(), wrap=(0,))


def _total_cells(total: SparsityTotal) -> list[str]:
    return [
        str(total.layers),
        f"{total.elements:,}",
        *_zero_cells(total.zeros, total.elements),
        f"{total.zero_filters}/{total.filters}",
    ]


def _unresolved_table(report: WeightReport) -> Table:
    table = Table(title="Not analysed", title_justify="left")
    table.add_column("layer", overflow="fold")
    table.add_column("op")
    table.add_column("reason", overflow="fold")
    for item in report.unresolved:
        table.add_row(item.name, item.op_type, describe_not_analysed(item))
    return table
