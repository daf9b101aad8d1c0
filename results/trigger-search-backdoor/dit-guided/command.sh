#!/usr/bin/env bash
# Issue 29 on the behaviour suite's backdoor held-out diffs, now guided by the joint reader on all
# 210 training diffs as well (dit, truth, divergence); the earlier truth/divergence searches resume
# from WORK/work. Resume: rerun. Frozen worktree FROZEN.
set -euo pipefail
export PYTHONPATH=FROZEN/src OMP_NUM_THREADS=${THREADS:-1}
cd FROZEN
/work/main/.venv/bin/python scripts/trigger_study.py RUN \
  --out WORK/out-dit --work WORK/work --threads ${THREADS:-1} \
  --methods dit,truth,divergence --reader RUN/dit/adapter --diffs 5 --words 3000
