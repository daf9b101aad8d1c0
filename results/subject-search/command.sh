#!/usr/bin/env bash
# The subject search on the behaviour suite's 10 held-out refusal and bias diffs
# (results/behaviours/cpu-run: the cheap rank-1 recipe; run folder /work/runs/beh-cpu), from a
# frozen worktree at the commit that added scripts/subject_study.py (2026-12-06, seventh
# session; one thread beside one other one-thread job; 38 min in all).
.venv/bin/python scripts/subject_study.py /work/runs/beh-cpu \
  --out /work/runs/subject-search/out --work /work/runs/subject-search/work --threads 1
# Then, from a frozen worktree at the review pass's commit, the checks again in question forms
# no diff trained on and no search asked (scripts/subject_study.py's CHECKS; the first checks
# had used the held-out forms the search also probed: per_diff.jsonl keeps them as
# shows_in_search_forms); the searches resumed from their rows, the seconds kept from the first:
.venv/bin/python scripts/subject_study.py /work/runs/beh-cpu \
  --out /work/runs/subject-search/out --work /work/runs/subject-search/work --threads 1 --recheck
# The same search for one diff from the command line:
#   ditkit trigger /work/runs/beh-cpu/diffs/test/test-00001.safetensors --out OUT \
#     --space topics --probes about --score shift
