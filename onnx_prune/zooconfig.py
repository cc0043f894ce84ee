"""Per-model zoo settings: ``onnx-prune.toml`` at the zoo's root (or ``zoo --config FILE``).

One table per model path, relative to the root, globs allowed (``*`` also crosses folders)::

    ["ocr/cls.onnx"]
    size = "48x192"
    preset = "imagenet"

    ["detectors/*.onnx"]
    size = [320, 320]

    ["audio/vad.onnx"]
    inputs = "tensors/vad.npz"      # relative to the file's folder
    batch_axis = { state = 1, sr = "none" }

    ["broken/old.onnx"]
    expected = "fail"               # a known failure: its own column, not a regression

Keys: ``size`` (``"HxW"``, ``H`` or ``[H, W]``), ``preset``, ``images`` (a folder or file, or a
list of them), ``inputs`` (a .npy/.npz file), ``batch_axis`` (input name → axis or ``"none"``),
``eps`` (more ε to measure for this model; the zoo's table and baseline stay at the zoo's ε so
that every model is compared alike) and ``expected`` (``"fail"`` or ``"pass"``). When several
tables match a model, later tables override the keys they set. An unknown key is an error that
names it. Pure library: parses and matches, prints nothing.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from onnx_prune.errors import InputDataError
from onnx_prune.files import open_regular
from onnx_prune.inputs import PRESETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

CONFIG_NAME = "onnx-prune.toml"
KEYS = ("size", "preset", "images", "inputs", "batch_axis", "eps", "expected")


class ZooConfigError(InputDataError):
    """An ``onnx-prune.toml`` cannot be read or holds a setting this tool does not know."""


@dataclass(frozen=True)
class ModelSettings:
    """What a zoo config says about one model; None (or empty) where it says nothing."""

    size: tuple[int, int] | None = None
    preset: str | None = None
    images: tuple[Path, ...] = ()
    inputs: Path | None = None
    batch_axis: tuple[tuple[str, int | None], ...] = ()
    eps: tuple[float, ...] = ()
    expected_failure: bool = False


@dataclass(frozen=True)
class ZooConfig:
    """A parsed config: its tables in file order, each a pattern and the settings it gives."""

    path: Path
    root: Path
    tables: tuple[tuple[str, Mapping[str, Any]], ...]

    def settings_for(self, model: Path, key: str) -> ModelSettings:
        """The merged settings of every table matching ``model`` (a path under ``root``, else
        its zoo ``key``), later tables winning."""
        name = _relative(model, self.root) or key
        merged: dict[str, Any] = {}
        for pattern, values in self.tables:
            if _matches(name, pattern):
                merged.update(values)
        return ModelSettings(**merged)

    def unmatched(self, models: Sequence[tuple[Path, str]]) -> tuple[str, ...]:
        """Patterns that match none of ``models`` (probably a typo)."""
        names = [_relative(path, self.root) or key for path, key in models]
        return tuple(p for p, _ in self.tables if not any(_matches(n, p) for n in names))


def read_zoo_config(path: Path, *, root: Path | None = None) -> ZooConfig:
    """Parse ``path``; patterns are relative to ``root`` (default: the file's folder), and so
    are the ``images`` and ``inputs`` paths."""
    try:
        with open_regular(path) as file:
            document = tomllib.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        raise ZooConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, RecursionError, tomllib.TOMLDecodeError) as error:
        raise ZooConfigError(f"cannot read {path}: {error}: fix the TOML") from None
    folder = path.parent
    tables = []
    for pattern, values in document.items():
        if not isinstance(values, Mapping):
            raise ZooConfigError(
                f"{path}: '{pattern}' is not a table: write settings under [\"model.onnx\"]"
            )
        tables.append((pattern, _settings(path, pattern, values, folder)))
    return ZooConfig(path=path, root=root or folder, tables=tuple(tables))


def find_zoo_config(paths: Sequence[Path], config: Path | None) -> ZooConfig | None:
    """``--config FILE``, else the ``onnx-prune.toml`` of the one zoo folder given that has one."""
    if config is not None:
        return read_zoo_config(config)
    found = [path / CONFIG_NAME for path in paths if (path / CONFIG_NAME).is_file()]
    if len(found) > 1:
        listed = ", ".join(str(path) for path in found)
        raise ZooConfigError(f"several zoo configs ({listed}): give one with --config FILE")
    return read_zoo_config(found[0]) if found else None


def _settings(path: Path, pattern: str, values: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    unknown = [key for key in values if key not in KEYS]
    if unknown:
        raise ZooConfigError(
            f"{path}: [\"{pattern}\"] has an unknown key '{unknown[0]}': the keys are "
            f"{', '.join(KEYS)}"
        )
    where = f'{path}: ["{pattern}"]'
    return dict(_setting(where, key, value, folder) for key, value in values.items())


def _setting(where: str, key: str, value: Any, folder: Path) -> tuple[str, Any]:
    """One key's value as the ``ModelSettings`` field it sets."""
    if key == "size":
        return key, _size(where, value)
    if key == "preset":
        return key, _preset(where, value)
    if key == "images":
        return key, tuple(folder / item for item in _paths(where, key, value))
    if key == "inputs":
        return key, folder / _paths(where, key, value, single=True)[0]
    if key == "batch_axis":
        return key, _batch_axis(where, value)
    if key == "eps":
        return key, _eps(where, value)
    return "expected_failure", _expected(where, value)


def _size(where: str, value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        parts: list[Any] = value.lower().split("x")
    elif isinstance(value, list):
        parts = value
    else:
        parts = [value]
    try:
        sizes = [int(part) for part in parts if not isinstance(part, bool | float)]
    except ValueError:
        sizes = []
    if len(sizes) != len(parts) or len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise ZooConfigError(f'{where} size = {value!r}: give "HxW", H or [H, W] above 0')
    return (sizes[0], sizes[-1])


def _preset(where: str, value: Any) -> str:
    if value not in PRESETS:
        raise ZooConfigError(f"{where} preset = {value!r}: give one of {', '.join(PRESETS)}")
    return str(value)


def _paths(where: str, key: str, value: Any, *, single: bool = False) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ZooConfigError(f"{where} {key} = {value!r}: give a path, or a list of paths")
    if single and len(items) != 1:
        raise ZooConfigError(f"{where} {key} = {value!r}: give one .npy or .npz file")
    return list(items)


def _batch_axis(where: str, value: Any) -> tuple[tuple[str, int | None], ...]:
    if not isinstance(value, Mapping):
        raise ZooConfigError(f'{where} batch_axis: give a table, e.g. {{ state = 1, sr = "none" }}')
    axes: list[tuple[str, int | None]] = []
    for name, axis in value.items():
        if axis == "none":
            axes.append((str(name), None))
        elif isinstance(axis, int) and not isinstance(axis, bool) and axis >= 0:
            axes.append((str(name), axis))
        else:
            raise ZooConfigError(
                f'{where} batch_axis {name} = {axis!r}: give an axis (0 or more) or "none"'
            )
    return tuple(axes)


def _eps(where: str, value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [value]
    numbers = [i for i in items if isinstance(i, int | float) and not isinstance(i, bool)]
    if len(numbers) != len(items) or not all(math.isfinite(n) and n >= 0 for n in numbers):
        raise ZooConfigError(f"{where} eps = {value!r}: give finite numbers >= 0, e.g. [0, 0.1]")
    return tuple(dict.fromkeys(float(n) for n in numbers))


def _expected(where: str, value: Any) -> bool:
    if value not in ("fail", "pass"):
        raise ZooConfigError(f'{where} expected = {value!r}: give "fail" or "pass"')
    return bool(value == "fail")


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or PurePosixPath(name) == PurePosixPath(pattern)
