#!/usr/bin/env bash
# Builds every example WASM filter: runs filters/<name>/build.sh for each
# folder that has one, which writes filters/<name>/<name>.wasm (gitignored).
# A filter whose .wasm is newer than all its sources (its folder minus test
# vectors and docs, the WIT contract, and for Rust the guest SDK) is skipped;
# --force rebuilds all.
#
#   dev_setup/build-filters.sh [--force] [NAME...]
#
# Needs the toolchains of dev_setup/install-wasm-toolchains.sh (run it first;
# afterwards builds work offline). Fails with the filter's name on the first
# error. Then: `node filters/conformance/run.mjs all` runs every filter's
# test vectors.
set -euo pipefail
. "$(dirname "$0")/common.sh"
root="$(cd "$(dirname "$0")/.." && pwd)"
filters="$root/filters"

force=0
names=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) names+=("$a") ;;
  esac
done
if [ ${#names[@]} -eq 0 ]; then
  for d in "$filters"/*/; do
    [ -x "$d/build.sh" ] && names+=("$(basename "$d")")
  done
fi

# up_to_date NAME: the output exists and no source is newer.
up_to_date() {
  local dir="$filters/$1" out="$filters/$1/$1.wasm"
  [ -f "$out" ] || return 1
  local srcs=("$dir" "$root/guest-sdk/wit" "$filters/env.sh")
  [ -f "$dir/Cargo.toml" ] && srcs+=("$root/guest-sdk/src" "$root/guest-sdk/macros" "$root/guest-sdk/Cargo.toml")
  [ -z "$(find "${srcs[@]}" \( -name build -o -name target -o -name node_modules \) -prune -o \
           -type f ! -name '*.wasm' ! -name '*.jsonl' ! -name '*.config.json' ! -name expect.json ! -name '*.md' \
           -newer "$out" -print -quit)" ]
}

t0=$SECONDS
built=0
skipped=0
for name in "${names[@]}"; do
  script="$filters/$name/build.sh"
  [ -x "$script" ] || { log "no such filter: $name (no executable filters/$name/build.sh)"; exit 1; }
  if [ "$force" = 0 ] && up_to_date "$name"; then
    log "$name: up to date"
    skipped=$((skipped + 1))
    continue
  fi
  log "$name: building"
  t=$SECONDS
  if ! "$script"; then
    log "FAILED to build filter '$name' (filters/$name/build.sh)"
    exit 1
  fi
  out="$filters/$name/$name.wasm"
  [ -f "$out" ] || { log "FAILED: filter '$name': build.sh succeeded but wrote no $out"; exit 1; }
  touch "$out"  # newer than everything it was built from, even if the tool kept an old mtime
  log "$name: $(du -h "$out" | cut -f1) in $((SECONDS - t)) s"
  built=$((built + 1))
done
log "filters: $built built, $skipped up to date, in $((SECONDS - t0)) s"
