"""Issue 28's per-family table on the behaviour suite's held-out diffs, pooled over runs (e.g.
the backdoor run and the run of the always-on families): for each family, the run's own reader
(the shipped joint reader) against every reader-free method, paired per diff; the same reader
read at 1.25x and 1.5x (from its dit_vote rows); false alarms on benign and unchanged diffs; the
diff check; and the joint reader against each single-family reader beside the run (RUN-readers/
NAME, read on the same diffs).

    .venv/bin/python results/behaviours/held-out/table.py /work/runs/beh-held-bd \
        /work/runs/beh-held-cheap > results/behaviours/held-out/table.md
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl
from ditkit.tasks.behaviours import TASK

ORDER = ("backdoor", "refusal", "bias", "quirk", "topic", "benign", "none")
BASELINES = ("base_question", "twenty_questions", "weight_lens")
SCALES = (1.25, 1.5)


def scores(folder: Path, jobs: dict[str, dict], run: str) -> dict[str, dict[tuple, float]]:
    """``{method: {(run, diff_id): alias match}}`` of one eval folder; ``dit_family`` the DIT
    answer's family form, ``dit_xS`` the dit_vote answer at scale S, ``check_on/off`` the mean
    of the diff-check rows."""
    out: dict[str, dict[tuple, float]] = {}
    checks: dict[tuple, list[float]] = {}
    for r in read_jsonl(folder / "eval" / "predictions.jsonl"):
        job, key = jobs.get(r["diff_id"]), (run, r["diff_id"])
        if job is None:
            continue
        if r["method"] in ("check_on", "check_off"):
            if "shows" not in (r.get("scores") or {}):  # not scored yet (an evaluation under way)
                continue
            checks.setdefault((r["method"], *key), []).append(float(r["scores"]["shows"]))
            continue
        if r["method"] == "dit_vote":
            for s, _, answer in r.get("votes", []):
                if s in SCALES:
                    out.setdefault(f"dit_x{s:g}", {})[key] = alias_match(answer, job["names"])
                    fam = TASK.row_metrics(answer, job)["family_match"]
                    out.setdefault(f"dit_family_x{s:g}", {})[key] = fam
        if r["method"] == "dit":
            fam = TASK.row_metrics(r["answer"], job)["family_match"]
            out.setdefault("dit_family", {})[key] = fam
        score = (r.get("scores") or {}).get("alias_match")  # as the run scored it
        if score is not None:
            out.setdefault(r["method"], {})[key] = float(score)
    for (method, *key), values in checks.items():
        out.setdefault(method, {})[tuple(key)] = statistics.fmean(values)
    return out


def fmt(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f}" if values else "—"


def paired(a: dict, b: dict, keys: list) -> str:
    keys = [k for k in keys if k in a and k in b]
    if not keys:
        return "—"
    p = paired_difference([a[k] for k in keys], [b[k] for k in keys])
    lo, hi = p["ci95"]
    return f"{p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    own: dict[str, dict] = {}
    single: dict[str, dict[str, dict]] = {}  # family reader -> method -> key -> score
    family_of: dict[tuple, str] = {}
    for run in args.runs:
        jobs = {j["diff_id"]: j for j in read_jsonl(run / "data" / "jobs.jsonl")}
        family_of.update({(str(run), d): j["family"] for d, j in jobs.items()})
        for m, v in scores(run, jobs, str(run)).items():
            own.setdefault(m, {}).update(v)
        for sub in sorted((run.parent / f"{run.name}-readers").glob("*/")):
            if (sub / "eval" / "predictions.jsonl").exists():
                for m, v in scores(sub, jobs, str(run)).items():
                    single.setdefault(sub.name, {}).setdefault(m, {}).update(v)
    dit = own.get("dit", {})
    families = [f for f in ORDER if any(family_of[k] == f for k in dit)]
    print("Held-out DIT of each run's own reader, per family (alias match: the content named; "
          "family: the answer's form), against the reader-free methods (paired per diff, 95% "
          "interval); xS: the same reader with each diff read at S times its weights.")  # fmt: skip
    print()
    cols = ["family", "n", "DIT content", "DIT family", *(f"x{s:g}" for s in SCALES),
            *BASELINES, *(f"DIT - {b}" for b in BASELINES), "check on", "check off"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for fam in families:
        keys = sorted(k for k in dit if family_of[k] == fam)

        def cell(m: str, keys: list = keys) -> str:
            return fmt([own[m][k] for k in keys if k in own.get(m, {})])

        print("| " + " | ".join([
            fam, str(len(keys)), cell("dit"), cell("dit_family"),
            *(cell(f"dit_x{s:g}") for s in SCALES), *(cell(b) for b in BASELINES),
            *(paired(dit, own.get(b, {}), keys) for b in BASELINES),
            cell("check_on"), cell("check_off"),
        ]) + " |")  # fmt: skip
    benign = sorted(k for k in own.get("dit_family", {}) if family_of[k] in ("benign", "none"))
    if benign:
        print("\nFalse alarms (a behaviour described for a benign or unchanged diff), by read "
              "multiplier:\n")  # fmt: skip
        print("| diffs | " + " | ".join(["x1", *(f"x{s:g}" for s in SCALES)]) + " |")
        print("|---|" + "---|" * (1 + len(SCALES)))
        for name, fams in (("benign", ("benign",)), ("none", ("none",)),
                           ("both", ("benign", "none"))):  # fmt: skip
            cells = []
            for m in ("dit_family", *(f"dit_family_x{s:g}" for s in SCALES)):
                alarms = [1 - v for k, v in own.get(m, {}).items() if family_of[k] in fams]
                cells.append(f"{sum(alarms):.0f} of {len(alarms)} ({statistics.fmean(alarms):.2f})"
                             if alarms else "—")  # fmt: skip
            print(f"| {name} | " + " | ".join(cells) + " |")
    if single:
        print("\nThe run's own reader against each reader beside it, on the diffs of each "
              "family (content named; own minus other, paired):\n")  # fmt: skip
        print("| reader | " + " | ".join(families) + " |")
        print("|" + "---|" * (len(families) + 1))
        for name, methods in single.items():
            other = methods.get("dit", {})
            cells = []
            for fam in families:
                keys = sorted(k for k in other if family_of[k] == fam)
                cells.append(f"{fmt([other[k] for k in keys])} ({paired(dit, other, keys)})"
                             if keys else "—")  # fmt: skip
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
