#!/usr/bin/env bash
# The cluster benchmarks of docs/benchmarks.md (issue 7, figures 3-6), against
# a real kube-apiserver + etcd started here (dev_setup/cluster-up.sh):
#
#   memory    peak and steady RSS of the collector while STREAM events stream
#             through its watch, with BACKLOG events already in the apiserver
#             at its start (listed and exported first)
#   catchup   time from the collector's start until a BACKLOG-event backlog is
#             listed and in its Volume file, beside `kubectl get events -A -o json`
#   swap      WASM hot swap: module file renamed → first event processed by
#             the new version in the output, while a live stream runs
#   exporters the exporter benchmarks (tansu, noida-db, osmem-server), short runs
#
#   dev_setup/bench-cluster.sh                 release build, all figures, results into docs/benchmarks.md
#   dev_setup/bench-cluster.sh catchup swap    only these figures (the others' text stays)
#   dev_setup/bench-cluster.sh --smoke         debug build, tiny counts, 1 run, nothing written (keeps the harness alive)
#   BACKLOG=100000 STREAM=1000000 RUNS=3 GEN_PROCS=8 SWAP_RUNS=7 dev_setup/bench-cluster.sh
#   BIN=path/to/event-collector ...           measures that binary instead of building one
#   STREAM_MAX_SECS=1200 ...                   memory: stop creating after that long and measure
#                                               what was created (the figure says so)
#   CLUSTER_DIR=/tmp/bench-cluster dev_setup/bench-cluster.sh catchup
#       keeps the cluster (started there, or reused if running) and its events for
#       the next run, which only tops the backlog up (Events expire after 1 h)
#
# Each figure is measured RUNS times (median, min–max); RSS is sampled from
# /proc/<pid>/status every 100 ms. Events are created by `event-collector
# generate` (GEN_PROCS processes in parallel, as fast as the apiserver takes
# them). The results go between the bench:cluster markers of docs/benchmarks.md.
# shellcheck disable=SC2016 # backticks in printf formats are Markdown
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=dev_setup/common.sh
. dev_setup/common.sh
root="$(pwd)"
probe="$root/dev_setup/bench-cluster-probe.py"

smoke=0
figures=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    memory | catchup | swap | exporters) figures+=("$a") ;;
    -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: dev_setup/bench-cluster.sh [--smoke] [memory|catchup|swap|exporters]..." >&2; exit 2 ;;
  esac
