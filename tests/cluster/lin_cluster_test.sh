#!/usr/bin/env bash
# Linearizability of a real 3-node cluster under crashes: concurrent clients
# (bitraft-linclient) run puts, gets and deletes on a few keys against all
# three members (followers redirect to the leader) while a nemesis kills a
# node with SIGKILL every couple of seconds — the leader more often than not
# — and restarts it. The recorded history (call and return times, results,
# outcomes: unknown for timeouts and for 503s marked X-Bitraft-Outcome:
# unknown) must be linearizable (bitraft-lincheck); a violation fails the
# test and the checker prints the minimal history.
#
# NEMESIS "members" changes membership instead of killing: every ~2 s it
# removes a member (the leader two times in three) with `bitraft member
# remove`, then adds it back (`member add --wait`: a learner until it has
# caught up, then a voter), so the clients run through removals of
# followers and leaders, re-additions and promotions; the removed node keeps
# serving its clients meanwhile (writes redirect, reads get no read index).
#
# Usage: lin_cluster_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR] [SECONDS] [NEMESIS]
#
# Ports: random, checked free (client port and raft port = +10000), below
# the ephemeral range. Every server is killed by PID when the script exits
# (trap); every wait is bounded. About SECONDS (default 12) + 10 s.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup lin-cluster "${1:?usage: lin_cluster_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR] [SECONDS]}" "${4:-/tmp}"
CLIENT=${2:?usage}
CHECK=${3:?usage}
SECS=${5:-12}
NEMESIS=${6:-kill}
cluster_ports 3 || exit 1
URLS="http://127.0.0.1:${P[1]},http://127.0.0.1:${P[2]},http://127.0.0.1:${P[3]}"

for i in 1 2 3; do start_node "$i" || exit 1; done
wait_leader 10 || { echo "FAIL: no leader within 10 s"; exit 1; }

# The clients: 6 threads, 10 keys, 1 s timeout (a request caught by a crash
# becomes unknown rather than waiting for the node to return).
"$CLIENT" --urls "$URLS" --clients 6 --keys 10 --seconds "$SECS" --timeout-ms 1000 \
    --out "$ROOT/history" 2>"$ROOT/client.log" &
CPID=$!
PIDS+=("$CPID")

# The nemesis: every ~3 s kill -9 a node (the leader two times in three),
# restart it a second later. At most one node is down at a time, so a
# majority is always there to serve.
kills=0
changes=0
end=$((SECONDS + SECS - 2))
member() { # ARGS...: bitraft member ARGS through any live node
    local i out
    for i in 1 2 3; do
        out=$("$BIN" member "$@" --server "127.0.0.1:${P[$i]}" 2>&1) && return 0
    done
    echo "member $*: $out"
    return 1
}
while [ "$NEMESIS" = members ] && [ "$SECONDS" -lt "$end" ]; do
    sleep 1
    victim=$(leader)
    if [ -z "$victim" ] || [ $((RANDOM % 3)) -eq 0 ]; then victim=$((1 + RANDOM % 3)); fi
    member remove "$victim" || { echo "FAIL: removing $victim"; exit 1; }
    sleep 1
    member add "$victim" "127.0.0.1:$((P[victim] + 10000))" "127.0.0.1:${P[$victim]}" --wait 20 ||
        { echo "FAIL: adding $victim back"; exit 1; }
    changes=$((changes + 2))
done
while [ "$NEMESIS" = kill ] && [ "$SECONDS" -lt "$end" ]; do
    sleep 2
    victim=$(leader)
    if [ -z "$victim" ] || [ $((RANDOM % 3)) -eq 0 ]; then victim=$((1 + RANDOM % 3)); fi
    kill -9 "${NPID[$victim]}" 2>/dev/null
    wait "${NPID[$victim]}" 2>/dev/null
    NPID[$victim]=
    kills=$((kills + 1))
    sleep 1
    start_node "$victim" || { echo "FAIL: node $victim did not restart"; exit 1; }
done

wait "$CPID"
crc=$?
cat "$ROOT/client.log"
[ "$crc" -eq 0 ] || { echo "FAIL: the client exited $crc"; exit 1; }
echo "nemesis: $kills kills, $changes membership changes"
"$CHECK" --keys --max-seconds 60 "$ROOT/history"
rc=$?
case $rc in
0) echo "PASS: linearizable ($kills kills, $changes membership changes)" ;;
1) echo "FAIL: not linearizable (minimal history above)" ;;
3) echo "FAIL: the checker could not decide within its budget" ;;
*) echo "FAIL: checker exit $rc" ;;
esac
exit $rc
