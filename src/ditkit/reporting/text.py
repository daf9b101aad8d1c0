"""A `Document` as fixed-width text, for a terminal."""

from __future__ import annotations

from .content import Document, Table, cell


def table(t: Table) -> list[str]:
    cells = [t.columns, *[[cell(c) for c in row] for row in t.rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(t.columns))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def render(doc: Document) -> str:
    lines = [doc.title, "=" * len(doc.title), ""] if doc.title else []
    for s in doc.sections:
        lines += [s.title, "-" * len(s.title)]
        lines += [*s.paragraphs, *(f"  - {b}" for b in s.bullets)]
        for t in s.tables:
            lines += ["", *table(t)]
        if s.code:
            lines += ["", *s.code.splitlines()]
        lines.append("")
    return "\n".join(lines)
