"""Issue 28: the structured read (results/behaviours/held-out/forms.py's cache, margin -0.25)
against the same reader read greedily, the base question and each single-family reader, paired
per held-out diff; topics also against the shipped topic reader at 1.5x and twenty questions at
1.5x (their rows in /work/runs/pop/readers).

    .venv/bin/python results/behaviours/held-out/forms_paired.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl
from ditkit.tasks.behaviours.families import NOTHING, parse_description

sys.path.insert(0, str(Path(__file__).parents[2] / "reader-scaling"))
from read_scale import answers_by_scale

TAU = -0.25
POP = Path("/work/runs/pop")
SETS = (  # (cache set, run, families read, where the greedy reads and the base question are)
    ("bd", Path("/work/runs/beh-held-bd"), ("backdoor",), None),
    ("cheap", Path("/work/runs/beh-held-cheap"), ("quirk", "refusal", "bias"), None),
    ("topics", POP, ("topic",), POP / "readers"),
)


def held_out(run: Path) -> dict[str, dict]:
    return {j["diff_id"]: j for j in read_jsonl(run / "data/jobs.jsonl") if j["split"] == "test"}


def answers(folder: Path, method: str = "dit") -> dict[str, str]:
    rows = read_jsonl(folder / "eval/predictions.jsonl")
    return {r["diff_id"]: r["answer"] for r in rows if r["method"] == method}


def names(job: dict) -> list[str]:
    return job["names"] if "names" in job else [job["topic"], *job.get("aliases", [])]


def show(label: str, a: list[float], b: list[float]) -> None:
    p = paired_difference(a, b)
    lo, hi = p["ci95"]
    print(f"  {label}: {statistics.fmean(a):.2f} vs {statistics.fmean(b):.2f}: "
          f"{p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({p['wins']}/{p['losses']}, "
          f"n = {p['n']})")  # fmt: skip


def main() -> None:
    forms = {(r["set"], r["diff_id"]): r for r in read_jsonl(Path("/work/runs/forms/forms.jsonl"))}
    for name, run, families, readers in SETS:
        jobs = held_out(run)
        greedy = answers(readers / "jointprefq-s0" if readers else run)
        base = answers(readers / "shipped-s0" if readers else run, "base_question")
        for fam in families:
            ids = [d for d, j in jobs.items()
                   if fam in ("topic", j.get("family")) and (name, d) in forms]  # fmt: skip
            said = {d: forms[(name, d)]["answer"] if forms[(name, d)]["margin"] > TAU else NOTHING
                    for d in ids}  # fmt: skip
            read = [alias_match(said[d], names(jobs[d])) for d in ids]
            print(f"{fam} ({len(ids)} diffs)")
            show("structured - greedy", read, [alias_match(greedy[d], names(jobs[d])) for d in ids])
            show("structured - base question", read,
                 [alias_match(base[d], names(jobs[d])) for d in ids])  # fmt: skip
            if fam == "topic":
                at = answers_by_scale(POP, ["n300-s0", "n300scales-s0"])
                show("structured - the topic reader n300-s0 at 1.5x", read,
                     [alias_match(at[d][1.5], names(jobs[d])) for d in ids])  # fmt: skip
                tq = answers(readers / "base15b-s0", "twenty_questions")
                show("structured - twenty questions at 1.5x", read,
                     [alias_match(tq[d], names(jobs[d])) for d in ids])  # fmt: skip
                continue
            single = answers(run.parent / f"{run.name}-readers" / fam)
            show(f"structured - the {fam}-only reader", read,
                 [alias_match(single[d], names(jobs[d])) for d in ids])  # fmt: skip
            if fam in ("refusal", "bias"):  # content is never read: the family's form
                show(f"family form: structured - the {fam}-only reader",
                     [float(parse_description(said[d])[0] == fam) for d in ids],
                     [float(parse_description(single[d])[0] == fam) for d in ids])  # fmt: skip


if __name__ == "__main__":
    main()