done
[ ${#figures[@]} -gt 0 ] || figures=(catchup memory swap exporters)
want() { [[ " ${figures[*]} " == *" $1 "* ]]; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EC_CACHE/target}"
if [ "$smoke" = 1 ]; then
  backlog="${BACKLOG:-2000}" stream="${STREAM:-4000}" runs="${RUNS:-1}" swap_runs="${SWAP_RUNS:-2}"
  es_docs="${EC_BENCH_DOCS:-2000}" kafka_records="${BENCH_RECORDS:-5000}"
  profile=dev bin="$CARGO_TARGET_DIR/debug/event-collector"
else
  backlog="${BACKLOG:-100000}" stream="${STREAM:-1000000}" runs="${RUNS:-3}" swap_runs="${SWAP_RUNS:-7}"
  es_docs="${EC_BENCH_DOCS:-20000}" kafka_records="${BENCH_RECORDS:-50000}"
  profile=release bin="$CARGO_TARGET_DIR/release/event-collector"
fi
procs="${GEN_PROCS:-8}"
stream_max_secs="${STREAM_MAX_SECS:-7200}"
# generate_parallel creates whole multiples of 2 × GEN_PROCS events.
round_up() { local per=$((($1 + 2 * procs - 1) / (2 * procs))); echo $((per * 2 * procs)); }
backlog=$(round_up "$backlog") stream=$(round_up "$stream")
command -v bc > /dev/null || apt_install bc

if [ -n "${BIN:-}" ]; then
  bin="$BIN" profile="given" # an already built binary (e.g. to compare two commits)
else
  log "building event-collector ($profile)"
  cargo build -q --locked --profile "$profile" -p event-collector --bin event-collector
fi
if want swap; then
  bash dev_setup/build-filters.sh rust-warning-only rust-enrich-team assemblyscript-max-message >/dev/null
fi

work="$(mktemp -d /tmp/ec-bench-cluster-XXXXXX)"
# The cluster (etcd's data above all) lives in memory when it can: on disk,
# etcd's fsync per write held the apiserver to 250-580 creates/s, too slow to
# stream 1M events. 1.1M Events take ~1-2 GiB there.
shm_dir=""
if [ -z "${CLUSTER_DIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  shm_dir="$(mktemp -d /dev/shm/ec-bench-cluster-XXXXXX)"
fi
cluster_dir="${CLUSTER_DIR:-${shm_dir:-$work}/cluster}"
# Room for the 1.1M Events and their history between compactions.
export ETCD_QUOTA_BYTES="${ETCD_QUOTA_BYTES:-8589934592}"
keep_cluster=$([ -n "${CLUSTER_DIR:-}" ] && echo 1 || echo 0)
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep_cluster" = 0 ] && [ -f "$cluster_dir/cluster.env" ]; then
    bash dev_setup/cluster-down.sh "$cluster_dir" > /dev/null 2>&1 || true
  fi
  rm -rf "$work"
  [ -z "$shm_dir" ] || rm -rf "$shm_dir"
}
trap cleanup EXIT

results="$work/swap-rows.md"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# measured FIGURE: the line saying when, on which commit and with which command a figure was measured.
measured() {
  local build
  build="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- runtime exporters || echo ' (with local changes)') ($profile build)"
  [ -z "${BIN:-}" ] || build="the binary \`$BIN\`"
  # The exporter benchmarks are test binaries, built in the dev profile whatever $profile is.
  [ "$1" != exporters ] || build="commit $(git rev-parse --short HEAD) (the tests' dev profile)"
  echo "Measured $(date -u +%Y-%m-%d) on $build with \`dev_setup/bench-cluster.sh $1\`$([ "$1" = memory ] || [ "$1" = catchup ] && echo " (BACKLOG=$backlog$([ "$1" = memory ] && echo " STREAM=$stream")$([ "$1" = catchup ] && echo " RUNS=$runs"))")."
  echo
}
stats() { python3 "$probe" stats; }
# fmt_stats "median min max" [decimals]: "median (min–max)"
fmt_stats() { read -r m lo hi <<< "$1"; printf "%.${2:-1}f (%.${2:-1}f–%.${2:-1}f)" "$m" "$lo" "$hi"; }

# --- the cluster and the backlog ------------------------------------------------
need_cluster=0
want memory && need_cluster=1
want catchup && need_cluster=1
want swap && need_cluster=1
if [ "$need_cluster" = 1 ]; then
  log "starting a cluster in $cluster_dir"
  env_file="$(bash dev_setup/cluster-up.sh "$cluster_dir")"
  # shellcheck disable=SC1090
  . "$env_file"
  kc_admin="$ADMIN_KUBECONFIG" kc_collector="$COLLECTOR_KUBECONFIG"
  for ns in $(seq -f 'bench-%g' 0 $((procs - 1))) swap; do
    kubectl --kubeconfig "$kc_admin" get ns "$ns" > /dev/null 2>&1 || kubectl --kubeconfig "$kc_admin" create ns "$ns" > /dev/null
  done
fi

# generate_parallel TOTAL: creates TOTAL events (half through each API) in the
# bench-* namespaces, GEN_PROCS generators in parallel, as fast as the server
# takes them; prints the seconds it took.
generate_parallel() {
  local total=$1 per i t0 pids=()
  per=$((total / (2 * procs)))
  t0=$(date +%s.%N)
  : > "$work/gen.pids"
  for i in $(seq 0 $((procs - 1))); do
    "$bin" generate --kubeconfig "$kc_admin" --namespace "bench-$i" --api both --scenario mixed \
      --count "$per" > /dev/null 2> "$work/gen-$i.log" &
    pids+=($!)
    echo "$!" >> "$work/gen.pids"
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { cat "$work/gen-$i.log" >&2; return 1; }
  done
  echo "$(date +%s.%N) - $t0" | bc -l
}

# count_events: how many Events the apiserver holds: one list request with
# limit=1 (the rest is in metadata.remainingItemCount), as the collector.
count_events() {
  curl -sf --cacert "$CA_CERT" -H "Authorization: Bearer $(cat "$COLLECTOR_TOKEN_FILE")" \
    "$APISERVER_URL/api/v1/events?limit=1" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) + (d["metadata"].get("remainingItemCount") or 0))'
}

