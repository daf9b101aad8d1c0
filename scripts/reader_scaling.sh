#!/usr/bin/env bash
# Issue 27 part 4: the data-scaling curve on the population (preset `population`), once its data
# and diffs stages are done. Usage: scripts/reader_scaling.sh POP [THREADS]
# Readers on the first 37, 75, 150, 300 and 600 training diffs (nested), 3 seeds at the three
# smallest sizes, 2 at 300, 1 at 600; each read on the same 100 held-out diffs once (dit) and by
# majority over three scales (dit_vote); early stopping waits for half the epochs (dit.min_epochs).
# Then the largest reader's evaluation with every baseline and both oracles, as a run directory.
# Everything resumes: rerun the same command after an interruption.
set -euo pipefail
POP=${1:?population directory}
THREADS=${2:-2}
DITKIT=${DITKIT:-.venv/bin/ditkit}
READ='eval.methods=["dit","dit_vote"];eval.vote_scales=[1.0,1.25,1.5]'
# One epoch over many diffs is the reference's choice; small sets need more epochs to learn at all.
"$DITKIT" readers "$POP" --train-sample 30 \
  --setting "n37@0,1,2:dit.max_train_diffs=37;dit.epochs=24;$READ" \
  --setting "n75@0,1,2:dit.max_train_diffs=75;dit.epochs=16;$READ" \
  --setting "n150@0,1,2:dit.max_train_diffs=150;dit.epochs=12;$READ" \
  --setting "n300@0,1:dit.max_train_diffs=300;dit.epochs=8;$READ" \
  --setting "n600@0:dit.max_train_diffs=600;dit.epochs=6;$READ"
# Every method on the 100 held-out diffs, read by the 600-diff reader (paired tables and report).
"$DITKIT" run "$POP/readers/n600-s0/config.json" --out "$POP/readers/n600-s0" --stage eval \
  --stage report --set threads="$THREADS" \
  --set 'eval.methods=["dit","dit_vote","base_question","base_question_guessed_code","base_question_trigger","twenty_questions","twenty_questions_trigger","weight_lens","gating"]'
