#!/bin/bash
# kprun local end to end: exit status follows the job (0 COMPLETED, 1 FAILED,
# 2 bad job file), progress lines are printed, Ctrl-C cancels, cluster
# launchers outside their cluster refuse cleanly.
set -u
KPRUN="$PWD/launcher/kprun"
WORKER="$PWD/tests/control_plane/fake_worker.sh"
WORK="${TEST_TMPDIR:-/tmp}/kprun-local-$$"
mkdir -p "$WORK" && cd "$WORK" || exit 1
fail() { echo "FAIL: $*"; echo "--- output:"; cat out.txt; exit 1; }
# expect_exit WANT WHAT KPRUN-ARGS...: runs kprun into out.txt; its exit
# status must be WANT.
expect_exit() {
  local want=$1 what=$2
  shift 2
  "$KPRUN" "$@" > out.txt 2>&1
  local rc=$?
  [ $rc -eq "$want" ] || fail "$what exited $rc (want $want)"
}

printf 'name: ok\nmodel: {layers: 2}\ndp: 2\nsteps: 12\n' > ok.yaml
expect_exit 0 "completed job" local ok.yaml --worker_binary "$WORKER" --cpu_slots 2
grep -q "step 12/12 .* loss 0.3333 tokens/s 1000" out.txt || fail "no final progress line"
grep -q "job j000001 COMPLETED" out.txt || fail "no COMPLETED line"
[ -s runs/ok-j000001/logs/g1.rank1.out ] || fail "no rank 1 log"

mkdir -p cfg && printf 'layers: 2\nfake_exit_code: 5\n' > cfg/fail.yaml
printf 'name: bad\nconfig: cfg/fail.yaml\nsteps: 3\n' > fail.yaml
expect_exit 1 "failed job" local fail.yaml --worker_binary "$WORKER" --cpu_slots 1
grep -q "FAILED: worker rank 0 exited with code 5" out.txt || fail "no exit code in the failure"

printf 'name: x\nmodel: {}\ndp: 0\nsteps: 3\n' > invalid.yaml
expect_exit 2 "invalid spec" local invalid.yaml --worker_binary "$WORKER" --cpu_slots 1
grep -q "spec.dp" out.txt || fail "the error does not name spec.dp"

printf 'name: x\nmodel: {}\ndata: ../../etc\nsteps: 3\n' > escape.yaml
expect_exit 2 "path escape" local escape.yaml --worker_binary "$WORKER" --cpu_slots 1
grep -q "escapes" out.txt || fail "no escape message"

expect_exit 2 "too few devices" local ok.yaml --worker_binary "$WORKER" --cpu_slots 1
grep -q "needs dp\*cp = 2 devices, this machine offers 1" out.txt || fail "device shortage not explained"

# FP8 on a machine of CPU slots is refused at submission, naming why, before
# any worker starts; with the config's fallback it is accepted.
printf 'name: f\nmodel: {}\nprecision: fp8\nsteps: 3\n' > fp8.yaml
expect_exit 2 "fp8 on CPU slots" local fp8.yaml --worker_binary "$WORKER" --cpu_slots 1
grep -q "spec.precision: fp8 needs GPUs of compute capability >= 8.9" out.txt || fail "fp8 refusal not explained"
grep -q "local: 1 CPU slot" out.txt || fail "fp8 refusal does not name the devices"
[ ! -d runs/f-j000001 ] || fail "a worker ran for the refused fp8 job"
mkdir -p fb && printf 'layers: 2\nfp8:\n  allow_fallback: true\n' > fb/cfg.yaml
printf 'name: fb\nconfig: fb/cfg.yaml\nprecision: fp8\nsteps: 3\n' > fp8fb.yaml
expect_exit 0 "fp8 with fallback" local fp8fb.yaml --worker_binary "$WORKER" --cpu_slots 1

# Ctrl-C cancels the job, stops the workers and exits 3.
mkdir -p hang && printf 'layers: 1\nfake_hang: true\n' > hang/cfg.yaml
printf 'name: hang\nconfig: hang/cfg.yaml\ndp: 2\nsteps: 1\n' > hang.yaml
"$KPRUN" local hang.yaml --worker_binary "$WORKER" --cpu_slots 2 --stop_grace_ms 2000 > out.txt 2>&1 &
KPID=$!
for _ in $(seq 100); do grep -q "RUNNING" out.txt && break; sleep 0.1; done
grep -q "RUNNING" out.txt || { kill -KILL $KPID; fail "hang job never ran"; }
kill -INT $KPID
wait $KPID
rc=$?
[ $rc -eq 3 ] || fail "interrupted run exited $rc"
grep -q "CANCELLED" out.txt || fail "no CANCELLED line"
# The workers' metrics files stop growing: nobody is left writing them.
m=runs/hang-j000001/metrics/g1.rank0.jsonl
n1=$(wc -l < "$m"); sleep 0.5; n2=$(wc -l < "$m")
[ "$n1" -eq "$n2" ] || fail "a worker outlived kprun ($n1 -> $n2 metrics lines)"

# Cluster launchers outside their cluster say so (launcher/slurm, launcher/mpi).
expect_exit 2 "slurm outside an allocation" slurm ok.yaml
grep -q "Slurm" out.txt || fail "slurm message"
expect_exit 2 "mpi outside mpirun" mpi ok.yaml

expect_exit 2 "missing worker binary" local ok.yaml --worker_binary /nonexistent/kp-train
grep -q "/nonexistent/kp-train" out.txt || fail "missing worker not named"
echo PASS
