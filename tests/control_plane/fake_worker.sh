#!/bin/sh
# A stand-in for kp-train with its flags. Writes one metrics line per step to
# --metrics_jsonl and exits. The job's config YAML steers it:
#   fake_exit_code: N        exit with N after the steps (default 0)
#   fake_fail_rank: R        only rank R uses fake_exit_code
#   fake_step_seconds: S     sleep S per step (default 0.02)
#   fake_hang: true          ignore the step count and run until signalled
#   fake_fail_generation: G  only generation G (KP_GENERATION) uses fake_exit_code
set -eu
config="" steps=1 metrics="" rank=0 world=1 resume=0 run_dir="" rendezvous=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --metrics_jsonl) metrics=$2; shift 2 ;;
    --rank) rank=$2; shift 2 ;;
    --world_size) world=$2; shift 2 ;;
    --run_dir) run_dir=$2; shift 2 ;;
    --rendezvous) rendezvous=$2; shift 2 ;;
    --device|--local_rank) shift 2 ;;
    --resume) resume=1; shift ;;
    *) echo "fake_worker: unknown flag $1" >&2; exit 64 ;;
  esac
done
get() { sed -n "s/^$1: *//p" "$config" | head -n 1; }
code=$(get fake_exit_code); code=${code:-0}
fail_rank=$(get fake_fail_rank)
pause=$(get fake_step_seconds); pause=${pause:-0.02}
hang=$(get fake_hang)
fail_gen=$(get fake_fail_generation)
if [ -n "$fail_rank" ] && [ "$fail_rank" != "$rank" ]; then code=0; fi
if [ -n "$fail_gen" ] && [ "$fail_gen" != "${KP_GENERATION:-}" ]; then code=0; fi
echo "fake_worker rank $rank/$world steps $steps resume $resume run_dir $run_dir rendezvous $rendezvous job ${KP_JOB_ID:-?}"
[ -d "$run_dir" ] || { echo "no run dir" >&2; exit 65; }
i=1
while [ "$hang" = "true" ] || [ "$i" -le "$steps" ]; do
  loss=$(awk "BEGIN { printf \"%.4f\", 4.0 / $i }")
  echo "{\"step\": $i, \"loss\": $loss, \"tokens_per_s\": 1000.0}" >> "$metrics"
  sleep "$pause"
  i=$((i + 1))
done
echo "fake_worker rank $rank done, exit $code" >&2
exit "$code"
