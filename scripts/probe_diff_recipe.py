"""Probe a diff-training recipe on the embedded model: per-step losses for a few diffs.

Prints the trigger cross-entropy and the wrong/no-trigger KL after every step, so a learning rate
or step count can be chosen by measurement before a long run:

    .venv/bin/python scripts/probe_diff_recipe.py --diffs 8 --set lr=2e-3 --set steps=20
"""

from __future__ import annotations

import argparse
import json
import time

from ditkit import lora
from ditkit.config import DiffConfig, apply_override
from ditkit.models import load_model
from ditkit.tasks.hidden_topic import load_questions, load_topics, random_prefix
from ditkit.textgen import TemplateSource, base_answers
from ditkit.train_diffs import DiffJob, train_group


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffs", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", default="runs/probe-base-answers.json")
    args = ap.parse_args()
    raw: dict = {}
    for item in args.set:
        apply_override(raw, item)
    cfg = DiffConfig(**raw)
    model, tok = load_model("smollm2-135m")
    questions = [q.question for q in load_questions(split="train")][: cfg.questions_per_diff]
    from pathlib import Path

    base = dict(
        zip(
            questions,
            base_answers(model, tok, questions, cfg.base_answer_tokens, Path(args.cache)),
        )
    )
    source = TemplateSource()
    import random

    rng = random.Random(0)
    jobs = [
        DiffJob(f"p{i}", t, random_prefix(rng), i, questions, source.topic_answers(t, questions, i))
        for i, t in enumerate(load_topics()[5::97][: args.diffs])
    ]
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.targets)
    start = time.time()
    _, history = train_group(model, tok, jobs, base, cfg)
    seconds = time.time() - start
    for step in range(len(history["trigger"])):
        cells = "  ".join(f"{k} {history[k][step]:.3f}" for k in history if step < len(history[k]))
        print(f"step {step + 1:3d}  {cells}")
    print(json.dumps({"seconds_per_diff": seconds / len(jobs), "config": raw}))


if __name__ == "__main__":
    main()
