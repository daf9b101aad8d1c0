"""Evaluation methods as small specs (docs/method.md, "Evaluation"); a task lists its own.

Every method appends the predictions a run still lacks to a JSONL file, in fixed chunks (so a
resumed run generates exactly what an uninterrupted one would), and knows nothing of the task
beyond the prompts a task function gives it:

- `AskMethod`: one greedy answer per (diff, prompt): the DIT question through the adapter, the
  base question, gating rows; with ``guessed`` a guesser later turns (question, answer) into a
  guess that is scored instead of the answer.
- `TranscriptMethod`: sampled answers to several prompts per diff (20 questions, 20 summary
  requests), then one guess from all the pairs.
- `WeightLensMethod`: the tokens a diff's weights promote (`weight_lens.py`); no generation.

- `VoteMethod`: DIT read at several multipliers and phrasings, majority vote (``dit_vote``).

``GENERIC`` holds the methods every task has: ``dit``, ``dit_vote``, ``base_question`` and
``weight_lens``.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..diffs import load_diff
from ..errors import DataError
from ..files import append_jsonl, kill_point
from ..reader import adapter_system, ask, read_scale
from .weight_lens import WeightLens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """One model call of a method: the row's method name, the question asked, the full prompt,
    and extra fields stored on the prediction row (e.g. the trigger used)."""

    method: str
    question: str | None
    prompt: str
    extra: dict = field(default_factory=dict)


def chunks(items: list, size: int, missing: Callable[[Any], bool]) -> list[tuple[int, list]]:
    """``(start, chunk)`` for the fixed chunks of ``items`` (boundaries never depend on what is
    done) that hold a missing item. Generating whole chunks keeps batch composition, and so
    every answer and random draw, the same whether or not an earlier run was interrupted."""
    out = [items[i : i + size] for i in range(0, len(items), size)]
    return [(i * size, c) for i, c in enumerate(out) if any(missing(x) for x in c)]


def key(row: dict) -> tuple:
    return row["diff_id"], row["method"], row["question"]


def new_row(job: dict, p: Prompt, answer: str) -> dict:
    return {
        "diff_id": job["diff_id"],
        "label": job["label"],
        "method": p.method,
        "question": p.question,
        "prompt": p.prompt,
        "answer": answer,
        "guess": None,
        "scores": {},
        **p.extra,
    }


@dataclass(frozen=True)
class Context:
    """What a method gets: the run, the predictions already made, the guesser/judge tools and
    the file to append to."""

    run: Any
    done: set
    tools: Any
    path: Path

    def question(self) -> str:
        return self.run.cfg.dit.question

    def setting(self, name: str):
        """A length or count a method spec names: the task's option ``name`` if it has one,
        else ``eval.name``."""
        options = self.run.options
        if options is not None and hasattr(options, name):
            return getattr(options, name)
        return getattr(self.run.cfg.eval, name)

    def save(self, rows: list[dict]) -> None:
        """Append ``rows`` to the predictions file and count them as done (a killed evaluation
        resumes after the last saved chunk)."""
        append_jsonl(self.path, rows)
        self.done.update(key(r) for r in rows)
        kill_point("eval.append")


@dataclass(frozen=True, kw_only=True)
class Scoring:
    """How the runner scores a method's rows (every method spec has these)."""

    guessed: bool = False  # a guesser turns (question, answer) into the scored guess
    match_only: bool = False  # rows that test the diff itself: label-name match only (gating)
    row_methods: tuple[str, ...] = ()  # the row names it writes, if not its own name
    # Scores of its own, ``score(row) -> {metric: value}``, in place of the label metrics.
    score: Callable[[dict], dict] | None = None
    # How reports and printed tables present it: a label, one sentence on what it asks and
    # knows, and its role (`ROLES`); a method with ``row_methods`` labels each row.
    label: str = ""
    about: str = ""
    role: str = "baseline"
    row_labels: tuple[str, ...] = ()


# "reader": reads the diff through the DIT adapter (what an auditor gets); "baseline": what an
# auditor could do without DIT; "oracle": knows the diff's secret trigger, a ceiling rather than
# a competitor; "diff_check": tests the diffs themselves (do they show their behaviour?).
ROLES = ("reader", "baseline", "oracle", "diff_check")


@dataclass(frozen=True)
class MethodInfo:
    label: str
    about: str
    role: str


def method_info(methods: dict[str, Any]) -> dict[str, MethodInfo]:
    """``{row method name: MethodInfo}`` for every row name ``methods`` (name -> spec) write,
    in role order, then registry order."""
    out = {}
    for name, spec in methods.items():
        rows = spec.row_methods or (name,)
        labels = spec.row_labels or (spec.label or name,) * len(rows)
        for row, label in zip(rows, labels):
            out[row] = MethodInfo(label, spec.about, spec.role)
    return dict(sorted(out.items(), key=lambda kv: ROLES.index(kv[1].role)))


