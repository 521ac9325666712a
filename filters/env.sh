# Sourced by every filters/*/build.sh (and handy in a shell: `. filters/env.sh`):
# puts the toolchains that dev_setup/install-wasm-toolchains.sh installed in
# $EC_CACHE on PATH, and shares one cargo target dir between the Rust guests.
_ec_filters_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$_ec_filters_dir/../dev_setup/common.sh"
EC_FILTERS="$_ec_filters_dir"
EC_NODE_WASM="$EC_CACHE/node-wasm"
EC_VENV_WASM="$EC_CACHE/venv-wasm"
export PATH="$EC_CACHE/cargo-tools/bin:$EC_VENV_WASM/bin:$EC_NODE_WASM/node_modules/.bin:$PATH"
# One target dir for all Rust guests: the SDK and its deps compile once.
export CARGO_TARGET_DIR="${EC_WASM_TARGET_DIR:-$EC_CACHE/wasm-target}"
unset _ec_filters_dir

# need TOOL...: fails with a hint when a toolchain is missing.
need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || {
      echo "missing '$t': run dev_setup/install-wasm-toolchains.sh first" >&2
      return 1
    }
  done
}
