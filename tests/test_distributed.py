"""Dask: shards and models on workers give results identical to the serial run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnx_prune import distributed
from onnx_prune.analysis import analyze_model
from onnx_prune.cli import main
from onnx_prune.distributed import DaskRunner, DistributedError, open_runner
from onnx_prune.errors import MissingExtraError
from onnx_prune.feeds import SampleSource
from onnx_prune.jsondoc import analysis_document, zoo_document
from onnx_prune.shards import plan_shards
from onnx_prune.zoo import ZooJob, ZooModel, ZooOutcome, run_zoo
from tests.builders import conv_relu_model, conv_weight, save

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


def test_without_the_flags_dask_is_never_imported(samples: tuple[Path, SampleSource]) -> None:
    model, source = samples
    code = (
        "import sys; from onnx_prune.cli import main; "
        f"status = main(['analyze', {str(model)!r}, '--inputs', {str(source.tensors)!r}]); "
        "assert status == 0; assert 'dask' not in sys.modules, 'dask imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
