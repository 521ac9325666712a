#!/usr/bin/env bash
# The pipeline benchmark: end-to-end throughput of the whole collector process
# (replay → normalize → route → filters → Volume) on a recorded corpus, in four
# filter variants, with CPU time per event, per-event latency (median, p99),
# peak RSS and how busy the rest of the machine was, each run several times
# (median and spread). Prints a table and writes it into docs/benchmarks.md
# (between the bench:pipeline markers), with the machine, commit and date.
#
#   dev_setup/bench.sh               release build, 1,000,000 events, 5 runs per variant
#   dev_setup/bench.sh --smoke       debug build, 10,000 events, 1 run, nothing written (CI: keeps the harness alive)
#   EVENTS=200000 RUNS=3 dev_setup/bench.sh
#   VARIANTS="none rust+enricher" dev_setup/bench.sh   a subset (the doc is written only for all four)
#   CLUSTER=0 dev_setup/bench.sh     without the cluster figures (memory, catch-up, hot swap, exporters),
#                                    which dev_setup/bench-cluster.sh measures after the pipeline figures
#
# The corpus comes from `event-collector generate --output` (all scenarios,
# both APIs, ~1.1 KB per event) and is cached in $EC_CACHE/bench. The WASM
# variants need the example filters (dev_setup/build-filters.sh). Per-stage
# costs are criterion benchmarks: `cargo bench -p event-collector --bench pipeline`
# (normalize, route, serialize) and `--bench filter` (WASM calls).
set -euo pipefail
cd "$(dirname "$0")/.."
. dev_setup/common.sh
root="$(pwd)"

smoke=0
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: dev_setup/bench.sh [--smoke]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EC_CACHE/target}"
if [ "$smoke" = 1 ]; then
  events="${EVENTS:-10000}" runs="${RUNS:-1}" profile=dev bin="$CARGO_TARGET_DIR/debug/event-collector"
else
  events="${EVENTS:-1000000}" runs="${RUNS:-5}" profile=release bin="$CARGO_TARGET_DIR/release/event-collector"
fi

log "building event-collector ($profile)"
cargo build -q --locked --profile "$profile" -p event-collector --bin event-collector
[ -x /usr/bin/time ] || apt_install time
command -v jq >/dev/null || apt_install jq
variants="${VARIANTS:-none rust rust+enricher python}"
bash dev_setup/build-filters.sh rust-warning-only rust-enrich-team python-redact >/dev/null

mkdir -p "$EC_CACHE/bench"
corpus="$EC_CACHE/bench/corpus-$events.jsonl"
if [ ! -s "$corpus" ]; then
  log "generating the corpus: $events events per API into $corpus"
  "$bin" generate --output "$corpus.tmp" --count "$((events / 2))" --api both --scenario mixed
  mv "$corpus.tmp" "$corpus"
fi
lines=$(wc -l < "$corpus")
bytes=$(stat -c %s "$corpus")
log "corpus: $lines events, $((bytes / lines)) bytes per event"

work="$(mktemp -d /tmp/ec-bench-XXXXXX)"
trap 'rm -rf "$work"' EXIT

# config VARIANT: a collector config writing to $work/out with that variant's
# filters (only those: each defined module is compiled at startup).
config() {
  local filters=() chain=""
  case "$1" in
    none) ;;
    rust) filters=(warn) chain='"warn"' ;;
    rust+enricher) filters=(warn team) chain='"warn", "team"' ;;
    python) filters=(redact) chain='"redact"' ;;
  esac
  cat <<EOF
cluster = "bench"
[source]
api = "both"
startup = "all"

[wasm]
cache_dir = "$EC_CACHE/wasm"
EOF
  for f in "${filters[@]}"; do
    case "$f" in
      warn) printf '[[filters]]\nname = "warn"\nmodule = "%s"\n' "$root/filters/rust-warning-only/rust-warning-only.wasm" ;;
      team) printf '[[filters]]\nname = "team"\nmodule = "%s"\nconfig = { teams = { demo = "platform", shop = "web-shop" }, default_team = "unowned" }\n' \
              "$root/filters/rust-enrich-team/rust-enrich-team.wasm" ;;
      redact) printf '[[filters]]\nname = "redact"\nmodule = "%s"\ntimeout = "100ms"\n' "$root/filters/python-redact/python-redact.wasm" ;;
    esac
  done
  cat <<EOF

[[exporters]]
name = "volume"
type = "volume"
path = "$work/out"
fsync = "never"
compress = false
max_file_size = "256MiB"

[[routes]]
name = "all"
default = true
filters = [$chain]
exporters = ["volume"]
EOF
}

# warm_up VARIANT: one untimed replay of the corpus' first 2,000 events, so
# that the WASM modules' compilation (cached in $EC_CACHE/wasm) is not timed.
warm_up() {
  head -n 2000 "$corpus" > "$work/warm.jsonl"
  rm -rf "$work/out"
  config "$1" > "$work/c.toml"
  "$bin" --config "$work/c.toml" run --replay "$work/warm.jsonl" 2> "$work/log" >/dev/null \
    || { cat "$work/log" >&2; return 1; }
}

