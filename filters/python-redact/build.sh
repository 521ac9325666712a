#!/usr/bin/env bash
# Builds python-redact.wasm (a component, ~18 MB: CPython inside) next to this
# script with componentize-py. The app uses only the standard library.
#
# With EC_MINIMAL_WASI=1 every WASI import is replaced by a trapping stub
# (componentize-py --stub-wasi): the component imports nothing but the host
# interface, and print(), time, random and file access trap at run time.
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need componentize-py
stub=()
[ "${EC_MINIMAL_WASI:-0}" = 1 ] && stub=(--stub-wasi)
# The app's own folder only, not the build venv's site-packages.
unset VIRTUAL_ENV
componentize-py -q -d ../../guest-sdk/wit/compat/0.2.0 -w event-filter componentize app -p . "${stub[@]}" -o python-redact.wasm
