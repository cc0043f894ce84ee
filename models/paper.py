"""``make paper``: the paper's six networks measured with its settings, beside its numbers.

Liang et al., "Dynamic Runtime Feature Map Pruning" (PAPER.md) measured AlexNet, MobileNet v2,
ResNet-50, SqueezeNet 1.1, Tiny Darknet and VGG-16 in Darknet. For each network whose weights are
in ``--weights-dir`` (a Darknet ``<name>.weights`` for ``onnx_prune/data/darknet/<name>.cfg``, or a
ready ``<name>.onnx``), this script converts it (in a temporary folder), runs ``analyze_model`` and
``measure_accuracy`` with the paper's settings and prints the paper's Fig 3 row, Table 2 figure,
Fig 5 load and Table 3 row beside the measured ones. Settings: batch 1, channel pruning at the
conv outputs, ε = 0, 0.1, ..., 0.5, 16-bit accounting, Darknet preprocessing (Caffe's for the
Caffe-converted MobileNet v2 and SqueezeNet), the paper's photos: dog, eagle, giraffe, horses,
and scikit-image's ``chelsea.jpg`` for the paper's cat photo.

Networks without weights get the file to fetch and where from (nothing is downloaded). When
MobileNet v2's weights are missing, the embedded EfficientNet-Lite0 is measured in its place,
labelled as a stand-in everywhere. ``--random-weights`` runs the six cfgs with random weights
instead (a demo of the pipeline on the paper's exact architectures, labelled RANDOM WEIGHTS).

    python models/paper.py [--weights-dir DIR] [--networks alexnet,tiny] [--random-weights]
                           [--images DIR --labels FILE|DIR] [--limit N] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from onnx_prune.accuracy import (  # noqa: E402
    AccuracyReport,
    accuracy_drop,
    measure_accuracy,
)
from onnx_prune.analysis import Analysis, analyze_model  # noqa: E402
from onnx_prune.darknet import convert_darknet, write_random_weights  # noqa: E402
from onnx_prune.data import DARKNET_CFG_DIR, EMBEDDED_IMAGES, EMBEDDED_MODEL  # noqa: E402
from onnx_prune.errors import OnnxPruneError  # noqa: E402
from onnx_prune.feeds import SampleSource  # noqa: E402
from onnx_prune.jsondoc import Document, dumps  # noqa: E402
from onnx_prune.labels import Labels, image_files, load_labels  # noqa: E402
from onnx_prune.load import load_model  # noqa: E402
from onnx_prune.report import eps_label  # noqa: E402
from onnx_prune.report.analysis import PAPER_MOBILENET_FIG3, PAPER_MOBILENET_SAVED  # noqa: E402

EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
BITS = 16
BATCH_SIZE = 1
IMAGES = EMBEDDED_IMAGES
PHOTOS = ("dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "chelsea.jpg")
"""The paper's five Darknet photos; scikit-image's chelsea.jpg stands in for its cat photo."""
FIG3_PHOTO = "dog.jpg"
CFG_DIR = DARKNET_CFG_DIR
STAND_IN_MODEL = EMBEDDED_MODEL
STAND_IN_PRESET = "efficientnet-lite"
STAND_IN_NAME = "EfficientNet-Lite0"
RANDOM_PRESET = "darknet"
"""Random weights are calibrated on images in [0, 1], so every random network gets Darknet's."""
PJREDDIE = "https://pjreddie.com/darknet/imagenet/"

Kind = Literal["trained", "random", "stand-in"]


# --- the paper's numbers (PAPER.md) -----------------------------------------------------------


@dataclass(frozen=True)
class PaperTable3:
    """Table 3 (2,000 ImageNet validation images): top-1 at ε=0, top-1 loss and load reduction."""

    top1: float
    loss: tuple[float, ...]
    reduction: tuple[float, ...]


@dataclass(frozen=True)
class PaperNumbers:
    """One network's figures in the paper; fractions, indexed like ``EPS`` where per ε."""

    fig3: tuple[float, ...]
    saved: float
    """Table 2: feature-map load saved by channel pruning at ε = 0.1, mean of the 5 photos."""
    elements: str
    saved_at_zero: float | None
    layers_at_zero: str | None
    conv_layers: int
    fig5_mb: tuple[float, float] | None = None
    """Fig 5 (dog.jpg, ε = 0): feature-map load in Mb without and with pruning."""
    table3: PaperTable3 | None = None


