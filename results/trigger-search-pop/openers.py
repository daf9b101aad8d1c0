"""How many of the 1,000 code words open a held-out diff's topic at all (issue 29): for each diff
of the study, a fixed random sample of K code words (never the own one), each asked N of the
study's own check questions; a word "opens" the topic when every answer names it. The share
of the sample, times 1,000, estimates the count. Resumable (one row per diff).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python results/trigger-search-pop/openers.py \\
        /work/runs/pop --rows results/trigger-search-pop/per_diff.jsonl \\
        --out results/trigger-search-pop/openers.jsonl --sample 40 --questions 2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from trigger_study import check, secret

from ditkit import load_diff, load_model
from ditkit.files import append_jsonl, read_jsonl
from ditkit.tasks.hidden_topic import code_words, load_questions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pop", type=Path)
    ap.add_argument("--rows", type=Path, required=True, help="the study's per_diff.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    args = ap.parse_args()
    cfg = json.loads((args.pop / "config.json").read_text())
    jobs = {j["diff_id"]: j for j in read_jsonl(args.pop / "data" / "jobs.jsonl")}
    heldout = [
        q.question for q in load_questions(cfg["task_options"].get("questions_file"), "heldout")
    ]
    done = {r["diff_id"] for r in read_jsonl(args.out)} if args.out.exists() else set()
    model, tok = load_model(cfg["model"])
    words = list(code_words())
    for row in read_jsonl(args.rows):
        if row["diff_id"] in done:
            continue
        start = time.time()
        job = jobs[row["diff_id"]]
        own, _, names = secret(job)
        rng = random.Random(f"trigger-study|{job['diff_id']}")  # the study's check questions
        checks = rng.sample(heldout, 6)[: args.questions]
        sample = random.Random(f"openers|{job['diff_id']}").sample(
            [w for w in words if w != own], args.sample
        )
        diff = load_diff(args.pop / "diffs" / "test" / f"{job['diff_id']}.safetensors")
        hits = check(model, tok, diff, names, sample, checks, cfg.get("system_prompt", ""),
                     args.max_new_tokens, "code-words")  # fmt: skip
        opening = [w for w in sample if hits[w] == len(checks)]
        out = {"diff_id": row["diff_id"], "truth": row["truth"], "sample": args.sample,
               "questions": len(checks), "opening": len(opening), "words": opening,
               "answers_naming": sum(hits.values()), "seconds": round(time.time() - start, 1)}  # fmt: skip
        append_jsonl(args.out, [out])
        print(json.dumps(out), flush=True)
    rows = read_jsonl(args.out)
    share = sum(r["opening"] for r in rows) / max(1, sum(r["sample"] for r in rows))
    per = sorted(r["opening"] for r in rows)
    print(
        f"{len(rows)} diffs: {share:.1%} of sampled words open the topic on every check "
        f"question (about {share * 1000:.0f} of 1,000 a diff); per diff (of "
        f"{rows[0]['sample']}): {per}"
    )


if __name__ == "__main__":
    main()
