#!/usr/bin/env bash
# Partitions of a real 3-node cluster: every node dials its peers' raft
# ports through bitraft-faultproxy (6 directed links, i->j is node i's
# connection to node j), so the test can cut any link.
#
#  1. Isolate the leader (cut its 4 links): the two others elect a new leader
#     in a higher term and acknowledge writes; the old leader acknowledges
#     no write (a PUT with a short client timeout times out or gets
#     307/421/503) and serves no linearizable read (a GET of a key the new
#     leader wrote is neither 200 nor 404).
#  2. Heal: exactly one leader, all nodes agree on it, and every write that
#     was acknowledged anywhere is readable on every node (stale local read)
#     and through the leader (linearizable read).
#  3. Isolate one follower: the majority keeps acknowledging writes; heal:
#     the follower catches up with all of them.
#
# With LINCLIENT and LINCHECK (bitraft-linclient, bitraft-lincheck) it runs
# instead a linearizability check under partitions: 6 clients run puts,
# gets and deletes on 10 keys against all three nodes for SECONDS (default
# 12) while a nemesis isolates a node (the leader two times in three) for
# 1.5 s, heals, and again; the recorded history must be linearizable.
#
# Usage: partition_test.sh BITRAFT FAULTPROXY [TMPDIR [LINCLIENT LINCHECK [SECONDS]]]
#
# Ports are picked free by the kernel; everything binds 127.0.0.1. Nodes and
# the proxy are killed by PID when the script exits (and the proxy also exits
# when its stdin, this script's pipe, closes). Bounded in time: ~30 s on a
# quiet machine, every wait has a limit.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup partition "${1:?usage: partition_test.sh BITRAFT FAULTPROXY [TMPDIR]}" "${3:-/tmp}"
KEEP_ROOT_ON_FAIL=1 # the nodes' logs, for a failed run
PROXY=${2:?usage: partition_test.sh BITRAFT FAULTPROXY [TMPDIR]}
LINCLIENT=${4:-}
LINCHECK=${5:-}
LINSECS=${6:-12}
ELECTION_MS=150
HEARTBEAT_MS=50

# start_node and wait_leader below are this test's own (nodes dial their
# peers through the proxy), not those of cluster.sh.
declare -a NODE_PID=() HTTP=() RAFT=()
declare -A LINK # "i>j" -> the proxy port node i dials to reach node j
declare -A ACKED # key -> value of every acknowledged write

free_ports() { # N: N distinct free ports
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# --- the proxy ---------------------------------------------------------------

read -r -a ports <<<"$(free_ports 12)"
for i in 1 2 3; do
    HTTP[i]=${ports[$((i - 1))]}
    RAFT[i]=${ports[$((i + 2))]}
done
n=6
proxy_args=()
for i in 1 2 3; do
    for j in 1 2 3; do
        [ "$i" = "$j" ] && continue
        LINK["$i>$j"]=${ports[$n]}
        proxy_args+=(--link "${ports[$n]}=127.0.0.1:${RAFT[j]}")
        n=$((n + 1))
    done
done

coproc FP { exec "$PROXY" "${proxy_args[@]}" 2>"$ROOT/proxy.log"; }
PIDS+=("$FP_PID")
FP_IN=${FP[1]}
FP_OUT=${FP[0]}
while read -r -t 5 line <&"$FP_OUT"; do
    [ "$line" = ready ] && break
done
[ "${line:-}" = ready ] || { echo "the fault proxy did not start" && cat "$ROOT/proxy.log"; exit 1; }

# proxy CMD...: sends a command, fails the test unless the answer is "ok".
proxy() {
    local reply
    echo "$*" >&"$FP_IN"
    while read -r -t 5 reply <&"$FP_OUT"; do
        case $reply in
        ok*) return 0 ;;
        err*) break ;;
        esac
    done
    fail "proxy '$*': ${reply:-no answer}"
    return 1
}

# isolate N: cuts node N's 4 links (both directions to both peers).
isolate() {
    local j
    for j in 1 2 3; do
        [ "$j" = "$1" ] && continue
        proxy cut "${LINK["$1>$j"]}"
        proxy cut "${LINK["$j>$1"]}"
    done
}

