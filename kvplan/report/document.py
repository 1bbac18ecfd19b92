"""What a command reports, whatever the format: typed rows in tables, label/value pairs, lines of prose,
suites of pass/fail cases, and the JSON document. Renderers (report/formats/) turn a Report into text.

A row kind is a frozen dataclass whose fields carry their column in metadata, so adding a field to an
output is one line:

    kv_budget_bytes: int | None = col("KV budget / GPU", show=fmt_gib, drop=1)

Field names are the JSON/CSV keys (units in the name); `header` and `show` are what people read.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..inputs import printable

# How a cell may be laid out on a narrow terminal: identifiers and numbers are never wrapped or cut
# (the table drops columns or switches to one block per row instead); prose wraps between words.
ID, NUM, TEXT = "id", "num", "text"


def plain(value: Any) -> str:
    """The default display form: `-` for missing, thousands separators for integers."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


@dataclass(frozen=True)
class Column:
    key: str  # the field name: JSON/CSV key
    header: str  # what a table shows
    kind: str = NUM
    show: Callable[[Any], str] | None = plain  # None: data only (CSV/JSON), never displayed
    drop: int = 0  # narrow terminals leave out the highest `drop` first; 0: always shown
    style: Callable[[Any], str | None] | None = None  # value -> "ok" | "fail" | "warn" | "dim" | None
    code: bool = False  # markdown shows the value as `code` (names to copy)

    @property
    def shown(self) -> bool:
        return self.show is not None


def col(header: str = "", kind: str = NUM, show: Callable[[Any], str] | None = plain, drop: int = 0,
        style: Callable[[Any], str | None] | None = None, code: bool = False):
    """A dataclass field that is also a column (see the module docstring); the header defaults to the key."""
    return field(metadata={"column": dict(header=header, kind=kind, show=show, drop=drop, style=style, code=code)})


def data():
    """A field for CSV/JSON only."""
    return col(show=None)


def columns_of(row_type: type) -> tuple[Column, ...]:
    out = []
    for f in fields(row_type):
        meta = f.metadata.get("column")
        if meta is not None:
            out.append(Column(key=f.name, **{**meta, "header": meta["header"] or f.name}))
    return tuple(out)


@dataclass(frozen=True)
class Table:
    """Rows of one kind. `group`: a key whose value is shown once per run of equal values."""

    row_type: type
    rows: Sequence
    title: str = ""
    group: str | None = None

    @property
    def columns(self) -> tuple[Column, ...]:
        return columns_of(self.row_type)

    @property
    def shown(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.shown)

    def keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def values(self) -> Iterator[list]:
        keys = self.keys()
        for row in self.rows:
            yield [getattr(row, k) for k in keys]

    def cells(self, blank_groups: bool = False) -> list[list[str]]:
        """Display strings of the shown columns, fit for a terminal (kvplan.inputs.printable); with
        `blank_groups`, a group's value on its first row only."""
        shown = self.shown
        out, last = [], object()
        for row in self.rows:
            line = [printable(c.show(getattr(row, c.key))) for c in shown]  # a name may carry escapes
            if blank_groups and self.group is not None:
                value = getattr(row, self.group)
                if value == last:
                    line[[c.key for c in shown].index(self.group)] = ""
                last = value
            out.append(line)
        return out

    def styles(self) -> list[list[str | None]]:
        return [[c.style(getattr(row, c.key)) if c.style else None for c in self.shown] for row in self.rows]

    def group_ends(self) -> list[bool]:
        """Whether each row closes its group (a rule is drawn after it)."""
        if self.group is None:
            return [False] * len(self.rows)
        values = [getattr(r, self.group) for r in self.rows]
        return [i + 1 < len(values) and values[i + 1] != v for i, v in enumerate(values)]


@dataclass(frozen=True)
class Records:
    """Flat rows for CSV, Parquet and JSON-records output: keys and an iterable of value lists.
    `frame`: a pandas DataFrame holding the same rows, which the renderers write directly (a sweep's
    million rows at C speed)."""

    keys: Sequence[str]
    rows: Callable[[], Iterable[Sequence]]
    frame: Any = None

    @classmethod
    def of(cls, table: Table) -> "Records":
        return cls(table.keys(), table.values)


@dataclass(frozen=True)
class Pairs:
    """Label / value lines; labels hold numbers and never wrap, values wrap between words."""

    items: Sequence[tuple[str, str]]
    title: str = ""


@dataclass(frozen=True)
class Line:
    """A line of prose. style: "title", "note", "item", "dim", "ok", "fail", "warn" or "" (plain);
    `label` is a lead-in shown in the style ("Verdict:", "FAILED:") with `text` plain after it."""

    text: str
    style: str = ""
    label: str = ""


@dataclass(frozen=True)
class Case:
    """One pass/fail check (a JUnit testcase, a GitHub annotation when it fails)."""

    name: str
    classname: str
    file: str
    line: int
    passed: bool
    message: str  # one line: why
    details: tuple[str, ...] = ()  # the figures behind it, one per line
    title: str = ""  # the annotation's title
    context: str = ""  # appended to the annotation's message in parentheses
    failure_type: str = "kvplan.rule"


@dataclass(frozen=True)
class Suite:
    name: str
    file: str
    properties: tuple[tuple[str, Any], ...]
    cases: tuple[Case, ...]


@dataclass
class Report:
    """`blocks` in order for people (table, markdown); `data` for JSON (a document, or Records for a
    list of objects); `records` for CSV/Parquet; `suites` for JUnit/GitHub; `summary` one closing line;
    `formats` those the command offers."""

    name: str
    formats: tuple[str, ...]
    blocks: list = field(default_factory=list)
    data: Any = None
    records: Records | None = None
    suites: tuple[Suite, ...] = ()
    summary: str = ""
