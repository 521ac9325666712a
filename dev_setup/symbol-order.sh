#!/usr/bin/env bash
# Regenerates runtime/link/symbol-order.txt, the layout of the release
# binary's code (runtime/build.rs passes it to the linker): the functions that
# run, together, so that the code pages the collector maps are code it uses.
# Each page fault on the binary maps its 64 KiB neighbourhood (the kernel's
# fault-around); with the functions in the compiler's order that kept ~10 MiB
# of a watching collector's code resident for ~3 MiB it ran.
#
#   dev_setup/symbol-order.sh           profile the release build, write the file
#   dev_setup/symbol-order.sh --check   how many of the file's symbols the release build still has
#
# The profiles are callgrind runs of the release binary: a replay of a
# generated corpus (no filters), a watch of a throw-away cluster
# (dev_setup/cluster-up.sh) through its list, a stream of new events, scrapes
# of /metrics, /healthz and /readyz, and a stop, and a replay through the Rust
# filter and enricher from a cold module cache. The Volume files are small, so
# that every run rotates them. Re-run it after changing dependencies or much of the code: the
# linker skips names the build no longer has (their functions keep the
# compiler's order), which costs memory, never correctness. ~5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. dev_setup/common.sh
LOG_TAG=symbol-order
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EC_CACHE/target}"
export PATH="$EC_CACHE/bin:$PATH"
bin="$CARGO_TARGET_DIR/release/event-collector"
order=runtime/link/symbol-order.txt

log "building event-collector (release)"
cargo build -q --locked --release -p event-collector --bin event-collector
if [ "${1:-}" = "--check" ]; then
  python3 dev_setup/symbol-order.py check "$bin" "$order"
  exit 0
fi
command -v valgrind > /dev/null || apt_install valgrind
bash dev_setup/build-filters.sh rust-warning-only rust-enrich-team > /dev/null

work="$(mktemp -d)"
cluster="$work/cluster"
collector=""
cleanup() {
  [ -z "$collector" ] || kill -TERM "$collector" 2>/dev/null || true
  [ ! -d "$cluster" ] || bash dev_setup/cluster-down.sh "$cluster" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# config NAME API [yes] [HTTP]: a collector config writing to $work/NAME.out;
# with "yes", the Rust filter and enricher on the route (a cold module cache);
# with HTTP (IP:PORT), the metrics and health endpoints served there.
config() {
  local filters=""
  if [ "${3:-}" = yes ]; then
    filters="[[filters]]
name = \"warn\"
module = \"$PWD/filters/rust-warning-only/rust-warning-only.wasm\"
[[filters]]
name = \"team\"
module = \"$PWD/filters/rust-enrich-team/rust-enrich-team.wasm\"
config = { teams = { demo = \"platform\", shop = \"web-shop\" }, default_team = \"unowned\" }"
  fi
  printf '%s\n' "cluster = \"profile\"
[source]
api = \"$2\"
startup = \"all\"
[state]
dir = \"$work/$1.state\"
[http]
enabled = $([ -n "${4:-}" ] && echo "true
address = \"$4\"" || echo false)
[wasm]
cache_dir = \"$work/$1.wasm-cache\"
# valgrind cannot reserve the instance pool's address space
pooling = false
$filters
[[exporters]]
name = \"volume\"
type = \"volume\"
path = \"$work/$1.out\"
fsync = \"never\"
compress = false
max_file_size = \"1MiB\"
[[routes]]
name = \"all\"
default = true
exporters = [\"volume\"]
$([ "${3:-}" = yes ] && echo 'filters = ["warn", "team"]')"
}

# callgrind NAME ARGS...: the binary under callgrind, its profile in $work/NAME.cg.
callgrind() {
  local name=$1
  shift
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" \
    "$bin" --log-format json "$@" > /dev/null 2> "$work/$name.log"
}

lines_out() { cat "$work/$1.out"/*.jsonl* 2>/dev/null | wc -l; }

# wait_lines NAME N: until the collector NAME exported N events (5 minutes at most).
wait_lines() {
  local i
  for i in $(seq 600); do
    [ "$(lines_out "$1")" -ge "$2" ] && return 0
    kill -0 "$collector" 2>/dev/null || { tail -5 "$work/$1.log" >&2; return 1; }
    sleep 0.5
  done
  log "$1: only $(lines_out "$1") of $2 events exported"
  return 1
}

log "replays (no filters; the Rust filter and enricher)"
"$bin" generate --output "$work/corpus.jsonl" --count 10000 --api both --scenario mixed 2> /dev/null
config replay both > "$work/replay.toml"
callgrind replay --config "$work/replay.toml" run --replay "$work/corpus.jsonl"
config filters both yes > "$work/filters.toml"
callgrind filters --config "$work/filters.toml" run --replay "$work/corpus.jsonl"

log "a watch of a throw-away cluster"
env_file="$(bash dev_setup/cluster-up.sh "$cluster")"
# shellcheck disable=SC1090
. "$env_file"
# gen N: N events in each of two namespaces, through both APIs.
gen() {
  local i pids=()
  for i in 0 1; do
    "$bin" generate --kubeconfig "$ADMIN_KUBECONFIG" --namespace "profile-$i" --api both --scenario mixed \
      --count "$1" > /dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
}
for i in 0 1; do kubectl --kubeconfig "$ADMIN_KUBECONFIG" create ns "profile-$i" > /dev/null; done
gen 1000
http="127.0.0.1:$(free_port)"
config watch both no "$http" > "$work/watch.toml"
# Started directly (not through a function, which would run in a subshell) so
# that $! is valgrind itself; it passes SIGTERM on to the collector, which stops.
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/watch.cg" \
  "$bin" --log-format json --config "$work/watch.toml" run --kubeconfig "$COLLECTOR_KUBECONFIG" \
  > /dev/null 2> "$work/watch.log" &
collector=$!
wait_lines watch 4000
gen 1000
wait_lines watch 8000
for path in metrics healthz readyz metrics; do curl -sf "http://$http/$path" > /dev/null || true; done
kill -TERM "$collector"
wait "$collector" || true
collector=""

python3 dev_setup/symbol-order.py write "$bin" "$order" \
  --group "$work/replay.cg" "$work/watch.cg" --group "$work/filters.cg"
log "wrote $order ($(grep -vc '^#' "$order") functions); rebuild the release binary to use it"
