"""The first HELD held-out topics with and without self questions in every diff's rows: each
method's alias match on /work/runs/pilot-self (with) and /work/runs/pop (without, the same jobs,
topics and code words), and DIT minus the base question / guessed code, paired per diff.

    .venv/bin/python results/self-questions/compare20.py --held 20 > results/self-questions/compare20.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl

WITH = Path("/work/runs/pilot-self/readers")
WITHOUT = Path("/work/runs/pop/readers")
# (label, folder with self questions, folders without, methods read from them)
ROWS = [
    ("shipped reader", ["h-shipped-s0"], ["shipped-s0"]),
    ("population n37 (seed 0)", ["h-pop37-s0"], ["n37-s0"]),
    (
        "population n150 (3 seeds)",
        ["h-pop150-s0", "h-pop150s1-s0", "h-pop150s2-s0"],
        ["n150-s0", "n150-s1", "n150-s2"],
    ),
    ("self37 (37 self-question training diffs)", ["h-self37-s0"], []),
]
BASELINES = ("base_question", "base_question_guessed_code", "base_question_trigger")


def scores(folder: Path, method: str, held: list[str]) -> dict[str, float]:
    found = {}
    for r in read_jsonl(folder / "eval" / "predictions.jsonl"):
        if r["method"] == method and r["diff_id"] in held and r.get("scores"):
            found.setdefault(r["diff_id"], float(r["scores"]["alias_match"]))
    return found


def mean_of(folders: list[Path], method: str, held: list[str]) -> dict[str, float] | None:
    runs = [scores(f, method, held) for f in folders]
    if not runs or any(len(r) < len(held) for r in runs):
        return None
    return {d: statistics.mean(r[d] for r in runs) for d in held}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--held", type=int, default=20)
    args = ap.parse_args()
    held = [f"test-{i:05d}" for i in range(args.held)]
    out = {"held": held, "rows": []}
    print(f"First {args.held} held-out topics (same jobs, topics and code words): alias match "
          "without / with 6 self questions per diff; DIT minus the base question and minus the "
          "guessed code, paired per diff (95% interval).\n")  # fmt: skip
    base = {
        side: {m: mean_of([root / "h-shipped-s0" if side == "with" else root / "shipped-s0"], m,
                          held) for m in BASELINES}
        for side, root in (("with", WITH), ("without", WITHOUT))
    }  # fmt: skip
    print("| method | without | with |\n|---|---|---|")
    for m in BASELINES:
        w, o = base["with"][m], base["without"][m]
        print(f"| {m} | {statistics.mean(o.values()):.2f} | {statistics.mean(w.values()):.2f} |")
        out["rows"].append({"method": m, "without": o, "with": w})
    print("\n| reader | method | without | with | with: minus base question | with: minus guessed "
          "code | without: minus base question |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for label, with_dirs, without_dirs in ROWS:
        for method in ("dit", "dit_vote"):
            w = mean_of([WITH / d for d in with_dirs], method, held)
            o = mean_of([WITHOUT / d for d in without_dirs], method, held) if without_dirs else None
            if w is None:
                continue

            def cell(a, b):
                p = paired_difference([a[d] for d in held], [b[d] for d in held])
                return f"{p['mean_diff']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"

            print(f"| {label} | {method} | {'-' if o is None else f'{statistics.mean(o.values()):.2f}'} | "
                  f"{statistics.mean(w.values()):.2f} | {cell(w, base['with']['base_question'])} | "
                  f"{cell(w, base['with']['base_question_guessed_code'])} | "
                  f"{'-' if o is None else cell(o, base['without']['base_question'])} |")  # fmt: skip
            out["rows"].append({"reader": label, "method": method, "without": o, "with": w})
    Path(__file__).with_name(f"compare{args.held}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