if want memory || want catchup; then
  present=$(count_events)
  if [ "$present" -lt "$backlog" ]; then
    todo=$(round_up $((backlog - present)))
    log "creating the backlog: $todo events ($procs generators; $present present)"
    gen_secs=$(generate_parallel "$todo")
    gen_note="$todo events of the backlog created by $procs \`generate\` processes in $(printf %.0f "$gen_secs") s ($(echo "$todo / $gen_secs" | bc) events/s)"
    present=$(count_events)
  else
    gen_note="backlog created by an earlier run"
  fi
  log "backlog: $present events present"
  [ "$present" -ge "$backlog" ] || { log "only $present of $backlog events present"; exit 1; }
  backlog=$present
fi

# collector_config FILE API OUT STATE: a collector config exporting everything
# to Volume OUT. Extra lines: $SOURCE_EXTRA ([source]), $VOLUME_EXTRA (the
# exporter), $ROUTE_EXTRA (the route), $TAIL_EXTRA (more tables).
collector_config() {
  cat > "$1" <<EOF
cluster = "bench"
[source]
api = "$2"
startup = "all"
${SOURCE_EXTRA:-}
[state]
dir = "$4"
[http]
enabled = false

[[exporters]]
name = "volume"
type = "volume"
path = "$3"
fsync = "never"
compress = false
max_file_size = "256MiB"
${VOLUME_EXTRA:-}

[[routes]]
name = "all"
default = true
exporters = ["volume"]
${ROUTE_EXTRA:-}

${TAIL_EXTRA:-}
EOF
}

# start_collector CONFIG LOG: starts the collector in the background; sets $cpid.
start_collector() {
  "$bin" --config "$1" --log-format json run --kubeconfig "$kc_collector" > /dev/null 2> "$2" &
  cpid=$!
  bg_pids+=("$cpid")
}
stop_collector() {
  kill -TERM "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
}

