#!/usr/bin/env bash
# Issue 28, first measurement: does the preset's recipe (rank 8, lr 2e-3, 150 steps x 8 rows,
# 2 : 3 : 1 behaviour : contrast : plain rows per question) make each family's diffs show their
# behaviour where they should and nowhere else? Two held-out diffs per family, the diff check
# only (no reader). One torch thread; run from a frozen worktree of the commit that built it.
# Usage: results/behaviours/command-pilot.sh RUN
set -euo pipefail
RUN=${1:?run directory}
export OMP_NUM_THREADS=1
.venv/bin/ditkit run behaviours --out "$RUN" --stage data --stage diffs --stage eval \
  --set threads=1 --set data.n_train=7 --set data.n_test=14 --set 'diff_splits=["test"]' \
  --set 'eval.methods=["behaviour_check"]'
