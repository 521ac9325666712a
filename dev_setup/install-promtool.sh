#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package) for the tests that check
# every PromQL expression of the alerting rules and the Grafana dashboard
# (tests/tests/manifests.rs). A second run does nothing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if command -v promtool >/dev/null; then
  log "promtool already installed: $(command -v promtool)"
  exit 0
fi
# The package's service is never started here: no init system runs it.
apt_install prometheus
command -v promtool >/dev/null || { log "the prometheus package installed no promtool"; exit 1; }
log "promtool ready: $(command -v promtool)"
