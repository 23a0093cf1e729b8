#!/bin/sh
# Installs the Debian packages bitraft builds, tests and benchmarks with.
# As root it runs apt-get; otherwise it prints the exact command and fails.
# Usage: scripts/deps.sh [build|bench|fuzz]
#   bench adds the reference engines, fuzz adds clang and its libFuzzer runtime
set -eu

pkgs="build-essential cmake pkg-config libxxhash-dev libcriterion-dev libh2o-dev libcurl4-openssl-dev libuv1-dev curl python3"
if [ "${1:-build}" = bench ]; then
    pkgs="$pkgs liblmdb-dev libleveldb-dev librocksdb-dev etcd-server etcd-client wrk libmicrohttpd-dev"
fi
if [ "${1:-build}" = fuzz ]; then
    pkgs="$pkgs clang libclang-rt-dev"
fi

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "bitraft needs these Debian packages:$missing" >&2
    echo "install them with:  sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
