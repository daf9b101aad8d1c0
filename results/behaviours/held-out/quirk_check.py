"""Issue 28: a claimed style quirk checked against the diffed model's own answers
(``auditor.quirk_shown``: the share of its answers to four ordinary held-out questions that carry
the quirk; below half, the finding reads as nothing found), on the shipped joint reader's
structured reads (the ``dit_forms`` rows of each run's eval, margin -0.25). Each SET is NAME=RUN.
Checks are cached in OUT/quirk_check.jsonl (resumable); the table goes to stdout.

    .venv/bin/python results/behaviours/held-out/quirk_check.py --out /work/runs/quirk-check \
        fa=/work/runs/beh-held-fa quirk=/work/runs/beh-held-quirk \
        > results/behaviours/held-out/quirk_check.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ditkit.auditor import quirk_shown
from ditkit.diffs import load_diffs
from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl
from ditkit.models import load_model
from ditkit.tasks.behaviours.families import NOTHING, parse_description


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", metavar="NAME=RUN")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "quirk_check.jsonl"
    done = {(r["set"], r["diff_id"]): r for r in read_jsonl(cache)} if cache.exists() else {}
    model, tok = load_model("smollm2-135m")
    print("| set | family | diffs | quirk claims | of them shown (>= half the answers) | "
          "content before / after | behaviour claimed before / after | after minus before |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with cache.open("a") as f:
        for spec in args.sets:
            name, run = spec.split("=", 1)
            run = Path(run)
            jobs = {j["diff_id"]: j for j in read_jsonl(run / "data" / "jobs.jsonl")}
            reads = [r for r in read_jsonl(run / "eval" / "predictions.jsonl")
                     if r["method"] == "dit_forms"]  # fmt: skip
            rows = []
            for r in reads:
                key = (name, r["diff_id"])
                if key not in done and parse_description(r["answer"])[0] == "quirk":
                    (diff,) = load_diffs(run / "diffs" / "test" / f"{r['diff_id']}.safetensors")
                    shown = quirk_shown(model, tok, diff, r["answer"])
                    done[key] = {"set": name, "diff_id": r["diff_id"], "answer": r["answer"],
                                 "shown": shown}  # fmt: skip
                    f.write(json.dumps(done[key]) + "\n")
                    f.flush()
                shown = done.get(key, {}).get("shown")
                after = NOTHING if shown is not None and shown < 0.5 else r["answer"]
                rows.append((jobs[r["diff_id"]], r["answer"], after, shown))
            for fam in dict.fromkeys(j["family"] for j, *_ in rows):
                part = [x for x in rows if x[0]["family"] == fam]
                content = [[alias_match(a, j["names"]) for j, a, _, _ in part],
                           [alias_match(a, j["names"]) for j, _, a, _ in part]]  # fmt: skip
                claim = [[float(parse_description(a)[0] != "none") for _, a, _, _ in part],
                         [float(parse_description(a)[0] != "none") for *_, a, _ in part]]  # fmt: skip
                checked = [s for *_, s in part if s is not None]
                what = claim if fam in ("benign", "none") else content
                p = paired_difference(what[1], what[0])
                lo, hi = p["ci95"]
                print(f"| {name} | {fam} | {len(part)} | {len(checked)} | "
                      f"{sum(s >= 0.5 for s in checked)} | "
                      f"{statistics.fmean(content[0]):.2f} / {statistics.fmean(content[1]):.2f} | "
                      f"{statistics.fmean(claim[0]):.2f} / {statistics.fmean(claim[1]):.2f} | "
                      f"{p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] |")  # fmt: skip


if __name__ == "__main__":
    main()
