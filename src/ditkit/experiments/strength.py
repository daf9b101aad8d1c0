"""Diff strength: `strength_curve` asks whether DIT follows how strongly a diff carries its topic.
It trains RUN's test diffs once, up to the largest budget of rows, keeping a snapshot at every
smaller budget (``RUN/strength/diffs/rows{N}/``), then reads each budget at each read-time
multiplier (``eval.diff_scale``) in ``RUN/strength/rows{N}-x{scale}/``: the run's default methods
(hidden topics: DIT, the base question with and without the trigger, and the gating rates of
held-out questions with the diff's own code, a wrong code and none), one fixed adapter for all.
The summary goes to ``RUN/strength/strength.{json,csv,png,md}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..config import RunConfig
from ..diffs import load_diff
from ..errors import DataError
from ..evaluate.methods import method_info, methods_for
from ..files import write_bytes, write_json, write_text
from ..pipeline import run_pipeline
from ..reporting import Document, Section, Table, markdown
from ..reporting.plots import png, pyplot
from ..rundir import Run
from ..tasks.base import get_task
from ..train_diffs import train_diffs
from .common import (
    data_with_jobs,
    finished_run,
    interval,
)

log = logging.getLogger(__name__)


def strength_curve(
    run_dir: Path,
    budgets: list[int],
    scales: list[float],
    adapter: str | None = None,
    test_diffs: int | None = None,
    metric: str = "alias_match",
) -> list[dict]:
    """Train ``run_dir``'s test diffs at every budget (rows seen) and read each at every scale.

    ``adapter`` reads every point ("shipped", an adapter folder or a run directory; default: the
    run's own). Returns one summary row per (budget, scale).
    """
    run_dir = Path(run_dir)
    base = finished_run(run_dir)
    run = Run(base, run_dir)
    per_step = base.diffs.rows_per_step
    budgets, scales = sorted(set(budgets)), sorted(set(scales))
    if not budgets or any(b < per_step or b % per_step for b in budgets):
        raise DataError(
            f"budgets {budgets} must be multiples of diffs.rows_per_step = {per_step} "
            f"(rows seen per diff per step), e.g. --budgets {4 * per_step},{8 * per_step}"
        )
    if not scales or min(scales) <= 0:
        raise DataError(f"scales must be > 0 (1 = the diffs as trained), got {scales}")
    adapter = adapter or _own_adapter(run_dir, base)
    jobs = run.jobs("test")[:test_diffs]
    if not jobs:
        raise DataError(f"{run_dir}/data/jobs.jsonl has no test jobs: run its data stage first")
    folder = run_dir / "strength"
    steps = {b: b // per_step for b in budgets}
    folders = {b: folder / "diffs" / f"rows{b:05d}" for b in budgets}
    log.info("diff strength: %d test diffs trained up to %d rows", len(jobs), budgets[-1])
    model, tok = run.model_and_tok
    task = run.task
    longest = dataclasses.replace(base.diffs, steps=steps[budgets[-1]])
    train_diffs(model, tok, [task.job(r) for r in jobs], task.training_data(run), longest,
                folders[budgets[-1]], base.system_prompt, task=task,
                snapshots={steps[b]: folders[b] for b in budgets[:-1]})  # fmt: skip
    methods = list(dict.fromkeys(["dit", *task.default_methods]))
    rows = []
    for b in budgets:
        norm = _mean_norm(folders[b], jobs)
        for scale in scales:
            out = folder / f"rows{b:05d}-x{scale:g}"
            cfg = dataclasses.replace(
                base,
                name=f"{base.name}-rows{b}-x{scale:g}",
                diffs=dataclasses.replace(base.diffs, steps=steps[b]),
                dit=dataclasses.replace(base.dit, adapter=adapter),
                # dit_scale 1: DIT reads at the sweep's multiplier, not times the reader's read_scale
                eval=dataclasses.replace(
                    base.eval, methods=methods, diff_scale=scale, dit_scale=1.0
                ),
            )
            rates = _read_point(run_dir, out, jobs, folders[b], cfg, metric)
            rows.append(
                {"rows": b, "scale": scale, "norm": norm * scale, "metric": metric,
                 "by_method": rates}
            )  # fmt: skip
    _write_strength(folder, rows, base, metric, len(jobs), adapter)
    return rows


def _read_point(run_dir, out, jobs, diffs_folder, cfg, metric) -> dict:
    """One (budget, scale) point: a run directory over those diffs, read and scored."""
    data_with_jobs(run_dir, out, jobs)
    link = out / "diffs" / "test"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(diffs_folder.resolve(), target_is_directory=True)
    log.info("diff strength: %s (%s)", cfg.name, out)
    run_pipeline(cfg, out, ["dit", "eval"])
    scores = json.loads((out / "eval" / "scores.json").read_text())
    return {m: v[metric] for m, v in scores.items() if metric in v}


def _own_adapter(run_dir: Path, base: RunConfig) -> str:
    if base.dit.adapter != "train":
        return base.dit.adapter
    if not (run_dir / "dit" / "adapter").is_dir():
        raise DataError(f"{run_dir}/dit/adapter is missing: run its dit stage, or pass --adapter")
    return str(run_dir.resolve())


def _mean_norm(folder: Path, jobs: list[dict]) -> float:
    """Mean over the diffs of each one's total Frobenius norm (all modules)."""
    totals = []
    for j in jobs:
        norms = load_diff(folder / f"{j['diff_id']}.safetensors").norms().values()
        totals.append(sum(v * v for v in norms) ** 0.5)
    return sum(totals) / len(totals)


def _write_strength(
    folder: Path, rows: list[dict], base: RunConfig, metric: str, n: int, adapter: str
) -> None:
    methods = list(dict.fromkeys(m for r in rows for m in r["by_method"]))
    info = method_info(methods_for(get_task(base.task)))
    write_json(
        folder / "strength.json",
        {"metric": metric, "n_diffs": n, "adapter": adapter, "methods": methods, "rows": rows},
    )
    data = Table(
        ["rows", "scale", "norm", "method", "metric", "mean", "ci95_low", "ci95_high", "n"],
        [
            [r["rows"], r["scale"], r["norm"], m, metric, v["mean"], *v["ci95"], v["n"]]
            for r in rows
            for m, v in r["by_method"].items()
        ],
    )
    write_text(folder / "strength.csv", data.to_csv())
    write_bytes(folder / "strength.png", _strength_plot(rows, methods, metric, base))
    shown = Table(
        ["rows", "scale", "norm", *methods],
        [
            [r["rows"], f"{r['scale']:g}", f"{r['norm']:.3g}"]
            + [interval(r["by_method"][m]) if m in r["by_method"] else "-" for m in methods]
            for r in rows
        ],
    )
    section = Section(
        f"Diff strength ({base.name})",
        [
            f"{metric} on {n} held-out diffs, each trained once up to {rows[-1]['rows']} rows "
            "with snapshots at the smaller budgets, and read with every diff multiplied by a "
            f"constant (scale). One adapter reads every point: `{adapter}`. Norm: mean total "
            "Frobenius norm of the diffs times the scale. The columns:"
        ],
        [shown],
        [("strength.png", "rates against training rows and scale")],
        [f"`{m}`: {info[m].label} ({info[m].role}): {info[m].about}" for m in methods if m in info],
    )
    write_text(folder / "strength.md", markdown.render(Document("", [section])))


def _strength_plot(rows: list[dict], methods: list[str], metric: str, base: RunConfig) -> bytes:
    """Left: each method against rows seen, at scale 1 (or the scale nearest 1). Right: DIT
    against how often the diffed model names its topic behind its own trigger, every point."""

    plt = pyplot()
    one = min({r["scale"] for r in rows}, key=lambda s: abs(s - 1.0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in methods:
        pts = [r for r in rows if r["scale"] == one and m in r["by_method"]]
        if pts:
            left.plot(
                [r["rows"] for r in pts], [r["by_method"][m]["mean"] for r in pts], "o-", label=m
            )
    left.set_xscale("log", base=2)
    left.set_xlabel(f"rows seen per diff (scale {one:g})")
    left.set_ylabel(metric)
    left.set_ylim(-0.02, 1.02)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    info = method_info(methods_for(get_task(base.task)))
    # The first diff check (hidden topics: the own trigger) against DIT.
    gate = next((m for m in info if m in methods and info[m].role == "diff_check"), None)
    if gate and "dit" in methods:
        pts = [r for r in rows if gate in r["by_method"] and "dit" in r["by_method"]]
        xs = [r["by_method"][gate]["mean"] for r in pts]
        ys = [r["by_method"]["dit"]["mean"] for r in pts]
        right.scatter(xs, ys)
        for r, x, y in zip(pts, xs, ys):
            right.annotate(f"{r['rows']}x{r['scale']:g}", (x, y), fontsize=7)
        right.plot([0, 1], [0, 1], ":", color="grey")
        right.set_xlabel(f"{info[gate].label} ({metric})")
        right.set_ylabel(f"dit {metric}")
        right.set_xlim(-0.02, 1.02)
        right.set_ylim(-0.02, 1.02)
        right.grid(alpha=0.3)
    fig.suptitle(f"{base.model}, {base.task}: diff strength")
    return png(fig)
