#!/usr/bin/env bash
# Builds a real kube-apiserver from Debian bookworm's `kubernetes` source
# package (once per machine) and installs etcd-server. The binary is cached in
# $EC_CACHE/bin/kube-apiserver; a second run does nothing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

apt_install golang-go dpkg-dev rsync etcd-server golang-github-modern-go-reflect2-dev openssl ca-certificates

if [ -x "$EC_BIN/kube-apiserver" ]; then
  log "kube-apiserver already built: $EC_BIN/kube-apiserver"
  exit 0
fi

work="$EC_CACHE/kube-src"
mkdir -p "$work/apt/sources" "$work/apt/lists/partial"
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$work/apt/sources/debian.sources"
aptopts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/sources" -o "Dir::State::Lists=$work/apt/lists")
src="$work/kubernetes-1.20.5+really1.20.2"
if [ ! -d "$src" ]; then
  log "fetching the kubernetes source package"
  apt-get "${aptopts[@]}" update -qq >&2
  (cd "$work" && apt-get "${aptopts[@]}" source -qq kubernetes >&2)
fi

# Go 1.19 with the vendored reflect2 1.0.1 panics on list decoding: use Debian's.
rm -rf "$src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"

log "building kube-apiserver (about 10 minutes, once per machine)"
cd "$src"
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
GOPATH="$PWD/.go" CGO_ENABLED=0 GOFLAGS= make WHAT=cmd/kube-apiserver >&2
built=$(find "$src/_output" -type f -name kube-apiserver -perm -u+x | head -n1)
[ -n "$built" ] || { log "build produced no kube-apiserver binary"; exit 1; }
install -m 0755 "$built" "$EC_BIN/kube-apiserver.tmp" && mv "$EC_BIN/kube-apiserver.tmp" "$EC_BIN/kube-apiserver"
log "kube-apiserver ready: $EC_BIN/kube-apiserver"
