#!/usr/bin/env bash
# The real thing on the emulated two-node cluster: deploy/slurm/kp.sbatch runs
# `kprun slurm` with the real worker (kp-train) training configs/tiny.yaml,
# data parallel over the two nodes (dp 2, one CPU slot each), to completion
# (steps cut to 20 to keep the test short), and a checkpoint is committed.
set -euo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
exec "$R/tests/slurm/slurm_cluster.sh" --nodes 2 -- bash -c '
set -euo pipefail
R="$1"
WORK="$(mktemp -d /tmp/kp-slurm-tiny.XXXXXX)"
trap "rm -rf \"$WORK\"" EXIT
cd "$WORK"
grep -v -e "--gpus-per-node" -e "--cpus-per-task" -e "--exclusive" "$R/deploy/slurm/kp.sbatch" > kp.sbatch
# The config trains one rank; this job runs two, so its parallel.dp says 2.
sed "s/^  dp: 1$/  dp: 2/" "$R/configs/tiny.yaml" > tiny-dp2.yaml
grep -q "^  dp: 2$" tiny-dp2.yaml || { echo "FAIL: configs/tiny.yaml has no parallel.dp: 1 line to edit"; exit 1; }
printf "name: tiny\nconfig: %s\ndp: 2\nsteps: 20\n" "$WORK/tiny-dp2.yaml" > job.yaml
export KP_COORDINATOR_ADDRESS=127.0.0.1 KP_NODE_ADDRESS=127.0.0.1 KPRUN="$R/launcher/kprun"
rc=0
sbatch --wait --output=tiny.out kp.sbatch job.yaml --worker_binary "$R/runtime/worker/kp-train" \
  --cpu_slots 1 --run_root "$WORK/runs" --register-timeout 60 > /dev/null || rc=$?
fail() { echo "FAIL: $*"; cat tiny.out; for f in runs/tiny-*/logs/*; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
[[ $rc == 0 ]] || fail "sbatch --wait exited $rc"
grep -q "job j000001 COMPLETED" tiny.out || fail "no COMPLETED"
grep -q "node 1: job ended COMPLETED" tiny.out || fail "node 1 did not see the end"
for r in 0 1; do
  grep -q "done: 20 steps" runs/tiny-j000001/logs/g1.rank$r.err || fail "rank $r did not finish 20 steps"
done
[[ -f runs/tiny-j000001/checkpoints/LATEST ]] || fail "no checkpoint committed"
grep "step 19/20\|step 20/20" tiny.out | tail -n 1
echo PASS
' bash "$R"
