#!/usr/bin/env bash
# Membership changes at run time, with real processes (bitraft member ...,
# /admin/members):
#
#   - 3 nodes (--snapshot-every 50, so a new member catches up by snapshot),
#     200 keys written;
#   - a 4th node started with --join waits (no leader, no bootstrap);
#     `bitraft member add 4 ... --wait` through a follower (307 to the
#     leader) returns once it is a voter; it holds every key; a write after
#     it replicates to it; its MEMBERS file lists all four;
#   - bad requests: adding a voter again (409), removing a non-member (404,
#     exit 1), a bad address (400, exit 2), removing with a bad id (400);
#   - removing a follower: it shows as "none", sends linearizable reads to
#     the leader (307), the rest keeps committing;
#   - removing the leader: a new leader among the others, writes go on;
#   - node 4 restarted without --join and a member restarted with a --peers
#     list that lacks node 4: both still know every address (MEMBERS), the
#     two-voter cluster elects and commits, no key lost;
#   - a damaged MEMBERS file: the node refuses to start and says why.
#
# Usage: cluster_member_test.sh BITRAFT_BINARY TMPDIR
# Random free ports below the ephemeral range; servers killed by PID on
# exit (trap); every wait bounded. About 15 s.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup cluster-member "${1:?usage: cluster_member_test.sh BITRAFT TMPDIR}" "${2:-/tmp}"
cluster_ports 4 || exit 1
PEERS4=$PEERS
PEERS=${PEERS4%,4=*} # the first three: the cluster as it starts
FLAGS=(--snapshot-every 50 --snapshot-keep 10 --max-file-size 16K)
url() { echo "http://127.0.0.1:${P[${1:-0}]:-1}"; }
members() { "$BIN" member list --server "127.0.0.1:${P[$1]}"; }
role_of() { # I ID: ID's role as node I knows it
    members "$1" | grep -o "{\"id\":$2,\"role\":\"[a-z]*\"" | sed 's/.*"role":"\([a-z]*\)"/\1/'
}
wait_until_grep() { # PATTERN I: node I's /status matches within 5 s
    for _ in $(seq 1 50); do
        node_status "$2" | grep -q "$1" && return 0
        sleep 0.1
    done
    return 1
}
put() { curl -s -o /dev/null -w '%{http_code}' -L -X PUT --data-binary "$3" "$(url "$1")/kv/$2"; }

for i in 1 2 3; do start_node "$i" "${FLAGS[@]}" || exit 1; done
wait_leader || { echo "FAIL: no leader"; exit 1; }
echo "leader $L"
for b in $(seq 0 19); do
    body=""
    for k in $(seq 0 9); do body="$body{\"op\":\"put\",\"key\":\"k$((b * 10 + k))\",\"value\":\"v$((b * 10 + k))\"}"$'\n'; done
    curl -s -o /dev/null -L -X POST --data-binary "$body" -H 'Content-Type: application/x-ndjson' \
        "$(url "$L")/kv/batch"
done
check "three voters listed" [ "$(members 1 | grep -o '"role":"voter"' | wc -l)" = 3 ]

# --- a fourth node joins
PEERS=$PEERS4
start_node 4 "${FLAGS[@]}" --node-id 4 --join || exit 1
check "a joining node does not bootstrap" grep -q "waiting to be added" "$ROOT/n4.log"
check "a joining node has no leader" [ "$(put 4 x y)" = 503 ]
check "a joining node's /status: membership none" grep -q '"membership":"none"' <<<"$(node_status 4)"
# restarted before it was added, without --join: it must still wait
kill9 4
start_node 4 "${FLAGS[@]}" --node-id 4 || exit 1
check "a joining node restarted without --join still waits" \
    [ "$(grep -c "waiting to be added" "$ROOT/n4.log")" = 2 ]
check "... and never bootstrapped" [ "$(grep -c "bootstrapped" "$ROOT/n4.log")" = 0 ]
F=$((L % 3 + 1)) # a follower, asked so that the request is redirected
out=$("$BIN" member add 4 "127.0.0.1:$((P[4] + 10000))" "127.0.0.1:${P[4]}" \
    --server "127.0.0.1:${P[$F]}" --wait 20)
rc=$?
check "member add --wait exits 0 (rc $rc)" [ "$rc" = 0 ]
check "member add prints node 4 as a voter" grep -q '{"id":4,"role":"voter"' <<<"$out"
check "the new member caught up by snapshot" grep -q "installed snapshot" "$ROOT/n4.log"
check "its /status: membership voter" grep -q '"membership":"voter"' <<<"$(node_status 4)"
check "the new member holds the old keys" wait_stale 4 k0 v0
check "... all of them" wait_stale 4 k199 v199
check "a write after the change reaches it" [ "$(put "$L" after-add yes)" = 204 ]
check "... on node 4" wait_stale 4 after-add yes
check "node 4's MEMBERS lists four members" [ "$(grep -c '^member ' "$ROOT/n4/MEMBERS")" = 4 ]
check "the leader lists four voters" [ "$(members "$L" | grep -o '"role":"voter"' | wc -l)" = 4 ]

