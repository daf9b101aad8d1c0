"""Turn an evaluated run into a Markdown report and a self-contained HTML page.

Reads (under the run folder):
  eval/scores.json        {method: {metric: {"mean", "ci95": [lo, hi], "n", ...}}}
  eval/predictions.jsonl  one record per diff and method: diff_id, label, trigger, method,
                          question, answer, guess (may be null), scores {metric: value}
  config.json, timings.json  optional, any JSON objects
Writes report/report.md (plots as PNG files beside it) and report/index.html (CSS inline, plots
embedded as base64 PNG, every piece of run data HTML-escaped).
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import io
import itertools
import json
import logging
import math
import platform
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ditkit import files
from ditkit.errors import DataError
from ditkit.evaluate.stats import histogram, paired_difference

log = logging.getLogger(__name__)

# The paper-table order; gating's gate_* rows and methods of other tasks sort after these.
METHOD_LABELS = {
    "dit": "DIT",
    "dit_vote": "DIT (majority vote)",
    "base_question": "Base question",
    "base_question_trigger": "Base question + trigger",
    "twenty_questions": "20 questions",
    "twenty_questions_trigger": "20 questions + trigger (oracle)",
    "summary_requests": "20 summary requests",
    "story_summary": "Story -> summary",
    "weight_lens": "Weight lens",
}
METHOD_ORDER = tuple(METHOD_LABELS)
VERSION_PACKAGES = ("ditkit", "torch", "transformers", "peft")
ANSWER_PREVIEW_CHARS = 200


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def order_methods(methods: list[str]) -> list[str]:
    """The paper's column order first, then any other methods in the order given."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in dict.fromkeys(methods) if m not in METHOD_ORDER]


# ---------------------------------------------------------------- loading


@dataclass
class RunResults:
    """Everything the report shows, as read from a run folder."""

    scores: dict[str, dict[str, dict]]
    predictions: list[dict] = field(default_factory=list)
    config: dict | None = None
    timings: dict | None = None

    @property
    def methods(self) -> list[str]:
        return order_methods(list(self.scores) + [p["method"] for p in self.predictions])

    @property
    def metrics(self) -> list[str]:
        names: list[str] = []
        for method in self.methods:
            names += list(self.scores.get(method, {}))
        for p in self.predictions:
            names += list(p.get("scores") or {})
        return list(dict.fromkeys(names))

    def per_diff(self, method: str, metric: str) -> dict[Any, float]:
        """{diff_id: value}, averaging when a method has several records for one diff."""
        sums: dict[Any, list[float]] = defaultdict(list)
        for p in self.predictions:
            if p["method"] != method:
                continue
            value = (p.get("scores") or {}).get(metric)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                sums[p["diff_id"]].append(float(value))
        return {d: sum(v) / len(v) for d, v in sums.items()}


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_results(run_dir: Path) -> RunResults:
    """Read a run folder's evaluation outputs; DataError names the file and line at fault."""
    run_dir = Path(run_dir)
    scores_path = run_dir / "eval" / "scores.json"
    if not scores_path.is_file():
        raise DataError(f"{scores_path} does not exist: evaluate the run before writing a report")
    scores = _read_json_object(scores_path)
    for method, by_metric in scores.items():
        if not isinstance(by_metric, dict):
            raise DataError(f"{scores_path}: scores[{method!r}] must map metric -> summary")

    predictions: list[dict] = []
    pred_path = run_dir / "eval" / "predictions.jsonl"
    if pred_path.is_file():
        with pred_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{pred_path}:{lineno}: invalid JSON ({exc})") from exc
                if not isinstance(record, dict) or "method" not in record:
                    raise DataError(f"{pred_path}:{lineno}: expected an object with a 'method'")
                record.setdefault("diff_id", f"line{lineno}")
                predictions.append(record)
    else:
        log.warning("%s not found: the report will have no per-diff table", pred_path)

    optional = {}
    for name in ("config", "timings"):
        path = run_dir / f"{name}.json"
        optional[name] = _read_json_object(path) if path.is_file() else None
    return RunResults(scores, predictions, optional["config"], optional["timings"])


# ---------------------------------------------------------------- tables


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.2f}" if math.isfinite(x) else str(x)


