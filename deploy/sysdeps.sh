#!/bin/sh
# Installs the Debian packages the tests and benchmarks use, only those that are missing.
set -eu
need=""
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v nmap >/dev/null 2>&1 || need="$need nmap"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "sysdeps: missing Debian packages:$need (not root: namespace tests will skip)" >&2
    exit 0
fi
echo "sysdeps: installing$need"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
