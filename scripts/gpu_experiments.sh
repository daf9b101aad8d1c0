#!/usr/bin/env bash
# Issues 27-29 on one CUDA GPU in one sitting. Side by side (a 135M model leaves most of the GPU
# idle), each chain in order of priority:
#   behaviours: preset `behaviours` (280 + 70 diffs, the joint reader, DIT, the base question, the
#     diff checks); readers for the transfer matrix and the diversity curve; the trigger search
#     on the first 10 backdoor diffs.
#   population: preset `population` (100 specific held-out + 600 cheap training diffs, a reader on
#     all 600, every baseline); the shipped reader on the same held-out diffs; the data-scaling
#     readers (37-300 diffs); the trigger search on the first 30 held-out diffs.
# Diff weights stay under WORK; everything else (configs, jobs, adapters, predictions, scores,
# logs) is packed into OUT every 30 s, so a time limit keeps what finished. Predictions are made
# without the embedding model (eval.guesser = none); `ditkit eval RUN --score-only --guesser
# retrieval` scores them on a machine that has it.
#
#   OUT=/tmp/gpu-out WORK=/tmp/gpu-work LIMIT=540 bash scripts/gpu_experiments.sh
#   SMOKE=1 DEVICE=cpu THREADS=1 ...     # a few diffs of each, to test the script on a CPU
#   GPU_TESTS=1 ...                      # also the tiny end-to-end tests on DEVICE
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${OUT:-$repo/gpu-out}
WORK=${WORK:-/tmp/ditkit-gpu}
LIMIT=${LIMIT:-540}      # seconds before everything is stopped and packed
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 TQDM_MININTERVAL=20
start=$(date +%s)

THREADS=${THREADS:-4}
LOGS=$WORK/logs
mkdir -p "$LOGS"
common=(--set "device=$DEVICE" --set threads=$THREADS --set eval.guesser=none --set eval.batch_size=64)
beh=(--set diffs.diffs_per_pass=140 --set diffs.micro_batch_rows=256
     --set test_diffs.diffs_per_pass=35 --set test_diffs.micro_batch_rows=280)
pop=(--set diffs.diffs_per_pass=150 --set diffs.micro_batch_rows=256
     --set test_diffs.diffs_per_pass=50 --set test_diffs.micro_batch_rows=400
     --set dit.epochs=6 --set dit.val_fraction=0.05 --set 'eval.vote_scales=[1.0,1.25,1.5]'
     --set 'eval.methods=["dit","dit_vote","base_question","base_question_guessed_code","base_question_trigger","twenty_questions","twenty_questions_trigger","weight_lens","gating"]')
if [[ -n "${SMOKE:-}" ]]; then
  small=(--set data.n_train=14 --set data.n_test=7 --set diffs.steps=2 --set test_diffs.steps=2
         --set dit.epochs=1 --set task_options.check_questions=1)
  beh+=("${small[@]}")
  pop+=(--set data.n_train=6 --set data.n_test=4 --set diffs.steps=2 --set test_diffs.steps=2
        --set dit.epochs=1 --set task_options.gate_questions=1 --set task_options.twenty_q_count=2
        --set 'eval.methods=["dit","base_question","base_question_guessed_code","twenty_questions","weight_lens","gating"]')
fi

pack() {  # everything but diff weights and caches, one archive per run
  local name=$1 dir=$2
  [[ -d $dir ]] || return 0
  tar -C "$(dirname "$dir")" -czf "$OUT/$name.tgz.tmp" --exclude='*.safetensors' \
    --exclude=cache --exclude='*.pt' "$(basename "$dir")" 2>/dev/null
  mv -f "$OUT/$name.tgz.tmp" "$OUT/$name.tgz"
  # An fp32 adapter is ~20 MB: packed once, in parts under the tool's 16 MiB a file.
  if [[ -d $dir/dit/adapter && ! -e $OUT/$name-adapter.tgz.00 ]]; then
    tar -C "$dir/dit" -czf - adapter | split -b 15000000 -d - "$OUT/$name-adapter.tmp."
    for f in "$OUT/$name-adapter.tmp."*; do mv -f "$f" "$OUT/$name-adapter.tgz.${f##*.}"; done
  fi
}
pack_all() {  # 7 files at most: the device tool brings back 8
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >>"$LOGS/gpu.log" 2>/dev/null
  pack beh "$WORK/beh"; pack pop "$WORK/pop"
  # The searches' own rows (trig-*/work) are megabytes: only their results travel.
  tar -C "$WORK" -czf "$OUT/rest.tgz.tmp" --exclude="*.safetensors" --exclude=diffs logs \
    $(cd "$WORK" && ls -d trig-*/out pop-shipped 2>/dev/null) \
    2>/dev/null; mv -f "$OUT/rest.tgz.tmp" "$OUT/rest.tgz"
}
rm -f "$WORK/.stop"
(while [[ ! -e $WORK/.stop ]]; do sleep 30; [[ -e $WORK/.stop ]] || pack_all; done) &
packer=$!

