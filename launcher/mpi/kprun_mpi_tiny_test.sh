#!/usr/bin/env bash
# `mpirun -np N kprun mpi` with the real worker against one process with the
# same global batch: configs/tiny.yaml (micro_batch 16) in one kp-train, and
# with N = 2 and 4 ranks of micro_batch 16/N under mpirun. The norm of the
# all-reduced gradient, which rank 0 logs every step, must match the single
# process's to 1e-5 (relative) at every step: it depends on the parameters of
# that step and the whole global batch, so data parallelism over MPI-started
# agents computes the same training. (The logged loss is rank 0's own
# micro-batch's, so it is not compared.)
set -euo pipefail
R="${TEST_SRCDIR:?run under bazel test}/kp"
KPRUN="$R/launcher/mpi/kprun-mpi"
TRAIN="$R/runtime/worker/kp-train"
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-mpi-tiny.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
STEPS=5
grep -q "^  micro_batch: 16$" "$R/configs/tiny.yaml" && grep -q "^  dp: 1$" "$R/configs/tiny.yaml" ||
  { echo "FAIL: configs/tiny.yaml no longer has micro_batch 16 and dp 1; update this test"; exit 1; }
"$TRAIN" --config "$R/configs/tiny.yaml" --run_dir single --steps $STEPS --metrics_jsonl single.jsonl > single.log 2>&1 ||
  { echo "FAIL: single process"; cat single.log; exit 1; }
for np in 2 4; do
  sed -e "s/^  micro_batch: 16$/  micro_batch: $((16 / np))/" -e "s/^  dp: 1$/  dp: $np/" "$R/configs/tiny.yaml" > dp$np.yaml
  printf "name: t%s\nconfig: %s\ndp: %s\nsteps: %s\n" $np "$WORK/dp$np.yaml" $np $STEPS > job$np.yaml
  rc=0
  timeout 240 mpirun -np $np --oversubscribe "$KPRUN" job$np.yaml --worker_binary "$TRAIN" --cpu_slots 1 \
    --rendezvous-file "$WORK/rdv$np" --coordinator-address 127.0.0.1 --run_root "$WORK/runs" \
    --register-timeout 60 > mpi$np.log 2>&1 || rc=$?
  [[ $rc == 0 ]] || { echo "FAIL: mpirun -np $np exited $rc"; cat mpi$np.log; tail -n 5 runs/t$np-*/logs/*.err; exit 1; }
  python3 - "$np" "$STEPS" <<'PY'
import json, sys
np_, steps = int(sys.argv[1]), int(sys.argv[2])
def load(path):
    return {m["step"]: m for m in map(json.loads, open(path))}
single = load("single.jsonl")
rank0 = load(f"runs/t{np_}-j000001/metrics/g1.rank0.jsonl")
assert len(single) == steps, f"single process logged {len(single)} steps"
assert sorted(rank0) == sorted(single), f"steps differ: {sorted(rank0)} vs {sorted(single)}"
worst_g = max(abs(rank0[s]["grad_norm"] - m["grad_norm"]) / m["grad_norm"] for s, m in single.items())
print(f"np {np_}: {steps} steps, worst relative grad-norm difference {worst_g:.2e}")
if worst_g > 1e-5:
    print("FAIL: differs from the single process beyond 1e-5")
    sys.exit(1)
PY
done
echo PASS
