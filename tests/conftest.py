"""Suite-wide checks: every JSON document a test leaves in its ``tmp_path`` matches its schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.schema_util import validate_json_files


@pytest.fixture(autouse=True)
def _documents_match_their_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used ``tmp_path``: validate the onnx-prune documents written there."""
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if folder is not None:
        validate_json_files(folder)
