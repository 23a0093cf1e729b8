#!/usr/bin/env bash
# bitraft check: a clean store passes, a damaged one is reported (exit 1,
# the file named) and left unchanged, a store held by a server is refused.
# Usage: check_test.sh BITRAFT TMPDIR
set -u
# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup check-test "${1:?usage: check_test.sh BITRAFT TMPDIR}" "${2:-/tmp}"

D=$ROOT/store
for i in $(seq 1 40); do
    "$BIN" local put "key$i" "value-number-$i-padding-padding" --data-dir "$D" --sync never || exit 1
done
"$BIN" check --data-dir "$D" >"$ROOT/out" 2>"$ROOT/err"
rc=$?
check "clean: exit 0, got $rc" test $rc -eq 0
check "clean: the summary counts 40 keys" grep -q '^40 keys' "$ROOT/out"

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
check "damaged: exit 1, got $rc" test $rc -eq 1
check "damaged: the file is named" grep -q '0000000001.data' "$ROOT/err"
check "damaged: nothing changed on disk" test "$(md5sum <"$F")" = "$before"

# A store a server holds is refused.
D2=$ROOT/served
start_server served "$D2" 0
"$BIN" check --data-dir "$D2" >/dev/null 2>"$ROOT/err2"
rc=$?
check "held by a server: exit 3, got $rc" test $rc -eq 3

echo "check: $((CHECKS - FAILS)) passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
