"""Zoo baselines: the key figures per model stored as JSON, and regressions against them.

``FIGURES`` names every figure a baseline tracks and which way is worse; ``ModelFigures`` holds
one model's. ``jsondoc.baseline_text`` stores a zoo run's figures as small, diff-friendly JSON,
``read_baseline`` reads them back, and ``compare_to_baseline`` names every figure that moved the
bad way by more than a tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_prune.errors import OnnxPruneError, first_line
from onnx_prune.files import open_regular
from onnx_prune.runtime import CPU, Providers

BASELINE_SCHEMA_VERSION = 1
DEFAULT_TOLERANCE = 0.005
DIGITS = 6  # baseline precision: far below any sensible tolerance, keeps diffs short


class BaselineError(OnnxPruneError):
    """The baseline file cannot be read, or was made with settings this run does not share."""


@dataclass(frozen=True)
class FigureKind:
    """What one tracked figure means and which way is worse."""

    label: str
    per_eps: bool
    higher_is_better: bool = True


FIGURES: dict[str, FigureKind] = {
    "weight_zero": FigureKind("weights exactly zero", per_eps=False),
    "ifm_zero_paper_mean": FigureKind("IFM zero, paper mean", per_eps=True),
    "ifm_zero_weighted": FigureKind("IFM zero, weighted", per_eps=True),
    "ifm_channel_saved": FigureKind("IFM values in zero channels", per_eps=True),
    "load_saved": FigureKind("load saved by skipping zero channels", per_eps=True),
    "ifm_load_share": FigureKind("IFM share of load", per_eps=False, higher_is_better=False),
}
"""Every figure a baseline may hold, as fractions in [0, 1]. ``ifm_channel_saved`` is IFM values in
zero channels / IFM values; ``load_saved`` (bytes not loaded when zero channels are skipped / the
whole load: weights + IFM + OFM) and ``ifm_load_share`` (IFM bytes / the whole load) come from the
bandwidth model and are left out when it could count no layer."""


@dataclass(frozen=True)
class Figure:
    """One tracked value of one model; ``eps`` is None for figures that do not depend on ε."""

    name: str
    eps: float | None
    value: float


@dataclass(frozen=True)
class ModelFigures:
    """The key figures of one analysed model; tuples are indexed like the zoo's ε."""

    opset: int
    compute_layers: int
    random_weights: bool
    samples: int
    weight_zero: float
    ifm_zero_paper_mean: tuple[float, ...]
    ifm_zero_weighted: tuple[float, ...]
    ifm_channel_saved: tuple[float, ...]
    load_saved: tuple[float, ...] | None = None
    ifm_load_share: float | None = None

    def tracked(self, eps: Sequence[float]) -> tuple[Figure, ...]:
        """Every figure a baseline keeps, flattened to one value per (name, ε)."""
        figures: list[Figure] = []
        for name, kind in FIGURES.items():
            value: float | tuple[float, ...] | None = getattr(self, name)
            if value is None:
                continue
            if kind.per_eps and isinstance(value, tuple):
                figures += [Figure(name, e, v) for e, v in zip(eps, value, strict=True)]
            elif isinstance(value, float):
                figures.append(Figure(name, None, value))
        return tuple(figures)


@dataclass(frozen=True)
class Change:
    """A figure that moved by more than the tolerance since the baseline."""

    model: str
    name: str
    eps: float | None
    baseline: float
    now: float

    @property
    def label(self) -> str:
        """The figure's name for people, with its ε."""
        text = FIGURES[self.name].label
        return text if self.eps is None else f"{text} at ε={self.eps:g}"


@dataclass(frozen=True)
class BaselineModel:
    """One model's figures as a baseline stored them."""

    figures: tuple[Figure, ...]
    opset: int | None = None
    compute_layers: int | None = None
    samples: int | None = None


@dataclass(frozen=True)
class Baseline:
    """A parsed baseline file."""

    path: Path
    eps: tuple[float, ...]
    models: Mapping[str, BaselineModel]
    providers: tuple[str, ...] = (CPU,)


@dataclass(frozen=True)
class Comparison:
    """This run against a baseline: what got worse, what is missing or new, what improved."""

    baseline: Path
    tolerance: float
    regressions: tuple[Change, ...] = ()
    improvements: tuple[Change, ...] = ()
    missing: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# Reading baselines


