#!/usr/bin/env bash
# Issue 29's measurement: trigger search on the population's held-out diffs, from a frozen
# worktree, at one thread. Rerun the same command to resume (finished diffs are kept).
set -euo pipefail
cd /work/frozen-trigger
export PYTHONPATH=/work/frozen-trigger/src
exec /work/main/.venv/bin/python scripts/trigger_study.py /work/pop --diffs ${DIFFS:-30} \
  --out /work/runs/trigger-study/out --work /work/runs/trigger-study/work --threads 1 \
  >> /work/runs/trigger-study/log.txt 2>&1
