#!/usr/bin/env bash
# Builds kp's optimised binaries here (Bazel, gRPC, Java exist only on build
# machines) and collects them, plus every shared library the GPU image lacks,
# into bundle/ (git-ignored):
#   bundle/bin/   kp binaries and GPU test binaries
#   bundle/lib/   gRPC, abseil, protobuf, spdlog, fmt, gloo, yaml-cpp, ...
#   bundle/kp-env.sh  runs a command with the image's libtorch/CUDA/NCCL on
#                     LD_LIBRARY_PATH, found by asking python3 where torch is
#   bundle/gpu_check.sh  runs every GPU test binary and reports
# libtorch, CUDA, cuDNN and NCCL are NOT bundled: the GPU image (and any
# cluster node with torch 2.11.0+cu130) provides them. deploy/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${KP_BUNDLE_DIR:-$ROOT/bundle}"

# Targets that go into the bundle: binaries users run, and tests that need a GPU.
TARGETS=(
  //kernels:attention_merge_test
  //tests/gpu_smoke:torch_smoke_test
  //tests/gpu_smoke:nccl_smoke_test
)
# Later issues append their binaries here (kept in one list so the bundle
# stays reviewable); a target that does not exist yet is skipped loudly.
EXTRA_TARGETS=(
  //runtime/worker:kp-train
  //runtime/coordinator:kp-coordinator
  //runtime/agent:kp-agent
  //launcher:kprun
)
for t in ${KP_BUNDLE_EXTRA:-}; do EXTRA_TARGETS+=("$t"); done
for t in "${EXTRA_TARGETS[@]}"; do
  if "$ROOT/tools/bazel.sh" query "$t" >/dev/null 2>&1; then TARGETS+=("$t"); else echo "[bundle] skip $t (not built yet)" >&2; fi
done
# Every C++ test that can use a GPU (it depends on the GPU-skip helper) or is
# tagged "gpu" joins the bundle, as does every binary under bench/.
while read -r t; do [[ -n "$t" ]] && TARGETS+=("$t"); done < <("$ROOT/tools/bazel.sh" query --keep_going \
  'kind("cc_test", rdeps(//..., //kernels:gpu_test_util)) + attr(tags, "gpu", tests(//...)) + kind("cc_binary", //bench/...)' 2>/dev/null | sort -u || true)

# KP_BUNDLE_KEEP_GOING=1 bundles whatever builds (for checking work in
# progress on a GPU); by default any failure stops the bundle.
keep=(); [[ -n "${KP_BUNDLE_KEEP_GOING:-}" ]] && keep=(--keep_going)
"$ROOT/tools/bazel.sh" build --config=opt --jobs="$(nproc)" "${keep[@]}" "${TARGETS[@]}" || [[ -n "${KP_BUNDLE_KEEP_GOING:-}" ]]
BIN="$("$ROOT/tools/bazel.sh" info --config=opt bazel-bin 2>/dev/null)"

rm -rf "$OUT"; mkdir -p "$OUT/bin" "$OUT/lib"
for t in "${TARGETS[@]}"; do
  pkg="${t#//}"; pkg="${pkg%%:*}"; name="${t##*:}"
  src="$BIN/$pkg/$name"
  if [[ ! -x "$src" ]]; then
    echo "[bundle] missing $src" >&2
    [[ -n "${KP_BUNDLE_KEEP_GOING:-}" ]] && continue
    exit 1
  fi
  cp "$src" "$OUT/bin/$name"
  strip --strip-debug "$OUT/bin/$name"  # the tree carried to a GPU machine is capped at 64 MiB
  # Runtime data files next to a binary (configs etc.) come from runfiles.
done
cp -r "$ROOT/configs" "$OUT/configs" 2>/dev/null || true

# Libraries the image provides (by soname prefix): libc & friends, libstdc++,
# libtorch/libc10, CUDA runtime libraries, NCCL, OpenMPI (4.1.6 there).
provided='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libgcc_s|libstdc\+\+|libtorch|libc10|libcuda|libcudart|libcublas|libcudnn|libnccl|libcupti|libcufile|libcusparse|libnvshmem|libnvrtc|libnvJitLink|libcufft|libcurand|libcusolver|libnvToolsExt|libgomp|libmpi|libopen-|libz\.|libutil\.)'
declare -A seen
for f in "$OUT"/bin/*; do
  while read -r name _ path _; do
    [[ "$name" =~ $provided ]] && continue
    [[ -z "${path:-}" || "$path" == "not" ]] && { echo "[bundle] $f: $name not found here" >&2; continue; }
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=1
    cp -L "$path" "$OUT/lib/$name"
  done < <(ldd "$f" | awk '/=>/ {print $1, $2, $3, $4}')
done

cat > "$OUT/kp-env.sh" <<'ENV'
#!/usr/bin/env bash
# Runs a command with kp's bundled libraries and the node's libtorch/CUDA.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${KP_PYTHON:-python3}"
TORCH_LIB="$("$PY" -c 'import importlib.util,os;print(os.path.join(list(importlib.util.find_spec("torch").submodule_search_locations)[0],"lib"))' 2>/dev/null)" \
  || { echo "kp-env: no torch in $PY; set KP_PYTHON to a python with torch 2.11.0" >&2; exit 1; }
NV="$(dirname "$(dirname "$TORCH_LIB")")/nvidia"
EXTRA=""
for d in "$NV"/*/lib "$NV"/cu13/lib; do [[ -d "$d" ]] && EXTRA="$EXTRA:$d"; done
export LD_LIBRARY_PATH="$HERE/lib:$TORCH_LIB$EXTRA:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVLink multicast stays off on shared machines.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
export PATH="$HERE/bin:$PATH"
exec "$@"
ENV
cp "$ROOT/tools/gpu_check.sh" "$OUT/gpu_check.sh"
chmod +x "$OUT"/*.sh
du -sh "$OUT" "$OUT/bin" "$OUT/lib" >&2
