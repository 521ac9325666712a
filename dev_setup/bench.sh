#!/usr/bin/env bash
# The pipeline benchmark: end-to-end throughput of the whole collector process
# (replay → normalize → route → filters → Volume) on a recorded corpus, in four
# filter variants, with CPU time per event and peak RSS, each run several times
# (median and spread). Prints a table and writes it into docs/benchmarks.md
# (between the bench:pipeline markers), with the machine, commit and date.
#
#   dev_setup/bench.sh               release build, 1,000,000 events, 5 runs per variant
#   dev_setup/bench.sh --smoke       debug build, 20,000 events, 1 run, nothing written (CI: keeps the harness alive)
#   EVENTS=200000 RUNS=3 dev_setup/bench.sh
#
# The corpus comes from `event-collector generate --output` (all scenarios,
# both APIs, ~1.1 KB per event) and is cached in $EC_CACHE/bench. The WASM
# variants need the example filters (dev_setup/build-filters.sh). Per-stage
# costs are criterion benchmarks: `cargo bench -p event-collector`.
set -euo pipefail
cd "$(dirname "$0")/.."
. dev_setup/common.sh
root="$(pwd)"

smoke=0
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: dev_setup/bench.sh [--smoke]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EC_CACHE/target}"
if [ "$smoke" = 1 ]; then
  events="${EVENTS:-20000}" runs="${RUNS:-1}" profile=dev bin="$CARGO_TARGET_DIR/debug/event-collector"
else
  events="${EVENTS:-1000000}" runs="${RUNS:-5}" profile=release bin="$CARGO_TARGET_DIR/release/event-collector"
fi

log "building event-collector ($profile)"
cargo build -q --locked --profile "$profile" -p event-collector --bin event-collector
[ -x /usr/bin/time ] || apt_install time
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

# config VARIANT: a collector config writing to $work/out with that variant's filters.
config() {
  local filters="" chain=""
  case "$1" in
    none) ;;
    rust) chain='"warn"' ;;
    rust+enricher) chain='"warn", "team"' ;;
    python) chain='"redact"' ;;
  esac
  cat <<EOF
cluster = "bench"
[source]
api = "both"
startup = "all"

[wasm]
cache_dir = "$EC_CACHE/wasm"

[[filters]]
name = "warn"
module = "$root/filters/rust-warning-only/rust-warning-only.wasm"
[[filters]]
name = "team"
module = "$root/filters/rust-enrich-team/rust-enrich-team.wasm"
config = { teams = { demo = "platform", shop = "web-shop" }, default_team = "unowned" }
[[filters]]
name = "redact"
module = "$root/filters/python-redact/python-redact.wasm"
timeout = "100ms"

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

# run VARIANT: one replay; prints "events wall_s cpu_s max_rss_kib".
run_once() {
  rm -rf "$work/out"
  config "$1" > "$work/c.toml"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
    "$bin" --config "$work/c.toml" run --replay "$corpus" 2> "$work/log" >/dev/null \
    || { cat "$work/log" >&2; return 1; }
  local written
  written=$(cat "$work"/out/* 2>/dev/null | wc -l)
  read -r wall user sys rss < "$work/time"
  echo "$written $wall $(echo "$user + $sys" | bc -l) $rss"
}

# stats: median and min–max of stdin numbers.
stats() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", m, a[1], a[NR]}'; }

table="$work/table.md"
{
  echo "| variant | events out | events/s (median, min–max) | CPU µs/event (median) | CPU s per 1M events | peak RSS MiB (median) |"
  echo "|---|---|---|---|---|---|"
} > "$table"
for v in none rust rust+enricher python; do
  : > "$work/runs"
  for _ in $(seq "$runs"); do run_once "$v" >> "$work/runs"; done
  out=$(awk 'NR==1{print $1}' "$work/runs")
  rate=$(awk -v n="$lines" '{print n/$2}' "$work/runs" | stats)
  cpu=$(awk -v n="$lines" '{print $3*1e6/n}' "$work/runs" | stats)
  rss=$(awk '{print $4/1024}' "$work/runs" | stats)
  read -r rmed rmin rmax <<< "$rate"
  read -r cmed _ _ <<< "$cpu"
  read -r mmed _ _ <<< "$rss"
  printf '| %s | %s | %.0f (%.0f–%.0f) | %.2f | %.1f | %.1f |\n' \
    "$v" "$out" "$rmed" "$rmin" "$rmax" "$cmed" "$cmed" "$mmed" >> "$table"
  log "$v done"
done
cat "$table"

if [ "$smoke" = 1 ]; then
  # The harness works if every variant ran and wrote events; the figures of a debug build mean nothing.
  awk -F'|' 'NR>2 && $3+0 == 0 {bad=1} END {exit bad}' "$table" || { echo "a variant wrote no events" >&2; exit 1; }
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
  echo "- \"events out\": events written (the Warning-only filter drops the Normal ones)"
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
