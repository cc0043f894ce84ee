"""The ``onnx-prune paper --json`` document (schema_version 1).

``{"schema_version": 1, "networks": [{"paper_name", "model", "weights": "real" | "random" |
"stand-in", "source": {...}, "fig3": {"eps", "paper", "measured", "layers"}, "table2",
"fig5", "table3"}]}``; networks not measured are listed under ``not_measured``. Fractions, not
percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnx_prune.jsondoc import SCHEMA_VERSION, Document
from onnx_prune.paper.measure import BATCH_SIZE, BITS, FIG3_PHOTO, PHOTOS, Measured, Missing
from onnx_prune.paper.networks import EPS


def network_document(result: Measured) -> Document:
    """One measured network with the paper's numbers beside the measured ones."""
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
            "eps": list(EPS),
            "paper": list(paper.fig3),
            "measured": list(result.fig3.paper_mean),
            "layers": result.fig3.conv_layers,
            "paper_layers": paper.conv_layers,
            "photo": FIG3_PHOTO,
        },
        "table2": _table2(result),
        "fig5": {
            "eps": list(EPS),
            "paper_mb": list(paper.fig5_mb) if paper.fig5_mb else None,
            "measured_unpruned_mb": result.fig5.unpruned_mb,
            "measured_pruned_mb": list(result.fig5.pruned_mb),
        },
        "table3": _table3(result),
    }


def _table2(result: Measured) -> Document:
    paper, conv = result.subject.network.paper, result.table2
    return {
        "eps": list(EPS),
        "paper": {"saved_at_eps_0.1": paper.saved, "saved_at_eps_0": paper.saved_at_zero,
                  "elements": paper.elements, "layers_at_eps_0": paper.layers_at_zero},
        "measured": list(conv.saved_share),
        "layers_with_zero_channels": list(conv.layers_with_zero_channels),
        "layers": conv.conv_layers,
        "photos": result.photos,
    }  # fmt: skip


def _table3(result: Measured) -> Document:
    table3, accuracy = result.subject.network.paper.table3, result.accuracy
    paper: Any = None
    if table3 is not None:
        paper = {
            "top1": table3.top1,
            "top1_loss": list(table3.loss),
            "load_reduction": list(table3.reduction),
        }
    return {
        "eps": list(EPS),
        "paper": paper,
        "samples": accuracy.samples,
        "labelled": accuracy.labelled,
        "top1": [r.top1 for r in accuracy.results],
        "agreement": [r.agreement for r in accuracy.results],
        "load_reduction": [r.saved_fraction for r in accuracy.results],
    }


def paper_document(results: Sequence[Measured | Missing], *, random_weights: bool) -> Document:
    """The whole run: settings, the measured networks, and what was not measured and why."""
    return {
        "schema_version": SCHEMA_VERSION,
        "eps": list(EPS),
        "bits": BITS,
        "batch_size": BATCH_SIZE,
        "photos": list(PHOTOS),
        "random_weights": random_weights,
        "networks": [network_document(r) for r in results if isinstance(r, Measured)],
        "not_measured": [
            {"name": r.name, "reason": r.reason} for r in results if isinstance(r, Missing)
        ],
    }
