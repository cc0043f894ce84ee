"""Every JSON document onnx-prune writes (schema_version 1); no other module builds one.

``weights`` writes the base document; ``analyze`` extends the same document with feature-map,
bandwidth and pruning fields, so one parser serves every command. ``accuracy``, the ε map file,
``zoo --json``, ``zoo --save-baseline`` and ``paper --json`` have their own documents below.
Field names are an interface that CI scripts depend on: add fields freely, never rename or remove
them. JSON Schemas in ``onnx_prune/schemas/`` describe every one of them (its README says how to
add a field); the tests validate every document they write against them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onnx_prune.bandwidth import (
    GRANULARITIES,
    BandwidthReport,
    LayerLoad,
    LoadTotal,
    SavedBytes,
)
from onnx_prune.baseline import BASELINE_SCHEMA_VERSION, DIGITS
from onnx_prune.layers import NotAnalysed
from onnx_prune.paper.networks import EPS as PAPER_EPS
from onnx_prune.weights import LayerWeights, SparsityTotal, TensorSparsity, WeightReport

if TYPE_CHECKING:
    from onnx_prune.accuracy import AccuracyReport, EpsAccuracy
    from onnx_prune.analysis import Analysis
    from onnx_prune.baseline import Change, Comparison, ModelFigures
    from onnx_prune.budget import Measured
    from onnx_prune.calibrate import TensorStats
    from onnx_prune.epsmap import EpsMap, MapSavings
    from onnx_prune.paper.measure import Measured as PaperMeasured
    from onnx_prune.paper.measure import Missing as PaperMissing
    from onnx_prune.summary import MapSummary, Summary
    from onnx_prune.tune import LayerSensitivity, SplitFigures, TuneReport
    from onnx_prune.zoo import ModelResult, ZooOutcome

SCHEMA_VERSION = 1

Document = dict[str, Any]


def weights_document(report: WeightReport) -> Document:
    """The base document: per-layer weight and bias sparsity, totals and what was unresolved."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": report.model,
        "random_weights": report.random_weights,
        "eps": list(report.eps),
        "layers": [
            {
                "name": layer.name,
                "op_type": layer.op_type,
                "weight": tensor_document(layer.weight),
                "bias": tensor_document(layer.bias) if layer.bias else None,
                **_bias_unresolved(layer),
            }
            for layer in report.layers
        ],
        "totals": _totals_document(report),
        "unresolved": [_not_analysed_document(item) for item in report.unresolved],
        "coverage": {"layers": report.coverage.layers, "of": report.coverage.of},
    }


def _bias_unresolved(layer: LayerWeights) -> Document:
    return {"bias_unresolved": layer.bias_unresolved} if layer.bias_unresolved else {}


def _not_analysed_document(item: NotAnalysed) -> Document:
    document: Document = {"name": item.name, "op_type": item.op_type, "reason": item.reason}
    if item.weight_share is not None:
        document["weight_share"] = item.weight_share
    return document


def tensor_document(tensor: TensorSparsity) -> Document:
    """One stored tensor's counts; ``zeros[i]`` is the count for ``eps[i]``."""
    document: Document = {
        "tensor": tensor.tensor,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "elements": tensor.elements,
        "zeros": list(tensor.zeros),
        "zero_filters": tensor.zero_filters,
    }
    if tensor.filters is not None:
        document["filters"] = tensor.filters
        document["zero_input_channels"] = tensor.zero_input_channels
    if tensor.quantized:
        document["quantized"] = True
    return document


def _totals_document(report: WeightReport) -> Document:
    document = _total(report.total())
    document["by_op_type"] = {op: _total(report.total(op)) for op in report.op_types()}
    return document


def _total(total: SparsityTotal) -> Document:
    return {
        "layers": total.layers,
        "elements": total.elements,
        "zeros": list(total.zeros),
        "filters": total.filters,
        "zero_filters": total.zero_filters,
    }


