"""Network-level feature-map figures, named as the paper and DESIGN.md §2 define them.

- paper mean: the unweighted mean over compute layers of each layer's element sparsity (Fig 3);
- weighted: total values within ε / total values, over the layers;
- channel-saved share: values in zero channels / all values (the paper's Table 2 figure),
  over all samples and per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnx_prune.calibrate import ActivationStats, SampleStats, TensorStats
from onnx_prune.layers import ComputeLayer


@dataclass(frozen=True)
class MapSummary:
    """Figures over the IFMs or over the OFMs of every compute layer, indexed like ``eps``."""

    paper_mean: tuple[float, ...]
    weighted: tuple[float, ...]
    channel_saved_share: tuple[float, ...]
    layers_with_zero_channels: tuple[int, ...]


@dataclass(frozen=True)
class SampleShare:
    """One sample's share of feature-map values in zero channels, per ε."""

    name: str
    ifm: tuple[float, ...]
    ofm: tuple[float, ...]


@dataclass(frozen=True)
class Summary:
    """The network-level figures of one analysis."""

    ifm: MapSummary
    ofm: MapSummary
    per_sample: tuple[SampleShare, ...]


def summarize(layers: Sequence[ComputeLayer], stats: ActivationStats) -> Summary:
    """The paper's figures for the IFMs and OFMs of ``layers``."""
    ifm = [stats.tensors[layer.ifm] for layer in layers]
    ofm = [stats.tensors[layer.ofm] for layer in layers]
    width = len(stats.eps)
    return Summary(
        ifm=_map_summary(ifm, width),
        ofm=_map_summary(ofm, width),
        per_sample=tuple(_sample_share(sample) for sample in stats.per_sample),
    )


def _map_summary(maps: Sequence[TensorStats], width: int) -> MapSummary:
    elements = sum(m.elements for m in maps)
    return MapSummary(
        paper_mean=tuple(
            _mean([_share(m.zeros[k], m.elements) for m in maps]) for k in range(width)
        ),
        weighted=tuple(_share(sum(m.zeros[k] for m in maps), elements) for k in range(width)),
        channel_saved_share=tuple(
            _share(sum(m.saved_elements[k] for m in maps), elements) for k in range(width)
        ),
        layers_with_zero_channels=tuple(
            sum(1 for m in maps if m.zero_channels[k]) for k in range(width)
        ),
    )


def _sample_share(sample: SampleStats) -> SampleShare:
    return SampleShare(
        name=sample.name,
        ifm=tuple(_share(saved, sample.ifm_elements) for saved in sample.ifm_saved),
        ofm=tuple(_share(saved, sample.ofm_elements) for saved in sample.ofm_saved),
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
