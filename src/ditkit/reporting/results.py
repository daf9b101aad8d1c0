"""What an evaluated run's report says: its results (`load_results`), the tables, the summary
paragraph, the legend, the per-diff rows, timings and versions. `run_report` renders them.

Reads (under the run folder):
  eval/scores.json        {method: {metric: {"mean", "ci95": [lo, hi], "n", ...}}}
  eval/predictions.jsonl  one record per diff and method: diff_id, label, trigger, method,
                          question, answer, guess (may be null), scores {metric: value}
  config.json, timings.json  optional, any JSON objects
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import math
import platform
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, DitkitError
from ..evaluate.methods import ROLES, MethodInfo, method_info, methods_for
from ..evaluate.stats import metric_scale, paired_difference, summarize
from ..files import read_jsonl
from ..tasks.base import DEFAULT_TASK, get_task

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
    # diff_id -> family, for tasks whose jobs have one (the behaviour suite); {} otherwise
    families: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def info(self) -> dict[str, MethodInfo]:
        return task_method_info((self.config or {}).get("task"))

    def about(self, method: str) -> MethodInfo:
        return self.info.get(method) or MethodInfo(method, "", "baseline")

    @functools.cached_property
    def read_scales(self) -> dict[str, str]:
        """``{method: "x1.5"}`` for methods whose rows read the diffs at a multiplier of their
        own (``read_scale``; "mixed" when a resumed run's rows differ)."""
        found: dict[str, set] = {}
        for p in self.predictions:
            found.setdefault(p["method"], set()).add(p.get("read_scale", 1.0))
        return {
            m: "mixed multipliers" if len(v) > 1 else f"x{next(iter(v)):g}"
            for m, v in found.items()
            if v != {1.0}
        }

    def label(self, method: str) -> str:
        scale = self.read_scales.get(method)
        return self.about(method).label + (f" ({scale})" if scale else "")

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

    @functools.cached_property
    def task(self):
        """The run's task, or None when this ditkit does not know it."""
        try:
            return get_task((self.config or {}).get("task") or DEFAULT_TASK)
        except DitkitError:
            return None

    def task_row_metrics(self) -> tuple[str, ...]:
        """The run's task's own per-row metrics (``row_metric_names``), if it has any."""
        return tuple(getattr(self.task, "row_metric_names", ()))

    def primary_metric(self) -> str | None:
        """The task's first text metric (alias_match, rouge_l), else the first metric found."""
        preferred = list(getattr(self.task, "text_metrics", ()))
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
        _families(run_dir / "data" / "jobs.jsonl"),
    )


def _families(jobs_path: Path) -> dict[str, str]:
    """``{diff_id: family}`` from a run's jobs, when they name one; {} otherwise."""
    if not jobs_path.is_file():
        return {}
    try:
        rows = read_jsonl(jobs_path)
    except (DataError, ValueError) as e:  # the report goes on without the family table
        log.warning("%s: %s; no table by family", jobs_path, e)
        return {}
    return {r["diff_id"]: r["family"] for r in rows if "family" in r}


# ---------------------------------------------------------------- tables


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.2f}" if math.isfinite(x) else str(x)


def score_cell(s: Any) -> str:
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
            cells.append({"text": score_cell(s), "best": best_here})
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


def family_table(results: RunResults) -> dict:
    """Per behaviour family (rows): every method's mean [95% interval] on its own first metric
    (the primary one for readers and baselines, ``shows`` for the diff checks). Empty when the
    run's jobs have no families."""
    if not results.families:
        return {"columns": [], "rows": []}
    primary = results.primary_metric()
    # (method, metric) columns: readers and baselines on the primary metric, DIT also on the
    # task's own row metrics (family_match), the diff checks on their own metric.
    extra = results.task_row_metrics()
    cols = []
    for m in results.methods:
        if results.role(m) == "diff_check":
            cols.append((m, next(iter(results.scores.get(m, {})), None)))
            continue
        cols.append((m, primary))
        if m == "dit":
            cols += [(m, k) for k in extra if k in results.scores.get(m, {})]
    cols = [(m, k) for m, k in cols if k]
    per_diff = {(m, k): results.per_diff(m, k) for m, k in cols}
    rows = []
    for family in dict.fromkeys(results.families.values()):
        diffs = {d for d, f in results.families.items() if f == family}
        cells = []
        for m, k in cols:
            values = [v for d, v in per_diff[m, k].items() if d in diffs]
            cells.append(score_cell(summarize(values, **metric_scale(k))) if values else "—")
        n = len(diffs & {d for ds in per_diff.values() for d in ds})
        if n:
            rows.append([family, n, *cells])
    columns = ["family", "n", *(f"{results.label(m)} ({k})" for m, k in cols)]
    return {"columns": columns, "rows": rows}


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
    n_train, first = data.get("n_train", "?"), dit.get("max_train_diffs")
    families = dit.get("train_families") or []
    trained = {
        "train": (f"trained on the first {first} of" if first else "trained on")
        + f" this run's {n_train} training diffs"
        + (f" of the families {', '.join(families)}" if families else ""),
        "shipped": "shipped with ditkit for this task (trained on other diffs)",
    }.get(
        adapter,
        "shipped with ditkit (trained on other diffs)"
        if adapter.startswith("shipped:")
        else f"from {adapter}",
    )
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
    verdict = f"DIT scores {score_cell(dit)} on {metric} (95% interval)."
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
