#!/usr/bin/env bash
# Issue 28: >= 30 held-out diffs per behaviour family, for the joint reader's per-family table.
# Two runs (data seed 29, no training diffs; every content string is a held-out one):
#   /work/runs/beh-held-bd     30 backdoor diffs, the code-word recipe (rank 1, 26 questions,
#                              3 : 3 : 1 rows, 78 steps of 7), which keeps a payload behind its
#                              trigger (results/behaviours/pilot-words: 16/16, 0/16, 0/16)
#   /work/runs/beh-held-cheap  30 each of refusal, bias, quirk, benign, none: the training
#                              diffs' cheap recipe (84 rows), whose always-on families check at
#                              0.85-1.00 where they should show, 0.05-0.10 elsewhere (cpu-run)
# The topic family's held-out diffs are the population's (/work/runs/pop, 100 code-word diffs).
# Stages data and diffs here; eval later. Frozen /work/frozen-beh3. Resume: rerun.
set -euo pipefail
export PYTHONPATH=/work/frozen-beh3/src OMP_NUM_THREADS=${THREADS:-1}
PY=/work/main/.venv/bin/python
COMMON=(--set threads=${THREADS:-1} --set data.n_train=0 --set data.seed=29
  --set 'diff_splits=["test"]' --set 'dit.adapter="shipped"')
$PY -m ditkit run behaviours --out /work/runs/beh-held-bd --stage data --stage diffs "${COMMON[@]}" \
  --set data.n_test=30 --set 'task_options.families=["backdoor"]' \
  --set 'test_diffs={rank=1, alpha=1.0, lr=1e-2, questions_per_diff=26, row_mix=[3,3,1], weights=[1.0,1.0,1.0], steps=78, rows_per_step=7, diffs_per_pass=10}'
$PY -m ditkit run behaviours --out /work/runs/beh-held-cheap --stage data --stage diffs "${COMMON[@]}" \
  --set data.n_test=150 --set 'task_options.families=["refusal","bias","quirk","benign","none"]' \
  --set 'test_diffs={}'
