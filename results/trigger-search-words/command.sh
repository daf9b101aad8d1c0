#!/usr/bin/env bash
# Issue 29 on the population's code-word held-out diffs: DIT (shipped reader), truth and
# divergence searches over the 1,000 code words. Resume: rerun (DIFFS=N for more diffs).
# Frozen worktree FROZEN (commits 85f2739-2edb056, which score these descriptions alike;
# first-diff-before-fix/ holds the first diff searched at 7a17dbb, which scored a hedged reader
# answer whole).
set -euo pipefail
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
cd FROZEN
/work/main/.venv/bin/python scripts/trigger_study.py POP \
  --out WORK/out2 --work WORK/work --threads ${THREADS:-1} \
  --methods "${METHODS:-dit,truth,divergence}" --diffs ${DIFFS:-10}
