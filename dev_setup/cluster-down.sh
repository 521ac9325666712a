#!/usr/bin/env bash
# Stops a cluster started by dev_setup/cluster-up.sh and removes its folder.
#
#   dev_setup/cluster-down.sh [--keep] DIR
#
# kube-apiserver first, then etcd: SIGTERM, SIGKILL after 10 s. Only processes
# whose command line names DIR are signalled (a recycled pid is left alone).
# --keep leaves DIR (data, logs, keys) in place; `cluster-up.sh DIR` restarts
# it. A cluster that is already stopped, or a DIR that does not exist, is fine.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

down_args 2,9 "$@"

# Only processes whose command line names $dir are ours.
stop_pid() { stop_daemon "$1" "$2" "$dir"; } # PID NAME

# The pid files are rewritten on every (re)start, so they win over cluster.env.
pid_of() { # NAME ENVKEY
  local p
  p="$(cat "$dir/$1.pid" 2>/dev/null || true)"
  if [ -z "$p" ] && [ -f "$dir/cluster.env" ]; then p="$(sed -n "s/^$2=//p" "$dir/cluster.env" | tail -n1)"; fi
  printf '%s' "$p"
}

stop_pid "$(pid_of apiserver APISERVER_PID)" kube-apiserver
stop_pid "$(pid_of etcd ETCD_PID)" etcd

if [ "$keep" = 1 ]; then
  log "stopped; kept $dir (restart with: $here/cluster-up.sh $dir)"
  exit 0
fi
# Refuse to delete a folder that cluster-up.sh did not make ours.
if [ ! -f "$dir/cluster.env" ] && [ ! -f "$dir/apiserver.args" ] && [ ! -f "$dir/pki/ca.crt" ]; then
  log "$dir does not look like a cluster-up.sh folder: not removing it"
  exit 1
fi
rm -rf -- "$dir"
log "removed $dir"
