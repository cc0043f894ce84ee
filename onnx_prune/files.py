"""The user's files: inputs read only when they are regular files, outputs checked before any
work and written atomically.

Every output path is compared with every input path by inode (``os.path.samefile``, which
resolves symbolic links and sees hard links), so no flag can overwrite a model, its external
data, images, tensors, labels, a baseline or a cfg. Each output must also be creatable: its
folder exists and takes a new file, and the path is not a folder, a device or a pipe. Outputs
are written to a temporary file in the same folder, flushed to disk, then moved over the old
file with ``os.replace``: a failed write (a full disk, Ctrl-C) leaves the old file as it was.
``-`` means standard output.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from onnx_prune.errors import OutputPathError

STDOUT = "-"
_NEW_FILE_MODE = 0o666  # the umask applies, as for any file a program creates
_TEMPORARY_NAME_CHARS = 80  # keeps ".<name>.<token>.tmp" under the usual 255-byte name limit

OutputFlag = tuple[str, "str | Path | None"]
"""An output as the command line names it: ``("--json", "out.json")``; None when not asked."""


def is_regular_file(path: Path) -> bool:
    """True when ``path`` (links followed) is a regular file: not a pipe, device or socket,
    which could block a reader for ever or never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class NotRegularFileError(OSError):
    """A path names a pipe, device, socket or folder where a regular file is read."""


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only when it is a regular file.

    The file is opened without blocking, so a FIFO that no one writes cannot hang the open,
    and checked before any byte is read.

    Raises:
        NotRegularFileError: a pipe, device, socket or folder.
        OSError: it cannot be opened (missing, a dangling link, no permission).
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFileError(f"{path} is not a regular file (a pipe, device or socket)")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def check_outputs(outputs: Sequence[OutputFlag], inputs: Callable[[], Iterable[Path]]) -> None:
    """Refuse, before any work, outputs that cannot be created, that name the same file twice,
    or that are one of the command's input files.

    ``inputs`` is called only when an output file already exists (only then can it be an
    input), so listing a large image folder costs nothing in the usual case.

    Raises:
        OutputPathError: naming the flag, the path and what to do.
    """
    files = [(flag, Path(path)) for flag, path in outputs if path is not None and path != STDOUT]
    for flag, path in files:
        _check_creatable(flag, path)
    _check_distinct(files)
    existing = [(flag, path) for flag, path in files if os.path.lexists(path)]
    if existing:
        _check_not_inputs(existing, inputs())


def _check_creatable(flag: str, path: Path) -> None:
    try:
        target = Path(os.path.realpath(path))
        folder = target.parent
        if target.is_dir():
            raise OutputPathError(f"{flag} {path} is a folder: give a file name inside it")
        if target.exists() and not stat.S_ISREG(target.stat().st_mode):
            raise OutputPathError(
                f"{flag} {path} is not a regular file (a device, pipe or socket): give a file "
                f"path, or - for standard output"
            )
        if not folder.is_dir():
            raise OutputPathError(
                f"{flag} {path}: {folder} does not exist: create the folder first"
            )
    except OSError as error:
        raise OutputPathError(f"{flag} {path} cannot be used: {_reason(error)}") from None
    _probe_folder(flag, path, folder)


def _probe_folder(flag: str, path: Path, folder: Path) -> None:
    """Create and remove one empty file where the output's temporary file will go."""
    try:
        probe = _new_temporary(folder / path.name)
    except OSError as error:
        raise OutputPathError(
            f"{flag} {path}: cannot create files in {folder} ({_reason(error)}): "
            "choose a writable folder"
        ) from None
    with contextlib.suppress(OSError):
        probe.unlink()


def _check_distinct(files: Sequence[tuple[str, Path]]) -> None:
    for index, (flag, path) in enumerate(files):
        for other_flag, other in files[index + 1 :]:
            if _same_path(path, other):
                raise OutputPathError(
                    f"{flag} and {other_flag} both write {path}: give each its own file"
                )


def _check_not_inputs(outputs: Sequence[tuple[str, Path]], inputs: Iterable[Path]) -> None:
    for source in inputs:
        for flag, path in outputs:
            if _same_path(path, source):
                raise OutputPathError(
                    f"{flag} {path} is the input file {source}: writing it would destroy it; "
                    "choose another output path"
                )


def _same_path(first: Path, second: Path) -> bool:
    """The same file by inode when both exist, else the same path once links are resolved."""
    try:
        if os.path.exists(first) and os.path.exists(second):
            return os.path.samefile(first, second)
        return os.path.realpath(first) == os.path.realpath(second)
    except (OSError, ValueError):
        return False


def write_text(destination: str | Path, text: str) -> None:
    """Write ``text`` atomically to a file, or to standard output for ``-``."""
    if str(destination) == STDOUT:
        write_stdout(text)
        return
    write_bytes(Path(destination), text.encode("utf-8"))


def write_stdout(text: str) -> None:
    """Write ``text`` to standard output; a closed standard output is an OutputPathError."""
    if sys.stdout is None:
        raise OutputPathError("standard output is closed: give a file path instead of -")
    sys.stdout.write(text)
    sys.stdout.flush()


def write_bytes(destination: Path, data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically: all of it, or the old file untouched."""
    with replacing(destination) as temporary, temporary.open("r+b") as file:
        _write_all(file.fileno(), data)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


@contextlib.contextmanager
def replacing(destination: Path) -> Iterator[Path]:
    """A temporary file beside ``destination`` for the caller to fill; on success it is flushed
    to disk and moved over ``destination`` (links are followed, so a link keeps pointing at the
    new file). On any error the temporary file is removed and the old file stays as it was.

    Raises:
        OutputPathError: the write failed (full disk, read-only folder, ...).
    """
    target = Path(os.path.realpath(destination))
    try:
        temporary = _new_temporary(target)
    except OSError as error:
        raise _write_error(destination, error) from None
    try:
        yield temporary
        _finish(temporary, target)
    except OSError as error:
        raise _write_error(destination, error) from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def _new_temporary(target: Path) -> Path:
    name = f".{target.name[:_TEMPORARY_NAME_CHARS]}.{secrets.token_hex(4)}.tmp"
    temporary = target.with_name(name)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE))
    return temporary


def _finish(temporary: Path, target: Path) -> None:
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    with contextlib.suppress(FileNotFoundError):
        os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
    os.replace(temporary, target)


def _write_error(destination: Path, error: OSError) -> OutputPathError:
    return OutputPathError(
        f"cannot write {destination} ({_reason(error)}): nothing was written and any old file "
        "is unchanged; free space or choose another path"
    )


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__
