#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs the two search-server emulators the Elasticsearch exporter is tested
# against, from PyPI into a venv outside the repo ($EC_CACHE/es-venv), once per
# machine, and links their bundled binaries into $EC_BIN:
#   osmem-server==0.1.6  an in-memory OpenSearch 3 API      -> $EC_BIN/osmem-server
#   noida-db==0.2.3      an Elasticsearch 8 API (persisted) -> $EC_BIN/noida-db
# A second run does nothing.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

OSMEM_VERSION=0.1.6
NOIDA_VERSION=0.2.3
venv="$EC_CACHE/es-venv"
stamp="$venv/.installed-osmem-$OSMEM_VERSION-noida-$NOIDA_VERSION"

if [ -f "$stamp" ] && [ -x "$EC_BIN/osmem-server" ] && [ -x "$EC_BIN/noida-db" ]; then
  log "search emulators already installed: $EC_BIN/osmem-server, $EC_BIN/noida-db"
  exit 0
fi

command -v python3 >/dev/null || apt_install python3
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
fi
log "installing osmem-server==$OSMEM_VERSION and noida-db==$NOIDA_VERSION into $venv"
"$venv/bin/pip" install -q --disable-pip-version-check "osmem-server==$OSMEM_VERSION" "noida-db==$NOIDA_VERSION" >&2

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
osmem="$site/osmem_server/bin/osmem-server"
noida="$site/noida_db/noida-db"
for b in "$osmem" "$noida"; do
  [ -f "$b" ] || { log "expected binary missing: $b"; exit 1; }
  chmod +x "$b"
done
# The wheels' own launchers only exec these binaries; link them directly so
# that a server's pid is the server itself.
ln -sfn "$osmem" "$EC_BIN/osmem-server"
ln -sfn "$noida" "$EC_BIN/noida-db"
"$EC_BIN/osmem-server" -version >&2
touch "$stamp"
log "search emulators ready: $EC_BIN/osmem-server, $EC_BIN/noida-db"
