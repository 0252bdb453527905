#!/bin/bash
# Builds spec_validation_fuzzer.cc with clang's libFuzzer (+ ASan/UBSan) and
# runs it. Outside Bazel because the build uses gcc; the generated proto code
# comes from the system protoc. Usage (from the repo root):
#   runtime/coordinator/fuzz_spec_validation.sh [seconds=60] [extra libFuzzer flags]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_TO_RUN="${1:-60}"; shift || true
OUT="${KP_FUZZ_DIR:-/tmp/kp-spec-fuzz}"
mkdir -p "$OUT/gen" "$OUT/corpus"
protoc -I"$ROOT/proto" --cpp_out="$OUT/gen" "$ROOT"/proto/kp/v1/job.proto
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$ROOT" -I"$OUT/gen" \
  "$ROOT/runtime/coordinator/spec_validation_fuzzer.cc" "$ROOT/runtime/coordinator/spec_validation.cc" \
  "$ROOT/runtime/common/files.cc" "$OUT/gen/kp/v1/job.pb.cc" \
  -lprotobuf -labsl_status -labsl_statusor -labsl_strings -labsl_cord -labsl_str_format_internal \
  -labsl_raw_logging_internal -labsl_throw_delegate -pthread -o "$OUT/spec_fuzzer"
"$OUT/spec_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 "$@" "$OUT/corpus"
