"""``make bench``: speed and memory, as ratios against a baseline interleaved in one process.

Every in-loop ratio is measured chunk by chunk, the methods run A B C … A B C … over the same
batches (the order rotated each round), and reported as the median and range of the per-chunk
ratios: on a shared machine a load spike then hits one chunk of every method, not one method.
Figures printed (wall-clock seconds are context only; the ratios are the result):

1. weight scan vs ``onnx.load`` of a generated model with about 500 MB of weights;
2. in the loop, the embedded model (batch 8, six ε, IFM and OFM, tiles), × plain onnxruntime:
   the fast path (maps taken out in onnxruntime's blocked layout), the in-graph probes, the fast
   path's inference alone, the fast path with the maps reordered to NCHW by onnxruntime (and its
   inference alone), Polygraphy's mark-all + numpy counts and onnxruntime's MinMax calibrator
   graph (peers), plain inference with onnxruntime's thread spinning off (what the fast path
   runs with); beside them the machine's read bandwidth (numpy sum over 1 GiB) and the
   read-once floor it implies: plain + one read of the maps;
3. the same on a compute-heavy VGG-style model built here (random weights);
4. the whole ``onnx-prune analyze`` command vs a plain script, 512 images, interleaved;
5. peak memory of ``onnx-prune analyze``, 256 images vs 8, vs one full batch and vs 64, per batch
   size (1, 8, 32);
6. Dask (the ``dask`` extra): ``analyze --workers 2`` vs ``--workers 1`` over 512 images (whole
   commands, cluster start included, interleaved), and the in-process synchronous Dask path vs
   the plain one-piece path (``analyze_model`` in this process, interleaved).
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_prune.binding import BoundRunner  # noqa: E402
from onnx_prune.calibrate import collect_activation_stats  # noqa: E402
from onnx_prune.data import EMBEDDED_IMAGES, EMBEDDED_MODEL  # noqa: E402
from onnx_prune.inputs import Batch, find_images, get_preset, load_image  # noqa: E402
from onnx_prune.load import load_model  # noqa: E402
from onnx_prune.probes import add_probes, probed_tensors  # noqa: E402
from onnx_prune.runtime import model_file, open_session  # noqa: E402
from onnx_prune.shards import CountOptions, Prepared, prepare  # noqa: E402
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

    def __init__(self, path: Path, *, spinning: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.output = self._session.get_outputs()[0].name

    def run(self, outputs: list[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once."""
        return list(self._session.run(outputs, dict(feeds)))


Method = Callable[[list[Batch]], object]


def plain_method(path: Path, *, spinning: bool = True) -> Method:
    """Plain inference: the model's own outputs only."""
    session = PlainSession(path, spinning=spinning)

    def run(batches: list[Batch]) -> None:
        for batch in batches:
            session.run([session.output], batch.arrays)

    return run


def analyze_method(path: Path, *, fast: bool, blocked: bool = True) -> tuple[Method, Prepared]:
    """``analyze``'s calibration loop as the command prepares it: the fast path (maps counted on
    the host; ``blocked`` False keeps them in NCHW, reordered by onnxruntime) or the in-graph
    probes."""
    options = CountOptions(eps=EPS, tile=(8, 8), fast=fast)
    prepared = prepare(path, options)
    if not blocked:
        probed = add_probes(prepared.loaded.model, prepared.scan.layers, eps=EPS, on_host=fast)
        prepared = replace(prepared, probed=probed, as_written=None)
    with model_file(prepared.loaded, prepared.probed.model) as source:
        session = open_session(source, prepared.session_options(options))

    def run(batches: list[Batch]) -> None:
        collect_activation_stats(session, prepared.probed.manifest, prepared.scan.layers, batches)

    return run, prepared


def bound_outputs_method(prepared: Prepared) -> Method:
    """The fast path's inference alone: probed maps bound as outputs, nothing counted."""
    options = CountOptions(eps=EPS, tile=(8, 8), fast=True)
    with model_file(prepared.loaded, prepared.probed.model) as source:
        session = open_session(source, prepared.session_options(options))
    runner = BoundRunner(session, prepared.probed.manifest.outputs())

    def run(batches: list[Batch]) -> None:
        for batch in batches:
            runner.run(batch)

    return run


