"""Two ``analyze`` (or ``zoo``) JSON documents compared layer by layer.

Layers are matched by name (models of a zoo by their key). At every ε both documents measured,
three figures per layer are compared: the IFM and OFM shares of values within ε, and the share of
the layer's IFM bytes saved by skipping zero channels; the saved bytes themselves are shown
beside them (an int8 copy loads a quarter of the bytes of its fp32 original, so bytes are not
compared, shares are). A figure that moved by more than the tolerance (absolute, on fractions)
is a change; layers (and models) only one document has are listed as added or removed.

Pure library: reads the two files, returns a frozen ``DocumentDiff``; the report prints it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_prune.errors import InputDataError, first_line
from onnx_prune.files import open_regular

DEFAULT_TOLERANCE = 0.005
FIGURES = ("ifm_zero", "ofm_zero", "ifm_saved_share")
"""The figures compared per layer and ε, all fractions in [0, 1]."""


class DiffError(InputDataError):
    """A document to compare cannot be read, or is not an analyze or zoo document."""


@dataclass(frozen=True)
class LayerFigures:
    """One layer of one document: its figures per ε (keyed by ε) and channel-saved bytes."""

    name: str
    op_type: str
    ifm_zero: Mapping[float, float]
    ofm_zero: Mapping[float, float]
    ifm_saved_share: Mapping[float, float]
    saved_bytes: Mapping[float, int]

    def figure(self, name: str, eps: float) -> float:
        """The value of one of ``FIGURES`` at ``eps``."""
        values: Mapping[float, float] = getattr(self, name)
        return values[eps]


@dataclass(frozen=True)
class LayerChange:
    """One layer at one ε where some figure moved by more than the tolerance."""

    layer: str
    op_type: str
    eps: float
    old: LayerFigures
    new: LayerFigures
    moved: tuple[str, ...]

    def delta(self, name: str) -> float:
        """New minus old for one of ``FIGURES``."""
        return self.new.figure(name, self.eps) - self.old.figure(name, self.eps)


@dataclass(frozen=True)
class ModelDiff:
    """One model's layers: what changed, what only one side has, how many stayed within."""

    model: str
    changes: tuple[LayerChange, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int

    @property
    def changed(self) -> bool:
        """True when a figure moved beyond the tolerance or a layer was added or removed."""
        return bool(self.changes or self.added or self.removed)


@dataclass(frozen=True)
class DocumentDiff:
    """The whole comparison of OLD and NEW."""

    old: str
    new: str
    tolerance: float
    eps: tuple[float, ...]
    models: tuple[ModelDiff, ...]
    added_models: tuple[str, ...] = ()
    removed_models: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when anything moved beyond the tolerance (the exit status is then 1)."""
        return bool(self.added_models or self.removed_models) or any(
            model.changed for model in self.models
        )


def diff_documents(
    old_path: Path, new_path: Path, *, tolerance: float = DEFAULT_TOLERANCE
) -> DocumentDiff:
    """Compare two analyze (or two zoo) documents layer by layer at the ε both measured."""
    old, new = read_document(old_path), read_document(new_path)
    if _kind(old) != _kind(new):
        raise DiffError(
            f"{old_path} is {_kind(old)} document and {new_path} is {_kind(new)} one: compare "
            "two analyze --json documents or two zoo --json documents"
        )
    eps = tuple(e for e in _eps(old, old_path) if e in _eps(new, new_path))
    if not eps:
        raise DiffError(
            f"{old_path} and {new_path} share no ε: analyse both with the same --eps list"
        )
    old_models, new_models = _models(old, old_path), _models(new, new_path)
    notes = _failed_notes(old_models, old_path) + _failed_notes(new_models, new_path)
    common = [key for key in old_models if key in new_models]
    models = tuple(
        _diff_model(key or _model_names(old, new), old_models[key], new_models[key], eps, tolerance)
        for key in common
        if old_models[key] is not None and new_models[key] is not None
    )
    return DocumentDiff(
        old=str(old_path),
        new=str(new_path),
        tolerance=tolerance,
        eps=eps,
        models=models,
        added_models=tuple(key for key in new_models if key not in old_models),
        removed_models=tuple(key for key in old_models if key not in new_models),
        notes=tuple(notes),
    )


def read_document(path: Path) -> Mapping[str, Any]:
    """A JSON document written by ``analyze --json`` or ``zoo --json``."""
    try:
        with open_regular(path) as file:
            document = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        raise DiffError(f"{path}: no such file: give a file written by analyze --json") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DiffError(
            f"cannot read {path} as JSON ({first_line(error)}): give a file written "
            "by onnx-prune analyze --json or zoo --json"
        ) from None
    if not isinstance(document, Mapping) or _kind(document) == "another":
        raise DiffError(
            f"{path} is not an analyze or zoo document (weights documents have no feature "
            "maps): give files written by onnx-prune analyze --json or zoo --json"
        )
    return document


def _model_names(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """An analyze document's model name, or ``old → new`` when the files differ."""
    names = [Path(str(document.get("model", "?"))).name for document in (old, new)]
    return names[0] if names[0] == names[1] else f"{names[0]} → {names[1]}"


def _kind(document: Mapping[str, Any]) -> str:
    if document.get("command") == "zoo" and isinstance(document.get("models"), list):
        return "a zoo"
    layers = document.get("layers")
    if isinstance(layers, list) and "samples" in document and "eps" in document:
        return "an analyze"
    return "another"


def _eps(document: Mapping[str, Any], path: Path) -> tuple[float, ...]:
    try:
        return tuple(float(e) for e in document["eps"])
    except (KeyError, TypeError, ValueError):
        raise DiffError(f"{path} has no readable 'eps' list: write it again") from None


def _models(document: Mapping[str, Any], path: Path) -> dict[str, dict[str, LayerFigures] | None]:
    """Layers per model key (an analyze document is one model, keyed by its file name);
    None for a zoo model that failed."""
    try:
        if _kind(document) == "an analyze":
            return {"": _layers(document)}
        return {
            str(entry["model"]): _layers(entry["analysis"]) if entry.get("analysis") else None
            for entry in document["models"]
        }
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as error:
        raise DiffError(
            f"{path} is malformed ({type(error).__name__}: {error}): write it again with "
            "onnx-prune analyze --json or zoo --json"
        ) from None


def _layers(analysis: Mapping[str, Any]) -> dict[str, LayerFigures]:
    eps = [float(e) for e in analysis["eps"]]
    return {str(layer["name"]): _layer(layer, eps) for layer in analysis["layers"]}


def _layer(layer: Mapping[str, Any], eps: Sequence[float]) -> LayerFigures:
    ifm, ofm = layer["ifm"], layer["ofm"]
    saved = [int(b) for b in layer["saved_bytes"]["channel"]]
    ifm_bytes = int(layer["bytes"]["ifm"] or 0)
    return LayerFigures(
        name=str(layer["name"]),
        op_type=str(layer["op_type"]),
        ifm_zero=_shares(eps, ifm["zeros"], ifm["elements"]),
        ofm_zero=_shares(eps, ofm["zeros"], ofm["elements"]),
        ifm_saved_share=_shares(eps, saved, ifm_bytes),
        saved_bytes=dict(zip(eps, saved, strict=True)),
    )


def _shares(eps: Sequence[float], parts: Sequence[int], whole: int) -> dict[float, float]:
    return {
        e: (int(part) / int(whole) if whole else 0.0) for e, part in zip(eps, parts, strict=True)
    }


def _failed_notes(models: Mapping[str, object], path: Path) -> list[str]:
    return [f"{key} failed in {path}: not compared" for key, m in models.items() if m is None]


def _diff_model(
    key: str,
    old: Mapping[str, LayerFigures] | None,
    new: Mapping[str, LayerFigures] | None,
    eps: Sequence[float],
    tolerance: float,
) -> ModelDiff:
    old, new = old or {}, new or {}
    changes: list[LayerChange] = []
    unchanged = 0
    for name in (name for name in old if name in new):
        found = [c for e in eps if (c := _layer_change(old[name], new[name], e, tolerance))]
        changes += found
        unchanged += not found
    return ModelDiff(
        model=key,
        changes=tuple(changes),
        added=tuple(name for name in new if name not in old),
        removed=tuple(name for name in old if name not in new),
        unchanged=unchanged,
    )


def _layer_change(
    old: LayerFigures, new: LayerFigures, eps: float, tolerance: float
) -> LayerChange | None:
    moved = tuple(
        name
        for name in FIGURES
        if abs(new.figure(name, eps) - old.figure(name, eps)) > tolerance + 1e-12
    )
    if not moved:
        return None
    return LayerChange(old.name, new.op_type, eps, old, new, moved)
