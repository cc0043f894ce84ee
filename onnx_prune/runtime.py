"""The one place that imports onnxruntime: sessions behind a small protocol tests can replace.

A modified model reaches onnxruntime as bytes of its graph only: its weights stay in the user's
external data files, which onnxruntime reads from the model's folder, so a model over 2 GB is
never serialised into one message and no file is written. onnxruntime's messages become
one-line ``OnnxPruneError``s.

Execution providers: ``Providers`` names them in priority order (``--providers cuda,cpu``) with
their options (``--provider-option cuda:device_id=1``). Options that keep the probe arithmetic
exact in float32 are set unless the user sets them (CUDA's ``use_tf32=0`` ...). After a session
is created, the providers it actually runs on are checked: onnxruntime silently falls back to the
CPU when, say, the CUDA libraries are missing, and that is an error here, not a slow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx

from onnx_prune.errors import OutOfMemoryError, ProviderError, UnsupportedModelError, first_line
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


CPU = "CPUExecutionProvider"

PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "cpu": CPU,
}
"""The short names ``--providers`` takes (any case), and onnxruntime's names for them."""

PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (with TensorRT installed)",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "CoreMLExecutionProvider": "onnxruntime (the macOS wheel)",
    "DmlExecutionProvider": "onnxruntime-directml",
    "ROCMExecutionProvider": "onnxruntime-rocm",
}
"""The package that brings each provider (installed instead of the plain ``onnxruntime``)."""

EXACT_MATH_OPTIONS: dict[str, dict[str, str]] = {
    "CUDAExecutionProvider": {"use_tf32": "0"},
    "TensorrtExecutionProvider": {"trt_fp16_enable": "False", "trt_int8_enable": "False"},
    "OpenVINOExecutionProvider": {"precision": "FP32"},
}
"""Options that keep a provider's math in float32 (no TF32, fp16 or int8): the probes compare
values with ε and sum shares, and must count exactly what the CPU counts."""

ProviderOptions = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def provider_name(text: str) -> str:
    """onnxruntime's name for a short name (any case) or a full ``...ExecutionProvider`` name."""
    short = PROVIDER_NAMES.get(text.strip().lower())
    if short is not None:
        return short
    if text.strip().endswith("ExecutionProvider"):
        return text.strip()
    known = ", ".join(PROVIDER_NAMES)
    raise ProviderError(
        f"unknown execution provider '{text}': give one of {known} or an onnxruntime name "
        "such as CUDAExecutionProvider"
    )


@dataclass(frozen=True)
class Providers:
    """onnxruntime execution providers in priority order, and the options given for each.

    ``options`` holds only what the user gave; ``session_options`` adds the exact-math defaults.
    """

    names: tuple[str, ...] = (CPU,)
    options: ProviderOptions = ()

    @classmethod
    def parse(cls, names: str | None, options: Sequence[str] = ()) -> Providers:
        """From ``--providers cuda,cpu`` and ``--provider-option cuda:device_id=0`` texts."""
        listed = tuple(dict.fromkeys(provider_name(n) for n in (names or "cpu").split(",")))
        given: dict[str, dict[str, str]] = {}
        for text in options:
            provider, key, value = _parse_option(text)
            if provider not in listed:
                raise ProviderError(
                    f"--provider-option {text}: {provider} is not in --providers "
                    f"({', '.join(listed)}): add it there"
                )
            given.setdefault(provider, {})[key] = value
        frozen = tuple((name, tuple(given[name].items())) for name in listed if name in given)
        return cls(names=listed, options=frozen)

    def session_options(self) -> list[tuple[str, dict[str, str]]]:
        """What onnxruntime is given: each provider with its options (exact-math defaults first,
        the user's over them), and the CPU last as the fallback for nodes others cannot run."""
        given = dict(self.options)
        names = self.names if CPU in self.names else (*self.names, CPU)
        return [
            (name, {**EXACT_MATH_OPTIONS.get(name, {}), **dict(given.get(name, ()))})
            for name in names
        ]

    @property
    def accelerated(self) -> bool:
        """True when a provider other than the CPU is asked for."""
        return any(name != CPU for name in self.names)

    def label(self) -> str:
        """A short text for titles: ``CUDA (use_tf32=0) > CPU``."""
        parts = []
        for name, options in self.session_options():
            if name not in self.names:
                continue
            short = name.removesuffix("ExecutionProvider")
            settings = ", ".join(f"{key}={value}" for key, value in options.items())
            parts.append(f"{short} ({settings})" if settings else short)
        return " > ".join(parts)

    def document(self) -> dict[str, object]:
        """The JSON fields: ``providers`` (priority order) and ``provider_options`` (as used)."""
        used = {name: options for name, options in self.session_options() if options}
        return {"providers": list(self.names), "provider_options": used}


