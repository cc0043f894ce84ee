"""The ``analyze`` report: feature maps per layer, the network summary, per sample, the paper."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from onnx_prune.analysis import Analysis
from onnx_prune.paper.networks import PAPER_MOBILENET_FIG3, PAPER_MOBILENET_SAVED
from onnx_prune.report import eps_label, format_random_banner, format_shape, percent, plain_table
from onnx_prune.report.bandwidth import format_bandwidth
from onnx_prune.report.fit import keep_numbers
from onnx_prune.report.weights import format_coverage, format_unresolved_biases
from onnx_prune.summary import MapSummary

MAX_SAMPLE_ROWS = 10


def format_analysis(analysis: Analysis, *, paper: bool = False) -> RenderableType:
    """Every table of ``onnx-prune analyze``; the paper's MobileNet v2 figures with ``paper``."""
    parts: list[RenderableType] = [format_random_banner(analysis.random_weights)]
    parts.append(format_layers(analysis))
    parts.append(format_summary(analysis))
    parts.append(format_samples(analysis))
    parts.append(format_bandwidth(analysis.bandwidth))
    parts.append(format_unresolved_biases(analysis.weights))
    parts.append(format_coverage(analysis.weights.coverage))
    if paper:
        parts.append(format_paper_comparison(analysis))
    return Group(*[part for part in parts if not (isinstance(part, Text) and not part.plain)])


def format_layers(analysis: Analysis) -> RenderableType:
    """Per compute layer: the IFM's zero share at each ε, zero channels, and the OFM."""
    eps = analysis.activations.eps
    stats = analysis.activations.tensors
    table = plain_table(
        f"Feature maps per compute layer: {analysis.model}\n"
        f"IFM zero % at each ε; zero channels (ch) % and OFM zero % at {eps_label(eps[0])}",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("IFM", no_wrap=True)
    for value in eps:
        table.add_column(eps_label(value), justify="right")
    table.add_column("ch %", justify="right")
    table.add_column("OFM %", justify="right")
    for layer in analysis.layers:
        ifm, ofm = stats[layer.ifm], stats[layer.ofm]
        table.add_row(
            layer.name,
            layer.op_type,
            format_shape(ifm.shape),
            *[percent(count, ifm.elements) for count in ifm.zeros],
            percent(ifm.zero_channels[0], ifm.channels),
            percent(ofm.zeros[0], ofm.elements),
        )
    return keep_numbers(table, names=(0,), optional=(1, 2))


def format_summary(analysis: Analysis) -> RenderableType:
    """Paper mean, weighted and channel-saved figures for IFMs and OFMs, per ε."""
    eps = analysis.activations.eps
    layers = len(analysis.layers)
    title = (
        f"Summary over {analysis.activations.samples} samples "
        f"({_source(analysis)}), {layers} compute layers"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("figure (%)")
    for value in eps:
        table.add_column(eps_label(value), justify="right")
    for name, summary in (("IFM", analysis.summary.ifm), ("OFM", analysis.summary.ofm)):
        for label, values in _summary_rows(name, summary):
            table.add_row(label, *[f"{100 * v:.2f}" for v in values])
        table.add_row(
            f"{name} layers with a zero channel",
            *[f"{count}/{layers}" for count in summary.layers_with_zero_channels],
        )
    return keep_numbers(table, names=(), wrap=(0,))


def _summary_rows(name: str, summary: MapSummary) -> list[tuple[str, Sequence[float]]]:
    return [
        (f"{name} zero, paper mean over layers", summary.paper_mean),
        (f"{name} zero, weighted by size", summary.weighted),
        (f"{name} values in zero channels", summary.channel_saved_share),
    ]


def _source(analysis: Analysis) -> str:
    skipped = len(analysis.skipped_inputs)
    source = f"preset {analysis.preset}" if analysis.preset else "tensors"
    source += f", batch {analysis.batch_size}"
    if analysis.padded_samples:
        source += f" (last batch padded with {analysis.padded_samples} copies, not counted)"
    return source + (f", {skipped} unreadable skipped" if skipped else "")


def format_samples(analysis: Analysis) -> RenderableType:
    """Per sample, the share of OFM values in zero channels (the paper's Table 2, per image)."""
    eps = analysis.activations.eps
    samples = analysis.summary.per_sample
    table = Table(title="Per sample: OFM values in zero channels (%)", title_justify="left")
    table.add_column("sample", overflow="fold")
    for value in eps:
        table.add_column(eps_label(value), justify="right")
    for share in samples[:MAX_SAMPLE_ROWS]:
        table.add_row(Path(share.name).name, *[f"{100 * v:.2f}" for v in share.ofm])
    if len(samples) > MAX_SAMPLE_ROWS:
        table.add_row(f"... {len(samples) - MAX_SAMPLE_ROWS} more", *[""] * len(eps))
    if samples:
        columns = list(zip(*(share.ofm for share in samples), strict=True))
        table.add_row("min", *[f"{100 * min(c):.2f}" for c in columns], style="dim")
        table.add_row("max", *[f"{100 * max(c):.2f}" for c in columns], style="dim")
    return keep_numbers(table, names=(0,))


def format_paper_comparison(analysis: Analysis) -> Table:
    """The paper's MobileNet v2 figures beside this model's, at the ε both have."""
    table = Table(
        title="Paper comparison: MobileNet v2 in Darknet (PAPER.md) beside this model",
        title_justify="left",
    )
    table.add_column("ε", justify="right")
    table.add_column("paper OFM zero, layer mean", justify="right")
    table.add_column("this model", justify="right")
    table.add_column("paper load saved (Table 3)", justify="right")
    table.add_column("this model (OFM in zero ch)", justify="right")
    ofm = analysis.summary.ofm
    for index, value in enumerate(analysis.activations.eps):
        if value not in PAPER_MOBILENET_FIG3:
            continue
        saved = PAPER_MOBILENET_SAVED.get(value)
        table.add_row(
            f"{value:g}",
            f"{100 * PAPER_MOBILENET_FIG3[value]:.0f}%",
            f"{100 * ofm.paper_mean[index]:.1f}%",
            f"{100 * saved:.2f}%" if saved is not None else "-",
            f"{100 * ofm.channel_saved_share[index]:.2f}%",
        )
    return table
