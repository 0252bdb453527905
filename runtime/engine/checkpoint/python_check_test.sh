#!/usr/bin/env bash
# Writes a checkpoint from C++ and checks it with Python's safetensors package.
# The Python comes from KP_PYTHON (tools/bazel.sh passes the project's .venv);
# without it the test fails rather than silently checking nothing.
set -euo pipefail
writer="$1"
checker="$2"
if [[ -z "${KP_PYTHON:-}" ]]; then
  echo "FAIL: KP_PYTHON is not set. Run tests through tools/bazel.sh (it passes" \
       "--test_env=KP_PYTHON=<repo>/.venv/bin/python3) or pass --test_env=KP_PYTHON=<python with numpy and safetensors>." >&2
  exit 1
fi
if ! "$KP_PYTHON" -c "import numpy, safetensors" 2>/dev/null; then
  echo "FAIL: $KP_PYTHON cannot import numpy and safetensors" >&2
  exit 1
fi
run_dir="${TEST_TMPDIR:-$(mktemp -d)}/run"
rm -rf "$run_dir"
"$writer" "$run_dir"
"$KP_PYTHON" "$checker" "$run_dir"
