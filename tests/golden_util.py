"""Golden-file comparison of rendered report text (UPDATE_GOLDEN=1 rewrites the files)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console, RenderableType

GOLDEN = Path(__file__).parent / "golden"


def render(renderable: RenderableType, width: int = 100) -> str:
    """Plain text of ``renderable`` as a 100-column terminal without colour would show it."""
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def assert_golden(text: str, name: str) -> None:
    """Compare ``text`` with ``tests/golden/NAME``."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs: rerun with UPDATE_GOLDEN=1"
