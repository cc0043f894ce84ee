"""Figures like the paper's, in one PNG: Fig 3 (sparsity vs ε), Fig 5 (per-layer load with and
without pruning) and, given accuracy results, Table 3 (top-1, agreement and load saved vs ε).

matplotlib is an optional extra (``pip install 'onnx-prune[plot]'``), imported only when a figure
is drawn. The figure is drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from onnx_prune.bandwidth import GRANULARITIES, BandwidthReport
from onnx_prune.errors import MissingExtraError, OutputPathError
from onnx_prune.files import replacing

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from onnx_prune.analysis import Analysis
    from onnx_prune.tune import TuneReport

INSTALL_HINT = "pip install 'onnx-prune[plot]'"


class AccuracyPoint(Protocol):
    """One ε of an accuracy sweep (``accuracy.EpsAccuracy`` has these fields)."""

    @property
    def eps(self) -> float | None:
        """The ε pruned at (None for a per-layer ε map, which is not drawn)."""

    @property
    def top1(self) -> float | None:
        """Top-1 accuracy as a fraction, None without labels."""

    @property
    def agreement(self) -> float | None:
        """Agreement with the unpruned top-1, as a fraction; None without a classifier output."""

    @property
    def saved_fraction(self) -> float:
        """The share of IFM values that pruning skipped."""


def plot_analysis(
    analysis: Analysis,
    bandwidth: BandwidthReport,
    out_path: Path,
    *,
    accuracy: Sequence[AccuracyPoint] | None = None,
) -> Path:
    """Draw the paper's figures for ``analysis`` into the PNG ``out_path`` and return it."""
    figure = _new_figure(rows=3 if accuracy else 2)
    grid = figure.add_gridspec(3 if accuracy else 2, 2)
    _plot_sparsity(figure.add_subplot(grid[0, 0]), analysis)
    _plot_saved(figure.add_subplot(grid[0, 1]), bandwidth)
    if accuracy:
        _plot_accuracy(figure.add_subplot(grid[1, :]), accuracy)
    _plot_layer_loads(figure.add_subplot(grid[-1, :]), bandwidth)
    figure.suptitle(
        f"{Path(analysis.model).name} on {analysis.providers.label()}{_random_note(analysis)}"
    )
    _save(figure, out_path)
    return out_path


def check_plot_path(out_path: Path) -> None:
    """Refuse, before any work, a figure path whose extension matplotlib cannot write.

    Raises:
        MissingExtraError: matplotlib is not installed.
        OutputPathError: the extension names no format matplotlib writes.
    """
    formats = _formats()
    suffix = out_path.suffix.lower().removeprefix(".")
    if suffix not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise OutputPathError(
            f"--plot {out_path}: matplotlib cannot write '{out_path.suffix or 'no extension'}' "
            f"files: end the name with one of {known}"
        )


def _formats() -> set[str]:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as error:
        raise MissingExtraError(f"plotting needs matplotlib: {INSTALL_HINT}") from error
    # pgf needs a LaTeX installation; every other format is written by matplotlib itself.
    return set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"}


def _save(figure: Figure, out_path: Path) -> None:
    """Save through a temporary file, so a failed save leaves an old figure as it was."""
    check_plot_path(out_path)
    file_format = out_path.suffix.lower().removeprefix(".")
    with replacing(out_path) as temporary:
        figure.savefig(temporary, format=file_format, dpi=100)


