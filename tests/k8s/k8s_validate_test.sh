#!/usr/bin/env bash
# Every Kubernetes manifest kp ships or renders, validated offline against the
# Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are
# errors) for two named Kubernetes versions; and the checked-in examples in
# deploy/k8s/examples/ must equal a fresh `kprun k8s render` of
# deploy/k8s/example-job.yaml.
set -euo pipefail
K8S_VERSIONS=(1.29.0 1.33.0)

if [[ -z "${KP_PYTHON:-}" ]]; then
  echo "FAIL: KP_PYTHON is unset: run this test through tools/bazel.sh (it points KP_PYTHON at the project's .venv)"
  exit 1
fi
[[ -x "$KP_PYTHON" ]] || { echo "FAIL: KP_PYTHON=$KP_PYTHON is not executable (tools/setup.sh makes .venv)"; exit 1; }
if ! "$KP_PYTHON" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate into $KP_PYTHON's environment"
  "$KP_PYTHON" -m pip install --quiet kubernetes-validate ||
    { echo "FAIL: cannot pip install kubernetes-validate"; exit 1; }
fi

R="${TEST_SRCDIR:?run under bazel test}/kp"
RENDER="$R/launcher/k8s/kp-k8s-render"
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-k8s.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

validate() {
  for v in "${K8S_VERSIONS[@]}"; do
    if ! "$KP_PYTHON" -m kubernetes_validate --strict --quiet -k "$v" "$@" > "$WORK/validate.log" 2>&1; then
      cat "$WORK/validate.log"
      return 1
    fi
  done
}

# Rendered: GPU and CPU variants, one stream and one file per object.
"$RENDER" "$R/deploy/k8s/example-job.yaml" --image registry.example.com/kp:0.1 \
  --gpus-per-node 8 --namespace kp -o "$WORK/gpu.yaml"
"$RENDER" "$R/deploy/k8s/example-job.yaml" --name llama-demo-cpu --image registry.example.com/kp:0.1 \
  --gpus-per-node 0 --nodes 2 --cpu 8 --memory 32Gi --namespace kp -o "$WORK/cpu.yaml"
"$RENDER" "$R/deploy/k8s/example-job.yaml" --image kp:dev --gpus-per-node 4 --nodes 4 \
  --storage-class fast-rwx --shm-size 64Gi --env-wrapper "" --output-dir "$WORK/split"
[[ "$(ls "$WORK/split" | wc -l)" == 7 ]] || { echo "FAIL: --output-dir wrote $(ls "$WORK/split" | wc -l) files, want 7"; exit 1; }
validate "$WORK/gpu.yaml" "$WORK/cpu.yaml" "$WORK"/split/*.yaml || { echo "FAIL: rendered manifests are invalid"; exit 1; }
echo "rendered manifests valid for Kubernetes ${K8S_VERSIONS[*]}"

# Static: the checked-in examples, valid and current.
validate "$R"/deploy/k8s/examples/*.yaml || { echo "FAIL: deploy/k8s/examples are invalid"; exit 1; }
for f in gpu cpu; do
  if ! diff -u "$R/deploy/k8s/examples/llama-demo-$f.yaml" "$WORK/$f.yaml"; then
    echo "FAIL: deploy/k8s/examples/llama-demo-$f.yaml is stale: re-render it with the command in deploy/k8s/README.md"
    exit 1
  fi
done
echo "static manifests valid and current"

# The validator must be able to fail: a misspelt field and a wrong type.
sed 's/completionMode: "Indexed"/completionMod: "Indexed"/' "$WORK/gpu.yaml" > "$WORK/bad1.yaml"
sed 's/completions: 2/completions: "two"/' "$WORK/gpu.yaml" > "$WORK/bad2.yaml"
for bad in bad1 bad2; do
  cmp -s "$WORK/gpu.yaml" "$WORK/$bad.yaml" && { echo "FAIL: $bad edit did not apply"; exit 1; }
  if validate "$WORK/$bad.yaml"; then
    echo "FAIL: kubernetes-validate accepted a broken manifest ($bad)"
    exit 1
  fi
done
echo PASS
