#!/usr/bin/env bash
# Starts a real, throw-away Kubernetes control plane (etcd + kube-apiserver,
# no nodes, no controllers) on 127.0.0.1, on free ports, with all state in DIR.
#
#   dev_setup/cluster-up.sh [DIR]      (DIR defaults to a new mktemp -d)
#
# DIR gets: etcd/ (data), etcd.log, apiserver.log, pki/ (own CA + serving
# cert), sa.key/sa.pub, tokens.csv, admin.kubeconfig, collector.kubeconfig,
# cluster.env (KEY=value lines for tests), restart-apiserver.sh.
# The daemons outlive this script; stop them with dev_setup/cluster-down.sh DIR.
# ETCD_QUOTA_BYTES sets etcd's space quota (default 0: etcd's own, 2 GiB).
# The last stdout line is the path of DIR/cluster.env; everything else goes to
# stderr. Running it again on a live DIR just prints that path again; on a DIR
# kept by `cluster-down.sh --keep` it restarts the cluster with the same data,
# keys and tokens.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

# Only the final path goes to the real stdout (fd 3); fd 3 is closed for every
# child so that `$(cluster-up.sh)` does not wait for the daemons.
exec 3>&1 1>&2

case "${1:-}" in
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&3; exit 0 ;;
esac
[ $# -le 1 ] || { log "usage: $0 [DIR]"; exit 2; }

up_dir cluster "${1:-}"

CONTEXT=event-collector-dev

# --- small helpers ---------------------------------------------------------------

# pid_in_dir PID: PID is alive and its command line mentions $dir.
pid_in_dir() { cmdline_has "$1" "$dir"; }

# stop_pid PID NAME: SIGTERM, then SIGKILL after 10 s.
stop_pid() { stop_daemon "$1" "$2" "$dir"; }

tail_logs() {
  local f
  for f in "$dir/etcd.log" "$dir/apiserver.log"; do
    [ -s "$f" ] || continue
    log "---- last lines of $f ----"
    tail -n 30 "$f" >&2
  done
}

# --- already running? ----------------------------------------------------------
if [ -f "$dir/cluster.env" ]; then
  if pid_in_dir "$(env_get ETCD_PID "$dir/cluster.env")" &&
    pid_in_dir "$(env_get APISERVER_PID "$dir/cluster.env")"; then
    log "cluster in $dir is already running"
    echo "$dir/cluster.env" >&3
    exit 0
  fi
  log "restarting the stopped cluster kept in $dir (same data, keys and tokens)"
fi

# --- binaries ----------------------------------------------------------------
KUBE_APISERVER_BIN="$EC_BIN/kube-apiserver"
if [ ! -x "$KUBE_APISERVER_BIN" ]; then
  log "no $KUBE_APISERVER_BIN yet: running install-kube.sh (builds it once, ~10-20 min)"
  bash "$here/install-kube.sh" 3>&-
fi
command -v etcd >/dev/null || apt_install etcd-server
# etcdctl is only for tests that compact or inspect etcd; not fatal if missing.
command -v etcdctl >/dev/null || apt_install etcd-client 3>&- || log "warning: could not install etcd-client (etcdctl)"
ETCD_BIN="$(command -v etcd)"
ETCDCTL_BIN="$(command -v etcdctl || true)"
KUBECTL_BIN="$(command -v kubectl || true)"
[ -n "$KUBECTL_BIN" ] || { log "kubectl is needed (to apply RBAC)"; exit 1; }
for t in openssl curl python3 setsid; do
  command -v "$t" >/dev/null || { log "$t is needed"; exit 1; }
done

# --- cleanup on failure ---------------------------------------------------------
started_pids=()
ok=0
on_exit() {
  [ "$ok" = 1 ] && return 0
  log "cluster-up failed"
  tail_logs
  local i
  for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do stop_pid "${started_pids[$i]%%:*}" "${started_pids[$i]#*:}"; done
  log "state left in $dir for inspection (remove it with dev_setup/cluster-down.sh $dir)"
}
trap on_exit EXIT
set -E
trap 'log "error at line $LINENO: $BASH_COMMAND"' ERR

# --- keys, certificates, tokens (generated once per DIR) --------------------------
umask 077
mkdir -p "$dir/etcd" "$dir/certs" "$dir/pki"
pki="$dir/pki"
if [ ! -s "$pki/apiserver.crt" ]; then
  log "generating a CA and the apiserver serving certificate"
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=event-collector-dev-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  openssl req -new -nodes -newkey rsa:2048 -sha256 \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null
  cat >"$pki/apiserver.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  openssl x509 -req -sha256 -days 3650 -in "$pki/apiserver.csr" \
    -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl verify -CAfile "$pki/ca.crt" "$pki/apiserver.crt" >/dev/null
fi
if [ ! -s "$dir/sa.key" ]; then
  log "generating the service-account key pair"
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
fi
if [ ! -s "$dir/tokens.csv" ]; then
  openssl rand -hex 24 >"$dir/admin.token"
  openssl rand -hex 24 >"$dir/collector.token"
  {
    printf '%s,admin,admin,"system:masters"\n' "$(cat "$dir/admin.token")"
    printf '%s,event-collector,event-collector\n' "$(cat "$dir/collector.token")"
  } >"$dir/tokens.csv"
fi
ADMIN_TOKEN="$(cat "$dir/admin.token")"
COLLECTOR_TOKEN="$(cat "$dir/collector.token")"
umask 022

# --- etcd ------------------------------------------------------------------------
etcd_client_port="$(env_get ETCD_CLIENT_PORT "$dir/cluster.env")"
etcd_peer_port="$(env_get ETCD_PEER_PORT "$dir/cluster.env")"
etcd_pid=""
for attempt in 1 2 3 4 5; do
  if [ -z "$etcd_client_port" ] || [ "$attempt" -gt 1 ]; then
    etcd_client_port="$(free_port)"
    etcd_peer_port="$(free_port)"
    [ "$etcd_peer_port" != "$etcd_client_port" ] || etcd_peer_port="$(free_port)"
  fi
  ETCD_ENDPOINT="http://127.0.0.1:$etcd_client_port"
  peer="http://127.0.0.1:$etcd_peer_port"
  log "starting etcd on $ETCD_ENDPOINT (peer $peer)"
  : >"$dir/etcd.log"
  etcd_pid="$(spawn_daemon "$dir/etcd.pid" "$dir/etcd.log" \
    "$ETCD_BIN" --name default --data-dir "$dir/etcd" --quota-backend-bytes "${ETCD_QUOTA_BYTES:-0}" \
    --listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "default=$peer")"
  [ -n "$etcd_pid" ] && started_pids+=("$etcd_pid:etcd")
  for _ in $(seq 450); do
    alive "$etcd_pid" "$dir" || break
    curl -fsS --max-time 2 "$ETCD_ENDPOINT/health" >/dev/null 2>&1 && break 2
    sleep 0.2
  done
  if pid_in_dir "$etcd_pid"; then log "etcd did not get healthy in 90 s"; exit 1; fi
  if grep -q 'address already in use' "$dir/etcd.log"; then
    log "etcd port taken meanwhile, trying other ports"
    continue
  fi
  log "etcd exited"
  exit 1
done
pid_in_dir "$etcd_pid" || { log "etcd could not start"; exit 1; }

# --- kube-apiserver ------------------------------------------------------------------
APISERVER_URL=""
apiserver_port="$(env_get APISERVER_PORT "$dir/cluster.env")"

write_apiserver_args() {
  # One flag per line; restart-apiserver.sh starts the binary with exactly these.
  printf '%s\n' \
    "--etcd-servers=$ETCD_ENDPOINT" \
    "--bind-address=127.0.0.1" \
    "--secure-port=$apiserver_port" \
    "--advertise-address=127.0.0.1" \
    "--endpoint-reconciler-type=none" \
    "--cert-dir=$dir/certs" \
    "--tls-cert-file=$pki/apiserver.crt" \
    "--tls-private-key-file=$pki/apiserver.key" \
    "--token-auth-file=$dir/tokens.csv" \
    "--authorization-mode=RBAC" \
    "--service-account-issuer=https://kubernetes.default.svc" \
    "--service-account-key-file=$dir/sa.pub" \
    "--service-account-signing-key-file=$dir/sa.key" \
    "--service-cluster-ip-range=10.96.0.0/16" \
    "--insecure-port=0" \
    "--enable-priority-and-fairness=false" \
    "--event-ttl=1h" \
    >"$dir/apiserver.args"
}

write_restart_script() {
  {
    echo '#!/usr/bin/env bash'
    echo '# Generated by dev_setup/cluster-up.sh for the cluster in this folder.'
    echo '#   restart-apiserver.sh             stop kube-apiserver, start it again'
    echo '#   restart-apiserver.sh SECONDS     ... staying down SECONDS in between'
    echo '#   restart-apiserver.sh --stop      only stop it'
    echo '#   restart-apiserver.sh --start     only start it (if it is not running)'
    echo '# It starts with exactly the flags in apiserver.args (same port, same etcd),'
    echo '# waits for /readyz (WAIT_SECS, default 60) and updates APISERVER_PID in'
    echo '# cluster.env.'
    echo 'set -euo pipefail'
    kv dir "$dir"
    kv bin "$KUBE_APISERVER_BIN"
    kv url "https://127.0.0.1:$apiserver_port"
    echo 'LOG_TAG=restart-apiserver'
    printf '. %q\n' "$here/common.sh"
    cat <<'EOF'
pid_in_dir() { cmdline_has "$1" "$dir"; }
stop() { stop_daemon "$(cat "$dir/apiserver.pid" 2>/dev/null || true)" kube-apiserver "$dir"; }
start() {
  local pid args
  pid="$(cat "$dir/apiserver.pid" 2>/dev/null || true)"
  if pid_in_dir "$pid"; then log "already running (pid $pid)"; return 0; fi
  mapfile -t args <"$dir/apiserver.args"
  log "starting kube-apiserver on $url"
  pid="$(spawn_daemon "$dir/apiserver.pid" "$dir/apiserver.log" "$bin" "${args[@]}")"
  if [ -f "$dir/cluster.env" ]; then
    sed -i "s/^APISERVER_PID=.*/APISERVER_PID=$pid/" "$dir/cluster.env"
  fi
  for _ in $(seq $((${WAIT_SECS:-60} * 5))); do
    if ! alive "$pid" "$dir"; then
      log "kube-apiserver exited; last lines of $dir/apiserver.log:"
      tail -n 30 "$dir/apiserver.log" >&2
      return 1
    fi
    if curl -fsS --max-time 2 --cacert "$dir/pki/ca.crt" \
      -H "Authorization: Bearer $(cat "$dir/admin.token")" "$url/readyz" >/dev/null 2>&1; then
      log "kube-apiserver ready (pid $pid)"
      return 0
    fi
    sleep 0.2
  done
  log "kube-apiserver not ready after ${WAIT_SECS:-60} s; last lines of $dir/apiserver.log:"
  tail -n 30 "$dir/apiserver.log" >&2
  return 1
}
case "${1:-}" in
  --stop) stop ;;
  --start) start ;;
  "") stop; start ;;
  *[!0-9]*) log "usage: $0 [SECONDS_DOWN | --stop | --start]"; exit 2 ;;
  *) stop; sleep "$1"; start ;;
