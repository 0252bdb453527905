#!/usr/bin/env bash
# Installs what kp needs on a Debian 12 machine, idempotently: the system
# packages (Bazel, gRPC, Protobuf, spdlog, GoogleTest, OpenMPI, SQLite, Gloo),
# and a project-local virtualenv (.venv) holding libtorch 2.11.0 (the C++
# library inside the torch wheel, the version the GPU machines run) plus the
# Python packages our tests and client use. Fast the second time: it checks
# before it installs, and keeps downloaded wheels in ~/.cache/kp/wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
CACHE="${KP_CACHE:-$HOME/.cache/kp}"
log() { echo "[kp setup] $*" >&2; }

APT_PACKAGES=(
  bazel-bootstrap
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libopenmpi-dev openmpi-bin
  libsqlite3-dev libgloo-dev libabsl-dev
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev
  python3-venv
  slurm-wlm munge   # tests/slurm starts a throw-away two-node cluster
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${KP_BASE_PYTHON:-python3}"
VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python3" ]]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV" || { log "python3 -m venv failed: install python3-venv"; exit 1; }
fi
VPY="$VENV/bin/python3"

# Python packages for tests, benchmarks and the client (small). Installed
# before torch so pip's resolver never sees the deliberately dep-less torch.
# kubernetes-validate: offline schema checks of the rendered manifests (tests/k8s).
PY_PACKAGES=(numpy safetensors grpcio grpcio-tools protobuf tqdm pyyaml kubernetes-validate)
if ! "$VPY" -c "import numpy, safetensors, grpc, grpc_tools, google.protobuf, tqdm, yaml, kubernetes_validate" 2>/dev/null; then
  log "installing ${PY_PACKAGES[*]}"
  "$VPY" -m pip install -q "${PY_PACKAGES[@]}"
fi
have_torch() {
  "$VPY" - "$TORCH_VERSION" <<'PYEOF' 2>/dev/null
import importlib.metadata, sys
sys.exit(0 if importlib.metadata.version("torch") == sys.argv[1] else 1)
PYEOF
}
if ! have_torch; then
  mkdir -p "$CACHE/wheels"
  log "installing torch==$TORCH_VERSION (C++ library only, no Python deps)"
  "$VPY" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "torch==$TORCH_VERSION" \
    || log "download failed; trying the local wheel cache"
  "$VPY" -m pip install -q --no-deps --no-index --find-links "$CACHE/wheels" "torch==$TORCH_VERSION" || {
    log "cannot install torch==$TORCH_VERSION: the registry did not serve it and $CACHE/wheels has no copy"; exit 1; }
fi

# libtorch_cuda.so needs three libraries /usr/local/cuda lacks; the torch
# wheel finds them in these sibling wheels (its RUNPATH points there).
CUDA_WHEELS=(nvidia-cufile==1.20.0.107 nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5)
if ! "$VPY" -c "import importlib.metadata as m; [m.version(p) for p in ('nvidia-cufile','nvidia-cusparselt-cu13','nvidia-nvshmem-cu13')]" 2>/dev/null; then
  log "installing ${CUDA_WHEELS[*]} (libraries libtorch_cuda links)"
  "$VPY" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "${CUDA_WHEELS[@]}" || true
  "$VPY" -m pip install -q --no-deps --no-index --find-links "$CACHE/wheels" "${CUDA_WHEELS[@]}"
fi

log "ready: $("$VPY" -c 'import importlib.metadata as m; print("torch", m.version("torch"))')"
