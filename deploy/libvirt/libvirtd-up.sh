#!/usr/bin/env bash
# Starts virtlogd + libvirtd by hand (no systemd here) for qemu:///system, idempotently.
# A daemon that already answers is left alone and not recorded, so libvirtd-down.sh only ever stops
# what this script started (PID files under $CROSSVISOR_LIBVIRT_RUN, default /run/crossvisor-libvirt).
#
# No storage pool or network is defined: test domains use file paths for disks and user-mode
# networking (<interface type='user'>), which needs no bridge, dnsmasq or libvirt network.
set -euo pipefail
run="${CROSSVISOR_LIBVIRT_RUN:-/run/crossvisor-libvirt}"
uri="qemu:///system"
mkdir -p "$run"

answers() { virsh -c "$uri" version >/dev/null 2>&1; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if answers; then
  echo "libvirtd-up: $uri already answers" >&2
  exit 0
fi
command -v libvirtd >/dev/null || { echo "libvirtd-up: libvirtd missing (deploy/install-system.sh)" >&2; exit 1; }

# /dev/kvm as Debian's udev rule leaves it (GROUP="kvm", MODE="0660"), where no udev ran. Without
# it libvirt's QEMU user cannot open the node while its capability probe (run as root) saw KVM, so
# libvirt judged its cached QEMU capabilities stale on every call and probed QEMU again: every
# domain define took 7-15 s (minutes under load) instead of ~0.01 s. Domains stay type='qemu' (TCG).
if [[ -c /dev/kvm ]] && getent group kvm >/dev/null && [[ "$(stat -c %G /dev/kvm)" != kvm ]]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# libvirtd hands QEMU's stdout/stderr to virtlogd; without it domains fail to start. Both start under
# subreaper.py, which reaps the orphans they leave (see there: where PID 1 does not reap, libvirtd
# waited on zombie QEMU probes for 20 s to minutes on every define).
# A virtlogd is "there" when its socket answers, not when a process of that name exists: the
# remote test host's virtlogd (tests/remote, its own mount namespace and /run/libvirt) has the
# name too, and seeing it this script once left this host without one (every domain start failed).
virtlogd_answers() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])' \
    /run/libvirt/virtlogd-sock 2>/dev/null
}
start=""
if ! virtlogd_answers; then
  start+="LIBVIRT_LOG_OUTPUTS='3:file:$run/virtlogd.log' virtlogd -d -p '$run/virtlogd.pid'; "
fi
if ! alive "$run/libvirtd.pid"; then
  start+="LIBVIRT_LOG_OUTPUTS='3:file:$run/libvirtd.log' libvirtd -d -p '$run/libvirtd.pid'; "
fi
if [[ -n "$start" ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  setsid python3 "$here/subreaper.py" "$run/subreaper.pid" bash -c "$start" \
    </dev/null >>"$run/subreaper.log" 2>&1 &
fi

# libvirtd -d returns before the socket is up.
for _ in $(seq 1 100); do
  if answers; then
    echo "libvirtd-up: $uri ready" >&2
    exit 0
  fi
  sleep 0.1
done
echo "libvirtd-up: $uri not ready after 10 s; see $run/libvirtd.log" >&2
exit 1
