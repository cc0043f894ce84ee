"""The paper's figures beside the measured ones, per network: rich renderables, no printing."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from onnx_prune.accuracy import AccuracyReport, accuracy_drop
from onnx_prune.paper.measure import BATCH_SIZE, BITS, FIG3_PHOTO, PHOTOS, Measured, Missing
from onnx_prune.paper.networks import EPS, PaperTable3
from onnx_prune.paper.subjects import RANDOM_PRESET
from onnx_prune.report import eps_label
from onnx_prune.report.fit import keep_numbers

Row = tuple[str, str, list[str]]
SOURCE_LABELS = {"real": "measured", "random": "RANDOM", "stand-in": "STAND-IN"}
RANDOM_NETWORKS = "AlexNet, SqueezeNet, TinyNet and ResNet-50"


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or ``-``."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def measured_label(result: Measured) -> str:
    """The source every measured row names: real, random or stand-in weights."""
    return SOURCE_LABELS[result.weights]


def format_title(result: Measured) -> Text:
    """What the network is, where its weights came from, its conv layers beside the paper's."""
    subject, conv = result.subject, result.table2
    style = {"real": "bold", "random": "bold red", "stand-in": "bold yellow"}[result.weights]
    label = subject.label
    if result.weights == "random" and "RANDOM" not in label:
        label = f"{label}: RANDOM WEIGHTS"
    text = Text(f"{subject.network.title} (paper) <- {label}\n", style=style)
    text.append(f"{subject.origin}; preset {subject.preset}; {conv.conv_layers} conv layers")
    if conv.compute_layers > conv.conv_layers:
        text.append(f" (+{conv.compute_layers - conv.conv_layers} FC, left out of Fig 3/Table 2)")
    text.append(f", paper {subject.network.paper.conv_layers}")
    for check in subject.checks:
        mark = "ok" if check.passed else "CHECK FAILED"
        text.append(f"\ncheck {check.what}: {check.found}, expected {check.expected}: {mark}")
    return text


def _at_zero(first: str) -> list[str]:
    """The cells of a paper row known only at ε=0."""
    return [first] + ["-"] * (len(EPS) - 1)


def fig3_rows(result: Measured) -> list[Row]:
    """Fig 3: conv-output zero share, unweighted mean over the conv layers, dog.jpg."""
    paper = result.subject.network.paper
    return [
        ("Fig 3", "paper", [percent(value, 0) for value in paper.fig3]),
        ("", measured_label(result), [percent(value) for value in result.fig3.paper_mean]),
    ]


def table2_rows(result: Measured) -> list[Row]:
    """Table 2: output values in zero channels (load saved), and the layers that have one."""
    paper, conv = result.subject.network.paper, result.table2
    label = measured_label(result)
    paper_saved = [percent(paper.saved_at_zero, 2), percent(paper.saved, 2)] + ["-"] * 4
    layers = [f"{n}/{conv.conv_layers}" for n in conv.layers_with_zero_channels]
    rows: list[Row] = [
        ("Table 2", "paper", paper_saved),
        ("", label, [percent(value, 2) for value in conv.saved_share]),
    ]
    if paper.layers_at_zero is None:
        return [*rows, ("layers", label, layers)]
    return [*rows, ("layers", "paper", _at_zero(paper.layers_at_zero)), ("", label, layers)]


def fig5_rows(result: Measured) -> list[Row]:
    """Fig 5: IFM load in Mb at 16 bits on dog.jpg after channel pruning, per ε."""
    fig5 = result.subject.network.paper.fig5_mb
    measured = [f"{value:.1f}" for value in result.fig5.pruned_mb]
    if fig5 is None:
        return [("Fig 5 Mb", measured_label(result), measured)]
    return [
        ("Fig 5 Mb", "paper", _at_zero(f"{fig5[1]:.1f}")),
        ("", measured_label(result), measured),
    ]


def table3_rows(result: Measured) -> list[Row]:
    """Table 3: top-1 at ε=0 then its loss in points (or agreement), and the load reduction."""
    table3 = result.subject.network.paper.table3
    report = result.accuracy
    label = measured_label(result)
    if not result.subject.classifier:
        measured: Row = ("T3 agree", label, ["-"] * len(EPS))
    elif report.labelled:
        measured = ("T3 top-1", label, _measured_losses(report))
    else:
        measured = ("T3 agree", label, [percent(r.agreement, 0) for r in report.results])
    load: Row = ("T3 load", label, [percent(r.saved_fraction, 2) for r in report.results])
    if table3 is None:
        return [measured, load]
    return [
        ("T3 top-1", "paper", _paper_losses(table3)),
        measured if not report.labelled else ("", *measured[1:]),
        ("T3 load", "paper", [percent(value, 2) for value in table3.reduction]),
        ("", *load[1:]),
    ]


def _paper_losses(table3: PaperTable3) -> list[str]:
    """Top-1 at ε=0, then the top-1 loss in percentage points (positive: worse)."""
    return [percent(table3.top1, 2)] + [f"{100 * loss:+.2f}" for loss in table3.loss[1:]]


