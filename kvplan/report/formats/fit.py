"""Fitting a table into a terminal width without cutting or splitting an identifier or a number.

In order, until the table fits:
  1. every column at its natural width;
  2. prose (TEXT) columns wrapped between words, multi-word headers wrapped between words;
  3. columns holding one value in every row shown once above the table instead (nothing is lost);
  4. the least important columns left out (highest `drop` first; `drop=0` columns always stay);
  5. no table: one block of `header: value` lines per row.
Identifier and number cells are never narrower than their longest value, and no word is ever
narrower than its column, so rich never has to fold or truncate.
"""

from dataclasses import dataclass

from rich.cells import cell_len

from ..document import TEXT, Column

MIN_PROSE_WIDTH = 16  # a prose column narrower than this reads as a word list


def table_width(widths) -> int:
    """Width of a rich box table: one pad each side of every cell, a border between and around."""
    return sum(widths) + 3 * len(widths) + 1


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


@dataclass(frozen=True)
class Fit:
    drawn: tuple[int, ...]  # indices into the shown columns, in order
    widths: tuple[int, ...] | None  # of the drawn columns; None: natural
    hoisted: tuple[int, ...] = ()  # constant columns, shown once above the table
    dropped: tuple[int, ...] = ()
    blocks: bool = False


def measure(columns: tuple[Column, ...], cells: list[list[str]]) -> tuple[list[int], list[int]]:
    """(natural, minimum) width of each column, headers included."""
    natural, minimum = [], []
    for i, c in enumerate(columns):
        values = [row[i] for row in cells]
        widest = max((cell_len(v) for v in values), default=0)
        if c.kind == TEXT:
            least = max(max((_longest_word(v) for v in values), default=0), min(widest, MIN_PROSE_WIDTH))
        else:
            least = widest
        natural.append(max(widest, cell_len(c.header)))
        minimum.append(max(least, _longest_word(c.header), 1))
    return natural, minimum


def fit_table(columns: tuple[Column, ...], cells: list[list[str]], width: int) -> Fit:
    natural, minimum = measure(columns, cells)
    drawn = list(range(len(columns)))
    if table_width([natural[i] for i in drawn]) <= width:
        return Fit(tuple(drawn), None)
    if table_width([minimum[i] for i in drawn]) <= width:
        return Fit(tuple(drawn), _spread(drawn, natural, minimum, width))
    hoisted = [i for i in drawn if len(cells) > 1 and len({row[i] for row in cells}) == 1]
    if len(hoisted) == len(drawn):
        hoisted = hoisted[1:]
    drawn = [i for i in drawn if i not in hoisted]
    dropped: list[int] = []
    candidates = sorted((i for i in drawn if columns[i].drop), key=lambda i: (-columns[i].drop, -i))
    while True:
        if table_width([minimum[i] for i in drawn]) <= width:
            return Fit(tuple(drawn), _spread(drawn, natural, minimum, width), tuple(hoisted), tuple(dropped))
        if not candidates:
            return Fit(tuple(range(len(columns))), None, blocks=True)
        gone = candidates.pop(0)
        drawn.remove(gone)
        dropped.append(gone)


def _spread(drawn: list[int], natural: list[int], minimum: list[int], width: int) -> tuple[int, ...]:
    """Minimum widths, then the spare width one character at a time to the column furthest from natural."""
    widths = {i: minimum[i] for i in drawn}
    spare = width - table_width(list(widths.values()))
    while spare > 0:
        i = max(drawn, key=lambda j: natural[j] - widths[j])
        if natural[i] <= widths[i]:
            break
        widths[i] += 1
        spare -= 1
    return tuple(widths[i] for i in drawn)
