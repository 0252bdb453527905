#!/usr/bin/env bash
# One device call: the engine benchmarks on one GPU, both sides in the same
# run. Needs the bundle (tools/build_bundle.sh) carried along. Writes JSON
# lines under $OUT (or ./bench_out): PyTorch eager/compiled and kp-train on the
# 1.3B config in BF16 and FP8; with PROFILE=1 also Chrome traces of two
# steps of kp BF16, kp FP8 and of each PyTorch mode, and where each step's time goes
# against its floor (breakdown.jsonl, bench/profile_breakdown.py).
# SKIP_PYTORCH=1 runs the kp side alone (kp BF16 against kp FP8 needs no
# PyTorch run; the comparison with PyTorch then keeps its earlier figures).
# Usage: [PROFILE=1] [SKIP_PYTORCH=1] bench/device_engine.sh [steps]
set -uo pipefail
OUT="${OUT:-bench_out}"; mkdir -p "$OUT"
STEPS="${1:-20}"
ENV=bundle/kp-env.sh
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
PROF_KP=(); PROF_FP8=(); PROF_PT=()
if [[ -n "${PROFILE:-}" ]]; then
  PROF_KP=(--profile_steps "$((STEPS + 2)):$((STEPS + 4))" --profile_trace /tmp/kp_trace.json)
  PROF_FP8=(--profile_steps "$((STEPS + 2)):$((STEPS + 4))" --profile_trace /tmp/kp_fp8_trace.json)
  PROF_PT=(--profile_dir /tmp)
fi
run_kp() {  # name config extra-sed timeout steps [extra kp-train flags]
  local name=$1 cfg=$2
  sed "$3" "$cfg" > "/tmp/$name.yaml"
  rm -rf "/tmp/run_$name"
  timeout "${4:-300}" $ENV kp-train --config "/tmp/$name.yaml" --run_dir "/tmp/run_$name" --steps "$5" \
    --device cuda --metrics_jsonl "$OUT/$name.jsonl" "${@:6}" > "$OUT/$name.log" 2>&1
  echo "kp $name rc=$? $(tail -n 1 "$OUT/$name.jsonl" 2>/dev/null)"
}
run_kp kp_1p3b_bf16 configs/1p3b.yaml 's/^precision:.*/precision: bf16/' 300 $((STEPS + 5)) "${PROF_KP[@]}"
run_kp kp_1p3b_fp8 configs/1p3b.yaml 's/^precision:.*/precision: fp8/' 300 $((STEPS + 5)) "${PROF_FP8[@]}"
# The same with the LM head in FP8 too (fp8.fp8_lm_head: a job's choice; not
# the default, whose logits stay BF16): what that option buys at this shape.
run_kp kp_1p3b_fp8_lm_head configs/1p3b.yaml 's/^precision:.*/precision: fp8/;$a fp8:\n  fp8_lm_head: true' 300 $((STEPS + 5))
if [[ -z "${SKIP_PYTORCH:-}" ]]; then
  PYTHONUNBUFFERED=1 timeout 420 python3 bench/pytorch_llama.py --config configs/1p3b.yaml --steps "$STEPS" \
    --warmup 5 --modes eager,compiled "${PROF_PT[@]}" > "$OUT/pytorch_1p3b.jsonl" 2> "$OUT/pytorch_1p3b.err"
  echo "pytorch rc=$?"; cat "$OUT/pytorch_1p3b.jsonl"
fi
if [[ -n "${PROFILE:-}" ]]; then
  python3 bench/profile_breakdown.py /tmp/kp_trace.json --config configs/1p3b.yaml --steps 2 --label kp_bf16 \
    | tee "$OUT/breakdown.jsonl"
  [[ -f /tmp/kp_fp8_trace.json ]] && python3 bench/profile_breakdown.py /tmp/kp_fp8_trace.json \
    --config configs/1p3b.yaml --steps 2 --label kp_fp8 --fp8_tflops 1400 | tee -a "$OUT/breakdown.jsonl"
  for m in eager compiled; do
    [[ -f /tmp/pytorch_$m.json ]] && python3 bench/profile_breakdown.py /tmp/pytorch_$m.json \
      --config configs/1p3b.yaml --steps 2 --label "pytorch_$m" | tee -a "$OUT/breakdown.jsonl"
  done
fi