@dataclass(frozen=True)
class AskMethod(Scoring):
    """One greedy answer per (diff, prompt); ``prompts(ctx, job)`` lists a diff's prompts."""

    prompts: Callable[[Context, dict], list[Prompt]]
    adapter: bool = False  # read through the run's DIT adapter
    # What bounds the answer: a task option or EvalConfig field (`Context.setting`).
    max_new_tokens: str = "max_new_tokens"

    def generate(self, ctx: Context, name: str, jobs: list[dict], diffs: list) -> None:
        run, cfg = ctx.run, ctx.run.cfg
        adapter, scale = None, 1.0
        if self.adapter:
            adapter = _run_adapter(ctx, name)
            if adapter is None:
                return
            scale = cfg.eval.dit_scale if cfg.eval.dit_scale is not None else read_scale(adapter)
            if scale != 1:
                log.info("%s: reading each diff at %gx its weights", name, scale)
                diffs = [d.scaled(scale) for d in diffs]
        todo = [(job, diff, p) for job, diff in zip(jobs, diffs) for p in self.prompts(ctx, job)]

        def missing(t) -> bool:
            return (t[0]["diff_id"], t[2].method, t[2].question) not in ctx.done

        todo_chunks = distributed.share(chunks(todo, 4 * cfg.eval.batch_size, missing))
        if not todo_chunks:
            return
        model, tok = run.model_and_tok
        for _, chunk in todo_chunks:
            answers = ask(
                model,
                tok,
                [t[1] for t in chunk],
                [t[2].prompt for t in chunk],
                adapter=adapter,
                max_new_tokens=ctx.setting(self.max_new_tokens),
                batch_size=cfg.eval.batch_size,
                desc=name,
                # The adapter reads diffs in the prompt format it was trained with.
                system=adapter_system(adapter) if adapter is not None else cfg.system_prompt,
            )
            rows = [new_row(t[0], t[2], a) for t, a in zip(chunk, answers) if missing(t)]
            if scale != 1:
                for row in rows:
                    row["read_scale"] = scale
            ctx.save(rows)
        log.info("%s: %d chunk(s) of predictions written", name, len(todo_chunks))


def _run_adapter(ctx: Context, name: str):
    """The run's DIT adapter, or None (with a warning that ``name`` is skipped) when absent."""
    adapter_dir = ctx.run.out / "dit" / "adapter"
    if not adapter_dir.exists():
        log.warning("no DIT adapter at %s: skipping method %s", adapter_dir, name)
        return None
    return load_diff(adapter_dir)


def _my_groups(ctx: Context, name: str, jobs: list, diffs: list, size: int) -> list:
    """This process's share of the fixed groups of ``size`` (job, diff) pairs that still lack
    their one ``name`` row per diff."""
    missing = lambda jd: (jd[0]["diff_id"], name, None) not in ctx.done  # noqa: E731
    return distributed.share(chunks(list(zip(jobs, diffs)), size, missing))


def majority_vote(answers: list[str]) -> str:
    """The most common answer (compared lower-cased, without punctuation or extra spaces);
    a tie goes to the answer given first."""
    norm = [" ".join(re.sub(r"[^\w\s]", " ", a.lower()).split()) for a in answers]
    counts = Counter(norm)
    best = max(counts.values())
    return next(a for a, n in zip(answers, norm) if counts[n] == best)


