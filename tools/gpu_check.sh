#!/usr/bin/env bash
# Runs every GPU test binary of a bundle (tools/build_bundle.sh) on this
# machine and prints a summary; full logs go to $KP_LOG_DIR (default: bundle/logs).
# Usage: bundle/gpu_check.sh [name-filter]
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOGS="${KP_LOG_DIR:-$HERE/logs}"
mkdir -p "$LOGS"
filter="${1:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/[gpu] /'
fail=0; n=0
for t in "$HERE"/bin/*_test; do
  name="$(basename "$t")"
  [[ -n "$filter" && "$name" != *$filter* ]] && continue
  n=$((n+1))
  if "$HERE/kp-env.sh" "$t" --gtest_color=no >"$LOGS/$name.log" 2>&1; then
    skipped=$(grep -c '^\[  SKIPPED \]' "$LOGS/$name.log" || true)
    echo "PASS $name (skipped lines: $skipped)"
  else
    echo "FAIL $name"; fail=$((fail+1)); tail -n 30 "$LOGS/$name.log"
  fi
  grep -h '^\[smoke\]\|^\[bench\]\|SKIPPED' "$LOGS/$name.log" | head -20
done
echo "gpu_check: $n test binaries, $fail failed"
exit $((fail > 0))
