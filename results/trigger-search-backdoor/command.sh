#!/usr/bin/env bash
# Issue 29 on the behaviour suite's backdoor held-out diffs (cheap recipe) of /work/runs/beh-cpu:
# truth- and divergence-guided searches over the first 3,000 words. Resume: rerun.
# METHODS=dit,truth,divergence READER=/work/runs/beh-cpu/dit/adapter once the joint reader exists.
set -euo pipefail
export PYTHONPATH=/work/frozen-trig/src OMP_NUM_THREADS=${THREADS:-1}
cd /work/frozen-trig
/work/main/.venv/bin/python scripts/trigger_study.py /work/runs/beh-cpu \
  --out /work/runs/trig-beh/out --work /work/runs/trig-beh/work --threads ${THREADS:-1} \
  --methods "${METHODS:-truth,divergence}" ${READER:+--reader "$READER"} --diffs 5 --words 3000