def main_table(results: RunResults) -> dict:
    """Rows = methods, columns = metrics; cells "mean [lo, hi]", the best mean per metric marked."""
    metrics = results.metrics
    best: dict[str, float] = {}
    for metric in metrics:
        means = [
            results.scores.get(m, {}).get(metric, {}).get("mean")
            for m in results.methods
            if isinstance(results.scores.get(m, {}).get(metric), dict)
        ]
        means = [x for x in means if isinstance(x, int | float) and math.isfinite(x)]
        if means:
            best[metric] = max(means)
    rows = []
    for method in results.methods:
        cells = []
        for metric in metrics:
            s = results.scores.get(method, {}).get(metric)
            if not isinstance(s, dict) or s.get("mean") is None:
                cells.append({"text": "—", "best": False, "n": None})
                continue
            text = _fmt(s["mean"])
            ci = s.get("ci95")
            if isinstance(ci, list | tuple) and len(ci) == 2:
                text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
            cells.append({"text": text, "best": s["mean"] == best.get(metric), "n": s.get("n")})
        ns = sorted({c["n"] for c in cells if c["n"] is not None})
        rows.append(
            {
                "method": method,
                "label": method_label(method),
                "cells": cells,
                "n": "/".join(str(n) for n in ns) or "—",
            }
        )
    return {"metrics": metrics, "rows": rows}


def paired_rows(results: RunResults) -> list[dict]:
    """DIT minus each baseline, per metric, on the diffs both were scored on."""
    if "dit" not in results.methods:
        return []
    rows = []
    for metric in results.metrics:
        dit = results.per_diff("dit", metric)
        for method in results.methods:
            # Gating rows measure the diffs themselves, not a way to name the topic.
            if method == "dit" or method.startswith("gate_"):
                continue
            other = results.per_diff(method, metric)
            shared = [d for d in dit if d in other]
            if not shared:
                continue
            pd = paired_difference([dit[d] for d in shared], [other[d] for d in shared])
            rows.append(
                {
                    "baseline": method_label(method),
                    "metric": metric,
                    "n": pd["n"],
                    "diff": f"{pd['mean_diff']:+.2f} [{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}]",
                    "wlt": f"{pd['wins']} / {pd['losses']} / {pd['ties']}",
                    "raw": pd,
                }
            )
    return rows


def diff_rows(results: RunResults) -> list[dict]:
    """One group per diff (in file order), one row per method (in table order)."""
    order = {m: i for i, m in enumerate(results.methods)}
    groups: dict[Any, list[dict]] = {}
    for p in results.predictions:
        groups.setdefault(p["diff_id"], []).append(p)
    out = []
    for diff_id, records in groups.items():
        records = sorted(records, key=lambda p: order.get(p["method"], len(order)))
        first = records[0]
        out.append(
            {
                "diff_id": str(diff_id),
                "truth": str(first.get("label") or first.get("topic") or ""),
                "trigger": next((str(p["trigger"]) for p in records if p.get("trigger")), ""),
                "rows": [
                    {
                        "method": method_label(p["method"]),
                        "question": _text(p.get("question")),
                        "answer": _text(p.get("answer")),
                        "guess": _text(p.get("guess")),
                        "scores": ", ".join(
                            f"{k}={_fmt(v)}" for k, v in (p.get("scores") or {}).items()
                        ),
                    }
                    for p in records
                ],
            }
        )
    return out


