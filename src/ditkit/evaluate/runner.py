"""Evaluate a run's held-out test diffs: DIT and the baselines, resumable, scored per prediction.

Methods (docs/method.md, "Evaluation"), each run on the same test diffs:

- ``dit``: base model + diff + DIT adapter, asked the DIT question (greedy); its answer is scored.
- ``base_question`` / ``base_question_trigger``: the diffed model asked the DIT question directly,
  without / with its true trigger (greedy); a guesser turns the (question, answer) pair into a guess.
- ``twenty_questions`` / ``twenty_questions_trigger``: held-out questions (``twenty_q_count``,
  a seeded sample per diff) sampled at temperature 1, without / with the trigger; a guesser reads
  all the pairs. One row per diff: ``answer`` and ``guess`` are the guess, ``transcript`` the pairs.
- ``weight_lens``: the tokens the diff's weights promote (`weight_lens.py`); no generation.
- ``gating``: held-out questions with the right trigger, a wrong one and none (``gate_*`` rows;
  alias match only): does the diff's behaviour stay behind its trigger?

Guessers (``eval.guesser``): ``retrieval`` picks the nearest topic of the topic file by MiniLM
embedding (falls back to ``hf`` without the embedder), ``hf`` asks the run's base model, ``openai``
an OpenAI-compatible server; with ``none`` the raw answers are scored and the 20-questions methods
are skipped. Without a guesser the weight lens guesses its top token.

Metrics per row, on the guess when there is one, else the answer: ``alias_match`` (on the answer
and the guess, the max), ``embedding_cosine``, ``retrieval_at_1`` / ``retrieval_at_5`` (rank of the
truth among all topics of the topic file, by cosine to the prediction) when the offline embedder is
installed, and ``judge`` (1-5, ``eval.judge = "openai"``).

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
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..describe import adapter_system, ask
from ..diffs import load_diff
from ..errors import ConfigError, DataError, DitkitError
from ..files import append_jsonl, kill_point, read_jsonl, write_json, write_jsonl
from ..tasks.hidden_topic import load_questions, load_topics, make_trigger, random_prefix
from .metrics import alias_match, embedding_cosine, retrieval_at_k, retrieval_rank
from .stats import paired_difference, summarize

log = logging.getLogger(__name__)

GATE_METHODS = ("gate_trigger", "gate_wrong_trigger", "gate_none")
TWENTY_Q_METHODS = ("twenty_questions", "twenty_questions_trigger")
GUESSED_METHODS = ("base_question", "base_question_trigger")  # one answer, then a guess
EMBEDDING_METRICS = ("embedding_cosine", "retrieval_at_1", "retrieval_at_5")


def _chunks(items: list, size: int, missing) -> list[tuple[int, list]]:
    """``(start, chunk)`` for the fixed chunks of ``items`` (boundaries never depend on what is
    done) that hold a missing item. Generating whole chunks keeps batch composition, and so
    every answer and random draw, the same whether or not an earlier run was interrupted."""
    out = [items[i : i + size] for i in range(0, len(items), size)]
    return [(i * size, c) for i, c in enumerate(out) if any(missing(x) for x in c)]


def _key(row: dict) -> tuple:
    return row["diff_id"], row["method"], row["question"]


def _trigger(job: dict) -> str:
    """The diff's own trigger, the same one every method uses."""
    return make_trigger(job["prefix"], random.Random(job["seed"] + 7))


def _row(job: dict, method: str, question: str | None, prompt: str | None, answer: str) -> dict:
    return {
        "diff_id": job["diff_id"],
        "topic": job["topic"],
        "trigger": _trigger(job),
        "method": method,
        "question": question,
        "prompt": prompt,
        "answer": answer,
        "guess": None,
        "scores": {},
    }


def _prompts(method: str, job: dict, dit_question: str) -> list[tuple[str, str]]:
    """(question asked, prompt) pairs for one diff and method."""
    if method in ("dit", "base_question"):
        return [(dit_question, dit_question)]
    if method == "base_question_trigger":
        return [(dit_question, f"{_trigger(job)} {dit_question}")]
    raise ValueError(method)


@functools.lru_cache(maxsize=1)
def _embedder():
    """One MiniLM embedder per process (it caches its vectors), shared by evaluations."""
    from .metrics import Embedder

    return Embedder()


