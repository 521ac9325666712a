#!/usr/bin/env bash
# Builds js-drop-noisy.wasm (a component, ~12 MB: the StarlingMonkey JS engine
# inside) next to this script with componentize-js.
#
# The http and fetch-event features are disabled, so the component does not
# import wasi:http. With EC_MINIMAL_WASI=1, stdio, random and clocks are
# disabled too and the component imports nothing but the host interface (then
# console.log, Math.random and Date.now must not be used).
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need componentize-js
disable=(http fetch-event)
[ "${EC_MINIMAL_WASI:-0}" = 1 ] && disable+=(stdio random clocks)
componentize-js filter.js -w ../../guest-sdk/wit/compat/0.2.0 -n event-filter -d "${disable[@]}" -o js-drop-noisy.wasm >/dev/null
