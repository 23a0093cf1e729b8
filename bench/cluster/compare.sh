#!/usr/bin/env bash
# shellcheck disable=SC2046  # $(urls S) splits into three URLs on purpose
# A 3-node etcd cluster and a 3-node bitraft cluster on 127.0.0.1, the same
# workloads against each through its leader, with wrk on the same machine
# (issue 6): puts (16-byte keys, 100-byte values) at 1, 16 and 64
# connections with p50/p99, linearizable gets and ranges of 100 keys at the
# same connection counts through the leader, linearizable gets with 21
# connections on each member at once ("get-all 63"), then failover (kill -9 the leader, time to the
# first successful write) FAILOVERS times. Rounds take turns between the
# systems; the summary is the median of the rounds.
#
# Usage: bench/cluster/compare.sh [SYSTEMS] [ROUNDS] [SECONDS] [FAILOVERS] [OUT]
#   SYSTEMS   etcd, bitraft or etcd,bitraft (default)
#   defaults: 3 rounds of 5 s per run, 5 failovers,
#             OUT bench/cluster/results/cluster-DATE.txt (raw lines, summary)
# Environment:
#   BITRAFT            the binary (default build/bitraft)
#   BENCH_ETCD_HEARTBEAT_MS  etcd --heartbeat-interval (default 100, etcd's own)
#   BENCH_ETCD_ELECTION_MS   etcd --election-timeout (default 1000, etcd's own)
#   BR_HEARTBEAT_MS, BR_ELECTION_MS  bitraft's (default 50 and 150)
#   BR_SERVE_FLAGS     more flags for every bitraft serve (e.g. --threads 1)
#
# Needs etcd, wrk, curl and python3 (scripts/deps.sh bench). Every process
# binds 127.0.0.1 on ports the kernel picked free, keeps its data under
# /tmp, and is killed by its PID when the script exits; every wrk run and
# every wait is bounded in time.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
systems=${1:-etcd,bitraft}
rounds=${2:-3}
secs=${3:-5}
failovers=${4:-5}
out=${5:-bench/cluster/results/cluster-$(date +%Y%m%d-%H%M).txt}
BITRAFT=${BITRAFT:-build/bitraft}
BENCH_ETCD_HEARTBEAT_MS=${BENCH_ETCD_HEARTBEAT_MS:-100}
BENCH_ETCD_ELECTION_MS=${BENCH_ETCD_ELECTION_MS:-1000}
BR_HEARTBEAT_MS=${BR_HEARTBEAT_MS:-50}
BR_ELECTION_MS=${BR_ELECTION_MS:-150}
BR_SERVE_FLAGS=${BR_SERVE_FLAGS:-}
NKEYS=10000
CTL=bench/cluster/clusterctl.py
tmp=$(mktemp -d /tmp/bitraft-cluster-bench.XXXXXX)

