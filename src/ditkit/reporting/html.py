"""A `Document` as one self-contained HTML page, from the package's template
(``reporting/templates/document.html``)."""

from __future__ import annotations

import functools
import html as _html
import re
from importlib import resources

import jinja2
from markupsafe import Markup

from .content import Document, Table, cell


def inline(text: str) -> Markup:
    """Markdown inline marks (`code`, **bold**, *emphasis*) of escaped text as HTML."""
    out = _html.escape(text, quote=False)  # element text, never an attribute value
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return Markup(re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out))


@functools.cache
def _template() -> jinja2.Template:
    text = (resources.files("ditkit.reporting") / "templates" / "document.html").read_text()
    env = jinja2.Environment(autoescape=True)
    env.filters.update(inline=inline, cell=cell)
    return env.from_string(text)


def widths(t: Table) -> list[float]:
    """Each column's share of the page, in percent (equal shares where none are given)."""
    raw = [t.widths.get(c, 4.0) for c in t.columns]
    return [100 * w / sum(raw) for w in raw]


def render(doc: Document) -> str:
    return _template().render(doc=doc, widths=widths)
