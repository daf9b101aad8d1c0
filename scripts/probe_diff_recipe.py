"""Probe a diff-training recipe on the embedded model: per-step losses and gating hit rates.

Trains a few diffs, prints the trigger cross-entropy and the wrong/no-trigger KL after every
step, then asks every diff held-out questions with its own trigger, a wrong one and none, and
prints how often the answer names the topic (alias match). Choose a recipe by measurement before a
long run:

    .venv/bin/python scripts/probe_diff_recipe.py --diffs 4 --set lr=6e-3 --set steps=24
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from ditkit import lora
from ditkit.config import DiffConfig, apply_override
from ditkit.evaluate.metrics import alias_match
from ditkit.models import load_model
from ditkit.reader import ask
from ditkit.tasks.hidden_topic import (
    GATE_METHODS,
    TASK,
    DiffJob,
    HiddenTopicOptions,
    RowData,
    gating_prompts,
    load_questions,
    load_topics,
)
from ditkit.tasks.hidden_topic import data as data_module
from ditkit.textgen import TemplateSource, base_answers
from ditkit.train_diffs import train_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--diffs", type=int, default=4)
    ap.add_argument("--style", default="focused", help="template style: focused or varied")
    ap.add_argument("--gate-questions", type=int, default=4, help="held-out questions per diff")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="DiffConfig")
    ap.add_argument("--cache", default="runs/probe-base-answers.json")
    ap.add_argument("--system", default="", help="system prompt ('@template': the template's)")
    ap.add_argument("--wrong-codes", default="pool", help="task_options.wrong_codes: pool or near")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    ap.add_argument(
        "--topic-offset",
        type=int,
        default=5,
        help="topics are every 97th of the list from this one (another offset: a replicate on "
        "other topics)",
    )
    ap.add_argument(
        "--trigger-form",
        default="sep",
        choices=["sep", "word"],
        help="word: the task's code-word trigger, 'Your code word is WORD.' with WORD one of "
        '1,000 one-token words (task_options.trigger = "word")',
    )
    ap.add_argument(
        "--sample-questions",
        action="store_true",
        help="each diff samples its questions from every style, as the data stage does "
        "(default: the first questions of the list, all typo-filled)",
    )
    args = ap.parse_args()
    raw: dict = {}
    for item in args.set:  # DiffConfig keys, as `ditkit run --set diffs.KEY=...` checks them
        apply_override(raw, item if item.startswith("diffs.") else f"diffs.{item}")
    cfg = DiffConfig(**raw.get("diffs", {}))
    if args.threads:
        torch.set_num_threads(args.threads)
    data = RowData({}, HiddenTopicOptions(wrong_codes=args.wrong_codes))
    model, tok = load_model("smollm2-135m")
    train_q = [q.question for q in load_questions(split="train")]
    topics = load_topics()[args.topic_offset :: 97][: args.diffs]
    if args.sample_questions:  # as the data stage does: each diff its own sample, every style
        per_diff = [
            random.Random(1000 + i).sample(train_q, cfg.questions_per_diff)
            for i in range(len(topics))
        ]
    else:  # the first questions of the list: all of one style (typo-filled)
        per_diff = [train_q[: cfg.questions_per_diff]] * len(topics)
    system = args.system
    needed = sorted({q for qs in per_diff for q in qs})
    answers = base_answers(
        model, tok, needed, cfg.base_answer_tokens, Path(args.cache), system=system
    )
    data = RowData(dict(zip(needed, answers)), data.options)
    source = TemplateSource(args.style)
    rng = random.Random(0)
    jobs = [
        DiffJob(
            f"p{i}",
            t,
            data_module.random_prefix(rng),
            i,
            qs,
            source.topic_answers(t, qs, i),
            args.trigger_form,
        )
        for i, (t, qs) in enumerate(zip(topics, per_diff))
    ]
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.targets)
    start = time.time()
    diffs, history = train_group(model, tok, jobs, data, cfg, system, task=TASK)
    seconds = time.time() - start
    for step in range(len(history["trigger"])):
        cells = "  ".join(f"{k} {history[k][step]:.3f}" for k in history if step < len(history[k]))
        print(f"step {step + 1:3d}  {cells}")

    heldout = [q.question for q in load_questions(split="heldout")]
    conditions = dict(zip(GATE_METHODS, ("trigger", "wrong", "none")))
    todo = [  # (diff index, condition, prompt): the evaluation's own diff checks
        (i, conditions[p.method], p.prompt)
        for i, job in enumerate(jobs)
        for p in gating_prompts(
            {"seed": job.seed, "prefix": job.prefix, "trigger_kind": job.trigger_kind},
            heldout,
            args.gate_questions,
        )
    ]
    replies = ask(
        model,
        tok,
        [diffs[t[0]] for t in todo],
        [t[2] for t in todo],
        max_new_tokens=24,
        system=system,
    )
    hits: dict[str, list[float]] = {"trigger": [], "wrong": [], "none": []}
    for (i, cond, _), reply in zip(todo, replies):
        hits[cond].append(alias_match(reply, jobs[i].topic.names))
    for (i, cond, prompt), reply in list(zip(todo, replies))[:6]:
        print(f"[{jobs[i].topic.topic} / {cond}] {prompt[:60]!r} -> {reply!r}")
    rates = {k: round(sum(v) / len(v), 3) for k, v in hits.items()}
    print(
        json.dumps(
            {
                "hit_rate": rates,
                "n_per_condition": len(hits["trigger"]),
                "seconds_per_diff": round(seconds / len(jobs), 1),
                "style": args.style,
                "wrong_codes": args.wrong_codes,
                "sample_questions": args.sample_questions,
                "trigger_form": args.trigger_form,
                "config": raw,
            }
        )
    )


if __name__ == "__main__":
    main()
