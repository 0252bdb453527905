#!/usr/bin/env bash
# `kprun slurm` through deploy/slurm/kp.sbatch on the emulated two-node
# cluster (slurm_cluster.sh), with fake_worker.sh standing in for kp-train:
#   1. a two-node job completes; both nodes report it
#   2. a job wanting more ranks than the allocation has fails at once,
#      naming both numbers
#   3. outside an allocation kprun slurm refuses, saying what to do
#   4. scancel mid-run: the job is cancelled, every task exits, no worker
#      survives, the job is not requeued
#   5. the time-limit path (USR1 to the batch script only, as
#      --signal=B:USR1@120 does): the script stops kprun, requeues, and the
#      second run resumes (workers get --resume) and completes
set -euo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
exec "$R/tests/slurm/slurm_cluster.sh" --nodes 2 -- bash -c '
set -euo pipefail
R="$1"
KPRUN="$R/launcher/kprun"
WORK="$(mktemp -d /tmp/kp-kprun-slurm.XXXXXX)"
trap "rm -rf \"$WORK\"" EXIT
cd "$WORK"
cp "$R/tests/control_plane/fake_worker.sh" worker.sh
# The shipped script minus its GPU-node sizing (the emulated nodes have 2 CPUs, no GPUs).
grep -v -e "--gpus-per-node" -e "--cpus-per-task" -e "--exclusive" "$R/deploy/slurm/kp.sbatch" > kp.sbatch
# Emulated node names resolve nowhere: NodeAddr is 127.0.0.1 for all.
export KP_COORDINATOR_ADDRESS=127.0.0.1 KP_NODE_ADDRESS=127.0.0.1 KPRUN="$KPRUN"
COMMON=(--worker_binary "$WORK/worker.sh" --cpu_slots 1 --run_root "$WORK/runs" --register-timeout 30)
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }

echo "== 1. two-node job completes"
printf "name: ok\nmodel: {layers: 2}\ndp: 2\nsteps: 12\n" > ok.yaml
rc=0; sbatch --wait --output=ok.out kp.sbatch ok.yaml "${COMMON[@]}" > /dev/null || rc=$?
[[ $rc == 0 ]] || fail "sbatch --wait exited $rc"
grep -q "job j000001 COMPLETED" ok.out || fail "no COMPLETED line from node 0"
grep -q "node 1: job ended COMPLETED" ok.out || fail "node 1 did not see the end"
grep -q "step 12/12" ok.out || fail "no progress"
[[ -s runs/ok-j000001/logs/g1.rank1.out && -s runs/ok-j000001/logs/g1.rank0.out ]] || fail "rank logs missing"

echo "== 2. too many ranks for the allocation"
printf "name: big\nmodel: {layers: 2}\ndp: 3\ncp: 2\nsteps: 2\n" > big.yaml
start=$SECONDS
rc=0; sbatch --wait --output=big.out kp.sbatch big.yaml "${COMMON[@]}" > /dev/null || rc=$?
[[ $rc != 0 ]] || fail "an oversized job succeeded"
grep -q "dp x cp = 3 x 2 = 6 ranks but the allocation has 2 node(s) x 1 CPU slot(s) = 2" big.out ||
  fail "the error does not name the numbers"
(( SECONDS - start < 20 )) || fail "the oversized job took $((SECONDS - start)) s to fail"

echo "== 3. outside an allocation"
rc=0; env -u SLURM_JOB_ID "$KPRUN" slurm ok.yaml "${COMMON[@]}" > outside.out 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "outside an allocation exited $rc"
grep -q "not inside a Slurm allocation" outside.out || fail "no allocation message"

echo "== 4. scancel mid-run"
mkdir -p cfg && printf "layers: 2\nfake_hang: true\nfake_step_seconds: 0.1\n" > cfg/hang.yaml
printf "name: hang\nconfig: cfg/hang.yaml\ndp: 2\nsteps: 5\n" > hang.yaml
id=$(sbatch --parsable --output=hang.out kp.sbatch hang.yaml "${COMMON[@]}" --grace-seconds 5)
for _ in $(seq 100); do grep -q "RUNNING" hang.out 2>/dev/null && break; sleep 0.2; done
grep -q "RUNNING" hang.out || fail "the hanging job never ran"
scancel "$id"
for _ in $(seq 150); do [[ -z "$(squeue -h -j "$id" 2>/dev/null)" ]] && break; sleep 0.2; done
[[ -z "$(squeue -h -j "$id" 2>/dev/null)" ]] || fail "job $id still in squeue 30 s after scancel: $(squeue -h -j "$id")"
grep -q "requeueing" hang.out && fail "scancel requeued the job"
# Slurm signals every process of the step: kprun cancels the job, or a
# worker dies first and the job fails; either way it ended.
grep -qE "job j000001 (CANCELLED|FAILED)" hang.out || fail "node 0 did not report the end of the job"
grep -qE "node 1: job ended (CANCELLED|FAILED)" hang.out || fail "node 1 did not report the end of the job"
if pgrep -f "$WORK/worker.sh" > /dev/null; then fail "workers survived scancel: $(pgrep -af "$WORK/worker.sh")"; fi

echo "== 5. time-limit stop, requeue, resume"
printf "layers: 2\nfake_step_seconds: 0.1\n" > cfg/slow.yaml
printf "name: slow\nconfig: cfg/slow.yaml\ndp: 2\nsteps: 40\ncheckpoint: {dir: slow, every_steps: 10}\n" > slow.yaml
id=$(sbatch --parsable --output=slow.out kp.sbatch slow.yaml "${COMMON[@]}" --grace-seconds 5)
for _ in $(seq 100); do grep -q "RUNNING" slow.out 2>/dev/null && break; sleep 0.2; done
grep -q "RUNNING" slow.out || fail "the slow job never ran"
# What --signal=B:USR1@120 does before the time limit: USR1 to the batch shell only.
scancel --batch --signal=USR1 "$id"
for _ in $(seq 300); do grep -q "kprun exited" slow.out 2>/dev/null && break; sleep 0.2; done
grep -q "requeueing $id" slow.out || fail "the script did not requeue"
# TERM reaches kprun and the workers alike (Slurm signals the whole step):
# either kprun cancels the job first or the exit of a worker ends it.
grep -qE "signal 15: stopping job|exited with code 143" slow.out || fail "the job was not stopped by SIGTERM"
# Slurm holds a requeued job for a while (BeginTime): bring it forward, once,
# to a few seconds after the requeue (a start in the same second as the
# requeue fails with "Job credential revoked").
released=0
for _ in $(seq 750); do
  grep -q "restart 1" slow.out && break
  if [[ $released == 0 && "$(squeue -h -j "$id" -o %T 2>/dev/null)" == PENDING ]]; then
    sleep 2
    scontrol update JobId="$id" StartTime=now+2 > /dev/null 2>&1 || true
    released=1
  fi
  sleep 0.2
done
for _ in $(seq 300); do [[ "$(grep -c "kprun exited" slow.out)" == 2 ]] && break; sleep 0.2; done
grep -q "restart 1" slow.out || fail "no second run (job state: $(squeue -h -j "$id" -o "%T %r %S" 2>&1))"
grep -q "resuming from the newest checkpoint" slow.out || fail "the second run did not resume"
grep -q "job j000001 COMPLETED" slow.out || fail "the requeued run did not complete"
grep -l "resume 1" runs/slow-*/logs/*.out > /dev/null 2>&1 || fail "workers of the second run did not get --resume"
echo PASS
' bash "$R"
