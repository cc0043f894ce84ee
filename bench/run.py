"""``make bench``: speed and memory, as ratios against a baseline run in the same process.

Figures printed (wall-clock seconds are shown for context only; the ratios are the result):

1. weight scan vs ``onnx.load`` of a generated model with about 500 MB of weights;
2. analyze in-loop vs plain onnxruntime inference of the embedded model (batch 8, 256 samples,
   six ε, IFM and OFM statistics), beside the mark-every-tensor-as-output + numpy method;
3. the same ratio on a compute-heavy VGG-style model built here (random weights);
4. the whole ``onnx-prune analyze`` command vs a plain script, 512 images, end to end;
5. peak memory of ``onnx-prune analyze`` with 256 images vs 8 images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_prune.calibrate import collect_activation_stats  # noqa: E402
from onnx_prune.constants import ConstantResolver  # noqa: E402
from onnx_prune.data import EMBEDDED_IMAGES, EMBEDDED_MODEL  # noqa: E402
from onnx_prune.inputs import Batch, find_images, get_preset, load_image  # noqa: E402
from onnx_prune.layers import ComputeLayer, find_compute_layers  # noqa: E402
from onnx_prune.load import LoadedModel, load_model  # noqa: E402
from onnx_prune.probes import add_probes, probed_tensors  # noqa: E402
from onnx_prune.runtime import model_file, open_session  # noqa: E402
from onnx_prune.weights import count_zero_weights  # noqa: E402

MODEL = EMBEDDED_MODEL
IMAGES = EMBEDDED_IMAGES
EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
BATCH = 8


def median_time(action: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big_weight_model(folder: Path) -> Path:
    """About 500 MB of float32 weights in convs and MatMuls, 30% zeros."""
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    previous = "x"
    for index in range(4):
        weight = rng.normal(size=(512, 512, 3, 3)).astype(np.float32)
        weight[rng.random(weight.shape) < 0.3] = 0
        initializers.append(numpy_helper.from_array(weight, f"conv{index}_w"))
        nodes.append(
            helper.make_node("Conv", [previous, f"conv{index}_w"], [f"c{index}"], pads=[1] * 4)
        )
        previous = f"c{index}"
    nodes.append(helper.make_node("Flatten", [previous], ["f"]))
    previous, width = "f", 512 * 4 * 4
    for index in range(4):
        weight = rng.normal(size=(width, 5000)).astype(np.float32)
        weight[rng.random(weight.shape) < 0.3] = 0
        initializers.append(numpy_helper.from_array(weight, f"fc{index}_w"))
        nodes.append(helper.make_node("MatMul", [previous, f"fc{index}_w"], [f"m{index}"]))
        previous, width = f"m{index}", 5000
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512, 4, 4])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, width])],
        initializers,
    )
    path = folder / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def bench_weights(folder: Path) -> dict[str, float]:
    """Weight scan time as a ratio of ``onnx.load`` on the same file."""
    path = big_weight_model(folder)
    megabytes = path.stat().st_size / 1e6
    load = median_time(lambda: onnx.load(str(path)), 3)
    loaded = load_model(path)
    scan = median_time(lambda: count_zero_weights(loaded, eps=(0.0,)), 3)
    scan_eps = median_time(lambda: count_zero_weights(loaded, eps=(0.0, 1e-3, 1e-2)), 3)
    return {
        "weights_mb": megabytes,
        "onnx_load_s": load,
        "scan_s": scan,
        "scan_over_load": scan / load,
        "scan3_over_load": scan_eps / load,
        "scan_mb_per_s": megabytes / scan,
    }


def image_batches(samples: int, size: tuple[int, int] = (224, 224)) -> list[Batch]:
    """The embedded photos, preprocessed once, repeated to ``samples`` and split in batches."""
    preset = get_preset("efficientnet-lite")
    photos = [load_image(path, preset, size) for path in find_images([IMAGES])]
    stack = np.stack([photos[i % len(photos)] for i in range(samples)])
    return [
        Batch({"input": stack[i : i + BATCH]}, tuple(str(n) for n in range(i, i + BATCH)))
        for i in range(0, samples, BATCH)
    ]


class PlainSession:
    """onnxruntime exactly as a user runs it: default session options, default optimizations."""

    def __init__(self, path: Path, *, optimize: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if not optimize:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def run(self, outputs: list[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once."""
        return list(self._session.run(outputs, dict(feeds)))


