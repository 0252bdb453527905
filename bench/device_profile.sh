#!/usr/bin/env bash
# One device call: where the 1.3B step's time goes, kp-train against PyTorch
# eager and torch.compile in the same run (kernel classes against floors,
# bench/profile_breakdown.py), and the three GEMMs of each FP8 Linear against
# BF16 (tools/device/probe_fp8_layer_gemms.py). Needs the bundle.
# Usage: bench/device_profile.sh [raw output dir]
set -uo pipefail
RAW="${1:-${OUT:-bench_out}}"; mkdir -p "$RAW"
ENV=bundle/kp-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$RAW/device.txt"
PYTHONUNBUFFERED=1 timeout 120 python3 tools/device/probe_fp8_layer_gemms.py > "$RAW/fp8_gemms.jsonl" 2> "$RAW/fp8_gemms.err"
echo "fp8 gemm probe rc=$?"; cat "$RAW/fp8_gemms.jsonl"
rm -rf /tmp/run_prof
timeout 240 $ENV kp-train --config configs/1p3b.yaml --run_dir /tmp/run_prof --steps 12 --device cuda \
  --metrics_jsonl "$RAW/kp_prof.jsonl" --profile_steps 8:10 --profile_trace /tmp/kp_trace.json \
  > "$RAW/kp_prof.log" 2>&1
echo "kp rc=$?"; tail -n 2 "$RAW/kp_prof.jsonl"
python3 bench/profile_breakdown.py /tmp/kp_trace.json --config configs/1p3b.yaml --steps 2 --label kp \
  | tee "$RAW/breakdown.jsonl"
PYTHONUNBUFFERED=1 timeout 360 python3 bench/pytorch_llama.py --config configs/1p3b.yaml --steps 10 \
  --warmup 4 --modes eager,compiled --profile_dir /tmp > "$RAW/pytorch.jsonl" 2> "$RAW/pytorch.err"
echo "pytorch rc=$?"; cat "$RAW/pytorch.jsonl"
for m in eager compiled; do
  [[ -f /tmp/pytorch_$m.json ]] && python3 bench/profile_breakdown.py /tmp/pytorch_$m.json \
    --config configs/1p3b.yaml --steps 2 --label "pytorch_$m" | tee -a "$RAW/breakdown.jsonl"
done
