"""Validate onnx-prune's JSON documents against the schemas in ``onnx_prune/schemas/``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from onnx_prune.schemas import DOCUMENTS, ID_BASE, SCHEMAS_DIR, load_schema


@cache
def _registry() -> Registry[Any]:
    resources = [
        (ID_BASE + path.name, Resource.from_contents(json.loads(path.read_text("utf-8"))))
        for path in sorted(SCHEMAS_DIR.glob("*.json"))
    ]
    return Registry().with_resources(resources)


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def is_onnx_prune_document(document: Any) -> bool:
    """True for a document onnx-prune writes: every one has a ``schema_version``."""
    return isinstance(document, Mapping) and document.get("schema_version") is not None


def document_kind(document: Any) -> str | None:
    """Which of the documents ``document`` is, from the fields that tell them apart (None: not
    an onnx-prune document, or one of a kind no schema describes)."""
    if not is_onnx_prune_document(document):
        return None
    if document.get("tool") == "onnx-prune zoo":
        return "baseline"
    if document.get("command") == "zoo":
        return "zoo"
    if "granularity" in document and "results" in document:
        return "accuracy"
    if "bandwidth" in document and "totals" in document:
        return "analyze"
    if "totals" in document and "layers" in document:
        return "weights"
    if set(document) == {"schema_version", "model", "metric", "eps"}:
        return "eps-map"
    if "sensitivity" in document and "splits" in document:
        return "tune"
    if "networks" in document and "not_measured" in document:
        return "paper"
    return None


def assert_valid(document: Any, kind: str | None = None) -> str:
    """Validate ``document`` against its schema (found by ``document_kind`` unless given);
    returns the kind. Every error is listed, with where in the document it is."""
    kind = kind or document_kind(document)
    assert kind in DOCUMENTS, f"not a known onnx-prune document: {str(document)[:200]}"
    # best_match descends into anyOf (nullable fields) to the error that says what is wrong
    found = [best_match([error]) or error for error in _validator(kind).iter_errors(document)]
    errors = sorted(found, key=lambda e: [str(part) for part in e.absolute_path])
    assert not errors, f"{kind} document does not match its schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:300]}"
        for error in errors[:20]
    )
    return kind


def validate_json_files(folder: Path, *, allow_unknown: bool = False) -> list[tuple[Path, str]]:
    """Validate every onnx-prune document among the ``*.json`` files under ``folder``; one that
    no schema describes fails (every document kind has a schema) unless ``allow_unknown``, for
    tests that write documents of no kind on purpose (an input error to provoke)."""
    checked: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*.json")):
        if not path.is_file():  # a FIFO (the fault tests make some) would block the read
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue  # tests write broken files on purpose
        if not is_onnx_prune_document(document):
            continue
        kind = document_kind(document)
        if kind is None and allow_unknown:
            continue
        assert kind is not None, (
            f"{path.name}: an onnx-prune document (schema_version) of a kind no schema describes: "
            "add one (onnx_prune/schemas/README.md) and teach document_kind to recognise it"
        )
        checked.append((path, assert_valid(document, kind)))
    return checked
