#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback (Debian's slurm-wlm and munge), for launcher tests
# and for trying the SLURM preset on one machine.
#
#   scripts/slurm_local.sh start DIR   install the packages if needed (root), write DIR/slurm.conf,
#                                      start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_local.sh stop DIR    stop exactly the daemons that start launched (DIR/pids)
#
# Clients need SLURM_CONF=DIR/slurm.conf. Exit status 3 means SLURM cannot be installed here.
set -euo pipefail

cmd=${1:?usage: slurm_local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm_local.sh start|stop DIR}")

stop() {
    [ -f "$dir/pids" ] || return 0
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
    rm -f "$dir/pids"
}

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "slurm_local: slurm-wlm and munge are missing and cannot be installed (needs root and apt-get)" >&2
        exit 3
    fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
        >"$dir/apt.log" 2>&1 || { echo "slurm_local: apt-get install slurm-wlm munge failed (see $dir/apt.log)" >&2; exit 3; }
}

start() {
    mkdir -p "$dir/state" "$dir/spool"
    install
    stop
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<EOF
ClusterName=arctiquelocal
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued (preempted, timed-out) job may start again once its old credential expires: 10 s, not 120
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    : >"$dir/pids"
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
        runuser -u munge -- /usr/sbin/munged
        cat /run/munge/munged.pid >>"$dir/pids"
    fi
    slurmctld
    for _ in $(seq 50); do [ -s "$dir/slurmctld.pid" ] && break; sleep 0.2; done
    cat "$dir/slurmctld.pid" >>"$dir/pids"
    slurmd -N localhost
    for _ in $(seq 50); do [ -s "$dir/slurmd.pid" ] && break; sleep 0.2; done
    cat "$dir/slurmd.pid" >>"$dir/pids"
    for _ in $(seq 100); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "slurm_local: node idle; export SLURM_CONF=$dir/slurm.conf"
            return 0
        fi
        sleep 0.3
    done
    echo "slurm_local: the node did not become idle (logs in $dir)" >&2
    stop
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: slurm_local.sh start|stop DIR" >&2; exit 2 ;;
esac
