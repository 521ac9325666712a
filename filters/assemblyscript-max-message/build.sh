#!/usr/bin/env bash
# Builds assemblyscript-max-message.wasm (a core module for the core-module
# ABI) next to this script with asc (asconfig.json holds the options).
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need asc
asc assembly/index.ts --config asconfig.json --target release