def polygraphy_method(path: Path, tensors: list[str]) -> Method:
    """Polygraphy's mark-all (every tensor an output) + numpy counts of the probed maps: element
    counts per ε and zero channels (no tiles)."""
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR

    marked = ModifyOutputs(OnnxFromPath(str(path)), outputs=constants.MARK_ALL)
    runner = OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(marked)))
    runner.activate()
    bounds = np.asarray(EPS, np.float32)

    def run(batches: list[Batch]) -> None:
        for batch in batches:
            outputs = {**batch.arrays, **runner.infer(dict(batch.arrays))}
            for tensor in tensors:
                magnitude = np.abs(outputs[tensor])
                planes = magnitude.reshape(magnitude.shape[0], magnitude.shape[1], -1)
                planes.max(axis=2)[..., None] <= bounds  # noqa: B015
                for bound in bounds:
                    np.count_nonzero(magnitude <= bound)

    return run


def minmax_method(path: Path, folder: Path) -> Method:
    """onnxruntime's MinMax calibrator graph as its quantization tool runs it (its own session:
    graph optimizations off): per-tensor minima and maxima only, no counts."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator

    calibrator = create_calibrator(str(path), augmented_model_path=str(folder / "minmax.onnx"))

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, batches: list[Batch]) -> None:
            self._feeds = iter([dict(batch.arrays) for batch in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    def run(batches: list[Batch]) -> None:
        calibrator.collect_data(Reader(batches))

    return run


def interleaved(
    methods: dict[str, Method], chunks: list[list[Batch]], baseline: str
) -> dict[str, dict[str, float]]:
    """Each method over each chunk, A B C … A B C …, the order rotated every round; per method
    the median and range of its per-chunk time over the baseline's in the same round."""
    names = list(methods)
    for method in methods.values():
        method(chunks[0][:1])  # warm-up: first-run allocations and compilation
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index, chunk in enumerate(chunks):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            methods[name](chunk)
            times[name].append(time.perf_counter() - start)
    figures = {}
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times[baseline], strict=True)]
        figures[name] = {
            "median": statistics.median(ratios),
            "low": min(ratios),
            "high": max(ratios),
            "seconds": sum(times[name]),
        }
    return figures


def chunked(batches: list[Batch], per_chunk: int) -> list[list[Batch]]:
    """Consecutive chunks of ``per_chunk`` batches."""
    return [batches[i : i + per_chunk] for i in range(0, len(batches), per_chunk)]


def read_bandwidth() -> float:
    """The machine's read bandwidth: numpy sum over 1 GiB of float32, best of three, GB/s."""
    values = np.ones(1 << 28, np.float32)
    best = min(median_time(values.sum, 1) for _ in range(3))
    del values
    return (1 << 30) / best / 1e9


def bench_in_loop(folder: Path, samples: int) -> dict[str, object]:
    """Every method side by side over the same batches of the embedded model, interleaved."""
    fast, prepared = analyze_method(MODEL, fast=True)
    fast_nchw, nchw = analyze_method(MODEL, fast=True, blocked=False)
    in_graph, _ = analyze_method(MODEL, fast=False)
    layers = prepared.scan.layers
    methods = {
        "plain": plain_method(MODEL),
        "fast path": fast,
        "in-graph probes": in_graph,
        "fast path inference alone (maps bound as outputs, not counted)": bound_outputs_method(
            prepared
        ),
        "fast path, maps reordered to NCHW by onnxruntime": fast_nchw,
        "its inference alone": bound_outputs_method(nchw),
        "Polygraphy mark-all + numpy counts": polygraphy_method(MODEL, probed_tensors(layers)),
        "onnxruntime MinMax calibrator graph": minmax_method(MODEL, folder),
        "plain, allow_spinning off": plain_method(MODEL, spinning=False),
    }
    batches = image_batches(samples)
    figures: dict[str, object] = dict(interleaved(methods, chunked(batches, 4), "plain"))
    plain_seconds = figures["plain"]["seconds"] / samples  # type: ignore[index]
    map_bytes = shapes_bytes(nchw, batches[0])
    bandwidth = read_bandwidth()
    figures["limit"] = {
        "plain_ms_per_sample": 1000 * plain_seconds,
        "probed_mb_per_sample": map_bytes / 1e6,
        "read_gb_per_s": bandwidth,
        "read_once_floor": 1 + map_bytes / (bandwidth * 1e9) / plain_seconds,
    }
    return figures


def shapes_bytes(prepared: Prepared, batch: Batch) -> int:
    """Bytes of one sample's probed maps (NCHW, no padding), from the outputs on one batch."""
    with model_file(prepared.loaded, prepared.probed.model) as source:
        session = open_session(source)
    arrays = session.run(prepared.probed.manifest.outputs(), batch.arrays)
    return sum(a.nbytes for a in arrays) // batch.size