# Transfer matrix and diversity curve (docs/behaviours.md): one reader per behaviour family (all
# its training diffs), then 2, 4 and 5 families at the same total as one family's.
fam() { echo "$1@0:dit.train_families=$2${3:+;dit.max_train_diffs=$3}"; }
run_beh() {
  "$PY" -m ditkit run behaviours --out "$WORK/beh" "${common[@]}" "${beh[@]}" || return
  local per=$(( $(grep -c '"split": "train"' "$WORK/beh/data/jobs.jsonl") / 7 ))
  "$PY" -m ditkit readers "$WORK/beh" --train-sample 10 \
    --setting "$(fam backdoor '["backdoor"]')" --setting "$(fam refusal '["refusal"]')" \
    --setting "$(fam bias '["bias"]')" --setting "$(fam quirk '["quirk"]')" \
    --setting "$(fam topic '["topic"]')" \
    --setting "$(fam bd-ref '["backdoor","refusal"]' $per)" \
    --setting "$(fam bias-quirk '["bias","quirk"]' $per)" \
    --setting "$(fam topic-ref '["topic","refusal"]' $per)" \
    --setting "$(fam no-topic '["backdoor","refusal","bias","quirk"]' $per)" \
    --setting "$(fam no-bd '["refusal","bias","quirk","topic"]' $per)" \
    --setting "$(fam five '["backdoor","refusal","bias","quirk","topic"]' $per)"
  "$PY" scripts/behaviour_transfer.py "$WORK/beh" --out "$WORK/beh/transfer"
  "$PY" scripts/trigger_study.py "$WORK/beh" --out "$WORK/trig-beh/out" \
         --work "$WORK/trig-beh/work" --device "$DEVICE" --methods dit,truth,divergence \
         --reader "$WORK/beh/dit/adapter" --diffs 10 --threads "$THREADS"
}
# Then the shipped reader on the same held-out diffs (its own run folder, linked diffs), the
# data-scaling readers (scripts/reader_scaling.sh; the 600-diff one is the run's own), the trigger
# search.
run_pop() {
  "$PY" -m ditkit run population --out "$WORK/pop" "${common[@]}" "${pop[@]}" || return
  mkdir -p "$WORK/pop-shipped" && ln -sfn "$WORK/pop/diffs" "$WORK/pop-shipped/diffs"
  "$PY" -m ditkit run population --out "$WORK/pop-shipped" "${common[@]}" "${pop[@]}" \
    --set dit.adapter=shipped --set 'eval.methods=["dit","dit_vote"]' --stage data --stage dit --stage eval
  local read='eval.methods=["dit","dit_vote"];eval.vote_scales=[1.0,1.25,1.5]'
  "$PY" -m ditkit readers "$WORK/pop" --train-sample 30 \
    --setting "n37@0,1,2:dit.max_train_diffs=37;dit.epochs=24;$read" \
    --setting "n75@0,1,2:dit.max_train_diffs=75;dit.epochs=16;$read" \
    --setting "n150@0,1,2:dit.max_train_diffs=150;dit.epochs=12;$read" \
    --setting "n300@0,1:dit.max_train_diffs=300;dit.epochs=8;$read"
  "$PY" scripts/trigger_study.py "$WORK/pop" --out "$WORK/trig-pop/out" \
         --work "$WORK/trig-pop/work" --device "$DEVICE" --methods dit,divergence \
         --reader "$WORK/pop/dit/adapter" --diffs 30 --threads "$THREADS"
}
cd "$repo"
"$PY" -c "from ditkit.models import load_model; load_model('smollm2-135m')" >"$LOGS/cache.log" 2>&1
left=$((LIMIT - ($(date +%s) - start)))
(( left > 0 )) || left=1
tests=
if [[ -n "${GPU_TESTS:-}" ]]; then  # the tiny end-to-end tests, on this device
  DITKIT_TEST_DEVICE=$DEVICE timeout "$left" "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_pipeline.py::test_pipeline_end_to_end \
    tests/test_behaviours.py::test_a_tiny_behaviour_run_end_to_end >"$LOGS/tests.log" 2>&1 &
  tests=$!
fi
timeout "$left" bash -c "$(declare -f fam run_beh); $(declare -p PY WORK DEVICE THREADS common beh); run_beh" \
  >"$LOGS/beh.log" 2>&1 &
b=$!
timeout "$left" bash -c "$(declare -f run_pop); $(declare -p PY WORK DEVICE THREADS common pop); run_pop" \
  >"$LOGS/pop.log" 2>&1 &
p=$!
wait $b; echo "behaviours: exit $? at $(($(date +%s) - start)) s" | tee -a "$LOGS/status.log"
wait $p; echo "population: exit $? at $(($(date +%s) - start)) s" | tee -a "$LOGS/status.log"
[[ -z $tests ]] || wait "$tests"
touch "$WORK/.stop"; wait "$packer"  # a pack under way finishes before the last one
pack_all
tail -n 8 "$LOGS/beh.log" "$LOGS/pop.log"
ls -la "$OUT"
