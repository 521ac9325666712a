#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops a search server started by dev_setup/es-up.sh and removes its folder.
#
#   dev_setup/es-down.sh [--keep] DIR
#
# SIGTERM, SIGKILL after 10 s; only a pid started with the folder's port is
# signalled. --keep leaves DIR (data, log) in place; `es-up.sh KIND DIR` starts
# it again on the same port. A stopped server or a missing DIR is fine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

keep=0
dir=""
for a in "$@"; do
  case "$a" in
    --keep) keep=1 ;;
    -h | --help) sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) log "unknown option $a"; exit 2 ;;
    *) [ -z "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }; dir="$a" ;;
  esac
done
[ -n "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }
case "$dir" in */es.env) dir="$(dirname "$dir")" ;; esac
if [ ! -d "$dir" ]; then
  log "$dir does not exist: nothing to stop"
  exit 0
fi
dir="$(cd "$dir" && pwd)"
[ -x "$dir/restart-es.sh" ] && "$dir/restart-es.sh" --stop
if [ "$keep" = 1 ]; then
  log "stopped; kept $dir"
  exit 0
fi
if [ ! -f "$dir/es.env" ] && [ ! -f "$dir/restart-es.sh" ]; then
  log "$dir does not look like an es-up.sh folder: not removing it"
  exit 1
fi
rm -rf -- "$dir"
log "removed $dir"
