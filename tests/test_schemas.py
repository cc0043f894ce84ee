"""The JSON Schemas in ``onnx_prune/schemas/``: sound, complete, and matched by each command's JSON.

Besides these tests, ``conftest.py`` validates every onnx-prune document any test leaves in its
``tmp_path`` (``tests/schema_util.py``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from onnx_prune.cli import main
from onnx_prune.epsmap import EpsMap, write_eps_map
from onnx_prune.schemas import DOCUMENTS, ID_BASE, SCHEMAS_DIR, load_schema
from onnx_prune.zoo import Status
from tests.builders import (
    conv_relu_model,
    conv_weight,
    prunable_and_sensitive_model,
    save,
    tune_samples,
)
from tests.schema_util import assert_valid, document_kind, validate_json_files


def test_one_sound_schema_per_document() -> None:
    assert sorted(path.stem for path in SCHEMAS_DIR.glob("*.json")) == sorted(
        [*DOCUMENTS, "common"]
    )
    for name in [*DOCUMENTS, "common"]:
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"{ID_BASE}{name}.json"


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every kind of document, written by the commands on a tiny model with planted zeros."""
    folder = tmp_path_factory.mktemp("documents")
    zoo = folder / "zoo"
    zoo.mkdir()
    model = save(conv_relu_model(conv_weight()), zoo)
    inputs = folder / "model.npy"  # also what zoo --inputs-dir looks up for model.onnx
    np.save(inputs, np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32))
    tensors = ["--inputs", str(inputs)]
    runs = {
        "weights": ["weights", str(model), "--eps", "0,1e-3"],
        "analyze": ["analyze", str(model), *tensors, "--eps", "0,0.5"],
        "accuracy": ["accuracy", str(model), *tensors, "--eps", "0,0.5"],
        "baseline": ["zoo", str(zoo), "--inputs-dir", str(folder), "--eps", "0,0.5"],
    }
    for kind, argv in runs.items():
        flag = "--save-baseline" if kind == "baseline" else "--json"
        assert main([*argv, flag, str(folder / f"{kind}.json")]) in (0, 1), kind
    zoo_run = ["zoo", str(zoo), "--inputs-dir", str(folder), "--eps", "0,0.5"]
    baseline = ["--baseline", str(folder / "baseline.json")]
    assert main([*zoo_run, *baseline, "--json", str(folder / "zoo.json")]) == 0
    eps_map = EpsMap(model="model.onnx", metric="agreement >= 1", eps={"conv_out": 0.5})
    write_eps_map(eps_map, folder / "eps-map.json")
    tune_model = save(prunable_and_sensitive_model(), folder)
    tune_inputs = folder / "tune.npy"
    np.save(tune_inputs, tune_samples())
    tune = [
        "tune",
        str(tune_model),
        "--inputs",
        str(tune_inputs),
        "--json",
        str(folder / "tune.json"),
    ]
    assert main(tune) == 0
    # the embedded stand-in for MobileNet on one photo (no network: nothing is fetched)
    empty = folder / "no-weights"
    empty.mkdir()
    paper = ["paper", "--cache", str(empty), "--weights-dir", str(empty), "--networks", "mobilenet"]
    assert main([*paper, "--limit", "1", "--json", str(folder / "paper.json")]) == 0
    return {kind: json.loads((folder / f"{kind}.json").read_text()) for kind in DOCUMENTS}


@pytest.mark.parametrize("kind", DOCUMENTS)
def test_every_document_matches_its_schema(documents: dict[str, Any], kind: str) -> None:
    assert document_kind(documents[kind]) == kind
    assert_valid(documents[kind], kind)


