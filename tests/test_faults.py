"""The bad-input and fault pass (issue 14): each case is one clear line, exit 2, nothing lost.

Every case runs the command line in-process (``cli.main``) over files built in ``tmp_path`` and
asserts the exit status (2, or 0 where the input is valid), exactly one line on standard error,
no traceback, and every file that existed before byte-identical afterwards (no temporary file
left behind either). Cases that need a real process (a closed standard output, Ctrl-C during
the imports) run ``python -m onnx_prune``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnx_prune import files
from onnx_prune.cli import main
from tests.builders import FLOAT, conv_relu_model, conv_weight, save

REPOSITORY = Path(__file__).resolve().parents[1]
HANG_SECONDS = 60  # a case that blocks (a FIFO, a graph cycle) fails instead of hanging CI


@dataclass(frozen=True)
class Outcome:
    """What one command line run left: exit status, standard output and standard error."""

    status: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Outcome:
    """``onnx-prune ARGV`` in this process; a hang fails after HANG_SECONDS."""
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(HANG_SECONDS)
    try:
        status = main([str(arg) for arg in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    return Outcome(status, captured.out, captured.err)


def _hung(signum: int, frame: object) -> None:
    raise AssertionError(f"the command blocked for {HANG_SECONDS} s")


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (links not followed) and the SHA-256 of its bytes."""
    digests: dict[str, str] = {}
    for folder, _names, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if stat.S_ISREG(path.lstat().st_mode):
                digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def assert_refused(outcome: Outcome, message: str) -> None:
    """Exit 2, one line on standard error holding ``message``, no traceback."""
    assert outcome.status == 2, outcome
    assert len(outcome.err_lines) == 1, outcome.err
    assert outcome.err_lines[0].startswith("error: "), outcome.err
    assert "Traceback" not in outcome.err + outcome.out
    assert message in " ".join(outcome.err.split()), outcome.err


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of inputs every case draws on; the current folder during the test."""
    monkeypatch.chdir(tmp_path)
    model = conv_relu_model(conv_weight())
    save(model, tmp_path, "model.onnx")
    external = conv_relu_model(conv_weight())
    onnx.save(
        external, "ext.onnx", save_as_external_data=True, location="ext.data", size_threshold=0
    )
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 3, 8, 8), np.float32))
    (tmp_path / "images").mkdir()
    for index, name in enumerate(("a.png", "b.png")):
        pixels = np.full((8, 8, 3), 40 * index + 20, np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text("a.png,0\nb.png,1\n")
    (tmp_path / "base.json").write_text(  # an empty zoo baseline, as zoo --save-baseline writes
        '{"schema_version": 1, "tool": "onnx-prune zoo", "eps": [0.0], '
        '"providers": ["CPUExecutionProvider"], "provider_options": {}, "models": {}}\n'
    )
    (tmp_path / "zoo").mkdir()
    save(model, tmp_path / "zoo", "z.onnx")
    (tmp_path / "zin").mkdir()
    np.save(tmp_path / "zin" / "z.npy", np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "link.onnx").symlink_to("model.onnx")
    os.link(tmp_path / "model.onnx", tmp_path / "hard.onnx")
    _darknet_pair(tmp_path)
    (tmp_path / "map.json").write_text(
        '{"schema_version": 1, "model": "model.onnx", "metric": "by hand", "eps": {"x": 0.1}}\n'
    )
    (tmp_path / "zoo" / "onnx-prune.toml").write_text('["z.onnx"]\npreset = "imagenet"\n')
    (tmp_path / "cfg.toml").write_text('["z.onnx"]\nimages = "images"\n')
    return tmp_path


def _darknet_pair(folder: Path, *, variance: float = 1.0) -> None:
    """net.cfg (one 2-filter 1x1 conv with batch norm on 4x4x3) and its net.weights."""
    cfg = "[net]\nheight=4\nwidth=4\nchannels=3\n\n[convolutional]\nfilters=2\nsize=1\n"
    (folder / "net.cfg").write_text(cfg + "batch_normalize=1\nactivation=relu\n")
    floats = [0.1, 0.2, 1.0, 1.0, 0.0, 0.0, variance, 1.0] + [0.5] * 6
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    (folder / "net.weights").write_bytes(header + np.array(floats, "<f4").tobytes())


# ---------------------------------------------------------------------------------------------
# 1. The user's files are never overwritten: every output against every input, by inode

COLLISIONS = [
    ("weights model.onnx --json model.onnx", "--json model.onnx is the input file"),
    ("weights model.onnx --json ./model.onnx", "is the input file model.onnx"),
    ("weights model.onnx --json ../{name}/model.onnx", "is the input file model.onnx"),
    ("weights model.onnx --json link.onnx", "--json link.onnx is the input file"),
    ("weights model.onnx --json hard.onnx", "--json hard.onnx is the input file"),
    ("weights link.onnx --json model.onnx", "is the input file link.onnx"),
    ("weights ext.onnx --json ext.data", "--json ext.data is the input file"),
    ("analyze model.onnx --inputs x.npy --json model.onnx", "is the input file model.onnx"),
    ("analyze model.onnx --inputs x.npy --json x.npy", "--json x.npy is the input file x.npy"),
    ("analyze ext.onnx --inputs x.npy --json ext.data", "is the input file"),
    ("analyze model.onnx --images images --json images/a.png", "is the input file images/a.png"),
    ("analyze model.onnx --images images --plot images/b.png", "is the input file images/b.png"),
    ("analyze model.onnx --images images/a.png --plot images/a.png", "is the input file"),
    ("accuracy model.onnx --inputs x.npy --json x.npy", "is the input file x.npy"),
    ("accuracy model.onnx --inputs x.npy --json link.onnx", "is the input file model.onnx"),
    ("accuracy model.onnx --images images --labels labels.csv --json labels.csv", "labels.csv"),
    ("accuracy model.onnx --images images --plot images/a.png", "is the input file"),
    ("zoo zoo --inputs-dir zin --json zoo/z.onnx", "is the input file zoo/z.onnx"),
    ("zoo zoo --inputs-dir zin --markdown zoo/z.onnx", "is the input file zoo/z.onnx"),
    ("zoo zoo --inputs-dir zin --save-baseline zoo/z.onnx", "is the input file zoo/z.onnx"),
    ("zoo zoo --inputs-dir zin --baseline base.json --json base.json", "is the input file"),
    ("zoo zoo --inputs-dir zin --json zin/z.npy", "is the input file zin/z.npy"),
    ("zoo zoo/z.onnx --images images --json images/a.png", "is the input file"),
    ("darknet net.cfg net.weights -o net.cfg", "-o net.cfg is the input file net.cfg"),
    ("darknet net.cfg net.weights -o net.weights", "-o net.weights is the input file"),
    ("analyze model.onnx --inputs x.npy --json out.png --plot out.png", "both write out.png"),
    ("zoo zoo --inputs-dir zin --json same.md --markdown same.md", "both write same.md"),
    ("zoo zoo --inputs-dir zin --json - --markdown -", "both want standard output"),
    ("analyze model.onnx --inputs x.npy --eps-map map.json --json map.json", "is the input"),
    ("zoo zoo --inputs-dir zin --json zoo/onnx-prune.toml", "is the input file"),
    ("zoo zoo --inputs-dir zin --config cfg.toml --json cfg.toml", "is the input file"),
    ("zoo zoo --inputs-dir zin --config cfg.toml --json images/b.png", "is the input file"),
]


@pytest.mark.parametrize(("command", "message"), COLLISIONS)
def test_an_output_naming_an_input_is_refused_before_any_work(
    world: Path, capsys: pytest.CaptureFixture[str], command: str, message: str
) -> None:
    before = snapshot(world)
    if "same.md" in command or "out.png" in command:
        (world / ("same.md" if "same.md" in command else "out.png")).write_text("old")
        before = snapshot(world)
    argv = command.format(name=world.name).split()
    outcome = run_cli(capsys, *argv)
    assert_refused(outcome, message)
    assert snapshot(world) == before


# ---------------------------------------------------------------------------------------------
# 1, 5. Each output must be creatable, checked before any work

UNWRITABLE = [
    ("weights model.onnx --json /dev/full", "--json /dev/full is not a regular file"),
    ("weights model.onnx --json /sys/out.json", "cannot create files in /sys"),
    ("weights model.onnx --json /proc/out.json", "cannot create files in /proc"),
    ("weights model.onnx --json missing/out.json", "missing does not exist: create the folder"),
    ("weights model.onnx --json images", "--json images is a folder"),
    ("weights model.onnx --json " + "n" * 300 + ".json", "cannot"),
    ("analyze model.onnx --inputs x.npy --plot out.xyz", "matplotlib cannot write '.xyz'"),
    ("analyze model.onnx --inputs x.npy --plot figure", "cannot write 'no extension'"),
    ("accuracy model.onnx --inputs x.npy --plot out.doc", "matplotlib cannot write '.doc'"),
    ("darknet net.cfg net.weights -o /dev/full", "-o /dev/full is not a regular file"),
    ("zoo zoo --inputs-dir zin --save-baseline /sys/b.json", "cannot create files in /sys"),
    ("zoo zoo --inputs-dir zin --markdown /dev/null", "is not a regular file"),
]


@pytest.mark.parametrize(("command", "message"), UNWRITABLE)
def test_an_output_that_cannot_be_created_is_refused_before_any_work(
    world: Path, capsys: pytest.CaptureFixture[str], command: str, message: str
) -> None:
    before = snapshot(world)
    outcome = run_cli(capsys, *command.split())
    assert_refused(outcome, message)
    assert snapshot(world) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_any_work(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "locked").mkdir()
    (world / "locked").chmod(0o555)
    try:
        outcome = run_cli(capsys, "weights", "model.onnx", "--json", "locked/out.json")
    finally:
        (world / "locked").chmod(0o755)
    assert_refused(outcome, "cannot create files in")


# ---------------------------------------------------------------------------------------------
# 2. Atomic writes: a failed write leaves the old file as it was


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills half-way through the first write of an output."""

    def write_half(descriptor: int, data: bytes) -> None:
        os.write(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_write_all", write_half)


@pytest.mark.parametrize(
    ("command", "output"),
    [
        ("weights model.onnx --json old.json", "old.json"),
        ("analyze model.onnx --inputs x.npy --json old.json", "old.json"),
        ("zoo zoo --inputs-dir zin --save-baseline old.json", "old.json"),
        ("zoo zoo --inputs-dir zin --markdown old.json", "old.json"),
        ("darknet net.cfg net.weights -o old.json", "old.json"),
    ],
)
def test_a_full_disk_leaves_the_old_output_as_it_was(
    world: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    output: str,
) -> None:
    (world / output).write_text('{"previous": "run"}\n')
    before = snapshot(world)
    _full_disk(monkeypatch)
    outcome = run_cli(capsys, *command.split())
    assert_refused(outcome, f"cannot write {output} (No space left on device)")
    assert snapshot(world) == before


def test_a_failed_plot_leaves_the_old_figure_as_it_was(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def fail(self: Figure, path: Path, **options: object) -> None:
        Path(path).write_bytes(b"half a png")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (world / "old.png").write_bytes(b"the previous figure")
    before = snapshot(world)
    monkeypatch.setattr(Figure, "savefig", fail)
    outcome = run_cli(capsys, "analyze", "model.onnx", "--inputs", "x.npy", "--plot", "old.png")
    assert_refused(outcome, "cannot write old.png (No space left on device)")
    assert snapshot(world) == before


def test_ctrl_c_while_writing_leaves_the_old_output(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(descriptor: int, data: bytes) -> None:
        os.write(descriptor, data[:10])
        raise KeyboardInterrupt

    (world / "old.json").write_text("{}\n")
    before = snapshot(world)
    monkeypatch.setattr(files, "_write_all", interrupt)
    outcome = run_cli(capsys, "weights", "model.onnx", "--json", "old.json")
    assert outcome.status == 130
    assert outcome.err_lines == ["interrupted"]
    assert snapshot(world) == before


def test_an_output_replaces_the_old_file_whole_and_keeps_links(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "old.json").write_text("x" * 100_000)
    (world / "out-link.json").symlink_to("old.json")
    before = snapshot(world)
    outcome = run_cli(capsys, "weights", "model.onnx", "--json", "out-link.json")
    assert outcome.status == 0, outcome
    assert (world / "out-link.json").is_symlink()
    assert json.loads((world / "old.json").read_text())["schema_version"] == 1
    after = snapshot(world)
    assert sorted(after) == sorted(before)  # no temporary file left
    assert {k: v for k, v in after.items() if k != "old.json"} == {
        k: v for k, v in before.items() if k != "old.json"
    }


def test_json_to_standard_output_still_works(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(world)
    outcome = run_cli(capsys, "weights", "model.onnx", "--json", "-")
    assert outcome.status == 0
    assert json.loads(outcome.out)["schema_version"] == 1
    assert snapshot(world) == before


# ---------------------------------------------------------------------------------------------
# 3. Hangs: graph cycles and FIFOs


def _graph_model(nodes: list[onnx.NodeProto], folder: Path, name: str) -> Path:
    """x -> nodes -> y, saved without onnx's checker (which would refuse the damage)."""
    graph = helper.make_graph(
        nodes,
        "damaged",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 8, 8, 8])],
        [numpy_helper.from_array(conv_weight(), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


CYCLES = {
    "self": [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["c1"], name="relu"),
        helper.make_node("Identity", ["c1"], ["y"], name="out"),
    ],
    "pair": [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Identity", ["b"], ["y"], name="out"),
    ],
}


CYCLE_NODE = {"self": "relu", "pair": "add"}  # the first node Kahn's algorithm cannot order


@pytest.mark.parametrize("command", ["weights", "analyze"])
@pytest.mark.parametrize("kind", sorted(CYCLES))
def test_a_graph_cycle_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str], command: str, kind: str
) -> None:
    path = _graph_model(CYCLES[kind], world, f"{kind}.onnx")
    before = snapshot(world)
    extra = ["--inputs", "x.npy"] if command == "analyze" else []
    outcome = run_cli(capsys, command, path, *extra)
    assert_refused(outcome, f"{kind}.onnx: the graph has a cycle: node '{CYCLE_NODE[kind]}'")
    assert snapshot(world) == before


def test_a_tensor_written_by_two_nodes_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
    ]
    path = _graph_model(nodes, world, "twice.onnx")
    outcome = run_cli(capsys, "weights", path)
    assert_refused(outcome, "tensor 'y' is written by two nodes ('conv' and 'relu')")


