"""Evaluate a run's held-out test diffs: DIT and the baselines, resumable, scored per prediction.

The methods (docs/method.md, "Evaluation") come from `methods.py` (``dit``, ``base_question``,
``weight_lens``) and from the run's task (hidden topics: ``base_question_trigger``,
``twenty_questions``, ``twenty_questions_trigger``, ``gating``; news: ``summary_requests``,
``story_summary``). Each runs on the same test diffs.

Guessers (``eval.guesser``) turn a baseline's answers into a guess: ``retrieval`` picks the
nearest of the task's candidates (every topic, every headline) by MiniLM embedding (falls back to
``hf`` without the embedder), ``hf`` asks the run's base model, ``openai`` an OpenAI-compatible
server; with ``none`` the raw answers are scored and the transcript methods are skipped. Without a
guesser the weight lens guesses its top token.

Metrics per row, on the guess when there is one, else the answer: the task's text metrics
(``alias_match`` on the answer and the guess, the max; ``rouge_l`` against the label),
``embedding_cosine``, ``retrieval_at_1`` / ``retrieval_at_5`` (rank of the truth among the task's
candidates, by cosine to the prediction) when the offline embedder is installed, and ``judge``
(1-5 with the task's rubric, ``eval.judge = "openai"``). Rows that test the diff itself (gating)
get the label-name match only.

Files in ``DIR/eval/``: ``predictions.jsonl`` (one row per diff, method and question),
``scores.json`` (``{method: {metric: {mean, ci95, ci95_bootstrap, n}}}``), ``paired.json``
(``{baseline: {metric: stats.paired_difference(dit, baseline)}}`` on shared diffs), ``judge.json``
(which judge graded), ``cache/`` (OpenAI-compatible replies). Generation only appends rows that are
missing; a scoring pass then fills in whatever a row lacks (a guess, a metric), so rerunning adds
new metrics to old rows without regenerating answers and never recomputes finished ones.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from .. import distributed
from ..errors import ConfigError, DataError, DitkitError
from ..files import append_jsonl, kill_point, read_jsonl, write_json, write_jsonl
from ..openai_compat import ChatClient, EndpointConfig
from .judge import HFGuesser, LLMJudge, OpenAIGuesser, RetrievalGuesser
from .methods import Context, key, method_info, methods_for
from .metrics import (
    Embedder,
    alias_match,
    embedding_cosine,
    retrieval_at_k,
    retrieval_rank,
    rouge_l,
)
from .stats import metric_scale, paired_difference, summarize

log = logging.getLogger(__name__)

EMBEDDING_METRICS = ("embedding_cosine", "retrieval_at_1", "retrieval_at_5")


@functools.lru_cache(maxsize=1)
def _embedder():
    """One MiniLM embedder per process (it caches its vectors), shared by evaluations."""

    return Embedder()


class Tools:
    """The task, its methods, the embedder, candidates, guesser and judge of one evaluation,
    each built on first use."""

    def __init__(self, run, ev_dir: Path) -> None:
        self.run, self.ev, self.ev_dir = run, run.cfg.eval, ev_dir
        self.task = run.task
        self.methods = methods_for(self.task)
        # The method spec of every prediction row name (gating writes gate_* rows).
        self.spec_of = {}
        self.family = {}
        for name, spec in self.methods.items():
            for row_name in spec.row_methods or (name,):
                self.spec_of[row_name], self.family[row_name] = spec, name
        self.info = method_info(self.methods)  # label, description and role of every row name
        self.guesser_name = self.ev.guesser  # the guesser really used, after any fallback

    @functools.cached_property
    def candidates(self) -> list[str]:
        return self.task.candidates(self.run.cfg)

    @functools.cached_property
    def embedder(self):
        """The MiniLM embedder, or None (with a warning) when it is not installed."""
        try:
            return _embedder()
        except DitkitError as e:
            log.warning("skipping the embedding metrics and the retrieval guesser: %s", e)
            return None

    @functools.cached_property
    def guesser(self):
        """The configured guesser, or None for ``guesser = "none"``."""

        kind, rubric = self.ev.guesser, self.task.judge_rubric
        if kind == "retrieval":
            if self.embedder is not None:
                return RetrievalGuesser(self.embedder, self.candidates)
            log.warning("the retrieval guesser needs the embedder: guessing with hf (base model)")
            kind = self.guesser_name = "hf"
        if kind == "hf":
            model, tok = self.run.model_and_tok
            n = self.ev.guess_max_new_tokens
            return HFGuesser(model, tok, rubric, **({"max_new_tokens": n} if n else {}))
        if kind == "openai":
            endpoint = EndpointConfig(
                base_url=self.ev.guesser_base_url,
                model=self.ev.guesser_model,
                cache_dir=str(self.ev_dir / "cache" / "guesser"),
            )
            n = self.ev.guess_max_new_tokens
            return OpenAIGuesser(ChatClient(endpoint), rubric, **({"max_tokens": n} if n else {}))
        return None

    def guess(self, transcript: Sequence[tuple[str, str]]) -> str:
        return self.guesser.guess(transcript)

    @functools.cached_property
    def judge(self):
        """The LLM judge (``judge = "openai"``), recorded in judge.json when first built."""

        if self.ev.judge == "none":
            return None
        endpoint = EndpointConfig(
            base_url=self.ev.judge_base_url,
            model=self.ev.judge_model,
            cache_dir=str(self.ev_dir / "cache" / "judge"),
        )
        judge = LLMJudge(ChatClient(endpoint), self.task.judge_rubric)
        _record_judge(self.ev_dir / "judge.json", judge)
        return judge


def _record_judge(path: Path, judge) -> None:
    info = {"judge": "openai", **judge.info(), "rubric": judge.rubric.label, "temperature": 0.0}
    old = json.loads(path.read_text()) if path.exists() else None
    if old and (old.get("judge_model"), old.get("judge_base_url")) != (
        info["judge_model"],
        info["judge_base_url"],
    ):
        log.warning(
            "%s names another judge (%s at %s): rows it graded keep their scores",
            path,
            old.get("judge_model"),
            old.get("judge_base_url"),
        )
        info["earlier"] = [*old.pop("earlier", []), old]
    write_json(path, info)


def evaluate_run(run, generate: bool = True) -> dict:
    """Write ``eval/predictions.jsonl`` (appending only what is missing), then score every row and
    write ``eval/scores.json`` and ``eval/paired.json``; returns the scores.

    Under a launcher each process generates its share of the chunks into
    ``predictions.part-RANK.jsonl``; the main process merges the parts, scores and writes (the
    others return ``{}``). ``generate=False`` only scores the rows already on disk (no model, no
    diffs): predictions made on a machine without the embedding model or the judge's server,
    scored where they are.
    """
    ev = run.cfg.eval
    _check_endpoints(ev)
    ev_dir = run.out / "eval"
    ev_dir.mkdir(parents=True, exist_ok=True)
    pred_path = ev_dir / "predictions.jsonl"
    tools = Tools(run, ev_dir)
    for method in ev.methods:
        if method not in tools.methods:
            raise ConfigError(
                f"eval.methods: {method!r} is not a method of the {tools.task.name} task; "
                f"its methods: {', '.join(tools.methods)}"
            )
    if generate:
        write_path = pred_path
        if distributed.world_size() > 1:
            write_path = ev_dir / f"predictions.part-{distributed.rank()}.jsonl"
        done = {key(p) for path in [pred_path, *_parts(ev_dir)] for p in read_jsonl(path)}
        jobs, diffs = run.test_diffs()
        ctx = Context(run, done, tools, write_path)
        for method in ev.methods:
            tools.methods[method].generate(ctx, method, jobs, diffs)
    else:
        jobs = run.test_jobs()
    distributed.barrier()
    if not distributed.is_main():
        return {}
    merge_parts(ev_dir, ev.methods, tools.family)
    if not generate and not read_jsonl(pred_path):
        raise DataError(f"{pred_path}: no predictions to score; run `ditkit eval` first")
    score_predictions(pred_path, {j["diff_id"]: j for j in jobs}, tools)
    ids = {j["diff_id"] for j in jobs}  # rows of diffs past eval.max_test_diffs stay, unscored
    skip = [row for row, info in tools.info.items() if info.role == "diff_check"]
    write_paired(ev_dir, skip, ids)
    return write_scores(ev_dir, ids)


def _parts(ev_dir: Path) -> list[Path]:
    return sorted(ev_dir.glob("predictions.part-*.jsonl"))


def merge_parts(ev_dir: Path, methods: Sequence[str], family: dict[str, str] | None = None) -> int:
    """Append the rows of every process's part file that ``predictions.jsonl`` lacks, by method
    (in ``methods`` order; ``family`` maps a row's method to the one that wrote it) then diff,
    and delete the parts; returns how many rows were added."""
    pred_path = ev_dir / "predictions.jsonl"
    parts = _parts(ev_dir)
    if not parts:
        return 0
    family = family or {}
    have = {key(r) for r in read_jsonl(pred_path)}
    new = {key(r): r for path in parts for r in read_jsonl(path) if key(r) not in have}
    order = {m: i for i, m in enumerate(methods)}

    def place(row: dict) -> tuple:
        return order.get(family.get(row["method"], row["method"]), len(order)), row["diff_id"]

    rows = sorted(new.values(), key=place)
    append_jsonl(pred_path, rows)
    for path in parts:
        path.unlink()
    return len(rows)


def _check_endpoints(ev) -> None:
    """Fail before any generation if a server the judge or the guesser needs is not named."""

    if ev.judge == "openai":
        EndpointConfig(base_url=ev.judge_base_url, model=ev.judge_model).resolve()
    if ev.guesser == "openai":
        EndpointConfig(base_url=ev.guesser_base_url, model=ev.guesser_model).resolve()


# ---------------------------------------------------------------- scoring


def score_predictions(pred_path: Path, jobs_by_id: dict[str, dict], tools: Tools) -> None:
    """Fill in each row's missing guess and metrics; rewrite the file only if something changed.

    Progress is saved even when a step fails (e.g. the judge's server goes away).
    """
    rows = read_jsonl(pred_path)
    changed = False
    try:
        for row in rows:
            job = jobs_by_id.get(row["diff_id"])
            names = tools.task.names(job) if job else [_label(row)]
            changed |= _score_row(row, names, tools, job)
            kill_point("eval.score")
    finally:
        if changed:
            write_jsonl(pred_path, rows)


def _label(row: dict) -> str:
    return row["label"] if "label" in row else row["topic"]  # "topic": older rows


def _score_row(row: dict, names: list[str], tools: Tools, job: dict | None = None) -> bool:
    before = json.dumps(row, sort_keys=True)
    scores = row.setdefault("scores", {})
    spec = tools.spec_of.get(row["method"])
    label = _label(row)
    if spec is not None and spec.guessed and row.get("guess") is None and tools.guesser:
        row["guess"] = tools.guess([(row["question"], row["answer"])])
        row["guesser"] = tools.guesser_name
        scores.clear()  # they were the raw answer's; the guess is what gets scored
    if spec is not None and spec.score is not None:
        if not scores:
            scores.update(spec.score(row))
        return json.dumps(row, sort_keys=True) != before
    guess = row.get("guess")
    prediction = guess if guess is not None else row["answer"]
    match_only = spec is not None and spec.match_only
    metrics = ("alias_match",) if match_only else tools.task.text_metrics
    if "alias_match" in metrics and "alias_match" not in scores:
        scores["alias_match"] = max(
            alias_match(row["answer"], names), alias_match(guess or "", names)
        )
    if "rouge_l" in metrics and "rouge_l" not in scores:
        scores["rouge_l"] = rouge_l(prediction, label)
    # A task's own per-row metrics (the behaviour suite's family_match): the better of the raw
    # answer and the guess, as for alias_match.
    row_metrics = getattr(tools.task, "row_metrics", None)
    if row_metrics is not None and job is not None:
        texts = [row["answer"], *([guess] if guess is not None else [])]
        got = [row_metrics(t, job) for t in texts]
        for name in getattr(tools.task, "row_metric_names", ()):
            scores.setdefault(name, max(g[name] for g in got))
    if match_only:
        return json.dumps(row, sort_keys=True) != before
    if any(m not in scores for m in EMBEDDING_METRICS) and tools.embedder is not None:
        scores["embedding_cosine"] = embedding_cosine(tools.embedder, prediction, label)
        rank = retrieval_rank(tools.embedder, prediction, label, tools.candidates)
        scores["retrieval_at_1"] = retrieval_at_k(rank, 1)
        scores["retrieval_at_5"] = retrieval_at_k(rank, 5)
    if "judge" not in scores and tools.judge is not None:
        scores["judge"] = float(tools.judge.score(prediction, label))
    return json.dumps(row, sort_keys=True) != before


def _per_diff(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {metric: {diff_id: mean over the diff's rows}}}."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for p in rows:
        for metric, value in (p.get("scores") or {}).items():
            if value is not None:
                by_diff = acc.setdefault(p["method"], {}).setdefault(metric, {})
                by_diff.setdefault(p["diff_id"], []).append(float(value))
    return {
        m: {k: {d: sum(v) / len(v) for d, v in ds.items()} for k, ds in mets.items()}
        for m, mets in acc.items()
    }


def write_paired(ev_dir: Path, skip: Sequence[str] = (), ids: set[str] | None = None) -> dict:
    """``{method: {metric: paired_difference(dit, method)}}`` on the diffs both scored, for every
    method but DIT and those in ``skip`` (rows that test the diffs themselves); only diffs in
    ``ids`` when given."""
    per = _per_diff(_rows_of(ev_dir, ids))
    dit = per.get("dit", {})
    paired: dict[str, dict] = {}
    for method, mets in per.items():
        if method == "dit" or method in skip:
            continue
        for metric, other in mets.items():
            shared = sorted(d for d in dit.get(metric, {}) if d in other)
            if shared:
                paired.setdefault(method, {})[metric] = paired_difference(
                    [dit[metric][d] for d in shared],
                    [other[d] for d in shared],
                    **metric_scale(metric),
                )
    write_json(ev_dir / "paired.json", paired)
    return paired


def summarize_metric(metric: str, values: list[float]) -> dict:
    """`stats.summarize` of one metric's values, its intervals inside the metric's range
    (`stats.METRIC_RANGES`); continuous metrics are never taken as proportions."""
    return summarize(values, **metric_scale(metric))


def _rows_of(ev_dir: Path, ids: set[str] | None) -> list[dict]:
    rows = read_jsonl(ev_dir / "predictions.jsonl")
    return rows if ids is None else [r for r in rows if r["diff_id"] in ids]


def write_scores(ev_dir: Path, ids: set[str] | None = None) -> dict:
    """Aggregate predictions into ``{method: {metric: {mean, ci95, ci95_method, n, ...}}}``
    (only diffs in ``ids`` when given)."""
    by: dict[str, dict[str, list[float]]] = {}
    for p in _rows_of(ev_dir, ids):
        for metric, value in p["scores"].items():
            if value is not None:
                by.setdefault(p["method"], {}).setdefault(metric, []).append(float(value))
    scores = {m: {k: summarize_metric(k, v) for k, v in mets.items()} for m, mets in by.items()}
    write_json(ev_dir / "scores.json", scores)
    return scores
