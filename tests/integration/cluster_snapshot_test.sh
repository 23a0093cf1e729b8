#!/usr/bin/env bash
# A follower down long enough that the leader truncated its raft log past
# the follower's position catches up through a snapshot (the leader's
# closed data files, streamed in chunks), with real processes:
#
#   - 3 nodes with --snapshot-every 50 --snapshot-keep 10;
#   - kill -9 a follower, write 400 keys through the leader (in batches, so
#     many raft entries), check the leader's raft log now starts past the
#     follower's last index;
#   - restart the follower: it reports a snapshot installed, every key
#     reads back on it (stale reads), and writes after it replicate to it;
#   - kill -9 and restart it again: the installed data is still there.
#
# Usage: cluster_snapshot_test.sh BITRAFT_BINARY TMPDIR
# Random free ports below the ephemeral range; servers killed by PID on
# exit (trap); every wait bounded. About 10 s.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup cluster-snap "${1:?usage: cluster_snapshot_test.sh BITRAFT TMPDIR}" "${2:-/tmp}"
cluster_ports 3 || exit 1
FLAGS=(--snapshot-every 50 --snapshot-keep 10 --max-file-size 16K)
field() { # I NAME: a number from node I's /status raft section
    node_status "$1" | sed -n "s/.*\"raft\":{.*\"$2\":\([0-9]*\).*/\1/p"
}

for i in 1 2 3; do start_node "$i" "${FLAGS[@]}" || exit 1; done
wait_leader || { echo "FAIL: no leader"; exit 1; }
F=$((L % 3 + 1)) # a follower
echo "leader $L, follower $F goes down"
curl -s -X PUT --data-binary before "http://127.0.0.1:${P[$L]}/kv/k-before" >/dev/null
check "the follower has the first write" wait_stale "$F" k-before before
behind=$(field "$F" last_index)
kill9 "$F"

# 400 keys in 80 batches of 5: 80 raft entries, more than a snapshot every
# 50 keeps (10 behind).
for b in $(seq 0 79); do
    body=""
    for j in 0 1 2 3 4; do
        n=$((b * 5 + j))
        body+="{\"op\":\"put\",\"key\":\"k$n\",\"value\":\"v$n-$(printf '%0100d' "$n")\"}"$'\n'
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST --data-binary "$body" \
        "http://127.0.0.1:${P[$L]}/kv/batch")
    [ "$code" = 200 ] || { echo "FAIL: batch $b answered $code"; FAILS=$((FAILS + 1)); break; }
done
first=$(field "$L" first_index)
check "the leader's log now starts past the follower (first $first, follower at $behind)" \
    test "${first:-0}" -gt "$((behind + 1))"

start_node "$F" "${FLAGS[@]}" || exit 1
check "follower catches up: last key" wait_stale "$F" k399 "v399-$(printf '%0100d' 399)"
check "follower caught up: first key" wait_stale "$F" k0 "v0-$(printf '%0100d' 0)"
check "follower caught up: the write before it went down" wait_stale "$F" k-before before
installed=$(field "$F" snapshots_installed)
sent=$(field "$L" snapshots_sent)
check "the follower installed a snapshot (installed ${installed:-?}, leader sent ${sent:-?})" \
    test "${installed:-0}" -ge 1
curl -s -X PUT --data-binary after "http://127.0.0.1:${P[$L]}/kv/k-after" >/dev/null
check "writes after the snapshot replicate to it" wait_stale "$F" k-after after

kill9 "$F"
start_node "$F" "${FLAGS[@]}" || exit 1
check "after another kill -9 the installed data is there" wait_stale "$F" k200 "v200-$(printf '%0100d' 200)"
check "and the later write" wait_stale "$F" k-after after

echo "cluster_snapshot: $CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