# --- the nodes ---------------------------------------------------------------

peers="1=127.0.0.1:${HTTP[1]},2=127.0.0.1:${HTTP[2]},3=127.0.0.1:${HTTP[3]}"

start_node() { # N
    local i=$1 j raddrs=""
    for j in 1 2 3; do
        [ "$j" = "$i" ] && continue
        raddrs+="${raddrs:+,}$j=127.0.0.1:${LINK["$i>$j"]}"
    done
    "$BIN" serve --port "${HTTP[i]}" --data-dir "$ROOT/n$i" --node-id "$i" --peers "$peers" \
        --raft-port "${RAFT[i]}" --peer-raft-addrs "$raddrs" --cluster-token "partition-$$" \
        --election-ms "$ELECTION_MS" --heartbeat-ms "$HEARTBEAT_MS" >>"$ROOT/n$i.log" 2>&1 &
    NODE_PID[i]=$!
    PIDS+=("${NODE_PID[i]}")
}

# status N: prints "ROLE TERM LEADER" of node N ("down - -" if it does not
# answer within 1 s).
status() {
    curl -s -m 1 "http://127.0.0.1:${HTTP[$1]}/status" 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
    s = s.get("raft", s)  # role/term/leader at the top or under "raft"
    print(s.get("role", "-"), s.get("term", "-"), s.get("leader", "-"))
except Exception:
    print("down - -")'
}

# leaders NODES...: prints the nodes among NODES that say they lead.
leaders() {
    local i
    for i in "$@"; do
        [ "$(status "$i" | cut -d' ' -f1)" = leader ] && echo "$i"
    done
}

# wait_leader SECONDS NODES...: sets LEADER to the single node among NODES
# that leads; 1 if there was none (or more than one) until the limit.
wait_leader() {
    local end l
    end=$(($(date +%s%N) / 1000000 + $1 * 1000))
    shift
    while :; do
        l=$(leaders "$@")
        if [ -n "$l" ] && [ "$(echo "$l" | wc -l)" = 1 ]; then
            LEADER=$l
            return 0
        fi
        [ $(($(date +%s%N) / 1000000)) -lt "$end" ] || break
        sleep 0.1
    done
    LEADER=
    return 1
}

# http_code METHOD URL [BODY] [MAXSECS]: prints the status code (000: no
# answer within MAXSECS, default 2). Redirects are not followed.
http_code() {
    local args=(-s -o "$ROOT/body" -w '%{http_code}' -m "${4:-2}" -X "$1")
    [ -n "${3:-}" ] && args+=(--data-binary "$3")
    curl "${args[@]}" "$2" 2>/dev/null || true
}

# put_acked NODES KEY VALUE: writes through whichever of NODES leads,
# retrying for up to 5 s; on a 2xx the write is recorded as acknowledged.
put_acked() {
    local nodes=$1 key=$2 val=$3 code end
    end=$((SECONDS + 5))
    while [ $SECONDS -lt $end ]; do
        # The last leader seen first (cheap); otherwise look for the leader.
        # shellcheck disable=SC2086
        if [[ " $nodes " == *" ${LEADER:-x} "* ]] || wait_leader 2 $nodes; then
            code=$(http_code PUT "http://127.0.0.1:${HTTP[LEADER]}/kv/$key" "$val")
            if [[ $code == 2?? ]]; then
                ACKED[$key]=$val
                return 0
            fi
            LEADER=
        fi
        sleep 0.1
    done
    fail "write $key through nodes $nodes was never acknowledged (last code ${code:-none})"
    return 1
}

