# shellcheck shell=bash
# Shared settings for the dev_setup scripts: the cache folder outside the repo
# and small helpers. Sourced, never run.
EC_CACHE="${EVENT_COLLECTOR_CACHE:-$HOME/.cache/event-collector}"
EC_BIN="$EC_CACHE/bin"
mkdir -p "$EC_BIN"

# LOG_TAG names the script in log lines (the generated restart-*.sh set their own).
log() { printf '[%s] %s\n' "${LOG_TAG:-dev_setup}" "$*" >&2; }

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

# env_get KEY FILE: the plain value of KEY in a KEY=value env file (numbers, paths).
env_get() { [ -f "$2" ] || return 0; sed -n "s/^$1=//p" "$2" | tail -n1; }

# kv KEY VALUE: one shell-sourceable line (value quoted only when it needs it).
kv() { printf '%s=%q\n' "$1" "$2"; }

# cmdline_has PID TEXT: PID is alive and its command line mentions TEXT (a
# folder or port of ours), so a recycled pid of another process is never
# taken for one of our daemons.
cmdline_has() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# alive PID TEXT: like cmdline_has, but a miss must last 1 s to count (a
# process in the middle of exec can briefly show an empty command line).
alive() {
  local _i
  for _i in 1 2 3 4 5; do cmdline_has "$1" "$2" && return 0; sleep 0.2; done
  return 1
}

# stop_daemon PID NAME TEXT [SIGNAL]: sends SIGNAL (default TERM) to PID if
# `cmdline_has PID TEXT`, SIGKILL after 10 s, and returns once it is gone.
stop_daemon() {
  local pid=$1 name=$2 text=$3 sig=${4:-TERM}
  cmdline_has "$pid" "$text" || return 0
  log "stopping $name (pid $pid, SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do cmdline_has "$pid" "$text" || return 0; sleep 0.2; done
  log "$name did not stop after 10 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 25); do cmdline_has "$pid" "$text" || return 0; sleep 0.2; done
  log "warning: $name (pid $pid) is still alive"
}

# spawn_daemon PIDFILE LOGFILE CMD...: starts CMD in a session of its own,
# detached from our stdio (fd 3 too), appending to LOGFILE; writes its pid to
# PIDFILE and prints it (empty if it did not start within 5 s).
spawn_daemon() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$/$0/$@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 3>&- &
  for _ in $(seq 25); do [ -s "$pidfile" ] && break; sleep 0.2; done
  cat "$pidfile" 2>/dev/null || true
}

# up_dir PREFIX [DIR]: sets `dir` to DIR (created, made absolute), or to a
# new `mktemp -d` folder named after PREFIX.
up_dir() {
  if [ -n "${2:-}" ]; then
    mkdir -p "$2"
    dir="$(cd "$2" && pwd)"
  else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/ec-$1.XXXXXX")"
  fi
}

# down_args HELP_LINES "$@": parses `[--keep] DIR` for a *-down.sh (DIR may
# be given as its *.env file): sets `keep` (0/1) and `dir` (absolute). `-h`
# prints HELP_LINES (a sed range of the caller's header) and exits; a DIR that
# does not exist means nothing to stop: exit 0.
# shellcheck disable=SC2034 # keep and dir are for the caller
down_args() {
  local help=$1
  shift
  keep=0
  dir=""
  for a in "$@"; do
    case "$a" in
      --keep) keep=1 ;;
      -h | --help) sed -n "${help}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      -*) log "unknown option $a"; exit 2 ;;
      *) [ -z "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }; dir="$a" ;;
    esac
  done
  [ -n "$dir" ] || { log "usage: $0 [--keep] DIR"; exit 2; }
  case "$dir" in *.env) dir="$(dirname "$dir")" ;; esac
  if [ ! -d "$dir" ]; then
    log "$dir does not exist: nothing to stop"
    exit 0
  fi
  dir="$(cd "$dir" && pwd)"
}
