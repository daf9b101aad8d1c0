#!/usr/bin/env bash
# Issue 27 item 1 / 3: the population's held-out recipe plus 6 questions about the model itself
# per diff (task_options.self_questions = 6; 32 questions, 96 steps of 7 rows = three epochs),
# on the population's first 6 held-out topics (same jobs, code words and ordinary questions:
# the same data seed and 600 + 100 topics). diffs/train links the population's training diffs
# (only so that `ditkit readers` accepts the folder). Read by the shipped reader with every
# baseline. Frozen FROZEN (commit 30d32dd). Resume: rerun. Log: /work/runs/pilot-self.log.
set -euo pipefail
cd FROZEN (commit 30d32dd)
export PYTHONPATH=FROZEN (commit 30d32dd)/src OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
"$PY" -m ditkit run population --out /work/runs/pilot-self --stage data --stage diffs \
  --set threads=1 --set task_options.self_questions=6 --set test_diffs.questions_per_diff=26 \
  --set test_diffs.steps=96 --set 'diff_splits=["test:6"]'
"$PY" -m ditkit readers /work/runs/pilot-self --train-sample 1 \
  --setting 'shipped@0:dit.adapter="shipped";eval.max_test_diffs=6;eval.vote_scales=[1.0,1.25,1.5];eval.methods=["dit","dit_vote","base_question","base_question_guessed_code","base_question_trigger","gating"]'
