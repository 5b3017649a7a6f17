#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started, each by the PID it recorded (slurmd, slurmctld, munged).
set -uo pipefail
STATE=${AVAE_SLURM_STATE:-/var/tmp/avae-slurm}
for d in slurmd slurmctld munged; do
  f="$STATE/$d.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "slurm-down: stopped $d (pid $pid)"
  fi
  rm -f "$f"
done
