"""Export the paper's torchvision CNNs to ONNX, with ImageNet weights or random ones.

torch and torchvision are optional (the ``export`` extra) and are imported only inside
:func:`export_torchvision`, so the rest of onnx-prune never needs them. A model exported with
random weights says so in its ``metadata_props`` (:data:`RANDOM_WEIGHTS_KEY` = ``"true"``), so
that every later analysis can label its numbers as coming from random weights.
"""

from __future__ import annotations

import http.client
import importlib
import logging
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from onnx_prune.errors import ConversionError, MissingExtraError
from onnx_prune.files import replacing
from onnx_prune.load import RANDOM_WEIGHTS_KEY

logger = logging.getLogger(__name__)

EXPORTABLE_MODELS: tuple[str, ...] = (
    "alexnet",
    "mobilenet_v2",
    "resnet50",
    "squeezenet1_1",
    "vgg16",
)
"""torchvision model names :func:`export_torchvision` accepts: the paper's networks but TinyNet."""

SOURCE_KEY = "onnx_prune.exported_from"
"""``metadata_props`` key naming the torchvision model and versions an export came from."""

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 224
RANDOM_SEED = 0
# protobuf cannot serialize a message of 2 GiB or more; keep a margin for the graph itself.
SINGLE_FILE_LIMIT_BYTES = 2**31 - 64 * 2**20
EXPORT_EXTRA_HINT = "pip install 'onnx-prune[export]'"


def export_torchvision(name: str, out_path: Path, *, random_weights: bool) -> None:
    """Export torchvision's ``name`` to ``out_path`` with a dynamic batch and input ``input``.

    With ``random_weights`` the weights are torchvision's random initialisation (seed 0, no
    network needed) and the file is marked as such; otherwise torchvision's ImageNet weights
    are used, which it downloads on first use. The file is a single ``.onnx`` file, or
    ``out_path`` plus ``out_path.name + ".data"`` for weights of 2 GB or more.

    Raises:
        ConversionError: unknown model name, weights cannot be downloaded, or export fails.
        MissingExtraError: torch, torchvision or onnxscript is not installed.
    """
    if name not in EXPORTABLE_MODELS:
        choices = ", ".join(EXPORTABLE_MODELS)
        raise ConversionError(f"cannot export {name!r}: choose one of {choices}")
    torch, torchvision = _import_export_modules()
    model = _build_model(torch, torchvision, name, random_weights=random_weights)
    versions = f"torchvision {torchvision.__version__}, torch {torch.__version__}"
    source = f"torchvision.models.{name} ({versions})"
    metadata = {SOURCE_KEY: source}
    if random_weights:
        metadata[RANDOM_WEIGHTS_KEY] = "true"
    _export_model(torch, model, out_path, metadata=metadata)
    logger.info("exported %s to %s", name, out_path)


def _import_export_modules() -> tuple[ModuleType, ModuleType]:
    """Import torch and torchvision, and check onnxscript, which torch's exporter needs."""
    modules = {}
    for module_name in ("torch", "torchvision", "onnxscript"):
        try:
            modules[module_name] = importlib.import_module(module_name)
        except ImportError as error:
            raise MissingExtraError(_missing_module_message(module_name)) from error
    return modules["torch"], modules["torchvision"]


def _missing_module_message(module_name: str) -> str:
    install = EXPORT_EXTRA_HINT
    if module_name == "torchvision":
        install += " torchvision"
    return (
        f"exporting torchvision models needs the export extra: {install} "
        f"({module_name} is not installed)"
    )


def _build_model(torch: Any, torchvision: Any, name: str, *, random_weights: bool) -> Any:
    """The torchvision model in eval mode, with random (seeded) or ImageNet weights."""
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = torchvision.models.get_model(name, weights=None)
    else:
        model = _build_pretrained_model(torch, torchvision, name)
    return model.eval()


def _build_pretrained_model(torch: Any, torchvision: Any, name: str) -> Any:
    """The model with torchvision's default ImageNet weights, downloaded (or cached)."""
    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except (OSError, http.client.HTTPException) as error:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise ConversionError(
            f"cannot download the ImageNet weights of {name} ({error}). Use --random-weights "
            f"to export it with random weights, or export on a machine with network access "
            f"(or copy torchvision's weights file into {cache})"
        ) from error


def _export_model(torch: Any, model: Any, out_path: Path, *, metadata: dict[str, str]) -> None:
    """Export with torch's dynamo exporter in a temporary folder, then move to ``out_path``."""
    external_data = _parameter_bytes(model) >= SINGLE_FILE_LIMIT_BYTES
    with tempfile.TemporaryDirectory(prefix="onnx-prune-export-") as tmp:
        staging = Path(tmp) / out_path.name
        program = _run_exporter(torch, model)
        program.save(str(staging), external_data=external_data)
        proto = onnx.load(str(staging), load_external_data=False)
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(staging))
        for produced in Path(tmp).iterdir():
            # Each file replaces its old copy atomically; the temporary folder may be on
            # another file system, so the bytes are copied into the output's own folder first.
            with replacing(out_path.parent / produced.name) as temporary:
                shutil.copyfile(produced, temporary)


def _run_exporter(torch: Any, model: Any) -> Any:
    """Run ``torch.onnx.export(dynamo=True)`` with batch dimension ``N`` dynamic."""
    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim("N", min=1, max=4096)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except torch.onnx.OnnxExporterError as error:
        raise ConversionError(f"torch's ONNX exporter failed: {error}") from error
    if program is None:
        raise ConversionError("torch's ONNX exporter returned no program")
    return program


def _parameter_bytes(model: Any) -> int:
    """Bytes of all parameters and buffers, to decide whether external data is needed."""
    return sum(
        int(tensor.numel()) * int(tensor.element_size()) for tensor in model.state_dict().values()
    )