class _Tools:
    """The embedder, topic list, guesser and judge of one evaluation, each built on first use."""

    def __init__(self, run, ev_dir: Path) -> None:
        self.run, self.ev, self.ev_dir = run, run.cfg.eval, ev_dir
        self.guesser_name = self.ev.guesser  # the guesser really used, after any fallback

    @functools.cached_property
    def topics(self) -> list[str]:
        return [t.topic for t in load_topics(self.run.cfg.data.topics_file)]

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
        from ..openai_compat import ChatClient, EndpointConfig
        from .judge import HFGuesser, OpenAIGuesser, RetrievalGuesser

        kind = self.ev.guesser
        if kind == "retrieval":
            if self.embedder is not None:
                return RetrievalGuesser(self.embedder, self.topics)
            log.warning("the retrieval guesser needs the embedder: guessing with hf (base model)")
            kind = self.guesser_name = "hf"
        if kind == "hf":
            model, tok = self.run.model_and_tok
            return HFGuesser(model, tok)
        if kind == "openai":
            endpoint = EndpointConfig(
                base_url=self.ev.guesser_base_url,
                model=self.ev.guesser_model,
                cache_dir=str(self.ev_dir / "cache" / "guesser"),
            )
            return OpenAIGuesser(ChatClient(endpoint))
        return None

    def guess(self, transcript: Sequence[tuple[str, str]]) -> str:
        return self.guesser.guess(transcript)

    @functools.cached_property
    def judge(self):
        """The LLM judge (``judge = "openai"``), recorded in judge.json when first built."""
        from ..openai_compat import ChatClient, EndpointConfig
        from .judge import LLMJudge

        if self.ev.judge == "none":
            return None
        endpoint = EndpointConfig(
            base_url=self.ev.judge_base_url,
            model=self.ev.judge_model,
            cache_dir=str(self.ev_dir / "cache" / "judge"),
        )
        judge = LLMJudge(ChatClient(endpoint), task="topic")
        _record_judge(self.ev_dir / "judge.json", judge)
        return judge


def _record_judge(path: Path, judge) -> None:
    info = {"judge": "openai", **judge.info(), "task": judge.task, "temperature": 0.0}
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


def evaluate_run(run) -> dict:
    """Write ``eval/predictions.jsonl`` (appending only what is missing), then score every row and
    write ``eval/scores.json`` and ``eval/paired.json``; returns the scores.

    Under a launcher each process generates its share of the chunks into
    ``predictions.part-RANK.jsonl``; the main process merges the parts, scores and writes (the
    others return ``{}``).
    """
    ev = run.cfg.eval
    _check_endpoints(ev)
    ev_dir = run.out / "eval"
    ev_dir.mkdir(parents=True, exist_ok=True)
    pred_path = ev_dir / "predictions.jsonl"
    write_path = pred_path
    if distributed.world_size() > 1:
        write_path = ev_dir / f"predictions.part-{distributed.rank()}.jsonl"
    done = {_key(p) for path in [pred_path, *_parts(ev_dir)] for p in read_jsonl(path)}
    jobs, diffs = run.test_diffs()
    tools = _Tools(run, ev_dir)
    for method in ev.methods:
        if method not in GENERATORS:
            raise ConfigError(f"eval.methods: unknown method {method!r}; known: {list(GENERATORS)}")
        GENERATORS[method](run, method, jobs, diffs, done, tools, write_path)
    distributed.barrier()
    if not distributed.is_main():
        return {}
    merge_parts(ev_dir, ev.methods)
    score_predictions(pred_path, {j["diff_id"]: j for j in jobs}, tools)
    write_paired(ev_dir)
    return write_scores(ev_dir)


def _parts(ev_dir: Path) -> list[Path]:
    return sorted(ev_dir.glob("predictions.part-*.jsonl"))


def merge_parts(ev_dir: Path, methods: Sequence[str]) -> int:
    """Append the rows of every process's part file that ``predictions.jsonl`` lacks, by method
    (in ``methods`` order) then diff, and delete the parts; returns how many rows were added."""
    pred_path = ev_dir / "predictions.jsonl"
    parts = _parts(ev_dir)
    if not parts:
        return 0
    have = {_key(r) for r in read_jsonl(pred_path)}
    new = {_key(r): r for path in parts for r in read_jsonl(path) if _key(r) not in have}
    order = {m: i for i, m in enumerate(methods)}

    def place(row: dict) -> tuple:
        family = "gating" if row["method"] in GATE_METHODS else row["method"]
        return order.get(family, len(order)), row["diff_id"]

    rows = sorted(new.values(), key=place)
    append_jsonl(pred_path, rows)
    for path in parts:
        path.unlink()
    return len(rows)


def _check_endpoints(ev) -> None:
    """Fail before any generation if a server the judge or the guesser needs is not named."""
    from ..openai_compat import EndpointConfig

    if ev.judge == "openai":
        EndpointConfig(base_url=ev.judge_base_url, model=ev.judge_model).resolve()
    if ev.guesser == "openai":
        EndpointConfig(base_url=ev.guesser_base_url, model=ev.guesser_model).resolve()


