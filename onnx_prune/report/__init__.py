"""Rich renderables for every result: ``format_*`` functions build them, only the CLI prints.

Tests render these to ``Console(file=io.StringIO(), width=100, color_system=None)`` and compare
with golden files, so the layout is part of the interface. This module holds the helpers that
every report shares; each command's tables live in a module of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS: these numbers say nothing about a trained network"


def percent(part: int | float, whole: int | float) -> str:
    """``part / whole`` as a percentage with two decimals, or ``-`` when ``whole`` is 0."""
    return f"{100.0 * part / whole:.2f}" if whole else "-"


def eps_label(eps: float) -> str:
    """A short column label for one ε."""
    return f"ε={eps:g}"


def format_shape(shape: Sequence[int | str]) -> str:
    """``[8, 3, 3, 3]`` as ``8×3×3×3``."""
    return "×".join(str(d) for d in shape) if shape else "scalar"


def format_random_banner(random_weights: bool) -> RenderableType:
    """A loud line when the model's weights are random, else nothing."""
    return Text(RANDOM_WEIGHTS_BANNER, style="bold red") if random_weights else Text("")


def plain_table(title: str, **options: Any) -> Table:
    """The tables of every report: a left-aligned title and one rule under the header."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, **options)
