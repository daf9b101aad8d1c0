"""What the sweeps share: a finished run's config, sub-runs that link the run's folders, config
changes, DIT's score, and one summary (JSON, CSV, plot, Markdown) per sweep.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..config import RunConfig, from_dict
from ..errors import DataError
from ..evaluate.runner import summarize_metric
from ..files import read_jsonl, write_bytes, write_json, write_jsonl, write_text
from ..reporting import Document, Section, Table, markdown
from ..reporting.plots import png, pyplot

log = logging.getLogger(__name__)


def finished_run(run_dir: Path) -> RunConfig:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path} is missing: run the data and diffs stages of {run_dir} first")
    return from_dict(json.loads(cfg_path.read_text()), cfg_path)


def data_with_jobs(run_dir: Path, out: Path, jobs: list[dict]) -> None:
    """``out/data``: links to ``run_dir``'s data files, and ``jobs`` as its jobs.jsonl."""
    data = out / "data"
    if (data / "jobs.jsonl").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    for src in (run_dir / "data").iterdir():
        if src.name != "jobs.jsonl" and not (data / src.name).exists():
            (data / src.name).symlink_to(src.resolve(), target_is_directory=src.is_dir())
    write_jsonl(data / "jobs.jsonl", jobs)


def own_score(run_dir: Path, test_ids: set[str], metric: str) -> dict | None:
    """DIT's ``metric`` on ``test_ids`` from ``run_dir``'s own evaluation, or None."""
    path = run_dir / "eval" / "predictions.jsonl"
    if not path.exists():
        return None
    values = [
        float(r["scores"][metric])
        for r in read_jsonl(path)
        if r["method"] == "dit" and r["diff_id"] in test_ids and metric in (r.get("scores") or {})
    ]
    if not values:
        return None
    return {"metric": metric, **summarize_metric(metric, values), "run": str(run_dir)}


def sub_run(run_dir: Path, out: Path, shared: tuple[str, ...]) -> Path:
    """``out`` with symbolic links to ``run_dir``'s ``shared`` folders."""
    for name in shared:
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((run_dir / name).resolve(), target_is_directory=True)
    return out


def with_changes(base: RunConfig, tag: str, **sections: dict) -> RunConfig:
    """``base`` with some keys of some sections changed; only DIT is evaluated."""
    changed = {k: dataclasses.replace(getattr(base, k), **v) for k, v in sections.items()}
    ev = dataclasses.replace(base.eval, methods=["dit"])
    return dataclasses.replace(base, name=f"{base.name}-{tag}", eval=ev, **changed)


def dit_score(out: Path, metric: str) -> dict:
    scores = json.loads((out / "eval" / "scores.json").read_text())
    dit = scores.get("dit", {}).get(metric)
    if dit is None:
        raise DataError(f"{out}/eval/scores.json has no dit {metric}; choose another metric")
    return {"metric": metric, **dit, "run": str(out)}


AXES = {"train_diffs": "training diffs", "test_rank": "rank of the test diffs"}


def interval(v: dict) -> str:
    """``mean [low, high]`` of a summarised metric, two decimals."""
    return f"{v['mean']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"


def write_summary(
    folder: Path, stem: str, rows: list[dict], base: RunConfig, metric: str, x: str
) -> None:
    write_json(folder / f"{stem}.json", {"metric": metric, "rows": rows})
    data = Table(
        [x, "metric", "mean", "ci95_low", "ci95_high", "n"],
        [[r[x], metric, r["mean"], *r["ci95"], r["n"]] for r in rows],
    )
    write_text(folder / f"{stem}.csv", data.to_csv())
    write_bytes(folder / f"{stem}.png", summary_plot(rows, metric, base, x))
    what = {
        "train_diffs": (
            "Data scaling",
            "adapters trained on the first N training diffs of one run (`ditkit scaling`)",
        ),
        "test_rank": (
            "Rank generalisation",
            f"test diffs trained at each rank, read by the adapter trained on rank-"
            f"{base.diffs.rank} diffs (`ditkit ranks`)",
        ),
    }[x]
    shown = Table(
        [AXES[x], f"DIT {metric}", "95% interval"],
        [[r[x], f"{r['mean']:.2f}", f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"] for r in rows],
    )
    section = Section(
        f"{what[0]} ({base.name})",
        [f"DIT {metric} on {rows[0]['n']} held-out diffs; {what[1]}."],
        [shown],
        [(f"{stem}.png", f"score against {AXES[x]}")],
    )
    write_text(folder / f"{stem}.md", markdown.render(Document("", [section])))


def summary_plot(rows: list[dict], metric: str, base: RunConfig, x: str) -> bytes:

    plt = pyplot()
    xs = [r[x] for r in rows]
    y = [r["mean"] for r in rows]
    err = [[m - r["ci95"][0] for m, r in zip(y, rows)], [r["ci95"][1] - m for m, r in zip(y, rows)]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(xs, y, yerr=err, marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(AXES[x])
    ax.set_ylabel(f"DIT {metric}")
    ax.set_title(f"{base.model}, {base.task}")
    ax.grid(alpha=0.3)
    return png(fig)