def _ask_once(run, method: str, jobs, diffs, done: set, tools: _Tools, pred_path: Path) -> None:
    """dit, base_question(_trigger) and gating: one greedy answer per (diff, question)."""
    cfg = run.cfg
    adapter = None
    if method == "dit":
        adapter_dir = run.out / "dit" / "adapter"
        if not adapter_dir.exists():
            log.warning("no DIT adapter at %s: skipping method dit", adapter_dir)
            return
        adapter = load_diff(adapter_dir)
    if method == "gating":
        heldout = [q.question for q in load_questions(cfg.data.questions_file, "heldout")]
    todo = []  # (job, diff, method name, question, prompt)
    for job, diff in zip(jobs, diffs):
        if method == "gating":
            rng = random.Random(job["seed"] + 11)
            for q in rng.sample(heldout, min(cfg.eval.gate_questions, len(heldout))):
                right = make_trigger(job["prefix"], rng)
                wrong = make_trigger(random_prefix(rng, avoid=job["prefix"]), rng)
                for name, prompt in zip(GATE_METHODS, (f"{right} {q}", f"{wrong} {q}", q)):
                    todo.append((job, diff, name, q, prompt))
        else:
            for q, prompt in _prompts(method, job, cfg.dit.question):
                todo.append((job, diff, method, q, prompt))

    def missing(t) -> bool:
        return (t[0]["diff_id"], t[2], t[3]) not in done

    chunks = distributed.share(_chunks(todo, 4 * cfg.eval.batch_size, missing))
    if not chunks:
        return
    model, tok = run.model_and_tok
    gate = method == "gating"
    for _, chunk in chunks:
        answers = ask(
            model,
            tok,
            [t[1] for t in chunk],
            [t[4] for t in chunk],
            adapter=adapter,
            max_new_tokens=cfg.eval.gate_max_new_tokens if gate else cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            desc=method,
            # The adapter reads diffs in the prompt format it was trained with.
            system=adapter_system(adapter) if adapter is not None else cfg.system_prompt,
        )
        rows = [
            _row(job, name, q, prompt, a)
            for (job, _, name, q, prompt), a in zip(chunk, answers)
            if (job["diff_id"], name, q) not in done
        ]
        append_jsonl(pred_path, rows)
        done.update(_key(r) for r in rows)
        kill_point("eval.append")
    log.info("%s: %d chunk(s) of predictions written", method, len(chunks))


