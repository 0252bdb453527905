#!/bin/bash
# Generates the Python stubs from proto/, starts a real kp-coordinator on a
# free port and runs python_client_test.py against it with $KP_PYTHON.
set -u
if [ -z "${KP_PYTHON:-}" ] || [ ! -x "${KP_PYTHON}" ]; then
  echo "FAIL: KP_PYTHON is unset or not executable (tools/bazel.sh sets it to the project's .venv python)"
  exit 1
fi
ROOT="$PWD"
WORK="${TEST_TMPDIR:-/tmp}/pyclient-$$"
mkdir -p "$WORK/gen"
"$KP_PYTHON" "$ROOT/clients/python/gen_stubs.py" --proto_dir "$ROOT/proto" --out "$WORK/gen" || exit 1
echo python-client-token > "$WORK/token"
"$ROOT/runtime/coordinator/kp-coordinator" --listen 127.0.0.1:0 --db "$WORK/state.db" \
  --token_file "$WORK/token" --metrics_port -1 > "$WORK/coordinator.out" 2> "$WORK/coordinator.err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
ADDR=""
for _ in $(seq 100); do
  ADDR=$(sed -n 's/^kp-coordinator listening on //p' "$WORK/coordinator.out")
  [ -n "$ADDR" ] && break
  sleep 0.05
done
[ -n "$ADDR" ] || { echo "FAIL: coordinator did not start"; cat "$WORK/coordinator.err"; exit 1; }
KP_ADDR="$ADDR" KP_TOKEN_FILE="$WORK/token" PYTHONPATH="$WORK/gen:$ROOT/clients/python" \
  "$KP_PYTHON" "$ROOT/tests/control_plane/python_client_test.py"