CPU_ONLY = Providers()
"""The default: onnxruntime's CPU provider alone."""


def _parse_option(text: str) -> tuple[str, str, str]:
    """``NAME:KEY=VALUE`` (Polygraphy's form) as (onnxruntime name, key, value)."""
    name, colon, setting = text.partition(":")
    key, equals, value = setting.partition("=")
    if not (colon and equals and name.strip() and key.strip()):
        raise ProviderError(
            f"--provider-option takes NAME:KEY=VALUE (e.g. cuda:device_id=1), got '{text}'"
        )
    return provider_name(name), key.strip(), value.strip()


def check_active_providers(
    providers: Providers, active: Sequence[str], available: Sequence[str]
) -> None:
    """Refuse a session that does not run on every provider asked for (onnxruntime drops a
    provider whose libraries fail to load with a message on stderr and runs on the CPU)."""
    missing = [name for name in providers.names if name not in active]
    if missing:
        raise _provider_error(
            missing, f"the session fell back to {', '.join(active) or 'no provider'}", available
        )


def available_providers() -> tuple[str, ...]:
    """The providers this onnxruntime build has (``onnxruntime.get_available_providers()``)."""
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


def check_providers_available(providers: Providers) -> None:
    """Refuse, before any work, providers this onnxruntime build does not have at all."""
    available = available_providers()
    missing = [name for name in providers.names if name not in available]
    if missing:
        raise _provider_error(missing, "this onnxruntime does not have it", available)


def _provider_error(missing: Sequence[str], what: str, available: Sequence[str]) -> ProviderError:
    packages = sorted(
        {PROVIDER_PACKAGES.get(name, "an onnxruntime build with it") for name in missing}
    )
    return ProviderError(
        f"--providers asked for {', '.join(missing)} but {what} (available: "
        f"{', '.join(available)}): install {' or '.join(packages)} in place of onnxruntime, "
        "with the libraries it needs, or leave the provider out"
    )