def test_the_zoo_document_checks_the_analysis_inside(documents: dict[str, Any]) -> None:
    zoo = copy.deepcopy(documents["zoo"])
    assert zoo["comparison"] is not None  # the run compared with the saved baseline
    del zoo["models"][0]["analysis"]["bandwidth"]
    with pytest.raises(AssertionError, match="at models/0/analysis: 'bandwidth' is a required"):
        assert_valid(zoo, "zoo")


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("weights", ["totals", "zeros"], None, "None is not of type 'array'"),
        ("weights", ["layers", 0, "weight", "elements"], -1, "-1 is less than the minimum"),
        ("analyze", ["samples"], "3", "'3' is not of type 'integer'"),
        ("analyze", ["layers", 0, "ifm", "zero_channels"], [1.5, 0], "1.5 is not of type"),
        ("accuracy", ["granularity"], "tile", "'tile' is not one of"),
        ("baseline", ["schema_version"], 2, "1 was expected"),
        ("tune", ["sensitivity", 0, "points", 0, "source"], "guessed", "'guessed' is not one of"),
        ("tune", ["splits", "holdout", "samples"], -1, "-1 is less than the minimum"),
        ("tune", ["uniform", "sweep", 0, "within"], "yes", "'yes' is not of type 'boolean'"),
        ("paper", ["networks", 0, "weights"], "fake", "'fake' is not one of"),
        ("paper", ["networks", 0, "fig3", "layers"], "16", "'16' is not of type 'integer'"),
        ("paper", ["networks", 0, "table3", "load_reduction"], [2.0], "2.0 is greater than"),
    ],
)
def test_a_wrong_field_fails(
    documents: dict[str, Any], kind: str, path: list[Any], value: Any, message: str
) -> None:
    document = copy.deepcopy(documents[kind])
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    target[last] = value
    with pytest.raises(AssertionError, match=message):
        assert_valid(document, kind)


@pytest.mark.parametrize("kind", DOCUMENTS)
def test_a_missing_field_fails_and_a_new_one_passes(documents: dict[str, Any], kind: str) -> None:
    document = copy.deepcopy(documents[kind])
    document["a_field_added_later"] = {"any": ["thing"]}
    assert_valid(document, kind)
    del document["schema_version"]
    with pytest.raises(AssertionError, match="'schema_version' is a required property"):
        assert_valid(document, kind)


@pytest.mark.parametrize(
    ("kind", "path", "field"),
    [
        ("tune", ["splits"], "holdout"),
        ("tune", ["sensitivity", 0], "points"),
        ("tune", ["uniform"], "sweep"),
        ("tune", [], "eps_map"),
        ("paper", ["networks", 0], "paper_name"),
        ("paper", ["networks", 0, "fig3"], "measured"),
        ("paper", ["networks", 0], "table2"),
        ("paper", ["networks", 0, "fig5"], "measured_pruned_mb"),
        ("paper", ["networks", 0], "table3"),
    ],
)
def test_a_missing_nested_field_fails(
    documents: dict[str, Any], kind: str, path: list[Any], field: str
) -> None:
    document = copy.deepcopy(documents[kind])
    target = document
    for key in path:
        target = target[key]
    del target[field]
    with pytest.raises(AssertionError, match=f"'{field}' is a required property"):
        assert_valid(document, kind)


def test_a_document_of_a_kind_without_schema_fails_the_suite_wide_check(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"not": "ours"}')  # not an onnx-prune document
    assert validate_json_files(tmp_path) == []
    (tmp_path / "new.json").write_text('{"schema_version": 1, "a_new_kind": []}')
    with pytest.raises(AssertionError, match=r"new.json: an onnx-prune document .* no schema"):
        validate_json_files(tmp_path)
    (tmp_path / "new.json").unlink()


def test_the_schemas_ship_with_the_package() -> None:
    readme = (SCHEMAS_DIR / "README.md").read_text(encoding="utf-8")
    for name in DOCUMENTS:
        assert f"`{name}.json`" in readme
    assert Path(SCHEMAS_DIR.parent / "schemas").is_dir()


def test_the_zoo_statuses_are_the_ones_the_code_knows() -> None:
    model = load_schema("zoo")["properties"]["models"]["items"]
    assert model["properties"]["status"]["enum"] == list(get_args(Status))
