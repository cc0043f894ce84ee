"""The ``zoo`` report: one summary table over every model, what failed or regressed, a verdict.

The terminal table and the Markdown table (for a CI job summary) are built from the same rows
and sections, so they say the same thing. To fit an 80-column CI log, the terminal stacks each
model's status, opset, layers, weight zeros and IFM share of load under its name; Markdown gives
each its own column. Figures are percentages of fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from onnx_prune.baseline import Change, Comparison, ModelFigures
from onnx_prune.report import eps_label, plain_table
from onnx_prune.report.fit import keep_numbers
from onnx_prune.zoo import ModelResult, Status, ZooOutcome

FIGURE_HEADER = "IFM (%)"
FIGURE_LINES = ("paper mean", "weighted", "zero chan.", "load saved")
NOTES = (
    "IFM (%) at each ε: IFM values within ε, as the paper's mean over compute layers and "
    "weighted by size; zero chan.: IFM values in channels entirely within ε.",
    "load saved: bytes not loaded when zero channels are skipped / the whole load (weights + "
    "IFM + OFM); IFM share of load: IFM bytes / the whole load (the bandwidth model, at each "
    "tensor's dtype; - when no layer's bytes are known). weights zero %: weights exactly 0.",
)
_FAILING = frozenset({"failed", "regression", "missing"})


@dataclass(frozen=True)
class _Row:
    """One model's cells, shared by both layouts; ``figures`` hold one line per figure."""

    key: str
    status: str
    opset: str = "-"
    layers: str = "-"
    weight_zero: str = "-"
    figures: tuple[str, ...] = ()
    load_share: str = "-"
    reason: str | None = None

    @property
    def failing(self) -> bool:
        """True for rows whose status fails the run."""
        return self.status.split(" ")[0] in _FAILING


@dataclass(frozen=True)
class _Section:
    """A heading and its items, e.g. the failed models with their reasons."""

    heading: str
    items: tuple[str, ...]
    style: str = ""


def format_zoo(outcome: ZooOutcome) -> RenderableType:
    """The summary table, then notes, failures and the comparison, then the verdict."""
    parts: list[RenderableType] = [_table(outcome)]
    for section in _sections(outcome):
        parts.append(Text(section.heading, style=f"bold {section.style}".strip()))
        parts.extend(
            Padding(Text(item, style=section.style), (0, 0, 0, 2)) for item in section.items
        )
    parts.append(Text(_verdict(outcome), style="bold green" if outcome.passed else "bold red"))
    return Group(*parts)


def format_zoo_markdown(outcome: ZooOutcome) -> str:
    """The same figures and sections as a Markdown table, for a CI job summary."""
    header = ["model", "opset", "layers", "weights zero %", FIGURE_HEADER]
    header += [eps_label(eps) for eps in outcome.eps] + ["IFM share of load %", "status"]
    lines = ["## onnx-prune zoo", "", _markdown_row(header), _markdown_alignment(header)]
    lines += [_markdown_model(row, len(outcome.eps)) for row in _rows(outcome)]
    for section in _sections(outcome):
        lines += ["", f"**{_escape(section.heading)}**", ""]
        lines += [f"- {_escape(item)}" for item in section.items]
    lines += ["", f"**{_verdict(outcome)}**", ""]
    return "\n".join(lines)


def format_model_done(result: ModelResult, done: int, total: int) -> Text:
    """One line as a model finishes: its place, status, key and time or reason."""
    prefix = f"[{done:>{len(str(total))}}/{total}] "
    if result.ok and result.partial:
        return Text(f"{prefix}partial {result.model.key}: {result.partial}", style="yellow")
    if result.ok:
        return Text(f"{prefix}ok      {result.model.key}  {result.seconds:.1f} s")
    if result.expected_failure:
        return Text(f"{prefix}known failure {result.model.key}: {result.error}", style="yellow")
    return Text(f"{prefix}failed  {result.model.key}: {result.error}", style="red")


def _table(outcome: ZooOutcome) -> RenderableType:
    table = plain_table(
        f"Model zoo: {_models(len(outcome.results))}",
        collapse_padding=True,
    )
    table.add_column("model", overflow="fold", min_width=20)
    table.add_column(FIGURE_HEADER, no_wrap=True)
    for eps in outcome.eps:
        table.add_column(eps_label(eps), justify="right", no_wrap=True)
    for row in _rows(outcome):
        figures = row.figures or ("-",) * (len(outcome.eps) + 1)
        table.add_row(_model_cell(row), *figures, end_section=True)
    return keep_numbers(table, names=(), wrap=(0,))


def _model_cell(row: _Row) -> Text:
    cell = Text(row.key, style="bold")
    cell.append(f"\n{row.status}", style="bold red" if row.failing else "green")
    if row.figures and row.reason:
        cell.append(f": {row.reason}", style="yellow")
    if row.figures:
        facts = f"opset {row.opset} · {row.layers} layers\nweights {row.weight_zero}% zero"
        share = row.load_share + ("%" if row.load_share != "-" else "")
        cell.append(f"\n{facts}\nIFM share of load {share}", style="dim")
    return cell


