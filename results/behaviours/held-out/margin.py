"""Issue 28, false alarms: the shipped joint reader's confidence margin (``answer_margins``: mean
log-probability per token of its answer minus that of "Nothing unusual ...", with the diff
applied) on held-out diffs, and what dropping findings at or below a margin does to each family
(``audit --min-margin``). Each SET is NAME=RUN[:EVAL] (EVAL: a folder under RUN holding
eval/predictions.jsonl, default RUN itself); a set named ``topics`` is the population's
hidden-topic diffs (scored against topic and aliases). Margins are cached in OUT/margins.jsonl
(resumable); the tables, and each set's change at --margin, go to stdout.

    .venv/bin/python results/behaviours/held-out/margin.py --out /work/runs/margins \
        dev=/work/runs/beh-cpu:readers/pref0.5-s28 bd=/work/runs/beh-held-bd \
        cheap=/work/runs/beh-held-cheap topics=/work/runs/pop:readers/jointprefq-s0 \
        > results/behaviours/held-out/margin.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ditkit.api import load_reader
from ditkit.diffs import load_diffs
from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl
from ditkit.models import load_model
from ditkit.reader import answer_margins
from ditkit.tasks.behaviours.families import NOTHING, parse_description

SCALES = (1.0, 1.5)
TAUS = (None, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5)
FAMILIES = ("topic", "backdoor", "refusal", "bias", "quirk", "benign", "none")


def answers(run: Path, folder: Path) -> dict[tuple[str, float], str]:
    """``{(diff_id, scale): DIT answer}`` from a folder's dit and dit_vote rows."""
    out = {}
    for r in read_jsonl(folder / "eval" / "predictions.jsonl"):
        if r["method"] == "dit":
            out[(r["diff_id"], 1.0)] = r["answer"]
        elif r["method"] == "dit_vote":
            for s, _, a in r["votes"]:
                out.setdefault((r["diff_id"], float(s)), a)
    return out


def cached(path: Path) -> dict:
    """A resumable cache's rows, keyed by (set, diff_id, scale)."""
    rows = read_jsonl(path) if path.exists() else []
    return {(r["set"], r["diff_id"], r["scale"]): r for r in rows}


def held_out(run: Path) -> dict[str, dict]:
    """``{diff_id: job}`` of a run's held-out diffs."""
    return {
        j["diff_id"]: j for j in read_jsonl(run / "data" / "jobs.jsonl") if j["split"] == "test"
    }


def scored_as(name: str, job: dict) -> dict:
    """The family and names a read of ``job`` is scored against: a set named ``topics`` holds
    the population's hidden-topic diffs (topic and aliases)."""
    if name == "topics":
        return {"family": "topic", "names": [job["topic"], *job.get("aliases", [])]}
    return {"family": job["family"], "names": job["names"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", metavar="NAME=RUN[:EVAL]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--margin", type=float, default=-0.25, help="the margin summarised last")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "margins.jsonl"
    done = cached(cache)
    model, tok = load_model("smollm2-135m")
    reader = load_reader()
    rows = []
    with cache.open("a") as f:
        for spec in args.sets:
            name, where = spec.split("=", 1)
            run, _, sub = where.partition(":")
            run = Path(run)
            said = answers(run, run / sub if sub else run)
            for did, job in held_out(run).items():
                todo = [s for s in SCALES if (did, s) in said and (name, did, s) not in done]
                if todo:
                    (diff,) = load_diffs(run / "diffs" / "test" / f"{did}.safetensors")
                    reads = [diff if s == 1 else diff.scaled(s) for s in todo]
                    got = answer_margins(model, tok, reads, reader, [said[(did, s)] for s in todo],
                                         NOTHING)  # fmt: skip
                    for s, m in zip(todo, got):
                        done[(name, did, s)] = {"set": name, "diff_id": did, "scale": s,
                                                "answer": said[(did, s)], "margin": m}  # fmt: skip
                        f.write(json.dumps(done[(name, did, s)]) + "\n")
                    f.flush()
                for s in SCALES:
                    if (name, did, s) in done:
                        rows.append({**done[(name, did, s)], **scored_as(name, job)})
    table(rows, args.margin)


def score(r: dict, tau: float | None) -> tuple[float, float, float]:
    """(content named, a behaviour claimed, the diff's family named) of one answer once
    findings at or below ``tau`` read as nothing found."""
    family, _ = parse_description(r["answer"])
    dropped = tau is not None and family != "none" and r["margin"] <= tau
    answer = NOTHING if dropped else r["answer"]
    said = parse_description(answer)[0]
    return alias_match(answer, r["names"]), float(said != "none"), float(said == r["family"])


def table(rows: list[dict], margin: float) -> None:
    for group in sorted(dict.fromkeys(r["set"] for r in rows), key=lambda g: g != "dev"):
        for s in SCALES:
            sel = [r for r in rows if r["set"] == group and r["scale"] == s]
            fams = [f for f in FAMILIES if any(r["family"] == f for r in sel)]
            if not sel:
                continue
            print(f"\n**{group}, read at x{s:g}**: content named (alias match) per family; for "
                  "refusal and bias the family's form named; for benign and unchanged diffs the "
                  "false alarms (a behaviour claimed). Each row drops findings at or below the "
                  "margin.\n")  # fmt: skip
            print("| margin | " + " | ".join(f"{f} (n={sum(r['family'] == f for r in sel)})"
                                             for f in fams) + " |")  # fmt: skip
            print("|---|" + "---|" * len(fams))
            for tau in TAUS:
                cells = []
                for fam in fams:
                    # benign, none: a behaviour claimed; refusal, bias: the family's form named
                    # (their content is never read); the rest: the content named.
                    i = {"benign": 1, "none": 1, "refusal": 2, "bias": 2}.get(fam, 0)
                    vals = [score(r, tau)[i] for r in sel if r["family"] == fam]
                    cells.append(f"{statistics.fmean(vals):.2f}")
                print(f"| {'none' if tau is None else f'{tau:+.2f}'} | " + " | ".join(cells) + " |")
    print(
        f"\nAt margin {margin:+.2f}, read at x1, against no margin (paired per diff, 95% interval):\n"
    )
    for group in sorted(dict.fromkeys(r["set"] for r in rows), key=lambda g: g != "dev"):
        sel = [r for r in rows if r["set"] == group and r["scale"] == 1.0]
        benign = [r for r in sel if r["family"] in ("benign", "none")]
        if benign:
            before, after = (
                [score(r, None)[1] for r in benign],
                [score(r, margin)[1] for r in benign],
            )
            p = paired_difference(after, before)
            lo, hi = p["ci95"]
            print(f"- {group}: false alarms on {len(benign)} benign and unchanged diffs "
                  f"{statistics.fmean(before):.2f} -> {statistics.fmean(after):.2f} "
                  f"({p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}])")  # fmt: skip
        for fam in FAMILIES[:5]:
            part = [r for r in sel if r["family"] == fam]
            if part:
                for what, i in (("content", 0), ("family form", 2)):
                    a = [score(r, margin)[i] for r in part]
                    b = [score(r, None)[i] for r in part]
                    p = paired_difference(a, b)
                    lo, hi = p["ci95"]
                    print(f"- {group}: {fam} {what} {statistics.fmean(b):.2f} -> "
                          f"{statistics.fmean(a):.2f} ({p['mean_diff']:+.2f} [{lo:+.2f}, "
                          f"{hi:+.2f}], n = {len(part)})")  # fmt: skip


if __name__ == "__main__":
    main()
