#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds kp, then
# runs `kprun local` on the default job: an embedded coordinator and one agent
# on this machine train the tiny config on the built-in corpus (on the GPU if
# there is one, else on CPU), streaming progress, and exit with the job's
# status. Extra arguments go to kprun (e.g. a job file of your own).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/setup.sh"
cd "$ROOT"
tools/bazel.sh build --config=opt --jobs="$(nproc)" //launcher:kprun //runtime/worker:kp-train \
  //runtime/coordinator:kp-coordinator //runtime/agent:kp-agent >&2
BIN="$(tools/bazel.sh info --config=opt bazel-bin 2>/dev/null)"
JOB="${1:-$ROOT/configs/jobs/tiny.yaml}"
[[ $# -gt 0 ]] && shift
exec "$BIN/launcher/kprun" local "$JOB" --worker_binary="$BIN/runtime/worker/kp-train" "$@"
