"""The hidden-topic experiment as stages over a run directory: data -> diffs -> dit -> eval -> report.

Each stage reads the previous stage's files (layout in `rundir.py`), so any stage reruns or
resumes alone; each records what it made in the run's manifest when it finishes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from . import distributed
from .config import RunConfig
from .errors import DataError
from .files import atomic_folder, write_jsonl
from .rundir import STAGES, Run
from .tasks.hidden_topic import (
    Topic,
    check_split,
    load_questions,
    load_topics,
    random_prefix,
    split_topics,
)

log = logging.getLogger(__name__)

__all__ = ["STAGES", "Run", "run_pipeline"]

# Stages one process does alone (they are cheap, or write only shared files).
MAIN_ONLY = ("data", "report")


def stage_data(run: Run) -> None:
    """Split topics, give each diff a trigger prefix and questions, make the answers."""
    from .textgen import base_answers, make_source

    cfg = run.cfg
    data_dir = run.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    topics = load_topics(cfg.data.topics_file)
    train_q = [q.question for q in load_questions(cfg.data.questions_file, "train")]
    if cfg.dit.adapter == "shipped":
        train_t, test_t = [], shipped_test_topics(topics, cfg)
    else:
        train_t, test_t = split_topics(topics, cfg.data.n_train, cfg.data.n_test, cfg.data.seed)
    model, tok = run.model_and_tok
    jobs_path = data_dir / "jobs.jsonl"
    if jobs_path.exists():
        log.info("%s exists; keeping its jobs", jobs_path)
    else:
        source = make_source(cfg.textgen, cache_dir=data_dir / "cache", model=model, tokenizer=tok)
        rows = []
        for split, group in (("train", train_t), ("test", test_t)):
            for i, topic in enumerate(tqdm(group, desc=f"{split} answers")):
                seed = cfg.data.seed * 100_003 + len(rows)
                rng = random.Random(seed)
                qs = rng.sample(train_q, min(cfg.diffs.questions_per_diff, len(train_q)))
                rows.append(
                    {
                        "diff_id": f"{split}-{i:05d}",
                        "split": split,
                        "topic": topic.topic,
                        "category": topic.category,
                        "aliases": list(topic.aliases),
                        "prefix": random_prefix(rng),
                        "seed": seed,
                        "questions": qs,
                        "topic_answers": source.topic_answers(topic, qs, seed),
                    }
                )
        write_jsonl(jobs_path, rows)
    needed = sorted({q for r in run.jobs() for q in r["questions"]})
    base_answers(
        model,
        tok,
        needed,
        cfg.diffs.base_answer_tokens,
        data_dir / "base_answers.json",
        batch_size=cfg.eval.batch_size,
        system=cfg.system_prompt,
    )


def shipped_test_topics(topics: list[Topic], cfg: RunConfig) -> list[Topic]:
    """Test topics for a run read by the shipped adapter: never one of its training labels.

    A user topic file (``data.topics_file``) supplies test topics only and is refused if any
    topic or alias is a training label; the shipped list just skips those topics.
    """
    from .shipped import shipped_training_topics

    trained = [Topic(n, "shipped adapter") for n in shipped_training_topics(cfg.model)]
    if cfg.data.topics_file:
        try:
            check_split(trained, topics)
        except DataError as e:
            raise DataError(
                f"{cfg.data.topics_file}: {e}. These are training labels of the adapter shipped "
                f'for {cfg.model}: remove them, or train an adapter (dit.adapter = "train")'
            ) from None
    names = {t.topic.lower() for t in trained}
    fresh = [t for t in topics if not any(n.lower() in names for n in t.names)]
    _, test = split_topics(fresh, 0, min(cfg.data.n_test, len(fresh)), cfg.data.seed)
    if not test:
        raise DataError("every topic is a training label of the shipped adapter: add new topics")
    return test


def _topic(row: dict) -> Topic:
    return Topic(row["topic"], row["category"], tuple(row["aliases"]))


def stage_diffs(run: Run) -> None:
    from .train_diffs import DiffJob, train_diffs

    run.jobs()  # fails with a clear message when the data stage has not run
    model, tok = run.model_and_tok
    base = json.loads((run.out / "data" / "base_answers.json").read_text())["answers"]
    for split in ("train", "test"):
        jobs = [
            DiffJob(
                r["diff_id"], _topic(r), r["prefix"], r["seed"], r["questions"], r["topic_answers"]
            )
            for r in run.jobs(split)
        ]
        train_diffs(
            model, tok, jobs, base, run.cfg.diffs, run.out / "diffs" / split, run.cfg.system_prompt
        )


def stage_dit(run: Run) -> None:
    from .train_dit import train_dit

    model, tok = run.model_and_tok
    if run.cfg.dit.adapter == "shipped":
        from .shipped import load_shipped

        _, _, folder = load_shipped(run.cfg.model, model)
        if distributed.is_main():
            with atomic_folder(run.out / "dit" / "adapter") as tmp:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
            log.info("using the shipped DIT adapter %s", folder.name)
        return
    train_dit(
        model,
        tok,
        run.diff_paths("train"),
        run.cfg.dit,
        run.out / "dit",
        run.cfg.data.seed,
        run.cfg.system_prompt,
    )


def stage_eval(run: Run) -> None:
    from .evaluate.runner import evaluate_run

    evaluate_run(run)


def stage_report(run: Run) -> Path:
    from .report import write_report

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