@dataclass(frozen=True)
class Network:
    """One of the paper's networks: its cfg name, the files that hold its weights, its preset."""

    key: str
    title: str
    preset: str
    weights_files: tuple[str, ...]
    fetch: str
    paper: PaperNumbers


def _mobilenet_numbers() -> PaperNumbers:
    # Fig 3 and Table 3's reduction are the ones the analyze report compares with.
    return PaperNumbers(
        fig3=tuple(PAPER_MOBILENET_FIG3[eps] for eps in EPS),
        saved=0.1016,
        elements="940k / 9,255k",
        saved_at_zero=0.078,
        layers_at_zero="36/54",
        conv_layers=54,
        fig5_mb=(142.8, 131.6),
        table3=PaperTable3(
            top1=0.7145,
            loss=(0.0, -0.0025, -0.0035, 0.0045, 0.0445, 0.2925),
            reduction=tuple(PAPER_MOBILENET_SAVED[eps] for eps in EPS),
        ),
    )


def _caffe_fetch(model: str, source: str, key: str) -> str:
    return (
        f"the authors converted {model} from Caffe ({source}); no Darknet weights file is "
        f"published: convert it to Darknet weights for {key}.cfg ({key}.weights) or to "
        f"ONNX ({key}.onnx)"
    )


def _pjreddie_fetch(file: str) -> str:
    return f"{file} from {PJREDDIE} (https://pjreddie.com/media/files/{file})"


NETWORKS = (
    Network(
        "alexnet",
        "AlexNet",
        "darknet",
        ("alexnet.weights",),
        _pjreddie_fetch("alexnet.weights"),
        PaperNumbers(
            fig3=(0.62, 0.66, 0.68, 0.70, 0.72, 0.73),
            saved=0.0551,
            elements="43k / 781k",
            saved_at_zero=0.051,
            layers_at_zero="3/5",
            conv_layers=5,
            table3=PaperTable3(
                top1=0.5717,
                loss=(0.0, 0.0005, 0.0005, 0.0010, 0.0045, 0.0045),
                reduction=(0.0506, 0.0589, 0.0655, 0.0795, 0.0917, 0.1007),
            ),
        ),
    ),
    Network(
        "mobilenet",
        "MobileNet v2",
        "caffe-mobilenet",
        ("mobilenet.weights",),
        _caffe_fetch(
            "MobileNet v2",
            "mobilenet_v2.caffemodel of https://github.com/shicai/MobileNet-Caffe",
            "mobilenet",
        ),
        _mobilenet_numbers(),
    ),
    Network(
        "resnet50",
        "ResNet-50",
        "darknet",
        ("resnet50.weights",),
        _pjreddie_fetch("resnet50.weights"),
        PaperNumbers(
            fig3=(0.0, 0.26, 0.46, 0.55, 0.61, 0.64),
            saved=0.0160,
            elements="323k / 20,086k",
            saved_at_zero=0.0,
            layers_at_zero="0/50",
            conv_layers=50,
        ),
    ),
    Network(
        "squeezenet",
        "SqueezeNet 1.1",
        "caffe",
        ("squeezenet.weights",),
        _caffe_fetch(
            "SqueezeNet 1.1",
            "SqueezeNet_v1.1/squeezenet_v1.1.caffemodel of https://github.com/forresti/SqueezeNet",
            "squeezenet",
        ),
        PaperNumbers(
            fig3=(0.54, 0.55, 0.56, 0.57, 0.58, 0.58),
            saved=0.0056,
            elements="18k / 3,290k",
            saved_at_zero=0.007,
            layers_at_zero="5/26",
            conv_layers=26,
            table3=PaperTable3(
                top1=0.5713,
                loss=(0.0,) * 6,
                reduction=(0.0071, 0.0070, 0.0071, 0.0072, 0.0072, 0.0072),
            ),
        ),
    ),
    Network(
        "tiny",
        "TinyNet",
        "darknet",
        ("tiny.weights",),
        _pjreddie_fetch("tiny.weights"),
        PaperNumbers(
            fig3=(0.0, 0.12, 0.23, 0.32, 0.38, 0.43),
            saved=0.0,
            elements="0 / 3,458k",
            saved_at_zero=0.0,
            layers_at_zero="0/16",
            conv_layers=16,
        ),
    ),
    Network(
        "vgg16",
        "VGG-16",
        "darknet",
        ("vgg16.weights", "vgg-16.weights"),
        _pjreddie_fetch("vgg-16.weights") + ", saved as vgg-16.weights or vgg16.weights",
        PaperNumbers(
            fig3=(0.61, 0.61, 0.61, 0.61, 0.62, 0.62),
            saved=0.0032,
            elements="50k / 15,087k",
            saved_at_zero=None,
            layers_at_zero=None,
            conv_layers=13,
        ),
    ),
)
NETWORK_KEYS = tuple(network.key for network in NETWORKS)


