#!/usr/bin/env bash
# `kprun mpi`'s bootstrap under a real mpirun: N processes parse OpenMPI's
# environment, rank 0 publishes its coordinator address, the others find it.
set -euo pipefail
PROBE="${TEST_SRCDIR:-.}/kp/launcher/mpi/mpi_probe"
[[ -x "$PROBE" ]] || PROBE="$(dirname "$0")/mpi_probe"
command -v mpirun >/dev/null || { echo "FAIL: mpirun not found (apt-get install openmpi-bin)"; exit 1; }
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/kp-mpi.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# OpenMPI refuses root without these; --oversubscribe: 2 cores here.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
for np in 2 3; do
  rm -f "$WORK"/rank.* "$WORK/rdv"
  # A stale file of another run must not be read.
  printf 'kp-coordinator some-old-run 10.9.9.9:1\n' > "$WORK/rdv"
  timeout 60 mpirun -np "$np" --oversubscribe "$PROBE" "$WORK/rdv" "$WORK"
  [[ "$(ls "$WORK"/rank.* | wc -l)" == "$np" ]] || { echo "FAIL: expected $np result files"; ls "$WORK"; exit 1; }
  cat "$WORK"/rank.*
  targets="$(awk '{print $5}' "$WORK"/rank.* | sort -u)"
  [[ "$(echo "$targets" | wc -l)" == 1 ]] || { echo "FAIL: ranks disagree on the coordinator: $targets"; exit 1; }
  [[ "$targets" == 127.0.0.1:* ]] || { echo "FAIL: unexpected target $targets"; exit 1; }
  [[ "$(grep -c ' coordinator$' "$WORK"/rank.* | awk -F: '{s+=$2} END {print s}')" == 1 ]] ||
    { echo "FAIL: not exactly one coordinator"; exit 1; }
  for r in $(seq 0 $((np - 1))); do
    read -r rank size _local flavour _target _role < "$WORK/rank.$r"
    [[ "$rank" == "$r" && "$size" == "$np" && "$flavour" == openmpi ]] ||
      { echo "FAIL: rank.$r says rank=$rank size=$size flavour=$flavour"; exit 1; }
  done
  locals="$(awk '{print $3}' "$WORK"/rank.* | sort -n | tr '\n' ' ')"
  [[ "$locals" == "$(seq -s ' ' 0 $((np - 1))) " ]] || { echo "FAIL: local ranks $locals"; exit 1; }
done
echo PASS
