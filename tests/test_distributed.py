"""Dask: shards and models on workers give results identical to the serial run."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from onnx_prune import distributed
from onnx_prune.accuracy import measure_accuracy, sweep_shard
from onnx_prune.analysis import analyze_model
from onnx_prune.budget import Budget
from onnx_prune.cli import main
from onnx_prune.distributed import DaskRunner, DistributedError, open_runner
from onnx_prune.errors import MissingExtraError
from onnx_prune.feeds import SampleSource
from onnx_prune.fidelity import ExactSum
from onnx_prune.jsondoc import accuracy_document, analysis_document, tune_document, zoo_document
from onnx_prune.labels import Labels, load_labels
from onnx_prune.load import load_model
from onnx_prune.shards import plan_shards
from onnx_prune.tune import tune_model
from onnx_prune.zoo import ZooJob, ZooModel, ZooOutcome, run_zoo
from tests.builders import (
    conv_relu_model,
    conv_weight,
    prunable_and_sensitive_model,
    save,
    tune_samples,
)

dask_distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = dask_distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, dask_distributed.Client(cluster) as connected:
        yield connected


@pytest.fixture
def samples(tmp_path: Path) -> tuple[Path, SampleSource]:
    """A model with planted zeros and 7 samples in batches of 2 (the last batch is short)."""
    model = save(conv_relu_model(conv_weight()), tmp_path)
    x = np.random.default_rng(0).normal(0.0, 1.0, (7, 3, 8, 8)).astype(np.float32)
    x[2] = 0.0
    np.save(tmp_path / "x.npy", x)
    return model, SampleSource(tensors=tmp_path / "x.npy", batch_size=2)


def test_shards_are_whole_batches_and_deterministic() -> None:
    assert [(s.start, s.stop) for s in plan_shards(7, 2, 3)] == [(0, 4), (4, 6), (6, 7)]
    assert [(s.start, s.stop) for s in plan_shards(7, 2, 1)] == [(0, 7)]
    assert [(s.start, s.stop) for s in plan_shards(3, 8, 4)] == [(0, 3)]


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_analyze_in_shards_equals_serial(
    client: Any, samples: tuple[Path, SampleSource], shards: int
) -> None:
    model, source = samples
    serial = analysis_document(analyze_model(model, source))
    runner = DaskRunner(client, workers=2, shards=shards, threads=1)
    done: list[tuple[int, int]] = []
    sharded = analyze_model(model, source, runner=runner, progress=lambda d, t: done.append((d, t)))
    assert analysis_document(sharded) == serial
    assert sharded.activations.samples == 7
    assert done[-1] == (7, 7) and len(done) == shards  # samples done across workers


def test_the_synchronous_scheduler_gives_the_same(samples: tuple[Path, SampleSource]) -> None:
    model, source = samples
    serial = analysis_document(analyze_model(model, source))
    with open_runner(distributed.SYNCHRONOUS, None) as runner:
        runner.shards = 3
        assert runner.client is None
        assert analysis_document(analyze_model(model, source, runner=runner)) == serial


def _zoo_jobs(tmp_path: Path) -> list[ZooJob]:
    folder = tmp_path / "zoo"
    folder.mkdir()
    planted = conv_weight()
    planted[0] = 0.0
    paths = [
        save(conv_relu_model(w), folder, f"{n}.onnx")
        for n, w in (("a", conv_weight()), ("b", planted))
    ]
    x = np.random.default_rng(1).normal(0.0, 1.0, (5, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=2)
    return [ZooJob(ZooModel(p.name, p), source, (0.0, 0.5)) for p in paths]


def _without_timings(document: dict[str, Any]) -> dict[str, Any]:
    for model in document["models"]:
        model.pop("seconds")
    return document


@pytest.mark.parametrize("shard_samples", [False, True])
def test_zoo_on_workers_equals_serial(client: Any, tmp_path: Path, shard_samples: bool) -> None:
    jobs = _zoo_jobs(tmp_path)
    serial = zoo_document(ZooOutcome((0.0, 0.5), run_zoo(jobs)))
    heard: list[str] = []
    runner = DaskRunner(client, workers=2, shards=3, threads=1)
    results = run_zoo(
        jobs,
        runner=runner,
        shard_samples=shard_samples,
        on_result=lambda r: heard.append(r.model.key),
    )
    assert _without_timings(zoo_document(ZooOutcome((0.0, 0.5), results))) == _without_timings(
        serial
    )
    assert sorted(heard) == ["a.onnx", "b.onnx"]


def test_a_task_that_raises_is_retried_once_then_named(client: Any) -> None:
    def boom(item: int) -> int:
        if item == 2:
            raise ValueError(f"no sample {item}")
        return item * 10

    runner = DaskRunner(client, workers=2)
    got: dict[int, int] = {}
    with pytest.raises(DistributedError) as caught:
        runner.map([1, 2, 3], boom, got.__setitem__, lambda item: f"model m shard {item}")
    assert str(caught.value) == "model m shard 2 failed twice (retried once): no sample 2"
    failures: list[str] = []
    runner.map(
        [1, 2, 3], boom, got.__setitem__, str, on_failure=lambda i, e: failures.append(str(e))
    )
    assert got == {1: 10, 3: 30}
    assert failures == ["2 failed twice (retried once): no sample 2"]


def test_a_zoo_model_whose_task_fails_is_that_models_failure(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _zoo_jobs(tmp_path)
    broken = replace(jobs[1], calibration=replace(jobs[1].calibration, start=-1))
    results = run_zoo([jobs[0], broken], runner=DaskRunner(client, workers=2))
    assert results[0].ok
    assert not results[1].ok and "first sample -1 is negative" in str(results[1].error)


def test_synchronous_retry_recovers_from_one_failure() -> None:
    calls: list[int] = []

    def flaky(item: int) -> int:
        calls.append(item)
        if len(calls) == 1:
            raise OSError("worker lost")
        return item

    got: dict[int, int] = {}
    DaskRunner(client=None).map([5], flaky, got.__setitem__, str)
    assert got == {5: 5} and calls == [5, 5]


def test_cli_on_a_scheduler_equals_serial(
    client: Any, samples: tuple[Path, SampleSource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--scheduler ADDRESS, here given as DASK_SCHEDULER_ADDRESS (the fixture's cluster)."""
    model, source = samples
    serial, sharded = tmp_path / "serial.json", tmp_path / "sharded.json"
    base = ["analyze", str(model), "--inputs", str(source.tensors), "--batch-size", "2"]
    assert main([*base, "--json", str(serial)]) == 0
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", client.scheduler.address)
    assert main([*base, "--json", str(sharded)]) == 0
    assert json.loads(serial.read_text()) == json.loads(sharded.read_text())
    assert main([*base, "--workers", "2"]) == 2  # a local cluster and a scheduler: refused