# --- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The command line, resolved."""

    weights_dir: Path
    cfg_dir: Path
    networks: tuple[Network, ...]
    random_weights: bool
    images: tuple[Path, ...] | None
    labels: Labels | None
    limit: int | None


@dataclass(frozen=True)
class Subject:
    """A model file ready to measure, and how it came to be."""

    network: Network
    path: Path
    origin: str
    preset: str
    stand_in: bool = False


@dataclass(frozen=True)
class ConvFigures:
    """Figures over the conv layers' OFMs (fully connected layers excluded, as in the paper)."""

    conv_layers: int
    compute_layers: int
    paper_mean: tuple[float, ...]
    saved_share: tuple[float, ...]
    saved_per_sample: tuple[float, ...]
    elements_per_sample: float
    layers_with_zero_channels: tuple[int, ...]


@dataclass(frozen=True)
class FeatureMapLoad:
    """Fig 5: the IFM load of every compute layer in Mb at 16 bits, per sample, per ε."""

    unpruned_mb: float
    pruned_mb: tuple[float, ...]


@dataclass(frozen=True)
class Measured:
    """Everything measured on one network."""

    subject: Subject
    kind: Kind
    fig3: ConvFigures
    fig5: FeatureMapLoad
    table2: ConvFigures
    photos: int
    accuracy: AccuracyReport


def conv_figures(analysis: Analysis) -> ConvFigures:
    """The summary's OFM figures restricted to Conv layers (Fig 3 excludes the FC layers)."""
    stats = analysis.activations
    maps = [stats.tensors[layer.ofm] for layer in analysis.layers if layer.op_type == "Conv"]
    elements = sum(item.elements for item in maps)
    width = len(stats.eps)
    saved = [sum(item.saved_elements[k] for item in maps) for k in range(width)]
    return ConvFigures(
        conv_layers=len(maps),
        compute_layers=len(analysis.layers),
        paper_mean=tuple(
            sum(item.zeros[k] / item.elements for item in maps) / len(maps) for k in range(width)
        ),
        saved_share=tuple(value / elements for value in saved),
        saved_per_sample=tuple(value / stats.samples for value in saved),
        elements_per_sample=elements / stats.samples,
        layers_with_zero_channels=tuple(
            sum(1 for item in maps if item.zero_channels[k]) for k in range(width)
        ),
    )


def feature_map_load(analysis: Analysis) -> FeatureMapLoad:
    """Fig 5's load: the compute layers' IFM bits / 10^6, without and with channel pruning."""
    total = analysis.bandwidth.total
    return FeatureMapLoad(
        unpruned_mb=total.ifm * 8 / 1e6,
        pruned_mb=tuple((total.ifm - saved) * 8 / 1e6 for saved in total.saved.channel),
    )


def measure(subject: Subject, options: Options) -> Measured:
    """Fig 3 and Fig 5 on dog.jpg, Table 2 on the photos, Table 3 on the accuracy samples."""
    dog = _analyze(subject, (IMAGES / FIG3_PHOTO,), limit=None)
    photos = _analyze(subject, tuple(IMAGES / name for name in PHOTOS), limit=options.limit)
    accuracy = measure_accuracy(
        load_model(subject.path),
        SampleSource(
            images=accuracy_images(options),
            preset=subject.preset,
            batch_size=BATCH_SIZE,
            limit=options.limit,
        ),
        eps=EPS,
        labels=options.labels,
    )
    kind: Kind = "stand-in" if subject.stand_in else "trained"
    return Measured(
        subject=subject,
        kind="random" if photos.random_weights else kind,
        fig3=conv_figures(dog),
        fig5=feature_map_load(dog),
        table2=conv_figures(photos),
        photos=photos.activations.samples,
        accuracy=accuracy,
    )