# busy_jiffies: CPU time (all processes, all cores) the kernel counted as busy so far.
busy_jiffies() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# run_once VARIANT: one replay; prints
# "events_out wall_s cpu_s max_rss_kib latency_median_us latency_p99_us others_cores load1".
# others_cores: the average number of cores the rest of the machine kept busy meanwhile.
run_once() {
  rm -rf "$work/out"
  config "$1" > "$work/c.toml"
  local b0 b1
  b0=$(busy_jiffies)
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
    "$bin" --log-format json --config "$work/c.toml" run --replay "$corpus" 2> "$work/log" >/dev/null \
    || { cat "$work/log" >&2; return 1; }
  b1=$(busy_jiffies)
  local load1 written done_line
  load1=$(cut -d' ' -f1 /proc/loadavg)
  written=$(cat "$work"/out/*.jsonl 2>/dev/null | wc -l)
  done_line=$(grep '"replay done"' "$work/log" | tail -n1)
  [ -n "$done_line" ] || { cat "$work/log" >&2; echo "no \"replay done\" line in the log" >&2; return 1; }
  read -r acked p50 p99 unacked <<< "$(jq -r '.fields | "\(.events) \(.latency_median_us) \(.latency_p99_us) \(.unacknowledged)"' <<< "$done_line")"
  if [ "$acked" != "$lines" ] || [ "$unacked" != 0 ]; then
    echo "$1: $acked of $lines events acknowledged, $unacked unacknowledged" >&2
    return 1
  fi
  read -r wall user sys rss < "$work/time"
  awk -v w="$written" -v wall="$wall" -v u="$user" -v s="$sys" -v rss="$rss" -v p50="$p50" -v p99="$p99" \
      -v b="$((b1 - b0))" -v hz="$(getconf CLK_TCK)" -v load1="$load1" \
      'BEGIN { o = (b / hz - u - s) / wall; if (o < 0) o = 0; printf "%s %s %s %s %s %s %.2f %s\n", w, wall, u + s, rss, p50, p99, o, load1 }'
}

# stats: median and min–max of stdin numbers.
stats() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", m, a[1], a[NR]}'; }

table="$work/table.md"
{
  echo "| variant | events out | events/s (median, min–max) | CPU µs/event | CPU s per 1M events | latency median ms | latency p99 ms | peak RSS MiB | rest of machine busy (cores) | load avg 1 min |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$table"
for v in $variants; do
  : > "$work/runs"
  warm_up "$v"
  for _ in $(seq "$runs"); do run_once "$v" >> "$work/runs"; done
  out=$(awk 'NR==1{print $1}' "$work/runs")
  read -r rmed rmin rmax <<< "$(awk -v n="$lines" '{print n/$2}' "$work/runs" | stats)"
  read -r cmed _ _ <<< "$(awk -v n="$lines" '{print $3*1e6/n}' "$work/runs" | stats)"
  read -r mmed _ _ <<< "$(awk '{print $4/1024}' "$work/runs" | stats)"
  read -r l50 _ _ <<< "$(awk '{print $5/1000}' "$work/runs" | stats)"
  read -r l99 _ _ <<< "$(awk '{print $6/1000}' "$work/runs" | stats)"
  read -r omed omin omax <<< "$(awk '{print $7}' "$work/runs" | stats)"
  read -r lmed _ _ <<< "$(awk '{print $8}' "$work/runs" | stats)"
  printf '| %s | %s | %.0f (%.0f–%.0f) | %.2f | %.2f | %.1f | %.1f | %.0f | %.2f (%.2f–%.2f) | %.1f |\n' \
    "$v" "$out" "$rmed" "$rmin" "$rmax" "$cmed" "$cmed" "$l50" "$l99" "$mmed" "$omed" "$omin" "$omax" "$lmed" >> "$table"
  log "$v done: $(tail -n1 "$table")"
done
cat "$table"

if [ "$smoke" = 1 ]; then
  # The harness works if every variant ran and wrote events; the figures of a debug build mean nothing.
  awk -F'|' 'NR>2 && $3+0 == 0 {bad=1} END {exit bad}' "$table" || { echo "a variant wrote no events" >&2; exit 1; }
  # The cluster figures too (the exporter figures need Kafka and both ES emulators: full runs only).
  [ "${CLUSTER:-1}" = 0 ] || bash dev_setup/bench-cluster.sh --smoke catchup memory swap
  exit 0
fi

if [ "$variants" != "none rust rust+enricher python" ]; then
  log "a subset of the variants: docs/benchmarks.md not written"
  exit 0
fi
doc=docs/benchmarks.md
section="$work/section.md"
{
  echo "<!-- bench:pipeline:start (written by dev_setup/bench.sh; do not edit by hand) -->"
  echo "### End-to-end throughput (replay → normalize → route → filters → Volume)"
  echo
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)'), date: $(date -u +%Y-%m-%d)"
  echo "- corpus: $lines events ($((bytes / lines)) B each, both APIs, generator scenarios), $runs runs per variant; Volume with fsync = never"
  echo "- load: the collector uses both cores; \"rest of the machine busy\" is the CPU time of every other process during the runs, in cores (median, min–max), from /proc/stat; \"load avg\" is the 1-minute load average at the end of a run (the collector's own threads included)"
  echo "- \"events out\": events written (the Warning-only filter drops the Normal ones); every run's events were all acknowledged"
  echo "- CPU: user + system time of the collector process (all threads) per corpus event"
  echo "- latency: one event in 16, from the moment the pipeline takes it off the replay source (decoded) to the moment the checkpoint passes it (Volume acknowledged it); the replay feeds events as fast as the pipeline takes them, so this is mostly the time spent waiting in the pipeline's bounded buffers at full load, not the latency of a lightly loaded collector"
  echo
  cat "$table"
  echo "<!-- bench:pipeline:end -->"
} > "$section"
python3 - "$doc" "$section" <<'EOF'
import sys, re
doc, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(doc).read()
pat = re.compile(r"<!-- bench:pipeline:start.*?<!-- bench:pipeline:end -->", re.S)
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w").write(text)
EOF
log "written into $doc"

# Figures 3-6 (memory, catch-up, hot swap, exporters) against a real apiserver: CLUSTER=0 skips them.
if [ "${CLUSTER:-1}" != 0 ]; then
  bash dev_setup/bench-cluster.sh
fi
