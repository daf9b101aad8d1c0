#!/usr/bin/env bash
# Diff-specificity probes (issue 27 part 1), 2026-12-05: 6 diffs each, 4 held-out questions per
# diff and condition (own code / a random code / none: 24 answers per cell), rank 1, lr 1e-2,
# torch threads = 1, from the frozen worktree of commit 5678aec. Printed results: probes.jsonl;
# each probe's first answers and last step's losses: samples.txt.
cd /work/frozen
export PYTHONPATH=/work/frozen/src
L=/work/runs/probes2
probe() {
  name=$1; shift
  [ -s $L/$name.log ] && grep -q hit_rate $L/$name.log && return
  /work/main/.venv/bin/python scripts/probe_diff_recipe.py --diffs 6 --threads 1 --cache $L/base-answers.json \
    --set lr=1e-2 --set max_answer_tokens=20 --set base_answer_tokens=12 "$@" > $L/$name.log 2>&1
  grep hit_rate $L/$name.log | sed "s/^/{\"probe\": \"$name\", \"result\": /; s/\$/}/" >> $L/probes.jsonl
}
# 26 questions; per question 2 own-code : 3 wrong-code : 1 plain rows (156 rows); equal weights
probe e3-231 --set questions_per_diff=26 --set 'row_mix=[2,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=6   # 3 epochs
probe e6-231 --set questions_per_diff=26 --set 'row_mix=[2,3,1]' --set 'weights=[1,1,1]' --set steps=156 --set rows_per_step=6  # 6 epochs
probe e3-331 --set questions_per_diff=26 --set 'row_mix=[3,3,1]' --set 'weights=[1,1,1]' --set steps=78 --set rows_per_step=7   # 3 own rows
probe e1-231 --set questions_per_diff=26 --set 'row_mix=[2,3,1]' --set 'weights=[1,1,1]' --set steps=26 --set rows_per_step=6   # 1 epoch
