#!/usr/bin/env bash
# Issue 28: the two families that leaked with the rank-8 SEP recipe (backdoor, topic), now with
# the hidden-topic population's code-word recipe for held-out diffs (rank 1, 26 questions,
# 3 behaviour : 3 contrast : 1 plain rows, 78 steps of 7 rows) and the topic family behind code
# words. 4 held-out diffs per family, the diff check only. Resume: rerun.
# Frozen worktree FROZEN (commit b228c85).
set -euo pipefail
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
/work/main/.venv/bin/python -m ditkit run behaviours --out RUN \
  --stage data --stage diffs --stage eval --set threads=${THREADS:-1} \
  --set data.n_train=2 --set data.n_test=8 --set 'diff_splits=["test"]' \
  --set 'task_options.families=["backdoor","topic"]' --set 'task_options.topic_trigger="word"' \
  --set 'test_diffs={rank=1, alpha=1.0, lr=1e-2, questions_per_diff=26, row_mix=[3,3,1], weights=[1.0,1.0,1.0], steps=78, rows_per_step=7, diffs_per_pass=8}' \
  --set 'eval.methods=["behaviour_check"]'
