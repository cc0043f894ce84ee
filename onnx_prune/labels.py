"""Class labels for the accuracy sweep: a CSV file or an ImageNet-style folder tree.

Two forms, chosen by what ``--labels`` points at:

- **A CSV file** of ``name,class_index`` rows (a header row is optional; blank lines and lines
  starting with ``#`` are ignored; further columns are ignored). ``name`` is an image's file name
  (any folder part in the CSV is dropped: images are matched by file name alone) or, for tensor
  inputs, the 0-based sample index. ``class_index`` is the model's output index, or a WordNet id
  (``n01440764``) read in the standard ImageNet-1k order.
- **A folder** whose subfolders are WordNet ids: an image under ``DIR/n01440764/`` has that
  synset's index in the standard 1000-class order (``models/imagenet_synsets.txt``). Subfolders
  not named like a WordNet id are not labels; their images are unlabelled.

Samples without a label are *unlabelled*: they count for agreement, KL and load saved, not for
top-1/top-5 (which are fractions of the labelled samples). Labels for files that are not among the
samples are ignored, so one CSV can serve any subset of a data set. ``strict`` turns an unlabelled
sample into an error, and a label set that matches none of the samples is always an error.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onnx_prune.data import IMAGENET_SYNSETS
from onnx_prune.errors import InputDataError
from onnx_prune.files import is_regular_file, open_regular

_WORDNET_ID = re.compile(r"n\d{8}")

Sample = Path | int
"""An image file, or the index of a sample in a tensor file."""


@dataclass(frozen=True)
class Labels:
    """Class indices by sample: from a CSV (by file name or index) or a synset folder tree."""

    source: Path
    kind: Literal["csv", "tree"]
    by_key: Mapping[str, int]

    @property
    def max_class(self) -> int:
        """The largest class index any label names."""
        return max(self.by_key.values())

    def label_for(self, sample: Sample) -> int | None:
        """The class of ``sample``, or None when it has no label."""
        if self.kind == "csv":
            key = str(sample) if isinstance(sample, int) else sample.name
            return self.by_key.get(key)
        if isinstance(sample, int):
            return None
        return self.by_key.get(_synset_of(sample, self.source) or "")


@dataclass(frozen=True)
class Coverage:
    """How many of the samples have a label."""

    samples: int
    labelled: int

    @property
    def unlabelled(self) -> int:
        """Samples without a label."""
        return self.samples - self.labelled


def load_labels(path: Path, *, synsets_file: Path | None = None) -> Labels:
    """Read a CSV of ``name,class_index`` or a folder tree of WordNet-id subfolders."""
    synsets = read_synsets(synsets_file or IMAGENET_SYNSETS)
    if path.is_dir():
        return _tree_labels(path, synsets)
    if not path.exists():
        raise InputDataError(
            f"label path {path} does not exist: give a CSV of name,class_index or a folder "
            "of WordNet-id subfolders"
        )
    if not is_regular_file(path):
        raise InputDataError(
            f"label path {path} is not a regular file (a pipe, device or socket): give a CSV "
            "of name,class_index or a folder of WordNet-id subfolders"
        )
    return Labels(path, "csv", _read_csv(path, synsets))


def read_synsets(path: Path) -> dict[str, int]:
    """WordNet id -> class index, from a file with one id per line."""
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError as error:
        raise InputDataError(f"cannot read the synset list {path} ({error})") from error
    return {wnid: index for index, wnid in enumerate(lines)}


def image_files(labels: Labels) -> list[Path]:
    """The images of a synset folder tree (labelled or not), for when ``--images`` is not given."""
    if labels.kind != "tree":
        raise InputDataError(
            f"{labels.source} is a CSV: give the images with --images (only a folder of "
            "WordNet-id subfolders can stand for the images too)"
        )
    return [labels.source]


def check_coverage(labels: Labels, samples: Sequence[Sample], *, strict: bool) -> Coverage:
    """Count labelled samples; error when none is labelled, or with ``strict`` when any is not."""
    missing = [sample for sample in samples if labels.label_for(sample) is None]
    coverage = Coverage(len(samples), len(samples) - len(missing))
    if samples and coverage.labelled == 0:
        raise InputDataError(
            f"none of the {len(samples)} samples has a label in {labels.source}: "
            f"{_how_labels_match(labels)}"
        )
    if strict and missing:
        raise InputDataError(
            f"{len(missing)} of {len(samples)} samples have no label in {labels.source} "
            f"(first: {_sample_text(missing[0])}): label them, or drop --strict to leave "
            "them out of top-1/top-5"
        )
    return coverage


def check_classes(labels: Labels, classes: int) -> None:
    """Raise when a label names a class the model's output does not have."""
    if labels.max_class >= classes:
        key = next(key for key, value in labels.by_key.items() if value == labels.max_class)
        raise InputDataError(
            f"{labels.source} labels '{key}' as class {labels.max_class} but the model outputs "
            f"{classes} classes: the labels do not belong to this model"
        )


