# Shared settings for the dev_setup scripts: the cache folder outside the repo
# and small helpers. Sourced, never run.
EC_CACHE="${EVENT_COLLECTOR_CACHE:-$HOME/.cache/event-collector}"
EC_BIN="$EC_CACHE/bin"
mkdir -p "$EC_BIN"

log() { printf '[dev_setup] %s\n' "$*" >&2; }

# apt_install PKG...: installs only the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ ! -f "$EC_CACHE/.apt-updated" ] || [ -n "$(find "$EC_CACHE/.apt-updated" -mmin +1440 2>/dev/null)" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && touch "$EC_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# free_port: prints a TCP port on 127.0.0.1 that nobody listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for CMD...: retries CMD for up to $WAIT_SECS (default 60) seconds.
wait_for() {
  local secs="${WAIT_SECS:-60}" i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -ge $((secs * 5)) ] && return 1
    sleep 0.2
  done
}