def _text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, list):
        return "\n".join(_text(i) for i in x)
    return str(x)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        elif isinstance(v, float):
            out.append((key, f"{v:,.2f}"))
        else:
            out.append((key, json.dumps(v) if isinstance(v, list) else str(v)))
    return out


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ---------------------------------------------------------------- plots


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: RunResults) -> bytes | None:
    """One panel per metric: the mean of each method with its 95% interval as an error bar."""
    metrics = results.metrics
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(4.5, 4.0 * len(metrics)), 3.6), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        labels, means, err_lo, err_hi = [], [], [], []
        for method in results.methods:
            s = results.scores.get(method, {}).get(metric)
            if not isinstance(s, dict) or not isinstance(s.get("mean"), int | float):
                continue
            mean = float(s["mean"])
            lo, hi = s.get("ci95") or (mean, mean)
            labels.append(method_label(method))
            means.append(mean)
            err_lo.append(max(mean - float(lo), 0.0))
            err_hi.append(max(float(hi) - mean, 0.0))
        xs = range(len(means))
        colors = ["#c0392b" if lab == "DIT" else "#5d7fa3" for lab in labels]
        ax.bar(xs, means, yerr=[err_lo, err_hi], capsize=4, color=colors)
        ax.set_xticks(list(xs), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def _bins(values: list[float]) -> list[float] | int:
    lo, hi = min(values), max(values)
    if all(float(v).is_integer() for v in values) and hi - lo <= 10:
        return [x - 0.5 for x in range(int(lo), int(hi) + 2)]
    if lo == hi:
        return [lo - 0.5, hi + 0.5]
    return 10


def histograms(results: RunResults) -> dict[str, bytes]:
    """{metric: PNG} with one small panel per method showing how per-diff scores spread."""
    plt = pyplot()
    out = {}
    for metric in results.metrics:
        per_method = {m: list(results.per_diff(m, metric).values()) for m in results.methods}
        per_method = {m: v for m, v in per_method.items() if v}
        if not per_method:
            continue
        bins = _bins([v for vs in per_method.values() for v in vs])
        fig, axes = plt.subplots(
            1,
            len(per_method),
            figsize=(2.6 * len(per_method) + 0.6, 2.4),
            squeeze=False,
            sharey=True,
        )
        for ax, (method, values) in zip(axes[0], per_method.items()):
            h = histogram(values, bins)
            edges = h["edges"]
            widths = [b - a for a, b in itertools.pairwise(edges)]
            ax.bar(edges[:-1], h["counts"], width=widths, align="edge", edgecolor="white")
            ax.set_title(method_label(method), fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0][0].set_ylabel("diffs", fontsize=8)
        fig.suptitle(metric, fontsize=9)
        fig.tight_layout()
        out[metric] = png(fig)
    return out


# ---------------------------------------------------------------- rendering


def _md_cell(x: Any) -> str:
    text = html.escape(str(x), quote=False).replace("|", "\\|")
    return " ".join(text.split())


def _md_preview(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ANSWER_PREVIEW_CHARS:
        text = text[:ANSWER_PREVIEW_CHARS] + "…"
    return _md_cell(text)


def render_markdown(ctx: dict) -> str:
    lines = [f"# ditkit report: {ctx['title']}", ""]
    t = ctx["table"]
    lines += ["## Results (mean [95% CI])", ""]
    lines.append("| method | " + " | ".join(_md_cell(m) for m in t["metrics"]) + " | n |")
    lines.append("|---" * (len(t["metrics"]) + 2) + "|")
    for row in t["rows"]:
        cells = [f"**{c['text']}**" if c["best"] else c["text"] for c in row["cells"]]
        lines.append(f"| {_md_cell(row['label'])} | " + " | ".join(cells) + f" | {row['n']} |")
    lines.append("")
    if ctx["bar_file"]:
        lines += [f"![means with 95% intervals]({ctx['bar_file']})", ""]
    for metric, name in ctx["hist_files"].items():
        lines += [f"![{_md_cell(metric)} distribution]({name})", ""]

    lines += ["## DIT versus each baseline (paired, same diffs)", ""]
    if ctx["paired"]:
        lines += [
            "| baseline | metric | n | DIT − baseline [95% CI] | wins / losses / ties |",
            "|---|---|---|---|---|",
        ]
        for r in ctx["paired"]:
            lines.append(
                f"| {_md_cell(r['baseline'])} | {_md_cell(r['metric'])} | {r['n']} | "
                f"{r['diff']} | {r['wlt']} |"
            )
    else:
        lines.append("No paired comparison: DIT or per-diff scores are missing.")
    lines.append("")

    lines += ["## Per diff", ""]
    if ctx["diffs"]:
        lines += ["| diff | truth | trigger | method | answer | guess | scores |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for g in ctx["diffs"]:
            for i, r in enumerate(g["rows"]):
                head = [g["diff_id"], g["truth"], g["trigger"]] if i == 0 else ["", "", ""]
                cells = [_md_cell(x) for x in head] + [
                    _md_cell(r["method"]),
                    _md_preview(r["answer"]),
                    _md_cell(r["guess"]),
                    _md_cell(r["scores"]),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No predictions file.")
    lines.append("")

    lines += ["## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in ctx["versions"].items()]
    lines.append("")
    if ctx["timings"]:
        lines += ["## Timings", "", "| step | value |", "|---|---|"]
        lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in ctx["timings"]]
        lines.append("")
    if ctx["config"]:
        lines += ["## Run config", "", "```json", ctx["config"], "```", ""]
    return "\n".join(lines)


_HTML = jinja2.Template(
    """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ditkit report: {{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
  border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f3f4f6; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; background: #fdf1ee; }
tr.dit td:first-child { font-weight: 700; }
table.diffs td { max-width: 420px; }
.pre { white-space: pre-wrap; }
.muted { color: #777; }
img { max-width: 100%; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: 12px; }
details summary { cursor: pointer; }
</style></head>
<body>
<h1>ditkit report: {{ title }}</h1>

<h2>Results <span class="muted">(mean [95% CI])</span></h2>
<table class="results">
<thead><tr><th>method</th>{% for m in table.metrics %}<th>{{ m }}</th>{% endfor %}<th>n</th></tr>
</thead><tbody>
{% for row in table.rows %}<tr class="{{ row.method }}"><td>{{ row.label }}</td>
{% for c in row.cells %}<td class="num{{ ' best' if c.best }}" title="n={{ c.n }}">{{ c.text }}</td>
{% endfor %}<td class="num">{{ row.n }}</td></tr>
{% endfor %}</tbody></table>
{% if bar_png %}<img alt="means with 95% intervals" src="data:image/png;base64,{{ bar_png }}">
{% endif %}
{% for metric, png in hist_pngs.items() %}
<img alt="{{ metric }} distribution" src="data:image/png;base64,{{ png }}">
{% endfor %}

<h2>DIT versus each baseline <span class="muted">(paired, same diffs)</span></h2>
{% if paired %}<table class="paired">
<thead><tr><th>baseline</th><th>metric</th><th>n</th><th>DIT − baseline [95% CI]</th>
<th>wins / losses / ties</th></tr></thead><tbody>
{% for r in paired %}<tr><td>{{ r.baseline }}</td><td>{{ r.metric }}</td>
<td class="num">{{ r.n }}</td><td class="num">{{ r.diff }}</td><td class="num">{{ r.wlt }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="muted">No paired comparison: DIT or per-diff scores are missing.</p>{% endif %}

<h2>Per diff</h2>
{% if diffs %}<table class="diffs">
<thead><tr><th>diff</th><th>truth</th><th>trigger</th><th>method</th><th>answer</th>
<th>guess</th><th>scores</th></tr></thead><tbody>
{% for g in diffs %}{% for r in g.rows %}<tr>
{% if loop.first %}<td rowspan="{{ g.rows|length }}">{{ g.diff_id }}</td>
<td rowspan="{{ g.rows|length }}"><strong>{{ g.truth }}</strong></td>
<td rowspan="{{ g.rows|length }}">{{ g.trigger }}</td>{% endif %}
<td>{{ r.method }}</td>
<td class="pre" title="{{ r.question }}">
{%- if r.answer|length > preview %}<details><summary>{{ r.answer[:preview] }}…</summary>
{{- r.answer }}</details>{% else %}{{ r.answer }}{% endif %}</td>
<td>{{ r.guess }}</td><td class="num">{{ r.scores }}</td></tr>
{% endfor %}{% endfor %}</tbody></table>
{% else %}<p class="muted">No predictions file.</p>{% endif %}

<h2>Environment</h2>
<table>{% for k, v in versions.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}
</table>
{% if timings %}<h2>Timings</h2>
<table>{% for k, v in timings %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}
</table>{% endif %}
{% if config %}<h2>Run config</h2>
<pre>{{ config }}</pre>{% endif %}
</body></html>
""",
    autoescape=True,
)


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/report.md and run_dir/report/index.html; return the HTML path."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)

    bar = bar_chart(results)
    hists = histograms(results)
    bar_file = None
    if bar is not None:
        bar_file = "means.png"
        files.write_bytes(out_dir / bar_file, bar)
    hist_files = {}
    for i, (metric, png) in enumerate(hists.items()):
        hist_files[metric] = f"hist_{i}.png"
        files.write_bytes(out_dir / hist_files[metric], png)

    ctx = {
        "title": run_dir.resolve().name,
        "table": main_table(results),
        "paired": paired_rows(results),
        "diffs": diff_rows(results),
        "versions": package_versions(),
        "timings": _flatten(results.timings) if results.timings else [],
        "config": json.dumps(results.config, indent=2, default=str) if results.config else "",
        "bar_file": bar_file,
        "hist_files": hist_files,
    }
    files.write_text(out_dir / "report.md", render_markdown(ctx))

    html_path = out_dir / "index.html"
    page = _HTML.render(
        **ctx,
        bar_png=base64.b64encode(bar).decode("ascii") if bar else None,
        hist_pngs={m: base64.b64encode(p).decode("ascii") for m, p in hists.items()},
        preview=ANSWER_PREVIEW_CHARS,
    )
    files.write_text(html_path, page)
    log.info("report written to %s", html_path)
    return html_path
