"""A DIT experiment as stages over a run directory: data -> diffs -> dit -> eval -> report.

The run's task (`tasks.base.Task`, ``config.task``) supplies the data stage, each diff's rows and
the evaluation methods; the stages themselves are the same for every task.

Each stage reads the previous stage's files (layout in `rundir.py`), so any stage reruns or
resumes alone; each records what it made in the run's manifest when it finishes.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from . import distributed
from .config import RunConfig
from .diffs import load_diff
from .errors import DataError
from .evaluate.runner import evaluate_run
from .files import atomic_folder
from .reporting.run_report import write_report
from .rundir import STAGES, Run
from .shipped import is_shipped_spec, load_shipped, run_task_reader, spec_task
from .train_diffs import train_diffs
from .train_dit import train_dit

log = logging.getLogger(__name__)

__all__ = ["STAGES", "Run", "run_pipeline"]

# Stages one process does alone (they are cheap, or write only shared files).
MAIN_ONLY = ("data", "report")


def stage_data(run: Run) -> None:
    """The task's data stage: jobs (one per diff) and whatever their rows need."""
    run.task.make_data(run)


def stage_diffs(run: Run) -> None:

    task = run.task
    run.jobs()  # fails with a clear message when the data stage has not run
    model, tok = run.model_and_tok
    data = task.training_data(run)
    progress = run.out / "diffs" / "progress.jsonl"
    for item in run.cfg.diff_splits:  # held-out first by default
        split, _, count = item.partition(":")
        jobs = [task.job(r) for r in run.jobs(split)][: int(count) if count else None]
        out = run.out / "diffs" / split
        cfg = run.cfg.diffs_for(split)
        train_diffs(
            model, tok, jobs, data, cfg, out, run.cfg.system_prompt, task=task, progress=progress
        )


def stage_dit(run: Run) -> None:

    model, tok = run.model_and_tok
    choice = run.cfg.dit.adapter
    if choice != "train":
        if is_shipped_spec(choice):  # "shipped": the run's task's reader; "shipped:TASK"
            task = spec_task(choice, run_task_reader(run.cfg.model, run.cfg.task))
            _, _, folder = load_shipped(run.cfg.model, model, task=task)
        else:
            folder = adapter_folder(choice)
        if distributed.is_main():
            with atomic_folder(run.out / "dit" / "adapter") as tmp:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
            log.info("using the DIT adapter %s", folder)
        return
    paths = run.diff_paths("train", run.cfg.dit.train_families, run.cfg.dit.max_train_diffs)
    for extra in run.cfg.dit.extra_train:
        found = sorted((Path(extra) / "diffs" / "train").glob("*.safetensors"))
        if not found:
            raise DataError(
                f"dit.extra_train: {extra}/diffs/train holds no diffs; run that directory's "
                "diffs stage first, or remove it from dit.extra_train"
            )
        paths += found
    train_dit(
        model,
        tok,
        paths,
        run.cfg.dit,
        run.out / "dit",
        run.cfg.data.seed if run.cfg.dit.seed is None else run.cfg.dit.seed,
        run.cfg.system_prompt,
        run.cfg.task,
    )


def adapter_folder(path: str) -> Path:
    """An adapter folder given as itself or as the run directory that trained it; checked to
    load (a damaged or foreign folder fails here, naming it, before anything is copied)."""

    folder = Path(path)
    if (folder / "dit" / "adapter").is_dir():
        folder = folder / "dit" / "adapter"
    if not folder.is_dir():
        raise DataError(
            f"dit.adapter = {path!r} is neither 'train', 'shipped', an adapter folder nor a run "
            "directory with dit/adapter: check the path"
        )
    load_diff(folder)
    return folder


def stage_eval(run: Run) -> None:

    evaluate_run(run)


def stage_report(run: Run) -> Path:

    return write_report(run.out)


def run_pipeline(
    cfg: RunConfig, out: Path, stages: Iterable[str] = STAGES, force: bool = False
) -> Path:
    """Run the given stages in order; returns the run directory.

    A directory made by a different config is refused unless ``force`` (`Run.claim`). Under
    ``torchrun``/``accelerate launch`` every process calls this; `distributed` says who does what.
    """
    funcs = {
        "data": stage_data,
        "diffs": stage_diffs,
        "dit": stage_dit,
        "eval": stage_eval,
        "report": stage_report,
    }
    stages = list(stages)
    unknown = [s for s in stages if s not in funcs]
    if unknown:
        raise DataError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    run = Run(cfg, out)
    main = distributed.is_main()
    run.claim(force, write=main)  # every process checks the config; only the main one writes
    distributed.barrier()
    for stage in stages:
        log.info("stage %s", stage)
        start = time.time()
        if main or stage not in MAIN_ONLY:
            funcs[stage](run)
        distributed.barrier()
        if main:
            run.record_time(stage, time.time() - start)
            run.record_artifacts(stage)
    return run.out
