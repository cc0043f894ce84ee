"""The accuracy budget of ``tune``: which metric, its limit, and one measured assignment.

- ``top1_drop``: top-1 of the unpruned model minus top-1 pruned, in percentage points, at most
  the limit (needs labels);
- ``agreement``: the share of samples whose top-1 equals the unpruned model's, at least the limit;
- ``cosine``: the mean cosine similarity of pruned and unpruned outputs, at least the limit.

Besides the budget metric every measurement carries a finer **score** of how far the pruned
outputs moved (KL(unpruned ‖ pruned) in nats for classifiers, 1 − cosine otherwise): top-1 and
agreement change in whole samples, so two layers that both keep agreement at 100% are told apart
by their score. ``loss`` is how much of the metric a measurement gives away (0 for none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from onnx_prune.accuracy import AccuracyReport, EpsAccuracy, accuracy_drop
from onnx_prune.errors import InputDataError

BudgetKind = Literal["top1_drop", "agreement", "cosine"]
BUDGET_KINDS: tuple[BudgetKind, ...] = ("top1_drop", "agreement", "cosine")
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Budget:
    """The metric ``tune`` must keep and its limit (pp for ``top1_drop``, a fraction else)."""

    kind: BudgetKind
    limit: float

    def describe(self) -> str:
        """``agreement >= 1`` and the like, as the map file's ``metric`` records it."""
        if self.kind == "top1_drop":
            return f"top-1 drop <= {self.limit:g} pp"
        return f"{self.kind} >= {self.limit:g}"

    def allows(self, metric: float) -> bool:
        """Whether a measured metric is within the budget."""
        if self.kind == "top1_drop":
            return metric <= self.limit + _TOLERANCE
        return metric >= self.limit - _TOLERANCE

    def loss(self, metric: float) -> float:
        """What the metric gives away against the unpruned model (0: nothing)."""
        return metric if self.kind == "top1_drop" else 1.0 - metric

    def from_loss(self, loss: float) -> float:
        """The metric that gives away ``loss``."""
        return loss if self.kind == "top1_drop" else 1.0 - loss


@dataclass(frozen=True)
class Measured:
    """One ε assignment measured on one split of the samples."""

    metric: float
    score: float
    saved_fraction: float
    within: bool
    samples: int


def measure(budget: Budget, report: AccuracyReport, result: EpsAccuracy) -> Measured:
    """The budget metric and score of one result of an accuracy sweep."""
    metric = _metric(budget, report, result)
    return Measured(
        metric=metric,
        score=result.kl if result.kl is not None else 1.0 - worst_cosine(result),
        saved_fraction=result.saved_fraction,
        within=budget.allows(metric),
        samples=report.samples,
    )


def worst_cosine(result: EpsAccuracy) -> float:
    """The lowest mean cosine similarity over the model's outputs (1 without outputs)."""
    return min((fidelity.cosine for fidelity in result.outputs.values()), default=1.0)


def _metric(budget: Budget, report: AccuracyReport, result: EpsAccuracy) -> float:
    if budget.kind == "cosine":
        return worst_cosine(result)
    if result.agreement is None:
        raise InputDataError(
            "no output of the model is shaped as class scores ([N, classes]), so top-1 and "
            "agreement are not measured: use --min-cosine"
        )
    if budget.kind == "agreement":
        return result.agreement
    drop = accuracy_drop(report, result)
    if drop is None:
        raise InputDataError(
            "--max-top1-drop needs labels: give --labels, or use --min-agreement without them"
        )
    return drop