def _how_labels_match(labels: Labels) -> str:
    if labels.kind == "tree":
        return "images are labelled by their WordNet-id folder inside it (DIR/n01440764/x.jpg)"
    example = next(iter(labels.by_key))
    return (
        f"its names (such as '{example}') must be image file names, or sample indices "
        "0, 1, ... for --inputs"
    )


def _sample_text(sample: Sample) -> str:
    return f"sample {sample}" if isinstance(sample, int) else str(sample)


def _tree_labels(root: Path, synsets: Mapping[str, int]) -> Labels:
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    wordnet = [name for name in folders if _WORDNET_ID.fullmatch(name)]
    if not wordnet:
        raise InputDataError(
            f"{root} has no WordNet-id subfolders (such as n01440764): give an ImageNet-style "
            "folder tree, or a CSV of name,class_index"
        )
    unknown = [name for name in wordnet if name not in synsets]
    if unknown:
        raise InputDataError(
            f"{root / unknown[0]}: '{unknown[0]}' is not one of the 1000 ImageNet-1k WordNet ids: "
            "rename or remove the folder"
        )
    return Labels(root, "tree", {name: synsets[name] for name in wordnet})


def _synset_of(image: Path, root: Path) -> str | None:
    try:
        relative = image.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return relative.parts[0] if len(relative.parts) > 1 else None


def _read_csv(path: Path, synsets: Mapping[str, int]) -> dict[str, int]:
    try:
        with io.TextIOWrapper(open_regular(path), encoding="utf-8-sig", newline="") as file:
            rows = list(_data_rows(csv.reader(file)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputDataError(f"cannot read labels {path} ({error}): give a CSV text file") from None
    labels: dict[str, int] = {}
    for number, name, value in _skip_header(rows, synsets):
        _add_label(labels, path, number, Path(name.replace("\\", "/")).name, value, synsets)
    if not labels:
        raise InputDataError(f"{path} holds no label: write one name,class_index row per image")
    return labels


def _data_rows(reader: Iterable[list[str]]) -> Iterable[tuple[int, str, str]]:
    for number, row in enumerate(reader, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        yield number, cells[0], cells[1] if len(cells) > 1 else ""


def _skip_header(
    rows: list[tuple[int, str, str]], synsets: Mapping[str, int]
) -> list[tuple[int, str, str]]:
    if rows and _class_index(rows[0][2], synsets) is None:
        return rows[1:]
    return rows


def _add_label(
    labels: dict[str, int],
    path: Path,
    number: int,
    name: str,
    value: str,
    synsets: Mapping[str, int],
) -> None:
    index = _class_index(value, synsets)
    if not name or index is None:
        raise InputDataError(
            f"{path}:{number}: '{name},{value}' is not name,class_index: give a file name and "
            "a class index (0, 1, ...) or WordNet id on every row"
        )
    if labels.get(name, index) != index:
        raise InputDataError(
            f"{path}:{number}: '{name}' is labelled both {labels[name]} and {index}: images are "
            "matched by file name, so each name needs one class"
        )
    labels[name] = index


def _class_index(value: str, synsets: Mapping[str, int]) -> int | None:
    if value.isdigit():
        return int(value)
    return synsets.get(value)