def bench_vgg(folder: Path) -> dict[str, object]:
    """The same ratios on a compute-heavy VGG-style model (random weights), 32 samples."""
    path = vgg_model(folder)
    methods = {
        "plain": plain_method(path),
        "fast path": analyze_method(path, fast=True)[0],
        "in-graph probes": analyze_method(path, fast=False)[0],
    }
    return dict(interleaved(methods, chunked(image_batches(32, (112, 112)), 1), "plain"))


def vgg_model(folder: Path, size: int = 112) -> Path:
    """VGG-16's 13 convolutions (random weights, ReLU, max pooling), classifier left out."""
    rng = np.random.default_rng(0)
    widths: list[int | str] = [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
    ]
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
    """``count`` image files (the embedded photos, copied round-robin), made once per folder."""
    photos = find_images([IMAGES])
    target = folder / f"images{count}"
    if target.is_dir():  # made by an earlier section of this run
        return target
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


def bench_end_to_end(folder: Path, rounds: int = 3) -> dict[str, object]:
    """The whole command against a plain script, 512 images, imports and loading included,
    interleaved: script, command, script, command …"""
    images = image_folder(folder, 512)
    plain = [sys.executable, "-c", PLAIN_SCRIPT, str(images), str(MODEL)]
    command = [sys.executable, "-m", "onnx_prune", "analyze", "--images", str(images)]
    command += ["--json", str(folder / "out.json")]
    timed_command(command)  # warm-up: numba's compile cache, the page cache
    plain_times, analyze_times = [], []
    for _ in range(rounds):
        plain_times.append(timed_command(plain))
        analyze_times.append(timed_command(command))
    ratios = [a / p for a, p in zip(analyze_times, plain_times, strict=True)]
    return {
        "plain_script_s": statistics.median(plain_times),
        "analyze_s": statistics.median(analyze_times),
        "median": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
    }


def peak_memory_kb(images: Path, limit: int, batch: int, folder: Path) -> int:
    """Peak resident memory of ``onnx-prune analyze`` over ``limit`` images."""
    arguments = ["analyze", "--images", str(images), "--limit", str(limit)]
    arguments += ["--batch-size", str(batch), "--json", str(folder / f"memory{limit}.json")]
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *arguments],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MAXRSS_KB"))
    return int(line.split()[1])


def bench_memory(folder: Path) -> dict[str, object]:
    """Per batch size, peak memory with 256 images as a ratio of peak memory with 8 and 64, and
    with one full batch (below 8 images a batch of 32 holds only 8 rows, so the 8-image run of a
    larger batch measures a smaller batch)."""
    images = image_folder(folder, 256)
    figures: dict[str, object] = {}
    for batch in (1, 8, 32):
        limits = sorted({8, max(8, batch), 64, 256})
        peaks = {limit: peak_memory_kb(images, limit, batch, folder) for limit in limits}
        figures[f"batch {batch}"] = {
            **{f"peak_mb_{limit}": peak / 1024 for limit, peak in peaks.items()},
            "peak_256_over_8": peaks[256] / peaks[8],
            "peak_256_over_one_batch": peaks[256] / peaks[max(8, batch)],
            "peak_256_over_64": peaks[256] / peaks[64],
        }
    return figures


# --- tune (issue 11) ----------------------------------------------------------------------------


def bench_tune(rounds: int = 2) -> dict[str, object]:
    """``tune --min-agreement 1`` on the embedded model and photos, × one ``accuracy`` sweep of
    the same candidates over the same photos; runs interleaved A T A T A, each tune against the
    mean of the sweeps either side of it."""
    from onnx_prune.accuracy import measure_accuracy
    from onnx_prune.budget import Budget
    from onnx_prune.feeds import SampleSource
    from onnx_prune.tune import DEFAULT_CANDIDATES, tune_model

    loaded = load_model(MODEL)
    source = SampleSource(images=(IMAGES,), preset="efficientnet-lite", batch_size=BATCH)

    def sweep() -> None:
        measure_accuracy(loaded, source, eps=DEFAULT_CANDIDATES)

    def tune() -> object:
        return tune_model(loaded, source, budget=Budget("agreement", 1.0))

    sweeps, tunes, report = [median_time(sweep, 1)], [], None
    for _ in range(rounds):
        start = time.perf_counter()
        report = tune()
        tunes.append(time.perf_counter() - start)
        sweeps.append(median_time(sweep, 1))
    ratios = [t / ((a + b) / 2) for t, a, b in zip(tunes, sweeps, sweeps[1:], strict=False)]
    runs = report.runs  # type: ignore[attr-defined]
    photos = len(find_images([IMAGES]))
    return {
        "tune × one accuracy sweep (median)": statistics.median(ratios),
        "per round": {f"round {k + 1}": ratio for k, ratio in enumerate(ratios)},
        "seconds": {"tune": statistics.median(tunes), "sweep": statistics.median(sweeps)},
        "sample rows": {
            "tune, pruning session": runs.rows,
            "tune, analyze probes": runs.analysis_rows,
            "one sweep": photos * (1 + len(DEFAULT_CANDIDATES)),
        },
    }


