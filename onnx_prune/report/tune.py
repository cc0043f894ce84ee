"""The ``tune`` report: the chosen ε per layer, the sensitivity table, the map against the best
uniform ε on both splits, and the runs it took (the JSON document is in ``jsondoc``)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from onnx_prune.budget import Budget, Measured
from onnx_prune.report import format_random_banner, percent, plain_table
from onnx_prune.report.fit import keep_numbers
from onnx_prune.tune import LayerSensitivity, SensitivityPoint, SplitFigures, TuneReport


def format_tune(report: TuneReport) -> RenderableType:
    """Every table of ``tune``, and the notes."""
    parts: list[RenderableType] = []
    if report.random_weights:
        parts.append(format_random_banner(True))
    parts += [format_layers(report), format_sensitivity(report), format_comparison(report)]
    parts += [format_runs(report), *_notes(report)]
    return Group(*parts)


def _metric_text(budget: Budget, value: float | None) -> str:
    if value is None:
        return "-"
    if budget.kind == "top1_drop":
        return f"{value:+.2f} pp".replace("+", "-", 1) if value > 0 else f"{-value:+.2f} pp"
    if budget.kind == "agreement":
        return f"{100 * value:.2f}%"
    return f"{value:.5f}"


def format_layers(report: TuneReport) -> RenderableType:
    """Per pruned IFM: its layer, IFM kB, the chosen ε, its sensitivity and the load it saves."""
    chosen = report.eps_map.eps if report.eps_map is not None else {}
    table = plain_table(
        f"Per-layer ε under {report.budget.describe()} ({report.granularity} pruning): "
        f"{report.model}\nsensitivity: the metric with this layer alone pruned at its ε "
        f"(calibration split); saved: IFM bytes not loaded at its ε, per sample"
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("IFM", no_wrap=True)
    for header in ("IFM kB", "ε", "sensitivity", "score", "saved kB", "saved %"):
        table.add_column(header, justify="right", no_wrap=True)
    for layer in report.search.layers:
        table.add_row(*_layer_row(report, layer, chosen.get(layer.tensor)))
    return keep_numbers(table, names=(0, 1))


def _layer_row(report: TuneReport, layer: LayerSensitivity, eps: float | None) -> list[str]:
    point = next((p for p in layer.points if p.eps == eps), None)
    measured = point.measured if point is not None else None
    name = layer.layers[0] + (f" +{len(layer.layers) - 1}" if len(layer.layers) > 1 else "")
    saved = point.saved_bytes if point is not None else 0.0
    return [
        name,
        layer.tensor,
        f"{layer.ifm_bytes / 1000:,.1f}",
        "-" if eps is None else f"{eps:g}",
        _metric_text(report.budget, measured.metric) if measured else _unchanged(point),
        f"{measured.score:.2g}" if measured else "-",
        f"{saved / 1000:,.1f}",
        percent(saved, layer.ifm_bytes),
    ]


def _unchanged(point: SensitivityPoint | None) -> str:
    return "no change" if point is not None and point.source == "no change" else "-"


def format_sensitivity(report: TuneReport) -> RenderableType:
    """The sensitivity table: the budget metric per layer and candidate ε."""
    table = plain_table(
        f"Sensitivity: {report.budget.kind} with one layer pruned alone (calibration split)\n"
        "· no change (prunes only zeros, or nothing); = same values pruned as the ε before; "
        "✗ outside the budget; blank: not run (stopped earlier)"
    )
    table.add_column("IFM", no_wrap=True)
    for eps in report.candidates:
        table.add_column(f"ε={eps:g}", justify="right", no_wrap=True)
    for layer in report.search.layers:
        table.add_row(layer.tensor, *[_cell(report.budget, p) for p in layer.points])
    return keep_numbers(table, names=(0,))


def _cell(budget: Budget, point: SensitivityPoint) -> str:
    if point.source == "no change":
        return "·"
    if point.measured is None:
        return ""
    mark = "" if point.measured.within else " ✗"
    same = "=" if point.source == "same pruning" else ""
    return f"{same}{_metric_text(budget, point.measured.metric)}{mark}"


def format_comparison(report: TuneReport) -> RenderableType:
    """The per-layer map beside the best uniform ε, on both splits, all measured."""
    table = plain_table(
        "IFM load saved and the budget metric: the per-layer map against the best uniform ε "
        "under the same budget\nsaved: share of the pruned layers' IFM values skipped, measured "
        "on the pruned runs of each split; predicted (the same for both splits): each layer's "
        "own savings (analyze) and single-layer losses on the calibration split, added up"
    )
    table.add_column("assignment", no_wrap=True)
    for header in ("split", "samples", "saved %", "pred. saved %"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column(report.budget.kind, justify="right", no_wrap=True)
    table.add_column(f"pred. {report.budget.kind}", justify="right", no_wrap=True)
    chosen = report.search.chosen
    rows = [
        (
            "per-layer map",
            chosen.predicted_saved_bytes if chosen else None,
            report.predicted_metric,
        ),
        (_uniform_label(report), _uniform_saved(report), report.uniform_predicted_metric),
    ]
    for index, (label, predicted, metric) in enumerate(rows):
        for split, figures in (("calibration", report.calibration), ("held-out", report.holdout)):
            measured = _pick(figures, index)
            table.add_row(
                label,
                split,
                str(figures.samples),
                _share(measured),
                percent(predicted, report.ifm_bytes) if predicted is not None else "-",
                _metric_text(report.budget, measured.metric if measured else None),
                _metric_text(report.budget, metric),
            )
        table.add_section()
    return keep_numbers(table, names=(0,))


def _uniform_label(report: TuneReport) -> str:
    eps = report.best_uniform_eps
    return "no uniform ε within" if eps is None else f"best uniform ε={eps:g}"


def _uniform_saved(report: TuneReport) -> float | None:
    index = report.search.best_uniform
    return None if index is None else report.search.uniform_saved_bytes[index]


def _pick(figures: SplitFigures, index: int) -> Measured | None:
    return figures.chosen if index == 0 else figures.uniform


def _share(measured: Measured | None) -> str:
    return "-" if measured is None else f"{100 * measured.saved_fraction:.2f}"


def format_runs(report: TuneReport) -> Text:
    """How many model runs the search took."""
    runs = report.runs
    validated = len(report.search.validations)
    return Text(
        f"model runs: {runs.runs} session runs over {runs.rows} sample rows on the pruning "
        f"session, plus {runs.analysis_runs} run{'s' * (runs.analysis_runs != 1)} "
        f"({runs.analysis_rows} rows) of analyze's probed model for the savings; "
        f"{validated} combined assignment{'s' * (validated != 1)} validated"
    )


def _notes(report: TuneReport) -> list[RenderableType]:
    notes: list[RenderableType] = []
    if report.search.chosen is None:
        notes.append(
            Text(
                f"No assignment keeps {report.budget.describe()}, not even ε = 0: no ε map",
                style="bold red",
            )
        )
    elif report.search.chose_uniform:
        notes.append(Text("the best uniform ε saved more than any validated per-layer map: kept"))
    if report.holdout.samples == 0:
        notes.append(Text("no held-out samples (--holdout 0 or too few samples)"))
    for item in report.not_pruned:
        notes.append(Text(f"not pruned: '{item.tensor}' ({item.reason})"))
    return notes
