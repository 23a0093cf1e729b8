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
# Usage: lin_cluster_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR] [SECONDS]
#
# Ports: random, checked free (client port and raft port = +10000), below
# the ephemeral range. Every server is killed by PID when the script exits
# (trap); every wait is bounded. About SECONDS (default 12) + 10 s.
set -u

BIN=${1:?usage: lin_cluster_test.sh BITRAFT LINCLIENT LINCHECK [TMPDIR] [SECONDS]}
CLIENT=${2:?usage}
CHECK=${3:?usage}
mkdir -p "${4:-/tmp}" || exit 1
ROOT=$(cd "${4:-/tmp}" && pwd)/lin-cluster.$$
SECS=${5:-12}
rm -rf "$ROOT"
mkdir -p "$ROOT"

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$ROOT"
}
trap cleanup EXIT

listening() { [ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]; }
EPH_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPH_LOW" -gt 12000 ] || EPH_LOW=32768
USED=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((2000 + RANDOM % (EPH_LOW - 10000 - 2000)))
        [[ "$USED" == *" $p "* ]] && continue
        if ! listening "$p" && ! listening $((p + 10000)); then
            USED="$USED$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

P=()
for i in 1 2 3; do
    P[$i]=$(free_port) || { echo "no free ports"; exit 1; }
done
PEERS="1=127.0.0.1:${P[1]},2=127.0.0.1:${P[2]},3=127.0.0.1:${P[3]}"
URLS="http://127.0.0.1:${P[1]},http://127.0.0.1:${P[2]},http://127.0.0.1:${P[3]}"

NPID=()
start_node() { # I: returns 1 if it did not serve within 10 s
    local i=$1 log=$ROOT/n$1.log before
    echo "--- start" >>"$log"
    before=$(grep -c serving "$log")
    "$BIN" serve --port "${P[$i]}" --data-dir "$ROOT/n$i" --peers "$PEERS" 2>>"$log" &
    NPID[$i]=$!
    PIDS+=("${NPID[$i]}")
    for _ in $(seq 1 100); do
        [ "$(grep -c serving "$log")" -gt "$before" ] && return 0
        kill -0 "${NPID[$i]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "node $i did not start:" && tail -5 "$log"
    return 1
}
role() {
    curl -s --max-time 1 "http://127.0.0.1:${P[$1]}/status" |
        sed -n 's/.*"role":"\([a-z-]*\)".*/\1/p'
}
leader() { # prints the id of a live node that says it leads, if any
    local i
    for i in 1 2 3; do
        [ -n "${NPID[$i]:-}" ] && [ "$(role "$i")" = leader ] && { echo "$i"; return 0; }
    done
    return 1
}

for i in 1 2 3; do start_node "$i" || exit 1; done
for _ in $(seq 1 100); do leader >/dev/null && break; sleep 0.1; done
leader >/dev/null || { echo "FAIL: no leader within 10 s"; exit 1; }

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
end=$((SECONDS + SECS - 2))
while [ "$SECONDS" -lt "$end" ]; do
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
echo "nemesis: $kills kills"
"$CHECK" --keys --max-seconds 60 "$ROOT/history"
rc=$?
case $rc in
0) echo "PASS: linearizable ($kills kills)" ;;
1) echo "FAIL: not linearizable (minimal history above)" ;;
3) echo "FAIL: the checker could not decide within its budget" ;;
*) echo "FAIL: checker exit $rc" ;;
esac
exit $rc
