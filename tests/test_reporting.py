"""One content model, three renderers: the same cells in Markdown, HTML and text."""

from __future__ import annotations

import csv
import io

import pytest

from ditkit.reporting import Document, Section, Table, html, markdown, text


def _doc() -> Document:
    table = Table(
        ["method", "score", "note"],
        [["DIT", 0.8333333, "a|b <i>"], ["Base question", 0.5, None]],
        widths={"note": 8},
        row_classes=["flag", "ok"],
    )
    return Document(
        "A report",
        [
            Section("Scores", ["DIT reads `diffs`; **bold** stays."], [table], [("p.png", "plot")]),
            Section("Config", code='{\n  "rank": <16>\n}'),
        ],
    )


def test_the_same_cells_in_every_format():
    doc = _doc()
    md, page, plain = markdown.render(doc), html.render(doc), text.render(doc)
    for out in (md, page, plain):
        assert "Base question" in out and "0.833" in out and "0.5" in out
    # Markdown viewers render HTML: cells are escaped there too.
    assert "| DIT | 0.833 | a\\|b &lt;i&gt; |" in md and "![plot](p.png)" in md
    assert '```\n{\n  "rank": <16>\n}\n```' in md  # a code block as it is
    assert "<pre>{\n  &#34;rank&#34;: &lt;16&gt;\n}</pre>" in page and '"rank": <16>' in plain
    assert "&lt;i&gt;" in page and "<i>" not in page  # cells are escaped
    assert "<code>diffs</code>" in page and "<b>bold</b>" in page and 'class="flag"' in page
    assert 'style="width:50.0%"' in page  # note: 8 of 4 + 4 + 8
    rows = plain.splitlines()
    header = next(r for r in rows if r.startswith("method"))
    assert header.index("score") == rows[rows.index(header) + 1].index("0.833")  # aligned


def test_csv_keeps_raw_values_and_a_ragged_row_is_refused():
    table = _doc().sections[0].tables[0]
    parsed = list(csv.reader(io.StringIO(table.to_csv())))
    assert parsed[0] == ["method", "score", "note"] and parsed[1][1] == "0.8333333"
    with pytest.raises(ValueError, match="row 1 has 2 cells, not 3"):
        Table(["a", "b", "c"], [[1, 2, 3], [1, 2]])
