#!/usr/bin/env bash
# Issue 28's preference stage: the joint behaviour reader of RUN trained without
# (base) and with dit.preference_weight (W, default 0.5) at the run's own seed (28, its
# data.seed), each read by DIT on the same 35 held-out diffs; `ditkit readers` pairs them.
# Resume: rerun. Frozen worktree FROZEN (2edb056).
set -euo pipefail
W=${W:-0.5}
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
/work/main/.venv/bin/python -m ditkit readers RUN --train-sample 21 \
  --setting "base@28:" --setting "pref$W@28:dit.preference_weight=$W"
