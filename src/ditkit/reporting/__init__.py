"""Reports.

- ``content``, ``markdown``, ``html``, ``text``: one content model (`Document`: sections of
  paragraphs, tables and pictures) and its three renderers (the HTML page is a template shipped
  as a package file); the audit table and the sweeps' summaries are built with them, and a new
  output format is one module with a ``render(doc)``;
- ``results``, ``plots``, ``run_report``: an evaluated run's report (what it says, its plots,
  and its Markdown, HTML and printed forms; the page is ``templates/run_report.html``).
"""

from __future__ import annotations

from . import html, markdown, text
from .content import Document, Section, Table, cell

__all__ = ["Document", "Section", "Table", "cell", "html", "markdown", "text"]
