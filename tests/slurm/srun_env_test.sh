#!/usr/bin/env bash
# The Slurm parser on real srun environments: a two-node emulated cluster,
# srun with one and with two tasks per node, each task dumping its env; then
# slurm_env_check parses every dump.
set -euo pipefail
RUNFILES="${TEST_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}/kp"
[[ -d "$RUNFILES/tests/slurm" ]] || RUNFILES="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="$RUNFILES/tests/slurm/slurm_cluster.sh"
CHECK="$RUNFILES/tests/slurm/slurm_env_check"
exec "$CLUSTER" --nodes 2 -- bash -c '
  set -euo pipefail
  out="$(mktemp -d /tmp/kp-srun-env.XXXXXX)"
  trap "rm -rf \"$out\"" EXIT
  srun -N2 -n2 --ntasks-per-node=1 bash -c "env > $out/one.\$SLURM_PROCID"
  srun -N2 -n4 --ntasks-per-node=2 bash -c "env > $out/two.\$SLURM_PROCID"
  KP_SLURM_ENV_DIR="$out" "$0"
' "$CHECK"