def test_unreachable_scheduler_is_one_line(
    samples: tuple[Path, SampleSource],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", "1s")
    model, source = samples
    args = [
        "analyze",
        str(model),
        "--inputs",
        str(source.tensors),
        "--scheduler",
        "tcp://127.0.0.1:9",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(MissingExtraError) as caught, open_runner(None, 2):
        pass
    assert "pip install 'onnx-prune[dask]'" in str(caught.value)


def _assert_dask_never_imported(args: list[str]) -> None:
    """``main(args)`` in a fresh interpreter exits 0 without importing dask."""
    code = (
        f"import sys; from onnx_prune.cli import main; status = main({args!r}); "
        "assert status == 0; assert 'dask' not in sys.modules, 'dask imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_without_the_flags_dask_is_never_imported(samples: tuple[Path, SampleSource]) -> None:
    model, source = samples
    _assert_dask_never_imported(["analyze", str(model), "--inputs", str(source.tensors)])


# --- accuracy: the ε sweep in shards --------------------------------------------------------

SWEEP_EPS = (0.0, 0.01, 0.03, 0.5)


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, SampleSource, Labels]:
    """The tune classifier (top-1 and KL move with ε), 7 samples in batches of 2, 6 labelled."""
    model = save(prunable_and_sensitive_model(), tmp_path)
    np.save(tmp_path / "t.npy", tune_samples(7, seed=5))
    (tmp_path / "labels.csv").write_text("0,0\n1,1\n2,0\n3,1\n4,0\n6,1\n")
    labels = load_labels(tmp_path / "labels.csv")
    return model, SampleSource(tensors=tmp_path / "t.npy", batch_size=2), labels


def _accuracy(
    model: Path, source: SampleSource, labels: Labels, runner: Any = None, **options: Any
) -> dict[str, Any]:
    report = measure_accuracy(
        load_model(model), source, eps=SWEEP_EPS, labels=labels, runner=runner, **options
    )
    return accuracy_document(report, max_drop=20.0, min_cosine=0.99)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_accuracy_in_shards_equals_serial(
    client: Any, sweep: tuple[Path, SampleSource, Labels], shards: int
) -> None:
    model, source, labels = sweep
    serial = _accuracy(model, source, labels)
    runner = DaskRunner(client, workers=2, shards=shards, threads=1)
    done: list[tuple[int, int]] = []
    report = measure_accuracy(
        load_model(model),
        source,
        eps=SWEEP_EPS,
        labels=labels,
        runner=runner,
        progress=lambda d, t: done.append((d, t)),
    )
    assert accuracy_document(report, max_drop=20.0, min_cosine=0.99) == serial
    assert (report.samples, report.labelled) == (7, 6)
    assert done[-1] == (7, 7) and len(done) == shards
    # the sweep measures something: top-1, KL and cosine move with ε
    results = serial["results"]
    assert len({r["top1"] for r in results}) > 1 and results[-1]["kl"] > results[0]["kl"]


def test_accuracy_element_granularity_in_shards_equals_serial(
    client: Any, sweep: tuple[Path, SampleSource, Labels]
) -> None:
    model, source, labels = sweep
    runner = DaskRunner(client, workers=2, shards=3, threads=1)
    serial = _accuracy(model, source, labels, granularity="element")
    assert _accuracy(model, source, labels, runner, granularity="element") == serial


def test_probabilities_decided_before_sharding_as_the_serial_run_decides(
    client: Any, sweep: tuple[Path, SampleSource, Labels], tmp_path: Path
) -> None:
    """A softmax output: the first batch reads it as probabilities, and so does every shard."""
    _, source, labels = sweep
    model = prunable_and_sensitive_model()
    model.graph.node[-1].output[0] = "scores"
    model.graph.node.append(onnx.helper.make_node("Softmax", ["scores"], ["y"], axis=1))
    path = save(model, tmp_path, "softmax.onnx")
    serial = _accuracy(path, source, labels)
    assert serial["output_kind"] == "probabilities"
    runner = DaskRunner(client, workers=2, shards=3, threads=1)
    assert _accuracy(path, source, labels, runner) == serial


def test_accuracy_on_the_synchronous_scheduler_equals_serial(
    sweep: tuple[Path, SampleSource, Labels],
) -> None:
    model, source, labels = sweep
    serial = _accuracy(model, source, labels)
    with open_runner(distributed.SYNCHRONOUS, None) as runner:
        runner.shards = 3
        assert _accuracy(model, source, labels, runner) == serial


def test_a_shard_without_the_first_batch_decisions_is_refused(
    sweep: tuple[Path, SampleSource, Labels],
) -> None:
    from onnx_prune.accuracy import SweepTask
    from onnx_prune.runtime import Providers

    model, source, labels = sweep
    task = SweepTask(SWEEP_EPS, "channel", labels, Providers(), False, None)
    with pytest.raises(ValueError, match="first batch's decisions"):
        sweep_shard(model, source, task)


def test_exact_sums_do_not_depend_on_the_split() -> None:
    values = np.array([1e16, 1.0, -1e16, 0.1, 0.2, 0.3, 1e-300, np.inf], np.float64)
    whole = ExactSum.of(values[:-1])
    assert float(np.sum(values[:3])) != 1.0  # a float running sum depends on the order
    for cut in range(1, 7):
        assert ExactSum.of(values[cut:7]) + ExactSum.of(values[:cut]) == whole
    exact = sum(Fraction(value) for value in values[:-1].tolist()) / 7
    assert whole.mean(7) == float(exact)  # the true mean, rounded once
    assert ExactSum.of(values).mean(8) == np.inf
    assert np.isnan(ExactSum.of(np.array([np.inf, -np.inf])).mean(2))
    assert np.isnan(ExactSum().mean(0))


def test_accuracy_cli_on_a_scheduler_equals_serial(
    client: Any, sweep: tuple[Path, SampleSource, Labels], tmp_path: Path
) -> None:
    model, source, _ = sweep
    serial, sharded = tmp_path / "serial.json", tmp_path / "sharded.json"
    base = [
        "accuracy",
        str(model),
        "--inputs",
        str(source.tensors),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--batch-size",
        "2",
        "--eps",
        ",".join(map(str, SWEEP_EPS)),
    ]
    assert main([*base, "--json", str(serial)]) == 0
    assert main([*base, "--json", str(sharded), "--scheduler", client.scheduler.address]) == 0
    assert json.loads(serial.read_text()) == json.loads(sharded.read_text())


# --- a worker that dies ---------------------------------------------------------------------


# dask leaves a killed worker's sockets to the garbage collector: collected (and their warning
# heard) in this test, not in whichever test runs next
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_worker_that_dies_is_retried_once_then_named(tmp_path: Path) -> None:
    """On a --workers cluster (processes): a task whose worker dies runs once more; a task
    that kills its worker twice is reported by model and shard, and the others still finish."""
    marker = tmp_path / "died-once"

    def dies_once(item: int) -> int:
        if item == 1 and not marker.exists():
            marker.write_text("")
            os._exit(1)
        return item * 10

    def dies_always(item: int) -> int:
        if item == 2:
            os._exit(1)
        return item * 10

    got: dict[int, int] = {}
    failures: list[str] = []
    with open_runner(None, 2) as runner:
        runner.map([1, 3], dies_once, got.__setitem__, str)
        assert got == {1: 10, 3: 30} and marker.exists()
        got.clear()
        runner.map(
            [2, 3],
            dies_always,
            got.__setitem__,
            lambda item: f"m.onnx shard {item} of 2",
            on_failure=lambda item, error: failures.append(str(error)),
        )
    assert got == {3: 30}
    assert len(failures) == 1
    assert failures[0].startswith("m.onnx shard 2 of 2 failed twice (retried once): ")
    assert "died" in failures[0] and "\n" not in failures[0]
    gc.collect()


# --- tune: every sweep of a split in shards --------------------------------------------------


@dataclass
class _CountedRunner:
    """A runner that records how many samples each sweep it shards holds."""

    inner: DaskRunner
    swept: list[int] = field(default_factory=list)

    @property
    def threads(self) -> int | None:
        return self.inner.threads

    def in_shards(
        self, path: Path, source: SampleSource, plan: Any, function: Any, progress: Any
    ) -> Any:
        self.swept.append(plan[0])
        return self.inner.in_shards(path, source, plan, function, progress)


@pytest.fixture
def tuned(tmp_path: Path) -> tuple[Path, SampleSource]:
    """10 samples in batches of 2: 7 calibrate (4 batches, the last short), 3 held out (2)."""
    model = save(prunable_and_sensitive_model(), tmp_path)
    np.save(tmp_path / "x.npy", tune_samples())
    return model, SampleSource(tensors=tmp_path / "x.npy", batch_size=2)


def test_tune_on_workers_equals_serial(client: Any, tuned: tuple[Path, SampleSource]) -> None:
    model, source = tuned
    budget = Budget("agreement", 1.0)
    serial = tune_model(load_model(model), source, budget=budget)
    runner = _CountedRunner(DaskRunner(client, workers=2, shards=3, threads=1))
    sharded = tune_model(load_model(model), source, budget=budget, runner=runner)
    assert serial.eps_map is not None and sharded.eps_map == serial.eps_map
    assert serial.eps_map.eps == {"r1": 0.3, "flat": 0.0}  # a real choice
    expected, got = tune_document(serial), tune_document(sharded)
    serial_runs, sharded_runs = expected.pop("runs"), got.pop("runs")
    assert got == expected
    # every run on a worker is counted: the serial run's, plus the unpruned run of every batch
    # of every sweep after the first of its split (workers keep no baselines), plus the two
    # first-batch decisions (one per split) taken before sharding
    assert sorted(set(runner.swept)) == [3, 7]
    batches = {7: 4, 3: 2}
    extra_runs = sum(batches[n] for n in runner.swept) - sum(batches.values()) + 2
    extra_rows = sum(runner.swept) - 10 + 2 * 2
    assert sharded_runs == {
        **serial_runs,
        "session_runs": serial_runs["session_runs"] + extra_runs,
        "sample_rows": serial_runs["sample_rows"] + extra_rows,
    }


def test_tune_cli_on_the_synchronous_scheduler_equals_serial(
    tuned: tuple[Path, SampleSource], tmp_path: Path
) -> None:
    model, source = tuned
    base = ["tune", str(model), "--inputs", str(source.tensors), "--batch-size", "2"]
    documents, maps = [], []
    for name, extra in (("serial", []), ("synchronous", ["--scheduler", "synchronous"])):
        out, eps_map = tmp_path / f"{name}.json", tmp_path / f"{name}.map.json"
        assert main([*base, "--json", str(out), "--eps-map", str(eps_map), *extra]) == 0
        document = json.loads(out.read_text())
        document.pop("runs")
        documents.append(document)
        maps.append(eps_map.read_bytes())
    assert documents[0] == documents[1]
    assert maps[0] == maps[1]


def test_tune_without_the_flags_never_imports_dask(tuned: tuple[Path, SampleSource]) -> None:
    model, source = tuned
    _assert_dask_never_imported(
        ["tune", str(model), "--inputs", str(source.tensors), "--json", "-"]
    )
