#!/usr/bin/env bash
# Makes, in DIR, a CA (ca.pem), a certificate for each member naming its IP address (member-IP.pem,
# member-IP-key.pem; used both towards clients and towards the other members) and a client certificate
# (client.pem, client-key.pem). For a test or a first try: in production, use your own CA and keep ca-key.pem safe.
# Usage: make-certs.sh DIR IP...
set -euo pipefail
dir=$1
shift
mkdir -p "$dir"
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 365 -subj "/CN=skiff-ca" -keyout ca-key.pem -out ca.pem 2>/dev/null
sign() { # name, extensions
  openssl req "${ec[@]}" -subj "/CN=$1" -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -out "$1.pem" \
    -extfile <(printf '%s\n' "$2") 2>/dev/null
  rm "$1.csr"
}
for ip in "$@"; do
  sign "member-$ip" "subjectAltName=IP:$ip
extendedKeyUsage=serverAuth,clientAuth"
done
sign client "extendedKeyUsage=clientAuth"
