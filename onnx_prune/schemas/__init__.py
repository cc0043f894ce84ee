"""JSON Schemas (draft 2020-12) of every JSON document onnx-prune writes; see README.md here.

The schemas are package data: ``schema_path("analyze")`` is the file, ``load_schema`` its parsed
content. Validating needs a JSON Schema library (the tests use ``jsonschema``, in the ``dev``
extra); the ``$ref`` between files resolve by the ``$id`` of each, ``ID_BASE`` + file name.
"""

import json
from pathlib import Path
from typing import Any

SCHEMAS_DIR = Path(__file__).resolve().parent
ID_BASE = "https://onnx-prune.invalid/schemas/"
"""The base of every schema's ``$id``: an identifier (``.invalid`` never resolves), not a URL."""

DOCUMENTS = ("weights", "analyze", "accuracy", "eps-map", "zoo", "baseline", "tune", "paper")
"""One schema per document; ``common`` holds the pieces they share."""


def schema_path(name: str) -> Path:
    """The schema file of document ``name`` (one of DOCUMENTS, or ``common``)."""
    return SCHEMAS_DIR / f"{name}.json"


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema of document ``name``."""
    schema: dict[str, Any] = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return schema