def _analyze(subject: Subject, images: tuple[Path, ...], *, limit: int | None) -> Analysis:
    calibration = SampleSource(
        images=images, preset=subject.preset, batch_size=BATCH_SIZE, limit=limit
    )
    return analyze_model(subject.path, calibration, eps=EPS, bits=BITS)


def accuracy_images(options: Options) -> tuple[Path, ...]:
    """``--images``; else the images of a ``--labels`` folder tree; else the paper's photos."""
    if options.images:
        return options.images
    if options.labels is not None and options.labels.kind == "tree":
        return tuple(image_files(options.labels))
    return tuple(IMAGES / name for name in PHOTOS)


# --- finding and converting the models --------------------------------------------------------


def find_weights(network: Network, weights_dir: Path) -> Path | None:
    """A ready ``<name>.onnx`` in ``weights_dir``, else a Darknet weights file, else None."""
    candidates = (f"{network.key}.onnx", *network.weights_files)
    return next((weights_dir / name for name in candidates if (weights_dir / name).is_file()), None)


def prepare(network: Network, options: Options, temp: Path) -> Subject | None:
    """The model to measure for ``network`` (converted into ``temp``), or None without weights."""
    cfg = options.cfg_dir / f"{network.key}.cfg"
    if options.random_weights:
        weights = temp / f"{network.key}.weights"
        write_random_weights(cfg, weights)
        subject = convert(network, cfg, weights, temp, preset=RANDOM_PRESET)
        weights.unlink()  # VGG-16's is 550 MB: keep one copy on disk, the ONNX file
        return subject
    found = find_weights(network, options.weights_dir)
    if found is None:
        return None
    if found.suffix == ".onnx":
        return Subject(network, found, str(found), network.preset)
    return convert(network, cfg, found, temp, preset=network.preset)


def convert(network: Network, cfg: Path, weights: Path, temp: Path, *, preset: str) -> Subject:
    """Convert a Darknet cfg + weights into ``temp``, never next to the user's files."""
    path = temp / f"{network.key}.onnx"
    onnx.save(convert_darknet(cfg, weights), str(path))
    return Subject(network, path, f"{cfg.name} + {weights.name}", preset)


def stand_in() -> Subject:
    """The embedded EfficientNet-Lite0, measured in MobileNet v2's place."""
    mobilenet = next(network for network in NETWORKS if network.key == "mobilenet")
    origin = f"{STAND_IN_MODEL.name} (real ImageNet weights)"
    return Subject(mobilenet, STAND_IN_MODEL, origin, STAND_IN_PRESET, stand_in=True)


# --- the report -------------------------------------------------------------------------------


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or ``-``."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def measured_label(result: Measured) -> str:
    """The source every measured row names: a trained, random or stand-in network."""
    return {"trained": "measured", "random": "RANDOM WEIGHTS", "stand-in": "STAND-IN"}[result.kind]


def format_title(result: Measured) -> Text:
    """The network, the model measured and how."""
    subject, conv = result.subject, result.table2
    text = Text(f"{subject.network.title}: ", style="bold")
    if result.kind == "random":
        text.append("RANDOM WEIGHTS, ", style="bold red")
    if result.kind == "stand-in":
        text.append(f"STAND-IN {STAND_IN_NAME}, not the paper's network: ", style="bold yellow")
    text.append(f"{subject.origin}\npreset {subject.preset}; {conv.conv_layers} conv layers")
    if conv.compute_layers > conv.conv_layers:
        text.append(f" (+{conv.compute_layers - conv.conv_layers} FC, left out of Fig 3/Table 2)")
    text.append(f", paper {subject.network.paper.conv_layers}")
    return text


Row = tuple[str, str, list[str]]


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
    if report.labelled:
        measured: Row = ("T3 top-1", label, _measured_losses(report))
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