declare -A PID      # "etcd0" -> pid
declare -A URL      # "etcd0" -> http://127.0.0.1:port
declare -A CMD      # "etcd0" -> the command line, to restart it
cleanup() {
    exec 2>/dev/null # no "Killed" job notices
    for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# Distinct free ports: bound together so the kernel hands out different ones.
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# start NAME LOGFILE CMD...: starts a node in the background, remembers it.
start() {
    local name=$1 logf=$2
    shift 2
    CMD[$name]="$*"
    "$@" >"$logf" 2>&1 &
    PID[$name]=$!
}

restart() { # NAME
    # shellcheck disable=SC2086
    ${CMD[$1]} >>"$tmp/$1.log" 2>&1 &
    PID[$1]=$!
}

# wait_until SECONDS CMD...: retries CMD every 0.1 s; 1 if it never succeeds.
wait_until() {
    local end=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt $end ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# The three nodes' URLs, as separate words (unquoted use is deliberate).
urls() { echo "${URL[${1}0]} ${URL[${1}1]} ${URL[${1}2]}"; }

# --- etcd ------------------------------------------------------------------

etcd_start_cluster() {
    local ports cluster="" i
    read -r -a ports <<<"$(free_ports 6)"
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:${ports[$((i + 3))]}"
    done
    for i in 0 1 2; do
        URL[etcd$i]=http://127.0.0.1:${ports[$i]}
        start "etcd$i" "$tmp/etcd$i.log" etcd --name "e$i" --data-dir "$tmp/etcd$i" \
            --listen-client-urls "${URL[etcd$i]}" --advertise-client-urls "${URL[etcd$i]}" \
            --listen-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
            --initial-cluster "$cluster" --initial-cluster-token "bench-$$" \
            --initial-cluster-state new \
            --heartbeat-interval "$BENCH_ETCD_HEARTBEAT_MS" --election-timeout "$BENCH_ETCD_ELECTION_MS"
    done
}

# --- bitraft ---------------------------------------------------------------

# The cluster serve mode's flags: HTTP ports in --peers, raft ports given
# explicitly (free ones, not client + 10000), every node dialing its peers'
# raft ports directly.
bitraft_start_cluster() {
    local ports peers="" i j raddrs
    read -r -a ports <<<"$(free_ports 6)"
    for i in 0 1 2; do
        peers+="${peers:+,}$((i + 1))=127.0.0.1:${ports[$i]}"
    done
    for i in 0 1 2; do
        URL[bitraft$i]=http://127.0.0.1:${ports[$i]}
        raddrs=""
        for j in 0 1 2; do
            [ "$j" = "$i" ] && continue
            raddrs+="${raddrs:+,}$((j + 1))=127.0.0.1:${ports[$((j + 3))]}"
        done
        start "bitraft$i" "$tmp/bitraft$i.log" "$BITRAFT" serve --port "${ports[$i]}" \
            --data-dir "$tmp/bitraft$i" --node-id $((i + 1)) --peers "$peers" \
            --raft-port "${ports[$((i + 3))]}" --peer-raft-addrs "$raddrs" \
            --cluster-token "bench-$$" --election-ms "$BR_ELECTION_MS" \
            --heartbeat-ms "$BR_HEARTBEAT_MS" $BR_SERVE_FLAGS
    done
}

# --- both ------------------------------------------------------------------

healthy() { # SYSTEM: every node answers and a leader is elected
    python3 "$CTL" healthy "$1" $(urls "$1")
}

healthy_or_dead() { # SYSTEM: healthy, or a node exited (stop waiting)
    kill -0 "${PID[${1}0]}" 2>/dev/null && kill -0 "${PID[${1}1]}" 2>/dev/null &&
        kill -0 "${PID[${1}2]}" 2>/dev/null || return 0
    healthy "$1"
}

leader_url() { # SYSTEM
    local i
    i=$(python3 "$CTL" leader "$1" $(urls "$1")) || return 1
    echo "${URL[$1$i]}"
}

# run_wrk URL SCRIPT CONNS -> "req/s p50_ms p99_ms non2xx kinds" (non2xx:
# counted by the scripts, 3xx included; kinds: 3xx_A_4xx_B_5xx_C or -)
run_wrk() {
    local t=2
    [ "$3" -eq 1 ] && t=1
    timeout $((secs + 30)) wrk -t"$t" -c"$3" -d"${secs}s" --timeout 5s --latency -s "$2" "$1" |
        awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            return v
        }
        /Requests\/sec/ { rps = $2 }
        $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        /^non-2xx:/ { bad = $2; split($0, parts, "[()]"); kinds = parts[2]; gsub(/[ ,]+/, "_", kinds) }
        END { printf "%s %.2f %.2f %d %s\n", rps ? rps : 0, p50, p99, bad, bad ? kinds : "-" }'
}

# run_wrk_all SYSTEM SCRIPT CONNS: one wrk per member at once, CONNS/3
# connections each (linearizable reads on every member: each asks the
# leader for a read index); prints the summed req/s, the largest p50 and
# p99, the summed non2xx.
run_wrk_all() {
    local s=$1 i res=()
    for i in 0 1 2; do
        run_wrk "${URL[$s$i]}" "$2" $(($3 / 3)) >"$tmp/wrk$i" &
    done
    wait
    cat "$tmp/wrk0" "$tmp/wrk1" "$tmp/wrk2" | awk '
        { r += $1; if ($2 > p50) p50 = $2; if ($3 > p99) p99 = $3; bad += $4 }
        END { printf "%s %.2f %.2f %d %s\n", r, p50, p99, bad, bad ? "see_wrk" : "-" }'
}

run_workloads() { # SYSTEM ROUND
    local s=$1 r=$2 url w c res
    url=$(leader_url "$s") || { log "$s: no leader"; return 1; }
    for w in put get range; do
        for c in 1 16 64; do
            log "round $r: $s $w c=$c ($url)"
            res=$(run_wrk "$url" "bench/cluster/${s}_$w.lua" "$c")
            echo "$s $w $c $res load=$(load | tr ' ' '/')" >>"$out"
        done
    done
    log "round $r: $s get on all members c=63"
    res=$(run_wrk_all "$s" "bench/cluster/${s}_get.lua" 63)
    echo "$s get-all 63 $res load=$(load | tr ' ' '/')" >>"$out"
}

# failover SYSTEM N: kill -9 the leader, time the first successful write
# through the survivors, restart the old leader, wait for a healthy cluster.
failover() {
    local s=$1 n=$2 i victim survivors=() t
    i=$(python3 "$CTL" leader "$s" $(urls "$s")) || { log "$s: no leader"; return 1; }
    victim=$s$i
    for j in 0 1 2; do [ "$j" = "$i" ] || survivors+=("${URL[$s$j]}"); done
    t=$(timeout 60 python3 "$CTL" failover "$s" "${PID[$victim]}" "${survivors[@]}")
    wait "${PID[$victim]}" 2>/dev/null
    echo "$s failover $n ${t:-none} load=$(load | tr ' ' '/')" >>"$out"
    log "$s failover $n: ${t:-none} s"
    restart "$victim"
    wait_until 60 healthy "$s" || log "$s: not healthy again after failover $n"
    sleep 2
}

IFS=',' read -r -a sys_list <<<"$systems"
mkdir -p "$(dirname "$out")"
{
    echo "# $(date -u +%FT%TZ) nproc=$(nproc) systems=$systems rounds=$rounds seconds=$secs failovers=$failovers load: $(load)"
    echo "# etcd $(etcd --version 2>/dev/null | head -1 | cut -d' ' -f3) heartbeat=${BENCH_ETCD_HEARTBEAT_MS}ms election=${BENCH_ETCD_ELECTION_MS}ms; bitraft $BITRAFT heartbeat=${BR_HEARTBEAT_MS}ms election=${BR_ELECTION_MS}ms; wrk on the same cores"
    echo "# fields: system workload conns req/s p50_ms p99_ms non2xx kinds load"
} >"$out"

for s in "${sys_list[@]}"; do
    "${s}_start_cluster"
    if ! wait_until 60 healthy_or_dead "$s" || ! healthy "$s"; then
        log "$s cluster did not come up; logs in $tmp:"
        tail -n 5 "$tmp/${s}"*.log >&2
        exit 1
    fi
    url=$(leader_url "$s")
    log "$s: loading $NKEYS keys through $url"
    timeout 300 python3 "$CTL" load "$s" "$url" "$NKEYS" || log "$s: load incomplete"
    echo "# $s check: $(timeout 20 python3 "$CTL" check "$s" "$url")" >>"$out"
done

for r in $(seq 1 "$rounds"); do
    for s in "${sys_list[@]}"; do
        run_workloads "$s" "$r"
    done
done
for n in $(seq 1 "$failovers"); do
    for s in "${sys_list[@]}"; do
        failover "$s" "$n"
    done
done
echo "# done $(date -u +%FT%TZ) load: $(load)" >>"$out"

summary=$(awk '
/^#/ { next }
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
$2 == "failover" { f[$1] = f[$1] " " $4; sys[$1] = 1; next }
{ k = $1 " " $2 " " $3; rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; bad[k] += $7; sys[$1] = 1 }
END {
    printf "%-8s %-9s %5s %10s %9s %9s %7s\n", "system", "workload", "conns", "req/s", "p50_ms", "p99_ms", "non2xx"
    for (s in sys) {
        split("put get range get-all", ws, " ")
        for (w = 1; w <= 4; w++) for (c = 1; c <= 64; c = c == 1 ? 16 : c == 16 ? 63 : c == 63 ? 64 : 65) {
            k = s " " ws[w] " " c
            if (!(k in rps)) continue
            printf "%-8s %-9s %5d %10.0f %9.2f %9.2f %7d\n", s, ws[w], c, median(rps[k]), median(p50[k]), median(p99[k]), bad[k]
        }
        if (s in f) printf "%-8s failover  median %s s (runs:%s)\n", s, median(f[s]), f[s]
    }
}' "$out")
grep '^#' "$out"
echo "$summary"
{
    echo "# medians of the rounds:"
    while IFS= read -r l; do echo "# $l"; done <<<"$summary"
} >>"$out"