# --- figure 4: catch-up ------------------------------------------------------------
if want catchup; then
  log "catch-up: $backlog events, $runs runs each of kubectl and the collector (core/v1, events.k8s.io/v1)"
  : > "$work/kubectl.times"; : > "$work/core.times"; : > "$work/v1.times"; : > "$work/catchup.rss"
  for r in $(seq "$runs"); do
    t0=$(date +%s.%N)
    kubectl --kubeconfig "$kc_collector" get events -A -o json > "$work/kubectl.json"
    echo "$(date +%s.%N) - $t0" | bc -l >> "$work/kubectl.times"
    items=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$work/kubectl.json")
    [ "$items" -ge "$backlog" ] || { log "kubectl listed only $items events"; exit 1; }
    for api in core/v1 events.k8s.io/v1; do
      tag=$([ "$api" = core/v1 ] && echo core || echo v1)
      rm -rf "$work/catchup"; mkdir -p "$work/catchup"
      collector_config "$work/catchup/c.toml" "$api" "$work/catchup/out" "$work/catchup/state"
      t0=$(date +%s.%N)
      start_collector "$work/catchup/c.toml" "$work/catchup/log"
      read -r secs lines hwm < <(python3 "$probe" watch --pid "$cpid" --out "$work/catchup/out" \
        --target "$backlog" --t0 "$t0" --interval 0.05 --timeout 600) \
        || { tail -20 "$work/catchup/log" >&2; exit 1; }
      stop_collector
      echo "$secs" >> "$work/$tag.times"
      echo "$hwm" >> "$work/catchup.rss"
      log "run $r $api: $lines events in ${secs}s (kubectl: $(tail -1 "$work/kubectl.times")s)"
    done
  done
  k=$(stats < "$work/kubectl.times"); c=$(stats < "$work/core.times"); v=$(stats < "$work/v1.times")
  ratio=$(echo "$(cut -d' ' -f1 <<< "$c") / $(cut -d' ' -f1 <<< "$k")" | bc -l)
  rss=$(awk '{print $1/1024}' "$work/catchup.rss" | stats)
  {
    echo "### Figure 4: catch-up of a $backlog-event backlog"
    echo
    measured catchup
    echo "| what | seconds (median, min–max) | events/s (median) |"
    echo "|---|---|---|"
    printf '| `kubectl get events -A -o json` (core/v1, pages of 500, to a file) | %s | %.0f |\n' "$(fmt_stats "$k" 2)" "$(echo "$backlog / $(cut -d' ' -f1 <<< "$k")" | bc -l)"
    printf '| collector, `api = "core/v1"`: start → all in the Volume file | %s | %.0f |\n' "$(fmt_stats "$c" 2)" "$(echo "$backlog / $(cut -d' ' -f1 <<< "$c")" | bc -l)"
    printf '| collector, `api = "events.k8s.io/v1"`: start → all in the Volume file | %s | %.0f |\n' "$(fmt_stats "$v" 2)" "$(echo "$backlog / $(cut -d' ' -f1 <<< "$v")" | bc -l)"
    echo
    printf -- '- collector (core/v1) / kubectl: **%.2f×** (target ≤ 2×)\n' "$ratio"
    printf -- '- collector peak RSS during the catch-up: %s MiB (median, min–max)\n' "$(fmt_stats "$rss")"
    echo "- $gen_note; load average at the end: $(loadavg)"
    echo
  } > "$work/fig-catchup.md"
fi

