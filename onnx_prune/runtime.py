"""The one place that imports onnxruntime: sessions behind a small protocol tests can replace.

A modified model reaches onnxruntime as bytes of its graph only: its weights stay in the user's
external data files, which onnxruntime reads from the model's folder, so a model over 2 GB is
never serialised into one message and no file is written. onnxruntime's messages become
one-line ``OnnxPruneError``s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx

from onnx_prune.errors import UnsupportedModelError
from onnx_prune.load import LoadedModel

logger = logging.getLogger(__name__)


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


_SHARED_ARENA: list[bool] = []


def _use_shared_arena(ort: Any, session_options: Any) -> None:
    """One CPU arena for every session, growing only by what is asked (not doubling), and no
    memory-pattern planning: peak memory then stays flat from the first batch to the last."""
    if not _SHARED_ARENA:
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        same_as_requested = 1
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
        _SHARED_ARENA.append(True)
    session_options.enable_mem_pattern = False
    session_options.add_session_config_entry("session.use_env_allocators", "1")


_EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


class OrtSession:
    """An onnxruntime ``InferenceSession`` on the CPU."""

    def __init__(self, source: ModelSource, options: SessionOptions) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.add_session_config_entry(_EXTERNAL_FOLDER_KEY, str(source.data_folder))
        session_options.log_severity_level = 3
        _use_shared_arena(ort, session_options)
        if not options.optimize:
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        try:
            model = str(source.path) if source.model is None else source.model.SerializeToString()
            self._session = ort.InferenceSession(
                model, session_options, providers=["CPUExecutionProvider"]
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


def fixed_batch(specs: Sequence[TensorSpec]) -> int | None:
    """The batch size the inputs fix in their first dim, or None when it is free (or unclear)."""
    first_dims = (spec.shape[0] for spec in specs if spec.shape)
    fixed = {dim for dim in first_dims if isinstance(dim, int) and dim > 0}
    return next(iter(fixed)) if len(fixed) == 1 else None


Result = TypeVar("Result")


class BatchSplitter:
    """Runs work on whole batches until a batch of several samples fails in onnxruntime, then on
    one sample at a time from there on.

    Old models declare a symbolic batch but fix it inside the graph (e.g. a Reshape to
    [1, 2048]). A failure after batches have already worked, or on a single sample, is real.
    """

    def __init__(self) -> None:
        self.single = False
        self._proven = False

    def run(
        self, size: int, whole: Callable[[], Result], one_by_one: Callable[[], Result]
    ) -> Result:
        """``whole()`` for the batch of ``size`` samples, or ``one_by_one()`` once split."""
        if self.single:
            return one_by_one()
        try:
            result = whole()
        except UnsupportedModelError as error:
            if self._proven or size < 2:
                raise
            logger.warning("batches of %d fail (%s): running one sample at a time", size, error)
            self.single = True
            return one_by_one()
        self._proven = self._proven or size > 1
        return result


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


@dataclass(frozen=True)
class ModelSource:
    """What a session is built from: a model proto (or the user's file itself, when None), and
    the folder its external data lives in."""

    path: Path
    data_folder: Path
    model: onnx.ModelProto | None = None


@contextlib.contextmanager
def model_file(loaded: LoadedModel, model: onnx.ModelProto | None = None) -> Iterator[ModelSource]:
    """The source of a session on ``model`` (default: the loaded model itself).

    Nothing is written anywhere: a modified model is handed to onnxruntime as bytes (its
    weights stay in the user's external data files, read from the model's folder), so no
    temporary file is needed and nothing appears next to the user's model.
    """
    yield ModelSource(path=loaded.path, data_folder=loaded.folder, model=model)


def open_session(source: ModelSource | Path, options: SessionOptions | None = None) -> Session:
    """An onnxruntime session on a model source, or on the model file at a path."""
    if isinstance(source, Path):
        source = ModelSource(path=source, data_folder=source.parent)
    return OrtSession(source, options or SessionOptions())
