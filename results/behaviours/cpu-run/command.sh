#!/usr/bin/env bash
# The behaviour suite's first joint reader, on 2 CPU cores (2026-12-06, third session).
# 1. Diffs: preset `behaviours` at 210 training + 35 held-out (5 per family), every diff with the
#    cheap rank-1 recipe ([test_diffs] emptied: the specific rank-8 recipe costs ~9 min a diff here).
#    Stopped after the training diffs of the first passes (the time of one session).
PYTHONPATH=FROZEN/src ditkit run behaviours --out RUN --set threads=2 \
  --set data.n_train=210 --set data.n_test=35 --set 'test_diffs={}' --stage data --stage diffs
# 2. The joint reader on the first N training diffs (dit.max_train_diffs: only those need be on
#    disk), read on all 35 held-out diffs with the base question and the diff checks.
ditkit readers RUN --train-sample 21 \
  --setting "nN@0:dit.max_train_diffs=N;eval.methods=[\"dit\",\"base_question\",\"behaviour_check\"]"
ditkit eval RUN/readers/nN-s0 --score-only --guesser retrieval   # family_match, embeddings
ditkit report RUN/readers/nN-s0
#    (n144/: N = 144, the third session.)
# 2b. The run's own reader on all 210 training diffs (fourth session; the same command as step 1
#    without --stage, at threads=1 beside a probe): dit (stopped at epoch 9 of 12), eval with
#    the base question and the diff checks, report. Files here: config.json, eval/, report/.
PYTHONPATH=FROZEN/src ditkit run behaviours --out RUN --set threads=1 \
  --set data.n_train=210 --set data.n_test=35 --set 'test_diffs={}'
# 3. Trigger search on the backdoor held-out diffs (issue 29), words space of 3,000.
python scripts/trigger_study.py RUN --out OUT --work WORK --threads 1 \
  --methods truth,divergence --diffs 5 --words 3000
