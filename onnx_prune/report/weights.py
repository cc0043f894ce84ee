"""The ``weights`` report: per-layer weight sparsity, totals by op type, what was not analysed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table

from onnx_prune.report import eps_label, format_random_banner, format_shape, percent, plain_table
from onnx_prune.weights import SparsityTotal, TensorSparsity, WeightReport


def format_weights(report: WeightReport) -> RenderableType:
    """The per-layer weight table, the totals by op type, and what could not be analysed."""
    parts: list[RenderableType] = []
    if report.random_weights:
        parts.append(format_random_banner(True))
    parts.append(_weights_table(report))
    parts.append(_totals_table(report))
    if report.unresolved:
        parts.append(_unresolved_table(report))
    return Group(*parts)


def _weights_table(report: WeightReport) -> Table:
    table = plain_table(
        f"Weight sparsity: {report.model}\nzero %: weights with |w| <= ε",
    )
    table.add_column("layer", no_wrap=True, overflow="ellipsis", max_width=24)
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
    return table


def _zero_cells(zeros: Sequence[int], elements: int) -> list[str]:
    return [percent(count, elements) for count in zeros]


def _filters_cell(tensor: TensorSparsity) -> str:
    if tensor.filters is None:
        return "-"
    return f"{tensor.zero_filters}/{tensor.filters}"


def _totals_table(report: WeightReport) -> Table:
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
    return table


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
        table.add_row(item.name, item.op_type, item.reason)
    return table
