"""Issue 28: the shipped joint reader's structured read (``read_forms``: it completes each
family's label opening, the surest completion is kept, and its margin over "Nothing unusual ..."
decides whether anything was found; ``audit``'s default) on held-out diffs, by margin, per
family. Each SET is NAME=RUN (its held-out diffs, read at 1x); a set named ``topics`` is the population's
hidden-topic diffs (scored against topic and aliases). Reads are cached in OUT/forms.jsonl
(resumable); the tables, and each set's change at --margin, go to stdout.

    .venv/bin/python results/behaviours/held-out/forms.py --out /work/runs/forms \
        dev=/work/runs/beh-cpu bd=/work/runs/beh-held-bd cheap=/work/runs/beh-held-cheap \
        topics=/work/runs/pop fa=/work/runs/beh-held-fa \
        > results/behaviours/held-out/forms.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from margin import cached, held_out, scored_as, table  # beside this file

from ditkit.api import load_reader
from ditkit.diffs import load_diff, load_diffs
from ditkit.models import load_model
from ditkit.reader import read_forms
from ditkit.tasks.behaviours.families import NOTHING, label_openings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", metavar="NAME=RUN")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--margin", type=float, default=-0.25, help="the margin summarised last")
    ap.add_argument("--adapter", help="a behaviour reader's adapter folder (default: the shipped "
                    "joint reader); give each reader its own --out")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "forms.jsonl"
    done = cached(cache)
    model, tok = load_model("smollm2-135m")
    reader = load_diff(args.adapter) if args.adapter else load_reader()
    rows = []
    with cache.open("a") as f:
        for spec in args.sets:
            name, run = spec.split("=", 1)
            run = Path(run)
            for did, job in held_out(run).items():
                if (name, did, 1.0) not in done:
                    (diff,) = load_diffs(run / "diffs" / "test" / f"{did}.safetensors")
                    (got,) = read_forms(model, tok, [diff], reader, label_openings(), NOTHING)
                    done[(name, did, 1.0)] = {"set": name, "diff_id": did, "scale": 1.0,
                                              "answer": got["answer"], "margin": got["margin"],
                                              "answers": got["answers"]}  # fmt: skip
                    f.write(json.dumps(done[(name, did, 1.0)]) + "\n")
                    f.flush()
                rows.append({**done[(name, did, 1.0)], **scored_as(name, job)})
    table(rows, args.margin)


if __name__ == "__main__":
    main()
