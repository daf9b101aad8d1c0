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
import functools
import html
import importlib.metadata
import io
import json
import logging
import math
import platform
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ditkit import files
from ditkit.errors import DataError, DitkitError
from ditkit.evaluate.methods import ROLES, MethodInfo, method_info, methods_for
from ditkit.evaluate.stats import metric_scale, paired_difference
from ditkit.tasks.base import DEFAULT_TASK, get_task

log = logging.getLogger(__name__)

VERSION_PACKAGES = ("ditkit", "torch", "transformers", "peft")
ANSWER_PREVIEW_CHARS = 200
ROLE_NAMES = {
    "reader": "reader",
    "baseline": "baseline",
    "oracle": "oracle",
    "diff_check": "diff check",
}


def task_method_info(task_name: str | None) -> dict[str, MethodInfo]:
    """Label, description and role of every row method of the run's task ({} if unknown)."""

    try:
        return method_info(methods_for(get_task(task_name or DEFAULT_TASK)))
    except DitkitError:
        return {}


# ---------------------------------------------------------------- loading


@dataclass
class RunResults:
    """Everything the report shows, as read from a run folder."""

    scores: dict[str, dict[str, dict]]
    predictions: list[dict] = field(default_factory=list)
    config: dict | None = None
    timings: dict | None = None
    paired: dict | None = None  # eval/paired.json: {baseline: {metric: paired difference}}

    @functools.cached_property
    def info(self) -> dict[str, MethodInfo]:
        return task_method_info((self.config or {}).get("task"))

    def about(self, method: str) -> MethodInfo:
        return self.info.get(method) or MethodInfo(method, "", "baseline")

    def label(self, method: str) -> str:
        return self.about(method).label

    def role(self, method: str) -> str:
        return self.about(method).role

    @property
    def methods(self) -> list[str]:
        """Every method, by role (DIT, baselines, oracles, diff checks), then the task's order."""
        found = list(dict.fromkeys([*self.scores, *(p["method"] for p in self.predictions)]))
        known = list(self.info)

        def place(m: str) -> tuple:
            return ROLES.index(self.role(m)), known.index(m) if m in known else len(known)

        return sorted(found, key=place)

    def compared(self) -> list[str]:
        """Methods that name the label (everything but the diff checks)."""
        return [m for m in self.methods if self.role(m) != "diff_check"]

    def primary_metric(self) -> str | None:
        """The task's first text metric (alias_match, rouge_l), else the first metric found."""

        try:
            preferred = list(get_task((self.config or {}).get("task") or DEFAULT_TASK).text_metrics)
        except DitkitError:
            preferred = []
        for m in [*preferred, *self.metrics]:
            if m in self.metrics:
                return m
        return None

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
    for name in ("config.json", "timings.json", "eval/paired.json"):
        path = run_dir / name
        optional[name] = _read_json_object(path) if path.is_file() else None
    return RunResults(
        scores,
        predictions,
        optional["config.json"],
        optional["timings.json"],
        optional["eval/paired.json"],
    )


# ---------------------------------------------------------------- tables


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.2f}" if math.isfinite(x) else str(x)