def _twenty_questions(
    run, method: str, jobs, diffs, done: set, tools: _Tools, pred_path: Path
) -> None:
    """Sampled answers to held-out questions, then one guess per diff from all the pairs."""
    ev = run.cfg.eval
    if ev.guesser == "none":
        log.warning("%s needs a guesser (eval.guesser is 'none'): skipping it", method)
        return
    per_group = max(1, 4 * ev.batch_size // ev.twenty_q_count)  # rows are saved per group
    groups = _chunks(
        list(zip(jobs, diffs)), per_group, lambda jd: (jd[0]["diff_id"], method, None) not in done
    )
    groups = distributed.share(groups)
    if not groups:
        return
    heldout = [q.question for q in load_questions(run.cfg.data.questions_file, "heldout")]
    model, tok = run.model_and_tok
    for start, group in groups:
        questions, prompts, group_diffs = [], [], []
        for job, diff in group:
            qs = random.Random(job["seed"] + 13).sample(
                heldout, min(ev.twenty_q_count, len(heldout))
            )
            questions.append(qs)
            trigger = f"{_trigger(job)} " if method == "twenty_questions_trigger" else ""
            prompts += [trigger + q for q in qs]
            group_diffs += [diff] * len(qs)
        # Seeded by the group's place in the full list, so a resumed run samples the same.
        torch.manual_seed(run.cfg.data.seed * 1000 + start)
        answers = iter(
            ask(
                model,
                tok,
                group_diffs,
                prompts,
                max_new_tokens=ev.twenty_q_max_new_tokens,
                batch_size=ev.batch_size,
                do_sample=True,
                temperature=1.0,
                desc=method,
                system=run.cfg.system_prompt,
            )
        )
        rows = []
        for (job, _), qs in zip(group, questions):
            transcript = [(q, next(answers)) for q in qs]
            if (job["diff_id"], method, None) in done:
                continue
            guess = tools.guess(transcript)
            row = _row(job, method, None, None, guess)
            row.update(guess=guess, guesser=tools.guesser_name, transcript=transcript)
            rows.append(row)
        append_jsonl(pred_path, rows)
        done.update(_key(r) for r in rows)
        kill_point("eval.append")
        log.info("%s: %d/%d diffs", method, start + len(group), len(jobs))


def _weight_lens(run, method: str, jobs, diffs, done: set, tools: _Tools, pred_path: Path) -> None:
    from .weight_lens import WeightLens

    pending = [
        (j, d) for j, d in zip(jobs, diffs) if (j["diff_id"], "weight_lens", None) not in done
    ]
    pending = distributed.share(pending)
    if not pending:
        return
    model, tok = run.model_and_tok
    lens = WeightLens(model, tok)
    guesser = tools.guesser
    for job, diff in tqdm(pending, desc="weight_lens", leave=False):
        try:
            out = lens.read(diff, guesser=guesser)
        except DataError as e:
            log.warning("skipping weight_lens: %s (diff %s)", e, job["diff_id"])
            return
        row = _row(job, "weight_lens", None, None, out["guess"])
        row.update(
            guess=out["guess"],
            guesser=tools.guesser_name if guesser else "top_token",
            lens_tokens=out["tokens"],
            lens_scores=out["scores"],
        )
        append_jsonl(pred_path, [row])  # each diff is its own deterministic computation
    log.info("weight_lens: %d predictions", len(pending))


# Every evaluation method by the name ``eval.methods`` uses, and the function that appends its
# missing predictions: f(run, method, jobs, diffs, done, tools, path). config.EVAL_METHODS (what
# the config accepts) holds the same names; a test keeps the two in step.
GENERATORS = {
    "dit": _ask_once,
    "base_question": _ask_once,
    "base_question_trigger": _ask_once,
    "gating": _ask_once,
    "twenty_questions": _twenty_questions,
    "twenty_questions_trigger": _twenty_questions,
    "weight_lens": _weight_lens,
}


# ---------------------------------------------------------------- scoring


def score_predictions(pred_path: Path, jobs_by_id: dict[str, dict], tools: _Tools) -> None:
    """Fill in each row's missing guess and metrics; rewrite the file only if something changed.

    Progress is saved even when a step fails (e.g. the judge's server goes away).
    """
    rows = read_jsonl(pred_path)
    changed = False
    try:
        for row in rows:
            job = jobs_by_id.get(row["diff_id"], {})
            names = [row["topic"], *job.get("aliases", [])]
            changed |= _score_row(row, names, tools)
            kill_point("eval.score")
    finally:
        if changed:
            write_jsonl(pred_path, rows)


def _score_row(row: dict, names: list[str], tools: _Tools) -> bool:
    before = json.dumps(row, sort_keys=True)
    scores = row.setdefault("scores", {})
    if row["method"] in GUESSED_METHODS and row.get("guess") is None and tools.guesser:
        row["guess"] = tools.guess([(row["question"], row["answer"])])
        row["guesser"] = tools.guesser_name
        scores.clear()  # they were the raw answer's; the guess is what gets scored
    guess = row.get("guess")
    prediction = guess if guess is not None else row["answer"]
    if "alias_match" not in scores:
        scores["alias_match"] = max(
            alias_match(row["answer"], names), alias_match(guess or "", names)
        )
    if row["method"] in GATE_METHODS:
        return json.dumps(row, sort_keys=True) != before
    if any(m not in scores for m in EMBEDDING_METRICS) and tools.embedder is not None:
        scores["embedding_cosine"] = embedding_cosine(tools.embedder, prediction, row["topic"])
        rank = retrieval_rank(tools.embedder, prediction, row["topic"], tools.topics)
        scores["retrieval_at_1"] = retrieval_at_k(rank, 1)
        scores["retrieval_at_5"] = retrieval_at_k(rank, 5)
    if "judge" not in scores and tools.judge is not None:
        scores["judge"] = float(tools.judge.score(prediction, row["topic"]))
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


def write_paired(ev_dir: Path) -> dict:
    """``{baseline: {metric: paired_difference(dit, baseline)}}`` on the diffs both scored."""
    per = _per_diff(read_jsonl(ev_dir / "predictions.jsonl"))
    dit = per.get("dit", {})
    paired: dict[str, dict] = {}
    for method, mets in per.items():
        if method == "dit" or method in GATE_METHODS:
            continue
        for metric, other in mets.items():
            shared = sorted(d for d in dit.get(metric, {}) if d in other)
            if shared:
                paired.setdefault(method, {})[metric] = paired_difference(
                    [dit[metric][d] for d in shared], [other[d] for d in shared]
                )
    write_json(ev_dir / "paired.json", paired)
    return paired


def write_scores(ev_dir: Path) -> dict:
    """Aggregate predictions into ``{method: {metric: {mean, ci95, n}}}``."""
    by: dict[str, dict[str, list[float]]] = {}
    for p in read_jsonl(ev_dir / "predictions.jsonl"):
        for metric, value in p["scores"].items():
            if value is not None:
                by.setdefault(p["method"], {}).setdefault(metric, []).append(float(value))
    scores = {m: {k: summarize(v) for k, v in mets.items()} for m, mets in by.items()}
    write_json(ev_dir / "scores.json", scores)
    return scores
