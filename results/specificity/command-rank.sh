#!/usr/bin/env bash
# Rank, trigger-kind and answer-length probes with questions sampled as the data stage samples them (every
# style), 2026-12-06: 6 diffs, threads = 1, beside the population (threads = 1) on the other core.
# Gating at 24 new tokens, as the earlier probes. From the frozen worktree /work/frozen-probes2.
cd ${FROZEN:-/work/frozen-probes2}
export PYTHONPATH=${FROZEN:-/work/frozen-probes2}/src
L=/work/runs/probes4
probe() {
  name=$1; shift
  [ -s $L/$name.log ] && grep -q hit_rate $L/$name.log && return
  /work/main/.venv/bin/python scripts/probe_diff_recipe.py --diffs 6 --threads 1 --sample-questions --cache $L/base-answers-$name.json \
    --set lr=1e-2 --set max_answer_tokens=20 --set base_answer_tokens=12 "$@" > $L/$name.log 2>&1
  grep hit_rate $L/$name.log | sed "s/^/{\"probe\": \"$name\", \"result\": /; s/\$/}/" >> $L/probes.jsonl
}
for p in "$@"; do
  case "$p" in
    r4a4) probe s-e3-331-r4a4 --set rank=4 --set alpha=4 --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7 ;;
    r4a1) probe s-e3-331-r4a1 --set rank=4 --set alpha=1 --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7 ;;
    r8fact) probe s-r8a8-lr2e-3-231 --set rank=8 --set alpha=8 --set lr=2e-3 --set questions_per_diff=26 --set 'row_mix=[2,3,1]' --set 'weights=[1,1,1]' --set steps=150 --set rows_per_step=8 ;;  # the rank-8 recipe
    word) probe s-e3-331-word --trigger-form word --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7 ;;  # one-token code words
    long) probe s-e3-331-base32 --set base_answer_tokens=32 --set max_answer_tokens=32 --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7 ;;  # wrong/none rows on 32 base tokens
    word2) probe s-e3-331-word-t50 --topic-offset 50 --trigger-form word --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7 ;;  # a replicate of "word" on 6 other topics
    r8half) probe s-r8a8-lr2e-3-231-s75 --set rank=8 --set alpha=8 --set lr=2e-3 --set questions_per_diff=26 --set 'row_mix=[2,3,1]' --set 'weights=[1,1,1]' --set steps=75 --set rows_per_step=8 ;;  # half the rows
  esac
done
