"""Copy the files worth committing from a finished run directory into ``results/NAME/``.

    .venv/bin/python scripts/collect_results.py runs/cpu-ref results/cpu-reference

Copies config, timings, manifest, the DIT training state (as dit_history.json), eval scores,
paired differences and predictions, the report (Markdown, HTML, plots) and, when present,
dit_recall.json (scripts/dit_recall.py). Diffs and the adapter stay out (see ship_adapter.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

FILES = {
    "config.json": "config.json",
    "timings.json": "timings.json",
    "manifest.json": "manifest.json",
    "dit/checkpoint/state.json": "dit_history.json",
    "eval/scores.json": "scores.json",
    "eval/paired.json": "paired.json",
    "eval/predictions.jsonl": "predictions.jsonl",
    "dit_recall.json": "dit_recall.json",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory made by `ditkit run`")
    ap.add_argument("dest", type=Path, help="e.g. results/cpu-reference")
    args = ap.parse_args()
    if not (args.run / "eval" / "scores.json").exists():
        raise SystemExit(f"{args.run} has no eval/scores.json: finish the run first")
    args.dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for src, name in FILES.items():
        if (args.run / src).exists():
            shutil.copy2(args.run / src, args.dest / name)
            copied.append(name)
    for p in sorted((args.run / "report").glob("*")):
        if p.is_file():
            shutil.copy2(p, args.dest / p.name)
            copied.append(p.name)
    print(f"{len(copied)} files into {args.dest}: {', '.join(copied)}")


if __name__ == "__main__":
    main()
