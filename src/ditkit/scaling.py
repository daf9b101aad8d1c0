"""The data-scaling experiment: one test set read by DIT adapters trained on 2^k training diffs.

`data_scaling` takes a finished run (its data and diffs stages done; preset ``data-scaling``)
and, for every size, makes ``RUN/scaling/n{size}/``: a run directory that shares RUN's data and
diffs (symbolic links), trains an adapter on the first ``size`` training diffs
(``dit.max_train_diffs``) and evaluates it. Each size resumes like any run. The summary goes to
``RUN/scaling/scaling.json`` and ``.csv``, a plot of score against training diffs to
``scaling.png``, and a report section to ``scaling.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path

from .config import RunConfig, from_dict
from .errors import DataError
from .files import write_bytes, write_json, write_text
from .pipeline import run_pipeline

log = logging.getLogger(__name__)


def default_sizes(n_train: int) -> list[int]:
    """Powers of two up to ``n_train``, plus ``n_train`` itself."""
    sizes, k = [], 1
    while k < n_train:
        sizes.append(k)
        k *= 2
    return [*[s for s in sizes if s >= 4], n_train]


def data_scaling(
    run_dir: Path, sizes: list[int] | None = None, metric: str = "alias_match"
) -> list[dict]:
    """Train and evaluate one adapter per size on ``run_dir``'s diffs; returns the summary rows."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path} is missing: run the data and diffs stages of {run_dir} first")
    base = from_dict(json.loads(cfg_path.read_text()), cfg_path)
    if base.dit.adapter != "train":
        raise DataError(f"{run_dir} reads a given adapter (dit.adapter); scaling trains its own")
    n_train = len(list((run_dir / "diffs" / "train").glob("*.safetensors")))
    if n_train == 0:
        raise DataError(f"{run_dir}/diffs/train holds no diffs: run its diffs stage first")
    sizes = sorted(set(sizes or default_sizes(n_train)))
    if sizes[-1] > n_train or sizes[0] < 1:
        raise DataError(f"sizes must be between 1 and the {n_train} training diffs of {run_dir}")
    rows = []
    for size in sizes:
        out = run_dir / "scaling" / f"n{size:05d}"
        out.mkdir(parents=True, exist_ok=True)
        for shared in ("data", "diffs"):
            link = out / shared
            if not link.exists():
                link.symlink_to((run_dir / shared).resolve(), target_is_directory=True)
        cfg = _sized(base, size)
        log.info("data scaling: adapter on %d training diffs (%s)", size, out)
        run_pipeline(cfg, out, ["dit", "eval"])
        scores = json.loads((out / "eval" / "scores.json").read_text())
        dit = scores.get("dit", {}).get(metric)
        if dit is None:
            raise DataError(f"{out}/eval/scores.json has no dit {metric}; choose another metric")
        rows.append({"train_diffs": size, "metric": metric, **dit, "run": str(out)})
    _write_summary(run_dir / "scaling", rows, base, metric)
    return rows


def _sized(base: RunConfig, size: int) -> RunConfig:
    dit = dataclasses.replace(base.dit, max_train_diffs=size)
    ev = dataclasses.replace(base.eval, methods=["dit"])
    return dataclasses.replace(base, name=f"{base.name}-n{size}", dit=dit, eval=ev)


def _write_summary(folder: Path, rows: list[dict], base: RunConfig, metric: str) -> None:
    write_json(folder / "scaling.json", {"metric": metric, "rows": rows})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["train_diffs", "metric", "mean", "ci95_low", "ci95_high", "n"])
    for r in rows:
        w.writerow([r["train_diffs"], metric, r["mean"], *r["ci95"], r["n"]])
    write_text(folder / "scaling.csv", buf.getvalue())
    write_bytes(folder / "scaling.png", _plot(rows, metric, base))
    lines = [
        f"## Data scaling ({base.name})",
        "",
        f"DIT {metric} on the same {rows[0]['n']} held-out diffs, adapters trained on the first "
        "N training diffs of one run (`ditkit scaling`).",
        "",
        f"| training diffs | DIT {metric} | 95% interval |",
        "|---|---|---|",
        *[
            f"| {r['train_diffs']} | {r['mean']:.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] |"
            for r in rows
        ],
        "",
        "![score against training diffs](scaling.png)",
        "",
    ]
    write_text(folder / "scaling.md", "\n".join(lines))


def _plot(rows: list[dict], metric: str, base: RunConfig) -> bytes:
    from .report import png, pyplot

    plt = pyplot()
    x = [r["train_diffs"] for r in rows]
    y = [r["mean"] for r in rows]
    err = [[m - r["ci95"][0] for m, r in zip(y, rows)], [r["ci95"][1] - m for m, r in zip(y, rows)]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training diffs")
    ax.set_ylabel(f"DIT {metric}")
    ax.set_title(f"Data scaling: {base.model}, {base.task}")
    ax.grid(alpha=0.3)
    return png(fig)
