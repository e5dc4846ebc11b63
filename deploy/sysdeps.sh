#!/bin/sh
# Installs the Debian packages the tests and benchmarks use, only those that are missing.
set -eu
need=""
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v nmap >/dev/null 2>&1 || need="$need nmap"
# ndiff reads the nmap XML of `scan -oX` and `export` in the tests (Debian ships it apart).
command -v ndiff >/dev/null 2>&1 || need="$need ndiff"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v amtool >/dev/null 2>&1 || need="$need prometheus-alertmanager"
# The PostgreSQL server binaries (the tests' throwaway clusters), not on PATH in Debian.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$need postgresql"
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "sysdeps: missing Debian packages:$need (not root: namespace tests will skip)" >&2
    exit 0
fi
echo "sysdeps: installing$need"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
# The tests only run the prometheus/promtool/amtool/postgres binaries; where systemd runs,
# these packages also start their services (Alertmanager on every interface, a PostgreSQL
# cluster on port 5432): stop the ones that were just installed, never one that was there.
for pkg in $need; do
    case "$pkg" in prometheus|prometheus-alertmanager|postgresql)
        [ -d /run/systemd/system ] && systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
    esac
done
