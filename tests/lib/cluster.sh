# cluster.sh - helpers for tests that run real `bitraft serve` processes
# (standalone servers and clusters) on 127.0.0.1; sourced by bash test
# scripts. Needs BIN (the bitraft binary) and ROOT (a scratch directory)
# set, and the caller's PIDS array, which its EXIT trap kills by PID
# (test_setup does all three).
#
#   test_setup NAME BIN TMPDIR
#                           BIN made absolute, ROOT=TMPDIR/NAME.PID (fresh),
#                           PIDS=(), an EXIT trap that kills them and
#                           removes ROOT (kept, and said so, when
#                           KEEP_ROOT_ON_FAIL=1 and FAILS is not 0)
#   check DESC CMD...       counts a check; runs CMD, a failure if it fails
#   ok / fail MSG...        counts a passed / failed check (CHECKS, FAILS);
#                           fail prints "FAIL: MSG"
#   section TITLE           prints "== TITLE"
#   start_server NAME DIR PORT [FLAGS]
#                           a standalone `bitraft serve` on PORT (0: one the
#                           kernel picks) with its data in DIR and its log
#                           in LOG=$ROOT/NAME.log; sets PID and PORT, adds
#                           PID to PIDS; 1 if it does not serve within 10 s
#   cluster_ports N         sets P[1..N] to random free ports (each with its
#                           raft port, +10000, free too), below the
#                           ephemeral range; PEERS to the --peers list
#   start_node I [FLAGS]    starts member I on $ROOT/nI, appending to
#                           $ROOT/nI.log; 1 if it does not serve within 10 s
#   kill9 I                 SIGKILL member I and reap it
#   node_status I           its /status JSON ("" if it does not answer)
#   leader                  prints the id of a live member that leads
#   wait_leader [SECONDS]   sets L to one (default 10 s); 1 on timeout
#   stale I KEY             member I's local value of KEY
#   wait_stale I KEY VALUE  until member I's local KEY is VALUE (10 s)

test_setup() {
    BIN=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    mkdir -p "${3:-/tmp}" || exit 1
    ROOT=$(cd "${3:-/tmp}" && pwd)/$1.$$
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    PIDS=()
    FAILS=0
    CHECKS=0
    trap test_cleanup EXIT
}

test_cleanup() {
    exec 2>/dev/null # no "Killed" job notices
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "${KEEP_ROOT_ON_FAIL:-0}" = 1 ] && [ "$FAILS" != 0 ]; then
        echo "logs kept in $ROOT"
    else
        rm -rf "$ROOT"
    fi
}

ok() { CHECKS=$((CHECKS + 1)); }

fail() {
    CHECKS=$((CHECKS + 1))
    FAILS=$((FAILS + 1))
    echo "FAIL: $*"
}

check() {
    local d=$1
    shift
    if "$@"; then ok; else fail "$d"; fi
}

section() { echo "== $*"; }

start_server() {
    local name=$1 dir=$2 want=$3
    shift 3
    LOG=$ROOT/$name.log
    "$BIN" serve --port "$want" --data-dir "$dir" "$@" 2>"$LOG" &
    PID=$!
    PIDS+=("$PID")
    PORT=
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's/.*serving http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$LOG")
        [ -n "$PORT" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $name did not start:" && cat "$LOG"
    return 1
}

listening() { [ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]; }

cluster_ports() {
    local n=$1 i p eph used=" "
    eph=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$eph" -gt 12000 ] || eph=32768
    P=()
    PEERS=""
    for i in $(seq 1 "$n"); do
        P[$i]=""
        for _ in $(seq 1 200); do
            p=$((2000 + RANDOM % (eph - 10000 - 2000)))
            [[ "$used" == *" $p "* ]] && continue
            if ! listening "$p" && ! listening $((p + 10000)); then
                used="$used$p "
                P[$i]=$p
                break
            fi
        done
        [ -n "${P[$i]}" ] || { echo "no free ports"; return 1; }
        PEERS="$PEERS${PEERS:+,}$i=127.0.0.1:${P[$i]}"
    done
}

NPID=()
start_node() {
    local i=$1 log=$ROOT/n$1.log before
    shift
    echo "--- start" >>"$log"
    before=$(grep -c serving "$log")
    "$BIN" serve --port "${P[$i]}" --data-dir "$ROOT/n$i" --peers "$PEERS" "$@" 2>>"$log" &
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

kill9() {
    kill -9 "${NPID[$1]}" 2>/dev/null
    wait "${NPID[$1]}" 2>/dev/null
    NPID[$1]=
}

node_status() { curl -s --max-time 2 "http://127.0.0.1:${P[$1]}/status"; }

leader() {
    local i
    for i in "${!P[@]}"; do
        [ -n "${NPID[$i]:-}" ] && node_status "$i" | grep -q '"role":"leader"' &&
            { echo "$i"; return 0; }
    done
    return 1
}

wait_leader() {
    local tries=$((${1:-10} * 10))
    for _ in $(seq 1 "$tries"); do
        L=$(leader) && return 0
        sleep 0.1
    done
    return 1
}

stale() { curl -s --max-time 2 "http://127.0.0.1:${P[$1]}/kv/$2?consistency=stale"; }

wait_stale() {
    for _ in $(seq 1 100); do
        [ "$(stale "$1" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}
