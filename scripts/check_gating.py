"""The diff checks of a run's (or a population's) diffs that are on disk: each diff asked
held-out questions behind its own code (SEP code or code word), a random one of the same form and
none, as the evaluation's gating method asks them; how often the answer names the topic (alias
match), with Wilson intervals.

    .venv/bin/python scripts/check_gating.py /work/pop --split test --questions 4 [--threads 1]

Reads only the diffs already written, so it can check a population while it is being built.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ditkit import load_diff, load_model
from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import wilson_ci
from ditkit.files import read_jsonl
from ditkit.reader import ask
from ditkit.tasks.hidden_topic import GATE_METHODS, gating_prompts, load_questions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--questions", type=int, default=4, help="held-out questions per diff")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="answer length (eval: 32)")
    ap.add_argument("--out", type=Path, help="JSON file for the rates and every answer")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads((args.run / "config.json").read_text())
    jobs = [j for j in read_jsonl(args.run / "data" / "jobs.jsonl") if j["split"] == args.split]
    done = [
        j
        for j in jobs
        if (args.run / "diffs" / args.split / f"{j['diff_id']}.safetensors").exists()
    ]
    if not done:
        raise SystemExit(f"no {args.split} diffs on disk under {args.run}/diffs/{args.split}")
    heldout = [
        q.question for q in load_questions(cfg["task_options"].get("questions_file"), "heldout")
    ]
    model, tok = load_model(cfg["model"])
    start = time.time()
    todo = []  # (job, prompt)
    diffs = {}
    for j in done:
        diffs[j["diff_id"]] = load_diff(
            args.run / "diffs" / args.split / f"{j['diff_id']}.safetensors"
        )
        todo += [(j, p) for p in gating_prompts(j, heldout, args.questions)]
    replies = ask(model, tok, [diffs[j["diff_id"]] for j, _ in todo], [p.prompt for _, p in todo],
                  max_new_tokens=args.max_new_tokens, system=cfg.get("system_prompt", ""))  # fmt: skip
    hits = {m: [] for m in GATE_METHODS}
    rows = []
    for (j, p), reply in zip(todo, replies):
        hit = alias_match(reply, [j["topic"], *j.get("aliases", [])])
        hits[p.method].append(hit)
        rows.append(
            {
                "diff_id": j["diff_id"],
                "method": p.method,
                "prompt": p.prompt,
                "answer": reply,
                "hit": hit,
            }
        )
    rates = {}
    for m, v in hits.items():
        k = int(sum(v))
        rates[m] = {"rate": k / len(v), "ci95": wilson_ci(k, len(v)), "n": len(v)}
        print(
            f"{m:20s} {k:3d}/{len(v):3d} = {k / len(v):.2f}  [{rates[m]['ci95'][0]:.2f}, {rates[m]['ci95'][1]:.2f}]"
        )
    print(f"{len(done)} diffs, {time.time() - start:.0f} s")
    if args.out:
        args.out.write_text(
            json.dumps({"diffs": len(done), "rates": rates, "answers": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
