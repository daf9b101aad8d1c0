#!/usr/bin/env bash
# Issue 27: the pilot-self held-out diffs (self questions in every diff's rows) read on all that
# are on disk: the shipped reader with every method (the base question and guessed code on these
# diffs), the self37 reader, and the population's n37 / n150 readers (3 seeds of n150). Fresh
# folders (h-*): the first 6 diffs were retrained when the set grew from 6 to 50 (pass
# boundaries of 10), so the pilot's rows for them are stale. Compare with the same topics
# without self questions: /work/runs/pop/readers/*. Frozen /work/frozen-self. Resume: rerun.
# Log: /work/runs/self-read.log.
set -euo pipefail
cd /work/frozen-self
export PYTHONPATH=/work/frozen-self/src OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
HELD=$(ls /work/runs/pilot-self/diffs/test/*.safetensors | wc -l)
READ="eval.methods=[\"dit\",\"dit_vote\"];eval.vote_scales=[1.0,1.25,1.5];eval.max_test_diffs=$HELD"
P=/work/runs/pop/readers
"$PY" -m ditkit readers /work/runs/pilot-self --train-sample 1 \
  --setting "h-shipped@0:dit.adapter=\"shipped\";eval.max_test_diffs=$HELD;eval.vote_scales=[1.0,1.25,1.5];eval.methods=[\"dit\",\"dit_vote\",\"base_question\",\"base_question_guessed_code\",\"base_question_trigger\",\"gating\"]"
"$PY" -m ditkit readers /work/runs/pilot-self --train-sample 30 \
  --setting "h-self37@0:dit.adapter=\"/work/runs/pilot-self/readers/self37-s0\";$READ" \
  --setting "h-pop37@0:dit.adapter=\"$P/n37-s0\";$READ" \
  --setting "h-pop150@0:dit.adapter=\"$P/n150-s0\";$READ" \
  --setting "h-pop150s1@0:dit.adapter=\"$P/n150-s1\";$READ" \
  --setting "h-pop150s2@0:dit.adapter=\"$P/n150-s2\";$READ"