def dumps(document: Document) -> str:
    """Serialise with NaN/inf written as null, so strict JSON parsers accept the output."""
    return json.dumps(_finite(document), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def analysis_document(analysis: Analysis) -> Document:
    """The weights document extended with feature-map statistics, samples and a summary."""
    document = weights_document(analysis.weights)
    weights = {layer.name: layer for layer in analysis.weights.layers}
    stats = analysis.activations.tensors
    loads = {load.name: load for load in analysis.bandwidth.layers}
    document["layers"] = [
        {
            "name": layer.name,
            "op_type": layer.op_type,
            "weight": _weight_document(weights.get(layer.name)),
            "bias": _bias_document(weights.get(layer.name)),
            **(_bias_unresolved(weights[layer.name]) if layer.name in weights else {}),
            "ifm": feature_map_document(stats[layer.ifm]),
            "ofm": feature_map_document(stats[layer.ofm]),
            **bandwidth_layer_document(loads[layer.name]),
        }
        for layer in analysis.layers
    ]
    document["opset"] = analysis.opset
    document["samples"] = analysis.activations.samples
    document["skipped_inputs"] = [
        {"name": item.name, "reason": item.reason} for item in analysis.skipped_inputs
    ]
    document["preset"] = analysis.preset
    document["batch_size"] = analysis.batch_size
    document["padded_samples"] = analysis.padded_samples
    document["tile"] = list(analysis.activations.tile)
    document.update(analysis.providers.document())
    document["summary"] = summary_document(analysis.summary)
    document["bandwidth"] = bandwidth_totals_document(analysis.bandwidth)
    return document


def _weight_document(layer: LayerWeights | None) -> Document | None:
    return tensor_document(layer.weight) if layer is not None else None


def _bias_document(layer: LayerWeights | None) -> Document | None:
    return tensor_document(layer.bias) if layer is not None and layer.bias else None


def feature_map_document(stats: TensorStats) -> Document:
    """Totals over all samples for one feature map; lists are indexed like ``eps``."""
    return {
        "tensor": stats.tensor,
        "shape": list(stats.shape),
        "elements": stats.elements,
        "zeros": list(stats.zeros),
        "channels": stats.channels,
        "zero_channels": list(stats.zero_channels),
        "saved_elements": list(stats.saved_elements),
        "tiles": stats.tiles,
        "zero_tiles": list(stats.zero_tiles),
        "tile_saved_elements": list(stats.tile_saved_elements),
    }


def summary_document(summary: Summary) -> Document:
    """Network-level figures: paper mean, weighted, channel-saved share; per sample shares."""
    return {
        "ifm": _map_document(summary.ifm),
        "ofm": _map_document(summary.ofm),
        "per_sample": [
            {
                "name": share.name,
                "ifm_saved_share": list(share.ifm),
                "ofm_saved_share": list(share.ofm),
            }
            for share in summary.per_sample
        ],
    }


def _map_document(summary: MapSummary) -> Document:
    return {
        "paper_mean": list(summary.paper_mean),
        "weighted": list(summary.weighted),
        "channel_saved_share": list(summary.channel_saved_share),
        "layers_with_zero_channels": list(summary.layers_with_zero_channels),
    }


def bandwidth_layer_document(layer: LayerLoad) -> Document:
    """A layer's JSON fields: ``bytes`` (integers), ``saved_bytes`` (indexed like eps), ...

    ``saved_bytes`` and ``macs_skipped_channel`` are means per sample rounded to integers;
    ``weights``, ``macs`` and ``ifm_share`` are null when the layer's weight is unknown.
    """
    skipped = layer.macs_skipped_channel
    return {
        "kind": layer.kind,
        "macs": layer.macs,
        "bytes": {"weights": layer.bytes.weights, "ifm": layer.bytes.ifm, "ofm": layer.bytes.ofm},
        "saved_bytes": _saved_document(layer.saved),
        "macs_skipped_channel": _rounded(skipped) if skipped is not None else None,
        "ifm_share": layer.ifm_share,
    }


def bandwidth_totals_document(report: BandwidthReport) -> Document:
    """The value of the document's ``"bandwidth"`` field: totals, per kind, gaps (per-sample
    shares are in the ``"summary"``)."""
    return {
        "bits": report.bits,
        "unit": "bytes per sample",
        "samples": report.samples,
        "tile": list(report.tile),
        "total": _total_document(report.total),
        "by_kind": {kind: _total_document(total) for kind, total in report.by_kind.items()},
        "not_analysed": [_not_analysed_document(item) for item in report.not_analysed],
        "assumed_widths": list(report.assumed_widths),
    }


def _total_document(total: LoadTotal) -> Document:
    return {
        "layers": total.layers,
        "macs": total.macs,
        "bytes": {"weights": total.weights, "ifm": total.ifm, "ofm": total.ofm},
        "load": total.load,
        "ifm_share": total.ifm_share,
        "saved_bytes": _saved_document(total.saved),
        "pruned_load": {g: _rounded(total.pruned_load(g)) for g in GRANULARITIES},
        "saved_share": {g: list(total.saved_share(g)) for g in GRANULARITIES},
        "ifm_saved_share": {g: list(total.ifm_saved_share(g)) for g in GRANULARITIES},
        "macs_skipped_channel": _rounded(total.macs_skipped_channel),
        "macs_skipped_share": list(total.macs_skipped_share()),
    }


def _saved_document(saved: SavedBytes) -> dict[str, list[int]]:
    return {granularity: _rounded(saved.of(granularity)) for granularity in GRANULARITIES}


def _rounded(values: Sequence[float]) -> list[int]:
    return [round(value) for value in values]


# accuracy


def accuracy_document(
    report: AccuracyReport, *, max_drop: float | None = None, min_cosine: float | None = None
) -> Document:
    """The ``--json`` document of ``accuracy`` (schema_version 1)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": report.model,
        "random_weights": report.random_weights,
        "granularity": report.granularity,
        "eps": list(report.eps),
        "samples": report.samples,
        "labelled": report.labelled,
        "output_kind": report.output_kind,
        "batch_size": report.batch_size,
        "padded_samples": report.padded_samples,
        "pruned_layers": report.pruned_layers,
        **report.providers.document(),
        "baseline": {"top1": report.baseline.top1, "top5": report.baseline.top5},
        "results": [_accuracy_result_document(result) for result in report.results],
        "max_top1_drop": max_drop,
        "max_eps_within_budget": (
            None if max_drop is None else report.max_eps_within_budget(max_drop)
        ),
        "min_cosine": min_cosine,
        "max_eps_within_cosine": (
            None if min_cosine is None else report.max_eps_within_cosine(min_cosine)
        ),
        "outputs": list(report.outputs),
        "classifier_outputs": list(report.classifier_outputs),
        "scored_output": report.scored_output,
        "classes": report.classes,
        "skipped_inputs": [
            {"name": item.name, "reason": item.reason} for item in report.skipped_inputs
        ],
        "not_pruned": [
            {"tensor": item.tensor, "layers": list(item.layers), "reason": item.reason}
            for item in report.not_pruned
        ],
        "eps_map": None if report.eps_map is None else eps_map_document(report.eps_map),
    }


def _accuracy_result_document(result: EpsAccuracy) -> Document:
    return {
        "eps": result.eps,
        "top1": result.top1,
        "top5": result.top5,
        "agreement": result.agreement,
        "kl": result.kl,
        "saved_fraction": result.saved_fraction,
        "pruned_elements": result.pruned_elements,
        "ifm_elements": result.ifm_elements,
        "outputs": {
            name: {"cosine": fidelity.cosine, "relative_l2": fidelity.relative_l2}
            for name, fidelity in result.outputs.items()
        },
    }


# ε maps (accuracy --eps-map, analyze --eps-map)


def eps_map_document(eps_map: EpsMap) -> Document:
    """The map file's document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": eps_map.model,
        "metric": eps_map.metric,
        "eps": dict(eps_map.eps),
    }


