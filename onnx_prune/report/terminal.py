"""Names from the user's files never reach the terminal raw.

A node, tensor or image file name may hold control characters (``\\x1b[2J`` clears the
screen); ``printable`` writes them as Python escapes. ``EscapingConsole`` applies it to every
string a table or message is built from and, as a backstop, to every piece of text it writes,
while rich's own colours and cursor movements pass through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``)."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class EscapingConsole(Console):
    """A rich Console that escapes control characters in everything it is given to write."""

    def render_str(self, text: str, **options: Any) -> Text:
        """Strings are escaped before layout, so tables keep their widths."""
        return super().render_str(printable(text, keep_newlines=True), **options)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        safe = (
            segment if segment.control else segment._replace(text=_escape_text(segment.text))
            for segment in buffer
        )
        return super()._render_buffer(safe)


def _escape_text(text: str) -> str:
    return printable(text, keep_newlines=True)
