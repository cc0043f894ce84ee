"""Suite-wide checks: every JSON document a test leaves in its ``tmp_path`` matches its schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.schema_util import validate_json_files


@pytest.fixture(autouse=True)
def _documents_match_their_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used ``tmp_path``: validate the onnx-prune documents written there.

    A document with a ``schema_version`` of no known kind fails the test, except in tests marked
    ``unknown_documents`` (they write broken documents on purpose); documents of a known kind are
    validated in every test.
    """
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if folder is not None:
        allow = request.node.get_closest_marker("unknown_documents") is not None
        validate_json_files(folder, allow_unknown=allow)
