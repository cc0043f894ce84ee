"""The ``diff`` report: the layers whose figures moved between two documents, per model and ε.

The terminal and the Markdown tables share their rows. Shares are percentages; a change is new
minus old in percentage points; saved bytes are the bytes per sample that skipping zero channels
saves on the layer's IFM.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from onnx_prune.diff import DocumentDiff, LayerChange, ModelDiff
from onnx_prune.report import plain_table

HEADER = ("model", "layer", "op", "ε", "IFM zero %", "OFM zero %", "IFM saved %", "saved bytes")


def format_diff(diff: DocumentDiff) -> RenderableType:
    """The table of changed layers, then added/removed layers and models, then the verdict."""
    table = plain_table(_title(diff))
    header = _header(diff)
    for column in header:
        table.add_column(column, justify="left" if column in header[:-5] else "right")
    for row in _rows(diff):
        table.add_row(*row)
    parts: list[RenderableType] = [table] if any(m.changes for m in diff.models) else []
    parts += [Text(line) for line in _lines(diff)]
    parts.append(Text(_verdict(diff), style="bold red" if diff.changed else "bold green"))
    return Group(*parts)


def format_diff_markdown(diff: DocumentDiff) -> str:
    """The same rows and lines as Markdown."""
    lines = ["## onnx-prune diff", "", _title(diff), ""]
    if any(model.changes for model in diff.models):
        header = _header(diff)
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * (len(header) - 5) + "---:|" * 5]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
            for row in _rows(diff)
        ]
        lines.append("")
    lines += [f"- {line}" for line in _lines(diff)]
    return "\n".join([*lines, "", f"**{_verdict(diff)}**", ""])


def _title(diff: DocumentDiff) -> str:
    eps = ",".join(f"{e:g}" for e in diff.eps)
    return (
        f"{diff.old} → {diff.new}: layers that moved more than {100 * diff.tolerance:.2f} "
        f"points at ε {eps}"
    )


def _header(diff: DocumentDiff) -> tuple[str, ...]:
    """The columns; the model's only when the documents hold several (zoo documents)."""
    return HEADER if _zoo(diff) else HEADER[1:]


def _zoo(diff: DocumentDiff) -> bool:
    return len(diff.models) > 1 or bool(diff.added_models or diff.removed_models)


def _rows(diff: DocumentDiff) -> list[tuple[str, ...]]:
    rows = [_row(model, change) for model in diff.models for change in model.changes]
    return rows if _zoo(diff) else [row[1:] for row in rows]


def _row(model: ModelDiff, change: LayerChange) -> tuple[str, ...]:
    return (
        model.model,
        change.layer,
        change.op_type,
        f"{change.eps:g}",
        _moved(change, "ifm_zero"),
        _moved(change, "ofm_zero"),
        _moved(change, "ifm_saved_share"),
        f"{change.old.saved_bytes[change.eps]:,} → {change.new.saved_bytes[change.eps]:,}",
    )


def _moved(change: LayerChange, name: str) -> str:
    old = 100 * change.old.figure(name, change.eps)
    new = 100 * change.new.figure(name, change.eps)
    mark = "*" if name in change.moved else ""
    return f"{old:.2f} → {new:.2f} ({new - old:+.2f}){mark}"


def _lines(diff: DocumentDiff) -> list[str]:
    lines = [f"model only in {diff.new}: {key}" for key in diff.added_models]
    lines += [f"model only in {diff.old}: {key}" for key in diff.removed_models]
    for model in diff.models:
        lines += [f"{model.model}: layer added: {name}" for name in model.added]
        lines += [f"{model.model}: layer removed: {name}" for name in model.removed]
        changed = len({change.layer for change in model.changes})
        lines.append(
            f"{model.model}: {changed} layer(s) changed, {model.unchanged} within the tolerance"
        )
    return lines + list(diff.notes)


def _verdict(diff: DocumentDiff) -> str:
    if diff.changed:
        return "CHANGED: figures moved beyond the tolerance (* marks them) or layers differ"
    return "SAME: no figure moved beyond the tolerance"
