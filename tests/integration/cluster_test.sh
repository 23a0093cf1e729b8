#!/usr/bin/env bash
# Black-box tests of cluster mode: three real `bitraft serve` processes on
# 127.0.0.1 forming a Raft cluster, driven by curl and the bitraft CLI.
#
#   - one leader is elected; writes through it are readable on every node;
#     a follower answers writes with 307 to the leader (curl -L and the CLI
#     succeed through it) and serves linearizable reads itself, asking the
#     leader for the read index (a write acknowledged by the leader is seen
#     on the follower at once);
#   - kill -9 of the leader: a new leader takes writes (the time from the
#     kill to the first acknowledged write is printed); the old node
#     restarts on its directory and catches up;
#   - kill -9 of all three nodes in the middle of a stream of PUTs: after a
#     restart, every acknowledged PUT is on every node;
#   - the original's three command lines (ports 4000/5000/6000) form a
#     cluster (SKIP, printed, when one of those ports is busy here);
#   - bad cluster flags exit 2 with a clear message.
#
# Usage: cluster_test.sh BITRAFT_BINARY TMPDIR
#
# Ports are picked at random below the kernel's ephemeral range and checked
# free (the client port and its raft port, +10000). Every server is killed
# by PID when the script exits (trap); every wait is bounded.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup cluster-test "${1:?usage: cluster_test.sh BITRAFT TMPDIR}" "${2:-/tmp}"

now_ms() { date +%s%3N; }

# ---- ports and nodes (start_node, kill9: tests/lib/cluster.sh) ---------------

cluster_ports 3 || exit 1
echo "ports ${P[1]} ${P[2]} ${P[3]} (raft +10000)"

alive() { [ -n "${NPID[$1]:-}" ]; }

# role I: the role node I reports ("" if it does not answer).
role() {
    curl -s --max-time 1 "http://127.0.0.1:${P[$1]}/status" |
        sed -n 's/.*"role":"\([a-z-]*\)".*/\1/p'
}
# wait_leader [SECONDS]: sets LEADER to the one live node that says it leads
# (and checks that no other live node says so); 1 on timeout.
wait_leader() {
    local limit=${1:-10} n l i r
    local tries=$((limit * 10))
    for _ in $(seq 1 $tries); do
        n=0
        l=
        for i in 1 2 3; do
            alive "$i" || continue
            r=$(role "$i")
            [ "$r" = leader ] && n=$((n + 1)) && l=$i
        done
        if [ "$n" = 1 ]; then
            LEADER=$l
            return 0
        fi
        [ "$n" -gt 1 ] && echo "note: $n nodes say they lead (terms may differ)"
        sleep 0.1
    done
    return 1
}

# req METHOD URL [CURL ARGS...]: sets CODE, BODY and HDRS.
req() {
    local m=$1 url=$2
    shift 2
    CODE=$(curl -s -g -D "$ROOT/hdrs" -o "$ROOT/body" -w '%{http_code}' --max-time 5 -X "$m" \
        "$url" "$@")
    BODY=$(cat "$ROOT/body" 2>/dev/null)
    HDRS=$(cat "$ROOT/hdrs" 2>/dev/null)
}
url() { echo "http://127.0.0.1:${P[$1]}$2"; }

