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

keep=0
dir=""
for a in "$@"; do
  case "$a" in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) log "unknown option $a"; exit 2 ;;
    *) [ -z "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }; dir="$a" ;;
  esac
done
[ -n "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }
# Accept the cluster.env path too (what cluster-up.sh prints).
case "$dir" in */cluster.env) dir="$(dirname "$dir")" ;; esac
if [ ! -d "$dir" ]; then
  log "$dir does not exist: nothing to stop"
  exit 0
fi
dir="$(cd "$dir" && pwd)"

pid_in_dir() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

stop_pid() { # PID NAME
  local pid=$1 name=$2
  pid_in_dir "$pid" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do pid_in_dir "$pid" || return 0; sleep 0.2; done
  log "$name did not stop after 10 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 25); do pid_in_dir "$pid" || return 0; sleep 0.2; done
  log "warning: $name (pid $pid) is still alive"
}

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