def map_savings_document(savings: MapSavings, eps_map: EpsMap) -> Document:
    """The ``eps_map`` section of ``analyze --json``: the map and the savings per layer."""
    return {
        "metric": eps_map.metric,
        "eps": dict(eps_map.eps),
        "layers": [
            {
                "name": layer.name,
                "ifm": layer.ifm,
                "eps": layer.eps,
                "ifm_bytes": layer.ifm_bytes,
                "saved_bytes": {g: round(layer.saved[g]) for g in GRANULARITIES},
            }
            for layer in savings.layers
        ],
        "ifm_bytes": savings.ifm_bytes,
        "saved_bytes": {g: round(savings.saved[g]) for g in GRANULARITIES},
        "saved_share": {g: savings.saved_share(g) for g in GRANULARITIES},
    }


# zoo


def zoo_document(outcome: ZooOutcome) -> Document:
    """Every model's status, figures and full analysis document, the counts and the comparison."""
    comparison = outcome.comparison
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "zoo",
        "eps": list(outcome.eps),
        **outcome.providers.document(),
        "models": [_model_document(outcome, result) for result in outcome.results],
        "summary": _counts_document(outcome),
        "comparison": _comparison_document(comparison) if comparison is not None else None,
    }


def _model_document(outcome: ZooOutcome, result: ModelResult) -> Document:
    figures = result.figures
    document: Document = {
        "model": result.model.key,
        "path": str(result.model.path),
        "status": outcome.status(result),
        "reason": result.error or result.partial,
        "seconds": round(result.seconds, 3),
        "figures": model_baseline(figures, outcome.eps) if figures is not None else None,
        "random_weights": figures.random_weights if figures is not None else None,
        "analysis": result.document,
    }
    if result.traceback:
        document["traceback"] = result.traceback
    return document


