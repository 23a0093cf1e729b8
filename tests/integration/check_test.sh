#!/usr/bin/env bash
# bitraft check: a clean store passes, a damaged one is reported (exit 1,
# the file named) and left unchanged, a store held by a server is refused.
# Usage: check_test.sh BITRAFT TMPDIR
set -u
BIN=${1:?usage: check_test.sh BITRAFT TMPDIR}
ROOT=${2:-/tmp}/check-test.$$
rm -rf "$ROOT"
mkdir -p "$ROOT"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$ROOT"
}
trap cleanup EXIT
FAILS=0
CHECKS=0
check() { CHECKS=$((CHECKS + 1)); if eval "$2"; then :; else FAILS=$((FAILS + 1)); echo "FAIL: $1"; fi; }

D=$ROOT/store
for i in $(seq 1 40); do
    "$BIN" local put "key$i" "value-number-$i-padding-padding" --data-dir "$D" --sync never || exit 1
done
"$BIN" check --data-dir "$D" >"$ROOT/out" 2>"$ROOT/err"
rc=$?
check "clean: exit 0, got $rc" "[ $rc -eq 0 ]"
check "clean: the summary counts 40 keys" "grep -q '^40 keys' '$ROOT/out'"

# Flip one byte in the middle of the data: a bad record with good ones
# after it.
F=$D/0000000001.data
flip_byte() { # FILE OFFSET: xor one byte with 0x20 using dd and od
    local b
    b=$(dd if="$1" bs=1 skip="$2" count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
    printf "$(printf '\\%03o' $((b ^ 32)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
flip_byte "$F" 800
before=$(md5sum <"$F")
"$BIN" check --data-dir "$D" >"$ROOT/out" 2>"$ROOT/err"
rc=$?
check "damaged: exit 1, got $rc" "[ $rc -eq 1 ]"
check "damaged: the file is named" "grep -q '0000000001.data' '$ROOT/err'"
check "damaged: nothing changed on disk" "[ \"\$(md5sum <'$F')\" = '$before' ]"

# A store a server holds is refused.
D2=$ROOT/served
"$BIN" serve --port 0 --data-dir "$D2" 2>"$ROOT/serve.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q serving "$ROOT/serve.log" && break; sleep 0.1; done
"$BIN" check --data-dir "$D2" >/dev/null 2>"$ROOT/err2"
rc=$?
check "held by a server: exit 3, got $rc" "[ $rc -eq 3 ]"

echo "check: $((CHECKS - FAILS)) passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
