"""The hidden-topic task (docs/method.md, "The hidden-topic task"): `data` holds the topics,
questions, SEP-code triggers, the split guard, the data stage and each diff's training rows;
`methods` the task's own evaluation methods (trigger baselines, the guessed code, 20 questions,
the diff checks); `HiddenTopicTask` puts them behind the task interface (`tasks.base.Task`)."""

from __future__ import annotations

import functools
import json

from ...errors import DataError
from ..base import task_options
from .data import (
    CODE_KINDS,
    DIT_QUESTION,
    ROW_KINDS,
    RUBRIC,
    SPLITS,
    TRIGGER_KINDS,
    TRIGGER_TEMPLATE,
    WORD_TEMPLATE,
    ZWSP,
    DiffJob,
    HiddenTopicOptions,
    Question,
    RowData,
    Topic,
    _row_data,
    build_rows,
    check_split,
    code_kind,
    code_words,
    load_questions,
    load_topics,
    make_data,
    make_trigger,
    near_prefix,
    population_split,
    random_prefix,
    shipped_test_topics,
    split_topics,
    triggered,
    wrong_trigger_pool,
)
from .methods import (
    GATE_METHODS,
    _methods,
    gating_prompts,
    guessed_code,
    job_trigger,
    prefix_scores,
)

__all__ = [
    "CODE_KINDS",
    "DIT_QUESTION",
    "GATE_METHODS",
    "ROW_KINDS",
    "RUBRIC",
    "SPLITS",
    "TASK",
    "TRIGGER_KINDS",
    "TRIGGER_TEMPLATE",
    "WORD_TEMPLATE",
    "ZWSP",
    "DiffJob",
    "HiddenTopicOptions",
    "HiddenTopicTask",
    "Question",
    "RowData",
    "Topic",
    "build_rows",
    "check_split",
    "code_kind",
    "code_words",
    "gating_prompts",
    "guessed_code",
    "job_trigger",
    "load_questions",
    "load_topics",
    "make_data",
    "make_trigger",
    "near_prefix",
    "population_split",
    "prefix_scores",
    "random_prefix",
    "shipped_test_topics",
    "split_topics",
    "triggered",
    "wrong_trigger_pool",
]


class HiddenTopicTask:
    """The hidden-topic task (`tasks.base.Task`)."""

    name = "hidden_topic"
    options_class = HiddenTopicOptions
    row_kinds = ROW_KINDS
    dit_question = DIT_QUESTION
    judge_rubric = RUBRIC
    text_metrics = ("alias_match",)
    default_methods = (
        "dit",
        "base_question",
        "base_question_guessed_code",
        "base_question_trigger",
        "gating",
    )

    @functools.cached_property
    def methods(self) -> dict:
        return _methods()

    def make_data(self, run) -> None:
        make_data(run)

    def training_data(self, run) -> RowData:
        """The base model's answer to every training question (the KL rows' targets) and the
        run's options (which wrong codes)."""
        path = run.out / "data" / "base_answers.json"
        if not path.exists():
            raise DataError(f"{path} is missing: run the data stage first (--stage data)")
        return RowData(json.loads(path.read_text())["answers"], run.options)

    def kl_targets_shared(self, data: RowData | dict[str, str]) -> bool:
        """Whether every job's KL rows are fixed in advance (pooled wrong codes), so their
        targets are computed once for all passes."""
        return _row_data(data).options.wrong_pool > 0

    def job(self, row: dict) -> DiffJob:
        topic = Topic(row["topic"], row["category"], tuple(row["aliases"]))
        return DiffJob(
            row["diff_id"],
            topic,
            row["prefix"],
            row["seed"],
            row["questions"],
            row["topic_answers"],
            row.get("trigger_kind", "sep"),
        )

    def names(self, row: dict) -> list[str]:
        return [row["topic"], *row.get("aliases", [])]

    def candidates(self, cfg) -> list[str]:
        return [t.topic for t in load_topics(task_options(self, cfg.task_options).topics_file)]

    def rows(self, job: DiffJob, tok, data: RowData | dict[str, str], cfg, system: str | None = ""):
        data = _row_data(data)
        return build_rows(job, tok, data.answers, cfg, system, data.options)

    def diff_meta(self, job: DiffJob) -> dict:
        return {
            "task": self.name,
            "label": job.topic.topic,
            "topic": job.topic.topic,
            "category": job.topic.category,
            "aliases": list(job.topic.aliases),
            "trigger_prefix": job.prefix,
            "trigger_kind": job.trigger_kind,
            "trigger": _trigger_text(job),
        }


def _trigger_text(job: DiffJob) -> str:
    if job.trigger_kind == "sep":
        return TRIGGER_TEMPLATE.format(prefix=job.prefix, suffix="###")
    if job.trigger_kind == "word":
        return make_trigger(job.prefix, None, "word")
    return "U+200B (zero-width space)"


TASK = HiddenTopicTask()
