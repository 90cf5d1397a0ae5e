#!/usr/bin/env bash
# Installs the Debian packages crossvisor's real parts need (idempotent; root on Debian 12).
# Skips apt entirely when every package is already present, so repeat runs cost ~1 s.
set -euo pipefail
PKGS=(
  redis-server prometheus
  golang-go golang-github-vmware-govmomi-dev
  libvirt-dev pkg-config qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
  busybox-static cpio
  ovmf debootstrap dosfstools fdisk
  libpq-dev postgresql-15 gcc curl
  # a second libvirt host in namespaces (deploy/libvirt/remote-up.sh, tests/remote): SASL, PKI, netns, sshd
  # (the tests run their own sshd in that namespace; where an init system runs, Debian also starts
  # its own sshd on port 22 when openssh-server is installed, as it always does)
  sasl2-bin libsasl2-modules openssl iproute2 util-linux openssh-server
)
# Heavy extras, opt-in: virt-v2v path and browser report test.
if [[ "${CROSSVISOR_FULL:-0}" == 1 ]]; then
  PKGS+=(virt-v2v libguestfs-tools nbdkit libnbd-bin chromium debootstrap)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-system: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
