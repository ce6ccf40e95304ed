#!/usr/bin/env bash
# Makes a CA, a server certificate (for 127.0.0.1 and localhost, or the names given) and a
# client certificate signed by it, for a Docker API behind TLS client certificates:
#
#   examples/swarm-socat/make-certs.sh DIR [SAN ...]     e.g. ... ./certs IP:10.0.0.5 DNS:manager1
#
# DIR gets ca.pem (give it to both ends), server-cert.pem + server-key.pem (the API side: socat
# or dockerd --tlsverify) and cert.pem + key.pem (the client: the router's --swarm.tls-*).
# Keys are unencrypted: keep DIR private. Valid 30 days. Needs openssl.
set -euo pipefail
dir=${1:?usage: $0 DIR [SAN ...]}
shift
sans="IP:127.0.0.1,DNS:localhost"
for s in "$@"; do sans+=",$s"; done
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=switchyard-api-ca \
    -keyout ca-key.pem -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=docker-api -keyout server-key.pem -out server.csr
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans" >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
    -extfile server.ext -out server-cert.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=switchyard -keyout key.pem -out client.csr
printf 'extendedKeyUsage=clientAuth\n' >client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
    -extfile client.ext -out cert.pem
rm -f ./*.csr ./*.ext ca.srl
# Readable by the containers' users (Swarm secrets keep their own modes).
chmod 0644 ./*.pem
