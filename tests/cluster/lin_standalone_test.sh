#!/usr/bin/env bash
# The linearizability tooling against today's single-node server: the
# recorder (bitraft-linclient) drives a real `bitraft serve` with concurrent
# clients and the checker (bitraft-lincheck) must find the history
# linearizable — first on a quiet server, then across a SIGKILL and restart
# in the middle of a run (ops in flight become unknown, ops while it is down
# fail; every acknowledged write must survive).
#
# Usage: lin_standalone_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR]
#
# Servers bind 127.0.0.1 on a port the kernel picks (--port 0) and are
# killed by PID when the script exits, whatever happened (trap). Bounded in
# time: about 15 s.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup lin-standalone "${1:?usage: lin_standalone_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR]}" "${4:-/tmp}"
CLIENT=${2:?usage}
CHECK=${3:?usage}

# check_history FILE WHAT: runs the checker; a non-zero exit is a failure.
check_history() {
    "$CHECK" --keys --max-seconds 60 "$1"
    local rc=$?
    [ $rc = 0 ] || fail "$2: checker exit $rc (1 = violation, 3 = inconclusive)"
}

echo "== a quiet server: 8 clients, 3 keys, 5 s"
start_server quiet "$ROOT/data" 0 || exit 1
"$CLIENT" --urls "http://127.0.0.1:$PORT" --clients 8 --keys 3 --seconds 5 \
    --timeout-ms 2000 --out "$ROOT/quiet.hist" || fail "linclient exit $?"
nok=$(grep -c ' ok ' "$ROOT/quiet.hist")
[ "$nok" -gt 100 ] || fail "only $nok ok ops recorded"
grep -q ' get .* ok [^-]' "$ROOT/quiet.hist" || fail "no get read a value"
check_history "$ROOT/quiet.hist" "quiet server"

echo "== SIGKILL and restart in the middle of a run"
"$CLIENT" --urls "http://127.0.0.1:$PORT" --clients 8 --keys 3 --seconds 5 \
    --timeout-ms 1000 --out "$ROOT/crash.hist" &
CPID=$!
PIDS+=("$CPID")
sleep 1.5
kill -9 "$PID"
wait "$PID" 2>/dev/null
sleep 0.5
# The same port again (the client's URL is fixed); retry while it is busy.
up=0
for _ in 1 2 3 4 5; do
    if start_server restarted "$ROOT/data" "$PORT"; then
        up=1
        break
    fi
    sleep 0.3
done
[ $up = 1 ] || fail "server did not restart on port $PORT"
wait "$CPID" || fail "linclient exit $? (crash run)"
nfail=$(grep -c ' fail ' "$ROOT/crash.hist")
echo "   $nfail ops failed while the server was down, $(grep -c ' unknown ' "$ROOT/crash.hist") unknown"
grep -q ' ok ' <(tail -n 50 "$ROOT/crash.hist") || fail "no ok ops after the restart"
check_history "$ROOT/crash.hist" "kill and restart"

echo "== the checker rejects a corrupted history"
# Make a get that read a value return one nobody wrote.
awk 'BEGIN{d=0} !d && $2=="get" && $7=="ok" && $8!="-" {$8="never-written"; d=1} {print}' \
    "$ROOT/quiet.hist" >"$ROOT/bad.hist"
"$CHECK" "$ROOT/bad.hist" >"$ROOT/bad.out"
rc=$?
[ $rc = 1 ] || fail "corrupted history: checker exit $rc, want 1"
grep -q "get(.*) -> never-written" "$ROOT/bad.out" || fail "the failure does not show the bad read"
"$CHECK" /nonexistent/file 2>/dev/null
[ $? = 2 ] || fail "a missing file is not exit 2"

echo "lin_standalone: $FAILS failed"
[ $FAILS = 0 ]