# check_all_readable NODES SECONDS: every acknowledged write is readable on
# each of NODES (local stale reads), waiting up to SECONDS for catch-up, and
# through the leader (linearizable).
check_all_readable() {
    local nodes=$1 end=$((SECONDS + $2)) i key missing
    for i in $nodes; do
        while :; do
            missing=""
            for key in "${!ACKED[@]}"; do
                if [ "$(http_code GET "http://127.0.0.1:${HTTP[i]}/kv/$key?consistency=stale")" != 200 ] ||
                    [ "$(cat "$ROOT/body")" != "${ACKED[$key]}" ]; then
                    missing=$key
                    break
                fi
            done
            [ -z "$missing" ] && break
            if [ $SECONDS -ge $end ]; then
                fail "node $i: acknowledged write $missing=${ACKED[$missing]} is not readable (stale read: $(cat "$ROOT/body"))"
                break
            fi
            sleep 0.2
        done
    done
    # shellcheck disable=SC2086
    wait_leader 5 $nodes || return
    for key in "${!ACKED[@]}"; do
        if [ "$(http_code GET "http://127.0.0.1:${HTTP[LEADER]}/kv/$key")" != 200 ] ||
            [ "$(cat "$ROOT/body")" != "${ACKED[$key]}" ]; then
            fail "leader $LEADER: linearizable read of $key is not ${ACKED[$key]}"
        fi
    done
}

# one_leader_agreed SECONDS: exactly one leader and every node names it.
one_leader_agreed() {
    local end=$((SECONDS + $1)) s1 s2 s3 l
    while [ $SECONDS -lt $end ]; do
        if wait_leader 1 1 2 3; then
            l=$LEADER
            s1=$(status 1)
            s2=$(status 2)
            s3=$(status 3)
            if [ "${s1#* }" = "${s2#* }" ] && [ "${s2#* }" = "${s3#* }" ] &&
                [ "$(leaders 1 2 3)" = "$l" ]; then
                echo "   leader $l, all nodes agree (term leader: ${s1#* })"
                return 0
            fi
        fi
        sleep 0.2
    done
    fail "no single agreed leader after heal: 1: $(status 1), 2: $(status 2), 3: $(status 3)"
    return 1
}

for i in 1 2 3; do
    start_node "$i"
done

echo "== a 3-node cluster elects a leader"
for _ in $(seq 1 150); do
    wait_leader 0 1 2 3 && break
    alive=0
    for i in 1 2 3; do kill -0 "${NODE_PID[i]}" 2>/dev/null && alive=$((alive + 1)); done
    [ $alive = 0 ] && break
    sleep 0.1
done
if [ -z "$LEADER" ]; then
    echo "FAIL: no leader within 15 s ($alive nodes running)"
    for i in 1 2 3; do echo "-- node $i: $(status "$i")" && tail -n 20 "$ROOT/n$i.log"; done
    FAILS=1
    exit 1
fi
OLD=$LEADER
OLD_TERM=$(status "$OLD" | cut -d' ' -f2)
echo "   leader: node $OLD, term $OLD_TERM"
for k in $(seq 1 10); do
    put_acked "1 2 3" "before-$k" "v$k"
done

if [ -n "$LINCLIENT" ]; then
    echo "== linearizability under partitions: $LINSECS s, a node isolated every ~2.5 s"
    urls="http://127.0.0.1:${HTTP[1]},http://127.0.0.1:${HTTP[2]},http://127.0.0.1:${HTTP[3]}"
    "$LINCLIENT" --urls "$urls" --clients 6 --keys 10 --seconds "$LINSECS" --timeout-ms 1000 \
        --out "$ROOT/history" 2>"$ROOT/client.log" &
    CPID=$!
    PIDS+=("$CPID")
    cuts=0
    end=$((SECONDS + LINSECS - 2))
    while [ "$SECONDS" -lt "$end" ]; do
        sleep 1
        victim=$(leaders 1 2 3 | head -n 1)
        if [ -z "$victim" ] || [ $((RANDOM % 3)) -eq 0 ]; then victim=$((1 + RANDOM % 3)); fi
        isolate "$victim"
        cuts=$((cuts + 1))
        sleep 1.5
        proxy heal-all
    done
    wait "$CPID"
    crc=$?
    cat "$ROOT/client.log"
    [ "$crc" -eq 0 ] || fail "the client exited $crc"
    [ "$FAILS" -eq 0 ] || exit 1
    echo "nemesis: $cuts partitions"
    "$LINCHECK" --keys --max-seconds 60 "$ROOT/history"
    rc=$?
    [ "$rc" -eq 0 ] || FAILS=1
    case $rc in
    0) echo "PASS: linearizable ($cuts partitions)" ;;
    1) echo "FAIL: not linearizable (minimal history above)" ;;
    3) echo "FAIL: the checker could not decide within its budget" ;;
    *) echo "FAIL: checker exit $rc" ;;
    esac
    exit "$rc"
