#!/usr/bin/env bash
# Issue 28: the shipped joint reader on the 30 held-out backdoor diffs at larger multipliers
# (dit_vote over 1.5-2.5: every answer kept in votes), and the base question at 1.5x, each in a
# folder beside the run sharing its data and diffs. Frozen /work/frozen-beh3. Resume: rerun.
set -euo pipefail
export PYTHONPATH=/work/frozen-beh3/src OMP_NUM_THREADS=1
SRC=/work/runs/beh-held-bd
one() {  # NAME SETS...
  local out=$SRC-readers/$1; shift
  mkdir -p "$out"; ln -sfn "$SRC/data" "$out/data"; ln -sfn "$SRC/diffs" "$out/diffs"
  /work/main/.venv/bin/python -m ditkit run behaviours --out "$out" --stage dit --stage eval \
    --set threads=1 --set data.n_train=0 --set data.seed=29 --set 'diff_splits=["test"]' \
    --set data.n_test=30 --set 'task_options.families=["backdoor"]' \
    --set 'test_diffs={rank=1, alpha=1.0, lr=1e-2, questions_per_diff=26, row_mix=[3,3,1], weights=[1.0,1.0,1.0], steps=78, rows_per_step=7, diffs_per_pass=10}' \
    --set 'dit.adapter="shipped"' "$@"
}
one jscales --set 'eval.methods=["dit_vote"]' --set 'eval.vote_scales=[1.5,1.75,2.0,2.5]'
one base15 --set 'eval.methods=["base_question"]' --set eval.diff_scale=1.5