FIFO_INPUTS = [
    ("weights fifo.onnx", "fifo.onnx is not a regular file"),
    ("analyze model.onnx --images fifo.png", "image path fifo.png is not a regular file"),
    ("analyze model.onnx --inputs fifo.npy", "tensor file fifo.npy is not a regular file"),
    ("accuracy model.onnx --inputs x.npy --labels fifo.csv", "label path fifo.csv is not a"),
    ("zoo zoo --inputs-dir zin --baseline fifo.json", "fifo.json is not a regular file"),
    ("darknet net.cfg fifo.weights -o out.onnx", "fifo.weights is not a regular file"),
    ("darknet fifo.cfg net.weights -o out.onnx", "fifo.cfg is not a regular file"),
    ("analyze model.onnx --inputs x.npy --eps-map fifo.json", "cannot read the ε map fifo.json"),
    ("zoo zoo --inputs-dir zin --config fifo.cfg", "fifo.cfg is not a regular file"),
    ("diff fifo.json base.json", "fifo.json is not a regular file"),
    ("weights fifo-ext.onnx", "is not a regular file"),
]


@pytest.mark.parametrize(("command", "message"), FIFO_INPUTS)
def test_a_fifo_given_as_an_input_is_refused_without_blocking(
    world: Path, capsys: pytest.CaptureFixture[str], command: str, message: str
) -> None:
    for name in ("fifo.onnx", "fifo.png", "fifo.npy", "fifo.csv", "fifo.json", "fifo.cfg"):
        os.mkfifo(world / name)
    os.mkfifo(world / "fifo.weights")
    (world / "fifo-data").mkdir()
    model = onnx.load("ext.onnx", load_external_data=False)
    onnx.save(model, world / "fifo-data" / "fifo-ext.onnx")
    os.mkfifo(world / "fifo-data" / "ext.data")
    command = command.replace("weights fifo-ext.onnx", "weights fifo-data/fifo-ext.onnx")
    before = snapshot(world)
    outcome = run_cli(capsys, *command.split())
    assert_refused(outcome, message)
    assert snapshot(world) == before


