"""Markdown: tables as pipe tables, titles as headings, notes as quotes (GitHub renders it; step summaries)."""

from ...inputs import printable
from ..document import Line, Pairs, Report, Table


def render(report: Report) -> str:
    chunks: list[str] = []
    previous = None
    for block in report.blocks:
        text = _block(block)
        # consecutive list items form one list; every other block is its own paragraph
        if chunks and isinstance(block, Line) and isinstance(previous, Line) and block.style == previous.style == "item":
            chunks[-1] += "\n" + text
        else:
            chunks.append(text)
        previous = block
    return "\n\n".join(chunks) + "\n"


def _block(block) -> str:
    if isinstance(block, Table):
        cells = block.cells()
        styles = block.styles()
        rows = [[_cell(c, value, style) for c, value, style in zip(block.shown, row, row_styles)]
                for row, row_styles in zip(cells, styles)]
        table = pipe_table([c.header for c in block.shown], rows)
        return f"**{_escape(block.title)}**\n\n{table}" if block.title else table
    if isinstance(block, Pairs):
        table = pipe_table(["", ""], [[_escape(k), _escape(v)] for k, v in block.items])
        return f"**{_escape(block.title)}**\n\n{table}" if block.title else table
    return _line(block)


def _line(line: Line) -> str:
    line = Line(printable(line.text.replace("\n", " ")), line.style, printable(line.label) if line.label else line.label)
    if line.style == "title":
        return f"## {line.text}"
    if line.style == "note":
        return f"> note: {line.text}"
    if line.style == "item":
        return f"- {line.text}"
    return f"**{line.label}** {line.text}" if line.label else line.text


def _cell(column, value: str, style: str | None) -> str:
    if column.code and value and value != "-":
        return f"`{value}`"
    value = _escape(value)
    return f"**{value}**" if style == "fail" and value else value


def _escape(text: str) -> str:
    return printable(text).replace("|", "\\|")  # a newline in a name would end the table row


def pipe_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
