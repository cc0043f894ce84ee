"""Outputs bound into one reused buffer set per call, counting on every core."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from onnx_prune import binding
from onnx_prune.binding import BoundRunner, counting_pool
from onnx_prune.calibrate import ActivationStats, collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.inputs import Batch
from onnx_prune.layers import ComputeLayer, find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.probes import ProbedModel, add_probes
from onnx_prune.runtime import Session, model_file, open_session
from tests.builders import save
from tests.test_probes import EPS, two_conv_model


def _probed(tmp_path: Path) -> tuple[Session, ProbedModel, tuple[ComputeLayer, ...]]:
    """The two-conv model probed for the fast path, its session and its layers."""
    loaded = load_model(save(two_conv_model(), tmp_path))
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    probed = add_probes(loaded.model, layers, eps=EPS, on_host=True)
    with model_file(loaded, probed.model) as source:
        return open_session(source), probed, layers


def test_bound_runner_reuses_one_buffer_set(tmp_path: Path) -> None:
    session, _, _ = _probed(tmp_path)
    names = ["y", "r1"]
    runner = BoundRunner(session, names)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(2, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    batches = [Batch({"x": x}, ("a", "b")) for x in arrays]
    batches.append(Batch({"x": arrays[0][:1]}, ("a",)))  # a ragged last batch
    results = []
    for batch in batches:  # each checked before the set is written again
        results.append(runner.run(batch))
        expected = session.run(names, batch.arrays)
        np.testing.assert_array_equal(results[-1][0], expected[0])
        np.testing.assert_array_equal(results[-1][1], expected[1])
        assert results[-1][1].shape[0] == batch.rows
    assert all(np.shares_memory(result[1], results[0][1]) for result in results)
    assert not np.shares_memory(results[0][0], results[0][1])


def test_bound_runner_runs_plainly_when_the_outputs_are_not_per_sample(tmp_path: Path) -> None:
    path = save(two_conv_model(batch=2), tmp_path)  # a model that takes no single sample
    session = open_session(path)
    runner = BoundRunner(session, ["y"])
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    first, second = (runner.run(Batch({"x": x}, ("a", "b")))[0] for _ in range(2))
    np.testing.assert_array_equal(first, session.run(["y"], {"x": x})[0])
    assert not np.shares_memory(first, second)


def test_two_calibrations_at_once_on_one_session_do_not_share_buffers(tmp_path: Path) -> None:
    """As the shards of a Dask worker's threads do: each call must count its own samples."""
    session, probed, layers = _probed(tmp_path)
    rng = np.random.default_rng(3)
    runs = [
        [Batch({"x": rng.normal(0, 1, (4, 3, 8, 8)).astype(np.float32)}, tuple("abcd"))] * 30
        for _ in range(4)
    ]

    def count(batches: list[Batch]) -> ActivationStats:
        return collect_activation_stats(session, probed.manifest, layers, batches)

    alone = [count(batches) for batches in runs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(count, runs))
    assert together == alone
    assert len({stats.tensors["r1"].zeros for stats in alone}) == len(runs)  # they differ


def test_counting_pool_uses_every_core_and_none_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binding, "cores", lambda: 2)
    with counting_pool() as pool:
        assert pool is not None
        names = set(pool.map(lambda _: threading.current_thread().name, range(8)))
    assert names and all(name.startswith("onnx-prune-count") for name in names)
    monkeypatch.setattr(binding, "cores", lambda: 1)
    with counting_pool() as pool:
        assert pool is None
    monkeypatch.setattr(binding, "cores", lambda: 4)
    with counting_pool(1) as pool:  # a session on one thread (a Dask worker of several)
        assert pool is None
