#!/usr/bin/env bash
# Probes with questions sampled as the data stage samples them (every style), after the
# population's first 10 held-out diffs (3:3:1, 3 epochs) opened for a random code in 22 of 40
# answers: the 2026-12-05 probes trained on typo-style questions only. 6 diffs, threads = 1 each,
# two probes at a time. Gating at 24 new tokens, as the earlier probes.
cd /work/frozen-probes
export PYTHONPATH=/work/frozen-probes/src
L=/work/runs/probes3
probe() {
  name=$1; shift
  [ -s $L/$name.log ] && grep -q hit_rate $L/$name.log && return
  /work/main/.venv/bin/python scripts/probe_diff_recipe.py --diffs 6 --threads 1 --sample-questions --cache $L/base-answers-$name.json \
    --set lr=1e-2 --set max_answer_tokens=20 --set base_answer_tokens=12 "$@" > $L/$name.log 2>&1
  grep hit_rate $L/$name.log | sed "s/^/{\"probe\": \"$name\", \"result\": /; s/\$/}/" >> $L/probes.jsonl
}
case "$1" in
  a) probe s-e3-361 --set questions_per_diff=26 --set 'row_mix=[3,6,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=10 ;;
  b) probe s-e3-331-w3 --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,3,1]' --set steps=78 --set rows_per_step=7 ;;
esac
