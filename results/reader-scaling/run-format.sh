#!/usr/bin/env bash
# Issue 27 item 4: the largest reader's held-out evaluation in the usual run format
# (config.json, eval/predictions.jsonl, eval/scores.json, eval/paired.json, report/), built from
# what is on disk: the reader's own DIT rows (dit, dit_vote) and the reader-free methods' rows of
# the shipped reader's evaluation of the same held-out diffs (base question, guessed code word,
# twenty questions, weight lens, the oracles, the diff checks: none of them reads an adapter, so
# they are the same rows whichever reader a run has). Then scored and reported by ditkit.
#   results/reader-scaling/run-format.sh POP READER HELD DEST
#   e.g. results/reader-scaling/run-format.sh /work/runs/pop n300-s0 50 results/reader-scaling/n300-s0
# SCALE=1.5 (env): the dit rows are the reader's answers with each diff read at 1.5x (its dit_vote
# rows' votes at that scale, from READER and any folder READER+X that only read it, e.g.
# n300-s0+n300scales-s0), marked read_scale 1.5 as `ditkit eval` marks them.
set -euo pipefail
POP=$1 READER=$2 HELD=$3 DEST=$4
PY=${PY:-.venv/bin/python}
mkdir -p "$DEST/eval" "$DEST/data"
SCALE=${SCALE:-1} "$PY" - "$POP" "$READER" "$HELD" "$DEST" <<'PYEOF'
import json, os, sys
from pathlib import Path
from ditkit.files import read_jsonl, write_json, write_jsonl
pop, readers, held, dest = Path(sys.argv[1]), sys.argv[2].split("+"), int(sys.argv[3]), Path(sys.argv[4])
reader, scale = readers[0], float(os.environ["SCALE"])
jobs = [j for j in read_jsonl(pop / "data" / "jobs.jsonl") if j["split"] == "test"][:held]
ids = {j["diff_id"] for j in jobs}
src = pop / "readers" / reader
cfg = json.loads((src / "config.json").read_text())
others = [r for r in read_jsonl(pop / "readers" / "shipped-s0" / "eval" / "predictions.jsonl")
          if r["method"] not in ("dit", "dit_vote") and r["diff_id"] in ids]
mine = [r for r in read_jsonl(src / "eval" / "predictions.jsonl")
        if r["method"] in ("dit", "dit_vote") and r["diff_id"] in ids]
if scale != 1:  # the dit rows: each diff's answer read at SCALE, from the dit_vote votes
    at = {}
    for name in readers:
        for r in read_jsonl(pop / "readers" / name / "eval" / "predictions.jsonl"):
            for s, _, answer in r.get("votes") or []:
                if float(s) == scale and r["diff_id"] in ids:
                    at.setdefault(r["diff_id"], answer)
    missing = ids - set(at)
    if missing:
        sys.exit(f"no read at x{scale:g} for {len(missing)} diffs, e.g. {sorted(missing)[0]}")
    mine = [{**r, "answer": at[r["diff_id"]], "read_scale": scale, "scores": {}}
            if r["method"] == "dit" else r for r in mine]
methods = list(dict.fromkeys(["dit", "dit_vote"] + json.loads(
    (pop / "readers" / "shipped-s0" / "config.json").read_text())["eval"]["methods"]))
cfg["eval"].update(methods=methods, max_test_diffs=held)
write_json(dest / "config.json", cfg)
write_jsonl(dest / "eval" / "predictions.jsonl", mine + others)
write_jsonl(dest / "data" / "jobs.jsonl", jobs)  # the held-out jobs the scores need
(dest / "SOURCES.md").write_text(
    f"DIT rows: {src}/eval/predictions.jsonl (adapter {src}/dit/adapter, not copied)"
    + (f", the dit rows read at x{scale:g} (the votes of {', '.join(readers)}); " if scale != 1 else "; ")
    + 
    f"every other method's rows: {pop}/readers/shipped-s0/eval/predictions.jsonl; "
    f"the first {held} held-out diffs of {pop}.\n")
PYEOF
"$PY" -m ditkit eval "$DEST" --score-only --guesser retrieval
"$PY" -m ditkit report "$DEST"