def nodes_on_cpu(profile: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The nodes an onnxruntime profile shows running on the CPU provider, in first-run order."""
    names: dict[str, None] = {}
    for event in profile:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and args.get("provider") == CPU:
            node = str(event.get("name", "")).removesuffix("_kernel_time")
            names[f"{args.get('op_name', '?')} {node}"] = None
    return tuple(names)


@dataclass(frozen=True)
class SessionOptions:
    """How to build a session. ``optimize`` keeps onnxruntime's default graph optimizations;
    ``spinning`` False stops idle intra-op threads from spinning (they would take the cores a
    counting thread beside the session needs)."""

    optimize: bool = True
    threads: int | None = None
    providers: Providers = CPU_ONLY
    spinning: bool = True


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
    """An onnxruntime ``InferenceSession`` on the providers asked for (the CPU by default).

    On an accelerator the first run is profiled, to log the nodes that fell back to the CPU.
    """

    def __init__(self, source: ModelSource, options: SessionOptions) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.add_session_config_entry(_EXTERNAL_FOLDER_KEY, str(source.data_folder))
        # 4 = fatal only: onnxruntime's own error log (coloured, several lines on standard error)
        # would repeat what run() raises, and raises as one line
        session_options.log_severity_level = 4
        _use_shared_arena(ort, session_options)
        if not options.optimize:
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        if not options.spinning:
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._profile_folder = self._start_profiling(session_options, options.providers)
        providers = options.providers.session_options()
        try:
            model = str(source.path) if source.model is None else source.model.SerializeToString()
            with warnings.catch_warnings():  # an unavailable provider: checked just below
                warnings.simplefilter("ignore", UserWarning)
                self._session = ort.InferenceSession(model, session_options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            raise UnsupportedModelError(
                f"onnxruntime cannot load the model: {first_line(error)}"
            ) from None
        active = self._session.get_providers()
        check_active_providers(options.providers, active, ort.get_available_providers())

    @staticmethod
    def _start_profiling(session_options: Any, providers: Providers) -> Path | None:
        if not providers.accelerated:
            return None
        folder = Path(tempfile.mkdtemp(prefix="onnx-prune-profile-"))
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(folder / "run")
        return folder

    def _log_cpu_nodes(self) -> None:
        """Once, after the first run: which nodes the accelerator left to the CPU."""
        folder, self._profile_folder = self._profile_folder, None
        if folder is None:
            return
        try:
            profile = Path(self._session.end_profiling())
            nodes = nodes_on_cpu(json.loads(profile.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            logger.warning("could not read onnxruntime's profile of the first run: %s", error)
            nodes = ()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if nodes:
            logger.warning(
                "%d node(s) run on the CPU, not on the accelerator: %s",
                len(nodes),
                ", ".join(nodes),
            )

    def inputs(self) -> Sequence[TensorSpec]:
        """The model's real inputs (initializers listed as inputs are left out by onnxruntime)."""
        return [_spec(arg) for arg in self._session.get_inputs()]

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; onnxruntime's errors become UnsupportedModelError."""
        try:
            results = self._session.run(list(outputs), dict(feeds))
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            if _is_allocation_failure(error):
                raise OutOfMemoryError(out_of_memory_advice(_batch_of(feeds))) from None
            raise UnsupportedModelError(_run_failure(error, feeds)) from None
        self._log_cpu_nodes()
        return [np.asarray(result) for result in results]

    def run_into(self, outputs: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        """Run once, writing each output into the preallocated array given for it (IOBinding):
        no allocation and no copy out of the session."""
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name, array in outputs.items():
            binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        try:
            self._session.run_with_iobinding(binding)
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            if _is_allocation_failure(error):
                raise OutOfMemoryError(out_of_memory_advice(_batch_of(feeds))) from None
            raise UnsupportedModelError(_run_failure(error, feeds)) from None


def _run_failure(error: Exception, feeds: Mapping[str, np.ndarray]) -> str:
    """onnxruntime's one line for a failed run, with the shapes fed and what to try."""
    shapes = ", ".join(f"{name} {list(np.shape(array))}" for name, array in feeds.items())
    return (
        f"onnxruntime failed on inputs {shapes}: {first_line(error)}; check that these shapes"
        " suit the model (--size HxW for images, the arrays' shapes for --inputs)"
    )


def _is_allocation_failure(error: Exception) -> bool:
    """MemoryError, or onnxruntime's "Failed to allocate memory" / std::bad_alloc."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or "failed to allocate" in text or "bad_alloc" in text


def _batch_of(feeds: Mapping[str, np.ndarray]) -> int:
    sizes = [array.shape[0] for array in feeds.values() if array.ndim]
    return max(sizes, default=1)


def out_of_memory_advice(batch_size: int | None) -> str:
    """What to do when a batch of ``batch_size`` samples does not fit in memory."""
    if batch_size is not None and batch_size > 1:
        return (
            f"out of memory running a batch of {batch_size} samples: lower --batch-size to "
            f"{batch_size // 2} or less"
        )
    return "out of memory: the model needs more memory than this machine has free"


Result = TypeVar("Result")


class BatchSplitter:
    """Runs work on whole batches until a batch of several samples fails in onnxruntime, then on
    one sample at a time from there on.

    Old models declare a symbolic batch but fix it inside the graph (e.g. a Reshape to
    [1, 2048]). A failure after batches have already worked, or on a single sample, is real.
    """

    def __init__(self, *, single: bool = False, proven: bool = False) -> None:
        self.single = single
        self._proven = proven

    @property
    def proven(self) -> bool:
        """Whether a batch of several samples has run whole."""
        return self._proven

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


def cpu_optimized(source: ModelSource) -> onnx.ModelProto:
    """``source``'s model as onnxruntime's CPU provider optimizes it on this machine (every graph
    optimization, its blocked channel layout included): written by onnxruntime into a temporary
    folder, read back and the folder removed at once. The result suits this machine only, and
    holds its weights inline (models with external data are not handed here)."""
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp(prefix="onnx-prune-optimized-"))
    try:
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 4
        session_options.optimized_model_filepath = str(folder / "optimized.onnx")
        model = str(source.path) if source.model is None else source.model.SerializeToString()
        try:
            ort.InferenceSession(model, session_options, providers=[CPU])
            return onnx.load(str(folder / "optimized.onnx"))
        except Exception as error:  # onnxruntime raises its own untyped exception classes
            raise UnsupportedModelError(
                f"onnxruntime cannot optimize the model: {first_line(error)}"
            ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