# --- figure 3: memory under a stream ----------------------------------------------
if want memory; then
  log "memory: collector with $backlog events present, then $stream new events streamed"
  m="$work/memory"; rm -rf "$m"; mkdir -p "$m"
  collector_config "$m/c.toml" "events.k8s.io/v1" "$m/out" "$m/state"
  t0=$(date +%s.%N)
  start_collector "$m/c.toml" "$m/log"
  python3 "$probe" watch --pid "$cpid" --out "$m/out" --target "$backlog" --t0 "$t0" \
    --samples "$m/samples.list" --timeout 900 > "$m/listed" || { tail -20 "$m/log" >&2; exit 1; }
  log "backlog exported ($(cat "$m/listed")); streaming $stream events"
  gen_t0=$(date +%s.%N)
  generate_parallel "$stream" > "$m/gen.secs" &
  gen_pid=$!
  bg_pids+=("$gen_pid")
  cut_note=""
  if ! python3 "$probe" watch --pid "$cpid" --out "$m/out" --target $((backlog + stream)) --t0 "$t0" \
    --samples "$m/samples.stream" --timeout "$stream_max_secs" > "$m/streamed"; then
    kill -0 "$cpid" 2>/dev/null || { tail -20 "$m/log" >&2; exit 1; }
    # Out of time (STREAM_MAX_SECS): stop the creators, then measure up to what they created.
    while read -r p; do kill "$p" 2>/dev/null || true; done < "$work/gen.pids"
    wait "$gen_pid" 2>/dev/null || true
    planned=$stream
    stream=$(($(count_events) - backlog))
    log "stream cut after ${stream_max_secs}s: $stream of $planned events created; waiting for them to be exported"
    python3 "$probe" watch --pid "$cpid" --out "$m/out" --target $((backlog + stream)) --t0 "$t0" \
      --samples "$m/samples.stream2" --timeout 600 > "$m/streamed" || { tail -20 "$m/log" >&2; exit 1; }
    cat "$m/samples.stream2" >> "$m/samples.stream"
    cut_note="the stream was cut after STREAM_MAX_SECS=${stream_max_secs}s: $stream of the $planned planned events were created (the apiserver's create rate is the limit here); "
  else
    wait "$gen_pid"
  fi
  stream_secs=$(echo "$(date +%s.%N) - $gen_t0" | bc -l)
  load_stream=$(loadavg)
  # Where the resident memory is at the end: anonymous (heap, stacks) and file-backed (code pages).
  split=$(awk '/^RssAnon|^RssFile/{printf "%s %.1f MiB ", $1, $2/1024}' "/proc/$cpid/status")
  stop_collector
  cat "$m/samples.list" "$m/samples.stream" > "$m/samples"
  read -r peak steady first growth nsamples < <(python3 "$probe" rss "$m/samples" --from-line "$backlog")
  read -r lpeak _ < <(python3 "$probe" rss "$m/samples.list")
  read -r q1 q2 q3 q4 < <(python3 "$probe" curve "$m/samples" --from-line "$(cut -d' ' -f2 < "$m/listed")" \
    --to-line $((backlog + stream)))
  if [ "$smoke" = 0 ]; then
    mkdir -p "$EC_CACHE/bench"
    cp "$m/samples" "$EC_CACHE/bench/cluster-memory-samples.txt"
  fi
  {
    echo "### Figure 3: memory while $stream events stream through"
    echo
    measured memory
    echo "| phase | events | seconds | peak RSS (VmHWM) MiB | RSS MiB, median of the 1st half | steady RSS MiB (median of the 2nd half) | growth MiB |"
    echo "|---|---|---|---|---|---|---|"
    printf '| list + export of the backlog | %s | %.1f | %s | – | – | – |\n' "$backlog" "$(cut -d' ' -f1 < "$m/listed")" "$lpeak"
    printf '| stream of new events (watch) | %s | %.0f | %s | %s | %s | %s |\n' "$stream" "$stream_secs" "$peak" "$first" "$steady" "$growth"
    echo
    printf -- '- RSS MiB when 25 / 50 / 75 / 100 %% of the stream was exported: %s / %s / %s / %s; at the end: %s\n' "$q1" "$q2" "$q3" "$q4" "$split"
    printf -- '- %sstream: %d `generate` processes creating events as fast as the apiserver takes them (%.0f events/s on average), both APIs, the mixed scenario\n' "$cut_note" "$procs" "$(echo "$stream / $stream_secs" | bc -l)"
    echo "- $nsamples samples of /proc/<pid>/status every 100 ms; load average at the end of the stream: $load_stream"
    echo "- samples (t, VmRSS, VmHWM, events out): \`$EC_CACHE/bench/cluster-memory-samples.txt\`"
    echo "- target: peak RSS ≤ 30 MiB, flat"
    echo
  } > "$work/fig-memory.md"
fi

