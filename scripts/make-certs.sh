#!/usr/bin/env bash
# Makes a test certificate authority and one certificate and key per node,
# for mutual TLS between NetTorrent nodes (the docs, the tests and a first
# real deployment; for production use a CA of your own).
#
# Usage: scripts/make-certs.sh DIR NODE [NODE ...]
#   DIR    output directory (created): ca.pem, ca-key.pem, and per node
#          NODE.pem (certificate, signed by the CA) and NODE-key.pem
#   NODE   node ids (as in the cluster description's nodes.ids); each becomes
#          the certificate's common name and a DNS name
# Environment: NETTORRENT_CERT_DAYS validity in days (default 365).
# Existing files are never overwritten: the script refuses and says which.
set -euo pipefail

me=make-certs
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 2; }

[[ $# -ge 2 ]] || die "usage: $0 DIR NODE [NODE ...]"
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
dir=$1
shift
days=${NETTORRENT_CERT_DAYS:-365}
[[ $days =~ ^[0-9]+$ && $days -ge 1 ]] || die "NETTORRENT_CERT_DAYS must be a positive number of days, not \"$days\""
for node in "$@"; do
  [[ $node =~ ^[A-Za-z0-9._-]+$ ]] || die "node id \"$node\" may hold only letters, digits, '.', '_' and '-'"
done
mkdir -p "$dir"
for f in ca.pem ca-key.pem; do
  [[ ! -e $dir/$f ]] || die "$dir/$f exists already; remove it or choose another directory"
done
for node in "$@"; do
  for f in "$node.pem" "$node-key.pem"; do
    [[ ! -e $dir/$f ]] || die "$dir/$f exists already; remove it or choose another directory"
  done
done

umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=NetTorrent test CA" \
  -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
for node in "$@"; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$node" \
    -keyout "$dir/$node-key.pem" -out "$dir/$node.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$node" > "$dir/$node.ext"
  openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -days "$days" -extfile "$dir/$node.ext" -out "$dir/$node.pem" 2>/dev/null
  rm -f "$dir/$node.csr" "$dir/$node.ext"
  openssl verify -CAfile "$dir/ca.pem" "$dir/$node.pem" >/dev/null \
    || die "the certificate of $node does not verify against $dir/ca.pem"
done
rm -f "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir"/*.pem
chmod 600 "$dir/ca-key.pem" "$dir"/*-key.pem
printf '%s: wrote %s/ca.pem and a certificate and key for: %s\n' "$me" "$dir" "$*"
