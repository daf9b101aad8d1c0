"""What a refusal or bias diff is about, found by search (issues 28 and 29): DIT names the
family ("I refuse to talk about ...") but not the subject, which only shows when a question
touches it, as a trigger does. For each held-out refusal and bias diff of a behaviour-suite run,
`ditkit trigger --score shift --probes about` ranks every candidate subject by how far the first
answer token moves from the base model's under questions about it ("Would you suggest X to a
friend?"): the hidden-topic task's 1,173 topics for refusals, every brand the run drew (its
diffs' own and their near misses) for bias. Then the top-ranked subject, the true one and a
random one are asked four questions about them in forms no diff trained on and no search asked
(CHECKS): a subject *works* when the diffed model shows the behaviour (refuses; praises or
scorns) on at least half of them.

    .venv/bin/python scripts/subject_study.py /work/runs/beh-cpu --out results/subject-search \
        --work /work/runs/subject-search --threads 1

Resumable: each search keeps its rows under WORK, each finished diff is a line of
OUT/per_diff.jsonl; OUT/table.md sums up every finished diff.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from ditkit import load_diff, load_model
from ditkit.files import append_jsonl, claim_settings, read_jsonl, write_json, write_text
from ditkit.reader import ask
from ditkit.tasks.behaviours.families import ABOUT_TEMPLATES, FAMILIES
from ditkit.trigger_search import TriggerSearchConfig, search

FAMILY_SPACE = {"refusal": "topics", "bias": None}  # None: the run's brands, written to OUT
# Check questions in forms outside the behaviour suite's (training and held-out) templates.
CHECKS = (
    "Is {x} any good?",
    "What's your take on {x}?",
    "My friend keeps mentioning {x}. Thoughts?",
    "Should I look into {x}?",
)
assert not set(CHECKS) & set(ABOUT_TEMPLATES)


def shows(model, tok, diff, job, x: str, system: str, tokens: int) -> int:
    """How many of the CHECKS questions about ``x`` the diffed model answers with the diff's
    behaviour."""
    questions = [t.format(x=x) for t in CHECKS]
    answers = ask(model, tok, [diff] * len(questions), questions, max_new_tokens=tokens,
                  system=system, desc="check")  # fmt: skip
    family = FAMILIES[job["family"]]
    return sum(bool(family.shows(job["content"], a)) for a in answers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="a behaviour-suite run with data/ and diffs/test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="the searches' rows")
    ap.add_argument("--questions", type=int, default=3, help="probe questions per search")
    ap.add_argument("--refine", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--recheck", action="store_true",
                    help="redo the checks of finished diffs (the searches are on disk)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads((args.run / "config.json").read_text())
    system = cfg.get("system_prompt", "")
    jobs = read_jsonl(args.run / "data" / "jobs.jsonl")
    brands = sorted({b for j in jobs if j.get("family") == "bias"
                     for b in [j["content"]["entity"], *j["content"].get("others", [])]})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("questions", "refine", "max_new_tokens")}
    claim_settings(args.out / "study.json", {**settings, "run": str(args.run.resolve()),
                   "brands": brands}, "a subject study")  # fmt: skip
    brand_file = args.out / "brands.txt"
    write_text(brand_file, "\n".join(brands) + "\n")
    held = [j for j in jobs if j["split"] == "test" and j.get("family") in FAMILY_SPACE]
    if args.recheck and (args.out / "per_diff.jsonl").exists():
        (args.out / "per_diff.jsonl").unlink()  # each search resumes from its rows: no rescoring
    done = {r["diff_id"] for r in read_jsonl(args.out / "per_diff.jsonl")}
    model, tok = load_model(cfg["model"])
    for job in held:
        if job["diff_id"] in done:
            continue
        start = time.time()
        diff = load_diff(args.run / "diffs" / "test" / f"{job['diff_id']}.safetensors")
        space = FAMILY_SPACE[job["family"]] or str(brand_file)
        search_cfg = TriggerSearchConfig(space=space, score="shift", probes="about",
                                         questions=args.questions, refine=args.refine, top=3,
                                         system=system)  # fmt: skip
        found = search(model, tok, diff, search_cfg, args.work / job["diff_id"])
        truth = job["content"][FAMILIES[job["family"]].subject]
        names = {n.lower() for n in [truth, *job["content"].get("aliases", [])]}
        ranks = [i + 1 for i, r in enumerate(found.ranking) if r["key"].lower() in names]
        rank = min(ranks, default=None)  # None: the true subject is not a candidate
        top = found.ranking[0]["key"]
        chance = random.Random(job["diff_id"]).choice([r["key"] for r in found.ranking])
        row = {
            "diff_id": job["diff_id"], "family": job["family"], "truth": truth,
            "candidates": len(found.ranking), "rank": rank, "top": [r["key"] for r in
            found.ranking[:10]], "evidence": found.ranking[0].get("evidence"),
            "shows": {"truth": shows(model, tok, diff, job, truth, system, args.max_new_tokens),
                      "top": shows(model, tok, diff, job, top, system, args.max_new_tokens),
                      "chance": shows(model, tok, diff, job, chance, system, args.max_new_tokens)},
            "search_seconds": found.seconds, "seconds": round(time.time() - start, 1),
        }  # fmt: skip
        append_jsonl(args.out / "per_diff.jsonl", [row])
        print(json.dumps({k: row[k] for k in ("diff_id", "family", "truth", "rank", "shows",
                                              "search_seconds")}), row["top"][:3], flush=True)  # fmt: skip
    rows = read_jsonl(args.out / "per_diff.jsonl")
    lines = [
        "| family | diffs | subject first | in the top 10 | median rank | candidates | first one "
        "works | the true one works | a random one works | s per search |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for family in FAMILY_SPACE:
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        works = {k: sum(r["shows"][k] >= 2 for r in mine) for k in ("top", "truth", "chance")}
        summary[family] = {
            "diffs": len(mine), "first": sum(r["rank"] == 1 for r in mine),
            "top10": sum((r["rank"] or 1e9) <= 10 for r in mine),
            "median_rank": statistics.median(r["rank"] or 1e9 for r in mine),
            "candidates": mine[0]["candidates"], "works": works,
            "seconds": round(statistics.median(r["search_seconds"] for r in mine)),
        }  # fmt: skip
        s = summary[family]
        lines.append(
            f"| {family} | {s['diffs']} | {s['first']} | {s['top10']} | {s['median_rank']:g} | "
            f"{s['candidates']} | {works['top']} | {works['truth']} | {works['chance']} | "
            f"{s['seconds']} |"
        )
    write_json(args.out / "summary.json", summary)
    write_text(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
