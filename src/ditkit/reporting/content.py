"""What a report says, apart from how it looks: a document of sections holding paragraphs,
tables and pictures. `markdown`, `html` and `text` render the same document three ways."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """Rows of cells under named columns; cells are text or numbers (rendered by `cell`)."""

    columns: list[str]
    rows: list[list[Any]]
    # Relative widths by column name, for renderers that lay out a page (HTML); others ignore.
    widths: dict[str, float] = field(default_factory=dict)
    # A class per row ("flag", ...) that a renderer may style; empty: none.
    row_classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [i for i, r in enumerate(self.rows) if len(r) != len(self.columns)]
        if bad:
            raise ValueError(f"table row {bad[0]} has {len(self.rows[bad[0]])} cells, not "
                             f"{len(self.columns)} ({', '.join(self.columns)})")  # fmt: skip

    def to_csv(self) -> str:
        """The table as CSV, cells as they are (numbers unrounded, lists joined by "; ")."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        for row in self.rows:
            w.writerow(["; ".join(map(str, c)) if isinstance(c, list) else c for c in row])
        return buf.getvalue()


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # Markdown inline: `code`, **bold**
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, alt text)
    bullets: list[str] = field(default_factory=list)
    code: str = ""  # a preformatted block (e.g. a run's config as JSON), shown as it is


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)


def cell(value: Any) -> str:
    """One cell as text: floats to 3 significant digits, lists joined, None empty."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "; ".join(cell(v) for v in value)
    return "" if value is None else str(value)
