#!/usr/bin/env bash
# `kprun mpi` under a real mpirun, fake_worker.sh standing in for kp-train:
# -np 2 and -np 3 jobs complete on every rank; a job whose dp x cp differs
# from -np fails at once on every rank, saying which -np to use.
set -euo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
KPRUN="$R/launcher/mpi/kprun-mpi"
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-mpi-launch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cp "$R/tests/control_plane/fake_worker.sh" worker.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
COMMON=(--worker_binary "$WORK/worker.sh" --cpu_slots 1 --run_root "$WORK/runs"
        --rendezvous-file "$WORK/coordinator.rdv" --coordinator-address 127.0.0.1 --register-timeout 30)
fail() { echo "FAIL: $*"; cat out.txt; exit 1; }
for np in 2 3; do
  printf "name: mpi%s\nmodel: {layers: 2}\ndp: %s\nsteps: 8\n" "$np" "$np" > job$np.yaml
  rc=0; timeout 120 mpirun -np "$np" --oversubscribe "$KPRUN" job$np.yaml "${COMMON[@]}" > out.txt 2>&1 || rc=$?
  [[ $rc == 0 ]] || fail "mpirun -np $np exited $rc"
  grep -q "kprun mpi: job j000001 COMPLETED" out.txt || fail "rank 0 did not report COMPLETED (np $np)"
  [[ "$(grep -c "job ended COMPLETED" out.txt)" == $((np - 1)) ]] || fail "not every other rank saw the end (np $np)"
  for r in $(seq 0 $((np - 1))); do
    [[ -s runs/mpi$np-j000001/logs/g1.rank$r.out ]] || fail "no log of rank $r (np $np)"
  done
done
printf "name: wrong\nmodel: {layers: 2}\ndp: 2\ncp: 2\nsteps: 8\n" > wrong.yaml
rc=0; timeout 60 mpirun -np 2 --oversubscribe "$KPRUN" wrong.yaml "${COMMON[@]}" > out.txt 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "a job of 4 ranks under -np 2 succeeded"
[[ "$(grep -c "use \`mpirun -np 4\`" out.txt)" == 2 ]] || fail "not every rank named -np 4"
rc=0; "$KPRUN" job2.yaml "${COMMON[@]}" > out.txt 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "not started by mpirun" out.txt || fail "outside mpirun: rc $rc"
echo PASS