esac
EOF
  } >"$dir/restart-apiserver.sh"
  chmod +x "$dir/restart-apiserver.sh"
}

apiserver_pid=""
for attempt in 1 2 3 4 5; do
  if [ -z "$apiserver_port" ] || [ "$attempt" -gt 1 ]; then
    apiserver_port="$(free_port)"
  fi
  APISERVER_URL="https://127.0.0.1:$apiserver_port"
  write_apiserver_args
  write_restart_script
  : >"$dir/apiserver.log"
  rc=0
  "$dir/restart-apiserver.sh" --start 3>&- || rc=$?
  apiserver_pid="$(cat "$dir/apiserver.pid" 2>/dev/null || true)"
  [ -n "$apiserver_pid" ] && started_pids+=("$apiserver_pid:kube-apiserver")
  [ "$rc" = 0 ] && break
  if ! pid_in_dir "$apiserver_pid" && grep -q 'address already in use' "$dir/apiserver.log"; then
    log "apiserver port taken meanwhile, trying another port"
    continue
  fi
  exit 1
done
pid_in_dir "$apiserver_pid" || { log "kube-apiserver could not start"; exit 1; }

# --- kubeconfigs ---------------------------------------------------------------------
write_kubeconfig() { # FILE USER TOKEN
  umask 077
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: $CONTEXT
  context:
    cluster: $CONTEXT
    user: $2
    namespace: default
current-context: $CONTEXT
EOF
  umask 022
}
ADMIN_KUBECONFIG="$dir/admin.kubeconfig"
COLLECTOR_KUBECONFIG="$dir/collector.kubeconfig"
write_kubeconfig "$ADMIN_KUBECONFIG" admin "$ADMIN_TOKEN"
write_kubeconfig "$COLLECTOR_KUBECONFIG" event-collector "$COLLECTOR_TOKEN"

