#!/usr/bin/env bash
# A real single-node SLURM for the tests, everything in DIR (never /etc):
#   tests/slurm/start.sh DIR
# Installs slurm-wlm and munge with apt when they are missing (root only), writes DIR/slurm.conf
# for this machine's CPUs and memory, starts munged, slurmctld and slurmd with their pid files in
# DIR, and waits until `sinfo` shows the node idle. Clients find the cluster through
# SLURM_CONF=DIR/slurm.conf. tests/slurm/stop.sh DIR stops the daemons by those pids.
# Exit status 3 means "cannot run here" (not root, no apt): the tests skip with the message.
set -euo pipefail
DIR=$(realpath "$1")
mkdir -p "$DIR"

if [ "$(id -u)" != 0 ]; then
  echo "SLURM tests need root (to start slurmd and munged); running as uid $(id -u)" >&2
  exit 3
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "slurm-wlm and munge are not installed and apt-get is not available" >&2
    exit 3
  fi
  echo "installing slurm-wlm and munge with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
    >"$DIR/apt.log" 2>&1 || { echo "apt-get install slurm-wlm munge failed: see $DIR/apt.log" >&2; exit 3; }
fi

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
chmod 700 "$DIR/munge"
HOST=$(hostname -s)
CPUS=$(nproc)
# Leave 1 GiB to the daemons and the test runner.
MEM=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port); done

# munge: a fresh key and socket of our own, so a system munged (if any) is left alone.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.sock" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"

cat >"$DIR/slurm.conf" <<EOF
# Written by tests/slurm/start.sh: one node, this machine's CPUs and memory.
ClusterName=eald-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
# No accounting database, as on many small clusters: sacct cannot answer here (eald's job
# watcher then asks squeue). Finished jobs are logged by job completion instead.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
ReturnToService=2
MinJobAge=300
KillWait=5
DefMemPerCPU=1024
InactiveLimit=0
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

export SLURM_CONF="$DIR/slurm.conf"
slurmctld -i -f "$DIR/slurm.conf"
slurmd -f "$DIR/slurm.conf" -N "$HOST"

for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  if [ "$state" = "idle" ]; then
    echo "SLURM up: node $HOST ($CPUS CPUs, $MEM MiB), SLURM_CONF=$DIR/slurm.conf"
    exit 0
  fi
  sleep 0.5
done
echo "the node did not become idle in 30 s (sinfo: ${state:-no answer}); logs in $DIR/log" >&2
exit 1
