#!/usr/bin/env bash
# Builds c-reason-allowlist.wasm (a component) next to this script:
#   wit-bindgen c        -> bindings (build/event_filter.{c,h}, the component type object)
#   clang (wasm32-wasi)  -> a core module, linked with wasi-libc for malloc/string
#                           functions, which import nothing from WASI
#   wasm-tools component new -> the component (no WASI adapter needed)
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need clang wasm-ld wit-bindgen wasm-tools
mkdir -p build
out=$(wit-bindgen c ../../guest-sdk/wit/compat/0.2.0 --world event-filter --out-dir build 2>&1) || { echo "$out" >&2; exit 1; }
# Debian's wasi-libc lives in /usr/{include,lib}/wasm32-wasi: --sysroot=/usr.
# -nostartfiles/--no-entry: no crt1, no _start/_initialize; the C code has no
# constructors, and wasi-libc's malloc needs no initialization.
clang --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -Werror -Wno-unused-parameter \
  -mexec-model=reactor -nostartfiles -Wl,--no-entry -Wl,--strip-debug \
  -Ibuild -o build/core.wasm filter.c build/event_filter.c build/event_filter_component_type.o
if wasm-tools print build/core.wasm | grep -q '(import "wasi_snapshot_preview1"'; then
  echo "c-reason-allowlist: the core module imports WASI; remove the call or add an adapter" >&2
  wasm-tools print build/core.wasm | grep '(import' >&2
  exit 1
fi
wasm-tools component new build/core.wasm -o c-reason-allowlist.wasm
