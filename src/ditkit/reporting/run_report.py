"""An evaluated run as report/report.md (plots as PNG files beside it), report/index.html (CSS
inline, plots embedded as base64 PNG, every piece of run data HTML-escaped; the page is the
package file ``reporting/templates/run_report.html``) and the printed summary (`text_summary`).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from importlib import resources
from pathlib import Path

import jinja2

from .. import files
from . import markdown
from .content import Document, Section, Table
from .html import inline
from .plots import bar_chart, hit_matrix
from .results import (
    ANSWER_PREVIEW_CHARS,
    ROLE_NAMES,
    check_table,
    diff_rows,
    family_table,
    legend,
    load_results,
    main_table,
    package_versions,
    paired_rows,
    score_cell,
    summary_text,
    timing_rows,
)

log = logging.getLogger(__name__)


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text[:ANSWER_PREVIEW_CHARS] + "…" if len(text) > ANSWER_PREVIEW_CHARS else text


def _scores(t: dict) -> Table:
    """A scores table (results or diff checks), the best cells in bold."""
    rows = [
        [row["label"], *(f"**{c['text']}**" if c["best"] else c["text"] for c in row["cells"]),
         row["n"]]
        for row in t["rows"]
    ]  # fmt: skip
    return Table(["method", *t["metrics"], "n"], rows)


def document(ctx: dict) -> Document:
    """The report's content (what report.md renders; the HTML page shows the same content with
    collapsible answers and embedded plots)."""
    paired = Table(
        ["compared with", "metric", "n", "DIT − it [95% CI]", "wins / losses / ties", "verdict"],
        [[r["baseline"], r["metric"], r["n"], r["diff"], r["wlt"], r["verdict"]]
         for r in ctx["paired"]],
    )  # fmt: skip
    sections = [
        Section("What was measured", list(ctx["summary"])),
        Section(
            "DIT versus each baseline (paired, same diffs)",
            [] if ctx["paired"] else ["No paired comparison: DIT or per-diff scores are missing."],
            [paired] if ctx["paired"] else [],
        ),
        Section(
            "Results (mean [95% CI])",
            tables=[_scores(ctx["table"])],
            images=[(name, alt) for alt, name in ctx["plot_files"].items()],
        ),
    ]
    if ctx["checks"]["rows"]:
        sections.append(
            Section(
                "Do the diffs show their behaviour? (diff checks)", tables=[_scores(ctx["checks"])]
            )
        )
    if ctx["families"]["rows"]:
        fam = ctx["families"]
        sections.append(
            Section("By behaviour family (mean [95% CI] over each family's diffs)",
                    tables=[Table(fam["columns"], fam["rows"])])
        )  # fmt: skip
    if ctx["legend"]:
        about = [f"**{x['label']}** ({x['role']}): {x['about']}" for x in ctx["legend"]]
        sections.append(Section("Methods", bullets=about))
    rows = [
        [*([g["diff_id"], g["truth"], g["trigger"]] if i == 0 else ["", "", ""]), r["method"],
         _preview(r["answer"]), r["guess"], ", ".join(r["scores"])]
        for g in ctx["diffs"] for i, r in enumerate(g["rows"])
    ]  # fmt: skip
    columns = ["diff", "truth", "trigger", "method", "answer", "guess", "scores"]
    sections.append(
        Section("Per diff", [] if rows else ["No predictions file."],
                [Table(columns, rows)] if rows else [])
    )  # fmt: skip
    sections.append(
        Section("Environment", bullets=[f"{k}: {v}" for k, v in ctx["versions"].items()])
    )
    if ctx["timings"]:
        timings = Table(["stage", "seconds", "minutes"], [list(t) for t in ctx["timings"]])
        sections.append(Section("Timings (wall clock)", tables=[timings]))
    if ctx["config"]:
        sections.append(Section("Run config", code=ctx["config"]))
    return Document(f"ditkit report: {ctx['title']}", sections)


@functools.cache
def _page() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True)
    env.filters["md"] = inline
    return env.from_string(
        (resources.files("ditkit.reporting") / "templates" / "run_report.html").read_text()
    )


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/report.md and run_dir/report/index.html; return the HTML path."""
    start = time.time()
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("hist_*.png")]:  # histograms of earlier report versions
        stale.unlink()

    plots = {
        "means with 95% intervals": ("means.png", bar_chart(results)),
        "per-diff scores": ("per_diff.png", hit_matrix(results)),
    }
    plots = {alt: (name, data) for alt, (name, data) in plots.items() if data is not None}
    for name, data in plots.values():
        files.write_bytes(out_dir / name, data)

    ctx = {
        "title": run_dir.resolve().name,
        "summary": summary_text(results),
        "table": main_table(results),
        "checks": check_table(results),
        "families": family_table(results),
        "legend": legend(results),
        "paired": paired_rows(results),
        "diffs": diff_rows(results),
        "versions": package_versions(),
        "timings": timing_rows(results.timings, time.time() - start),
        "config": json.dumps(results.config, indent=2, default=str) if results.config else "",
        "plot_files": {alt: name for alt, (name, _) in plots.items()},
    }
    files.write_text(out_dir / "report.md", markdown.render(document(ctx)))

    html_path = out_dir / "index.html"
    page = _page().render(
        **ctx,
        plot_pngs={alt: base64.b64encode(d).decode("ascii") for alt, (_, d) in plots.items()},
        preview=ANSWER_PREVIEW_CHARS,
    )
    files.write_text(html_path, page)
    log.info("report written to %s", html_path)
    return html_path


def text_summary(run_dir: Path) -> str:
    """The printed form of the report's first sections: DIT's paired margins, the scores of
    every method with its role, and what each method is."""
    results = load_results(run_dir)
    lines = [" ".join(p.replace("*", "").replace("`", "") for p in summary_text(results)), ""]
    paired = [r for r in paired_rows(results) if r["metric"] == results.primary_metric()]
    if paired:
        lines.append(f"DIT minus each method on {paired[0]['metric']} (paired, 95% interval):")
        for r in paired:
            lines.append(
                f"  {r['baseline']:34s} {r['diff']:>22s}  W/L/T {r['wlt']:>10s}  {r['verdict']}"
            )
        lines.append("")
    metrics = main_table(results)["metrics"]
    lines.append(
        f"  {'method':34s}{'role':>11s}" + "".join(f"{m:>22s}" for m in metrics) + f"{'n':>6s}"
    )
    for m in results.methods:
        scores = results.scores.get(m, {})
        cells = "".join(f"{score_cell(scores.get(metric)):>22s}" for metric in metrics)
        n = max((s.get("n", 0) for s in scores.values() if isinstance(s, dict)), default=0)
        lines.append(f"  {results.label(m):34s}{ROLE_NAMES[results.role(m)]:>11s}{cells}{n:>6d}")
    lines.append("")
    lines += [f"  {x['label']}: {x['about']}" for x in legend(results)]
    return "\n".join(lines)