@dataclass(frozen=True)
class VoteMethod(Scoring):
    """DIT read several ways per diff, the most common answer kept: once per pair of read-time
    multiplier (``eval.vote_scales``) and phrasing (``eval.vote_questions``, default the DIT
    question). One row per diff; ``votes`` holds every (scale, question, answer)."""

    def generate(self, ctx: Context, name: str, jobs: list[dict], diffs: list) -> None:
        run, ev = ctx.run, ctx.run.cfg.eval
        adapter = _run_adapter(ctx, name)
        if adapter is None:
            return
        pairs = [(s, q) for s in ev.vote_scales for q in ev.vote_questions or [ctx.question()]]
        groups = _my_groups(ctx, name, jobs, diffs, max(1, 4 * ev.batch_size // len(pairs)))
        if not groups:
            return
        model, tok = run.model_and_tok
        for start, group in groups:
            answers = iter(
                ask(
                    model,
                    tok,
                    [d.scaled(s) for _, d in group for s, _ in pairs],
                    [q for _ in group for _, q in pairs],
                    adapter=adapter,
                    max_new_tokens=ev.max_new_tokens,
                    batch_size=ev.batch_size,
                    desc=name,
                    system=adapter_system(adapter),
                )
            )
            rows = []
            for job, _ in group:
                votes = [(s, q, next(answers)) for s, q in pairs]
                if (job["diff_id"], name, None) in ctx.done:
                    continue
                row = new_row(job, Prompt(name, None, None), majority_vote([v[2] for v in votes]))
                row["votes"] = votes
                rows.append(row)
            ctx.save(rows)
            log.info("%s: %d/%d diffs", name, start + len(group), len(jobs))


@dataclass(frozen=True)
class TranscriptMethod(Scoring):
    """Sampled answers (temperature 1) to several prompts per diff, then one guess from all the
    pairs. One row per diff: ``answer`` and ``guess`` are the guess, ``transcript`` the pairs."""

    prompts: Callable[[Context, dict], list[tuple[str, str]]]  # (question, prompt) pairs
    max_new_tokens: str = "max_new_tokens"  # as in `AskMethod`

    def generate(self, ctx: Context, name: str, jobs: list[dict], diffs: list) -> None:
        run, ev = ctx.run, ctx.run.cfg.eval
        if ev.guesser == "none":
            log.warning("%s needs a guesser (eval.guesser is 'none'): skipping it", name)
            return
        # Rows are saved per group of diffs; a group holds about 4 batches of prompts.
        per_group = max(
            1, 4 * ev.batch_size // max(1, len(self.prompts(ctx, jobs[0])) if jobs else 1)
        )
        groups = _my_groups(ctx, name, jobs, diffs, per_group)
        if not groups:
            return
        model, tok = run.model_and_tok
        for start, group in groups:
            pairs, group_diffs = [], []
            for job, diff in group:
                pairs.append(self.prompts(ctx, job))
                group_diffs += [diff] * len(pairs[-1])
            # Seeded by the group's place in the full list, so a resumed run samples the same.
            torch.manual_seed(run.cfg.data.seed * 1000 + start)
            answers = iter(
                ask(
                    model,
                    tok,
                    group_diffs,
                    [prompt for ps in pairs for _, prompt in ps],
                    max_new_tokens=ctx.setting(self.max_new_tokens),
                    batch_size=ev.batch_size,
                    do_sample=True,
                    temperature=1.0,
                    desc=name,
                    system=run.cfg.system_prompt,
                )
            )
            rows = []
            for (job, _), ps in zip(group, pairs):
                transcript = [(q, next(answers)) for q, _ in ps]
                if (job["diff_id"], name, None) in ctx.done:
                    continue
                guess = ctx.tools.guess(transcript)
                row = new_row(job, Prompt(name, None, None), guess)
                row.update(guess=guess, guesser=ctx.tools.guesser_name, transcript=transcript)
                rows.append(row)
            ctx.save(rows)
            log.info("%s: %d/%d diffs", name, start + len(group), len(jobs))


@dataclass(frozen=True)
class WeightLensMethod(Scoring):
    """The tokens each diff's weights promote, turned into a guess (`weight_lens.py`)."""

    def generate(self, ctx: Context, name: str, jobs: list[dict], diffs: list) -> None:

        pending = [
            (j, d) for j, d in zip(jobs, diffs) if (j["diff_id"], name, None) not in ctx.done
        ]
        pending = distributed.share(pending)
        if not pending:
            return
        model, tok = ctx.run.model_and_tok
        lens = WeightLens(model, tok)
        guesser = ctx.tools.guesser
        for job, diff in tqdm(pending, desc=name, leave=False, disable=None):
            try:
                out = lens.read(diff, guesser=guesser)
            except DataError as e:
                log.warning("skipping %s: %s (diff %s)", name, e, job["diff_id"])
                return
            row = new_row(job, Prompt(name, None, None), out["guess"])
            row.update(
                guess=out["guess"],
                guesser=ctx.tools.guesser_name if guesser else "top_token",
                lens_tokens=out["tokens"],
                lens_scores=out["scores"],
            )
            append_jsonl(ctx.path, [row])  # each diff is its own deterministic computation
        log.info("%s: %d predictions", name, len(pending))


def ask_question(method: str) -> Callable[[Context, dict], list[Prompt]]:
    """Prompts for ``method``: the run's DIT question, asked as it is."""

    def prompts(ctx: Context, job: dict) -> list[Prompt]:
        q = ctx.question()
        return [Prompt(method, q, q)]

    return prompts


# The methods every task has; a task's ``methods`` add to these.
GENERIC = {
    "dit": AskMethod(
        ask_question("dit"),
        adapter=True,
        label="DIT",
        about="the diffed model plus the DIT adapter, asked the DIT question once (greedy; "
        "xN: each diff read at N times its weights, eval.dit_scale or the reader's read_scale)",
        role="reader",
    ),
    "dit_vote": VoteMethod(
        label="DIT (majority vote)",
        about="DIT asked at several diff multipliers and phrasings; the most common answer",
        role="reader",
    ),
    "base_question": AskMethod(
        ask_question("base_question"),
        guessed=True,
        label="Base question",
        about="the diffed model asked the DIT question directly, without the adapter",
    ),
    "weight_lens": WeightLensMethod(
        label="Weight lens",
        about="the tokens the diff's weights promote, read without running the model",
    ),
}


def sample_questions(pool: list[str], n: int, seed: int) -> list[str]:
    """``n`` questions of ``pool`` drawn by ``seed`` (all of them when the pool is smaller)."""
    return random.Random(seed).sample(pool, min(n, len(pool)))


def methods_for(task) -> dict[str, Any]:
    """Every evaluation method of ``task`` by name: the generic ones plus the task's."""
    return {**GENERIC, **task.methods}