# --- figure 5: hot swap -------------------------------------------------------------
if want swap; then
  s="$work/swap"; rm -rf "$s"; mkdir -p "$s/modules"
  a="$root/filters/rust-warning-only/rust-warning-only.wasm"
  enrich="$root/filters/rust-enrich-team/rust-enrich-team.wasm"
  asc="$root/filters/assemblyscript-max-message/assemblyscript-max-message.wasm"
  "$bin" generate --kubeconfig "$kc_admin" --namespace swap --api core/v1 --scenario mixed \
    --rate "${SWAP_RATE:-300}" --count 100000000 > /dev/null 2> "$s/gen.log" &
  bg_pids+=($!)
  : > "$results"
  # label | module B | a new build per swap | [wasm] tiered
  rows=(
    "Rust enricher (component, 138 KiB), a new build each swap|$enrich|fresh|true"
    "AssemblyScript filter (core module, 8 KiB), a new build each swap|$asc|fresh|true"
    "Rust enricher, a new build each swap, \`tiered = false\`|$enrich|fresh|false"
    "Rust enricher, the same build each swap (cached after the first)|$enrich|same|true"
  )
  for row in "${rows[@]}"; do
    IFS='|' read -r label b fresh tiered <<< "$row"
    log "hot swap: $swap_runs swaps: $label"
    rm -rf "$s/out" "$s/state" "$s/wasm-cache"
    cp "$a" "$s/modules/filter.wasm"
    SOURCE_EXTRA='namespaces = ["swap"]' VOLUME_EXTRA='batch_timeout = "5ms"' ROUTE_EXTRA='filters = ["chosen"]' \
      TAIL_EXTRA="$(printf '[wasm]\ncache_dir = "%s"\ntiered = %s\n\n[[filters]]\nname = "chosen"\nmodule = "%s"\n' \
        "$s/wasm-cache" "$tiered" "$s/modules/filter.wasm")" \
      collector_config "$s/c.toml" "core/v1" "$s/out" "$s/state"
    start_collector "$s/c.toml" "$s/log"
    python3 "$probe" watch --pid "$cpid" --out "$s/out" --target 20 --timeout 120 > /dev/null \
      || { tail -20 "$s/log" >&2; exit 1; }
    fresh_flag=(); [ "$fresh" = fresh ] && fresh_flag=(--fresh)
    python3 "$probe" swap --module "$s/modules/filter.wasm" --a "$a" --b "$b" "${fresh_flag[@]}" --out "$s/out" \
      --log "$s/log" --runs "$swap_runs" > "$s/runs" \
      || { tail -20 "$s/log" >&2; exit 1; }
    stop_collector
    cat "$s/runs" >&2
    vis=$(cut -d' ' -f1 "$s/runs" | stats)
    logd=$(cut -d' ' -f2 "$s/runs" | stats)
    loadt=$(cut -d' ' -f3 "$s/runs" | stats)
    tiers=$(cut -d' ' -f5 "$s/runs" | sort | uniq -c | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}')
    opt=$(awk '$6 >= 0 {print $6}' "$s/runs")
    if [ -n "$opt" ]; then opt_cell=$(fmt_stats "$(stats <<< "$opt")"); else opt_cell="–"; fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$(fmt_stats "$vis")" "$(fmt_stats "$logd")" \
      "$(fmt_stats "$loadt")" "$tiers" "$opt_cell" >> "$results"
  done
  {
    echo "### Figure 5: WASM hot swap"
    echo
    measured swap
    echo "| version B swapped in | rename → first event of B in the output, ms (median, min–max) | rename → \"filter module swapped\" logged, ms | compile + link (\`load_time\`), ms | code B started on | rename → \"filter module optimized\" (Cranelift's code in use), ms |"
    echo "|---|---|---|---|---|---|"
    cat "$results"
    echo
    echo "- $swap_runs swaps per row: the Rust Warning-only filter (A) is replaced by B, renamed over the module file, while \`generate\` creates ${SWAP_RATE:-300} events/s (mixed scenario, Normal and Warning); the first Normal event in the output is B's. Between swaps A is put back (from the cache) and the stream settles for 1 s"
    echo "- \"a new build each swap\": B's bytes plus a custom section naming the run, so every swap is a cold compile, as when a user ships a new version of a filter; default \`[wasm] tiered = true\`: such a module starts on Winch's baseline code and moves to Cranelift's when that is compiled and validated in the background"
    echo "- the output is the Volume file with \`batch_timeout = \"5ms\"\`, polled every 1 ms; the rename ends the debounce at once (the write is known complete); load average: $(loadavg)"
    echo "- target: ≤ 100 ms"
    echo
  } > "$work/fig-swap.md"
fi

