"""Evaluate a run's held-out test diffs: DIT and the baselines, resumable, scored per prediction."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from ..describe import ask
from ..diffs import load_diff
from ..tasks.hidden_topic import load_questions, make_trigger, random_prefix
from .metrics import alias_match
from .stats import summarize

log = logging.getLogger(__name__)

GATE_METHODS = ("gate_trigger", "gate_wrong_trigger", "gate_none")


def _read_predictions(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def _prompts(method: str, job: dict, question: str, dit_question: str) -> list[tuple[str, str]]:
    """(question asked, prompt) pairs for one diff and method."""
    rng = random.Random(job["seed"] + 7)
    trigger = make_trigger(job["prefix"], rng)
    if method in ("dit", "base_question"):
        return [(dit_question, dit_question)]
    if method == "base_question_trigger":
        return [(dit_question, f"{trigger} {dit_question}")]
    raise ValueError(method)


def evaluate_run(run) -> dict:
    """Write ``eval/predictions.jsonl`` (appending only what is missing) and ``eval/scores.json``."""
    from ..pipeline import load_test_diffs

    cfg = run.cfg
    ev_dir = run.out / "eval"
    ev_dir.mkdir(parents=True, exist_ok=True)
    pred_path = ev_dir / "predictions.jsonl"
    done = {(p["diff_id"], p["method"], p["question"]) for p in _read_predictions(pred_path)}
    jobs, diffs = load_test_diffs(run)
    model, tok = run.model_and_tok
    adapter_dir = run.out / "dit" / "adapter"
    adapter = load_diff(adapter_dir) if adapter_dir.exists() else None
    dit_question = cfg.dit.question
    heldout = [q.question for q in load_questions(cfg.data.questions_file, "heldout")]

    for method in cfg.eval.methods:
        if method == "dit" and adapter is None:
            log.warning("no DIT adapter at %s: skipping method dit", adapter_dir)
            continue
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
                for q, prompt in _prompts(method, job, "", dit_question):
                    todo.append((job, diff, method, q, prompt))
        todo = [t for t in todo if (t[0]["diff_id"], t[2], t[3]) not in done]
        if not todo:
            continue
        gate = method == "gating"
        answers = ask(
            model,
            tok,
            [t[1] for t in todo],
            [t[4] for t in todo],
            adapter=adapter if method == "dit" else None,
            max_new_tokens=cfg.eval.gate_max_new_tokens if gate else cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            desc=method,
        )
        rows = []
        for (job, _diff, name, q, prompt), answer in zip(todo, answers):
            names = [job["topic"], *job["aliases"]]
            rows.append(
                {
                    "diff_id": job["diff_id"],
                    "topic": job["topic"],
                    "trigger": make_trigger(job["prefix"], random.Random(job["seed"] + 7)),
                    "method": name,
                    "question": q,
                    "prompt": prompt,
                    "answer": answer,
                    "guess": None,
                    "scores": {"alias_match": alias_match(answer, names)},
                }
            )
        _append(pred_path, rows)
        log.info("%s: %d predictions", method, len(rows))
    return write_scores(ev_dir)


def write_scores(ev_dir: Path) -> dict:
    """Aggregate predictions into ``{method: {metric: {mean, ci95, n}}}``."""
    by: dict[str, dict[str, list[float]]] = {}
    for p in _read_predictions(ev_dir / "predictions.jsonl"):
        for metric, value in p["scores"].items():
            if value is not None:
                by.setdefault(p["method"], {}).setdefault(metric, []).append(float(value))
    scores = {m: {k: summarize(v) for k, v in mets.items()} for m, mets in by.items()}
    (ev_dir / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
    return scores
