"""The behaviour suite's transfer matrix and diversity curve (issue 28) from runs' readers.

Readers of a RUN: its own (the shipped joint reader where ``dit.adapter = "shipped"``), each
`ditkit readers RUN --setting 'NAME@0:dit.train_families=[...];...'` folder (RUN/readers/NAME-sS)
and each folder beside the run that reads its diffs with an adapter trained elsewhere
(RUN-readers/NAME, ``dit.adapter = PATH``; its training families are those of the run PATH came
from). Several RUNs (e.g. held-out sets of different families) pool by reader name. For each
reader and each family of held-out diffs: how often DIT names the diff's content (alias_match)
and how often its answer has the family's form (family_match). The matrix has a row per reader
and a column per held-out family; the diversity curve averages, per number of training
families, the reading of the families a reader never trained on (content only: a reader cannot
know a form it never saw).

    .venv/bin/python scripts/behaviour_transfer.py RUN [RUN ...] --out results/behaviours/transfer
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.files import read_jsonl, write_json, write_text
from ditkit.tasks.behaviours import TASK

ORDER = ("backdoor", "refusal", "bias", "quirk", "topic", "benign", "none")


def _families(cfg: dict) -> list[str]:
    """The families a run's reader trained on: its own ``dit.train_families``, those of the run
    an adapter path came from, or every family (the shipped joint reader, an unknown source)."""
    adapter = str(cfg["dit"].get("adapter", "train"))
    if adapter == "train":
        return list(cfg["dit"].get("train_families") or ORDER)
    if adapter.startswith("shipped"):
        return list(ORDER)
    source = Path(adapter).parent.parent / "config.json"  # RUN/dit/adapter -> RUN/config.json
    return _families(json.loads(source.read_text())) if source.exists() else list(ORDER)


def reader_rows(run: Path) -> list[tuple[str, list[str], Path]]:
    """(name, training families, eval folder) of RUN's own reader and of every reader folder
    in RUN/readers and beside RUN (RUN-readers)."""
    cfg = json.loads((run / "config.json").read_text())
    adapter = str(cfg["dit"].get("adapter", "train"))
    own = {"train": "all"}.get(adapter, "shipped" if adapter.startswith("shipped") else adapter)
    out = [(own, _families(cfg), run / "eval")]
    beside = run.parent / f"{run.name}-readers"
    for sub in [*sorted((run / "readers").glob("*/")), *sorted(beside.glob("*/"))]:
        if not (sub / "eval" / "predictions.jsonl").exists():
            continue
        name = sub.name.removesuffix("-s0")  # one reader's folders pool across runs
        out.append((name, _families(json.loads((sub / "config.json").read_text())), sub / "eval"))
    return out


def read(eval_dir: Path, jobs: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """{family: {metric: per-diff values}} of one reader's DIT rows, scored from the answers."""
    by: dict[str, dict[str, list[float]]] = {}
    for row in read_jsonl(eval_dir / "predictions.jsonl"):
        job = jobs.get(row["diff_id"])
        if row["method"] != "dit" or job is None:
            continue
        cell = by.setdefault(job["family"], {})
        cell.setdefault("alias_match", []).append(alias_match(row["answer"], job["names"]))
        cell.setdefault("family_match", []).append(
            TASK.row_metrics(row["answer"], job)["family_match"]
        )
    return by


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    got: dict[str, dict[str, dict[str, list[float]]]] = {}  # reader -> family -> metric -> values
    trained_on: dict[str, list[str]] = {}
    for run in args.runs:
        jobs = {j["diff_id"]: j for j in read_jsonl(run / "data" / "jobs.jsonl")}
        for name, trained, eval_dir in reader_rows(run):
            if trained_on.setdefault(name, trained) != trained:
                raise SystemExit(f"two readers named {name} trained on different families: "
                                 f"{trained_on[name]} and {trained} ({eval_dir})")  # fmt: skip
            for fam, metrics in read(eval_dir, jobs).items():
                for metric, values in metrics.items():
                    got.setdefault(name, {}).setdefault(fam, {}).setdefault(metric, []).extend(
                        values
                    )
    families = [f for f in ORDER if any(f in by for by in got.values())]
    rows, lines = [], []
    header = "| reader (trained on) | " + " | ".join(families) + " |"
    lines += [
        "Held-out DIT per family: alias_match / family_match (n diffs). A cell is in",
        "distribution where the reader trained on that family.",
        "",
        header,
        "|" + " --- |" * (len(families) + 1),
    ]
    for name, by in got.items():
        trained = trained_on[name]
        cells = []
        for fam in families:
            m = by.get(fam, {})
            a, f = m.get("alias_match", []), m.get("family_match", [])
            if not a:
                cells.append("—")
                continue
            row = {
                "reader": name, "trained_on": trained, "family": fam, "seen": fam in trained,
                "alias_match": statistics.fmean(a), "family_match": statistics.fmean(f),
                "n": len(a),
            }  # fmt: skip
            rows.append(row)
            cells.append(f"{row['alias_match']:.2f} / {row['family_match']:.2f} ({len(a)})")
        lines.append(f"| {name} ({', '.join(trained)}) | " + " | ".join(cells) + " |")
    # Diversity: per number of training families, the content read on unseen behaviour families.
    curve = {}
    for r in rows:
        if r["seen"] or r["family"] in ("benign", "none"):
            continue
        k = len([f for f in r["trained_on"] if f not in ("benign", "none")])
        curve.setdefault(k, []).append(r)
    lines += ["", "Unseen families (content named, alias_match), by training families:", ""]
    lines += ["| behaviour families in training | readers x unseen families | alias_match |"]
    lines += ["| --- | --- | --- |"]
    for k in sorted(curve):
        vals = curve[k]
        mean = sum(r["alias_match"] * r["n"] for r in vals) / sum(r["n"] for r in vals)
        lines.append(f"| {k} | {len(vals)} | {mean:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "transfer.json", {"rows": rows})
    write_text(args.out / "transfer.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