def format_network(result: Measured) -> Group:
    """One network: the paper's figures beside the measured ones, ε by ε."""
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
    return (
        f"Table 2 at ε=0.1, saved / total values per photo: paper {paper.elements} (all "
        f"outputs), measured {saved_k:,.0f}k / {conv.elements_per_sample / 1000:,.0f}k (conv "
        f"outputs; photos: {result.photos}). Fig 5 unpruned: {fig5}measured "
        f"{result.fig5.unpruned_mb:.1f} Mb. T3 samples: {accuracy.samples}, labelled: "
        f"{accuracy.labelled}."
    )


def format_settings(options: Options) -> Text:
    """What was run and how each figure is computed, printed once above the networks."""
    lines = [
        f"Paper settings: batch {BATCH_SIZE}, ε = {', '.join(f'{e:g}' for e in EPS)}, "
        f"{BITS}-bit accounting, channel pruning. Photos: {', '.join(PHOTOS)} "
        "(scikit-image's chelsea.jpg stands in for the paper's cat photo).",
        f"- Fig 3: share of conv-output values with |x| <= ε, unweighted mean over the conv "
        f"layers (FC left out, as in the paper), {FIG3_PHOTO}.",
        "- Table 2: share of conv-output values in all-zero channels, over the photos (the "
        "analysis summary's OFM channel-saved share, conv layers only); the paper divides by "
        "all output values (conv, pool, FC, shortcut). layers: conv layers with a zero channel.",
        f"- Fig 5 Mb: IFM load of the compute layers at {BITS} bits, {FIG3_PHOTO}, after "
        "channel pruning (the paper gives it for MobileNet v2 at ε=0).",
        "- T3 (Table 3): the paper's top-1 and loss (points) are over 2,000 ImageNet validation "
        "images: not reproducible here without them (give --images and --labels). Without "
        "labels, T3 agree = pruned top-1 equal to unpruned top-1. T3 load: IFM values of the "
        "compute layers skipped in the pruned run (FC inputs included).",
    ]
    if options.random_weights:
        lines.append(
            "RANDOM WEIGHTS: every network below is its paper cfg with random weights (preset "
            f"{RANDOM_PRESET}); these figures say nothing about the trained networks."
        )
    return Text("\n".join(lines))