def _markdown_model(row: _Row, width: int) -> str:
    status = f"{row.status}: {row.reason}" if row.reason else row.status
    figures = row.figures or ("-",) * (width + 1)
    cells = [row.opset, row.layers, row.weight_zero, *figures, row.load_share, status]
    return _markdown_row([_code(row.key), *map(_escape, cells)])


def _rows(outcome: ZooOutcome) -> list[_Row]:
    rows = [_row(outcome, result) for result in outcome.results]
    missing = outcome.comparison.missing if outcome.comparison is not None else ()
    return rows + [_Row(key, "missing") for key in missing]


def _row(outcome: ZooOutcome, result: ModelResult) -> _Row:
    status: str = outcome.status(result)
    figures = result.figures
    if figures is None:
        return _Row(result.model.key, status, reason=result.error)
    if status == "regression" and outcome.comparison is not None:
        status = f"regression ({_regression_count(outcome.comparison, result.model.key)})"
    return _Row(
        key=result.model.key + (" (random weights)" if figures.random_weights else ""),
        status=status,
        reason=result.partial,
        opset=str(figures.opset),
        layers=str(figures.compute_layers),
        weight_zero=_percent(figures.weight_zero),
        figures=_figure_cells(figures),
        load_share=_percent(figures.ifm_load_share),
    )


def _figure_cells(figures: ModelFigures) -> tuple[str, ...]:
    width = len(figures.ifm_zero_paper_mean)
    load_saved = figures.load_saved or (None,) * width
    columns = zip(
        figures.ifm_zero_paper_mean,
        figures.ifm_zero_weighted,
        figures.ifm_channel_saved,
        load_saved,
        strict=True,
    )
    return (
        "\n".join(FIGURE_LINES),
        *["\n".join(_percent(value) for value in column) for column in columns],
    )


def _regression_count(comparison: Comparison, key: str) -> int:
    return sum(1 for change in comparison.regressions if change.model == key)


def _sections(outcome: ZooOutcome) -> list[_Section]:
    sections = [_Section("Notes", NOTES, "dim")]
    failed = tuple(f"{result.model.key}: {result.error}" for result in outcome.failed)
    if failed:
        sections.append(_Section(f"Failed ({len(failed)})", failed, "red"))
    known = tuple(f"{result.model.key}: {result.error}" for result in outcome.known_failures)
    if known:
        heading = f"Known failures, expected by the zoo config ({len(known)})"
        sections.append(_Section(heading, known, "yellow"))
    fixed = tuple(result.model.key for result in outcome.now_passing)
    if fixed:
        heading = (
            f"Now passing, though the zoo config expects them to fail ({len(fixed)}): "
            'remove expected = "fail" for them'
        )
        sections.append(_Section(heading, fixed, "green"))
    if outcome.comparison is not None:
        sections += _comparison_sections(outcome.comparison)
    return sections


def _comparison_sections(comparison: Comparison) -> list[_Section]:
    tolerance = f"tolerance {100 * comparison.tolerance:.2f} points"
    candidates = [
        _Section(
            f"Regressions ({len(comparison.regressions)}) against {comparison.baseline.name}, "
            f"{tolerance}",
            tuple(_change_text(change) for change in comparison.regressions),
            "red",
        ),
        _Section(
            f"Missing: in the baseline, not in the zoo ({len(comparison.missing)})",
            comparison.missing,
            "red",
        ),
        _Section(f"New: not in the baseline, not compared ({len(comparison.new)})", comparison.new),
        _Section(
            f"Improved beyond the {tolerance} (save the baseline again to keep the gain)",
            tuple(_change_text(change) for change in comparison.improvements),
            "green",
        ),
        _Section("Changes since the baseline", comparison.notes),
    ]
    return [section for section in candidates if section.items]


def _change_text(change: Change) -> str:
    points = 100 * (change.now - change.baseline)
    return (
        f"{change.model}: {change.label}: baseline {_percent(change.baseline)}%, "
        f"now {_percent(change.now)}% ({points:+.2f} points)"
    )


def _verdict(outcome: ZooOutcome) -> str:
    statuses = [outcome.status(result) for result in outcome.results]
    shown_statuses: tuple[Status, ...] = (
        "ok",
        "partial",
        "new",
        "failed",
        "regression",
        "known-failure",
        "now-passing",
    )
    counts = [f"{statuses.count(s)} {s}" for s in shown_statuses]
    if outcome.comparison is not None:
        counts.append(f"{len(outcome.comparison.missing)} missing")
    shown = ", ".join(count for count in counts if not count.startswith("0 ")) or "nothing"
    return f"{'PASSED' if outcome.passed else 'FAILED'}: {_models(len(statuses))}: {shown}"


def _models(count: int) -> str:
    return f"{count} model" + ("" if count == 1 else "s")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _code(text: str) -> str:
    return "`" + text.replace("|", r"\|") + "`"


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("\n", "<br>") for cell in cells) + " |"


def _markdown_alignment(header: Sequence[str]) -> str:
    text = {"model", FIGURE_HEADER, "status"}
    return "|" + "|".join("---" if name in text else "--:" for name in header) + "|"


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes and HTML brackets escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", r"\|")
