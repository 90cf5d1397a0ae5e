#!/usr/bin/env bash
# Stops the remote libvirt host remote-up.sh started (same environment): every process of its
# network namespace (libvirtd, virtlogd, the QEMU guests libvirtd left running), then the veth
# pair and the namespace. Idempotent; touches nothing that is not in that namespace.
set -euo pipefail
ns="${CV_REMOTE_NS:-crossvisor-remote}"
stem="${CV_REMOTE_VETH:-cvremote}"

if ip netns list | grep -qw "$ns"; then
  # only processes inside our namespace: the daemons and their guests, listed by the kernel
  pids="$(ip netns pids "$ns" || true)"
  if [[ -n "$pids" ]]; then
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      [[ -z "$(ip netns pids "$ns" 2>/dev/null)" ]] && break
      sleep 0.1
    done
    left="$(ip netns pids "$ns" 2>/dev/null || true)"
    [[ -n "$left" ]] && kill -9 $left 2>/dev/null || true
  fi
fi
ip link del "${stem}h" 2>/dev/null || true  # removes both ends
ip netns del "$ns" 2>/dev/null || true
echo "remote-down: $ns gone" >&2
