#!/usr/bin/env bash
# Two kp-train processes train one data-parallel job over Gloo, meeting
# through a file-store rendezvous directory: both exit 0, rank 0 commits the
# final checkpoint and writes one metrics line per step. A world size that
# does not match the config fails with a message naming the fields.
set -euo pipefail
BIN="$1"
CONFIG="$2"
T="${TEST_TMPDIR:-$(mktemp -d)}/two"
rm -rf "$T" && mkdir -p "$T"
pids=()
for r in 0 1; do
  KP_DP=2 "$BIN" --config "$CONFIG" --run_dir "$T/run" --steps 3 --rank "$r" --world_size 2 \
    --rendezvous "$T/rdv" >"$T/r$r.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do
  wait "$p" || { echo "a rank failed:"; cat "$T"/r*.log; exit 1; }
done
test -f "$T/run/checkpoints/LATEST" || { echo "no checkpoint"; cat "$T/r0.log"; exit 1; }
grep -q "step_00000003" "$T/run/checkpoints/LATEST" || { echo "wrong LATEST"; exit 1; }
lines=$(wc -l <"$T/run/metrics.jsonl")
[[ "$lines" -eq 3 ]] || { echo "expected 3 metrics lines, got $lines"; exit 1; }
if KP_DP=2 "$BIN" --config "$CONFIG" --run_dir "$T/bad" --steps 1 --world_size 3 >"$T/bad.log" 2>&1; then
  echo "world size 3 with dp 2 should fail"; exit 1
fi
grep -q "parallel.dp \* parallel.cp" "$T/bad.log" || { cat "$T/bad.log"; exit 1; }

# SIGTERM mid-run: the worker stops at the next step boundary, checkpoints
# there and exits 0; a resumed run continues from that step.
"$BIN" --config "$CONFIG" --run_dir "$T/term" --steps 1000 >"$T/term.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [[ -f "$T/term/metrics.jsonl" ]] && (( $(wc -l <"$T/term/metrics.jsonl") >= 2 )) && break
  sleep 0.1
done
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[[ "$rc" -eq 0 ]] || { echo "SIGTERM exit code $rc"; cat "$T/term.log"; exit 1; }
stopped=$(sed 's/step_0*//' "$T/term/checkpoints/LATEST")
[[ "$stopped" -ge 2 && "$stopped" -lt 1000 ]] || { echo "stopped at '$stopped'"; exit 1; }
# A shorter run than the one that saved: another learning-rate schedule,
# which the resume check refuses (exit 2, naming learning_rate) unless
# --allow_schedule_change says it is meant.
rc=0
"$BIN" --config "$CONFIG" --run_dir "$T/term" --steps $((stopped + 2)) --resume >"$T/refused.log" 2>&1 || rc=$?
[[ "$rc" -eq 2 ]] || { echo "schedule change: exit code $rc, expected 2"; cat "$T/refused.log"; exit 1; }
grep -q "learning_rate" "$T/refused.log" || { cat "$T/refused.log"; exit 1; }
"$BIN" --config "$CONFIG" --run_dir "$T/term" --steps $((stopped + 2)) --resume --allow_schedule_change \
  >"$T/resume.log" 2>&1
grep -q "resumed from .* at step $stopped" "$T/resume.log" || { cat "$T/resume.log"; exit 1; }
echo PASS
