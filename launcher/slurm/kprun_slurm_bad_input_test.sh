#!/usr/bin/env bash
# kprun slurm on bad input, with a fabricated Slurm task environment (no
# daemons needed): each case must stop within its stated timeout, exit
# non-zero, name the cause and what to do, and leave no process behind.
set -uo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
KPRUN="$R/launcher/slurm/kprun-slurm"
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-slurm-bad.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cp "$R/tests/control_plane/fake_worker.sh" worker.sh
printf "name: ok\nmodel: {layers: 2}\ndp: 2\nsteps: 5\n" > ok.yaml
printf "0123456789abcdef0123456789abcdef" > token
COMMON=(--worker_binary "$WORK/worker.sh" --cpu_slots 1 --run_root "$WORK/runs" --coordinator-address 127.0.0.1
        --node-address 127.0.0.1 --port-base 39000)
TASK=(SLURM_JOB_ID=999 SLURM_JOB_NODELIST="n[1-2]" SLURM_TASKS_PER_NODE="1(x2)" SLURM_NTASKS=2 SLURM_LOCALID=0)
fail() { echo "FAIL: $*"; cat out.txt; exit 1; }
expect() {  # expect NAME MAX_SECONDS PATTERN -- ENV... : runs kprun-slurm, checks rc != 0, time, message
  local name=$1 max=$2 pattern=$3; shift 4
  local start=$SECONDS rc=0
  timeout $((max + 20)) env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$@" > out.txt 2>&1 || rc=$?
  local took=$((SECONDS - start))
  [[ $rc != 0 && $rc != 124 ]] || fail "$name: exit $rc (124 = hung)"
  (( took <= max )) || fail "$name: took $took s, more than $max"
  grep -q -- "$pattern" out.txt || fail "$name: no '$pattern' in the output"
  pgrep -f "$WORK/worker.sh" > /dev/null && fail "$name: a worker survived"
  echo "ok: $name ($took s, exit $rc)"
}

expect "agent never registers" 12 "agent(s) slurm-999-node1 did not register with 127.0.0.1:39000 within 3 s" -- \
  "${TASK[@]}" SLURM_NODEID=0 SLURM_PROCID=0 "$KPRUN" ok.yaml "${COMMON[@]}" --register-timeout 3
expect "coordinator never answers" 12 "the coordinator at 127.0.0.1:39000 did not answer for 3 s" -- \
  "${TASK[@]}" SLURM_NODEID=1 SLURM_PROCID=1 "$KPRUN" ok.yaml "${COMMON[@]}" --register-timeout 3 \
  --token_file token
expect "existing coordinator never answers" 12 "the coordinator at 127.0.0.1:1 did not answer within 3 s" -- \
  "${TASK[@]}" SLURM_NODEID=0 SLURM_PROCID=0 "$KPRUN" ok.yaml "${COMMON[@]}" --register-timeout 3 \
  --coordinator 127.0.0.1:1 --token_file token
expect "malformed node list" 2 "SLURM_JOB_NODELIST: hostlist: unclosed '\[' in 'n\[1-2'" -- \
  SLURM_JOB_ID=999 SLURM_JOB_NODELIST="n[1-2" SLURM_NODEID=0 "$KPRUN" ok.yaml "${COMMON[@]}"
expect "more GPUs than the allocation" 2 "dp x cp = 8 x 2 = 16 ranks but the allocation has 2 node(s) x 4 GPU(s) = 8" -- \
  "${TASK[@]}" SLURM_NODEID=0 SLURM_PROCID=0 SLURM_GPUS_ON_NODE=4 "$KPRUN" \
  <(printf "name: big\nmodel: {layers: 2}\ndp: 8\ncp: 2\nsteps: 5\n") --worker_binary "$WORK/worker.sh"
expect "outside an allocation" 2 "not inside a Slurm allocation" -- "$KPRUN" ok.yaml "${COMMON[@]}"
expect "two tasks per node" 2 "srun --ntasks-per-node=1" -- \
  SLURM_JOB_ID=999 SLURM_JOB_NODELIST="n1" SLURM_TASKS_PER_NODE="2" SLURM_NTASKS=2 SLURM_NODEID=0 \
  SLURM_PROCID=1 SLURM_LOCALID=1 "$KPRUN" ok.yaml "${COMMON[@]}"
echo PASS
