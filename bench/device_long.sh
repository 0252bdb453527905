#!/usr/bin/env bash
# One device call: context-parallel attention on one GPU (local cuDNN/flash vs
# SDPA, cp=1 and simulated cp ranks) and one training step of 1,048,576 tokens
# on one GPU. Needs the bundle. JSON lines under $OUT.
set -uo pipefail
OUT="${OUT:-bench_out}"; mkdir -p "$OUT"
ENV=bundle/kp-env.sh
timeout 240 $ENV cp_attention_bench ${CP_BENCH_ARGS:---seqs 32768,131072 --cps 2,4} \
  > "$OUT/cp_attention.jsonl" 2> "$OUT/cp_attention.err"
echo "cp bench rc=$?"; tail -n 30 "$OUT/cp_attention.jsonl"
rm -rf /tmp/run_1m
TIMEV=(); [[ -x /usr/bin/time ]] && TIMEV=(/usr/bin/time -v)
"${TIMEV[@]}" timeout 420 $ENV kp-train --config configs/long_context_1gpu_d1024.yaml --run_dir /tmp/run_1m \
  --steps "${LONG_STEPS:-2}" --device cuda --metrics_jsonl "$OUT/long_1m.jsonl" > "$OUT/long_1m.log" 2>&1
echo "1M rc=$?"; cat "$OUT/long_1m.jsonl"; grep -E "Maximum resident|Elapsed" "$OUT/long_1m.log"; tail -n 5 "$OUT/long_1m.log"
