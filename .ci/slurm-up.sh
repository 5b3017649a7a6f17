#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost (munged, slurmctld, slurmd) for the CI test of
# `snakemake --profile slurm`. Needs root and Debian's munge slurmctld slurmd slurm-client.
# No accounting (squeue answers the job status), a stand-in GPU (gres gpu:1 on /dev/null) and two
# partitions: `debug` (default) and `gpu`. Daemon PIDs go to $AVAE_SLURM_STATE/*.pid; stop them with
# .ci/slurm-down.sh. Safe to call twice: a running cluster is left as it is.
set -euo pipefail
STATE=${AVAE_SLURM_STATE:-/var/tmp/avae-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by affinity-vae .ci/slurm-up.sh"

if [ "$(id -u)" -ne 0 ]; then echo "slurm-up: needs root" >&2; exit 1; fi
for b in munged slurmctld slurmd sinfo sbatch squeue; do
  command -v "$b" >/dev/null || { echo "slurm-up: $b not found (apt-get install munge slurmctld slurmd slurm-client)" >&2; exit 1; }
done
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "slurm-up: $CONF exists and is not ours; refusing to overwrite a site configuration" >&2
  exit 1
fi
alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
if alive munged && alive slurmctld && alive slurmd && sinfo -h >/dev/null 2>&1; then
  echo "slurm-up: already running"; sinfo; exit 0
fi
mkdir -p "$STATE" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm

# munge: key (created by the package; made here when missing) and daemon
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  mungekey -c -f -k /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
if ! alive munged; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$STATE/munged.pid"
fi
munge -n | unmunge >/dev/null

# slurm.conf: this machine as the only node; CPUs as nproc (at least 2), memory a bit below the
# real amount. A small CI machine is declared with at least AVAE_SLURM_MIN_MEM_MB (default 16384,
# what profiles/default asks for train_model) and config_overrides, so every job of the profile fits;
# nothing enforces memory here (no cgroups), so this only affects scheduling.
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
min_mem=${AVAE_SLURM_MIN_MEM_MB:-16384}
overrides=""
if [ "$cpus" -lt 2 ]; then cpus=2; overrides="SlurmdParameters=config_overrides"; fi
if [ "$mem" -lt "$min_mem" ]; then mem=$min_mem; overrides="SlurmdParameters=config_overrides"; fi
cat > "$CONF" <<CONF
$MARK
ClusterName=avae
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
SlurmdTimeout=60
GresTypes=gpu
$overrides
NodeName=localhost CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
$MARK
NodeName=localhost Name=gpu File=/dev/null
CONF

alive slurmctld || /usr/sbin/slurmctld -i
alive slurmd || /usr/sbin/slurmd -N localhost
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  alive slurmctld || break
  if timeout 5 sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
    echo "slurm-up: cluster ready"; sinfo; exit 0
  fi
  sleep 0.5
done
echo "slurm-up: node did not become idle; logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
timeout 5 sinfo -N -l >&2 || true
exit 1
