"""The ε map: one ε per pruned IFM, as ``tune`` chooses it and ``analyze``/``accuracy`` apply it.

The file is JSON: ``{"schema_version": 1, "model": ..., "metric": ..., "eps": {"<IFM tensor
name>": 0.3, ...}}``. An IFM the map leaves out is not pruned. A map naming a tensor that is not
the IFM of a compute layer of the model is an error. ``map_savings`` gives, from an analysis
measured at (at least) every ε of the map, each layer's IFM bytes saved at its own ε.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_prune.bandwidth import GRANULARITIES, BandwidthReport, Granularity, LayerLoad
from onnx_prune.errors import InputDataError
from onnx_prune.files import open_regular, write_text
from onnx_prune.jsondoc import SCHEMA_VERSION, dumps, eps_map_document


@dataclass(frozen=True)
class EpsMap:
    """One ε per IFM tensor name; ``metric`` names the budget it was chosen under."""

    model: str
    metric: str
    eps: Mapping[str, float]

    @property
    def values(self) -> tuple[float, ...]:
        """The distinct ε of the map, ascending."""
        return tuple(sorted(set(self.eps.values())))


def read_eps_map(path: Path) -> EpsMap:
    """Read and check an ε map file; InputDataError says what is wrong with it."""
    try:
        with open_regular(Path(path)) as file:
            document = json.loads(file.read().decode("utf-8"))
    except OSError as error:
        raise InputDataError(f"cannot read the ε map {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise InputDataError(
            f"the ε map {path} is not JSON ({error}): write it with tune"
        ) from None
    return _parse(document, path)


def _parse(document: Any, path: Path) -> EpsMap:
    where = f"the ε map {path}"
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        raise InputDataError(
            f'{where} is not an ε map of schema_version {SCHEMA_VERSION}: expected {{"schema_'
            'version": 1, "model": ..., "metric": ..., "eps": {"<IFM tensor>": 0.3}} as '
            "onnx-prune tune --eps-map writes it"
        )
    eps = document.get("eps")
    if not isinstance(eps, dict) or not eps:
        raise InputDataError(f'{where} has no "eps" object of IFM tensor names and ε')
    for name, value in eps.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputDataError(f"{where}: ε of '{name}' is {value!r}, not a number")
        if not math.isfinite(value) or value < 0:
            raise InputDataError(f"{where}: ε of '{name}' is {value}; it must be finite and >= 0")
    return EpsMap(
        model=str(document.get("model", "")),
        metric=str(document.get("metric", "")),
        eps={str(name): float(value) for name, value in eps.items()},
    )


def check_eps_map(eps_map: EpsMap, ifms: Iterable[str], *, model: str) -> None:
    """Refuse a map that names a tensor that is not the IFM of a compute layer of ``model``."""
    known = list(dict.fromkeys(ifms))
    missing = [name for name in eps_map.eps if name not in known]
    if not missing:
        return
    shown = ", ".join(f"'{name}'" for name in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    examples = ", ".join(f"'{name}'" for name in sorted(known)[:3])
    raise InputDataError(
        f"the ε map names {len(missing)} tensor{'s' * (len(missing) != 1)} that {model} has no "
        f"compute layer reading: {shown}{more} (its IFMs are {examples}, ...): make the map for "
        "this model with onnx-prune tune"
    )


def merged_eps(eps: Sequence[float], eps_map: EpsMap | None) -> tuple[float, ...]:
    """``eps`` followed by the map's ε that it lacks (what an analysis must measure)."""
    values = list(eps)
    extra = [] if eps_map is None else [e for e in eps_map.values if e not in values]
    return (*values, *extra)


def write_eps_map(eps_map: EpsMap, path: Path) -> None:
    """Write the map file atomically (``files.write_text``)."""
    write_text(path, dumps(eps_map_document(eps_map)))


# --- the analysis at each layer's own ε ---------------------------------------------------------


@dataclass(frozen=True)
class LayerMapSaving:
    """One compute layer under the map: its ε (None: not in the map), IFM bytes and bytes saved
    at that ε per granularity (mean per sample)."""

    name: str
    ifm: str
    eps: float | None
    ifm_bytes: int
    saved: Mapping[Granularity, float]


@dataclass(frozen=True)
class MapSavings:
    """Every compute layer under the map, and the totals over them."""

    layers: tuple[LayerMapSaving, ...]
    ifm_bytes: int
    saved: Mapping[Granularity, float]

    def saved_share(self, granularity: Granularity) -> float:
        """Bytes saved / IFM bytes of the layers."""
        return self.saved[granularity] / self.ifm_bytes if self.ifm_bytes else 0.0


def map_savings(bandwidth: BandwidthReport, eps_map: EpsMap) -> MapSavings:
    """Each layer's IFM bytes saved at its own ε; ``bandwidth`` must hold every ε of the map."""
    missing = [e for e in eps_map.values if e not in bandwidth.eps]
    if missing:
        raise ValueError(f"the analysis lacks ε {missing} of the map: analyse at merged_eps")
    layers = tuple(_layer_saving(layer, bandwidth.eps, eps_map) for layer in bandwidth.layers)
    return MapSavings(
        layers=layers,
        ifm_bytes=sum(layer.ifm_bytes for layer in layers),
        saved={g: sum(layer.saved[g] for layer in layers) for g in GRANULARITIES},
    )


def _layer_saving(layer: LayerLoad, eps: Sequence[float], eps_map: EpsMap) -> LayerMapSaving:
    own = eps_map.eps.get(layer.ifm)
    if own is None:
        saved = dict.fromkeys(GRANULARITIES, 0.0)
    else:
        saved = {g: layer.saved.of(g)[eps.index(own)] for g in GRANULARITIES}
    return LayerMapSaving(layer.name, layer.ifm, own, layer.bytes.ifm, saved)
