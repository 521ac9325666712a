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

down_args 3,9 "$@"
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
