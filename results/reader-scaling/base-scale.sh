#!/usr/bin/env bash
# Issue 27 item 5, fairness of a read-time scale: the base question and the guessed code word
# asked of the population's first 50 held-out diffs at 1.5x their weights (eval.diff_scale), as
# DIT is read at 1.5. Frozen /work/frozen-read; rows in pop/readers/base15-s0/eval (the readers
# summary at the end does not apply to reader-free methods). Resume: rerun.
# No -e: the reader summary at the end of `ditkit readers` fails on reader-free methods in
# that frozen commit (fixed since); the rows it needs are written before that.
set -uo pipefail
cd /work/frozen-read
export PYTHONPATH=/work/frozen-read/src OMP_NUM_THREADS=1
A=/work/runs/pop/readers/n300-s0/dit/adapter
/work/main/.venv/bin/python -m ditkit readers /work/runs/pop --train-sample 0 \
  --setting "base15@0:dit.adapter=$A;eval.methods=[\"base_question\",\"base_question_guessed_code\"];eval.diff_scale=1.5;eval.max_test_diffs=${HELD:-50}"