def _new_figure(*, rows: int) -> Figure:
    """A figure on the Agg canvas; raises MissingExtraError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError(f"plotting needs matplotlib: {INSTALL_HINT}") from error
    figure = Figure(figsize=(12, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _random_note(analysis: Analysis) -> str:
    return " (RANDOM WEIGHTS)" if analysis.random_weights else ""


def _percent(values: Sequence[float]) -> list[float]:
    return [100 * value for value in values]


def _plot_sparsity(axes: Axes, analysis: Analysis) -> None:
    """Fig 3: the share of feature-map values within ε, layer mean and weighted."""
    eps = analysis.activations.eps
    summary = analysis.summary
    for name, figures in (("OFM", summary.ofm), ("IFM", summary.ifm)):
        style = "-" if name == "OFM" else "--"
        axes.plot(eps, _percent(figures.paper_mean), style, marker="o", label=f"{name} layer mean")
        axes.plot(eps, _percent(figures.weighted), style, marker="s", label=f"{name} weighted")
    axes.set(xlabel="ε", ylabel="values within ε (%)", title="Feature-map sparsity (Fig 3)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _plot_saved(axes: Axes, bandwidth: BandwidthReport) -> None:
    """The IFM load saved by channel, tile and element pruning, and MACs skipped, against ε."""
    total = bandwidth.total
    for granularity, marker in zip(GRANULARITIES, "os^", strict=True):
        shares = _percent(total.ifm_saved_share(granularity))
        axes.plot(bandwidth.eps, shares, marker=marker, label=f"IFM load saved, {granularity}")
    skipped = _percent(total.macs_skipped_share())
    axes.plot(bandwidth.eps, skipped, ":", marker="x", label="MACs skipped, channel")
    axes.set(xlabel="ε", ylabel="% of IFM bytes / MACs", title="Dynamic pruning savings")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _plot_accuracy(axes: Axes, accuracy: Sequence[AccuracyPoint]) -> None:
    """Table 3: top-1 and agreement (left axis) and load saved (right axis) against ε."""
    accuracy = [point for point in accuracy if point.eps is not None]
    eps = [float(point.eps or 0.0) for point in accuracy]
    top1 = [point.top1 for point in accuracy]
    if all(value is not None for value in top1):
        axes.plot(eps, [100 * (v or 0.0) for v in top1], marker="o", label="top-1")
    agreement = [point.agreement for point in accuracy]
    if all(value is not None for value in agreement):
        axes.plot(eps, [100 * (v or 0.0) for v in agreement], marker="s", label="agreement")
    axes.set(xlabel="ε", ylabel="%", title="Accuracy under ε-pruning (Table 3)")
    axes.grid(alpha=0.3)
    saved = axes.twinx()
    saved.plot(
        eps,
        [100 * p.saved_fraction for p in accuracy],
        "k:",
        marker="^",
        label="IFM load saved (right)",
    )
    saved.set_ylabel("IFM load saved (%)")
    lines = axes.get_lines() + saved.get_lines()
    axes.legend(lines, [str(line.get_label()) for line in lines], loc="best", fontsize="small")


def _plot_layer_loads(axes: Axes, bandwidth: BandwidthReport) -> None:
    """Fig 5: each layer's IFM load without and with channel pruning, at ε = 0 if measured."""
    index = bandwidth.eps.index(0.0) if 0.0 in bandwidth.eps else 0
    positions = list(range(len(bandwidth.layers)))
    loads = [layer.bytes.ifm / 1000 for layer in bandwidth.layers]
    pruned = [(layer.bytes.ifm - layer.saved.channel[index]) / 1000 for layer in bandwidth.layers]
    axes.bar([p - 0.2 for p in positions], loads, width=0.4, label="without pruning")
    axes.bar([p + 0.2 for p in positions], pruned, width=0.4, label="with channel pruning")
    widths = f"{bandwidth.bits}-bit" if bandwidth.bits else "dtype"
    axes.set(
        xlabel="compute layer",
        ylabel=f"IFM load per sample (kB, {widths})",
        title=f"Per-layer feature-map load at ε={bandwidth.eps[index]:g} (Fig 5)",
    )
    axes.legend(fontsize="small")


def plot_accuracy(
    points: Sequence[AccuracyPoint], out_path: Path, *, title: str, random_weights: bool = False
) -> Path:
    """Draw Table 3 alone (top-1, agreement and load saved against ε) into ``out_path``."""
    figure = _new_figure(rows=1)
    _plot_accuracy(figure.add_subplot(1, 1, 1), points)
    figure.suptitle(title + (" (RANDOM WEIGHTS)" if random_weights else ""))
    _save(figure, out_path)
    return out_path


def plot_tune(report: TuneReport, out_path: Path) -> Path:
    """``tune --plot``: each layer's sensitivity curve, and the saved-vs-metric frontier of the
    validated per-layer assignments against the uniform sweep."""
    figure = _new_figure(rows=1)
    _plot_sensitivity(figure.add_subplot(1, 2, 1), report)
    _plot_frontier(figure.add_subplot(1, 2, 2), report)
    title = f"{Path(report.model).name}: per-layer ε under {report.budget.describe()}"
    figure.suptitle(title + (" (RANDOM WEIGHTS)" if report.random_weights else ""))
    _save(figure, out_path)
    return out_path


def _plot_sensitivity(axes: Axes, report: TuneReport) -> None:
    """Score (KL or 1 − cosine) against ε, one line per layer; crosses leave the budget."""
    for layer in report.search.layers:
        points = [p for p in layer.points if p.measured is not None]
        if not points:
            continue
        eps = [p.eps for p in points]
        scores = [max(p.measured.score, 1e-9) for p in points if p.measured is not None]
        (line,) = axes.plot(eps, scores, marker=".", linewidth=0.8, alpha=0.7)
        outside = [(p.eps, s) for p, s in zip(points, scores, strict=True) if not p.admissible]
        if outside:
            axes.plot(*zip(*outside, strict=True), "x", color=line.get_color(), markersize=8)
    axes.set_yscale("log")
    axes.set(
        xlabel="ε (this layer alone)",
        ylabel="score: KL(unpruned ‖ pruned), nats",
        title="Sensitivity per layer (× outside the budget)",
    )
    axes.grid(alpha=0.3)


def _plot_frontier(axes: Axes, report: TuneReport) -> None:
    """Measured saved share against the budget metric: uniform ε and per-layer assignments."""
    search = report.search
    uniform = [(100 * m.saved_fraction, m.metric) for m in search.uniform]
    axes.plot(*zip(*uniform, strict=True), "o-", label="uniform ε")
    for eps, (x, y) in zip(report.candidates, uniform, strict=True):
        axes.annotate(f"{eps:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    tried = sorted((100 * v.measured.saved_fraction, v.measured.metric) for v in search.validations)
    if tried:
        axes.plot(*zip(*tried, strict=True), "s--", label="per-layer (validated)")
    if search.chosen is not None:
        chosen = search.chosen.measured
        axes.plot(
            [100 * chosen.saved_fraction], [chosen.metric], "*", markersize=16, label="chosen"
        )
    axes.axhline(report.budget.limit, color="red", linewidth=0.8, label="budget")
    axes.set(
        xlabel="IFM values skipped (%, measured)",
        ylabel=report.budget.kind,
        title="Saved vs metric (calibration split)",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
