#!/usr/bin/env bash
# One device call (about 6-8 minutes on one H100/H200): the CP attention
# benchmark, every GPU test binary of the bundle, and the FP8 convergence run.
# Needs the bundle (tools/build_bundle.sh) carried along. Writes under $OUT
# (at most 8 files come back from a device call, so logs are tarred):
#   device.txt, cp_attention.jsonl (+ .err), cp_trace_kernels.jsonl, gpu_check.txt, gpulogs.tgz,
#   conv.tgz (small_{bf16,fp8}.{jsonl,log}, fp8_convergence.png)
#   eng.tgz (bench/device_engine.sh without PyTorch), fp8_bench.jsonl,
#   cp_train_one_gpu.txt (cptrain: CP = 2 training, two processes on this GPU)
#   cp_train_long_one_gpu.txt (cptrain_long: the same with configs/long_context.yaml)
# Usage: [GPU_FILTERS="a b"] bench/device_verify.sh [cp|gpu|conv|eng|fp8bench|cptrain|cptrain_long ...]
#        (default: cp gpu conv)
set -uo pipefail
OUT="${OUT:-bench_out}"; mkdir -p "$OUT"
parts=("$@"); [[ ${#parts[@]} -eq 0 ]] && parts=(cp gpu conv)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
for part in "${parts[@]}"; do
  start=$SECONDS
  case "$part" in
    cp)
      timeout 240 bundle/kp-env.sh cp_attention_bench --seqs 131072 --cps 2,8 --profile_trace /tmp/cptrace \
        > "$OUT/cp_attention.jsonl" 2> "$OUT/cp_attention.err"
      echo "cp_attention_bench rc=$?"
      python3 - "$OUT/cp_attention.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    eff = r.get("efficiency_vs_full")
    print(f"  {r['impl']:30s} cp={r['cp']} {r['fwd_bwd_ms']:9.2f} ms" + (f"  eff {eff:.4f}" if eff else ""))
PY
      # Where the simulated split's time goes, against the one full call.
      for t in /tmp/cptrace.*.json; do
        python3 bench/trace_kernels.py "$t" --label "$(basename "$t" .json)"
      done > "$OUT/cp_trace_kernels.jsonl"
      grep -h '"class"\|total' "$OUT/cp_trace_kernels.jsonl"
      ;;
    gpu)
      # GPU_FILTERS="fold cp_gpu ...": only the test binaries whose names
      # contain one of these (a short call); default every one.
      rm -rf /tmp/gpulogs
      read -r -a filters <<< "${GPU_FILTERS:-}"
      [[ ${#filters[@]} -eq 0 ]] && filters=("")
      for filter in "${filters[@]}"; do
        KP_LOG_DIR=/tmp/gpulogs timeout 300 bundle/gpu_check.sh "$filter" >> "$OUT/gpu_check.txt" 2>&1
        echo "gpu_check $filter rc=$?"
      done
      grep -E '^(PASS|FAIL|gpu_check)' "$OUT/gpu_check.txt"
      tar czf "$OUT/gpulogs.tgz" -C /tmp gpulogs
      ;;
    conv)
      rm -rf /tmp/conv
      OUT=/tmp/conv bash bench/device_fp8_convergence.sh 2000
      tar czf "$OUT/conv.tgz" -C /tmp conv
      ;;
    eng)
      # kp BF16 / FP8 / FP8 with the LM head, 25 steps each, profiled
      # (PyTorch's side of the engine comparison is not rerun here).
      rm -rf /tmp/eng
      SKIP_PYTORCH=1 PROFILE=1 OUT=/tmp/eng timeout 420 bash bench/device_engine.sh 20
      tar czf "$OUT/eng.tgz" -C /tmp eng
      ;;
    fp8bench)
      timeout 240 bundle/kp-env.sh fp8_bench > "$OUT/fp8_bench.jsonl" 2> "$OUT/fp8_bench.err"
      echo "fp8_bench rc=$?"
      grep -h '"name"' "$OUT/fp8_bench.jsonl" | cut -c1-200 | head -30
      ;;
    cptrain|cptrain_long)
      # CP = 2 training as two processes sharing this GPU (Gloo through host
      # memory) against CP = 1, BF16: runtime/worker/cp_two_process_test.sh.
      # cptrain: configs/tiny.yaml, 6 steps; cptrain_long:
      # configs/long_context.yaml (16 layers, 128K tokens), 2 steps.
      printf '#!/usr/bin/env bash\nexec %s/bundle/kp-env.sh kp-train "$@"\n' "$PWD" > /tmp/kp-train
      chmod +x /tmp/kp-train
      if [[ "$part" == cptrain ]]; then
        sed 's/^precision:.*/precision: bf16/' configs/tiny.yaml > /tmp/cp_bf16.yaml; steps=6; report=cp_train_one_gpu
      else
        # cp 1 in the file for the one-process run; KP_CP=2 makes the pair.
        sed "s/^  cp: 2$/  cp: 1/" configs/long_context.yaml > /tmp/cp_bf16.yaml; steps=2; report=cp_train_long_one_gpu
      fi
      rm -rf "/tmp/$part"; mkdir -p "/tmp/$part"
      TEST_TMPDIR="/tmp/$part" timeout 420 bash runtime/worker/cp_two_process_test.sh /tmp/kp-train \
        /tmp/cp_bf16.yaml cuda "$steps" > "$OUT/$report.txt" 2>&1
      echo "cp_two_process_test $part (cuda) rc=$?"; tail -n 12 "$OUT/$report.txt"
      # The runs' logs and metrics, without checkpoints.
      tar czf "$OUT/$report.logs.tgz" -C /tmp --exclude='*/checkpoints' --exclude='*.safetensors' "$part"
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  echo "[$part] $((SECONDS - start)) s"
done
