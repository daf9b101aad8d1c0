#!/usr/bin/env bash
# Issue 28: the backdoor held-out run's evaluation first (its 30 diffs are built before the 150
# cheap ones): the shipped joint reader's DIT once and by vote, base question, diff check,
# weight lens, as beh-held-eval.sh's first step (which then finds these rows done).
set -euo pipefail
export PYTHONPATH=/work/frozen-beh3/src OMP_NUM_THREADS=${THREADS:-1}
/work/main/.venv/bin/python -m ditkit run behaviours --out /work/runs/beh-held-bd \
  --set threads=${THREADS:-1} --set data.n_train=0 --set data.seed=29 \
  --set 'diff_splits=["test"]' --set 'eval.vote_scales=[1.0,1.25,1.5]' --set 'dit.adapter="shipped"' \
  --set data.n_test=30 --set 'task_options.families=["backdoor"]' \
  --set 'test_diffs={rank=1, alpha=1.0, lr=1e-2, questions_per_diff=26, row_mix=[3,3,1], weights=[1.0,1.0,1.0], steps=78, rows_per_step=7, diffs_per_pass=10}' \
  --stage dit --stage eval --set 'eval.methods=["dit","dit_vote","base_question","behaviour_check","weight_lens"]'