def bench_dask(folder: Path, rounds: int = 2, samples: int = 128) -> dict[str, object]:
    """--workers 2 vs --workers 1 (512 images, whole commands), and the synchronous Dask path
    vs the plain path in this process (each round builds its session afresh, like the plain
    path: the per-process session cache is emptied)."""
    from onnx_prune import shards
    from onnx_prune.analysis import analyze_model
    from onnx_prune.distributed import DaskRunner
    from onnx_prune.feeds import SampleSource

    images = image_folder(folder, 512)
    command = [sys.executable, "-m", "onnx_prune", "analyze", "--images", str(images)]
    one, two = [], []
    for _ in range(rounds):
        one.append(timed_command([*command, "--workers", "1", "--json", str(folder / "w1.json")]))
        two.append(timed_command([*command, "--workers", "2", "--json", str(folder / "w2.json")]))
    same = (folder / "w1.json").read_text() == (folder / "w2.json").read_text()
    source = SampleSource(images=(images,), preset="efficientnet-lite", limit=samples)
    plain_times, dask_times = [], []
    runner = DaskRunner(client=None, shards=1)
    for _ in range(rounds + 1):
        plain_times.append(median_time(lambda: analyze_model(MODEL, source), 1))
        shards._SESSIONS.clear()
        dask_times.append(median_time(lambda: analyze_model(MODEL, source, runner=runner), 1))
    overheads = [d / p - 1 for d, p in zip(dask_times, plain_times, strict=True)]
    speedups = [a / b for a, b in zip(one, two, strict=True)]
    return {
        "workers_1_s": statistics.median(one),
        "workers_2_s": statistics.median(two),
        "speedup_2_vs_1": {
            "median": statistics.median(speedups),
            "low": min(speedups),
            "high": max(speedups),
        },
        "json_identical": float(same),
        f"synchronous_overhead_{samples}_samples": {
            "median": statistics.median(overheads),
            "low": min(overheads),
            "high": max(overheads),
        },
    }


def show(name: str, figures: Mapping[str, object]) -> None:
    """One line per figure group."""
    print(f"{name}:", flush=True)
    for key, value in figures.items():
        if isinstance(value, Mapping):
            text = ", ".join(f"{k} {v:.3g}" for k, v in value.items())
            print(f"  {key}: {text}", flush=True)
        else:
            print(f"  {key}: {value:.3g}", flush=True)


def main() -> int:
    """Run every benchmark and print the figures (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--only", help="run only the benchmarks whose name contains this")
    args = parser.parse_args()
    samples = 64 if args.quick else 256
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="onnx-prune-bench-") as temporary:
        folder = Path(temporary)
        steps: list[tuple[str, Callable[[], Mapping[str, object]]]] = [
            ("weight scan", lambda: bench_weights(folder)),
            (
                f"in the loop, EfficientNet-Lite0, {samples} samples, batch {BATCH}, six ε, "
                "× plain (median, low, high over chunks of 32 samples)",
                lambda: bench_in_loop(folder, samples),
            ),
            (
                "in the loop, VGG-16 convs at 112 (random weights), × plain",
                lambda: bench_vgg(folder),
            ),
            ("end to end, 512 images, × plain script", lambda: bench_end_to_end(folder)),
            ("peak memory", lambda: bench_memory(folder)),
            (
                "tune --min-agreement 1, EfficientNet-Lite0 over its photos, × one accuracy "
                "sweep of the same 7 candidates",
                lambda: bench_tune(rounds=1 if args.quick else 2),
            ),
            (
                "dask: analyze --workers 2 vs --workers 1, 512 images; synchronous Dask vs plain",
                lambda: bench_dask(folder, rounds=1 if args.quick else 2),
            ),
        ]
        for name, step in steps:
            if args.only and args.only not in name:
                continue
            results[name] = step()
            show(name, results[name])  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
