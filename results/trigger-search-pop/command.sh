#!/usr/bin/env bash
# Issue 29, the third trigger study: the population's first 30 held-out code-word diffs
# (/work/runs/pop), read by the population's own 150-diff reader (readers/n150-s0) at scales 1,
# 1.25 and 1.5 (every distinct answer searched for), then searches over the 1,000 code words
# guided by DIT's answers, by the true topic, by the divergence (no DIT) and by the combined
# score (DIT's description checked by the divergence). Diffs 0-4 ran from frozen worktree
# FROZEN3 (@ the session-6 code), diffs 5-29 from FROZEN4 (0dab5a5: prompts scored once,
# answers from the cache; the same scores). One thread beside one or two other jobs.
# Resume: rerun. Then the table from this folder's rows:
#   .venv/bin/python -c "import sys; sys.path.insert(0,'scripts'); from trigger_study import summarise; from ditkit.files import read_jsonl; from pathlib import Path; summarise(read_jsonl('results/trigger-search-pop/per_diff.jsonl'), Path('results/trigger-search-pop'))"
set -euo pipefail
export PYTHONPATH=FROZEN4/src OMP_NUM_THREADS=${THREADS:-1}
cd FROZEN4
/work/main/.venv/bin/python scripts/trigger_study.py /work/runs/pop \
  --out WORK/out3 --work WORK/work3 --threads ${THREADS:-1} \
  --reader /work/runs/pop/readers/n150-s0/dit/adapter --read-scales 1,1.25,1.5 \
  --methods dit,truth,divergence,combined --diffs 30
# Time alone (issue 29's <= 3 min target): one `ditkit trigger` at two threads, the other jobs
# paused (/work/runs/trig-alone.sh test-00019 test-00017 test-00012):
#   OMP_NUM_THREADS=2 ditkit trigger POP/diffs/test/ID.safetensors \
#     --adapter POP/readers/n150-s0/dit/adapter --read-scales 1,1.25,1.5 --space code-words --out OUT