# --- RBAC for the collector --------------------------------------------------------
log "applying $here/rbac/collector-rbac.yaml"
"$KUBECTL_BIN" --kubeconfig "$ADMIN_KUBECONFIG" apply -f "$here/rbac/collector-rbac.yaml" >&2 3>&-

# --- cluster.env ---------------------------------------------------------------------
{
  echo "# Written by dev_setup/cluster-up.sh; sourceable by sh/bash. Stop: dev_setup/cluster-down.sh $dir"
  kv EC_CLUSTER_DIR "$dir"
  kv KUBE_CONTEXT "$CONTEXT"
  kv APISERVER_URL "$APISERVER_URL"
  kv APISERVER_PORT "$apiserver_port"
  kv APISERVER_PID "$apiserver_pid"
  kv APISERVER_LOG "$dir/apiserver.log"
  kv APISERVER_ARGS_FILE "$dir/apiserver.args"
  kv RESTART_APISERVER "$dir/restart-apiserver.sh"
  kv CA_CERT "$pki/ca.crt"
  kv ADMIN_KUBECONFIG "$ADMIN_KUBECONFIG"
  kv COLLECTOR_KUBECONFIG "$COLLECTOR_KUBECONFIG"
  kv ADMIN_TOKEN_FILE "$dir/admin.token"
  kv COLLECTOR_TOKEN_FILE "$dir/collector.token"
  kv COLLECTOR_USER event-collector
  kv ETCD_ENDPOINT "$ETCD_ENDPOINT"
  kv ETCD_CLIENT_PORT "$etcd_client_port"
  kv ETCD_PEER_PORT "$etcd_peer_port"
  kv ETCD_PID "$etcd_pid"
  kv ETCD_DATA_DIR "$dir/etcd"
  kv ETCD_LOG "$dir/etcd.log"
  kv ETCD_BIN "$ETCD_BIN"
  kv ETCDCTL_BIN "$ETCDCTL_BIN"
  kv KUBE_APISERVER_BIN "$KUBE_APISERVER_BIN"
  kv KUBECTL_BIN "$KUBECTL_BIN"
} >"$dir/cluster.env.tmp"
mv "$dir/cluster.env.tmp" "$dir/cluster.env"

ok=1
log "cluster ready: apiserver $APISERVER_URL (pid $apiserver_pid), etcd $ETCD_ENDPOINT (pid $etcd_pid)"
log "as admin:      export KUBECONFIG=$ADMIN_KUBECONFIG"
log "as collector:  export KUBECONFIG=$COLLECTOR_KUBECONFIG"
log "stop:          $here/cluster-down.sh $dir"
echo "$dir/cluster.env" >&3