def _counts_document(outcome: ZooOutcome) -> Document:
    statuses = [outcome.status(result) for result in outcome.results]
    missing = outcome.comparison.missing if outcome.comparison is not None else ()
    counts: Document = {"models": len(statuses), "missing": len(missing)}
    counts.update({status: statuses.count(status) for status in ("ok", "partial", "new", "failed")})
    counts["known_failure"] = statuses.count("known-failure")
    counts["now_passing"] = statuses.count("now-passing")
    counts["regression"] = statuses.count("regression")
    counts["passed"] = outcome.passed
    return counts


def _comparison_document(comparison: Comparison) -> Document:
    return {
        "baseline": str(comparison.baseline),
        "tolerance": comparison.tolerance,
        "regressions": [_change_document(change) for change in comparison.regressions],
        "improvements": [_change_document(change) for change in comparison.improvements],
        "missing": list(comparison.missing),
        "new": list(comparison.new),
        "notes": list(comparison.notes),
    }


def _change_document(change: Change) -> Document:
    return {
        "model": change.model,
        "figure": change.name,
        "eps": change.eps,
        "label": change.label,
        "baseline": change.baseline,
        "now": change.now,
        "change": change.now - change.baseline,
    }


# zoo baselines (--save-baseline)


def baseline_document(outcome: ZooOutcome) -> Document:
    """The key figures of every analysed model, keyed by model key (failed models left out)."""
    return {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "tool": "onnx-prune zoo",
        "eps": list(outcome.eps),
        **outcome.providers.document(),
        "models": {
            result.model.key: model_baseline(result.figures, outcome.eps)
            for result in outcome.results
            if result.figures is not None
        },
    }


def baseline_text(outcome: ZooOutcome) -> str:
    """The baseline as JSON with sorted keys, one figure per line."""
    return json.dumps(baseline_document(outcome), indent=2, sort_keys=True) + "\n"


def model_baseline(figures: ModelFigures, eps: Sequence[float]) -> Document:
    """One model's figures: ``name: value``, or ``name: {ε: value}`` for figures per ε."""
    document: Document = {
        "opset": figures.opset,
        "compute_layers": figures.compute_layers,
        "samples": figures.samples,
    }
    for figure in figures.tracked(eps):
        value = round(figure.value, DIGITS)
        if figure.eps is None:
            document[figure.name] = value
        else:
            document.setdefault(figure.name, {})[repr(figure.eps)] = value
    return document


def tune_document(report: TuneReport) -> Document:
    """The ``--json`` document of ``tune`` (schema_version 1)."""
    search = report.search
    return {
        "schema_version": SCHEMA_VERSION,
        "model": report.model,
        "random_weights": report.random_weights,
        "granularity": report.granularity,
        "budget": {"kind": report.budget.kind, "limit": report.budget.limit},
        "metric": report.budget.describe(),
        "candidates": list(report.candidates),
        "holdout": report.holdout_fraction,
        "ifm_bytes": report.ifm_bytes,
        "sensitivity": [_sensitivity_document(layer) for layer in search.layers],
        "eps_map": None if report.eps_map is None else eps_map_document(report.eps_map),
        "chosen_is_uniform": search.chose_uniform,
        "predicted": {
            "saved_bytes": search.chosen.predicted_saved_bytes if search.chosen else None,
            "metric": report.predicted_metric,
        },
        "uniform": {
            "best_eps": report.best_uniform_eps,
            "sweep": [
                {"eps": eps, "predicted_saved_bytes": saved, **_measured_document(measured)}
                for eps, saved, measured in zip(
                    report.candidates, search.uniform_saved_bytes, search.uniform, strict=True
                )
            ],
        },
        "splits": {
            "calibration": _tune_split_document(report.calibration),
            "holdout": _tune_split_document(report.holdout),
        },
        "validations": [
            {
                "threshold": item.threshold,
                "eps": dict(item.eps),
                "predicted_saved_bytes": item.predicted_saved_bytes,
                **_measured_document(item.measured),
            }
            for item in search.validations
        ],
        "runs": {
            "session_runs": report.runs.runs,
            "sample_rows": report.runs.rows,
            "analysis_runs": report.runs.analysis_runs,
            "analysis_rows": report.runs.analysis_rows,
        },
    }


