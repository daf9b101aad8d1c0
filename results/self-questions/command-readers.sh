#!/usr/bin/env bash
# Issue 27: does a reader need training diffs that also keep quiet when asked about themselves?
# /work/runs/pilot-self (the population's jobs plus 6 questions about the model itself per diff,
# task_options.self_questions = 6): its first COUNT training diffs with the cheap recipe (one row
# of each kind per question: 34 questions, 34 steps of 3 rows), then readers on them
# ("self37"), and the population's readers trained without self questions ("pop37", the same
# 37 topics) reading the same held-out diffs. Frozen FROZEN (commit 30d32dd). Resume: rerun.
# --force once: the folder was first claimed with the default [diffs] steps, before any
# training diff existed (its held-out diffs use [test_diffs], unchanged).
set -euo pipefail
cd FROZEN (commit 30d32dd)
export PYTHONPATH=FROZEN (commit 30d32dd)/src OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
COUNT=${COUNT:-37}
HELD=$(ls /work/runs/pilot-self/diffs/test/*.safetensors | wc -l)
FORCE=""; grep -q '"steps": 34' /work/runs/pilot-self/config.json || FORCE=--force
"$PY" -m ditkit run population --out /work/runs/pilot-self --stage diffs $FORCE \
  --set threads=1 --set task_options.self_questions=6 --set test_diffs.questions_per_diff=26 \
  --set test_diffs.steps=96 --set diffs.steps=34 --set "diff_splits=[\"train:$COUNT\"]"
READ="eval.methods=[\"dit\",\"dit_vote\"];eval.vote_scales=[1.0,1.25,1.5];eval.max_test_diffs=$HELD"
"$PY" -m ditkit readers /work/runs/pilot-self --train-sample 30 \
  --setting "self37@0:dit.max_train_diffs=37;dit.epochs=24;$READ" \
  --setting "pop37@0:dit.adapter=\"/work/runs/pop/readers/n37-s0\";$READ" \
  --setting "pop150@0:dit.adapter=\"/work/runs/pop/readers/n150-s0\";$READ"
