#!/usr/bin/env bash
# Issue 28 transfer matrix and diversity curve on RUN (210 training diffs, 30 per
# family): one reader per family, then 2, 4 and 5 families at 30 diffs in all, each read by DIT on
# the 35 held-out diffs. Resume: rerun. Frozen worktree FROZEN.
set -euo pipefail
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
RUN=RUN
fam() { echo "$1@0:dit.train_families=$2${3:+;dit.max_train_diffs=$3};eval.methods=[\"dit\"]"; }
/work/main/.venv/bin/python -m ditkit readers $RUN --train-sample 10 \
  --setting "$(fam backdoor '["backdoor"]')" --setting "$(fam refusal '["refusal"]')" \
  --setting "$(fam bias '["bias"]')" --setting "$(fam quirk '["quirk"]')" \
  --setting "$(fam topic '["topic"]')" \
  --setting "$(fam bd-ref '["backdoor","refusal"]' 30)" \
  --setting "$(fam bias-quirk '["bias","quirk"]' 30)" \
  --setting "$(fam topic-ref '["topic","refusal"]' 30)" \
  --setting "$(fam no-topic '["backdoor","refusal","bias","quirk"]' 30)" \
  --setting "$(fam no-bd '["refusal","bias","quirk","topic"]' 30)" \
  --setting "$(fam five '["backdoor","refusal","bias","quirk","topic"]' 30)"
cd FROZEN && /work/main/.venv/bin/python scripts/behaviour_transfer.py $RUN --out $RUN/transfer