fi

echo "== isolate the leader (node $OLD): the majority elects a new one"
isolate "$OLD"
t0=$(date +%s%N)
# At once, while the old leader may still believe it leads: no quorum, so
# no acknowledgement.
code=$(http_code PUT "http://127.0.0.1:${HTTP[OLD]}/kv/orphan-0" "x0" 1)
echo "   PUT to the old leader right after the cut: ${code/#000/no answer in 1 s}"
if [[ $code == 2?? ]]; then
    fail "the isolated old leader acknowledged a write ($code)"
    ACKED[orphan-0]=x0 # and it must not be lost either
fi
MAJ=""
for i in 1 2 3; do [ "$i" = "$OLD" ] || MAJ+=" $i"; done
# shellcheck disable=SC2086
if wait_leader 10 $MAJ; then
    NEW=$LEADER
    NEW_TERM=$(status "$NEW" | cut -d' ' -f2)
    echo "   node $NEW leads in term $NEW_TERM, seen $((($(date +%s%N) - t0) / 1000000)) ms after the cut"
    [ "$NEW_TERM" -gt "$OLD_TERM" ] 2>/dev/null || fail "new term $NEW_TERM is not above $OLD_TERM"
    for k in $(seq 1 10); do
        put_acked "$MAJ" "during-$k" "w$k"
    done

    echo "== the old leader commits nothing and serves no linearizable read"
    for k in 1 2 3; do
        code=$(http_code PUT "http://127.0.0.1:${HTTP[OLD]}/kv/orphan-$k" "x$k" 1)
        echo "   PUT to the old leader after the election: ${code/#000/no answer in 1 s}"
        if [[ $code == 2?? ]]; then
            fail "the isolated old leader acknowledged a write ($code)"
            ACKED[orphan-$k]=x$k
        fi
    done
    code=$(http_code GET "http://127.0.0.1:${HTTP[OLD]}/kv/during-1" "" 1)
    echo "   linearizable GET on the old leader: ${code/#000/no answer in 1 s}"
    case $code in
    200 | 404) fail "the isolated old leader answered a linearizable read with $code (stale)" ;;
    esac
else
    fail "the majority ($MAJ) elected no leader within 10 s: $(for i in $MAJ; do echo "$i: $(status "$i");"; done)"
fi

echo "== heal: one leader, every acknowledged write everywhere"
proxy heal-all
one_leader_agreed 10
put_acked "1 2 3" "after-heal" "h"
check_all_readable "1 2 3" 10
for k in 0 1 2 3; do
    code=$(http_code GET "http://127.0.0.1:${HTTP[1]}/kv/orphan-$k?consistency=stale")
    [ "$code" = 200 ] && echo "   note: orphan-$k (sent to the isolated leader, no answer) was applied later"
done

echo "== isolate a follower: the majority goes on; heal: it catches up"
wait_leader 5 1 2 3
F=$((LEADER % 3 + 1))
isolate "$F"
REST=""
for i in 1 2 3; do [ "$i" = "$F" ] || REST+=" $i"; done
for k in $(seq 1 10); do
    put_acked "$REST" "minority-$k" "m$k"
done
proxy heal-all
one_leader_agreed 10
check_all_readable "1 2 3" 10

echo "== every node is still running"
for i in 1 2 3; do
    kill -0 "${NODE_PID[i]}" 2>/dev/null || fail "node $i exited: $(tail -n 5 "$ROOT/n$i.log")"
done

if [ "$FAILS" -ne 0 ]; then
    for i in 1 2 3; do echo "-- node $i log (tail):" && tail -n 15 "$ROOT/n$i.log"; done
    echo "$FAILS failure(s)"
    exit 1
fi
echo "all partition checks passed (${#ACKED[@]} acknowledged writes checked on every node)"
