"""Which read-time multiplier to read the population's held-out diffs at: every scale a reader's
dit_vote rows hold (its own folder plus any folder that only read it, e.g. n300scales-s0), each
scale's answer scored alone, on held-out diffs FIRST..LAST (the choice was made on 1-50; 51-100
confirm it). Prints a Markdown table; ``--pair A@S B@T`` adds reader A at xS minus reader B at
xT, paired on the same diffs.

    .venv/bin/python results/reader-scaling/read_scale.py /work/runs/pop n300-s0+n300scales-s0 \
        n300-s1 n150-s0 --first 1 --last 50
    .venv/bin/python results/reader-scaling/read_scale.py /work/runs/pop jointprefq-s0 \
        n300-s0+n300scales-s0 --first 1 --last 100 --pair jointprefq-s0@1.5 n300-s0+n300scales-s0@1.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl


def answers_by_scale(pop: Path, folders: list[str]) -> dict[str, dict[float, str]]:
    """``{diff_id: {scale: answer}}`` from the dit (scale 1) and dit_vote rows of ``folders``."""
    out: dict[str, dict[float, str]] = {}
    for name in folders:
        for r in read_jsonl(pop / "readers" / name / "eval" / "predictions.jsonl"):
            if r["method"] == "dit":
                out.setdefault(r["diff_id"], {}).setdefault(1.0, r["answer"])
            elif r["method"] == "dit_vote":
                for scale, _, answer in r["votes"]:
                    out.setdefault(r["diff_id"], {}).setdefault(float(scale), answer)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pop", type=Path)
    ap.add_argument("readers", nargs="+", help="reader folders, A+B joins folders of one reader")
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--last", type=int, default=50)
    ap.add_argument("--pair", nargs=2, metavar=("A@S", "B@T"),
                    help="print reader A at xS minus reader B at xT, paired per diff")  # fmt: skip
    args = ap.parse_args()
    jobs = [j for j in read_jsonl(args.pop / "data" / "jobs.jsonl") if j["split"] == "test"]
    held = jobs[args.first - 1 : args.last]
    if not held:
        raise SystemExit(f"--first {args.first} --last {args.last}: no held-out diffs there")
    per_diff = {}  # {reader: {scale: [alias match per held-out diff]}}
    for spec in args.readers:
        answers = answers_by_scale(args.pop, spec.split("+"))
        scales = sorted(set.intersection(*(set(answers.get(j["diff_id"], {})) for j in held)))
        per_diff[spec] = {
            s: [
                alias_match(answers[j["diff_id"]][s], [j["topic"], *j.get("aliases", [])])
                for j in held
            ]
            for s in scales
        }
    table = {spec: {s: sum(v) / len(v) for s, v in row.items()} for spec, row in per_diff.items()}
    scales = sorted({s for row in table.values() for s in row})
    print(f"DIT alias match on held-out diffs {args.first}-{args.last}, by read-time multiplier")
    print()
    print("| reader | " + " | ".join(f"x{s:g}" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for spec, row in table.items():
        cells = [f"{row[s]:.2f}" if s in row else "" for s in scales]
        print(f"| {spec} | " + " | ".join(cells) + " |")
    if args.pair:
        (a, sa), (b, sb) = (x.rsplit("@", 1) for x in args.pair)
        try:
            d = paired_difference(per_diff[a][float(sa)], per_diff[b][float(sb)])
        except KeyError as e:
            raise SystemExit(f"--pair {' '.join(args.pair)}: no reads for {e} (list the reader)")
        lo, hi = d["ci95"]
        print(f"\n{a} x{sa} - {b} x{sb}: {d['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"({d['wins']} wins / {d['losses']} losses, n = {d['n']})")  # fmt: skip


if __name__ == "__main__":
    main()
