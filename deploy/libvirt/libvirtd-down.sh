#!/usr/bin/env bash
# Stops the libvirtd/virtlogd that libvirtd-up.sh started (by PID file only), idempotently.
# Running domains are left to their QEMU processes; tests destroy their own domains first.
set -euo pipefail
run="${CROSSVISOR_LIBVIRT_RUN:-/run/crossvisor-libvirt}"

stop() {
  local pidf="$run/$1.pid" pid
  [[ -f "$pidf" ]] || return 0
  pid="$(cat "$pidf")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidf"
}
stop libvirtd
stop virtlogd
echo "libvirtd-down: stopped" >&2
