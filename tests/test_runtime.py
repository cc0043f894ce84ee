"""The batch splitter and the fixed-batch reading shared by analyze and accuracy."""

from __future__ import annotations

import pytest

from onnx_prune.errors import UnsupportedModelError
from onnx_prune.runtime import BatchSplitter


def _failing() -> str:
    raise UnsupportedModelError("onnxruntime failed: Reshape")


def test_after_one_failing_batch_every_batch_runs_one_by_one() -> None:
    splitter = BatchSplitter()
    calls: list[str] = []

    def whole() -> str:
        calls.append("whole")
        return _failing()

    def one_by_one() -> str:
        calls.append("rows")
        return "rows"

    assert [splitter.run(4, whole, one_by_one) for _ in range(3)] == ["rows"] * 3
    assert calls == ["whole", "rows", "rows", "rows"]  # the whole batch is tried once only
    assert splitter.single


def test_a_failure_after_whole_batches_worked_is_real() -> None:
    splitter = BatchSplitter()
    assert splitter.run(4, lambda: "whole", lambda: "rows") == "whole"
    with pytest.raises(UnsupportedModelError, match="Reshape"):
        splitter.run(4, _failing, lambda: "rows")


def test_a_single_sample_failure_is_not_retried() -> None:
    with pytest.raises(UnsupportedModelError):
        BatchSplitter().run(1, _failing, lambda: "rows")
