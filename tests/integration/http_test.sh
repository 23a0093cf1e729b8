#!/usr/bin/env bash
# Black-box tests of `bitraft serve` and the network CLI: real processes,
# real sockets (127.0.0.1 only, ports chosen by the kernel with --port 0),
# curl as the client.
#
# Usage: http_test.sh BITRAFT_BINARY TMPDIR
#
# Every server this script starts is killed by PID when it exits, whatever
# happened (trap). Every curl call has a time limit, so the script is
# bounded in time. Prints one line per failed check and exits 1 if any.
set -u

# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup http-test "${1:?usage: http_test.sh BITRAFT TMPDIR}" "${2:-/tmp}"

# start NAME DATADIR [FLAGS...]: a server on a free port (start_server).
start() { start_server "$1" "$2" 0 "${@:3}"; }

# stop_term: SIGTERM, then wait (bounded) for the exit status in RC.
stop_term() {
    kill -TERM "$PID"
    RC=124
    for _ in $(seq 1 150); do
        if ! kill -0 "$PID" 2>/dev/null; then
            wait "$PID"
            RC=$?
            return 0
        fi
        sleep 0.1
    done
    kill -9 "$PID"
}

# req METHOD PATH [CURL ARGS...]: sets CODE and BODY.
req() {
    local m=$1 path=$2
    shift 2
    CODE=$(curl -s -g -o "$ROOT/body" -w '%{http_code}' --max-time 10 -X "$m" \
        "http://127.0.0.1:$PORT$path" "$@")
    BODY=$(cat "$ROOT/body")
}
# expect METHOD PATH WANT_CODE [WANT_BODY_SUBSTRING] [-- CURL ARGS...]
expect() {
    local m=$1 path=$2 want=$3 sub=${4:-}
    shift 3
    [ $# -gt 0 ] && shift
    [ "${1:-}" = -- ] && shift
    req "$m" "$path" "$@"
    if [ "$CODE" != "$want" ] || [[ "$BODY" != *"$sub"* ]]; then
        fail "$m $path: want $want '${sub}', got $CODE '${BODY:0:200}'"
    else
        ok
    fi
}

# ---------------------------------------------------------------------------
section "the original's requests, verbatim but for the port"
start orig "$ROOT/orig" || exit 1
U=http://localhost:$PORT
out=$(curl -s --max-time 10 --location "$U")
check "GET / gives the usage text" grep -q "^Usage:" <<<"$out"
check "PUT (original)" test "$(curl -s --max-time 10 --location "$U/" --header 'Content-Type: text/plain' --data 'key:1,value:2000')" = "Key saved"
check "READ (original)" test "$(curl -s --max-time 10 --location "$U?key=1")" = "2000"
check "BATCH PUT (original)" test "$(curl -s --max-time 10 --location "$U" --header 'Content-Type: text/plain' --data 'key:1,value:2000
key:2,value:5000
key:5,value:4000
key:11,value:502')" = "Keys saved"
out=$(curl -s --max-time 10 --location "$U?start_key=1&end_key=5")
check "READ KEY RANGE (original; bytewise, end inclusive): $out" test "$out" = "1,2000
11,502
2,5000
5,4000"
check "DELETE (original)" test "$(curl -s --max-time 10 --location --request DELETE "$U?key=1")" = "Key deleted"
expect GET "/?key=1" 404 "key not found"
expect GET "/?key=2" 200 5000

section "the original's forms: K,V lines, errors, status codes"
expect POST / 200 "Key saved" -- --data-binary 'k1,v,with,commas'
expect GET "/?key=k1" 200 "v,with,commas"
expect POST / 400 "line 2" -- --data-binary $'a1,1\nno-comma-here\na3,3'
expect GET "/?key=a1" 404
expect POST / 400 "line 1" -- --data-binary ',emptykey'
expect POST / 400 "empty body" -- --data-binary ''
expect POST / 200 "Keys saved" -- --data-binary $'crlf1,x\r\ncrlf2,y\r\n'
expect GET "/?key=crlf2" 200 y
expect DELETE "/?key=nope" 404 "key not found"
expect DELETE "/" 400 "missing parameter key"
expect DELETE "/?key=" 400 "empty"
expect GET "/?key" 400 "bad query"
expect GET "/?key=" 400 "empty"
expect GET "/?key=%zz" 400 "bad query"
expect GET "/?key=%4" 400 "bad query"
expect GET "/?start_key=1" 400 "both"
expect GET "/?end_key=1" 400 "both"
expect GET "/?key=1&start_key=1&end_key=2" 400 "either"
expect GET "/?&&=&key=2&=x" 200 5000
expect GET "/?key=a+b" 404
expect PATCH / 405 "not allowed"
expect PUT / 405 "not allowed"
req PATCH /
allow=$(curl -s -o /dev/null -D - --max-time 10 -X PATCH "http://127.0.0.1:$PORT/" | grep -i '^allow:')
check "405 carries Allow: $allow" grep -q "POST" <<<"$allow"
expect GET /nope 404 "no such endpoint"

section "REST: /kv/{key}"
expect PUT /kv/user:1 204 "" -- --data-binary alice
expect GET /kv/user:1 200 alice
expect PUT /kv/user:1 204 "" -- --data-binary alice2
expect GET /kv/user:1 200 alice2
expect PUT /kv/empty 204 "" -- --data-binary ''
expect GET /kv/empty 200 ""
expect DELETE /kv/user:1 204
expect GET /kv/user:1 404 "key not found"
expect DELETE /kv/user:1 404 "key not found"
expect PUT "/kv/a%00b%2Fc" 204 "" -- --data-binary binkey
expect GET "/kv/a%00b%2Fc" 200 binkey
expect GET "/kv/a" 404
expect GET "/kv/a%zz" 400 "escape"
expect PUT "/kv/a%zz" 400 "escape" -- --data-binary x
expect GET "/kv/%" 400 "escape"
expect GET "/kv/" 400 "empty"
expect POST /kv/x 405 "not allowed"
expect PATCH /kv 405
printf 'v\x00\xff\x01' >"$ROOT/binval"
expect PUT /kv/bin 204 "" -- --data-binary "@$ROOT/binval"
curl -s --max-time 10 -o "$ROOT/got" "http://127.0.0.1:$PORT/kv/bin"
check "binary value round trip" cmp -s "$ROOT/binval" "$ROOT/got"

section "REST: ranges (NDJSON, streamed)"
for i in 01 02 03 04 05; do req PUT /kv/r:$i --data-binary "val$i"; done
expect GET "/kv?start=r:02&end=r:04" 200 '{"key":"r:02","value":"val02"}'
check "range end inclusive" test "$(wc -l <"$ROOT/body")" = 3
expect GET "/kv?start=r:&end=r:~&limit=2" 200 '{"next":"r:03"}'
check "limit 2: two entries and a continuation" test "$(wc -l <"$ROOT/body")" = 3
expect GET "/kv?start=r:03&end=r:~&limit=5" 200 '"r:05"'
check "no continuation when the limit is not reached" test "$(grep -c next "$ROOT/body")" = 0
expect GET "/kv?start=bin&end=bin" 200 '"base64":true'
check "non-UTF-8 as base64" grep -q '"value":"dgD/AQ=="' "$ROOT/body"
expect GET "/kv?limit=x" 400 "limit"
expect GET "/kv?limit=-1" 400 "limit"
expect GET "/kv?start=%g0" 400 "bad query"
expect GET "/kv?start=z&end=a" 200 ""
# A bigger range really streams (chunked) and arrives whole.
awk 'BEGIN { for (i = 1; i <= 20000; i++) printf "big:%05d,value-%d\n", i, i }' >"$ROOT/bigbatch"
expect POST / 200 "Keys saved" -- --data-binary "@$ROOT/bigbatch"
n=$(curl -s --max-time 20 "http://127.0.0.1:$PORT/kv?start=big:&end=big:~" | wc -l)
check "20000-key range streamed whole ($n)" test "$n" = 20000
te=$(curl -s -o /dev/null -D - --max-time 20 "http://127.0.0.1:$PORT/kv?start=big:&end=big:~" | grep -i '^transfer-encoding:')
check "range reply is chunked: $te" grep -qi chunked <<<"$te"

section "REST: batches"
expect POST /kv/batch 200 '"ops":3' -- --data-binary $'{"op":"put","key":"b1","value":"one"}\n{"op":"put","key":"b2","value":"two \\u00e9\\n"}\n{"op":"delete","key":"r:01"}\n'
expect GET /kv/b1 200 one
expect GET /kv/r:01 404
expect POST /kv/batch 200 '"ops":1' -- --data-binary '{"op":"put","key":"YgA=","value":"/w==","base64":true}'
printf 'b\x00' >"$ROOT/k"
expect GET "/kv/b%00" 200
expect POST /kv/batch 400 "line 2" -- --data-binary $'{"op":"put","key":"bad1","value":"x"}\n{"op":"put","key":"bad2"}'
expect GET /kv/bad1 404
expect POST /kv/batch 400 "line 1" -- --data-binary '{"op":"put","key":"x","value":"y","extra":"z"}'
expect POST /kv/batch 400 "line 1" -- --data-binary '{"op":"frob","key":"x"}'
expect POST /kv/batch 400 "line 1" -- --data-binary '{"op":"put","key":"x","value":"\ud800"}'
expect POST /kv/batch 400 "line 1" -- --data-binary '{"op":"put","key":"x","value":"y"'
expect POST /kv/batch 400 "line 1" -- --data-binary '[1,2]'
expect POST /kv/batch 400 "line 1" -- --data-binary '{"op":"put","key":"","value":"y"}'
expect GET /kv/x 404

section "health, status, metrics"
expect GET /health 200 ok
expect GET /status 200 '"mode":"standalone"'
check "status is one JSON object with keys" grep -q '"keys":[0-9]' "$ROOT/body"
expect GET /metrics 200 'bitraft_http_requests_total{route="kv_put",code="204"}'
check "metrics histogram" grep -q 'bitraft_http_request_duration_seconds_bucket{le="+Inf"}' "$ROOT/body"
check "metrics engine figures" grep -q '^bitraft_engine_keys ' "$ROOT/body"
expect POST /status 405

section "compaction by hand: the endpoint, its errors, status, metrics, the CLI"
for i in $(seq 1 30); do expect PUT /kv/churn 204 "" -- --data-binary "value-$i-$(head -c 2000 /dev/zero | tr '\0' x)"; done
expect POST /admin/compact 202 '"compaction":"started"'
expect POST '/admin/compact?min_dead_pct=30' 202 '"min_dead_pct":30'
expect POST '/admin/compact?min_dead_pct=101' 400 "0 to 100"
expect POST '/admin/compact?min_dead_pct=x' 400 "0 to 100"
expect GET /admin/compact 405
expect GET /status 200 '"compaction":{"running":'
check "metrics compaction figures" curl -s --max-time 10 "$U/metrics" -o "$ROOT/m" -w '' && grep -q '^bitraft_compaction_merges_total ' "$ROOT/m"
check "CLI compact" "$BIN" compact --server "127.0.0.1:$PORT"
expect GET /kv/churn 200 "value-30-"

section "bad input: a half-sent request held open while others are served"
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'PUT /kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc' >&3
expect GET /kv/b1 200 one
expect PUT /kv/other 204 "" -- --data-binary fine
exec 3>&-
sleep 0.2
expect GET /kv/half 404
# Garbage request lines and headers.
printf 'GARBAGE\r\n\r\n' | timeout 5 bash -c "cat >/dev/tcp/127.0.0.1/$PORT" 2>/dev/null
printf 'GET /kv/%%00%%zz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n' | timeout 5 bash -c "cat >/dev/tcp/127.0.0.1/$PORT" 2>/dev/null
# A request line past the header memory, an overflowing Content-Length.
long=$(head -c 70000 /dev/zero | tr '\0' a)
req GET "/kv/$long"
check "over-long URL refused ($CODE)" test "$CODE" -ge 400 -a "$CODE" -lt 500
# A long key still fits the default per-connection memory (16 KiB).
long=$(head -c 12000 /dev/zero | tr '\0' k)
expect PUT "/kv/$long" 204 "" -- --data-binary longkey
expect GET "/kv/$long" 200 longkey
printf 'PUT /kv/ovf HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc' |
    timeout 5 bash -c "cat >/dev/tcp/127.0.0.1/$PORT" 2>/dev/null
expect GET /kv/ovf 404
expect GET "/?key=%00" 404 "key not found"
# Two pipelined requests in one write, on one keep-alive connection.
out=$(printf 'GET /kv/b1 HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; cat >&3; cat <&3" 2>/dev/null)
check "pipelined requests both answered" test "$(grep -o 'HTTP/1.1 200' <<<"$out" | wc -l)" = 2
check "server alive after garbage" kill -0 "$PID"
expect GET /health 200 ok
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "limits: oversized bodies and keys (413/400, nothing written)"
start limits "$ROOT/limits" --max-value-size 1K --max-batch-size 4K --max-key-size 16 || exit 1
head -c 2000 /dev/zero | tr '\0' x >"$ROOT/2k"
head -c 1024 /dev/zero | tr '\0' x >"$ROOT/1k"
head -c 5000 /dev/zero | tr '\0' x >"$ROOT/5k"
expect PUT /kv/big 413 "larger" -- --data-binary "@$ROOT/2k"
expect PUT /kv/big 413 "larger" -- --data-binary "@$ROOT/2k" -H 'Transfer-Encoding: chunked'
expect GET /kv/big 404
expect PUT /kv/fits 204 "" -- --data-binary "@$ROOT/1k"
expect POST / 413 "" -- --data-binary "@$ROOT/5k"
expect POST /kv/batch 413 "" -- --data-binary "@$ROOT/5k" -H 'Transfer-Encoding: chunked'
expect POST / 413 "" -- --data-binary "big,$(cat "$ROOT/2k")"
expect GET "/?key=big" 404
expect PUT /kv/0123456789abcdefX 400 "key" -- --data-binary x
expect GET /kv/0123456789abcdefX 400 "key"
expect POST / 400 "" -- --data-binary '0123456789abcdefX,1'
expect GET /status 200 '"keys":1,'
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "--sync never and interval: writes run inline, same replies"
for pol in never interval; do
    start sync-$pol "$ROOT/sync-$pol" --sync $pol || exit 1
    expect PUT /kv/a 204 "" -- --data-binary 1
    expect DELETE /kv/nope 404 "key not found"
    expect POST / 200 "Keys saved" -- --data-binary $'b,2\nc,3'
    expect POST /kv/batch 400 "line 1" -- --data-binary 'x'
    expect DELETE "/?key=c" 200 "Key deleted"
    stop_term
    check "SIGTERM exits 0 (got $RC)" test "$RC" = 0
    start sync-$pol-2 "$ROOT/sync-$pol" --sync $pol || exit 1
    expect GET /kv/a 200 1
    expect GET "/?key=b" 200 2
    expect GET "/?key=c" 404
    stop_term
done

section "a connection cap: past it, connections are refused; below it, served"
start cap "$ROOT/cap" --connections 3 --threads 1 || exit 1
exec 4<>"/dev/tcp/127.0.0.1/$PORT" 5<>"/dev/tcp/127.0.0.1/$PORT" 6<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.2
req GET /health
check "a 4th connection is refused while 3 are open (got $CODE)" test "$CODE" != 200
exec 4>&- 5>&- 6>&-
ok_after=0
for _ in $(seq 1 50); do
    req GET /health
    [ "$CODE" = 200 ] && ok_after=1 && break
    sleep 0.1
done
check "served again once the connections close" test $ok_after = 1
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "idle and half-sent connections are closed after --timeout"
start idle "$ROOT/idle" --timeout 1 || exit 1
exec 4<>"/dev/tcp/127.0.0.1/$PORT" 5<>"/dev/tcp/127.0.0.1/$PORT"
printf 'GET /hea' >&5
sleep 2.5
timeout 2 cat <&4 >/dev/null
rc4=$?
timeout 2 cat <&5 >/dev/null
rc5=$?
check "an idle connection is closed (cat exit $rc4, 124: still open)" test "$rc4" = 0
check "a half-sent request's connection is closed (cat exit $rc5)" test "$rc5" = 0
exec 4>&- 5>&-
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "the command line client"
start cli "$ROOT/cli" || exit 1
S="--server 127.0.0.1:$PORT"
check "bitraft put" "$BIN" put user:1 alice $S
echo -n "from stdin" | "$BIN" put user:2 $S
check "bitraft put (stdin)" test $? = 0
check "bitraft get" test "$("$BIN" get user:1 $S)" = alice
check "bitraft get (stdin value)" test "$("$BIN" get user:2 $S)" = "from stdin"
"$BIN" get nobody $S 2>"$ROOT/err"
check "bitraft get missing exits 1" test $? = 1
check "missing key reported on stderr" grep -q "not found" "$ROOT/err"
out=$("$BIN" range user: user:~ $S)
check "bitraft range: $out" test "$out" = "user:1	alice
user:2	from stdin"
out=$("$BIN" range user: user:~ --limit 1 $S 2>"$ROOT/err")
check "bitraft range --limit" test "$out" = "user:1	alice"
check "range continuation on stderr" grep -q "user:2" "$ROOT/err"
check "bitraft del" "$BIN" del user:1 $S
"$BIN" del user:1 $S 2>/dev/null
check "bitraft del missing exits 1" test $? = 1
check "bitraft status" grep -q standalone <<<"$("$BIN" status $S)"
"$BIN" get $S 2>/dev/null
check "usage error exits 2" test $? = 2
"$BIN" get x --server 127.0.0.1:1 2>"$ROOT/err"
check "unreachable server exits 3" test $? = 3
check "unreachable server reported" test -s "$ROOT/err"
check "bitraft local still works beside (other dir)" "$BIN" local put k v --data-dir "$ROOT/localdir"
"$BIN" demo --data-dir "$ROOT/demodir" >/dev/null 2>&1
check "bitraft demo still works" test $? = 0

section "a second instance on the same data directory is refused"
"$BIN" serve --port 0 --data-dir "$ROOT/cli" 2>"$ROOT/second.err" &
p2=$!
PIDS+=("$p2")
for _ in $(seq 1 50); do kill -0 $p2 2>/dev/null || break; sleep 0.1; done
wait $p2
rc2=$?
check "second instance exits non-zero (got $rc2)" test $rc2 -ne 0
check "second instance says why" grep -q "in use by another bitraft process" "$ROOT/second.err"
"$BIN" local get k --data-dir "$ROOT/cli" 2>"$ROOT/local.err"
check "local on a served directory is refused" grep -qi "in use" "$ROOT/local.err"
expect GET /health 200 ok
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "argument forms"
# Cluster forms are tested in cluster_test.sh; here only their refusals.
"$BIN" serve --port 0 --data-dir "$ROOT/c5000" --peers 1=127.0.0.1:4000,x 2>"$ROOT/err"
check "malformed --peers refused with exit 2" test $? = 2
check "the refusal says why" grep -q "is not ID=HOST:PORT" "$ROOT/err"
"$BIN" serve port 0 data-dir "$ROOT/c" distributed true 2>"$ROOT/err"
check "distributed true on a port no member has: exit 2" test $? = 2
"$BIN" serve --port 0 --peers 1=a:1 2>/dev/null
check "--peers without this node's port: exit 2" test $? = 2
"$BIN" serve --sync sometimes 2>/dev/null
check "bad --sync exits 2" test $? = 2
"$BIN" serve --bogus 1 2>/dev/null
check "unknown flag exits 2" test $? = 2
check "serve --help" "$BIN" serve --help >/dev/null
# The original's standalone form (port 0 so the test needs no fixed port).
LOG=$ROOT/origform.log
"$BIN" serve port 0 data-dir "$ROOT/origform" distributed false 2>"$LOG" &
PID=$!
PIDS+=("$PID")
for _ in $(seq 1 100); do grep -q serving "$LOG" && break; sleep 0.1; done
check "original standalone form serves" grep -q "serving http://127.0.0.1:" "$LOG"
PORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$LOG")
expect GET /health 200 ok
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "integer-key mode: numeric ranges (the original's keys)"
start intkeys "$ROOT/intkeys" --int-keys || exit 1
check "the log says integer keys" grep -q "integer keys" "$LOG"
expect POST / 200 "Keys saved" -- --data-binary $'key:1,value:2000\nkey:2,value:5000\nkey:5,value:4000\nkey:11,value:502'
expect GET "/?start_key=1&end_key=10" 200 $'1,2000\n2,5000\n5,4000'
check "numeric range: 11 is past 10" test "$(wc -l <"$ROOT/body")" = 3
expect GET "/?key=11" 200 502
expect GET "/?key=abc" 400 "integer"
expect GET "/?key=-1" 400 "integer"
expect PUT /kv/18446744073709551616 400 "integer" -- --data-binary x
expect PUT /kv/18446744073709551615 204 "" -- --data-binary max
expect GET "/kv?start=12&limit=1" 200 '{"key":"18446744073709551615","value":"max"}'
expect GET "/kv?start=x" 400 "integer"
expect POST /kv/batch 400 "integer" -- --data-binary '{"op":"put","key":"k","value":"v"}'
expect POST / 400 "integer" -- --data-binary $'3,three\nfour,4'
expect GET "/?key=3" 404
expect DELETE "/?key=5" 200 "Key deleted"
expect GET /status 200 '"key_mode":"int"'
stop_term
# The mode belongs to the directory: it stays without the flag.
start intkeys2 "$ROOT/intkeys" || exit 1
expect GET "/?start_key=0&end_key=100" 200 $'1,2000\n2,5000\n11,502'
stop_term
# A directory holding byte keys cannot become an integer one.
"$BIN" serve --port 0 --data-dir "$ROOT/orig" --int-keys 2>"$ROOT/err"
check "--int-keys on a byte-key directory refused (exit 3)" test $? = 3
check "and says why" grep -q "integer-key mode is chosen when a directory is created" "$ROOT/err"

section "SIGKILL during a stream of PUTs: every acknowledged PUT survives"
start crash "$ROOT/crash" || exit 1
writer() {
    local w=$1 i=0
    while [ $i -lt 2000 ]; do
        i=$((i + 1))
        c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT \
            --data-binary "v$w-$i" "http://127.0.0.1:$PORT/kv/w$w-$i") || break
        [ "$c" = 204 ] && echo "w$w-$i" >>"$ROOT/acked.$w"
    done
}
wpids=()
for w in 1 2 3 4; do
    writer $w &
    wpids+=($!)
done
sleep 1.5
kill -9 "$PID"
wait "$PID" 2>/dev/null
for p in "${wpids[@]}"; do wait "$p"; done
cat "$ROOT"/acked.* >"$ROOT/acked" 2>/dev/null
nacked=$(wc -l <"$ROOT/acked")
echo "   $nacked PUTs acknowledged before the kill"
check "some PUTs were acknowledged before the kill ($nacked)" test "$nacked" -gt 0
start crash2 "$ROOT/crash" || exit 1
missing=0
# One range read of everything, then compare.
curl -s --max-time 20 "http://127.0.0.1:$PORT/kv?start=w&end=w~" >"$ROOT/after"
while read -r k; do
    grep -q "\"key\":\"$k\",\"value\":\"v${k#w}\"" "$ROOT/after" || missing=$((missing + 1))
done <"$ROOT/acked"
check "every acknowledged PUT present after restart ($missing of $nacked missing)" test $missing = 0
stop_term
check "SIGTERM exits 0 (got $RC)" test "$RC" = 0

section "SIGTERM with writes in flight: they complete, the exit is clean"
start term "$ROOT/term" || exit 1
for w in 5 6; do
    (for i in $(seq 1 200); do
        c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT --data-binary x \
            "http://127.0.0.1:$PORT/kv/t$w-$i") || break
        [ "$c" = 204 ] && echo "t$w-$i" >>"$ROOT/tacked"
    done) &
    wpids+=($!)
done
sleep 0.5
stop_term
check "SIGTERM under load exits 0 (got $RC)" test "$RC" = 0
wait
start term2 "$ROOT/term" || exit 1
curl -s --max-time 20 "http://127.0.0.1:$PORT/kv?start=t&end=t~" >"$ROOT/tafter"
missing=0
while read -r k; do grep -q "\"key\":\"$k\"" "$ROOT/tafter" || missing=$((missing + 1)); done <"$ROOT/tacked"
check "acknowledged PUTs present after SIGTERM ($missing missing)" test $missing = 0
stop_term

echo "http_test: $CHECKS checks, $FAILS failed"
[ $FAILS = 0 ]
