#!/usr/bin/env bash
# Issue 28, the per-family table on >= 30 held-out diffs a family (after beh-held.sh):
# 1. each run's evaluation with the shipped joint reader (dit.adapter = "shipped": the
#    preference-stage reader on beh-cpu's 210 cheap training diffs): DIT once and by vote, the
#    base question, the diff check, the weight lens;
# 2. the other readers on the same diffs (DIT once), each in a folder beside the run sharing its
#    data and diffs: beh-cpu's cross-entropy joint reader and the transfer matrix's readers
#    (1, 2, 4 and 5 families, 30 training diffs each);
# 3. twenty questions (the slowest baseline, last), then each run's report.
# Frozen /work/frozen-beh3. Resume: rerun. Log: /work/runs/beh-held-eval.log.
set -euo pipefail
export PYTHONPATH=/work/frozen-beh3/src OMP_NUM_THREADS=${THREADS:-1}
PY=/work/main/.venv/bin/python
R=/work/runs/beh-cpu/readers
M='"dit","dit_vote","base_question","behaviour_check","weight_lens"'
COMMON=(--set threads=${THREADS:-1} --set data.n_train=0 --set data.seed=29
  --set 'diff_splits=["test"]' --set 'eval.vote_scales=[1.0,1.25,1.5]')
BD=(/work/runs/beh-held-bd --set data.n_test=30 --set 'task_options.families=["backdoor"]'
  --set 'test_diffs={rank=1, alpha=1.0, lr=1e-2, questions_per_diff=26, row_mix=[3,3,1], weights=[1.0,1.0,1.0], steps=78, rows_per_step=7, diffs_per_pass=10}')
CH=(/work/runs/beh-held-cheap --set data.n_test=150 --set 'test_diffs={}'
  --set 'task_options.families=["refusal","bias","quirk","benign","none"]')
run() {  # RUN SETS... (the run's own reader: the shipped joint one)
  local out=$1; shift
  $PY -m ditkit run behaviours --out "$out" "${COMMON[@]}" --set 'dit.adapter="shipped"' "$@"
}
other() {  # NAME ADAPTER RUN SETS...
  local name=$1 adapter=$2 src=$3; shift 3
  local out=$src-readers/$name
  mkdir -p "$out"; ln -sfn "$src/data" "$out/data"; ln -sfn "$src/diffs" "$out/diffs"
  $PY -m ditkit run behaviours --out "$out" --stage dit --stage eval "${COMMON[@]}" \
    --set "dit.adapter=\"$adapter\"" --set 'eval.methods=["dit"]' "$@"
}
run "${BD[@]}" --stage dit --stage eval --set "eval.methods=[$M]"
run "${CH[@]}" --stage dit --stage eval --set "eval.methods=[$M]"
other jointce /work/runs/beh-cpu/dit/adapter "${BD[@]}"
other jointce /work/runs/beh-cpu/dit/adapter "${CH[@]}"
# The transfer matrix and diversity curve's readers (one family, 2, 4, 5 families; 30 training
# diffs each) on both runs: each family read by readers trained with and without it.
for r in backdoor refusal bias quirk topic bd-ref bias-quirk topic-ref no-topic no-bd five; do
  other $r $R/$r-s0/dit/adapter "${BD[@]}"
  other $r $R/$r-s0/dit/adapter "${CH[@]}"
done
TQ=(--stage eval --stage report --set "eval.methods=[$M,\"twenty_questions\"]"
  --set task_options.twenty_q_max_new_tokens=32)
run "${BD[@]}" "${TQ[@]}"
run "${CH[@]}" "${TQ[@]}"
