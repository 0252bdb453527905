#!/usr/bin/env bash
# Starts a throw-away Slurm cluster on this host, runs one command against it,
# and tears everything down again, whatever happens:
#
#   tests/slurm/slurm_cluster.sh [--nodes N] -- COMMAND [ARGS...]
#
# munged, slurmctld and N emulated slurmd nodes (n1..nN, all on 127.0.0.1,
# one port each) run from a temporary directory with their own munge socket,
# state, spool and logs; nothing under /etc is used. COMMAND runs with
# SLURM_CONF pointing at the cluster, KP_SLURM_DIR at the temporary
# directory, and KP_SLURM_NODES=N; its exit status is the script's.
#
# Installs slurm-wlm and munge with apt-get when they are missing (CI runs
# this on fresh machines). When that is impossible (not root, no apt-get)
# it prints "SKIP: ..." and exits 0; every other failure exits non-zero and
# prints the daemons' logs.
set -euo pipefail

NODES=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--nodes N] -- COMMAND..." >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--nodes N] -- COMMAND..." >&2; exit 2; }

export PATH="$PATH:/usr/sbin:/sbin"

skip() { echo "SKIP: $*"; exit 0; }

ensure_installed() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
     command -v srun >/dev/null; then
    return 0
  fi
  [[ "$(id -u)" == 0 ]] || skip "slurm-wlm/munge are not installed and we are not root to apt-get them"
  command -v apt-get >/dev/null || skip "slurm-wlm/munge are not installed and there is no apt-get"
  echo "installing slurm-wlm and munge with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends slurm-wlm munge >&2; then
    apt-get update >&2 || skip "apt-get update failed (no network?)"
    apt-get install -y --no-install-recommends slurm-wlm munge >&2 ||
      skip "apt-get install slurm-wlm munge failed"
  fi
}
ensure_installed
# slurmd and slurmctld run as root here (SlurmUser=root): emulated nodes
# share one host and one user.
[[ "$(id -u)" == 0 ]] || skip "the emulated cluster runs its daemons as root; not root"

HOST="$(hostname -s)"
CTLD_PORT="${KP_SLURM_CTLD_PORT:-16817}"
NODE_PORT0="${KP_SLURM_NODE_PORT:-17001}"
# /tmp, not $TMPDIR: Bazel's test tmpdir is too deep for a unix socket path.
DIR="$(mktemp -d /tmp/kp-slurm.XXXXXX)"
chmod 700 "$DIR"
PIDS=()

teardown() {
  local rc=$?
  set +e
  if [[ -f "$DIR/slurm.conf" ]]; then
    SLURM_CONF="$DIR/slurm.conf" timeout 5 scancel --quiet --full --user root >/dev/null 2>&1
  fi
  # Daemons we started, newest first: slurmd, slurmctld, munged. Each by its
  # pid file (the daemons fork), never by name.
  for pidfile in "$DIR"/slurmd.*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile" 2>/dev/null)"
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
  done
  for _ in $(seq 50); do
    alive=0
    for pidfile in "$DIR"/slurmd.*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
      [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null && alive=1
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pidfile in "$DIR"/slurmd.*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
    [[ -f "$pidfile" ]] && kill -KILL "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null
  done
  if [[ $rc != 0 || -n "${KP_SLURM_KEEP_LOGS:-}" ]]; then
    for log in "$DIR"/*.log; do
      [[ -f "$log" ]] || continue
      echo "----- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    done
  fi
  rm -rf "$DIR"
  exit $rc
}
trap teardown EXIT
trap 'exit 143' TERM INT

# munge: its own key and socket. It insists on private directories.
mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
chmod 700 "$DIR/munge"
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/seed"

LAST_PORT=$((NODE_PORT0 + NODES - 1))
cat > "$DIR/slurm.conf" <<CONF
ClusterName=kptest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=30
MinJobAge=60
RebootProgram=/bin/true
NodeName=n[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$NODE_PORT0-$LAST_PORT] CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$DIR/slurm.conf"
# A fresh cluster every time: -c drops any saved state.
slurmctld -c -f "$SLURM_CONF"
for i in $(seq 1 "$NODES"); do
  mkdir -p "$DIR/spool/n$i"
  slurmd -f "$SLURM_CONF" -N "n$i"
done

deadline=$((SECONDS + 60))
while true; do
  idle="$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | wc -l)"
  [[ "$idle" == "$NODES" ]] && break
  if (( SECONDS > deadline )); then
    echo "Slurm nodes did not become idle within 60 s:" >&2
    sinfo -N -o '%N %t %E' >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "slurm cluster up in $DIR: $(sinfo -h -N -o '%N:%t' | tr '\n' ' ')" >&2

export KP_SLURM_DIR="$DIR" KP_SLURM_NODES="$NODES"
set +e
"$@"
rc=$?
set -e
exit $rc
