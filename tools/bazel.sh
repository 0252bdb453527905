#!/usr/bin/env bash
# Runs Bazel with kp's machine-level settings: Debian's real binary (bazel-4;
# /usr/bin/bazel is a version-picking wrapper), a disk cache outside the clone
# so a fresh clone on the same machine (CI) reuses earlier actions, and the
# project's Python for tests that read files from Python (KP_PYTHON).
# KP_BAZEL_OUTPUT_BASE gives a separate Bazel server (parallel work in one tree).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BAZEL="$(command -v bazel-4 || command -v bazel)"
CACHE="${KP_CACHE:-$HOME/.cache/kp}"
mkdir -p "$CACHE/bazel-disk"
startup=()
[[ -n "${KP_BAZEL_OUTPUT_BASE:-}" ]] && startup+=(--output_base="$KP_BAZEL_OUTPUT_BASE")
cmd="$1"; shift
cd "$ROOT"
extra=()
case "$cmd" in
  build|run|coverage) extra=(--disk_cache="$CACHE/bazel-disk") ;;
  test) extra=(--disk_cache="$CACHE/bazel-disk" --test_env=KP_PYTHON="${KP_PYTHON:-$ROOT/.venv/bin/python3}") ;;
esac
exec "$BAZEL" "${startup[@]}" "$cmd" "${extra[@]}" "$@"