def _measured_losses(report: AccuracyReport) -> list[str]:
    """Top-1 at the first ε, then the drop from the unpruned top-1 in percentage points."""
    drops = [accuracy_drop(report, result) for result in report.results[1:]]
    return [percent(report.results[0].top1, 2)] + [
        "-" if drop is None else f"{drop:+.2f}" for drop in drops
    ]


def format_result(result: Measured | Missing) -> RenderableType:
    """One network's block, or the line saying why it was not measured."""
    if isinstance(result, Missing):
        return Text(f"Not measured: {result.name}: {result.reason}", style="yellow")
    # Title and caption sit outside the table: a long table title would widen the columns.
    return Group(format_title(result), format_figures(result), Text(format_caption(result)))


def format_figures(result: Measured) -> Table:
    """The table of one network: a row per figure and source, a column per ε."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("figure", no_wrap=True)
    table.add_column("source", no_wrap=True)
    for value in EPS:
        table.add_column(eps_label(value), justify="right", no_wrap=True)
    groups = (fig3_rows(result), table2_rows(result), fig5_rows(result), table3_rows(result))
    for group in groups:
        for index, (figure, source, cells) in enumerate(group):
            table.add_row(figure, source, *cells, end_section=index == len(group) - 1)
    return table


def format_caption(result: Measured) -> str:
    """Table 2's element counts, Fig 5's unpruned load and the samples behind each figure."""
    paper, conv = result.subject.network.paper, result.table2
    saved_k = conv.saved_per_sample[EPS.index(0.1)] / 1000
    fig5 = f"paper {paper.fig5_mb[0]:.1f}, " if paper.fig5_mb else ""
    accuracy = result.accuracy
    no_classifier = "" if result.subject.classifier else " (no classifier: no top-1, load only)"
    return (
        f"Table 2 at ε=0.1, saved / total values per photo: paper {paper.elements} (all "
        f"outputs), measured {saved_k:,.0f}k / {conv.elements_per_sample / 1000:,.0f}k (conv "
        f"outputs; photos: {result.photos}). Fig 5 unpruned: {fig5}measured "
        f"{result.fig5.unpruned_mb:.1f} Mb. T3 samples: {accuracy.samples}, labelled: "
        f"{accuracy.labelled}{no_classifier}."
    )


def format_settings(*, random_weights: bool) -> Text:
    """What is run and how each figure is computed, printed once above the networks."""
    lines = [
        f"Paper settings: batch {BATCH_SIZE}, ε = {', '.join(f'{e:g}' for e in EPS)}, "
        f"{BITS}-bit accounting, channel pruning, each network's own preprocessing. Photos: "
        f"{', '.join(PHOTOS)} (scikit-image's chelsea.jpg stands in for the paper's cat photo).",
        f"- Fig 3: share of conv-output values with |x| <= ε, unweighted mean over the conv "
        f"layers (FC left out, as in the paper), {FIG3_PHOTO}.",
        "- Table 2: share of conv-output values in all-zero channels, over the photos (conv "
        "layers only); the paper divides by all output values (conv, pool, FC, shortcut). "
        "layers: conv layers with a zero channel.",
        f"- Fig 5 Mb: IFM load of the compute layers at {BITS} bits, {FIG3_PHOTO}, after "
        "channel pruning (the paper gives it for MobileNet v2 at ε=0).",
        "- T3 (Table 3): the paper's top-1 and loss (points) are over 2,000 ImageNet validation "
        "images, not available here (give --images and --labels). Without labels, T3 agree = "
        "pruned top-1 equal to unpruned top-1, over all the embedded photos. T3 load: IFM "
        "values of the compute layers skipped in the pruned run (FC inputs included).",
        "Rows: measured = trained weights; RANDOM = random weights (say nothing about the "
        "trained network); STAND-IN = another network with trained weights.",
    ]
    if random_weights:
        lines.append(
            f"RANDOM WEIGHTS: no trained weights for {RANDOM_NETWORKS} are published in a "
            f"registry package; where none is in --weights-dir, the paper's cfg runs with "
            f"random weights (preset {RANDOM_PRESET}), labelled RANDOM."
        )
    return Text("\n".join(lines))


def format_summary(results: Sequence[Measured | Missing]) -> RenderableType:
    """One line per network measured: what it is and its Fig 3 row beside the paper's.

    The title sits above the table (a long title would widen it) and the table keeps its
    numbers at any width (``keep_numbers``)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("paper network", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    table.add_column("layers", justify="right", no_wrap=True)
    for value in EPS:
        table.add_column(eps_label(value), justify="right", no_wrap=True)
    for result in results:
        if isinstance(result, Missing):
            continue
        network = result.subject.network
        table.add_row(
            network.title, "paper", str(network.paper.conv_layers),
            *[percent(value, 0) for value in network.paper.fig3],
        )  # fmt: skip
        table.add_row(
            f"  {result.subject.name}",
            measured_label(result),
            str(result.fig3.conv_layers),
            *[percent(value) for value in result.fig3.paper_mean],
            end_section=True,
        )
    title = "Fig 3, every network (conv-output values within ε, mean over conv layers)"
    return Group(Text(title), keep_numbers(table, names=(0,)))
