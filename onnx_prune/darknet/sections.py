"""The cfg file as Darknet reads it: ``[sections]`` of ``key=value`` options, and typed lookups.

Darknet strips every whitespace character from a line, skips lines starting with ``#`` or ``;``,
knows some section names by a short alias (``[conv]`` for ``[convolutional]``, ``[network]`` for
``[net]``) and uses the first of duplicated options; the converter refuses duplicates outside
``[net]`` instead, and refuses options it does not know, naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from onnx_prune.darknet.layers import ACTIVATIONS
from onnx_prune.errors import ConversionError
from onnx_prune.files import NotRegularFileError, open_regular

_ALIASES = {
    "conv": "convolutional",
    "conn": "connected",
    "max": "maxpool",
    "avg": "avgpool",
    "soft": "softmax",
    "network": "net",
}
# Options every Darknet layer reads that only matter for training.
_TRAINING_OPTIONS = frozenset(
    {"truth", "onlyforward", "stopbackward", "dontsave", "learning_rate", "smooth"}
)
# Options that change which floats the weights file holds for a layer.
_LOADING_OPTIONS = ("dontload", "numload", "dontloadscales")

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class Option:
    """One ``key=value`` line of a section."""

    key: str
    value: str
    line: int


@dataclass(frozen=True)
class Section:
    """One ``[kind]`` of the cfg (aliases resolved) with its options in file order."""

    path: Path
    kind: str
    line: int
    options: tuple[Option, ...]

    def find(self, key: str) -> Option | None:
        """The first option named ``key`` (Darknet uses the first of duplicates)."""
        return next((option for option in self.options if option.key == key), None)

    def error(self, message: str, *, line: int | None = None) -> ConversionError:
        """An error naming the cfg file, the line and this section."""
        return ConversionError(f"{self.path}:{line or self.line}: [{self.kind}] {message}")


def read_sections(cfg_path: Path) -> list[Section]:
    """The sections of ``cfg_path`` in file order; raises :class:`ConversionError` if malformed."""
    text = _read_cfg_text(cfg_path)
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # Darknet strips every whitespace character
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(_start_section(cfg_path, line, number))
        elif not sections:
            raise ConversionError(
                f"{cfg_path}:{number}: option {line!r} comes before any [section]: "
                "a Darknet cfg starts with [net]"
            )
        else:
            section = sections[-1]
            sections[-1] = _add_option(section, line, number)
    return sections


def _read_cfg_text(cfg_path: Path) -> str:
    if not cfg_path.exists():
        raise ConversionError(f"{cfg_path}: no such Darknet cfg file: check the path")
    try:
        with open_regular(cfg_path) as file:
            return file.read().decode("utf-8", errors="replace")
    except NotRegularFileError:
        raise ConversionError(
            f"{cfg_path} is not a regular file (a folder, pipe or device): give the .cfg file"
        ) from None
    except OSError as error:
        raise ConversionError(f"{cfg_path}: cannot read the cfg file: {error.strerror}") from None


def _start_section(cfg_path: Path, line: str, number: int) -> Section:
    if not line.endswith("]") or len(line) < 3:
        raise ConversionError(f"{cfg_path}:{number}: {line!r} is not a [section] header")
    kind = line[1:-1].lower()
    return Section(cfg_path, _ALIASES.get(kind, kind), number, ())


def _add_option(section: Section, line: str, number: int) -> Section:
    key, separator, value = line.partition("=")
    if not separator or not key:
        raise section.error(f"expected key=value, found {line!r}", line=number)
    if section.kind != "net" and section.find(key) is not None:
        raise section.error(f"option {key!r} is given twice: keep one", line=number)
    return Section(
        section.path, section.kind, section.line, (*section.options, Option(key, value, number))
    )


def require_option(section: Section, key: str, *, example: str) -> Option:
    """The option ``key``, which the section cannot do without; ``example`` is a typical value."""
    option = section.find(key)
    if option is None:
        raise section.error(f"a [{section.kind}] needs {key}=..., e.g. {key}={example}")
    return option


def get_int(section: Section, key: str, default: int) -> int:
    """The integer option ``key``, or ``default`` when it is not given."""
    return _get_number(section, key, default, int, "an integer")


def get_float(section: Section, key: str, default: float) -> float:
    """The number option ``key``, or ``default`` when it is not given."""
    return _get_number(section, key, default, float, "a number")


def _get_number(
    section: Section, key: str, default: _Number, convert: Callable[[str], _Number], noun: str
) -> _Number:
    option = section.find(key)
    if option is None:
        return default
    try:
        return convert(option.value)
    except ValueError:
        raise section.error(f"{key}={option.value} is not {noun}", line=option.line) from None


def get_activation(section: Section, default: str) -> str:
    """The ``activation`` option, checked against the supported ones, or ``default``."""
    option = section.find("activation")
    if option is None:
        return default
    if option.value not in ACTIVATIONS:
        raise section.error(
            f"activation={option.value} is not supported (supported: "
            f"{', '.join(sorted(ACTIVATIONS))})",
            line=option.line,
        )
    return option.value


def check_options(section: Section, used: str, *, ignored: str = "") -> None:
    """Refuse options the converter does not know, and non-default weight-loading options."""
    known = set(used.split()) | set(ignored.split()) | _TRAINING_OPTIONS | set(_LOADING_OPTIONS)
    for option in section.options:
        if option.key not in known:
            raise section.error(
                f"option {option.key!r} is not supported by the converter (it reads: "
                f"{', '.join(used.split()) or 'no options'}); remove it or convert another way",
                line=option.line,
            )
    for key in _LOADING_OPTIONS:
        require_default(section, key, 0)


def require_default(section: Section, key: str, default: int) -> None:
    """Refuse an integer option ``key`` that is given with another value than ``default``."""
    option = section.find(key)
    if option is not None and get_int(section, key, default) != default:
        raise section.error(
            f"{key}={option.value} is not supported by the converter; remove it",
            line=option.line,
        )
