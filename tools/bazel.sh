#!/usr/bin/env bash
# Runs Bazel with kp's machine-level settings: Debian's real binary (bazel-4;
# /usr/bin/bazel is a version-picking wrapper), and a disk cache outside the
# clone so a fresh clone on the same machine (CI) reuses earlier actions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BAZEL="$(command -v bazel-4 || command -v bazel)"
CACHE="${KP_CACHE:-$HOME/.cache/kp}"
mkdir -p "$CACHE/bazel-disk"
cmd="$1"; shift
cd "$ROOT"
case "$cmd" in
  build|test|run|coverage|query|cquery|aquery)
    extra=(--disk_cache="$CACHE/bazel-disk")
    [[ "$cmd" == query ]] && extra=()
    exec "$BAZEL" "$cmd" "${extra[@]}" "$@" ;;
  *) exec "$BAZEL" "$cmd" "$@" ;;
esac