# ---------------------------------------------------------------------------------------------
# 6. Found files that cannot be read are skipped and counted; typed paths are errors


@pytest.mark.parametrize("oddity", ["dangling", "fifo", "both"])
def test_unreadable_files_found_in_an_images_folder_are_skipped_and_counted(
    world: Path, capsys: pytest.CaptureFixture[str], oddity: str
) -> None:
    if oddity in ("dangling", "both"):
        (world / "images" / "c-gone.png").symlink_to(world / "nowhere.png")
    if oddity in ("fifo", "both"):
        os.mkfifo(world / "images" / "d-pipe.png")
    before = snapshot(world)
    outcome = run_cli(capsys, "analyze", "model.onnx", "--images", "images", "--json", "-")
    assert outcome.status == 0, outcome
    document = json.loads(outcome.out)
    skipped = {Path(item["name"]).name for item in document["skipped_inputs"]}
    expected = {"dangling": {"c-gone.png"}, "fifo": {"d-pipe.png"}}
    assert skipped == expected.get(oddity, {"c-gone.png", "d-pipe.png"})
    assert document["samples"] == 2
    assert "Traceback" not in outcome.err
    assert snapshot(world) == before


def test_a_dangling_link_given_as_an_image_is_an_error(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "gone.png").symlink_to(world / "nowhere.png")
    outcome = run_cli(capsys, "analyze", "model.onnx", "--images", "gone.png")
    assert_refused(outcome, "image path gone.png does not exist")


