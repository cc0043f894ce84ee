"""Tables that keep their numbers at any terminal width.

rich squeezes a table that is wider than the terminal by cutting cells to ``…``, numbers
included. ``keep_numbers`` wraps a finished table and fits it at render time instead, in this
order, stopping as soon as it fits:

1. long names are shortened in the middle (``/model.22/cv2…/cv2.2.0/conv/Conv``), keeping more
   of the end, where layer names differ, down to ``COMFORTABLE_NAME`` characters;
2. the optional columns (shapes, op types: what the JSON has anyway) are left out, last first,
   and a line under the table says which; with none left, names go down to ``MIN_NAME``;
3. the other columns are split over several tables, each repeating the name columns.

Columns listed in ``wrap`` (labels such as "IFM zero, paper mean over layers") may wrap; every
other column keeps its natural width, so numbers are never cut. Cells of the name columns that
are not plain strings are kept as they are.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

NAME_WIDTH = 40
"""The widest a layer or tensor name is shown before it is shortened in the middle."""
COMFORTABLE_NAME = 24
"""Names are shortened to this before optional columns are left out."""
MIN_NAME = 16
"""Names are not shortened below this: the columns are split over several tables instead."""


def shorten_middle(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` cut to ``width`` characters by replacing its middle with ``…``, keeping two
    thirds for the end, where names differ (``/model.22/cv2.2/cv2.2.0/conv/Conv``)."""
    if len(name) <= width:
        return name
    if width < 2:
        return name[len(name) - width :] if width > 0 else ""
    tail = (2 * (width - 1)) // 3
    head = width - 1 - tail
    return f"{name[:head]}…{name[len(name) - tail :]}"


class KeptTable:
    """A rich renderable: ``table`` fitted to the width it is rendered at, numbers intact."""

    def __init__(
        self,
        table: Table,
        *,
        names: Sequence[int] = (0,),
        optional: Sequence[int] = (),
        wrap: Sequence[int] = (),
    ) -> None:
        self.table = table
        self.names = tuple(names)
        self.optional = tuple(optional)
        self.wrap = tuple(wrap)
        self._natural: dict[int, int] = {}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        self._measure_columns(console, options)
        keep = list(range(len(self.table.columns)))
        longest = self._longest_name()
        for name_width in _name_widths(longest, COMFORTABLE_NAME):
            if self._fits(console, options, keep, name_width):
                yield self._build(keep, name_width)
                return
        dropped: list[int] = []
        for column in reversed(self.optional):
            keep.remove(column)
            dropped.insert(0, column)
            last = column == self.optional[0]
            for name_width in _name_widths(longest, MIN_NAME if last else COMFORTABLE_NAME):
                if self._fits(console, options, keep, name_width):
                    yield self._build(keep, name_width)
                    yield self._dropped_note(dropped, width)
                    return
        yield from self._split(console, options, keep, min(longest, COMFORTABLE_NAME) or None)
        if dropped:
            yield self._dropped_note(dropped, width)

    def _fits(
        self, console: Console, options: ConsoleOptions, keep: list[int], name_width: int
    ) -> bool:
        return _width(console, options, self._build(keep, name_width)) <= options.max_width

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._measure_columns(console, options)
        table = self._build(range(len(self.table.columns)))
        measured = Measurement.get(console, options, table)
        return Measurement(min(measured.minimum, options.max_width), measured.maximum)

    def _measure_columns(self, console: Console, options: ConsoleOptions) -> None:
        """The natural width of every column that keeps its cells whole."""
        if self._natural:
            return
        wide = options.update(width=10_000)
        for index, column in enumerate(self.table.columns):
            cells = [column.header, *column.cells]
            self._natural[index] = max(
                Measurement.get(console, wide, cell).maximum for cell in cells
            )

    def _longest_name(self) -> int:
        cells = (cell for index in self.names for cell in self.table.columns[index].cells)
        return max((len(cell) for cell in cells if isinstance(cell, str)), default=0)

    def _build(self, keep: Iterable[int], name_width: int | None = None) -> Table:
        """A copy of the table with only the columns ``keep``, names cut to ``name_width``."""
        table = copy.copy(self.table)
        columns = []
        for position, index in enumerate(keep):
            column = self.table.columns[index]
            if index in self.names:
                column = _shortened(column, name_width or NAME_WIDTH)
            elif index not in self.wrap:
                natural = self._natural.get(index)
                column = dataclasses.replace(
                    column, no_wrap=True, overflow="fold", min_width=natural, max_width=None
                )
            columns.append(dataclasses.replace(column, _index=position))
        table.columns = columns
        return table

    def _split(
        self,
        console: Console,
        options: ConsoleOptions,
        keep: list[int],
        name_width: int | None,
    ) -> RenderResult:
        """The other columns of ``keep`` spread over as few tables as fit, each repeating the
        name and label columns; the title only over the first."""
        repeated = [index for index in keep if index in self.names or index in self.wrap]
        rest = [index for index in keep if index not in repeated]
        groups: list[list[int]] = [[]]
        for index in rest:
            wider = self._build([*repeated, *groups[-1], index], name_width)
            if groups[-1] and _width(console, options, wider) > options.max_width:
                groups.append([])
            groups[-1].append(index)
        for number, group in enumerate(groups):
            table = self._build([*repeated, *group], name_width)
            if number:
                table.title = None
            yield table

    def _dropped_note(self, dropped: Sequence[int], width: int) -> Text:
        headers = ", ".join(_header(self.table.columns[index]) for index in dropped)
        return Text(
            f"left out at {width} columns: {headers} (a wider terminal or --json shows them)",
            style="dim",
        )


