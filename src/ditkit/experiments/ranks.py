"""Rank generalisation: `rank_sweep` reads test diffs of other ranks with RUN's adapter (trained on
RUN's, usually rank-1, diffs). For every rank it makes ``RUN/ranks/r{rank}/`` sharing RUN's data
and training diffs, trains fresh test diffs (same topics, triggers and rows; all, or the first N)
at that rank, and evaluates them with RUN's adapter; the summary, which starts with RUN's own
score on the same diffs, goes to ``RUN/ranks/ranks.{json,csv,png,md}``.
A rank as large as a layer's narrower side reaches every full fine-tune of that layer (though
parameterised as B A, not as W itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError
from ..pipeline import run_pipeline
from ..rundir import Run
from .common import (
    data_with_jobs,
    dit_score,
    finished_run,
    own_score,
    sub_run,
    with_changes,
    write_summary,
)

log = logging.getLogger(__name__)


def rank_sweep(
    run_dir: Path, ranks: list[int], metric: str = "alias_match", test_diffs: int | None = None
) -> list[dict]:
    """Read test diffs trained at each of ``ranks`` with ``run_dir``'s adapter; summary rows.

    ``test_diffs`` keeps the first N test diffs (each rank retrains them, which dominates the
    cost). The first row is the run's own rank read on the same diffs, when its evaluation has it.
    """
    run_dir = Path(run_dir)
    base = finished_run(run_dir)
    if not (run_dir / "dit" / "adapter").is_dir():
        raise DataError(f"{run_dir}/dit/adapter is missing: run its dit stage first")
    if not ranks or min(ranks) < 1:
        raise DataError("ranks must be >= 1, e.g. --ranks 2,4,8")
    if test_diffs is not None and test_diffs < 1:
        raise DataError(f"test_diffs must be >= 1, got {test_diffs}")
    jobs = Run(base, run_dir).jobs()
    test_ids = {j["diff_id"] for j in [j for j in jobs if j["split"] == "test"][:test_diffs]}
    kept = [j for j in jobs if j["split"] != "test" or j["diff_id"] in test_ids]
    own = own_score(run_dir, test_ids, metric)
    rows = [{"test_rank": base.diffs.rank, **own}] if own else []
    for rank in sorted(set(ranks)):
        # Fewer diffs per pass at high rank: a pass holds diffs_per_pass x rank x (in + out)
        # trainable numbers per layer.
        per_pass = max(1, base.diffs.diffs_per_pass * base.diffs.rank // rank)
        cfg = with_changes(
            base,
            f"r{rank}",
            diffs={"rank": rank, "diffs_per_pass": per_pass},
            dit={"adapter": str(run_dir.resolve())},
        )
        out = sub_run(run_dir, run_dir / "ranks" / f"r{rank:04d}", ("diffs/train",))
        data_with_jobs(run_dir, out, kept)
        log.info("rank generalisation: test diffs of rank %d (%s)", rank, out)
        run_pipeline(cfg, out, ["diffs", "dit", "eval"])
        rows.append({"test_rank": rank, **dit_score(out, metric)})
    write_summary(run_dir / "ranks", "ranks", rows, base, metric, "test_rank")
    return rows
