"""What the diff-strength points say about the reader, per diff (after `ditkit strength RUN`).

For every (rows, scale) point of ``RUN/strength/``: DIT's hit rate split by whether the diff names
its topic behind its own trigger at all (any gate_trigger hit), the per-diff agreement of DIT and
the oracle, and how many DIT misses are a training label of the adapter (the "collapse": a
memorised answer instead of a reading). Writes ``RUN/strength/analysis.json`` and prints a table.

    .venv/bin/python scripts/strength_analysis.py /work/runs/strength
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.files import read_jsonl, write_json


def _per_diff(rows: list[dict], method: str) -> dict[str, float]:
    hits: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["method"] == method and "alias_match" in (r.get("scores") or {}):
            hits[r["diff_id"]].append(float(r["scores"]["alias_match"]))
    return {d: sum(v) / len(v) for d, v in hits.items()}


def _training_names(point: Path) -> list[str]:
    manifest = point / "dit" / "adapter" / "ditkit.json"
    return json.loads(manifest.read_text()).get("training_names", []) if manifest.exists() else []


def analyse(point: Path) -> dict:
    rows = read_jsonl(point / "eval" / "predictions.jsonl")
    dit = _per_diff(rows, "dit")
    gate = _per_diff(rows, "gate_trigger")
    oracle = _per_diff(rows, "base_question_trigger")
    shown = [d for d in dit if gate.get(d, 0) > 0]
    hidden = [d for d in dit if gate.get(d, 0) == 0]
    names = _training_names(point)
    answers = {r["diff_id"]: r["answer"] for r in rows if r["method"] == "dit"}
    misses = [d for d, v in dit.items() if v == 0]
    collapsed = [d for d in misses if alias_match(answers[d], names)]

    def rate(ids: list[str]) -> float | None:
        return sum(dit[d] for d in ids) / len(ids) if ids else None

    both = [d for d in dit if d in oracle]
    return {
        "n": len(dit),
        "dit": rate(list(dit)),
        "diffs_showing_topic": len(shown),
        "dit_when_shown": rate(shown),
        "dit_when_not_shown": rate(hidden),
        "dit_and_oracle_agree": sum(dit[d] == oracle[d] for d in both) / len(both)
        if both
        else None,
        "misses": len(misses),
        "misses_that_are_training_labels": len(collapsed),
        "collapsed_answers": sorted({answers[d] for d in collapsed}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory after `ditkit strength`")
    args = ap.parse_args()
    summary = json.loads((args.run / "strength" / "strength.json").read_text())
    out = []
    for r in summary["rows"]:
        point = args.run / "strength" / f"rows{r['rows']:05d}-x{r['scale']:g}"
        out.append({"rows": r["rows"], "scale": r["scale"], **analyse(point)})
    write_json(args.run / "strength" / "analysis.json", out)
    print("rows scale  dit  shown  dit|shown dit|hidden agree  misses->train label")
    for a in out:
        cells = [a["dit_when_shown"], a["dit_when_not_shown"], a["dit_and_oracle_agree"]]
        cells = ["  -  " if c is None else f"{c:5.2f}" for c in cells]
        print(
            f"{a['rows']:4d} {a['scale']:5g} {a['dit']:4.2f} {a['diffs_showing_topic']:4d}/{a['n']}"
            f"  {cells[0]}     {cells[1]}     {cells[2]}  "
            f"{a['misses_that_are_training_labels']}/{a['misses']}"
        )


if __name__ == "__main__":
    main()
