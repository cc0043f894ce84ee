"""The ``analyze --eps-map`` table: each compute layer's IFM load saved at its own ε."""

from __future__ import annotations

from rich.console import RenderableType

from onnx_prune.bandwidth import GRANULARITIES, BandwidthReport
from onnx_prune.epsmap import EpsMap, LayerMapSaving, MapSavings
from onnx_prune.report import percent, plain_table
from onnx_prune.report.fit import keep_numbers


def format_map_savings(
    savings: MapSavings, eps_map: EpsMap, bandwidth: BandwidthReport
) -> RenderableType:
    """Per layer: its ε from the map, IFM kB and the share saved at channel/tile/element."""
    widths = f"{bandwidth.bits}-bit values" if bandwidth.bits else "each tensor's dtype"
    metric = f", chosen for {eps_map.metric}" if eps_map.metric else ""
    table = plain_table(
        f"IFM load saved at each layer's own ε (the ε map{metric}; per sample, {widths})\n"
        f"ch/tile/el %: IFM saved (tile {bandwidth.tile[0]}×{bandwidth.tile[1]}); "
        "ε - : not in the map, not pruned",
    )
    table.add_column("layer", no_wrap=True)
    for header in ("ε", "IFM kB", "ch %", "tile %", "el %"):
        table.add_column(header, justify="right", no_wrap=True)
    for layer in savings.layers:
        table.add_row(*_row(layer))
    table.add_section()
    total = [percent(savings.saved[g], savings.ifm_bytes) for g in GRANULARITIES]
    table.add_row("total", "", f"{savings.ifm_bytes / 1000:,.1f}", *total)
    return keep_numbers(table, names=(0,))


def _row(layer: LayerMapSaving) -> list[str]:
    return [
        layer.name,
        "-" if layer.eps is None else f"{layer.eps:g}",
        f"{layer.ifm_bytes / 1000:,.1f}",
        *[percent(layer.saved[g], layer.ifm_bytes) for g in GRANULARITIES],
    ]
