"""Reports as one content model (`Document`: sections of paragraphs, tables and pictures) with
three renderers: Markdown, HTML (a template shipped as a package file) and fixed-width text.
The audit table and the sweeps' summaries are built here; a new output format is one module
with a ``render(doc)``.
"""

from __future__ import annotations

from . import html, markdown, text
from .content import Document, Section, Table, cell

__all__ = ["Document", "Section", "Table", "cell", "html", "markdown", "text"]
