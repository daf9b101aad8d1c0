#!/usr/bin/env bash
# Issue 28, twelfth session: fresh held-out behaviour diffs (never seen while a margin or a check
# was chosen) read by the shipped joint reader. Usage: beh-fresh.sh OUT SEED N FAMILIES METHODS
#   beh-fresh.sh /work/runs/beh-held-fa 32 60 '"benign","none"' '"dit","dit_forms","dit_vote","base_question"'
#       (60 benign / unchanged: the false-alarm margin confirmed; dit_vote reads at 1, 1.25, 1.5x)
#   beh-fresh.sh /work/runs/beh-held-quirk 33 30 '"quirk"' '"dit","dit_forms","base_question"'
#   beh-fresh.sh /work/runs/beh-held-qb 34 60 '"quirk","benign"' '"dit","dit_forms","base_question"'
#       (the quirk check confirmed on diffs built after its rule was settled)
# The cheap 84-row recipe, data, diffs, the shipped reader, eval. Frozen worktree /work/frozen-fa2
# (commit 58487d3). Resume: rerun the same command.
set -euo pipefail
OUT=${1:?out} SEED=${2:?seed} N=${3:?n} FAMILIES=${4:?families} METHODS=${5:?methods}
export PYTHONPATH=/work/frozen-fa2/src OMP_NUM_THREADS=${THREADS:-2}
/work/main/.venv/bin/python -m ditkit run behaviours --out "$OUT" --stage data --stage diffs \
  --stage dit --stage eval --set threads=${THREADS:-2} --set data.n_train=0 \
  --set data.seed="$SEED" --set data.n_test="$N" --set 'diff_splits=["test"]' \
  --set 'dit.adapter="shipped"' --set 'test_diffs={}' --set "task_options.families=[$FAMILIES]" \
  --set 'eval.vote_scales=[1.0,1.25,1.5]' --set "eval.methods=[$METHODS]"