# ---------------------------------------------------------------------------------------------
# 4. Terminal escapes: control characters never reach the terminal raw

CLEAR_SCREEN = "\x1b[2J"


def test_control_characters_in_node_names_are_escaped_in_tables(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_relu_model(conv_weight())
    model.graph.node[0].name = f"conv{CLEAR_SCREEN}\x07"
    path = save(model, world, "escape.onnx")
    outcome = run_cli(capsys, "weights", path)
    assert outcome.status == 0, outcome
    assert "\x1b" not in outcome.out + outcome.err and "\x07" not in outcome.out
    assert "conv\\x1b[2J\\x07" in outcome.out


def test_control_characters_in_image_names_are_escaped(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "images" / f"bad{CLEAR_SCREEN}.png").write_bytes(b"not a png")
    outcome = run_cli(capsys, "analyze", "model.onnx", "--images", "images")
    assert outcome.status == 0, outcome
    assert "\x1b" not in outcome.out + outcome.err
    assert "skipping: cannot read image images/bad\\x1b[2J.png" in outcome.err


@pytest.mark.parametrize("name", [f"w{CLEAR_SCREEN}", "w\nsecond line", "w\rover"])
def test_control_characters_in_error_messages_are_escaped(
    world: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    model = conv_relu_model(conv_weight())
    tensor = model.graph.initializer[0]
    tensor.name = name
    model.graph.node[0].input[1] = name
    tensor.data_type = 999
    path = world / "named.onnx"
    path.write_bytes(model.SerializeToString())
    outcome = run_cli(capsys, "weights", path)
    assert_refused(outcome, "has data_type 999, which is no ONNX element type")
    assert "\x1b" not in outcome.err and "\r" not in outcome.err


# ---------------------------------------------------------------------------------------------
# 5. Malformed external data and initializers: one ModelLoadError naming the tensor


def _external(world: Path, edit: Callable[[dict[str, str]], None], data: bytes | None) -> Path:
    folder = world / "damaged"
    folder.mkdir()
    model = onnx.load(str(world / "ext.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        fields = {entry.key: entry.value for entry in tensor.external_data}
        edit(fields)
        del tensor.external_data[:]
        for key, value in fields.items():
            tensor.external_data.add(key=key, value=value)
    path = folder / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    (folder / "ext.data").write_bytes((world / "ext.data").read_bytes() if data is None else data)
    return path


def _set(**values: str) -> Callable[[dict[str, str]], None]:
    return lambda fields: fields.update(values)


EXTERNAL = [
    ("offset abc", _set(offset="abc"), None, "external data offset 'abc', not a whole number"),
    ("offset -8", _set(offset="-8"), None, "external data offset '-8', not a whole number"),
    ("length abc", _set(length="abc"), None, "external data length 'abc'"),
    ("length -1", _set(length="-1"), None, "external data length '-1'"),
    ("past the end", _set(offset="100000"), None, "is truncated"),
    ("short file", _set(), b"\x00" * 12, "is truncated"),
    ("empty file", _set(), b"", "is truncated"),
    ("long location", _set(location="L" * 5000), None, "(5000 characters)"),
    ("wrong length", _set(length="12"), None, "has external data of 12 bytes, not 864"),
]


@pytest.mark.parametrize(
    ("edit", "data", "message"),
    [case[1:] for case in EXTERNAL],
    ids=[case[0] for case in EXTERNAL],
)
@pytest.mark.parametrize("command", ["weights", "analyze"])
def test_malformed_external_data_is_one_line(
    world: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    edit: Callable[[dict[str, str]], None],
    data: bytes | None,
    message: str,
) -> None:
    path = _external(world, edit, data)
    before = snapshot(world)
    extra = ["--inputs", "x.npy"] if command == "analyze" else []
    outcome = run_cli(capsys, command, path, *extra)
    assert_refused(outcome, message)
    assert "'w'" in outcome.err
    assert snapshot(world) == before


def _retyped(data_type: int) -> Callable[[TensorProto], None]:
    def edit(tensor: TensorProto) -> None:
        tensor.data_type = data_type

    return edit


def _redimmed(*dims: int) -> Callable[[TensorProto], None]:
    def edit(tensor: TensorProto) -> None:
        del tensor.dims[:]
        tensor.dims.extend(dims)

    return edit


def _cut(size: int) -> Callable[[TensorProto], None]:
    def edit(tensor: TensorProto) -> None:
        tensor.raw_data = tensor.raw_data[:size]

    return edit


def _strings(tensor: TensorProto) -> None:
    tensor.ClearField("raw_data")
    tensor.data_type = TensorProto.STRING
    tensor.string_data.extend([b"w"] * 216)


def _typed_too_few(tensor: TensorProto) -> None:
    tensor.ClearField("raw_data")
    tensor.float_data.extend([0.5] * 10)


INITIALIZERS = [
    ("data_type 0", _retyped(0), "has data_type 0, which is no ONNX element type"),
    ("data_type 999", _retyped(999), "has data_type 999"),
    ("dims do not match", _redimmed(8, 3, 3, 2), "holds 864 bytes of raw data, not 576"),
    ("2^40 dims", _redimmed(2**40), "holds 864 bytes of raw data, not 4398046511104"),
    ("negative dims", _redimmed(-8, 3, 3, 3), "has a negative dimension"),
    ("raw data not whole", _cut(861), "holds 861 bytes of raw data, not 864"),
    ("STRING weights", _strings, "holds strings, not numbers"),
    ("too few float_data", _typed_too_few, "holds 10 values where its dims need 216"),
]


@pytest.mark.parametrize(
    ("edit", "message"),
    [case[1:] for case in INITIALIZERS],
    ids=[case[0] for case in INITIALIZERS],
)
@pytest.mark.parametrize("command", ["weights", "analyze"])
def test_an_initializer_whose_header_disagrees_with_its_data_is_one_line(
    world: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    edit: Callable[[TensorProto], None],
    message: str,
) -> None:
    model = conv_relu_model(conv_weight())
    edit(model.graph.initializer[0])
    path = world / "damaged.onnx"
    path.write_bytes(model.SerializeToString())
    before = snapshot(world)
    extra = ["--inputs", "x.npy"] if command == "analyze" else []
    outcome = run_cli(capsys, command, path, *extra)
    assert_refused(outcome, message)
    assert "tensor 'w'" in outcome.err
    assert snapshot(world) == before


# ---------------------------------------------------------------------------------------------
# 5. Tensor files and baselines


def npy_header(shape: str, descr: str = "<f4", version: bytes = b"\x01\x00") -> bytes:
    """The bytes of an .npy header declaring ``shape`` (a Python tuple as text)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (63 - 10 - len(text) % 64) + "\n"
    size = len(text).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + size + text.encode("latin1")


def _member_zip(path: Path, name: str, data: bytes, *, encrypted: bool = False) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, data)
    if encrypted:  # the "encrypted" flag bit, in the local header and the central directory
        raw = bytearray(path.read_bytes())
        raw[raw.find(b"PK\x03\x04") + 6] |= 1
        raw[raw.find(b"PK\x01\x02") + 8] |= 1
        path.write_bytes(bytes(raw))


TENSOR_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "zero-byte .npy",
        lambda d: _write(d / "t.npy", b""),
        "t.npy as .npy (EOF: reading magic string",
    ),
    (
        "negative shape .npy",
        lambda d: _write(d / "t.npy", npy_header("(-2, 3, 8, 8)") + bytes(64)),
        "has a negative dimension",
    ),
    (
        "short .npy",
        lambda d: _write(d / "t.npy", npy_header("(2, 3, 8, 8)") + bytes(64)),
        "needs 1536 bytes of data, the file holds 64",
    ),
    (
        "object .npy",
        lambda d: _write(d / "t.npy", npy_header("(2, 3, 8, 8)", "|O") + bytes(64)),
        "Python objects",
    ),
    (
        "zero-byte .npz",
        lambda d: _write(d / "t.npz", b""),
        "t.npz as .npz (File is not a zip file)",
    ),
    ("member not .npy", lambda d: _zip(d, "x.npy", b"hello, not an array"), "magic string"),
    ("member encrypted", lambda d: _zip(d, "x.npy", _npy(), encrypted=True), "it is encrypted"),
    (
        "member with negative shape",
        lambda d: _zip(d, "x.npy", npy_header("(-1, 3, 8, 8)") + bytes(8)),
        "has a negative dimension",
    ),
    (
        "member of 2^40 samples",
        lambda d: _zip(d, "x.npy", npy_header("(1099511627776, 3, 8, 8)") + bytes(8)),
        "needs 844424930131968 bytes",
    ),
    ("no member for the input", lambda d: _zip(d, "notes.txt", b"hi"), "has no key 'x'"),
    (
        "3.0 header of 2^40 samples",
        lambda d: _write(d / "t.npy", npy_header("(1099511627776, 3)", version=b"\x03\x00")),
        "needs 13194139533312 bytes",
    ),
    (
        "3.0 member of 2^40 samples",
        lambda d: _zip(d, "x.npy", npy_header("(1099511627776, 3)", version=b"\x03\x00")),
        "needs 13194139533312 bytes",
    ),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy() -> bytes:
    return npy_header("(2, 3, 8, 8)") + bytes(2 * 3 * 8 * 8 * 4)


def _zip(folder: Path, name: str, data: bytes, *, encrypted: bool = False) -> Path:
    _member_zip(folder / "t.npz", name, data, encrypted=encrypted)
    return folder / "t.npz"


@pytest.mark.parametrize(
    ("make", "message"),
    [case[1:] for case in TENSOR_FILES],
    ids=[case[0] for case in TENSOR_FILES],
)
@pytest.mark.parametrize("command", ["analyze", "accuracy"])
def test_a_damaged_tensor_file_is_one_line(
    world: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    make: Callable[[Path], Path],
    message: str,
) -> None:
    path = make(world)
    before = snapshot(world)
    outcome = run_cli(capsys, command, "model.onnx", "--inputs", path)
    assert_refused(outcome, message)
    assert snapshot(world) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "maximum recursion depth"),
        ("{" * 100_000, "cannot read baseline"),
        ('{"schema_version": 1, "eps": [0.0], "models": [' * 1000, "cannot read baseline"),
        ("\xff\xfe", "cannot read baseline"),
    ],
    ids=["nested [", "nested {", "nested models", "not utf-8"],
)
def test_a_hostile_baseline_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (world / "hostile.json").write_bytes(text.encode("latin1"))
    before = snapshot(world)
    outcome = run_cli(capsys, "zoo", "zoo", "--inputs-dir", "zin", "--baseline", "hostile.json")
    assert_refused(outcome, message)
    assert snapshot(world) == before


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_feature_maps_are_refused_not_counted(
    world: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    samples = np.ones((2, 3, 8, 8), np.float32)
    samples[1, 0, 4, 4] = value
    np.save(world / "bad.npy", samples)
    before = snapshot(world)
    outcome = run_cli(capsys, "analyze", "model.onnx", "--inputs", "bad.npy")
    assert_refused(outcome, "NaN or infinite")
    assert snapshot(world) == before


def test_a_deeply_nested_document_to_diff_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "nested.json").write_text("{" * 100_000)
    outcome = run_cli(capsys, "diff", "nested.json", "base.json")
    assert_refused(outcome, "cannot read nested.json as JSON")


def test_a_deeply_nested_eps_map_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "nested.json").write_text("[" * 100_000)
    outcome = run_cli(
        capsys, "analyze", "model.onnx", "--inputs", "x.npy", "--eps-map", "nested.json"
    )
    assert_refused(outcome, "the ε map nested.json is not JSON")


# ---------------------------------------------------------------------------------------------
# 5. Out of memory


def test_out_of_memory_in_onnxruntime_names_the_batch_size_to_lower_to(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx_prune import runtime

    original = runtime.OrtSession.__init__

    def init(self: runtime.OrtSession, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self._session = _FailingSession(self._session)

    monkeypatch.setattr(runtime.OrtSession, "__init__", init)
    before = snapshot(world)
    outcome = run_cli(capsys, "analyze", "model.onnx", "--inputs", "x.npy", "--batch-size", "8")
    assert_refused(outcome, "out of memory running a batch of 3 samples: lower --batch-size to 1")
    assert snapshot(world) == before


class _FailingSession:
    """An onnxruntime session whose every run fails the way onnxruntime's allocator does."""

    def __init__(self, session: object) -> None:
        self._session = session

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)

    def run(self, *args: object) -> object:
        raise RuntimeError(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
            "running Conv node. Name:'conv' Status Message: Failed to allocate memory for "
            "requested buffer of size 1099511627776"
        )


def test_a_memory_error_anywhere_names_the_batch_size_to_lower_to(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> object:
        raise MemoryError

    _patch_everywhere(monkeypatch, "open_tensor_inputs", out_of_memory)
    outcome = run_cli(capsys, "analyze", "model.onnx", "--inputs", "x.npy", "--batch-size", "16")
    assert_refused(outcome, "lower --batch-size to 8 or less")


def _patch_everywhere(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    """Replace ``name`` in every onnx_prune module that imported it."""
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("onnx_prune") and hasattr(module, name):
            monkeypatch.setattr(module, name, value)


# ---------------------------------------------------------------------------------------------
# 7. Darknet weights that would make NaN weights


@pytest.mark.parametrize(
    ("variance", "message"),
    [(-1.0, "hold 1 negative variances"), (float("nan"), "hold NaN or infinite values")],
)
def test_darknet_weights_that_would_give_nan_are_refused(
    world: Path, capsys: pytest.CaptureFixture[str], variance: float, message: str
) -> None:
    _darknet_pair(world, variance=variance)
    before = snapshot(world)
    outcome = run_cli(capsys, "darknet", "net.cfg", "net.weights", "-o", "out.onnx")
    assert_refused(outcome, message)
    assert "rolling_variance of layer_000_convolutional (cfg line 6)" in outcome.err
    assert snapshot(world) == before


def test_valid_darknet_weights_convert(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run_cli(capsys, "darknet", "net.cfg", "net.weights", "-o", "out.onnx")
    assert outcome.status == 0, outcome
    onnx.checker.check_model(onnx.load("out.onnx"))


# ---------------------------------------------------------------------------------------------
# 5. Processes: a closed standard output, Ctrl-C during the imports


@pytest.fixture
def reader_gone() -> Iterator[int]:
    """The write end of a pipe whose reader has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    yield write_end
    os.close(write_end)


def test_a_broken_pipe_on_standard_output_is_one_line(world: Path, reader_gone: int) -> None:
    before = snapshot(world)
    done = subprocess.run(
        [sys.executable, "-m", "onnx_prune", "weights", "model.onnx", "--json", "-"],
        stdout=reader_gone,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines == ["error: standard output was closed before everything was written"]
    assert snapshot(world) == before


def _with_stdout_closed(arguments: str) -> subprocess.CompletedProcess[str]:
    """``onnx-prune ARGUMENTS`` run by the shell with its standard output closed (``>&-``)."""
    return subprocess.run(
        f"{sys.executable} -m onnx_prune {arguments} >&-",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


def test_a_closed_standard_output_is_one_line(world: Path) -> None:
    done = _with_stdout_closed("weights model.onnx --json -")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: standard output is closed: give a file path instead of -"
    ]


def test_a_closed_standard_output_without_an_output_file_is_one_line(world: Path) -> None:
    before = snapshot(world)
    done = _with_stdout_closed("weights model.onnx")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: standard output is closed, so the report has nowhere to go: "
        "give --json FILE or open standard output"
    ]
    assert snapshot(world) == before


def test_a_closed_standard_output_with_an_output_file_still_runs(world: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} -m onnx_prune weights model.onnx --json out.json >&-",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        cwd=world,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((world / "out.json").read_text())["schema_version"] == 1


@pytest.mark.parametrize("module", ["onnx", "numpy", "rich"])
def test_ctrl_c_during_the_imports_is_one_line(world: Path, module: str) -> None:
    """An import that is interrupted: a module of that name raising KeyboardInterrupt."""
    fake = world / "interrupting"
    fake.mkdir()
    (fake / f"{module}.py").write_text("raise KeyboardInterrupt\n")
    environment = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{REPOSITORY}"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from onnx_prune.cli import main; sys.exit(main())"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=world,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted"], done.stderr


def test_a_model_that_fails_at_run_time_is_one_line_without_onnxruntime_log(world: Path) -> None:
    """onnxruntime logs a failed kernel itself (coloured lines on fd 2); only our line remains."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "bias"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed_bias",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 8, "H", "W"])],
        [
            numpy_helper.from_array(conv_weight(), "w"),
            numpy_helper.from_array(np.zeros((1, 8, 8, 8), np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, world, "sized.onnx")
    np.save(world / "small.npy", np.ones((2, 3, 5, 5), np.float32))
    before = snapshot(world)
    done = subprocess.run(
        [sys.executable, "-m", "onnx_prune", "analyze", "sized.onnx", "--inputs", "small.npy"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=world,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "\x1b" not in done.stderr and "[E:onnxruntime" not in done.stderr, done.stderr
    # the batch is retried one sample at a time (a warning), then the one error line
    assert len(lines) == 2 and "batches of 2 fail" in lines[0], done.stderr
    assert lines[1].startswith("error: onnxruntime failed on inputs x [1, 3, 5, 5]: "), lines
    assert lines[1].endswith("(--size HxW for images, the arrays' shapes for --inputs)"), lines
    assert snapshot(world) == before
