#!/usr/bin/env bash
# Issue 27 item 5, read-time scale: the n300-s0 reader read at larger diff multipliers on the
# population's first 50 held-out diffs (the choice is made on these; diffs 51-100 confirm it).
# Every (scale, answer) is in the dit_vote row's votes. Frozen /work/frozen-read. Resume: rerun.
set -euo pipefail
cd /work/frozen-read
export PYTHONPATH=/work/frozen-read/src OMP_NUM_THREADS=1
A=/work/runs/pop/readers/n300-s0/dit/adapter
/work/main/.venv/bin/python -m ditkit readers /work/runs/pop --train-sample 0 \
  --setting "n300scales@0:dit.adapter=$A;eval.methods=[\"dit_vote\"];eval.vote_scales=[1.5,1.75,2.0,2.5,3.0];eval.max_test_diffs=${HELD:-50}"