def _cell(s: Any) -> str:
    """``mean [lo, hi]`` of a stored summary, or "—"."""
    if not isinstance(s, dict) or s.get("mean") is None:
        return "—"
    ci = s.get("ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return f"{_fmt(s['mean'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return _fmt(s["mean"])


def _table(results: RunResults, methods: list[str], bold_best: bool) -> dict:
    """Rows = methods, columns = metrics; with ``bold_best`` the best DIT or baseline mean per
    metric is marked (oracles know the trigger, so they are never marked as competitors)."""
    metrics = results.metrics
    best: dict[str, float] = {}
    for metric in metrics if bold_best else []:
        means = [
            results.scores.get(m, {}).get(metric, {}).get("mean")
            for m in methods
            if results.role(m) in ("reader", "baseline")
            and isinstance(results.scores.get(m, {}).get(metric), dict)
        ]
        means = [x for x in means if isinstance(x, int | float) and math.isfinite(x)]
        if means:
            best[metric] = max(means)
    rows = []
    for method in methods:
        cells = []
        for metric in metrics:
            s = results.scores.get(method, {}).get(metric)
            mean = s.get("mean") if isinstance(s, dict) else None
            competes = results.role(method) in ("reader", "baseline")
            best_here = competes and mean is not None and mean == best.get(metric)
            cells.append({"text": _cell(s), "best": best_here})
        ns = sorted({s["n"] for s in results.scores.get(method, {}).values() if "n" in s})
        rows.append(
            {
                "method": method,
                "label": results.label(method),
                "role": results.role(method),
                "cells": cells,
                "n": "/".join(str(n) for n in ns) or "—",
            }
        )
    used = [i for i, m in enumerate(metrics) if any(r["cells"][i]["text"] != "—" for r in rows)]
    for r in rows:
        r["cells"] = [r["cells"][i] for i in used]
    return {"metrics": [metrics[i] for i in used], "rows": rows}


def main_table(results: RunResults) -> dict:
    """DIT, the baselines and the oracles (marked, never bolded): ``mean [95% interval]``."""
    return _table(results, results.compared(), bold_best=True)


def check_table(results: RunResults) -> dict:
    """The diff checks (gating): how often the diffed model itself names the label."""
    return _table(
        results, [m for m in results.methods if results.role(m) == "diff_check"], bold_best=False
    )


def paired_rows(results: RunResults) -> list[dict]:
    """DIT minus each baseline and oracle, per metric, on the diffs both were scored on:
    from eval/paired.json when the run wrote it, else computed from the predictions."""
    if "dit" not in results.methods:
        return []
    rows = []
    for method in results.compared():
        if results.role(method) == "reader":
            continue
        for metric in results.metrics:
            pd = (results.paired or {}).get(method, {}).get(metric)
            if pd is None:
                dit, other = results.per_diff("dit", metric), results.per_diff(method, metric)
                shared = [d for d in dit if d in other]
                if not shared:
                    continue
                pd = paired_difference(
                    [dit[d] for d in shared], [other[d] for d in shared], **metric_scale(metric)
                )
            lo, hi = pd["ci95"]
            rows.append(
                {
                    "baseline": results.label(method),
                    "role": results.role(method),
                    "metric": metric,
                    "n": pd["n"],
                    "diff": f"{pd['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                    "wlt": f"{pd['wins']} / {pd['losses']} / {pd['ties']}",
                    "verdict": "DIT better" if lo > 0 else "DIT worse" if hi < 0 else "unclear",
                    "raw": pd,
                }
            )
    return rows


def summary_text(results: RunResults) -> list[str]:
    """Sentences on what was measured and what the numbers say, generated from the run."""
    cfg = results.config or {}
    data, dit = cfg.get("data") or {}, cfg.get("dit") or {}
    n_test = len({p["diff_id"] for p in results.predictions}) or data.get("n_test")
    adapter = dit.get("adapter", "train")
    trained = {
        "train": f"trained on this run's {data.get('n_train', '?')} training diffs",
        "shipped": "shipped with ditkit (trained on other topics)",
    }.get(adapter, f"from {adapter}")
    out = [
        f"Task **{cfg.get('task', 'hidden_topic')}**, base model `{cfg.get('model', '?')}`: "
        f"{n_test} held-out weight diffs, each read by the DIT adapter ({trained}). An auditor "
        "has the weights only; methods marked *oracle* also know the diff's secret trigger and "
        "show what is reachable with it, not a competitor. *Diff checks* test the diffs "
        "themselves."
    ]
    metric = results.primary_metric()
    dit = results.scores.get("dit", {}).get(metric or "")
    if not dit:
        return out
    rivals = [
        r
        for r in paired_rows(results)
        if r["metric"] == metric and r["role"] == "baseline" and r["n"]
    ]
    verdict = f"DIT scores {_cell(dit)} on {metric} (95% interval)."
    if rivals:
        closest = min(rivals, key=lambda r: r["raw"]["mean_diff"])
        beaten = [r for r in rivals if r["verdict"] == "DIT better"]
        verdict += (
            f" Paired on the same diffs it is above {len(beaten)} of {len(rivals)} baselines with "
            f"intervals clear of zero; against the closest, {closest['baseline']}, the "
            f"difference is {closest['diff']}."
        )
    n = dit.get("n") or 0
    if n and n < 30:
        verdict += (
            f" With n = {n} only large differences are visible: an interval spans about "
            f"±{0.98 / math.sqrt(n):.2f} around a rate of 0.5."
        )
    return [*out, verdict]


def legend(results: RunResults) -> list[dict]:
    """One entry per method shown (rows of one method, such as the diff checks, share one):
    labels, role and what it does."""
    entries: dict[str, dict] = {}
    for m in results.methods:
        info = results.about(m)
        if info.about:
            entry = entries.setdefault(
                info.about, {"labels": [], "role": ROLE_NAMES[info.role], "about": info.about}
            )
            entry["labels"].append(info.label)
    return [{**e, "label": " / ".join(e["labels"])} for e in entries.values()]


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
                        "method": results.label(p["method"]),
                        "question": _text(p.get("question")),
                        "answer": _text(p.get("answer")),
                        "guess": _text(p.get("guess")),
                        "scores": [f"{k}={_fmt(v)}" for k, v in (p.get("scores") or {}).items()],
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


def timing_rows(timings: dict | None, report_seconds: float) -> list[tuple[str, str, str]]:
    """``(stage, seconds, minutes)`` per stage in timings.json (seconds), then this report."""
    rows = []
    for stage, value in (timings or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            rows.append((stage, f"{value:,.1f}", f"{value / 60:.1f}"))
    if "report" not in (timings or {}):
        rows.append(("report", f"{report_seconds:.1f}", f"{report_seconds / 60:.1f}"))
    total = sum(float(r[1].replace(",", "")) for r in rows)
    return [*rows, ("total", f"{total:,.1f}", f"{total / 60:.1f}")]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ---------------------------------------------------------------- plots

_ROLE_COLOURS = {"reader": "#c0392b", "baseline": "#5d7fa3", "oracle": "#b8b8b8"}


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
    """Mean and 95% interval of DIT, the baselines and the oracles (grey, hatched) on the main
    metric and, when present, retrieval@5: horizontal bars, labels readable."""
    metrics = [m for m in (results.primary_metric(), "retrieval_at_5") if m in results.metrics]
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        return None
    plt = pyplot()
    methods = results.compared()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.2 * len(metrics), 0.45 * len(methods) + 1.2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        shown = [m for m in methods if isinstance(results.scores.get(m, {}).get(metric), dict)]
        stats = [results.scores[m][metric] for m in shown]
        means = [float(s["mean"]) for s in stats]
        lo = [max(mu - float((s.get("ci95") or (mu, mu))[0]), 0.0) for mu, s in zip(means, stats)]
        hi = [max(float((s.get("ci95") or (mu, mu))[1]) - mu, 0.0) for mu, s in zip(means, stats)]
        ys = list(range(len(shown)))[::-1]
        roles = [results.role(m) for m in shown]
        ax.barh(
            ys,
            means,
            xerr=[lo, hi],
            capsize=3,
            color=[_ROLE_COLOURS.get(r, "#5d7fa3") for r in roles],
        )
        for y, r, mu in zip(ys, roles, means):
            if r == "oracle":
                ax.barh([y], [mu], color="none", edgecolor="#777", hatch="//")
        ax.set_yticks(ys, [results.label(m) for m in shown], fontsize=9)
        ax.set_xlabel(f"{metric} (mean, 95% interval)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def hit_matrix(results: RunResults) -> bytes | None:
    """Diffs x methods on the main metric: per-diff hits and misses (0/1 scores) or a colour
    scale (continuous scores), diff checks included, so wins and losses can be read off."""
    metric = results.primary_metric()
    if metric is None:
        return None
    methods = [m for m in results.methods if results.per_diff(m, metric)]
    per = {m: results.per_diff(m, metric) for m in methods}
    diffs = list(dict.fromkeys(d for m in methods for d in per[m]))
    if not diffs:
        return None
    plt = pyplot()
    grid = [[per[m].get(d, math.nan) for m in methods] for d in diffs]
    fig, ax = plt.subplots(figsize=(0.75 * len(methods) + 3.0, min(0.22 * len(diffs) + 1.8, 24)))
    image = ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, interpolation="nearest")
    ax.set_xticks(range(len(methods)), [results.label(m) for m in methods], rotation=35, ha="right")
    labels = {
        p["diff_id"]: str(p.get("label") or p.get("topic") or "") for p in results.predictions
    }
    ax.set_yticks(range(len(diffs)), [labels.get(d) or str(d) for d in diffs], fontsize=7)
    ax.set_title(f"{metric} per diff (dark: named)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return png(fig)


# ---------------------------------------------------------------- rendering


def _md_cell(x: Any) -> str:
    text = html.escape(str(x), quote=False).replace("|", "\\|")
    return " ".join(text.split())


def _md_preview(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ANSWER_PREVIEW_CHARS:
        text = text[:ANSWER_PREVIEW_CHARS] + "…"
    return _md_cell(text)


def _md_table(t: dict) -> list[str]:
    lines = ["| method | " + " | ".join(_md_cell(m) for m in t["metrics"]) + " | n |"]
    lines.append("|---" * (len(t["metrics"]) + 2) + "|")
    for row in t["rows"]:
        cells = [f"**{c['text']}**" if c["best"] else c["text"] for c in row["cells"]]
        lines.append(f"| {_md_cell(row['label'])} | " + " | ".join(cells) + f" | {row['n']} |")
    return [*lines, ""]


def render_markdown(ctx: dict) -> str:
    lines = [f"# ditkit report: {ctx['title']}", "", "## What was measured", ""]
    lines += [*ctx["summary"], ""]
    lines += ["## DIT versus each baseline (paired, same diffs)", ""]
    if ctx["paired"]:
        lines += [
            "| compared with | metric | n | DIT − it [95% CI] | wins / losses / ties | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for r in ctx["paired"]:
            lines.append(
                f"| {_md_cell(r['baseline'])} | {_md_cell(r['metric'])} | {r['n']} | "
                f"{r['diff']} | {r['wlt']} | {r['verdict']} |"
            )
    else:
        lines.append("No paired comparison: DIT or per-diff scores are missing.")
    lines += ["", "## Results (mean [95% CI])", ""]
    lines += _md_table(ctx["table"])
    if ctx["checks"]["rows"]:
        lines += ["## Do the diffs show their behaviour? (diff checks)", ""]
        lines += _md_table(ctx["checks"])
    if ctx["legend"]:
        lines += ["### Methods", ""]
        lines += [
            f"- **{_md_cell(x['label'])}** ({x['role']}): {x['about']}" for x in ctx["legend"]
        ]
        lines.append("")
    for alt, name in ctx["plot_files"].items():
        lines += [f"![{alt}]({name})", ""]

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
                    _md_cell(", ".join(r["scores"])),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No predictions file.")
    lines.append("")

    lines += ["## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in ctx["versions"].items()]
    lines.append("")
    if ctx["timings"]:
        lines += ["## Timings (wall clock)", "", "| stage | seconds | minutes |", "|---|---|---|"]
        lines += [f"| {_md_cell(k)} | {s} | {m} |" for k, s, m in ctx["timings"]]
        lines.append("")
    if ctx["config"]:
        lines += ["## Run config", "", "```json", ctx["config"], "```", ""]
    return "\n".join(lines)


def _md_inline(text: str) -> Markup:
    """The summary's Markdown emphasis as HTML (the text is escaped first)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", out))


_ENV = jinja2.Environment(autoescape=True)
_ENV.filters["md"] = _md_inline
_HTML = _ENV.from_string(
    """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ditkit report: {{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1180px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
  border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f3f4f6; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; background: #fdf1ee; }
tr.reader td:first-child { font-weight: 700; }
tr.oracle td { color: #666; font-style: italic; }
table.diffs { table-layout: fixed; width: 100%; }
table.diffs td { overflow-wrap: anywhere; }
table.diffs td.scores { font-size: 12px; white-space: normal; }
.pre { white-space: pre-wrap; }
.muted { color: #777; }
.lead { font-size: 15px; max-width: 60rem; }
.better { color: #1e7b34; } .worse { color: #b03a2e; }
img { max-width: 100%; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: 12px; }
details summary { cursor: pointer; }
</style></head>
<body>
<h1>ditkit report: {{ title }}</h1>
<h2>What was measured</h2>
{% for p in summary %}<p class="lead">{{ p | md }}</p>
{% endfor %}

<h2>DIT versus each baseline <span class="muted">(paired, same diffs)</span></h2>
{% if paired %}<table class="paired">
<thead><tr><th>compared with</th><th>metric</th><th>n</th><th>DIT − it [95% CI]</th>
<th>wins / losses / ties</th><th>verdict</th></tr></thead><tbody>
{% for r in paired %}<tr class="{{ r.role }}"><td>{{ r.baseline }}</td><td>{{ r.metric }}</td>
<td class="num">{{ r.n }}</td><td class="num">{{ r.diff }}</td><td class="num">{{ r.wlt }}</td>
<td class="{{ 'better' if r.verdict == 'DIT better' else 'worse' if r.verdict == 'DIT worse' }}">
{{- r.verdict }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="muted">No paired comparison: DIT or per-diff scores are missing.</p>{% endif %}

{% macro scores_table(t, cls) %}<table class="{{ cls }}">
<thead><tr><th>method</th>{% for m in t.metrics %}<th>{{ m }}</th>{% endfor %}<th>n</th></tr>
</thead><tbody>
{% for row in t.rows %}<tr class="{{ row.role }}" id="m-{{ row.method }}"><td>{{ row.label }}</td>
{% for c in row.cells %}<td class="num{{ ' best' if c.best }}">{{ c.text }}</td>
{% endfor %}<td class="num">{{ row.n }}</td></tr>
{% endfor %}</tbody></table>{% endmacro %}

<h2>Results <span class="muted">(mean [95% CI]; bold: best without the trigger)</span></h2>
{{ scores_table(table, "results") }}
{% if checks.rows %}<h2>Do the diffs show their behaviour? <span class="muted">(diff checks)</span></h2>
{{ scores_table(checks, "checks") }}{% endif %}
{% if legend %}<h3>Methods</h3><ul>
{% for x in legend %}<li><strong>{{ x.label }}</strong> <span class="muted">({{ x.role }})</span>: {{ x.about }}</li>
{% endfor %}</ul>{% endif %}
{% for alt, png in plot_pngs.items() %}
<img alt="{{ alt }}" src="data:image/png;base64,{{ png }}">
{% endfor %}

<h2>Per diff</h2>
{% if diffs %}<table class="diffs">
<colgroup><col style="width:8%"><col style="width:11%"><col style="width:11%">
<col style="width:13%"><col style="width:29%"><col style="width:13%"><col style="width:15%">
</colgroup>
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
<td>{{ r.guess }}</td><td class="scores">{% for sc in r.scores %}{{ sc }}<br>{% endfor %}</td></tr>
{% endfor %}{% endfor %}</tbody></table>
{% else %}<p class="muted">No predictions file.</p>{% endif %}

<h2>Environment</h2>
<table>{% for k, v in versions.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}
</table>
{% if timings %}<h2>Timings <span class="muted">(wall clock)</span></h2>
<table><thead><tr><th>stage</th><th>seconds</th><th>minutes</th></tr></thead>
{% for k, sec, mins in timings %}<tr><th>{{ k }}</th><td class="num">{{ sec }}</td>
<td class="num">{{ mins }}</td></tr>{% endfor %}
</table>{% endif %}
{% if config %}<h2>Run config</h2>
<pre>{{ config }}</pre>{% endif %}
</body></html>
"""
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
        "legend": legend(results),
        "paired": paired_rows(results),
        "diffs": diff_rows(results),
        "versions": package_versions(),
        "timings": timing_rows(results.timings, time.time() - start),
        "config": json.dumps(results.config, indent=2, default=str) if results.config else "",
        "plot_files": {alt: name for alt, (name, _) in plots.items()},
    }
    files.write_text(out_dir / "report.md", render_markdown(ctx))

    html_path = out_dir / "index.html"
    page = _HTML.render(
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
        cells = "".join(f"{_cell(scores.get(metric)):>22s}" for metric in metrics)
        n = max((s.get("n", 0) for s in scores.values() if isinstance(s, dict)), default=0)
        lines.append(f"  {results.label(m):34s}{ROLE_NAMES[results.role(m)]:>11s}{cells}{n:>6d}")
    lines.append("")
    lines += [f"  {x['label']}: {x['about']}" for x in legend(results)]
    return "\n".join(lines)