def _sensitivity_document(layer: LayerSensitivity) -> Document:
    return {
        "tensor": layer.tensor,
        "layers": list(layer.layers),
        "ifm_bytes": layer.ifm_bytes,
        "points": [
            {
                "eps": point.eps,
                "saved_bytes": point.saved_bytes,
                "source": point.source,
                "same_as": point.same_as,
                **(_measured_document(point.measured) if point.measured else {}),
            }
            for point in layer.points
        ],
    }


def _measured_document(measured: Measured | None) -> Document:
    if measured is None:
        return {"metric": None, "score": None, "saved_fraction": None, "within": None}
    return {
        "metric": measured.metric,
        "score": measured.score,
        "saved_fraction": measured.saved_fraction,
        "within": measured.within,
    }


def _tune_split_document(figures: SplitFigures) -> Document:
    return {
        "samples": figures.samples,
        "map": _measured_document(figures.chosen),
        "uniform": _measured_document(figures.uniform),
    }


# --- onnx-prune paper ---------------------------------------------------------------------------


def paper_network_document(result: PaperMeasured) -> Document:
    """``onnx-prune paper``: one measured network, the paper's numbers beside the measured ones."""
    from onnx_prune.paper.measure import FIG3_PHOTO

    subject, paper = result.subject, result.subject.network.paper
    return {
        "paper_name": subject.network.title,
        "model": subject.label,
        "origin": subject.origin,
        "weights": result.weights,
        "preset": subject.preset,
        "source": dict(subject.source),
        "checks": [
            {"what": c.what, "expected": c.expected, "found": c.found, "passed": c.passed}
            for c in subject.checks
        ],
        "fig3": {
            "eps": list(PAPER_EPS),
            "paper": list(paper.fig3),
            "measured": list(result.fig3.paper_mean),
            "layers": result.fig3.conv_layers,
            "paper_layers": paper.conv_layers,
            "photo": FIG3_PHOTO,
        },
        "table2": _paper_table2(result),
        "fig5": {
            "eps": list(PAPER_EPS),
            "paper_mb": list(paper.fig5_mb) if paper.fig5_mb else None,
            "measured_unpruned_mb": result.fig5.unpruned_mb,
            "measured_pruned_mb": list(result.fig5.pruned_mb),
        },
        "table3": _paper_table3(result),
    }


def _paper_table2(result: PaperMeasured) -> Document:
    paper, conv = result.subject.network.paper, result.table2
    return {
        "eps": list(PAPER_EPS),
        "paper": {"saved_at_eps_0.1": paper.saved, "saved_at_eps_0": paper.saved_at_zero,
                  "elements": paper.elements, "layers_at_eps_0": paper.layers_at_zero},
        "measured": list(conv.saved_share),
        "layers_with_zero_channels": list(conv.layers_with_zero_channels),
        "layers": conv.conv_layers,
        "photos": result.photos,
    }  # fmt: skip


def _paper_table3(result: PaperMeasured) -> Document:
    table3, accuracy = result.subject.network.paper.table3, result.accuracy
    classifier = result.subject.classifier
    paper: Any = None
    if table3 is not None:
        paper = {
            "top1": table3.top1,
            "top1_loss": list(table3.loss),
            "load_reduction": list(table3.reduction),
        }
    return {
        "eps": list(PAPER_EPS),
        "paper": paper,
        "samples": accuracy.samples,
        "labelled": accuracy.labelled,
        "classifier": classifier,
        "top1": [r.top1 for r in accuracy.results] if classifier else None,
        "agreement": [r.agreement for r in accuracy.results] if classifier else None,
        "load_reduction": [r.saved_fraction for r in accuracy.results],
    }


def paper_document(
    results: Sequence[PaperMeasured | PaperMissing], *, random_weights: bool
) -> Document:
    """``onnx-prune paper --json``: the settings, every measured network with the paper's numbers
    beside its own (``paper_name``, ``model``, ``weights``: real, random or stand-in, ``source``,
    ``fig3``, ``table2``, ``fig5``, ``table3``), and what was not measured and why."""
    from onnx_prune.paper import measure

    return {
        "schema_version": SCHEMA_VERSION,
        "eps": list(PAPER_EPS),
        "bits": measure.BITS,
        "batch_size": measure.BATCH_SIZE,
        "photos": list(measure.PHOTOS),
        "random_weights": random_weights,
        "networks": [paper_network_document(r) for r in results if isinstance(r, measure.Measured)],
        "not_measured": [
            {"name": r.name, "reason": r.reason} for r in results if isinstance(r, measure.Missing)
        ],
    }
