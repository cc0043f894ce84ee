"""The ``accuracy`` report: one row per ε (and the unpruned model), the fidelity of every output
per ε, the budget lines and notes."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from onnx_prune.accuracy import AccuracyReport, EpsAccuracy, accuracy_drop
from onnx_prune.report import eps_label, format_random_banner
from onnx_prune.report.fit import keep_numbers


def format_accuracy(
    report: AccuracyReport, *, max_drop: float | None = None, min_cosine: float | None = None
) -> RenderableType:
    """The ε table, the fidelity table, the budget lines when ``max_drop`` (percentage points)
    or ``min_cosine`` is given, and notes."""
    parts: list[RenderableType] = []
    if report.random_weights:
        parts.append(format_random_banner(True))
    parts.append(_table(report))
    if report.outputs:
        parts.append(format_fidelity(report))
    if max_drop is not None:
        parts.append(format_budget(report, max_drop))
    if min_cosine is not None:
        parts.append(format_cosine_budget(report, min_cosine))
    parts.extend(_notes(report))
    return Group(*parts)


def format_fidelity(report: AccuracyReport) -> RenderableType:
    """Per output (rows) and ε (columns): mean cosine similarity and relative L2 error of the
    pruned output against the unpruned one."""
    # Title and caption sit outside the table: inside, they wrap at the width of a narrow table.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("output", overflow="fold", min_width=12)
    table.add_column("", no_wrap=True)
    for result in report.results:
        label = "ε map" if result.eps is None else eps_label(result.eps)
        table.add_column(label, justify="right", no_wrap=True)
    for name in report.outputs:
        kind = "classifier" if name in report.classifier_outputs else "other"
        cosines = [f"{result.outputs[name].cosine:.6f}" for result in report.results]
        errors = [f"{result.outputs[name].relative_l2:.2e}" for result in report.results]
        table.add_row(name, "cosine", *cosines)
        table.add_row(f"({kind})", "rel. L2", *errors)
    return Group(
        Text("Output fidelity (pruned vs unpruned, mean over samples)"),
        keep_numbers(table, names=(0,)),
        Text("cosine: 1 = same direction; rel. L2: ‖pruned − unpruned‖ / ‖unpruned‖"),
    )


def _table(report: AccuracyReport) -> Table:
    title = f"Accuracy under ε-pruning ({report.granularity} granularity): {report.model}"
    table = Table(title=title, title_justify="left", caption=_caption(report))
    table.caption_justify = "left"
    table.add_column("ε", justify="right")
    table.add_column("top-1 %", justify="right")
    table.add_column("Δtop-1 pp", justify="right")
    table.add_column("top-5 %", justify="right")
    table.add_column("agreement %", justify="right")
    table.add_column("KL", justify="right")
    table.add_column("load saved %", justify="right")
    baseline = report.baseline
    scored = report.scored_output is not None
    agreement, kl = ("100.00", "0") if scored else ("-", "-")
    table.add_row(
        "unpruned", _percent(baseline.top1), "", _percent(baseline.top5), agreement, kl, "0.00"
    )
    for result in report.results:
        table.add_row(*_cells(report, result))
    return table


def _caption(report: AccuracyReport) -> str:
    labelled = f"{report.labelled} labelled" if report.labelled else "no labels"
    scored = (
        f"scored output '{report.scored_output}' ({report.classes} classes, read as "
        f"{report.output_kind}); KL(unpruned ‖ pruned) in nats"
        if report.scored_output is not None
        else "no output is shaped as class scores ([N, classes]): no top-k, agreement or KL"
    )
    one = report.pruned_layers == 1
    layers = "1 layer pruned at its" if one else f"{report.pruned_layers} layers pruned at their"
    return f"{report.samples} samples ({labelled}); {layers} input; {scored}"


def _cells(report: AccuracyReport, result: EpsAccuracy) -> list[str]:
    drop = accuracy_drop(report, result)
    return [
        "ε map" if result.eps is None else f"{result.eps:g}",
        _percent(result.top1),
        "-" if drop is None else f"{0.0 - drop:+.2f}".replace("-0.00", "+0.00"),
        _percent(result.top5),
        _percent(result.agreement),
        "-" if result.kl is None else f"{result.kl:.4f}",
        f"{100 * result.saved_fraction:.2f}",
    ]


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def format_budget(report: AccuracyReport, max_drop: float) -> Text:
    """The largest ε whose top-1 drop (agreement drop without labels) stays within ``max_drop``."""
    if report.scored_output is None:
        return Text(
            "--max-top1-drop needs a classifier output and the model has none: "
            "use --min-cosine for its outputs",
            style="bold red",
        )
    measure = "top-1 drop" if report.baseline.top1 is not None else "agreement drop (no labels)"
    if report.eps_map is not None:
        return _map_budget(report, max_drop, measure)
    return _largest_eps(
        report,
        report.max_eps_within_budget(max_drop),
        f"No ε keeps the {measure} within {max_drop:g} points",
        f"Largest ε within a {max_drop:g}-point {measure}",
    )


def _largest_eps(report: AccuracyReport, best: float | None, none: str, found: str) -> Text:
    """``found: ε (load saved …%)`` for the largest ε within a budget, ``none`` without one."""
    if best is None:
        return Text(none, style="bold red")
    saved = next(result for result in report.results if result.eps == best).saved_fraction
    return Text(f"{found}: {best:g} (load saved {100 * saved:.2f}%)", style="bold")


def _map_budget(report: AccuracyReport, max_drop: float, measure: str) -> Text:
    (result,) = report.results
    drop = accuracy_drop(report, result)
    drop = 100.0 * (1.0 - (result.agreement or 0.0)) if drop is None else drop
    within = drop <= max_drop + 1e-9
    verdict = "within" if within else "NOT within"
    return Text(
        f"The ε map's {measure} of {drop:.2f} points is {verdict} {max_drop:g} points",
        style="bold" if within else "bold red",
    )


def format_cosine_budget(report: AccuracyReport, min_cosine: float) -> Text:
    """The largest ε at which every output's mean cosine similarity is at least ``min_cosine``."""
    if report.eps_map is not None:
        (result,) = report.results
        worst = min(fidelity.cosine for fidelity in result.outputs.values())
        within = worst >= min_cosine - 1e-12
        verdict = "within" if within else "NOT within"
        return Text(
            f"The ε map's lowest output cosine {worst:.6f} is {verdict} the minimum {min_cosine:g}",
            style="bold" if within else "bold red",
        )
    return _largest_eps(
        report,
        report.max_eps_within_cosine(min_cosine),
        f"No ε keeps every output's cosine at {min_cosine:g} or more",
        f"Largest ε keeping every output's cosine at {min_cosine:g} or more",
    )


def _notes(report: AccuracyReport) -> list[RenderableType]:
    notes: list[RenderableType] = []
    unlabelled = report.samples - report.labelled
    if report.labelled and unlabelled:
        notes.append(
            Text(f"{unlabelled} of {report.samples} samples have no label: not in top-1/top-5")
        )
    if report.skipped_inputs:
        names = ", ".join(item.name for item in report.skipped_inputs[:3])
        more = len(report.skipped_inputs) - 3
        names += f" and {more} more" if more > 0 else ""
        count = len(report.skipped_inputs)
        notes.append(Text(f"skipped {count} unreadable input{'s' * (count != 1)}: {names}"))
    for item in report.not_pruned:
        notes.append(Text(f"not pruned: '{item.tensor}' ({item.reason})"))
    if report.padded_samples:
        notes.append(
            Text(
                f"the model fixes its batch at {report.batch_size}: the last batch was padded "
                f"with {report.padded_samples} copies of its last sample, not counted"
            )
        )
    return notes