# wait_stale I KEY VALUE [SECONDS]: node I's stale read of KEY gives VALUE.
wait_stale() {
    local i=$1 k=$2 v=$3 limit=${4:-5}
    for _ in $(seq 1 $((limit * 20))); do
        [ "$(curl -s --max-time 1 "$(url "$i" "/kv/$k?consistency=stale")")" = "$v" ] && return 0
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------------------
section "three nodes elect one leader"
for i in 1 2 3; do
    start_node "$i" || exit 1
done
T0=$(now_ms)
if wait_leader 10; then
    ok
    echo "leader: node $LEADER after $(($(now_ms) - T0)) ms"
else
    fail "no single leader within 10 s"
    for i in 1 2 3; do tail -5 "$ROOT/n$i.log"; done
    exit 1
fi
F1=$((LEADER % 3 + 1))
F2=$(((LEADER + 1) % 3 + 1))
req GET "$(url "$F1" /status)"
check "status: cluster mode ($BODY)" grep -q '"mode":"cluster"' <<<"$BODY"
check "status: a follower knows the leader" grep -q "\"leader\":$LEADER,\"leader_addr\":\"127.0.0.1:${P[$LEADER]}\"" <<<"$BODY"
req GET "$(url "$LEADER" /status)"
check "status: the leader lists its peers' progress" grep -q '"peers":\[{"id":' <<<"$BODY"
req GET "$(url "$LEADER" /metrics)"
check "metrics: bitraft_raft_is_leader 1" grep -q '^bitraft_raft_is_leader 1$' <<<"$BODY"
check "metrics: bitraft_raft_term" grep -q '^bitraft_raft_term [1-9]' <<<"$BODY"

section "writes through the leader are readable on every node"
req PUT "$(url "$LEADER" /kv/alpha)" --data-binary one
check "PUT on the leader: 204 (got $CODE $BODY)" test "$CODE" = 204
req GET "$(url "$LEADER" /kv/alpha)"
check "linearizable GET on the leader (got $CODE $BODY)" test "$CODE $BODY" = "200 one"
for i in 1 2 3; do
    check "stale read on node $i" wait_stale "$i" alpha one
done
req POST "$(url "$LEADER" /kv/batch)" --data-binary $'{"op":"put","key":"b1","value":"x"}\n{"op":"put","key":"b2","value":"y"}'
check "batch on the leader (got $CODE $BODY)" test "$CODE" = 200
req GET "$(url "$LEADER" '/kv?start=b&end=b~')"
check "linearizable range on the leader" test "$BODY" = $'{"key":"b1","value":"x"}\n{"key":"b2","value":"y"}'
check "stale range on a follower" wait_stale "$F2" b2 y
req GET "$(url "$F2" '/kv?start=b&end=b~&consistency=stale')"
check "stale range on a follower (got $CODE)" test "$BODY" = $'{"key":"b1","value":"x"}\n{"key":"b2","value":"y"}'
req GET "$(url "$LEADER" '/kv/alpha?consistency=sometimes')"
check "bad consistency: 400 (got $CODE)" test "$CODE" = 400

section "a follower redirects writes and serves linearizable reads"
req PUT "$(url "$F1" '/kv/red%2Fir?x=1')" --data-binary two
check "PUT on a follower: 307 (got $CODE)" test "$CODE" = 307
check "Location is the leader, same path and query" grep -qi "^Location: http://127.0.0.1:${P[$LEADER]}/kv/red%2Fir?x=1"$'\r'"\$" <<<"$HDRS"
check "X-Bitraft-Leader: $LEADER" grep -qi "^X-Bitraft-Leader: $LEADER"$'\r'"\$" <<<"$HDRS"
req GET "$(url "$F1" /kv/alpha)"
check "linearizable GET on a follower: 200 there (got $CODE)" test "$CODE" = 200
req GET "$(url "$F1" '/?key=alpha')"
check "original GET on a follower: 200 there (got $CODE)" test "$CODE" = 200
# read-your-writes across nodes: each PUT acknowledged by the leader is seen
# by the very next linearizable GET on a follower (no stale window)
stale_reads=0
for i in $(seq 1 30); do
    req PUT "$(url "$LEADER" /kv/ryw)" --data-binary "v$i"
    req GET "$(url "$F1" /kv/ryw)"
    [ "$CODE $BODY" = "200 v$i" ] || stale_reads=$((stale_reads + 1))
done
check "30 leader writes each seen by the next follower read ($stale_reads missed)" \
    test "$stale_reads" = 0
req PUT "$(url "$F1" /kv/viafollower)" -L --data-binary three
check "curl -L PUT through a follower: 204 (got $CODE)" test "$CODE" = 204
req GET "$(url "$F1" /kv/viafollower)" -L
check "curl -L GET through a follower (got $CODE $BODY)" test "$CODE $BODY" = "200 three"
req POST "$(url "$F2" /)" -L --data-binary 'key:orig,value:2000'
check "original POST / through a follower (got $CODE $BODY)" test "$CODE $BODY" = "200 Key saved"
req DELETE "$(url "$F2" '/?key=orig')" -L
check "original DELETE through a follower (got $CODE $BODY)" test "$CODE $BODY" = "200 Key deleted"
"$BIN" put clikey clival --server "127.0.0.1:${P[$F1]}" 2>"$ROOT/err"
rc=$?
check "CLI put through a follower: exit $rc $(cat "$ROOT/err")" test "$rc" = 0
out=$("$BIN" get clikey --server "127.0.0.1:${P[$F2]}" 2>"$ROOT/err")
check "CLI get through a follower: '$out' $(cat "$ROOT/err")" test "$out" = clival
out=$("$BIN" range cli cli~ --server "127.0.0.1:${P[$F1]}" 2>&1)
check "CLI range through a follower: '$out'" test "$out" = $'clikey\tclival'
"$BIN" del clikey --server "127.0.0.1:${P[$F2]}" 2>/dev/null
check "CLI del through a follower" test $? = 0
"$BIN" get clikey --server "127.0.0.1:${P[$F1]}" 2>/dev/null
check "CLI get of the deleted key: exit 1" test $? = 1

# ---------------------------------------------------------------------------
section "kill -9 of the leader: a new leader takes writes; the old node catches up"
OLD=$LEADER
kill9 "$OLD"
T0=$(now_ms)
acked=
for _ in $(seq 1 200); do
    for i in 1 2 3; do
        alive "$i" || continue
        c=$(curl -s -L -o /dev/null -w '%{http_code}' --max-time 1 -X PUT --data-binary after \
            "$(url "$i" /kv/failover)")
        if [ "$c" = 204 ]; then
            acked=1
            break 2
        fi
    done
    sleep 0.02
done
FAILOVER_MS=$(($(now_ms) - T0))
if [ -n "$acked" ]; then
    ok
    echo "failover: first acknowledged write $FAILOVER_MS ms after kill -9 of leader $OLD"
else
    fail "no write acknowledged within $FAILOVER_MS ms of killing the leader"
fi
check "a new leader" wait_leader 10
check "the new leader is another node ($LEADER vs $OLD)" test "$LEADER" != "$OLD"
req PUT "$(url "$LEADER" /kv/failover2)" --data-binary again
check "PUT on the new leader: 204 (got $CODE)" test "$CODE" = 204
start_node "$OLD" || exit 1
check "the restarted node serves the writes made while it was down" wait_stale "$OLD" failover2 again 10
check "and the older ones" wait_stale "$OLD" viafollower three 5
check "still one leader" wait_leader 5

# ---------------------------------------------------------------------------
section "kill -9 of every node during a stream of PUTs: every acknowledged PUT survives"
# writer W: PUTs c-W-N to whichever node answers (following 307s), records
# each key acknowledged with 204, until the stop file appears (bounded).
writer() {
    local w=$1 n=0 node=1 c
    local end=$(($(now_ms) + 20000))
    while [ ! -e "$ROOT/stop" ] && [ "$(now_ms)" -lt "$end" ]; do
        n=$((n + 1))
        c=$(curl -s -L -o /dev/null -w '%{http_code}' --max-time 2 -X PUT \
            --data-binary "v$w-$n" "http://127.0.0.1:${P[$node]}/kv/c-$w-$n")
        if [ "$c" = 204 ]; then
            echo "c-$w-$n v$w-$n" >>"$ROOT/acked.$w"
        else
            node=$((node % 3 + 1))
            sleep 0.01
        fi
    done
}
rm -f "$ROOT/stop"
WP=()
for w in 1 2 3 4; do
    : >"$ROOT/acked.$w"
    writer "$w" &
    WP+=($!)
done
sleep 2
kill -9 "${NPID[1]}" "${NPID[2]}" "${NPID[3]}" 2>/dev/null
for i in 1 2 3; do wait "${NPID[$i]}" 2>/dev/null; NPID[$i]=; done
sleep 0.3
touch "$ROOT/stop"
for p in "${WP[@]}"; do wait "$p"; done
cat "$ROOT"/acked.* | sort >"$ROOT/acked"
NACK=$(wc -l <"$ROOT/acked")
echo "$NACK PUTs acknowledged before the kill"
check "some PUTs were acknowledged ($NACK)" test "$NACK" -gt 10
for i in 1 2 3; do
    start_node "$i" || exit 1
done
check "a leader after the restart" wait_leader 10
# Every node's stale range must hold every acknowledged key with its value
# (it may hold more: a write can commit without its reply getting out).
for i in 1 2 3; do
    good=
    for _ in $(seq 1 100); do
        curl -s --max-time 5 "$(url "$i" '/kv?start=c-&end=c-~&consistency=stale')" |
            sed -n 's/^{"key":"\([^"]*\)","value":"\([^"]*\)"}$/\1 \2/p' | sort >"$ROOT/have.$i"
        if [ -z "$(comm -23 "$ROOT/acked" "$ROOT/have.$i")" ]; then
            good=1
            break
        fi
        sleep 0.1
    done
    if [ -n "$good" ]; then
        ok
    else
        fail "node $i lacks acknowledged PUTs: $(comm -23 "$ROOT/acked" "$ROOT/have.$i" | head -5 | tr '\n' ' ')"
    fi
done
req GET "$(url "$LEADER" '/kv?start=c-&end=c-~')"
check "linearizable range on the leader holds them too" test -z "$(comm -23 "$ROOT/acked" <(sed -n 's/^{"key":"\([^"]*\)","value":"\([^"]*\)"}$/\1 \2/p' "$ROOT/body" | sort))"

section "SIGTERM: every node stops cleanly (exit 0)"
for i in 1 2 3; do
    kill -TERM "${NPID[$i]}"
done
for i in 1 2 3; do
    rc=124
    for _ in $(seq 1 150); do
        if ! kill -0 "${NPID[$i]}" 2>/dev/null; then
            wait "${NPID[$i]}"
            rc=$?
            break
        fi
        sleep 0.1
    done
    check "node $i exits 0 on SIGTERM (got $rc)" test "$rc" = 0
    [ "$rc" = 124 ] && kill -9 "${NPID[$i]}"
    NPID[$i]=
done

# ---------------------------------------------------------------------------
section "the original's three command lines form a cluster"
busy=
for p in 4000 5000 6000 14000 15000 16000; do
    listening "$p" && busy="$busy $p"
done
if [ -n "$busy" ]; then
    echo "SKIP: ports busy on this machine:$busy"
else
    OP=()
    for p in 4000 5000 6000; do
        (cd "$ROOT" && exec "$BIN" serve port "$p" data-dir "data$p" 2>"$ROOT/orig$p.log") &
        OP+=($!)
        PIDS+=($!)
    done
    okc=
    for _ in $(seq 1 100); do
        n=0
        for p in 4000 5000 6000; do
            curl -s --max-time 1 "http://127.0.0.1:$p/status" | grep -q '"role":"leader"' &&
                n=$((n + 1))
        done
        [ "$n" = 1 ] && okc=1 && break
        sleep 0.1
    done
    check "one leader among 4000/5000/6000" test -n "$okc"
    out=$(curl -s --max-time 5 --location 'http://localhost:5000/' --header 'Content-Type: text/plain' --data 'key:1,value:2000')
    check "original PUT on any node (curl --location): '$out'" test "$out" = "Key saved"
    out=$(curl -s --max-time 5 --location 'http://localhost:6000' --header 'Content-Type: text/plain' --data 'key:2,value:5000
key:11,value:502')
    check "original BATCH PUT: '$out'" test "$out" = "Keys saved"
    for p in 4000 5000 6000; do
        out=$(curl -s --max-time 5 --location "http://localhost:$p?key=1")
        check "original READ on $p: '$out'" test "$out" = 2000
    done
    out=$(curl -s --max-time 5 --location 'http://localhost:4000?start_key=1&end_key=10')
    check "integer keys: numeric range '$out'" test "$out" = $'1,2000\n2,5000'
    for p in "${OP[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
fi

# ---------------------------------------------------------------------------
section "bad cluster flags exit 2 with a clear message"
badflag() {
    local want=$1
    shift
    timeout 10 "$BIN" serve --data-dir "$ROOT/bad" "$@" 2>"$ROOT/err" </dev/null
    local rc=$?
    if [ "$rc" = 2 ] && grep -q -- "$want" "$ROOT/err"; then
        ok
    else
        fail "serve $*: want exit 2 and '$want', got $rc: $(cat "$ROOT/err")"
    fi
}
badflag "not among the members" --port "${P[1]}" --peers "$PEERS" --node-id 7
badflag "is not ID=HOST:PORT" --port "${P[1]}" --peers "1=127.0.0.1:${P[1]},two=127.0.0.1:1"
badflag "is not ID=HOST:PORT" --port "${P[1]}" --peers "1127.0.0.1:${P[1]}"
badflag "bad entry" --port "${P[1]}" --peers "1=127.0.0.1:99999"
badflag "listed twice" --port "${P[1]}" --peers "1=127.0.0.1:${P[1]},1=127.0.0.1:2"
badflag "not a member" --port "${P[1]}" --peers "$PEERS" --peer-raft-addrs 9=127.0.0.1:1
badflag "no member of --peers has port" --port 1 --peers "$PEERS"
badflag "must be below" --port "${P[1]}" --peers "$PEERS" --election-ms 100 --heartbeat-ms 100
badflag "need --peers" --port 0 --node-id 1
badflag "contradict" port "${P[1]}" data-dir "$ROOT/bad" distributed false --peers "$PEERS"

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" = 0 ]
