#!/usr/bin/env bash
# Issue 27 targets, fairness at 1.5x for the paper's other baselines: twenty questions (held-out
# questions, no trigger) and the weight lens on the population's first HELD held-out diffs at
# 1.5x their weights, as DIT is read at 1.5 and base15 asks the base question. Frozen
# /work/frozen-read; rows in pop/readers/base15b-s0/eval. Resume: rerun.
set -uo pipefail
cd /work/frozen-read
export PYTHONPATH=/work/frozen-read/src OMP_NUM_THREADS=1
A=/work/runs/pop/readers/n300-s0/dit/adapter
/work/main/.venv/bin/python -m ditkit readers /work/runs/pop --train-sample 0 \
  --setting "base15b@0:dit.adapter=$A;eval.methods=[\"twenty_questions\",\"weight_lens\"];eval.diff_scale=1.5;eval.batch_size=24;eval.max_test_diffs=${HELD:-100}"
