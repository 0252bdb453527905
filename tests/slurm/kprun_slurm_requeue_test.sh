#!/usr/bin/env bash
# Time limit -> checkpoint -> requeue -> resume, with the real worker: a
# two-node tiny job (dp 2, 40 steps, a checkpoint every 10) is stopped the way
# kp.sbatch's --signal=B:USR1@120 stops it, requeued, resumed, and finishes.
# Its final checkpoint must match an uninterrupted run of the same job: the
# same step and the same number of samples consumed (data_position), so no
# sample was lost or repeated, and the same final loss within 1e-3.
set -euo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
exec "$R/tests/slurm/slurm_cluster.sh" --nodes 2 -- bash -c '
set -euo pipefail
R="$1"
WORK="$(mktemp -d /tmp/kp-slurm-requeue.XXXXXX)"
trap "rm -rf \"$WORK\"" EXIT
cd "$WORK"
grep -v -e "--gpus-per-node" -e "--cpus-per-task" -e "--exclusive" "$R/deploy/slurm/kp.sbatch" > kp.sbatch
sed -e "s/^  dp: 1$/  dp: 2/" -e "s/^  checkpoint_every: .*/  checkpoint_every: 10/" "$R/configs/tiny.yaml" > tiny.yaml
grep -q "^  checkpoint_every: 10$" tiny.yaml || { echo "FAIL: could not set checkpoint_every"; exit 1; }
export KP_COORDINATOR_ADDRESS=127.0.0.1 KP_NODE_ADDRESS=127.0.0.1 KPRUN="$R/launcher/kprun"
COMMON=(--worker_binary "$R/runtime/worker/kp-train" --cpu_slots 1 --register-timeout 60 --grace-seconds 10)
fail() {
  echo "FAIL: $*"
  for f in *.out; do echo "--- $f"; grep -v "^step" "$f"; done
  for f in */*/logs/*.err; do echo "--- $f"; tail -n 8 "$f"; done
  exit 1
}
final() { python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(s[\"step\"], s[\"data_position\"])" "$1"; }

for name in straight interrupted; do
  printf "name: %s\nconfig: %s\ndp: 2\nsteps: 40\ncheckpoint: {dir: %s, every_steps: 10}\n" \
    "$name" "$WORK/tiny.yaml" "$name" > $name.yaml
done
sbatch --wait --output=straight.out kp.sbatch straight.yaml "${COMMON[@]}" --run_root "$WORK/straight" > /dev/null ||
  fail "the uninterrupted run failed"

id=$(sbatch --parsable --output=interrupted.out kp.sbatch interrupted.yaml "${COMMON[@]}" --run_root "$WORK/interrupted")
# Past the step-10 checkpoint, well before the end.
for _ in $(seq 600); do grep -qE "step (1[4-9]|2[0-9])/40" interrupted.out 2>/dev/null && break; sleep 0.2; done
grep -qE "step (1[4-9]|2[0-9])/40" interrupted.out || fail "the run never got past step 14"
scancel --batch --signal=USR1 "$id"
for _ in $(seq 300); do grep -q "requeueing $id" interrupted.out && break; sleep 0.2; done
grep -q "requeueing $id" interrupted.out || fail "not requeued"
# Slurm holds a requeued job for a while (BeginTime): bring it forward, once,
# to a few seconds after the requeue (a start in the same second as the
# requeue fails with "Job credential revoked").
released=0
for _ in $(seq 750); do
  grep -q "restart 1" interrupted.out && break
  if [[ $released == 0 && "$(squeue -h -j "$id" -o %T 2>/dev/null)" == PENDING ]]; then
    sleep 2
    scontrol update JobId="$id" StartTime=now+2 > /dev/null 2>&1 || true
    released=1
  fi
  sleep 0.2
done
for _ in $(seq 900); do [[ "$(grep -c "kprun exited" interrupted.out)" == 2 ]] && break; sleep 0.2; done
grep -q "restart 1" interrupted.out || fail "no second run (job state: $(squeue -h -j "$id" -o "%T %r %S" 2>&1))"
grep -q "resuming from the newest checkpoint" interrupted.out || fail "the second run did not resume"
grep -q "job j000001 COMPLETED" interrupted.out || fail "the resumed run did not complete"

a="$(final straight/straight-j000001/checkpoints/step_00000040/state.json)"
b="$(final interrupted/interrupted-j000001/checkpoints/step_00000040/state.json)"
echo "uninterrupted: step/data_position $a; interrupted+resumed: $b"
[[ "$a" == "40 1280" ]] || fail "the uninterrupted run consumed $a, want 40 steps x 16 x 2 = 1280 samples"
[[ "$a" == "$b" ]] || fail "samples consumed differ: $a vs $b"
la=$(grep -h "done: 40 steps" straight/straight-j000001/logs/g1.rank0.err | sed "s/.*final loss \([0-9.]*\).*/\1/")
lb=$(grep -h "done: 40 steps" interrupted/interrupted-j000001/logs/g*.rank0.err | tail -n 1 | sed "s/.*final loss \([0-9.]*\).*/\1/")
echo "final loss: uninterrupted $la, resumed $lb"
python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(a-b)<=1e-3 else 1)" "$la" "$lb" ||
  fail "final loss differs: $la vs $lb"
echo PASS
' bash "$R"
