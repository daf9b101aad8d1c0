"""What a task is (docs/adding-a-task.md): the one interface the diff trainer, the DIT trainer,
the evaluation runner and the report use, so none of them knows which task it runs.

A task says how to make a run's jobs (one per diff), the training rows of a job, the metadata
written into each diff, the DIT question and label, which names count as naming the label, the
candidates for retrieval metrics, the judge rubric, and its own evaluation methods. The
hidden-topic task is the package `hidden_topic/`, the news-headline task `news.py`. A task of your own is
registered with `register_task` or named in a config as ``"package.module:OBJECT"``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import build_table
from ..errors import ConfigError

# Row losses: cross-entropy on the row's answer; KL to the base model's distribution;
# unlikelihood, -log(1 - p) per answer token, which pushes the answer's probability down.
CE, KL, UL = "ce", "kl", "ul"


@dataclass(frozen=True)
class RowKind:
    """A kind of training row: its name (loss curves, weights) and its loss, ``ce``, ``kl`` or
    ``ul``. ``optional`` kinds come last; a config may leave their weights out (weight 0), and a
    task builds no rows of a kind whose weight is 0."""

    name: str
    loss: str
    optional: bool = False

    def __post_init__(self) -> None:
        if self.loss not in (CE, KL, UL):
            raise ValueError(f"row kind {self.name!r}: loss must be {CE!r}, {KL!r} or {UL!r}")


def row_weights(kinds: tuple[RowKind, ...], weights: list[float]) -> list[float]:
    """One weight per row kind: ``weights`` with the left-out optional kinds at 0."""
    required = sum(not k.optional for k in kinds)
    if not required <= len(weights) <= len(kinds):
        names = ", ".join(k.name + (" (optional)" if k.optional else "") for k in kinds)
        raise ConfigError(
            f"diffs.weights has {len(weights)} value(s); this task's row kinds are {names}: "
            "give one weight each (optional ones may be left out)"
        )
    return [*weights, *[0.0] * (len(kinds) - len(weights))]


class Job(Protocol):
    """One diff to train: an id, a seed (its initialisation and rows depend on it alone)."""

    diff_id: str
    seed: int

    def path(self, out_dir: Path) -> Path: ...


class TrainingTask(Protocol):
    """A task as the diff trainer sees it.

    ``rows`` returns a diff's training rows as ``(kind index, batching.Encoded)``; ``data`` is
    what the task's rows need besides the job (the base model's answers and the task's options
    for hidden topics); ``DiffConfig.weights`` holds one weight per row kind (see
    `row_weights`). An optional ``kl_targets_shared(data) -> bool`` says whether every job's KL
    rows are fixed before training (then their targets are computed once, for all passes); a
    task without it is taken to say yes.
    """

    name: str
    row_kinds: tuple[RowKind, ...]

    def rows(self, job: Any, tok: Any, data: Any, cfg: Any, system: str | None) -> list: ...

    def diff_meta(self, job: Any) -> dict: ...


class Task(TrainingTask, Protocol):
    """A whole task. Job rows (``data/jobs.jsonl``) are dicts holding at least ``diff_id``,
    ``split`` ("train" or "test"), ``label`` (what DIT should answer) and ``seed``.

    - ``make_data(run)``: the data stage; writes ``data/jobs.jsonl`` (kept if it exists) and any
      files its rows need.
    - ``training_data(run)``: the ``data`` argument of ``rows`` (read from the data stage's files).
    - ``job(row)``: a job row as the object ``rows`` and ``diff_meta`` take.
    - ``names(row)``: the strings that count as naming the label (alias match).
    - ``candidates(cfg)``: every label a prediction is ranked against (retrieval@k).
    - ``text_metrics``: the label metrics scored on every prediction (``alias_match``,
      ``rouge_l``); embedding cosine, retrieval and the judge are added when available.
    - ``methods``: the task's own evaluation methods by name (`evaluate.methods`), on top of
      ``dit``, ``base_question`` and ``weight_lens``; ``default_methods`` is what a run
      evaluates when ``eval.methods`` is not set.
    - ``row_metrics(answer, job)`` and ``row_metric_names`` (optional): the task's own
      per-prediction metrics, a ``{name: value}`` dict scored beside ``text_metrics`` on the
      answer and the guess (the better counts; the behaviour suite's ``family_match``), and
      shown for DIT in the report's per-family table; give each a range in
      `evaluate.stats.METRIC_RANGES`.
    - ``options_class`` (optional): a dataclass of the task's own config keys, set under
      ``[task_options]``; a field with ``metadata={"stage": "eval"}`` is read only at evaluation,
      so it may change between reruns of a run directory. `task_options` builds it.
    """

    dit_question: str
    judge_rubric: Rubric  # how the LLM judge grades and a guesser asks
    text_metrics: tuple[str, ...]
    default_methods: tuple[str, ...]
    methods: Mapping[str, Any]

    def make_data(self, run: Any) -> None: ...

    def training_data(self, run: Any) -> Any: ...

    def job(self, row: dict) -> Job: ...

    def names(self, row: dict) -> list[str]: ...

    def candidates(self, cfg: Any) -> list[str]: ...


@dataclass(frozen=True)
class Rubric:
    """How the LLM judge grades one task's predictions and how a guesser asks for one.

    ``label`` names what is guessed ("topic", "headline"); ``grading`` is the judge's system
    prompt, a 1-5 scale ending with a ``SCORE: N`` line; a guesser reads ``guess_intro``, the
    transcript, then ``guess_ask``.
    """

    label: str
    grading: str
    guess_intro: str
    guess_ask: str


def task_options(task: Any, raw: dict, where: str = "task_options") -> Any:
    """``task``'s options (its ``options_class``) from a config's ``task_options`` table, or
    None for a task without options; ConfigError names any unknown or mistyped key."""
    cls = getattr(task, "options_class", None)
    if cls is None:
        if raw:
            raise ConfigError(
                f"{where}: task {task.name} takes no task_options (got {', '.join(raw)}); "
                "remove the [task_options] table"
            )
        return None
    return build_table(cls, "task_options", raw, f"{where} (task {task.name})")


def eval_only_options(task: Any) -> tuple[str, ...]:
    """The names of ``task``'s options read only at evaluation (free to change on a rerun)."""
    cls = getattr(task, "options_class", None)
    fields = dataclasses.fields(cls) if cls is not None else ()
    return tuple(f.name for f in fields if f.metadata.get("stage") == "eval")


DEFAULT_TASK = "hidden_topic"  # a config, run or adapter that names no task is this one
_REGISTRY: dict[str, Any] = {}
_BUILTIN = {
    "hidden_topic": "ditkit.tasks.hidden_topic",
    "news": "ditkit.tasks.news",
    "behaviours": "ditkit.tasks.behaviours",
}


def register_task(task: Any) -> Any:
    """Make ``task`` available by its ``name`` (``task = "NAME"`` in a config); returns it."""
    _REGISTRY[task.name] = task
    return task


def task_names() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTRY})


def get_task(name: str) -> Task:
    """The task called ``name``: built in, registered, or ``"package.module:OBJECT"``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        return register_task(importlib.import_module(_BUILTIN[name]).TASK)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"task {name!r}: cannot import {attr} from {module} ({e}); check the module is "
                "importable (on PYTHONPATH) and defines it"
            ) from None
    raise ConfigError(
        f"task: unknown task {name!r}; built in: {', '.join(task_names())}, or "
        '"package.module:OBJECT" for your own (docs/adding-a-task.md)'
    )
