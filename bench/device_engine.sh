#!/usr/bin/env bash
# One device call: the engine benchmarks on one GPU, both sides in the same
# run. Needs the bundle (tools/build_bundle.sh) carried along. Writes JSON
# lines under $OUT (or ./bench_out): PyTorch eager/compiled and kp-train on the
# 1.3B config in BF16 and FP8, and one 1M-token step on one GPU.
# Usage: bench/device_engine.sh [steps]
set -uo pipefail
OUT="${OUT:-bench_out}"; mkdir -p "$OUT"
STEPS="${1:-20}"
ENV=bundle/kp-env.sh
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
run_kp() {  # name config extra-sed
  local name=$1 cfg=$2
  sed "$3" "$cfg" > "/tmp/$name.yaml"
  rm -rf "/tmp/run_$name"
  timeout "${4:-300}" $ENV kp-train --config "/tmp/$name.yaml" --run_dir "/tmp/run_$name" --steps "$5" \
    --device cuda --metrics_jsonl "$OUT/$name.jsonl" > "$OUT/$name.log" 2>&1
  echo "kp $name rc=$? $(tail -n 1 "$OUT/$name.jsonl" 2>/dev/null)"
}
run_kp kp_1p3b_bf16 configs/1p3b.yaml 's/^precision:.*/precision: bf16/' 300 $((STEPS + 5))
run_kp kp_1p3b_fp8 configs/1p3b.yaml 's/^precision:.*/precision: fp8/' 300 $((STEPS + 5))
PYTHONUNBUFFERED=1 timeout 420 python3 bench/pytorch_llama.py --config configs/1p3b.yaml --steps "$STEPS" \
  --warmup 5 --modes eager,compiled > "$OUT/pytorch_1p3b.jsonl" 2> "$OUT/pytorch_1p3b.err"
echo "pytorch rc=$?"; cat "$OUT/pytorch_1p3b.jsonl"
