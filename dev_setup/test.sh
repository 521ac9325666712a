#!/usr/bin/env bash
# The one test command (README "Test it", and what CI runs): installs what the
# tests need (cached outside the repo, so a second run skips it), checks
# formatting and lints, then runs every unit and end-to-end test against real
# servers started on 127.0.0.1.
#   dev_setup/test.sh            everything
#   dev_setup/test.sh --no-lint  skip fmt and clippy
set -euo pipefail
cd "$(dirname "$0")/.."
. dev_setup/common.sh

lint=1
for a in "$@"; do
  case "$a" in
    --no-lint) lint=0 ;;
    *) echo "usage: dev_setup/test.sh [--no-lint]" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
step() { log "[$(( $(date +%s) - start ))s] $*"; }

# Build outputs live outside the checkout too, so a fresh clone (CI) reuses
# the compiled dependencies (wasmtime, kube, rdkafka, ...) of the last run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EC_CACHE/target}"

step "installing test servers and WASM toolchains (cached in $EC_CACHE)"
bash dev_setup/install-kube.sh
bash dev_setup/install-es.sh
bash dev_setup/install-kafka.sh
bash dev_setup/install-wasm-toolchains.sh
bash dev_setup/install-helm.sh
bash dev_setup/install-promtool.sh

step "building the example filters (six languages)"
bash dev_setup/build-filters.sh
step "conformance suite on Node.js (every example filter, and the contract modules)"
node filters/conformance/run.mjs all
node filters/conformance/run.mjs contract
step "guest SDK unit tests (natively: the edit builder, the JSON helpers)"
cargo test --manifest-path guest-sdk/Cargo.toml --workspace --locked --quiet
# The same vectors on the collector's wasmtime host (runtime/tests/conformance.rs): fail, don't skip, if one is missing.
export EC_REQUIRE_FILTERS=1

if [ "$lint" = 1 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test"
cargo test --workspace --locked -- --test-threads=2
step "pipeline benchmark, smoke run (debug build, 10,000 events; keeps dev_setup/bench.sh working)"
bash dev_setup/bench.sh --smoke
step "done"
