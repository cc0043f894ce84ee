"""onnx-prune as users install it: the package data is in the wheel, and the wheel runs on its own.

The full check (a fresh venv, ``pip install`` of the wheel, ``weights``/``analyze``/``accuracy``
from an empty folder) needs a package index and takes a minute: ``.ci/check-wheel`` does it in CI.
Here the wheel is built from a copy of the sources (nothing is written into the checkout), its
file list is compared with the package data, and the CLI is run once from the unpacked wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

from onnx_prune.data import (
    DARKNET_CFG_DIR,
    DATA_DIR,
    EMBEDDED_IMAGES,
    EMBEDDED_MODEL,
    IMAGENET_CLASSES,
    IMAGENET_SYNSETS,
)

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "onnx_prune")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
PAPER_CFGS = ("alexnet", "mobilenet", "resnet50", "squeezenet", "tiny", "vgg16")


def _data_files() -> list[str]:
    """Every file under onnx_prune/data but Python sources, relative to the package."""
    return sorted(
        path.relative_to(DATA_DIR.parents[1]).as_posix()
        for path in DATA_DIR.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    )


def test_data_constants_are_the_package_resources() -> None:
    resources = files("onnx_prune.data")
    assert Path(str(resources)) == DATA_DIR
    for path in (EMBEDDED_MODEL, IMAGENET_CLASSES, IMAGENET_SYNSETS, DATA_DIR / "NOTICE.md"):
        assert resources.joinpath(path.name).is_file(), path
    assert EMBEDDED_MODEL.stat().st_size == 18_697_053  # the size NOTICE.md states
    assert len(list(EMBEDDED_IMAGES.glob("*.jpg"))) == 9
    assert sorted(path.stem for path in DARKNET_CFG_DIR.glob("*.cfg")) == list(PAPER_CFGS)
    assert len(IMAGENET_SYNSETS.read_text().splitlines()) == 1000


def test_notice_names_every_data_file() -> None:
    notice = (DATA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    for name in _data_files():
        assert Path(name).name in notice, f"{name} has no provenance in NOTICE.md"


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources, offline, with the venv's setuptools."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPOSITORY / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=SKIPPED)
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path / "dist"
    build = f"import setuptools.build_meta as b; print(b.build_wheel({str(out)!r}))"
    subprocess.run(
        [sys.executable, "-c", build], cwd=source, check=True, capture_output=True, text=True
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_carries_the_data_and_runs_from_any_folder(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        site = tmp_path / "site"
        archive.extractall(site)
    for name in _data_files():
        assert sizes.get(name) == (DATA_DIR.parents[1] / name).stat().st_size, name
    assert "onnx_prune/py.typed" in sizes
    for name in ("README.md", "weights.json", "analyze.json", "zoo.json"):
        assert f"onnx_prune/schemas/{name}" in sizes
    assert 15_000_000 < wheel.stat().st_size < 22_000_000  # "about 18 MB" in the README

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "onnx_prune", "weights", "--json", "-"]
    done = subprocess.run(command, cwd=empty, env=env, capture_output=True, text=True, check=True)
    document = json.loads(done.stdout)
    assert Path(document["model"]) == site / "onnx_prune" / "data" / "efficientnet_lite0.onnx"
    assert document["totals"]["elements"] == 4_608_992
    assert list(empty.iterdir()) == []