# --- figure 6: exporters -------------------------------------------------------------
if want exporters; then
  log "exporters: short runs of the Kafka and Elasticsearch benchmarks ($runs runs)"
  : > "$work/exp.lines"
  for _ in $(seq "$runs"); do
    BENCH_RECORDS="$kafka_records" cargo test -q --locked -p event-collector-exporters kafka::broker_tests::bench \
      -- --ignored --nocapture --test-threads=1 2>/dev/null | grep -o 'kafka bench: .*' >> "$work/exp.lines"
    # -o: with -q, libtest's progress dot of the first test precedes the next test's first line.
    EC_BENCH_DOCS="$es_docs" cargo test -q --locked -p event-collector-e2e --test elasticsearch \
      -- --ignored bench --nocapture --test-threads=1 2>/dev/null | grep -o 'BENCH .*' >> "$work/exp.lines"
  done
  cat "$work/exp.lines" >&2
  {
    echo "### Figure 6: exporters (short runs)"
    echo
    measured exporters
    echo "| exporter → server | compression | events/s (median, min–max) |"
    echo "|---|---|---|"
    for c in lz4 none zstd; do
      r=$(sed -n "s/^kafka bench: compression=$c .* = \([0-9]*\) events\/s.*/\1/p" "$work/exp.lines" | stats)
      echo "| Kafka → tansu ($kafka_records records) | $c | $(fmt_stats "$r" 0) |"
    done
    for srv in opensearch:osmem-server elasticsearch:noida-db; do
      for c in false true; do
        r=$(grep "^BENCH ${srv%%:*} compression=$c:" "$work/exp.lines" | sed -n 's/.* = \([0-9]*\) docs\/s.*/\1/p' | stats)
        echo "| Elasticsearch → ${srv#*:} ($es_docs docs) | $([ "$c" = true ] && echo gzip || echo off) | $(fmt_stats "$r" 0) |"
      done
    done
    echo
    echo "- dev profile (the tests' own); the long runs and their method: the Elasticsearch and Kafka sections above; load average: $(loadavg)"
    echo
  } > "$work/fig-exporters.md"
fi

for f in "${figures[@]}"; do cat "$work/fig-$f.md"; done
if [ "$smoke" = 1 ]; then
  exit 0
fi

# --- into docs/benchmarks.md ------------------------------------------------------------
# The section between the bench:cluster markers holds one block per figure
# (bench:cluster-<figure> markers); a run replaces the blocks of its figures only.
doc=docs/benchmarks.md
for f in "${figures[@]}"; do
  { echo "<!-- bench:cluster-$f:start -->"; cat "$work/fig-$f.md"; echo "<!-- bench:cluster-$f:end -->"; } > "$work/block-$f.md"
done
machine="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
python3 - "$doc" "$work" "$machine" "${figures[@]}" <<'EOF'
import os, re, sys
doc, work, machine, figures = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
order = ["memory", "catchup", "swap", "exporters"]
text = open(doc).read()
sec = re.compile(r"<!-- bench:cluster:start.*?<!-- bench:cluster:end -->", re.S)
if not sec.search(text):
    blocks = "\n\n".join(f"<!-- bench:cluster-{f}:start -->\n(not measured yet)\n<!-- bench:cluster-{f}:end -->" for f in order)
    text = text.rstrip("\n") + "\n\n<!-- bench:cluster:start (the bench:cluster-<figure> blocks are written by dev_setup/bench-cluster.sh; the notes after them by hand) -->\n" \
        + "## Against a real apiserver: memory, catch-up, hot swap, exporters\n\n" + blocks + "\n<!-- bench:cluster:end -->\n"
for f in figures:
    block = open(os.path.join(work, f"block-{f}.md")).read().rstrip("\n")
    pat = re.compile(rf"<!-- bench:cluster-{f}:start -->.*?<!-- bench:cluster-{f}:end -->", re.S)
    text = pat.sub(lambda m: block, text)
text = re.sub(r"(?m)^Machine of the cluster benchmarks:.*$", "", text)
text = text.replace("## Against a real apiserver: memory, catch-up, hot swap, exporters\n",
                    "## Against a real apiserver: memory, catch-up, hot swap, exporters\n\nMachine of the cluster benchmarks: "
                    + machine + "; kube-apiserver and etcd on the same machine (dev_setup/cluster-up.sh).\n", 1)
text = re.sub(r"\n{3,}", "\n\n", text)
open(doc, "w").write(text)
EOF
log "written into $doc"
