#!/usr/bin/env bash
# First run, no cluster needed: starts a local real Kubernetes control plane
# (dev_setup/cluster-up.sh), runs event-collector on the default config
# (event-collector.toml: every event into ./events/), then creates the
# generator's scenarios (image pull failure, crash loop, ...) so they show up
# in ./events/ within seconds. Ctrl-C stops everything it started.
#
#   dev_setup/demo.sh           run until Ctrl-C
#   dev_setup/demo.sh --check   stop (exit 0) once the scenario events are in ./events/
#
# The first run builds kube-apiserver once (~10 minutes on 2 cores, cached in
# ~/.cache/event-collector) and the collector (cargo build).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) log "usage: $0 [--check]"; exit 2 ;;
esac
say() { printf '[demo] %s\n' "$*" >&2; }
cd "$root"

# --- 1. the binaries -----------------------------------------------------------
if [ ! -x "$EC_BIN/kube-apiserver" ]; then
  say "first run: building kube-apiserver from source, once per machine (about 10 minutes; progress below)"
  bash "$here/install-kube.sh"
fi
say "building event-collector (cargo build; quick when already built)"
cargo build -q -p event-collector --bin event-collector
bin="${CARGO_TARGET_DIR:-$root/target}/debug/event-collector"
[ -x "$bin" ] || { say "no binary at $bin"; exit 1; }

# --- cleanup: whatever was started, in reverse order ----------------------------------
cluster_dir=""
collector_pid=""
stopping=0
cleanup() {
  [ "$stopping" = 1 ] && return 0
  stopping=1
  if [ -n "$collector_pid" ] && kill -0 "$collector_pid" 2>/dev/null; then
    say "stopping the collector (pid $collector_pid)"
    kill -TERM "$collector_pid" 2>/dev/null || true
    wait "$collector_pid" 2>/dev/null || true
  fi
  if [ -n "$cluster_dir" ]; then
    say "stopping the cluster"
    bash "$here/cluster-down.sh" "$cluster_dir" || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
set -E
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR

# --- 2. the cluster ----------------------------------------------------------------
cluster_dir="$(mktemp -d "${TMPDIR:-/tmp}/ec-demo.XXXXXX")"
say "starting a local kube-apiserver + etcd in $cluster_dir"
env_file="$(bash "$here/cluster-up.sh" "$cluster_dir")"
# shellcheck disable=SC1090
. "$env_file"

# --- 3. the collector --------------------------------------------------------------
mkdir -p events
# Lines in the current (uncompressed) files; ./events/ may hold earlier runs too.
count_events() { find events -maxdepth 1 -name '*.jsonl' -exec cat {} + | wc -l; }
before="$(count_events)"
log_file="$cluster_dir/collector.log"
say "starting event-collector (config event-collector.toml, log $log_file)"
"$bin" --config event-collector.toml --kubeconfig "$COLLECTOR_KUBECONFIG" 2>"$log_file" &
collector_pid=$!
ready() { curl -sf http://127.0.0.1:9464/readyz; }
if ! WAIT_SECS=60 wait_for ready; then
  say "the collector did not become ready; its log:"
  tail -n 30 "$log_file" >&2
  exit 1
fi

# --- 4. the events -----------------------------------------------------------------------
kubectl --kubeconfig "$ADMIN_KUBECONFIG" create namespace demo >/dev/null
total=0
for s in image-pull-failure crash-loop failed-scheduling failed-mount normal-rollout; do
  out="$(RUST_LOG=warn "$bin" generate --kubeconfig "$ADMIN_KUBECONFIG" -n demo --scenario "$s" --rate 20)"
  say "$s: $out"
  n="$(printf '%s' "$out" | sed -n 's/^created \([0-9]*\) core\/v1 and \([0-9]*\) .*/\1 \2/p')"
  for x in $n; do total=$((total + x)); done
done
want=$((before + total))
got_all() { [ "$(count_events)" -ge "$want" ]; }
if ! WAIT_SECS=60 wait_for got_all; then
  say "only $(( $(count_events) - before )) of $total events reached ./events/ in 60 s; collector log:"
  tail -n 30 "$log_file" >&2
  exit 1
fi
say "all $total scenario events are in ./events/"

cat >&2 <<MSG

  Events, one JSON object per line:   tail -n 5 events/*.jsonl
  A summary with jq:                   jq -c '{type, reason, kind: .object.kind, name: .object.name, message}' events/*.jsonl
  Warnings only:                       grep '"type":"Warning"' events/*.jsonl
  The collector's metrics and health: curl -s localhost:9464/metrics | grep kubernetes_events
                                       curl -s localhost:9464/readyz
  Make more events:                    $bin generate --kubeconfig $ADMIN_KUBECONFIG -n demo --scenario crash-loop
  kubectl on this cluster:             kubectl --kubeconfig $ADMIN_KUBECONFIG get events -n demo
  Collector log:                       $log_file

  Ctrl-C stops the collector and the cluster (./events/ stays).
MSG
[ "$check" = 1 ] && exit 0
wait "$collector_pid"