def keep_numbers(
    table: Table,
    *,
    names: Sequence[int] = (0,),
    optional: Sequence[int] = (),
    wrap: Sequence[int] = (),
) -> RenderableType:
    """``table`` as a renderable that never elides a number (see the module docstring).

    ``names`` are the indexes of the columns holding names (shortened in the middle);
    ``optional`` those that may be left out at narrow widths, the last one first; ``wrap``
    label columns that may wrap.
    """
    return KeptTable(table, names=names, optional=optional, wrap=wrap)


def _name_widths(longest: int, narrowest: int) -> list[int]:
    """The name widths to try, widest first, down to ``narrowest``."""
    widest = min(longest, NAME_WIDTH) if longest else NAME_WIDTH
    widths = [widest, *range(widest - 4, narrowest, -4)]
    return widths if widest <= narrowest else [*widths, narrowest]


def shorten_names(names: Sequence[str], width: int = NAME_WIDTH) -> list[str]:
    """Each name cut to ``width`` in the middle; when that makes different names look the same
    (their tails are alike: ``.../cv2.2.0/conv/Conv``, ``.../cv2.2.1/conv/Conv``), the end they
    share is cut instead, so the part that tells them apart stays."""
    short = [shorten_middle(name, width) for name in names]
    if len(set(short)) == len(set(names)) or width < 4:
        return short
    long = [name for name in names if len(name) > width]
    shared = _common_suffix(long)
    if not shared:
        return short
    return [
        f"{shorten_middle(name[: len(name) - shared], width - 1)}…" if len(name) > width else name
        for name in names
    ]


def _common_suffix(names: Sequence[str]) -> int:
    """How many characters every name ends with alike."""
    if not names:
        return 0
    shortest = min(len(name) for name in names)
    length = 0
    while length < shortest and len({name[len(name) - length - 1] for name in names}) == 1:
        length += 1
    return length


def _shortened(column: Column, width: int) -> Column:
    text = [cell for cell in column.cells if isinstance(cell, str)]
    short = dict(zip(text, shorten_names(text, width), strict=True))
    cells = [short[cell] if isinstance(cell, str) else cell for cell in column.cells]
    # The shortened names stay whole: without a minimum, rich measures a name column by its
    # longest word and the fit check passes a table that rendering then cuts at its last column.
    widest = max((cell_len(cell) for cell in short.values()), default=0)
    return dataclasses.replace(
        column, _cells=cells, min_width=widest, max_width=None, overflow="fold"
    )


def _width(console: Console, options: ConsoleOptions, table: Table) -> int:
    """The narrowest the table renders without cutting a cell that must stay whole."""
    return Measurement.get(console, options.update(width=10_000), table).minimum


def _header(column: Column) -> str:
    header = column.header
    return header.plain if isinstance(header, Text) else str(header)
