"""The one place that imports onnxruntime: sessions behind a small protocol tests can replace.

Models are handed to onnxruntime as files in a temporary folder (never next to the user's model),
with the user's external data files linked in beside them, so a model over 2 GB is never
serialised into one message. onnxruntime's messages become one-line ``OnnxPruneError``s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from onnx_prune.errors import UnsupportedModelError
from onnx_prune.load import LoadedModel


@dataclass(frozen=True)
class TensorSpec:
    """A session input or output: its name, element type (numpy) and shape (dims or names)."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int | str | None, ...]


class Session(Protocol):
    """What the analysis needs of an inference session."""

    def inputs(self) -> Sequence[TensorSpec]:
        """The model's inputs."""
        ...

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on ``feeds`` and return ``outputs`` in the order asked."""
        ...


@dataclass(frozen=True)
class SessionOptions:
    """How to build a session. ``optimize`` keeps onnxruntime's default graph optimizations."""

    optimize: bool = True
    threads: int | None = None


class OrtSession:
    """An onnxruntime ``InferenceSession`` on the CPU."""

    def __init__(self, path: Path, options: SessionOptions) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if not options.optimize:
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        try:
            self._session = ort.InferenceSession(
                str(path), session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            raise UnsupportedModelError(
                f"onnxruntime cannot load the model: {_first_line(error)}"
            ) from None

    def inputs(self) -> Sequence[TensorSpec]:
        """The model's real inputs (initializers listed as inputs are left out by onnxruntime)."""
        return [_spec(arg) for arg in self._session.get_inputs()]

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; onnxruntime's errors become UnsupportedModelError."""
        try:
            results = self._session.run(list(outputs), dict(feeds))
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            raise UnsupportedModelError(f"onnxruntime failed: {_first_line(error)}") from None
        return [np.asarray(result) for result in results]


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _spec(arg: object) -> TensorSpec:
    name = str(getattr(arg, "name", ""))
    type_name = str(getattr(arg, "type", ""))
    dtype = np.dtype(_ORT_TYPES.get(type_name, np.float32))
    shape = tuple(getattr(arg, "shape", None) or ())
    return TensorSpec(name, dtype, shape)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


@contextlib.contextmanager
def model_file(loaded: LoadedModel, model: onnx.ModelProto | None = None) -> Iterator[Path]:
    """A temporary file holding ``model`` (default: the loaded model), removed afterwards.

    The user's external data files are linked beside it so relative locations still resolve.
    """
    folder = Path(tempfile.mkdtemp(prefix="onnx-prune-"))
    try:
        for data_file in loaded.external_files():
            relative = data_file.relative_to(loaded.folder)
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            _link(data_file, folder / relative)
        path = folder / "model.onnx"
        if model is None:
            _link(loaded.path, path)
        else:
            onnx.save(model, str(path))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)


def open_session(path: Path, options: SessionOptions | None = None) -> Session:
    """An onnxruntime session on the model file at ``path``."""
    return OrtSession(path, options or SessionOptions())
