"""The CLI's logging: library INFO messages with -v, warnings by default, errors only with -q."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from onnx_prune.cli import main
from onnx_prune.cli.logs import LOGGER, LineHandler, log_level
from tests.builders import FLOAT, conv_weight, make_model, save

FIXED = "info: the model fixes its batch at 1; using batches of 1"
SPLIT = "warning: batches of 3 fail"


def _model(tmp_path: Path, *, batch: int | str, reshape: bool = False) -> list[str]:
    """A conv model and three input samples; ``reshape`` flattens to [1, 512], so batches fail."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    initializers = [numpy_helper.from_array(conv_weight(), "w")]
    output = helper.make_tensor_value_info("c", FLOAT, [batch, 8, 8, 8])
    if reshape:
        shape = numpy_helper.from_array(np.array([1, 512], np.int64), "shape")
        nodes.append(helper.make_node("Reshape", ["c", "shape"], ["y"], name="flat"))
        initializers.append(shape)
        output = helper.make_tensor_value_info("y", FLOAT, [1, 512])
    x = helper.make_tensor_value_info("x", FLOAT, [batch, 3, 8, 8])
    path = save(make_model(nodes, [x], [output], initializers), tmp_path)
    samples = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    return ["analyze", str(path), "--inputs", str(tmp_path / "x.npy"), "--eps", "0"]


@pytest.mark.parametrize(
    ("flags", "shown"),
    [([], False), (["-v"], True), (["--verbose"], True), (["-q"], False)],
)
def test_info_messages_reach_the_user_with_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], shown: bool
) -> None:
    argv = _model(tmp_path, batch=1)
    assert main([*argv, *flags]) == 0
    assert (FIXED in capsys.readouterr().err) is shown
    assert main([*flags, *argv]) == 0  # the flag before the command works the same
    assert (FIXED in capsys.readouterr().err) is shown


def test_warnings_by_default_and_not_with_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _model(tmp_path, batch="N", reshape=True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(SPLIT)]
    assert len(lines) == 1, err  # one line, not wrapped or padded, printed once
    assert lines[0] == lines[0].rstrip()
    assert main([*argv, "-q"]) == 0
    assert SPLIT not in capsys.readouterr().err


def test_verbose_and_quiet_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "-v", "-q"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_levels_and_one_handler() -> None:
    assert log_level(0, quiet=False) == logging.WARNING
    assert log_level(1, quiet=False) == logging.INFO
    assert log_level(2, quiet=False) == logging.DEBUG
    assert log_level(3, quiet=True) == logging.ERROR
    handlers = [h for h in logging.getLogger(LOGGER).handlers if isinstance(h, LineHandler)]
    assert len(handlers) <= 1  # main() replaces its handler rather than adding another