# --- refusals
"$BIN" member add 4 "127.0.0.1:$((P[4] + 10000))" --server "127.0.0.1:${P[$L]}" 2>"$ROOT/err"
rc=$?
check "adding a voter again: exit 3 (rc $rc)" [ "$rc" = 3 ]
check "... with a 409" grep -q "409.*already a voter" "$ROOT/err"
"$BIN" member remove 9 --server "127.0.0.1:${P[$L]}" 2>"$ROOT/err"
rc=$?
check "removing a non-member: exit 1 (rc $rc)" [ "$rc" = 1 ]
"$BIN" member add 5 nowhere --server "127.0.0.1:${P[$L]}" 2>"$ROOT/err"
rc=$?
check "a bad raft address: exit 2 (rc $rc)" [ "$rc" = 2 ]
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$(url "$L")/admin/members/x")
check "a bad id in the path: 400 (got $code)" [ "$code" = 400 ]
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(url "$L")/admin/members?id=5")
check "no raft address: 400 (got $code)" [ "$code" = 400 ]
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$(url "$L")/admin/members")
check "PUT /admin/members: 405 (got $code)" [ "$code" = 405 ]

# --- remove a follower (not node 4)
R=$F
"$BIN" member remove "$R" --server "127.0.0.1:${P[$L]}" >/dev/null
check "member remove of follower $R exits 0" [ $? = 0 ]
check "follower $R is no longer a member" [ "$(role_of "$L" "$R")" = none ]
check "... and says so in /status" wait_until_grep '"membership":"none"' "$R"
# the leader does not answer a non-member's read index: the removed node
# sends its linearizable reads to the leader instead of timing out (503)
code=$(curl -s -o /dev/null -w '%{http_code}' "$(url "$R")/kv/k0")
check "a linearizable GET on the removed node: 307 to the leader (got $code)" [ "$code" = 307 ]
check "... which serves it" [ "$(curl -s -L "$(url "$R")/kv/k0")" = v0 ]
check "the cluster commits without it" [ "$(put "$L" after-remove yes)" = 204 ]
kill9 "$R"

# --- remove the leader
OLD=$L
"$BIN" member remove "$OLD" --server "127.0.0.1:${P[$OLD]}" >/dev/null
check "member remove of the leader exits 0" [ $? = 0 ]
new=""
for _ in $(seq 1 100); do
    new=$(leader)
    [ -n "$new" ] && [ "$new" != "$OLD" ] && break
    sleep 0.1
done
check "a new leader after removing the leader ($new)" test -n "$new" -a "$new" != "$OLD"
L=$new
check "writes go on after removing the leader" [ "$(put "$L" after-leader yes)" = 204 ]
kill9 "$OLD"
# The two voters left: node 4 and one of the first three.
O=$(members 4 | grep -o '{"id":[123],"role":"voter"' | sed 's/{"id":\([0-9]\).*/\1/')
check "two voters left: 4 and $O" [ -n "$O" ]

# --- restarts keep the addresses
kill9 4
PEERS=$PEERS4
start_node 4 "${FLAGS[@]}" --node-id 4 || exit 1
check "node 4 restarted without --join did not bootstrap" \
    [ "$(grep -c "bootstrapped" "$ROOT/n4.log")" = 0 ]
kill9 "$O"
PEERS=${PEERS4%,4=*} # node O's command line does not know node 4
start_node "$O" "${FLAGS[@]}" || exit 1
L=""
wait_leader 10
check "the two voters elect a leader after restarts" [ -n "${L:-}" ]
check "and commit" [ "$(put "$L" after-restarts yes)" = 204 ]
check "node $O reads the write" wait_stale "$O" after-restarts yes
check "node 4 reads the write" wait_stale 4 after-restarts yes
check "node 4 still holds the first keys" wait_stale 4 k123 v123

# --- a damaged MEMBERS file stops the node with a reason
kill9 "$O"
echo "member 1 garbage" >>"$ROOT/n$O/MEMBERS"
timeout 10 "$BIN" serve --port "${P[$O]}" --data-dir "$ROOT/n$O" --peers "$PEERS" \
    2>"$ROOT/err" >/dev/null
rc=$?
check "a damaged MEMBERS file: exit 3 (rc $rc)" [ "$rc" = 3 ]
check "... naming the file and line" grep -q "MEMBERS: line" "$ROOT/err"

echo "$CHECKS checks, $FAILS failed"
if [ "$FAILS" -ne 0 ]; then
    for i in 1 2 3 4; do
        echo "--- node $i"
        tail -20 "$ROOT/n$i.log"
    done
    exit 1
fi
