#!/usr/bin/env bash
# Builds rust-warning-only.wasm (a wasm32-wasip2 component) next to this script.
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need cargo
cargo build --release --locked --target wasm32-wasip2 --quiet
cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/rust_warning_only.wasm" rust-warning-only.wasm
