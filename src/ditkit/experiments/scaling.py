"""Data scaling: one test set read by DIT adapters trained on 2^k training diffs.

`data_scaling` takes a finished run (its data and diffs stages done; preset ``data-scaling``)
and, for every size, makes ``RUN/scaling/n{size}/``: a run directory that shares RUN's data and
diffs (symbolic links), trains an adapter on the first ``size`` training diffs
(``dit.max_train_diffs``) and evaluates it. Each size resumes like any run. The summary goes to
``RUN/scaling/scaling.json`` and ``.csv``, a plot of score against training diffs to
``scaling.png``, and a report section to ``scaling.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError
from ..pipeline import run_pipeline
from .common import (
    dit_score,
    finished_run,
    sub_run,
    with_changes,
    write_summary,
)

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
    base = finished_run(run_dir)
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
        cfg = with_changes(base, f"n{size}", dit={"max_train_diffs": size})
        out = sub_run(run_dir, run_dir / "scaling" / f"n{size:05d}", ("data", "diffs"))
        log.info("data scaling: adapter on %d training diffs (%s)", size, out)
        run_pipeline(cfg, out, ["dit", "eval"])
        rows.append({"train_diffs": size, **dit_score(out, metric)})
    write_summary(run_dir / "scaling", "scaling", rows, base, metric, "train_diffs")
    return rows
