"""Diff training at one torch thread against two, on the embedded SmolLM2-135M, in this one run.

A long population run shares the machine with other work at ``threads = 1``; this says what that
costs. Both settings train the same diffs (the population's held-out recipe, a few steps) with
the same rows and KL targets; each is timed 3 times, alternating, and the medians are compared.
Run it with nothing else on the machine: the ratio is the point, not the seconds.

    .venv/bin/python benchmarks/bench_threads.py [--diffs 6] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_diff_gen import make_jobs

from ditkit import lora
from ditkit.config import load_config
from ditkit.models import load_model
from ditkit.tasks.hidden_topic import TASK, HiddenTopicOptions, RowData, load_questions
from ditkit.textgen import base_answers
from ditkit.train_diffs import KLTargets, train_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--diffs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config("population", [f"test_diffs.steps={args.steps}"]).diffs_for("test")
    model, tok = load_model("smollm2-135m")
    questions = [q.question for q in load_questions(split="train")][: cfg.questions_per_diff]
    with tempfile.TemporaryDirectory() as tmp:
        answers = base_answers(model, tok, questions, cfg.base_answer_tokens, Path(tmp) / "a.json")
    data = RowData(dict(zip(questions, answers)), HiddenTopicOptions())
    jobs = make_jobs(args.diffs, questions, offset=3)
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.targets)
    rows = [TASK.rows(j, tok, data, cfg, "") for j in jobs]
    kl = KLTargets(cfg.kl_topk)
    train_group(model, tok, jobs, data, cfg, "", kl, task=TASK, rows=rows)  # warm-up, KL targets
    times: dict[int, list[float]] = {2: [], 1: []}
    for _ in range(args.repeats):
        for threads in times:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            train_group(model, tok, jobs, data, cfg, "", kl, task=TASK, rows=rows)
            times[threads].append(time.perf_counter() - start)
    med = {t: statistics.median(v) for t, v in times.items()}
    n_rows = args.diffs * args.steps * cfg.rows_per_step
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                "rows_per_pass": n_rows,
                "seconds_per_row": {f"threads={t}": round(m / n_rows, 4) for t, m in med.items()},
                "threads1_over_threads2": round(med[1] / med[2], 2),
                "runs": {f"threads={t}": [round(x, 1) for x in v] for t, v in times.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
