#!/usr/bin/env bash
# The rendered manifests, run: no cluster is reachable here, so the
# coordinator Deployment's and the Indexed Job's entry points run as local
# processes with the environment Kubernetes would give them
# (pods_to_processes.py: JOB_COMPLETION_INDEX, downward-API values, mounts
# under a temp dir, Service names -> 127.0.0.1). fake_worker.sh stands in for
# kp-train. The pods must form one job that completes, every pod exiting 0.
set -euo pipefail
[[ -n "${KP_PYTHON:-}" ]] || { echo "FAIL: KP_PYTHON is unset: run through tools/bazel.sh"; exit 1; }
R="${TEST_SRCDIR:?run under bazel test}/kp"
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-k8s-pods.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
printf "name: podjob\nmodel: {layers: 2}\ndp: 2\nsteps: 10\ncheckpoint: {dir: podjob, every_steps: 5}\n" > job.yaml
"$R/launcher/kprun" k8s render job.yaml --image kp:test --gpus-per-node 0 --nodes 2 \
  --namespace ml --env-wrapper "" -o rendered.yaml
PORT="$("$KP_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$KP_PYTHON" "$R/tests/k8s/pods_to_processes.py" rendered.yaml "$WORK/vol" "$PORT" > plan.json

# The Secret the user creates: key "token".
mkdir -p vol/token vol/state vol/checkpoints && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > vol/token/token

declare -A BIN=([kp-coordinator]="$R/runtime/coordinator/kp-coordinator" [kprun]="$R/launcher/kprun")
run_argv() {  # run_argv JSON-PATH LOG [ENV-JSON-PATH]: the plan's argv with binaries resolved
  mapfile -t argv < <("$KP_PYTHON" -c "import json,sys; print('\n'.join(eval('json.load(open(\"plan.json\"))' + sys.argv[1])))" "$1")
  argv[0]="${BIN[${argv[0]}]:?unknown command ${argv[0]}}"
  local envs=()
  if [[ -n "${3:-}" ]]; then
    mapfile -t envs < <("$KP_PYTHON" -c "import json,sys; e=eval('json.load(open(\"plan.json\"))' + sys.argv[1]); print('\n'.join(k+'='+v for k,v in e.items()))" "$3")
  fi
  env "${envs[@]}" "${argv[@]}" > "$2" 2>&1 &
  PIDS+=($!)
}

run_argv '["coordinator"]' coordinator.log
for _ in $(seq 100); do grep -q "listening" coordinator.log && break; sleep 0.1; done
grep -q "listening" coordinator.log || { echo "FAIL: coordinator did not start"; cat coordinator.log; exit 1; }

# kprun resolves worker paths itself; the image would carry kp-train.
WORKER="$R/tests/control_plane/fake_worker.sh"
POD_PIDS=()
for i in 0 1; do
  run_argv "[\"pods\"][$i][\"argv\"] + [\"--worker_binary=$WORKER\"]" pod$i.log "[\"pods\"][$i][\"env\"]"
  POD_PIDS+=($!)
done
fail() { echo "FAIL: $*"; for f in *.log; do echo "--- $f"; cat "$f"; done; exit 1; }
for i in 0 1; do
  rc=0
  timeout 60 tail --pid="${POD_PIDS[$i]}" -f /dev/null || fail "pod $i still running after 60 s"
  wait "${POD_PIDS[$i]}" || rc=$?
  [[ $rc == 0 ]] || fail "pod $i exited $rc"
done
grep -q "job j000001 COMPLETED" pod0.log || fail "pod 0 did not report COMPLETED"
grep -q "node 1: job ended COMPLETED" pod1.log || fail "pod 1 did not see the end"
ls vol/checkpoints/runs/podjob-j000001/logs/g1.rank1.out > /dev/null || fail "no rank 1 log on the checkpoint volume"
echo PASS
