"""How often the DIT adapter names the topic of training diffs versus held-out ones.

A DIT adapter that names its training diffs' topics but not the held-out ones memorised the
training set; one that names neither did not learn to read diffs at all. Run after the dit
stage of a run directory::

    .venv/bin/python scripts/dit_recall.py runs/mid-size --n 30

Prints a few answers and one JSON line: alias-match rate per split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ditkit.config import from_dict
from ditkit.diffs import load_diff
from ditkit.evaluate.metrics import alias_match
from ditkit.pipeline import Run
from ditkit.reader import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dir", type=Path, help="run directory with diffs/ and dit/adapter")
    ap.add_argument("--n", type=int, default=30, help="diffs per split (the first n)")
    args = ap.parse_args()
    run = Run(from_dict(json.loads((args.dir / "config.json").read_text())), args.dir)
    model, tok = run.model_and_tok
    adapter = load_diff(args.dir / "dit" / "adapter")
    rates = {}
    for split in ("train", "test"):
        jobs = run.jobs(split)[: args.n]
        diffs = [
            load_diff(args.dir / "diffs" / split / f"{j['diff_id']}.safetensors") for j in jobs
        ]
        answers = describe(model, tok, diffs, adapter, max_new_tokens=run.cfg.eval.max_new_tokens)
        hits = [alias_match(a, [j["topic"], *j["aliases"]]) for j, a in zip(jobs, answers)]
        for j, a in list(zip(jobs, answers))[:5]:
            print(f"[{split}] {j['topic']!r} -> {a!r}")
        rates[split] = {"alias_match": round(sum(hits) / len(hits), 3), "n": len(hits)}
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