def run_plain(session: PlainSession, batches: list[Batch]) -> None:
    """Plain inference: the model's own outputs only."""
    for batch in batches:
        session.run(["logits"], batch.arrays)


def bench_optimizations(path: Path, batches: list[Batch]) -> dict[str, float]:
    """Plain inference with onnxruntime's graph optimizations off, against on (the default)."""
    default, unoptimized = PlainSession(path), PlainSession(path, optimize=False)
    run_plain(default, batches[:1])
    run_plain(unoptimized, batches[:1])
    fast = median_time(lambda: run_plain(default, batches), 3)
    slow = median_time(lambda: run_plain(unoptimized, batches), 3)
    return {"unoptimized_over_default": slow / fast}


def mark_all_numpy(
    loaded: LoadedModel, layers: tuple[ComputeLayer, ...]
) -> Callable[[list[Batch]], None]:
    """The Polygraphy/histogram-calibrator way: every probed tensor an output, numpy counts."""
    tensors = probed_tensors(layers)
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded.model)
    copy.graph.output.extend(
        helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors
    )
    with model_file(loaded, copy) as source:
        session = open_session(source)
    bounds = np.asarray(EPS, np.float32)

    def run(batches: list[Batch]) -> None:
        for batch in batches:
            for values in session.run(tensors, batch.arrays):
                magnitude = np.abs(values)
                planes = magnitude.reshape(values.shape[0], values.shape[1], -1)
                planes.max(axis=2)[..., None] <= bounds  # noqa: B015
                for bound in bounds:
                    np.count_nonzero(magnitude <= bound)

    return run


def bench_in_loop(
    path: Path, batches: list[Batch], *, reference: bool, eps: tuple[float, ...] = EPS
) -> dict[str, float]:
    """Probed calibration loop vs plain inference, alternating, same process and batches."""
    loaded = load_model(path)
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    probed = add_probes(loaded.model, layers, eps=eps)
    plain = PlainSession(path)
    with model_file(loaded, probed.model) as source:
        measured = open_session(source)
    warm = batches[:1]
    run_plain(plain, warm)
    collect_activation_stats(measured, probed.manifest, layers, warm)
    plain_time = median_time(lambda: run_plain(plain, batches), 3)
    probe_time = median_time(
        lambda: collect_activation_stats(measured, probed.manifest, layers, batches), 3
    )
    samples = sum(batch.size for batch in batches)
    figures = {
        "samples": samples,
        "plain_ms_per_sample": 1000 * plain_time / samples,
        "analysis_over_plain": probe_time / plain_time,
    }
    if reference:
        mark_all = mark_all_numpy(loaded, layers)
        mark_all(warm)
        figures["mark_all_numpy_over_plain"] = (
            median_time(lambda: mark_all(batches), 1) / plain_time
        )
    return figures