def format_missing(
    missing: Sequence[Network], weights_dir: Path, *, stand_in_used: bool
) -> RenderableType:
    """Which weights to fetch, and from where, for the networks that were not measured."""
    table = Table(
        title=f"Not measured: no weights in {_shown(weights_dir)}; put the file there "
        "(this script downloads nothing)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("network", no_wrap=True)
    table.add_column("fetch")
    for network in missing:
        table.add_row(network.title, network.fetch)
    if not stand_in_used:
        return table
    note = Text(
        f"MobileNet v2 was measured with a STAND-IN: the embedded {STAND_IN_NAME} "
        "(MobileNetV2-like, ReLU6, real ImageNet weights), not the paper's Caffe MobileNet v2."
    )
    return Group(table, note)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- JSON -------------------------------------------------------------------------------------


def network_document(result: Measured) -> Document:
    """One measured network with the paper's numbers beside it."""
    accuracy = result.accuracy
    return {
        "network": result.subject.network.key,
        "model": result.subject.origin,
        "kind": result.kind,
        "random_weights": result.kind == "random",
        "stand_in": result.kind == "stand-in",
        "preset": result.subject.preset,
        "paper": paper_document(result.subject.network.paper),
        "measured": {
            "conv_layers": result.table2.conv_layers,
            "fig3_conv_mean_zero": list(result.fig3.paper_mean),
            "table2_conv_saved_share": list(result.table2.saved_share),
            "table2_layers_with_zero_channels": list(result.table2.layers_with_zero_channels),
            "fig5_ifm_mb": result.fig5.unpruned_mb,
            "fig5_pruned_ifm_mb": list(result.fig5.pruned_mb),
            "photos": result.photos,
            "accuracy_samples": accuracy.samples,
            "labelled": accuracy.labelled,
            "top1": [r.top1 for r in accuracy.results],
            "agreement": [r.agreement for r in accuracy.results],
            "load_reduction": [r.saved_fraction for r in accuracy.results],
        },
    }


def paper_document(paper: PaperNumbers) -> Document:
    """The paper's numbers for one network (fractions; Table 2's ``table2_saved`` is at ε=0.1)."""
    table3: Any = None
    if paper.table3 is not None:
        table3 = {
            "top1": paper.table3.top1,
            "top1_loss": list(paper.table3.loss),
            "load_reduction": list(paper.table3.reduction),
        }
    return {
        "fig3": list(paper.fig3),
        "table2_saved": paper.saved,
        "table2_elements": paper.elements,
        "saved_at_eps_0": paper.saved_at_zero,
        "layers_at_eps_0": paper.layers_at_zero,
        "fig5_mb": list(paper.fig5_mb) if paper.fig5_mb else None,
        "table3": table3,
    }


def paper_run_document(
    results: Sequence[Measured], missing: Sequence[Network], options: Options
) -> Document:
    """The whole run: settings, measured networks, and what to fetch for the rest."""
    return {
        "schema_version": 1,
        "eps": list(EPS),
        "bits": BITS,
        "batch_size": BATCH_SIZE,
        "photos": list(PHOTOS),
        "random_weights": options.random_weights,
        "networks": [network_document(result) for result in results],
        "missing": [{"network": n.key, "fetch": n.fetch} for n in missing],
    }


# --- the command line -------------------------------------------------------------------------


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"alexnet,tiny"`` as those networks, in the paper's order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(NETWORK_KEYS))
    if unknown or not names:
        known = ", ".join(NETWORK_KEYS)
        raise argparse.ArgumentTypeError(
            f"unknown network {', '.join(unknown) or '(none)'}: choose from {known}"
        )
    return tuple(network for network in NETWORKS if network.key in names)


def build_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=CFG_DIR,
        help="folder with <name>.weights (Darknet) or <name>.onnx (default: the cfgs' folder)",
    )
    parser.add_argument("--cfg-dir", type=Path, default=CFG_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--networks",
        type=parse_networks,
        default=NETWORKS,
        help=f"comma list of networks to run (default all: {','.join(NETWORK_KEYS)})",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="run every cfg with random weights (a pipeline demo; VGG-16's are 550 MB in a "
        "temporary folder)",
    )
    parser.add_argument("--images", type=Path, nargs="+", help="images for Table 3's accuracy")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE|DIR",
        help="labels for --images in each model's class order (CSV name,class_index, or a "
        "folder of WordNet-id subfolders), for top-1",
    )
    parser.add_argument("--limit", type=int, help="at most N samples per run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write a JSON document")
    return parser


def resolve_options(args: argparse.Namespace) -> Options:
    """The flags as Options; labels are read here so that a bad file fails before any run."""
    return Options(
        weights_dir=args.weights_dir,
        cfg_dir=args.cfg_dir,
        networks=tuple(args.networks),
        random_weights=args.random_weights,
        images=tuple(args.images) if args.images else None,
        labels=load_labels(args.labels) if args.labels is not None else None,
        limit=args.limit,
    )


def run(options: Options, console: Console) -> tuple[list[Measured], list[Network]]:
    """Measure every network that has weights, and the stand-in when MobileNet v2 has none."""
    console.print(format_settings(options))
    results: list[Measured] = []
    missing: list[Network] = []
    for network in options.networks:
        with tempfile.TemporaryDirectory(prefix="onnx-prune-paper-") as temp:
            subject = prepare(network, options, Path(temp))
            if subject is None:
                missing.append(network)
                continue
            results.append(measure(subject, options))
        console.print(format_network(results[-1]))
    stand_in_used = any(network.key == "mobilenet" for network in missing)
    if stand_in_used:
        results.append(measure(stand_in(), options))
        console.print(format_network(results[-1]))
    if missing:
        console.print(format_missing(missing, options.weights_dir, stand_in_used=stand_in_used))
    return results, missing


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the script; returns the exit status."""
    args = build_parser().parse_args(argv)
    console = console or Console()
    try:
        options = resolve_options(args)
        results, missing = run(options, console)
    except OnnxPruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        return 2
    if args.json is not None:
        args.json.write_text(dumps(paper_run_document(results, missing, options)), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
