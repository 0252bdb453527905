#!/usr/bin/env bash
# One device call: configs/small.yaml trained for STEPS steps in BF16 and in
# FP8 (same seed, same data), loss curves drawn to $OUT/fp8_convergence.png.
# The FP8 run turns the start-up timing off (fp8.autotune: false), so every
# projection runs FP8 (the LM head stays BF16): at this model's small GEMMs
# the timer would keep them in BF16 and the comparison would test nothing.
set -uo pipefail
OUT="${OUT:-bench_out}"; mkdir -p "$OUT"
STEPS="${1:-2000}"
for p in bf16 fp8; do
  sed "s/^precision:.*/precision: $p/" configs/small.yaml > "/tmp/small_$p.yaml"
  [[ $p == fp8 ]] && printf 'fp8:\n  autotune: false\n' >> "/tmp/small_$p.yaml"
  rm -rf "/tmp/run_small_$p"
  timeout 280 bundle/kp-env.sh kp-train --config "/tmp/small_$p.yaml" --run_dir "/tmp/run_small_$p" \
    --steps "$STEPS" --device cuda --metrics_jsonl "$OUT/small_$p.jsonl" > "$OUT/small_$p.log" 2>&1
  echo "small $p rc=$? $(tail -n 1 "$OUT/small_$p.jsonl")"
done
echo "fp8 layers in FP8: $(grep -c 'fp8 layer .*: FP8' "$OUT/small_fp8.log")"
python3 bench/plot_convergence.py "$OUT/fp8_convergence.png" BF16="$OUT/small_bf16.jsonl" FP8="$OUT/small_fp8.jsonl"