def vgg_model(folder: Path, size: int = 112) -> Path:
    """VGG-16's 13 convolutions (random weights, ReLU, max pooling), classifier left out."""
    rng = np.random.default_rng(0)
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    nodes, initializers, previous, channels = [], [], "input", 3
    for index, width in enumerate(widths):
        if width == "M":
            nodes.append(
                helper.make_node(
                    "MaxPool", [previous], [f"p{index}"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            previous = f"p{index}"
            continue
        scale = np.sqrt(2.0 / (channels * 9))
        weight = (rng.normal(size=(int(width), channels, 3, 3)) * scale).astype(np.float32)
        bias = rng.normal(0, 0.05, size=int(width)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(bias, f"b{index}"),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{index}", f"b{index}"], [f"c{index}"], pads=[1] * 4
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        previous, channels = f"r{index}", int(width)
    nodes.append(helper.make_node("GlobalAveragePool", [previous], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "vgg16_convs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", channels, 1, 1])],
        initializers,
    )
    path = folder / "vgg16_convs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def image_folder(folder: Path, count: int) -> Path:
    """``count`` image files (the embedded photos, copied round-robin)."""
    photos = find_images([IMAGES])
    target = folder / f"images{count}"
    target.mkdir()
    for index in range(count):
        source = photos[index % len(photos)]
        shutil.copyfile(source, target / f"{index:04d}{source.suffix}")
    return target


PLAIN_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, onnxruntime as ort
    from pathlib import Path
    from PIL import Image
    folder, model = Path(sys.argv[1]), sys.argv[2]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    def load(path):
        image = Image.open(path).convert("RGB")
        scale = 256 / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.BILINEAR)
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32)
        return ((pixels - 127) / 128).transpose(2, 0, 1)
    files = sorted(folder.iterdir())
    for start in range(0, len(files), 8):
        batch = np.stack([load(f) for f in files[start:start + 8]])
        session.run(None, {"input": batch})
    """
)

# VmHWM (peak resident memory of this process image), not ru_maxrss: Linux carries ru_maxrss
# over from the forking parent, which here is the benchmark itself.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from onnx_prune.cli import main
    status = main(sys.argv[1:])
    status_lines = Path("/proc/self/status").read_text().splitlines()
    peak = next(line for line in status_lines if line.startswith("VmHWM"))
    print("MAXRSS_KB", peak.split()[1])
    sys.exit(status)
    """
)


def timed_command(arguments: list[str]) -> float:
    """Wall time of a subprocess that must succeed."""
    start = time.perf_counter()
    subprocess.run(arguments, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def bench_end_to_end(folder: Path) -> dict[str, float]:
    """The whole command against a plain script, 512 images, imports and loading included."""
    images = image_folder(folder, 512)
    plain = timed_command([sys.executable, "-c", PLAIN_SCRIPT, str(images), str(MODEL)])
    command = [sys.executable, "-m", "onnx_prune", "analyze", "--images", str(images)]
    analyze = timed_command([*command, "--json", str(folder / "out.json")])
    return {"plain_script_s": plain, "analyze_s": analyze, "analyze_over_plain": analyze / plain}


def peak_memory_kb(images: Path, limit: int, folder: Path) -> int:
    """Peak resident memory of ``onnx-prune analyze`` over ``limit`` images."""
    arguments = ["analyze", "--images", str(images), "--limit", str(limit)]
    arguments += ["--json", str(folder / f"memory{limit}.json")]
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *arguments],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MAXRSS_KB"))
    return int(line.split()[1])


def bench_memory(folder: Path) -> dict[str, float]:
    """Peak memory with 256 images as a ratio of peak memory with 8."""
    images = image_folder(folder, 256)
    small = peak_memory_kb(images, 8, folder)
    large = peak_memory_kb(images, 256, folder)
    return {
        "peak_mb_8": small / 1024,
        "peak_mb_256": large / 1024,
        "peak_256_over_8": large / small,
    }


def main() -> int:
    """Run every benchmark and print the figures (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    args = parser.parse_args()
    samples = 32 if args.quick else 256
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="onnx-prune-bench-") as temporary:
        folder = Path(temporary)
        steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("weight scan", lambda: bench_weights(folder)),
            (
                "analyze in-loop, EfficientNet-Lite0",
                lambda: bench_in_loop(MODEL, image_batches(samples), reference=True),
            ),
            (
                "plain inference without graph optimizations, EfficientNet-Lite0",
                lambda: bench_optimizations(MODEL, image_batches(64)),
            ),
            (
                "analyze in-loop, EfficientNet-Lite0, one ε (0) instead of six",
                lambda: bench_in_loop(MODEL, image_batches(samples), reference=False, eps=(0.0,)),
            ),
            (
                "analyze in-loop, VGG-16 convs at 112 (random weights)",
                lambda: bench_in_loop(
                    vgg_model(folder), image_batches(32, (112, 112)), reference=False
                ),
            ),
            ("end to end, 512 images", lambda: bench_end_to_end(folder)),
            ("peak memory", lambda: bench_memory(folder)),
        ]
        for name, step in steps:
            results[name] = step()
            figures = ", ".join(f"{key} {value:.3g}" for key, value in results[name].items())
            print(f"{name}: {figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