def read_baseline(path: Path) -> Baseline:
    """Parse a baseline written by ``--save-baseline``; anything else is a BaselineError."""
    try:
        with open_regular(path) as file:
            document = json.loads(file.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BaselineError(
            f"cannot read baseline {path} ({first_line(error)}): give a file written by "
            "onnx-prune zoo --save-baseline"
        ) from None
    try:
        return _parse_baseline(path, document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BaselineError(
            f"baseline {path} is malformed ({type(error).__name__}: {error}): "
            "save it again with onnx-prune zoo --save-baseline"
        ) from None


def _parse_baseline(path: Path, document: Any) -> Baseline:
    version = document["schema_version"]
    if version != BASELINE_SCHEMA_VERSION:
        raise BaselineError(
            f"baseline {path} has schema_version {version}; this onnx-prune reads "
            f"{BASELINE_SCHEMA_VERSION}: save it again with onnx-prune zoo --save-baseline"
        )
    models = {str(key): _parse_model(entry) for key, entry in document["models"].items()}
    providers = tuple(str(name) for name in document.get("providers", [CPU]))
    return Baseline(path, tuple(float(e) for e in document["eps"]), models, providers)


def _parse_model(entry: Mapping[str, Any]) -> BaselineModel:
    figures: list[Figure] = []
    for name, value in entry.items():
        if name not in FIGURES:
            continue
        if isinstance(value, Mapping):
            figures += [Figure(name, float(e), _fraction(v)) for e, v in value.items()]
        else:
            figures.append(Figure(name, None, _fraction(value)))
    return BaselineModel(
        tuple(figures),
        opset=_optional_int(entry.get("opset")),
        compute_layers=_optional_int(entry.get("compute_layers")),
        samples=_optional_int(entry.get("samples")),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"figure value {value!r} is not a number")
    return float(value)


def check_baseline_eps(baseline: Baseline, eps: Sequence[float]) -> None:
    """A baseline compares only with a run at the same ε list."""
    if tuple(baseline.eps) != tuple(eps):
        raise BaselineError(
            f"baseline {baseline.path} was made with --eps {_eps_text(baseline.eps)} but this run "
            f"uses {_eps_text(eps)}: run with --eps {_eps_text(baseline.eps)}, or save a new "
            "baseline with --save-baseline"
        )


def _eps_text(eps: Sequence[float]) -> str:
    return ",".join(f"{e:g}" for e in eps)


# Comparison


def compare_to_baseline(
    measured: Mapping[str, ModelFigures | None],
    baseline: Baseline,
    *,
    eps: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
    providers: Providers | None = None,
) -> Comparison:
    """Every figure that moved by more than ``tolerance`` (absolute, on fractions), per model.

    ``measured`` maps each zoo model's key to its figures, None for a model that failed: it is
    not compared (its failure already fails the run). A baseline made on
    other execution providers is compared (exact counts do not depend on the provider) and
    named in the notes, so that a change is never silently put down to the hardware.
    """
    check_baseline_eps(baseline, eps)
    regressions: list[Change] = []
    improvements: list[Change] = []
    notes: list[str] = []
    for key, figures in measured.items():
        stored = baseline.models.get(key)
        if figures is None or stored is None:
            continue
        worse, better = _changes(key, stored, figures.tracked(eps), tolerance)
        regressions += worse
        improvements += better
        notes += _structure_notes(key, stored, figures)
    notes += _figure_notes(measured, baseline, eps)
    notes = _provider_notes(baseline, providers or Providers()) + notes
    return Comparison(
        baseline=baseline.path,
        tolerance=tolerance,
        regressions=tuple(regressions),
        improvements=tuple(improvements),
        missing=tuple(key for key in baseline.models if key not in measured),
        new=tuple(k for k, f in measured.items() if f is not None and k not in baseline.models),
        notes=tuple(notes),
    )


def _provider_notes(baseline: Baseline, providers: Providers) -> list[str]:
    if baseline.providers == providers.names:
        return []
    return [
        f"the baseline was made on {', '.join(baseline.providers)} and this run is on "
        f"{', '.join(providers.names)}: figures are compared across providers"
    ]


def _changes(
    key: str, stored: BaselineModel, now: Sequence[Figure], tolerance: float
) -> tuple[list[Change], list[Change]]:
    """Figures worse and better by more than ``tolerance``, in the order of ``FIGURES`` and ε."""
    before = {(figure.name, figure.eps): figure.value for figure in stored.figures}
    worse: list[Change] = []
    better: list[Change] = []
    for figure in now:
        then = before.get((figure.name, figure.eps))
        if then is None:
            continue
        loss = _loss(figure.name, then, figure.value)
        if abs(loss) > tolerance + 1e-12:  # the slack keeps a move of exactly ``tolerance`` ok
            (worse if loss > 0 else better).append(
                Change(key, figure.name, figure.eps, then, figure.value)
            )
    return worse, better


def _loss(name: str, before: float, now: float) -> float:
    """How much worse ``now`` is than ``before`` (negative when it is better)."""
    return before - now if FIGURES[name].higher_is_better else now - before


def _structure_notes(key: str, stored: BaselineModel, figures: ModelFigures) -> list[str]:
    """Changes that make figures hard to compare: the graph, or the calibration samples."""
    pairs = (
        ("opset", stored.opset, figures.opset),
        ("compute layers", stored.compute_layers, figures.compute_layers),
        ("calibration samples", stored.samples, figures.samples),
    )
    return [f"{key}: {name} {then} → {now}" for name, then, now in pairs if then not in (None, now)]


def _figure_notes(
    measured: Mapping[str, ModelFigures | None], baseline: Baseline, eps: Sequence[float]
) -> list[str]:
    """Figures tracked on one side only (e.g. once the bandwidth model arrives), named once."""
    now = {f.name for figures in measured.values() if figures for f in figures.tracked(eps)}
    stored = {f.name for model in baseline.models.values() for f in model.figures}
    notes = [
        f"'{name}' is not in the baseline: save the baseline again to track it"
        for name in now - stored
    ]
    notes += [f"'{name}' is in the baseline but not measured now" for name in stored - now]
    return sorted(notes)
