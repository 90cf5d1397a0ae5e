#!/usr/bin/env bash
# A throwaway PKI for libvirt's TLS transport: a CA, a server certificate for one address and a
# client certificate (the worker's key-based credential). Writes, under $1:
#   server/{cacert,servercert,serverkey}.pem   for remote-up.sh (CV_REMOTE_TLS_DIR=$1/server)
#   client/{cacert,clientcert,clientkey}.pem   libvirt's pkipath layout for the worker
# Usage: remote-pki.sh DIR SERVER_ADDRESS [CLIENT_CN]; prints the client DN libvirtd should allow.
set -euo pipefail
out="${1:?usage: remote-pki.sh DIR SERVER_ADDRESS [CLIENT_CN]}"
server="${2:?usage: remote-pki.sh DIR SERVER_ADDRESS [CLIENT_CN]}"
client_cn="${3:-crossvisor-worker}"
mkdir -p "$out/server" "$out/client" "$out/ca"
umask 077
cd "$out/ca"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=crossvisor test/CN=crossvisor test CA" \
  -keyout cakey.pem -out cacert.pem 2>/dev/null
san="IP:$server"
[[ "$server" =~ ^[0-9.]+$ ]] || san="DNS:$server"
openssl req -newkey rsa:2048 -nodes -subj "/O=crossvisor test/CN=$server" -keyout serverkey.pem -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA cacert.pem -CAkey cakey.pem -CAcreateserial -days 30 -out servercert.pem \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$san") 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/O=crossvisor test/CN=$client_cn" -keyout clientkey.pem -out client.csr 2>/dev/null
openssl x509 -req -in client.csr -CA cacert.pem -CAkey cakey.pem -CAcreateserial -days 30 -out clientcert.pem \
  -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n') 2>/dev/null
cp cacert.pem servercert.pem serverkey.pem "$out/server/"
cp cacert.pem clientcert.pem clientkey.pem "$out/client/"
# the DN as libvirt compares it (virt-pki-query-dn's form: the certificate's own order)
echo "O=crossvisor test,CN=$client_cn"
