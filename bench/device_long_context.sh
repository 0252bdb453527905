#!/usr/bin/env bash
# "Longest training step on one GPU" (issue 11), both sides in one device
# call: kp-train on configs/long_context_1gpu.yaml (d_model 2048, 16 x 128
# heads, 4 layers, vocab 50304, bf16; offloaded checkpoints, MLP tiles,
# chunked loss) and bench/pytorch_long_context.py (the same model in eager
# PyTorch with per-block checkpointing, SDPA, chunked loss), lengths doubling
# from 64K. Raw outputs go under $1 (default bench_out/long_context):
#   kp_<T>.jsonl / kp_<T>.log / kp_<T>.host   kp-train metrics, log, peak host RSS
#   pytorch.jsonl                             one JSON line per PyTorch length
#   summary.json                              longest completed length per side
# Needs the bundle (tools/build_bundle.sh; bundle/kp-env.sh runs kp-train).
# Time: one kp step at 1M tokens is ~8e16 attention FLOPs (~200 s on an H100);
# the whole script keeps to BUDGET_S (default 530 s): kp at 1M first, then
# PyTorch doubling until it fails (or reaches 1M), then kp at shorter lengths
# while time is left. KP_LENGTHS / PT_LENGTHS override the lists.
set -uo pipefail
OUT="${1:-bench_out/long_context}"; mkdir -p "$OUT"
ENV="${KP_ENV:-bundle/kp-env.sh}"
PY="${KP_PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-530}"
CONFIG=configs/long_context_1gpu.yaml
# Both sides: fewer stranded blocks when 4 GiB activations come and go.
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
START=$SECONDS
left() { echo $(( BUDGET_S - (SECONDS - START) )); }

# Peak RSS of a command (kB): GNU time where installed, else /proc sampling.
run_measured() {  # run_measured <host_out> <timeout_s> cmd...
  local host_out="$1" limit="$2"; shift 2
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f "%M" -o "$host_out" timeout "$limit" "$@"
    return $?
  fi
  timeout "$limit" "$@" & local pid=$! peak=0
  while kill -0 "$pid" 2>/dev/null; do
    for p in $pid $(pgrep -P "$pid" 2>/dev/null); do
      local hwm; hwm=$(awk '/VmHWM/{print $2}' /proc/$p/status 2>/dev/null || echo 0)
      [[ -n "$hwm" && "$hwm" -gt "$peak" ]] && peak=$hwm
    done
    sleep 2
  done
  wait "$pid"; local rc=$?
  echo "$peak" > "$host_out"
  return $rc
}

kp_length() {  # kp_length <tokens> <timeout_s>
  local t="$1" limit="$2" cfg="$OUT/kp_$1.yaml" corpus=$(( $1 * 2 > 4194304 ? $1 * 2 : 4194304 ))
  sed -e "s/^  seq_len: .*/  seq_len: $t/" -e "s/^  max_seq_len: .*/  max_seq_len: $t/" \
      -e "s/^    num_tokens: .*/    num_tokens: $corpus/" "$CONFIG" > "$cfg"
  rm -rf "/tmp/kp_long_$t"
  run_measured "$OUT/kp_$t.host" "$limit" $ENV kp-train --config "$cfg" --run_dir "/tmp/kp_long_$t" \
    --steps 1 --device cuda --metrics_jsonl "$OUT/kp_$t.jsonl" > "$OUT/kp_$t.log" 2>&1
  local rc=$?
  echo "kp $t: rc=$rc $(tail -n 1 "$OUT/kp_$t.jsonl" 2>/dev/null) host_kb=$(cat "$OUT/kp_$t.host" 2>/dev/null)"
  [[ $rc -ne 0 ]] && grep -iE "out of memory|error|failed" "$OUT/kp_$t.log" | tail -n 3
  rm -rf "/tmp/kp_long_$t"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"

# 1. kp at the goal length (the step alone is ~200 s; startup, corpus and the
#    end-of-run checkpoint add ~30 s).
for t in ${KP_LENGTHS:-1048576}; do kp_length "$t" 330; done

# 2. PyTorch, doubling until the first failure; each length in a fresh process.
PT_BUDGET=$(( $(left) - 20 ))
"$PY" bench/pytorch_long_context.py --config "$CONFIG" \
  --lengths "${PT_LENGTHS:-65536,131072,262144,524288,1048576}" --stop_on_fail \
  --timeout 200 --budget "$PT_BUDGET" > "$OUT/pytorch.jsonl" 2> "$OUT/pytorch.err"
echo "pytorch rc=$?"; cat "$OUT/pytorch.jsonl"

# 3. kp at shorter lengths while time is left (step times for the table).
for t in ${KP_EXTRA_LENGTHS:-524288 262144 131072 65536}; do
  l=$(left); need=$(( t / 4096 + 40 ))  # ~ step time at this length plus startup
  (( l > need )) || { echo "kp $t: skipped (${l}s left)"; continue; }
  kp_length "$t" "$(( l - 5 ))"
done

"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.json"
import glob, json, math, os, sys
out = sys.argv[1]
kp = []
for f in glob.glob(os.path.join(out, "kp_*.jsonl")):
    if f.endswith(".steps.jsonl"): continue  # per-rank step times, not metrics
    t = int(os.path.basename(f)[3:-6])
    lines = [json.loads(l) for l in open(f) if l.startswith("{")]
    host = open(os.path.join(out, f"kp_{t}.host")).read().strip() if os.path.exists(os.path.join(out, f"kp_{t}.host")) else ""
    ok = bool(lines) and all(isinstance(l.get("loss"), (int, float)) and math.isfinite(l["loss"]) for l in lines)
    kp.append({"tokens": t, "ok": ok, "step_s": lines[-1]["time_s"] if lines else None,
               "peak_gpu_gib": lines[-1]["peak_mem_bytes"] / 2**30 if lines else None,
               "peak_host_gib": int(host) / 2**20 if host.isdigit() else None,
               "loss": lines[-1]["loss"] if lines else None})
pt = [json.loads(l) for l in open(os.path.join(out, "pytorch.jsonl")) if l.startswith("{")] if os.path.exists(os.path.join(out, "pytorch.jsonl")) else []
kp_best = max([r["tokens"] for r in kp if r["ok"]], default=0)
pt_best = max([r["tokens"] for r in pt if r.get("ok")], default=0)
print(json.dumps({"kp": sorted(kp, key=lambda r: r["tokens"]), "pytorch": pt,
                  "long_context_1gpu_tokens": {"value": kp_best, "baseline": pt_best,
                                               "ratio": kp_best / pt_best if pt_best else None}},
                 indent=1))
PYEOF
echo "total ${SECONDS}s"
