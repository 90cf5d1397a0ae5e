#!/usr/bin/env bash
# A second libvirt host on this machine that shares nothing with the worker but a network link:
# its own network namespace (a veth pair, addresses of our choosing), its own mount namespace
# (private /run/libvirt, /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and
# /etc/sasl2), and a libvirtd that listens only on the namespace's veth address:
#   - TCP with SASL DIGEST-MD5 (username/password; DIGEST-MD5 gives the session the security
#     layer libvirt demands on plain TCP), always;
#   - TLS with client certificates (key-based, no password), when CV_REMOTE_TLS_DIR holds
#     cacert.pem, servercert.pem and serverkey.pem (deploy/libvirt/remote-pki.sh makes them).
# Files under its /var/lib/libvirt (storage pools, domain state) do not exist for processes outside:
# a worker can only reach them through libvirt's API.
#
# Environment (defaults in brackets):
#   CV_REMOTE_DIR        state dir, required: configs, pid files, logs, the SASL database
#   CV_REMOTE_NS         network namespace name [crossvisor-remote]
#   CV_REMOTE_VETH       veth name stem, <= 12 chars [cvremote]; ends <stem>h (here) and <stem>n (inside)
#   CV_REMOTE_HOST_ADDR  this end of the veth [10.231.0.1]
#   CV_REMOTE_ADDR       the host's end, the only address libvirtd listens on [10.231.0.2]
#   CV_REMOTE_TCP_PORT   [16599]      CV_REMOTE_TLS_PORT [16514]
#   CV_REMOTE_SASL_USER  [crossvisor]; the password is read from stdin (never an argument)
#   CV_REMOTE_TLS_DIR    optional, see above; CV_REMOTE_TLS_CLIENT_DN the client DN allowed
#
# Prints "REMOTE_PID=<libvirtd pid>" when libvirtd accepts connections. Stop with remote-down.sh
# (same environment). Needs root, iproute2, util-linux, libvirt-daemon-system, sasl2-bin.
set -euo pipefail
dir="${CV_REMOTE_DIR:?set CV_REMOTE_DIR}"
ns="${CV_REMOTE_NS:-crossvisor-remote}"
stem="${CV_REMOTE_VETH:-cvremote}"
host_addr="${CV_REMOTE_HOST_ADDR:-10.231.0.1}"
addr="${CV_REMOTE_ADDR:-10.231.0.2}"
tcp_port="${CV_REMOTE_TCP_PORT:-16599}"
tls_port="${CV_REMOTE_TLS_PORT:-16514}"
user="${CV_REMOTE_SASL_USER:-crossvisor}"
tls_dir="${CV_REMOTE_TLS_DIR:-}"
vh="${stem}h"
vn="${stem}n"

for tool in ip unshare nsenter libvirtd virtlogd saslpasswd2; do
  command -v "$tool" >/dev/null || { echo "remote-up: $tool missing (deploy/install-system.sh)" >&2; exit 2; }
done
if ip netns list | grep -qw "$ns"; then
  echo "remote-up: network namespace $ns exists already (remote-down.sh first)" >&2
  exit 1
fi
# the addresses must be ours alone: refuse to shadow an address something else already uses
if ip -o addr show | grep -qE " (${host_addr//./\\.}|${addr//./\\.})/"; then
  echo "remote-up: $host_addr or $addr is already configured on this machine; pick others (CV_REMOTE_*ADDR)" >&2
  exit 1
fi

password="$(cat)"
[[ -n "$password" ]] || { echo "remote-up: no SASL password on stdin" >&2; exit 2; }

mkdir -p "$dir/etc-libvirt" "$dir/sasl2" "$dir/log"
chmod 700 "$dir"
# the host's QEMU and virtlogd settings, but none of its domains, networks or pools
cp /etc/libvirt/qemu.conf /etc/libvirt/virtlogd.conf "$dir/etc-libvirt/"
cat >"$dir/sasl2/libvirt.conf" <<EOF
mech_list: digest-md5
sasldb_path: $dir/passwd.db
EOF
rm -f "$dir/passwd.db"
printf '%s' "$password" | saslpasswd2 -a libvirt -f "$dir/passwd.db" -p -c "$user"
chmod 600 "$dir/passwd.db"

{
  echo "listen_addr = \"$addr\""
  echo "listen_tcp = 1"
  echo "tcp_port = \"$tcp_port\""
  echo "auth_tcp = \"sasl\""
  echo "auth_unix_rw = \"none\""
  if [[ -n "$tls_dir" ]]; then
    echo "listen_tls = 1"
    echo "tls_port = \"$tls_port\""
    echo "auth_tls = \"none\""  # the client certificate is the credential
    echo "ca_file = \"$tls_dir/cacert.pem\""
    echo "cert_file = \"$tls_dir/servercert.pem\""
    echo "key_file = \"$tls_dir/serverkey.pem\""
    echo "tls_no_verify_certificate = 0"
    [[ -n "${CV_REMOTE_TLS_CLIENT_DN:-}" ]] && echo "tls_allowed_dn_list = [\"$CV_REMOTE_TLS_CLIENT_DN\"]"
  else
    echo "listen_tls = 0"
  fi
  echo "log_outputs = \"3:file:$dir/log/libvirtd.log\""
} >"$dir/libvirtd.conf"

ip netns add "$ns"
ip link add "$vh" type veth peer name "$vn"
ip link set "$vn" netns "$ns"
ip addr add "$host_addr/30" dev "$vh"
ip link set "$vh" up
ip netns exec "$ns" ip addr add "$addr/30" dev "$vn"
ip netns exec "$ns" ip link set "$vn" up
ip netns exec "$ns" ip link set lo up

rm -f "$dir/libvirtd.pid" "$dir/virtlogd.pid"
# the daemons keep the mount namespace alive after this shell exits
ip netns exec "$ns" unshare -m --propagation private bash -euo pipefail -c '
  dir="$1"
  for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=0755 tmpfs "$d"
  done
  mount --bind "$dir/etc-libvirt" /etc/libvirt
  mkdir -p /etc/sasl2
  mount --bind "$dir/sasl2" /etc/sasl2
  mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu/nvram
  LIBVIRT_LOG_OUTPUTS="3:file:$dir/log/virtlogd.log" virtlogd -d -p "$dir/virtlogd.pid"
  libvirtd -d --listen -f "$dir/libvirtd.conf" -p "$dir/libvirtd.pid"
' remote-up "$dir"

# libvirtd -d returns before it listens
for _ in $(seq 1 150); do
  if [[ -s "$dir/libvirtd.pid" ]] && timeout 1 bash -c "</dev/tcp/$addr/$tcp_port" 2>/dev/null; then
    echo "REMOTE_PID=$(cat "$dir/libvirtd.pid")"
    exit 0
  fi
  sleep 0.1
done
echo "remote-up: libvirtd not listening on $addr:$tcp_port after 15 s; see $dir/log/libvirtd.log" >&2
exit 1
