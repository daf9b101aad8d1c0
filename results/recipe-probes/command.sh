#!/usr/bin/env bash
# Diff-recipe probes (issue 19 part 2), 8 diffs each, 4 held-out questions per condition per diff,
# from the frozen worktree /work/frozen2. Each probe's log: /work/runs/probes/NAME.log
cd /work/frozen2
export PYTHONPATH=/work/frozen2/src
mkdir -p /work/runs/probes
probe() {
  name=$1; shift
  [ -s /work/runs/probes/$name.log ] && grep -q hit_rate /work/runs/probes/$name.log && return
  /work/main/.venv/bin/python scripts/probe_diff_recipe.py --diffs 8 --cache /work/runs/probe-base-answers.json \
    --set lr=1e-2 --set max_answer_tokens=20 --set base_answer_tokens=12 "$@" > /work/runs/probes/$name.log 2>&1
}
# 84 rows, the shipped recipe (28 questions, one row of each kind)
probe r84-111 --set questions_per_diff=28 --set steps=28 --set rows_per_step=3
# 168 rows: trigger:wrong:none = 2:0:1 on 56 questions
probe r168-201 --set questions_per_diff=56 --set steps=56 --set rows_per_step=3 --set 'row_mix=[2,0,1]'
# 170 rows: 3:1:1 on 34 questions
probe r170-311 --set questions_per_diff=34 --set steps=34 --set rows_per_step=5 --set 'row_mix=[3,1,1]'
# 168 rows, one of each kind on 56 questions, cosine with warm-up
probe r168-111-cos --set questions_per_diff=56 --set steps=56 --set rows_per_step=3 --set lr_schedule=cosine --set warmup_steps=5 --set lr=2e-2
# 168 rows 2:0:1, cosine
probe r168-201-cos --set questions_per_diff=56 --set steps=56 --set rows_per_step=3 --set 'row_mix=[2,0,1]' --set lr_schedule=cosine --set warmup_steps=5 --set lr=2e-2
# 168 rows 2:0:1, rank 2
probe r168-201-rank2 --set questions_per_diff=56 --set steps=56 --set rows_per_step=3 --set 'row_mix=[2,0,1]' --set rank=2
