"""How every command prints: aligned tables, records, wrapped notes, timestamps; every cell on
one line whatever it holds, so a repository's text can never forge a line of output."""

from __future__ import annotations

import re
import shutil
import textwrap
import unicodedata
from collections.abc import Sequence
from datetime import datetime


def ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if value else "-"


def thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def one_line(text: str, escape: bool = True) -> str:
    """`text` on one line: line breaks and other control or format characters (bidi overrides
    included) written as escapes (`\\n`, `\\x1b`, `\\u202e`), or with `escape=False` line breaks
    folded into spaces."""
    if not escape:
        text = re.sub(r"\s*[\r\n\u2028\u2029]+\s*", " ", text)
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )


def table(
    header: list[str], rows: list[list[str]], notes: Sequence[list[str]] | None = None
) -> None:
    """Aligned columns, one line per row whatever the cells hold; a row's `notes`, lines made
    by `wrapped`, printed under it."""
    cells = [[one_line(str(c)) for c in row] for row in [header, *rows]]
    widths = [max(len(c) for c in col) for col in zip(*cells, strict=False)]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        for line in notes[i - 1] if notes and i else []:
            print(line)


def record(labels: list[str], values: list[str]) -> None:
    """One record, a `label  value` line per field with a value; long values wrapped."""
    width = max(len(label) for label in labels)
    for label, value in zip(labels, values, strict=True):
        for line in wrapped(f"{label.ljust(width)}  ", value) if value else []:
            print(line)


def clipped(text: str | None, width: int = 100) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis when longer (`status
    --verbose` and `status REQUEST_ID` show it whole)."""
    line = one_line(text or "")
    return line if len(line) <= width else line[: width - 1] + "…"


def wrapped(prefix: str, text: str) -> list[str]:
    """`text` whole, wrapped to the terminal after `prefix`, continuation lines indented under
    it: each of its own lines kept, any other control or format character escaped."""
    width = max(shutil.get_terminal_size((100, 24)).columns, len(prefix) + 20)
    indent = " " * len(prefix)
    lines: list[str] = []
    for part in text.splitlines() or [""]:
        lines += textwrap.wrap(
            one_line(part),
            width,
            initial_indent=indent if lines else prefix,
            subsequent_indent=indent,
            break_on_hyphens=False,
            drop_whitespace=False,
        ) or [prefix if not lines else indent]
    return [line.rstrip() for line in lines]
