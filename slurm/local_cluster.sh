#!/usr/bin/env bash
# A one-node SLURM cluster on loopback (munge + slurmctld + slurmd), for the tests and for trying `submit`
# locally. Needs root; installs the Debian packages (munge slurmctld slurmd slurm-client) with apt when missing.
#
#   bash slurm/local_cluster.sh start    install if needed, configure, start; wait until the node is idle
#   bash slurm/local_cluster.sh stop     stop the daemons this script starts (by their PID files)
#   bash slurm/local_cluster.sh status   print the node state; exit 1 when the cluster is not up
#
# start is idempotent: a cluster that is already up is left exactly as it is (nothing rewritten or restarted).
# Environment: LOCAL_SLURM_CPUS (default: nproc), LOCAL_SLURM_MEM_MB (default 4096),
# LOCAL_SLURM_CRED_EXPIRE (seconds, default 10: a requeued job may start again that long after it ended).
set -euo pipefail

NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

die() { echo "local_cluster.sh: $*" >&2; exit 1; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null || true; }
is_up() { case "$(node_state)" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get to install it"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force
    else head -c 1024 /dev/urandom > /etc/munge/munge.key; fi
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
  rm -f /run/munge/munge.socket.2 "$MUNGE_PID"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged did not start"
}

write_config() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > "$CONF" <<CONFIG
# Written by mav_train's slurm/local_cluster.sh: one node on loopback, root daemons, requeue allowed.
ClusterName=local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=${LOCAL_SLURM_CRED_EXPIRE:-10}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
JobRequeue=1
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${LOCAL_SLURM_CPUS:-$(nproc)} RealMemory=${LOCAL_SLURM_MEM_MB:-4096} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFIG
  rm -f /etc/slurm/cgroup.conf  # SLURM 22.05's slurmd rejects CgroupPlugin=disabled; autodetection works
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs and starts system daemons)"
  install_packages
  start_munge
  if running "$CTLD_PID" && running "$SLURMD_PID" && is_up; then
    echo "slurm already up: node $NODE $(node_state)"; return 0
  fi
  running "$CTLD_PID" || running "$SLURMD_PID" || write_config
  running "$CTLD_PID" || /usr/sbin/slurmctld
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  running "$SLURMD_PID" || /usr/sbin/slurmd
  for _ in $(seq 300); do
    is_up && break
    case "$(node_state)" in down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true;; esac
    sleep 0.2
  done
  is_up || { tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2; die "node state '$(node_state)'"; }
  echo "slurm up: node $NODE $(node_state)"
}

stop_pid() {
  running "$1" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$1"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$SLURMD_PID"; stop_pid "$CTLD_PID"; stop_pid "$MUNGE_PID"; echo "slurm stopped" ;;
  status) is_up && echo "slurm up: node $NODE $(node_state)" || { echo "slurm not up"; exit 1; } ;;
  *) echo "usage: bash slurm/local_cluster.sh start|stop|status" >&2; exit 2 ;;
esac
