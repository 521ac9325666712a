#!/usr/bin/env bash
# Stops the tansu broker started by dev_setup/kafka-up.sh DIR and deletes DIR
# (with --keep, DIR stays, e.g. to read tansu.log).
#
#   dev_setup/kafka-down.sh [--keep] DIR
set -euo pipefail
. "$(dirname "$0")/common.sh"

down_args 2,4 "$@"

if [ -x "$dir/restart-kafka.sh" ]; then
  "$dir/restart-kafka.sh" --stop
fi
if [ "$keep" = 0 ]; then
  # Only remove a directory kafka-up.sh made (it has its files and nothing unexpected).
  if [ -f "$dir/kafka.env" ] || [ -f "$dir/restart-kafka.sh" ]; then
    rm -f "$dir/kafka.env" "$dir/kafka.env.tmp" "$dir/restart-kafka.sh" "$dir/tansu.log" "$dir/tansu.pid"
    rmdir "$dir" 2>/dev/null || log "kept $dir: it holds other files"
  fi
fi
log "kafka (tansu) in $dir stopped"
