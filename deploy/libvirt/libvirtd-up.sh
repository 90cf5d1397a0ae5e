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

# libvirtd hands QEMU's stdout/stderr to virtlogd; without it domains fail to start.
if ! pgrep -x virtlogd >/dev/null; then
  LIBVIRT_LOG_OUTPUTS="3:file:$run/virtlogd.log" virtlogd -d -p "$run/virtlogd.pid"
fi
if ! alive "$run/libvirtd.pid"; then
  LIBVIRT_LOG_OUTPUTS="3:file:$run/libvirtd.log" libvirtd -d -p "$run/libvirtd.pid"
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
