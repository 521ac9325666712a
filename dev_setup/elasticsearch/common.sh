# shellcheck shell=bash
# Sourced by the scripts in this folder; never run. They do by hand what the
# exporter does at startup (template = true, lifecycle = true), for clusters
# whose indices are managed outside the collector (then set template = false
# and lifecycle = false in the exporter).
#
# Settings, from the environment:
#   ES_URL                  the server (default http://localhost:9200)
#   ES_USER, ES_PASSWORD_FILE   basic auth, or
#   ES_API_KEY_FILE         an API key (the base64 "encoded" form), or
#   ES_BEARER_TOKEN_FILE    a bearer token
#   ES_CACERT               a CA file for https; ES_INSECURE=1 skips verification
#   NAME                    template, policy, alias and data stream name (default k8s-events)
# The JSON files here are exactly what the exporter sends for the default
# config (a unit test keeps them in sync); NAME replaces "k8s-events" in them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ES_URL="${ES_URL:-http://localhost:9200}"
ES_URL="${ES_URL%/}"
NAME="${NAME:-k8s-events}"

log() { printf '[es-setup] %s\n' "$*" >&2; }

curl_args=(-sS --max-time 30)
if [ -n "${ES_USER:-}" ]; then
  [ -n "${ES_PASSWORD_FILE:-}" ] || { log "ES_USER needs ES_PASSWORD_FILE"; exit 2; }
  curl_args+=(-u "$ES_USER:$(tr -d '\r\n' <"$ES_PASSWORD_FILE")")
elif [ -n "${ES_API_KEY_FILE:-}" ]; then
  curl_args+=(-H "Authorization: ApiKey $(tr -d '\r\n' <"$ES_API_KEY_FILE")")
elif [ -n "${ES_BEARER_TOKEN_FILE:-}" ]; then
  curl_args+=(-H "Authorization: Bearer $(tr -d '\r\n' <"$ES_BEARER_TOKEN_FILE")")
fi
[ -n "${ES_CACERT:-}" ] && curl_args+=(--cacert "$ES_CACERT")
[ "${ES_INSECURE:-0}" = 1 ] && curl_args+=(-k)

# body FILE: the file with "k8s-events" replaced by $NAME.
body() { sed "s/k8s-events/$NAME/g" "$here/$1"; }

# es METHOD PATH [FILE]: one request; prints the answer; fails on HTTP >= 400.
# The status goes to $ES_STATUS.
es() {
  local method=$1 path=$2 file=${3:-} out
  out="$(mktemp)"
  if [ -n "$file" ]; then
    ES_STATUS="$(body "$file" | curl "${curl_args[@]}" -o "$out" -w '%{http_code}' -X "$method" \
      -H 'Content-Type: application/json' --data-binary @- "$ES_URL$path")"
  else
    ES_STATUS="$(curl "${curl_args[@]}" -o "$out" -w '%{http_code}' -X "$method" "$ES_URL$path")"
  fi
  cat "$out"; echo
  rm -f "$out"
  [ "$ES_STATUS" -lt 400 ]
}

# flavor: "opensearch" or "elasticsearch", from GET /.
flavor() {
  local root
  root="$(curl "${curl_args[@]}" -f "$ES_URL/")" || { log "GET $ES_URL/ failed"; exit 1; }
  if printf '%s' "$root" | grep -q '"distribution" *: *"opensearch"'; then echo opensearch; else echo elasticsearch; fi
}

# mode_arg MODE: validates index | alias | data_stream.
mode_arg() {
  case "${1:-index}" in
    index | alias | data_stream) echo "${1:-index}" ;;
    *) log "MODE must be index, alias or data_stream (as the exporter's \`mode\`)"; exit 2 ;;
  esac
}
