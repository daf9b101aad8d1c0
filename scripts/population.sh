#!/usr/bin/env bash
# Build (or resume) the shared diff population of issue 27: preset `population`, data then diffs,
# held-out split first by default. Usage: scripts/population.sh POP [THREADS] [SPLITS_JSON]
# e.g.  scripts/population.sh /work/pop 1 '["test"]'
# Rerun the same command after any interruption; finished passes stay on disk and every start
# and pass is logged in POP/diffs/progress.jsonl. Run it from a frozen worktree (git worktree
# add --detach DIR COMMIT) so later edits to the checkout cannot change a run under way.
set -euo pipefail
POP=${1:?population directory}
THREADS=${2:-2}
SPLITS=${3:-'["test","train"]'}
DITKIT=${DITKIT:-.venv/bin/ditkit}
export OMP_NUM_THREADS="$THREADS"
"$DITKIT" run population --out "$POP" --stage data --stage diffs \
  --set threads="$THREADS" --set "diff_splits=$SPLITS"
