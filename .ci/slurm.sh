#!/usr/bin/env bash
# A one-node SLURM on this machine for crates/samlab-cli/tests/sweep.rs (Debian's slurm-wlm and munge).
#
#   .ci/slurm.sh start DIR   installs the packages when missing, writes DIR/slurm.conf and starts munged (unless
#                            one runs), slurmctld and slurmd; prints the SLURM_CONF to export. DIR must end in
#                            samlab-slurm: daemons of an earlier DIR of that name whose run was killed are stopped
#   .ci/slurm.sh stop DIR    stops what `start DIR` started
#
# No accounting (sacct is not needed: `samlab sweep status` reads squeue and the run directories),
# proctrack/linuxproc and task/none (no cgroups in a container), one node with this machine's CPUs.
set -euo pipefail
cmd=$1
dir=$2
case $dir in
*/samlab-slurm) ;;
*) echo "$0: DIR must end in samlab-slurm, got $dir" >&2; exit 2 ;;
esac
sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)

stop_pid() {
    [ -f "$1" ] || return 0
    local pid
    pid=$(cat "$1")
    $sudo kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        $sudo kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$1"
}

case $cmd in
start)
    pkgs=(slurm-wlm munge)
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
            || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
    fi
    # Daemons left by an earlier run of this script that was killed before its stop (they hold SLURM's ports).
    $sudo pkill -f '^(/usr/sbin/)?slurm(ctld|d) -f .*/samlab-slurm/slurm.conf$' || true
    sleep 0.5
    mkdir -p "$dir/state" "$dir/spool"
    host=$(hostname -s)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
    cat > "$dir/slurm.conf" <<EOF
ClusterName=samlab-ci
SlurmctldHost=$host
SlurmUser=$(id -un)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if ! pgrep -x munged >/dev/null; then
        $sudo mkdir -p /run/munge
        $sudo chown munge:munge /run/munge
        $sudo runuser -u munge -- /usr/sbin/munged
        touch "$dir/munged.started"
    fi
    $sudo slurmctld -f "$dir/slurm.conf"
    $sudo slurmd -f "$dir/slurm.conf"
    for _ in $(seq 100); do
        if SLURM_CONF=$dir/slurm.conf sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "$dir/slurm.conf"
            exit 0
        fi
        sleep 0.2
    done
    echo "slurm did not come up; its logs: $dir/slurmctld.log $dir/slurmd.log" >&2
    exit 1
    ;;
stop)
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    if [ -f "$dir/munged.started" ]; then
        $sudo pkill -x munged || true
        rm -f "$dir/munged.started"
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
