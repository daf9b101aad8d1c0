"""A `Document` as Markdown (GitHub tables)."""

from __future__ import annotations

import html

from .content import Document, Table, cell


def _escape(text: str) -> str:
    """A table cell: HTML escaped (Markdown viewers render HTML), one line, pipes kept."""
    return " ".join(html.escape(text, quote=False).replace("|", "\\|").split())


def table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(_escape(cell(c)) for c in row) + " |" for row in t.rows]
    return lines


def render(doc: Document, level: int = 2) -> str:
    """``level``: the heading level of the document's sections (its title one above, omitted
    when the title is empty: a section for a larger page)."""
    lines = [f"{'#' * (level - 1)} {doc.title}", ""] if doc.title else []
    for s in doc.sections:
        lines += [f"{'#' * level} {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        if s.bullets:
            lines += [*(f"- {b}" for b in s.bullets), ""]
        for t in s.tables:
            lines += [*table(t), ""]
        for path, alt in s.images:
            lines += [f"![{alt}]({path})", ""]
        if s.code:
            lines += ["```", s.code, "```", ""]
    return "\n".join(lines)
