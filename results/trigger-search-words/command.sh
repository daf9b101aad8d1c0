#!/usr/bin/env bash
# Issue 29 on the population's code-word held-out diffs: DIT (shipped reader), truth and
# divergence searches over the 1,000 code words. Resume: rerun (DIFFS=N for more diffs).
# Frozen worktree FROZEN.
set -euo pipefail
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
cd FROZEN
/work/main/.venv/bin/python scripts/trigger_study.py POP \
  --out WORK/out --work WORK/work --threads ${THREADS:-1} \
  --methods "${METHODS:-dit,truth,divergence}" --diffs ${DIFFS:-10}
