#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test
# (C++ through Bazel, Python through the project's virtualenv). GPU tests skip
# on machines without a GPU and say why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/setup.sh"
jobs="$(nproc)"
"$ROOT/tools/bazel.sh" test //... --jobs="$jobs" --local_test_jobs="$jobs" \
  "$@"
