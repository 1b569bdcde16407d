#!/usr/bin/env bash
# Stop what tests/slurm/start.sh DIR started, by the pids in its pid files (nothing else), and
# wait until they are gone.
set -uo pipefail
DIR=$(realpath "$1")
pids=()
for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
  [ -s "$f" ] && pids+=("$(cat "$f")")
done
[ ${#pids[@]} -eq 0 ] && exit 0
kill -TERM "${pids[@]}" 2>/dev/null
for _ in $(seq 1 50); do
  alive=()
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
  [ ${#alive[@]} -eq 0 ] && exit 0
  sleep 0.2
done
kill -KILL "${alive[@]}" 2>/dev/null
echo "killed ${alive[*]} after 10 s" >&2
