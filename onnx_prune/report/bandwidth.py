"""The bandwidth report: per-layer load, totals with and without pruning, the split by kind."""

from __future__ import annotations

from collections import Counter

from rich.console import Group, RenderableType
from rich.text import Text

from onnx_prune.bandwidth import GRANULARITIES, BandwidthReport, LayerLoad, LoadTotal
from onnx_prune.report import eps_label, percent, plain_table
from onnx_prune.report.fit import keep_numbers

_KIND_LABELS = {
    "depthwise": "depthwise",
    "pointwise": "pointwise",
    "conv": "other conv",
    "fc": "FC",
}


def format_bandwidth(report: BandwidthReport, *, eps: float | None = None) -> RenderableType:
    """Every bandwidth table; per-layer savings are shown at ``eps`` (None: the first ε)."""
    index = _eps_index(report, eps)
    parts: list[RenderableType] = [
        format_layer_loads(report, index=index),
        format_load_by_kind(report),
        format_pruned_load(report),
        format_ifm_saved(report),
    ]
    missing = format_not_analysed(report)
    if missing.plain:
        parts.append(missing)
    return Group(*parts)


def _eps_index(report: BandwidthReport, eps: float | None) -> int:
    if eps is None:
        return 0
    if eps not in report.eps:
        measured = ", ".join(f"{value:g}" for value in report.eps)
        raise ValueError(f"ε={eps:g} was not measured: choose one of {measured}")
    return report.eps.index(eps)


def _accounting(report: BandwidthReport) -> str:
    widths = f"{report.bits}-bit values" if report.bits else "each tensor's dtype"
    return f"per sample, at {widths}; kB = 1000 bytes"


def format_layer_loads(report: BandwidthReport, *, index: int = 0) -> RenderableType:
    """Per compute layer: kind, MACs, bytes moved, IFM share and IFM saved at one ε."""
    label = eps_label(report.eps[index])
    table = plain_table(
        f"Load per compute layer ({_accounting(report)})\n"
        f"IFM %: IFM share of the load; ch/tile/el %: IFM saved at {label} "
        f"(tile {report.tile[0]}×{report.tile[1]})",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for header in ("MACs", "W kB", "IFM kB", "OFM kB", "IFM %", "ch %", "tile %", "el %"):
        table.add_column(header, justify="right", no_wrap=True)
    for layer in report.layers:
        table.add_row(*_layer_row(layer, index))
    return keep_numbers(table, names=(0,), optional=(1, 2))


def _layer_row(layer: LayerLoad, index: int) -> list[str]:
    share = layer.ifm_share
    return [
        layer.name,
        layer.kind,
        _count(layer.macs),
        _kilobytes(layer.bytes.weights),
        _kilobytes(layer.bytes.ifm),
        _kilobytes(layer.bytes.ofm),
        f"{100 * share:.1f}" if share is not None else "-",
        *[_saved(layer.saved.of(g)[index], layer.bytes.ifm) for g in GRANULARITIES],
    ]


def _saved(saved: float, whole: int) -> str:
    return f"{100 * saved / whole:.1f}" if whole else "-"


def format_load_by_kind(report: BandwidthReport) -> RenderableType:
    """Where the bytes go, by layer kind: the measured form of the paper's depthwise claim."""
    table = plain_table(
        "Load by layer kind (per sample): IFM share of each kind's load",
    )
    table.add_column("kind")
    for header in ("layers", "MACs", "W kB", "IFM kB", "OFM kB", "W %", "IFM %", "OFM %"):
        table.add_column(header, justify="right", no_wrap=True)
    for kind, total in report.by_kind.items():
        if total.layers:
            table.add_row(_KIND_LABELS[kind], *_kind_cells(total))
    table.add_row("all", *_kind_cells(report.total), style="bold")
    return keep_numbers(table, names=(), wrap=(0,))


def _kind_cells(total: LoadTotal) -> list[str]:
    return [
        str(total.layers),
        _count(total.macs),
        _kilobytes(total.weights),
        _kilobytes(total.ifm),
        _kilobytes(total.ofm),
        percent(total.weights, total.load),
        percent(total.ifm, total.load),
        percent(total.ofm, total.load),
    ]


def format_pruned_load(report: BandwidthReport) -> RenderableType:
    """Network load without and with dynamic pruning, per ε and granularity."""
    total = report.total
    widths = f"{report.bits}-bit values" if report.bits else "tensor dtypes"
    table = plain_table(
        f"Network load with dynamic IFM pruning, per sample ({widths})\n"
        f"without pruning {_kilobytes(total.load)} kB; with pruning kB, saved % of that",
    )
    table.add_column("ε", justify="right")
    for granularity in GRANULARITIES:
        table.add_column(f"{granularity} kB", justify="right", no_wrap=True)
        table.add_column(f"{granularity} %", justify="right", no_wrap=True)
    columns = [(total.pruned_load(g), total.saved_share(g)) for g in GRANULARITIES]
    for index, value in enumerate(report.eps):
        cells = [
            cell
            for pruned, share in columns
            for cell in (_kilobytes(pruned[index]), f"{100 * share[index]:.2f}")
        ]
        table.add_row(f"{value:g}", *cells)
    return keep_numbers(table, names=())


def format_ifm_saved(report: BandwidthReport) -> RenderableType:
    """Saved shares of the IFM bytes (the paper's Table 2/3 figure) and of the MACs, per ε."""
    total = report.total
    table = plain_table(
        "Saved by dynamic pruning (%)",
    )
    table.add_column("share of")
    for value in report.eps:
        table.add_column(eps_label(value), justify="right")
    for granularity in GRANULARITIES:
        shares = total.ifm_saved_share(granularity)
        table.add_row(f"IFM bytes, {granularity}", *[f"{100 * s:.2f}" for s in shares])
    table.add_row("MACs, channel", *[f"{100 * s:.2f}" for s in total.macs_skipped_share()])
    return keep_numbers(table, names=(), wrap=(0,))


def format_not_analysed(report: BandwidthReport) -> Text:
    """The ops left out of the figures, by op type, and assumed widths (empty when none)."""
    lines: list[str] = []
    if report.not_analysed:
        counts = Counter(item.op_type for item in report.not_analysed)
        listed = ", ".join(f"{count} {op_type}" for op_type, count in counts.items())
        lines.append(f"Not analysed (loads not in these figures): {listed}")
    if report.assumed_widths:
        lines.append(
            f"{len(report.assumed_widths)} feature maps of unknown dtype counted as 32-bit values"
        )
    return Text("\n".join(lines), style="yellow")


def _kilobytes(value: float | None) -> str:
    return f"{value / 1000:,.1f}" if value is not None else "-"


def _count(value: int | None) -> str:
    """A large count in k/M/G (SI), or ``-`` when unknown."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return str(value)
