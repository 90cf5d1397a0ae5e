#!/usr/bin/env bash
# Builds deploy/vcsim/main.go against Debian's govmomi (GOPATH mode, no network) and caches the
# binary under ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/vcsim/<hash>/vcsim, keyed by the
# source, the Go version and the govmomi package version. Prints the binary path. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/vcsim"
gopath=/usr/share/gocode
if [[ ! -d "$gopath/src/github.com/vmware/govmomi/simulator" ]] || ! command -v go >/dev/null; then
  echo "build-vcsim: needs golang-go and golang-github-vmware-govmomi-dev (deploy/install-system.sh)" >&2
  exit 2
fi
govmomi_ver="$(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown)"
key="$( { cat "$here/main.go" "$here/build-vcsim.sh"; go version; echo "$govmomi_ver"; } | sha256sum | cut -c1-16)"
out="$cache/$key/vcsim"
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/$key"
tmp="$(mktemp -d "$cache/$key/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# GOCACHE inside the crossvisor cache so repeated builds of other keys reuse compiled packages.
GO111MODULE=off GOPATH="$gopath" GOCACHE="$cache/gocache" \
  go build -o "$tmp/vcsim" "$here/main.go" >&2
mv "$tmp/vcsim" "$out" # atomic: a concurrent build never sees a half-written binary
echo "$out"
