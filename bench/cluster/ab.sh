#!/usr/bin/env bash
# shellcheck disable=SC2086  # URL lists split into words on purpose
# A/B of bitraft binaries as 3-node clusters on 127.0.0.1: one cluster per
# binary (all up at once, idle but for heartbeats when not measured), 10,000
# keys loaded through each leader, then ROUNDS rounds of puts and
# linearizable gets at 64 connections (bitraft_put.lua, bitraft_get.lua),
# the binaries taking turns (the order reverses every round). Besides req/s
# and wrk's p50/p99 it prints the CPU time the three nodes used per request
# (utime + stime from /proc), a steadier figure than req/s on a machine
# other work shares, and wrk's own CPU time per request (wrk_us).
#
# Usage: bench/cluster/ab.sh ROUNDS SECONDS BINARY[|FLAG|VALUE...] ...
#   e.g. bench/cluster/ab.sh 5 5 ./ref-bitraft build/bitraft 'build/bitraft|--threads|2'
# Environment: IDLE=N also holds N idle keep-alive connections open to each
#   leader during the runs; PERF=1 records `perf record -g` of the first
#   binary's leader (PERF=2: the whole machine) during round 1 into
#   perf-put.data and perf-get.data in the current directory; PERF=3 counts
#   each node's system calls instead (perf-put-PID.stat, perf-get-PID.stat).
# Every process binds 127.0.0.1 on ports the kernel picked free, keeps its
# data under /tmp and is killed by its PID when the script exits.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:?usage: ab.sh ROUNDS SECONDS BINARY...}
secs=${2:?}
shift 2
bins=("$@")
tmp=$(mktemp -d /tmp/bitraft-ab.XXXXXX)
pids=()
cleanup() {
    exec 2>/dev/null
    for p in "${pids[@]}"; do kill -9 "$p"; done
    wait
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
cpu_ticks() { # PIDS -> utime + stime of them all, in clock ticks
    local t=0 p
    for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
declare -A URLS LEADER LPID NPIDS
for b in "${!bins[@]}"; do
    read -r -a ports <<<"$(free_ports 6)"
    read -r -a spec <<<"${bins[$b]//|/ }"
    peers=""
    for i in 0 1 2; do peers+="${peers:+,}$((i + 1))=127.0.0.1:${ports[$i]}"; done
    for i in 0 1 2; do
        raddrs=""
        for j in 0 1 2; do
            [ "$j" = "$i" ] && continue
            raddrs+="${raddrs:+,}$((j + 1))=127.0.0.1:${ports[$((j + 3))]}"
        done
        "${spec[0]}" serve "${spec[@]:1}" --port "${ports[$i]}" --data-dir "$tmp/c$b-$i" \
            --node-id $((i + 1)) --peers "$peers" --raft-port "${ports[$((i + 3))]}" \
            --peer-raft-addrs "$raddrs" --cluster-token "ab-$$" --election-ms 150 \
            --heartbeat-ms 50 >"$tmp/c$b-$i.log" 2>&1 &
        pids+=($!)
        NPIDS[$b]="${NPIDS[$b]:-} $!"
        URLS[$b]="${URLS[$b]:-} http://127.0.0.1:${ports[$i]}"
    done
done
for b in "${!bins[@]}"; do
    li=
    for _ in $(seq 1 150); do
        li=$(python3 "$here/clusterctl.py" leader bitraft ${URLS[$b]} 2>/dev/null) && break
        sleep 0.2
    done
    [ -n "$li" ] || { echo "binary $b: no leader; logs in $tmp" >&2; exit 1; }
    read -r -a us <<<"${URLS[$b]}"
    read -r -a ps <<<"${NPIDS[$b]}"
    LEADER[$b]=${us[$li]}
    LPID[$b]=${ps[$li]}
    timeout 300 python3 "$here/clusterctl.py" load bitraft "${LEADER[$b]}" 10000 ||
        echo "binary $b: load incomplete" >&2
done
if [ "${IDLE:-0}" != 0 ]; then
    for b in "${!bins[@]}"; do
        hp=${LEADER[$b]#http://}
        python3 -c '
import socket, sys, time
ss = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    ss.append(s)
time.sleep(86400)' "${hp%:*}" "${hp#*:}" "$IDLE" &
        pids+=($!)
    done
    sleep 5
fi
out=$tmp/raw
run() { # BINARY_INDEX WORKLOAD ROUND
    local b=$1 w=$2 r=$3 perfpid="" c0 c1 res rps cpu wcpu
    if [ "${PERF:-0}" != 0 ] && [ "$b" = 0 ] && [ "$r" = 1 ]; then
        local scope="-p ${LPID[$b]}"
        [ "$PERF" = 2 ] && scope=-a
        if [ "$PERF" = 3 ]; then
            local p
            for p in ${NPIDS[$b]}; do
                perf stat -e 'syscalls:sys_enter_*' -x, -o "perf-$w-$p.stat" -p "$p" -- sleep "$secs" >/dev/null 2>&1 &
                perfpid+=" $!"
            done
        else
            perf record -g -o "perf-$w.data" $scope -- sleep "$secs" >/dev/null 2>&1 &
            perfpid=$!
        fi
    fi
    c0=$(cpu_ticks "${NPIDS[$b]}")
    # bash's time: wrk's own user + system seconds (the load generator's
    # share of the 2 cores)
    { TIMEFORMAT='%U %S'; time timeout $((secs + 30)) wrk -t2 -c64 -d"${secs}s" --timeout 5s \
        --latency -s "$here/bitraft_$w.lua" "${LEADER[$b]}" >"$tmp/wrk.out"; } 2>"$tmp/wrk.time"
    res=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                              if (v ~ /s$/) return v * 1000; return v }
            /Requests\/sec/ { rps = $2 }
            $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
            $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
            /^non-2xx:/ { bad = $2 }
            END { printf "%s %.2f %.2f %d\n", rps ? rps : 0, p50, p99, bad }' "$tmp/wrk.out")
    [ -n "$perfpid" ] && wait $perfpid
    c1=$(cpu_ticks "${NPIDS[$b]}")
    rps=${res%% *}
    cpu=$(awk -v d=$((c1 - c0)) -v r="$rps" -v s="$secs" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.1f", (r > 0 ? d / hz / (r * s) * 1e6 : 0) }')
    wcpu=$(awk -v r="$rps" -v s="$secs" 'NR == 1 { printf "%.1f", (r > 0 ? ($1 + $2) / (r * s) * 1e6 : 0) }' "$tmp/wrk.time")
    echo "$b $w $res cpu_us=$cpu load=$(cut -d' ' -f1 /proc/loadavg) wrk_us=$wcpu" | tee -a "$out"
}
echo "# fields: binary workload req/s p50_ms p99_ms non2xx cpu_us_per_request load wrk_us_per_request"
for r in $(seq 1 "$rounds"); do
    for w in put get; do
        if [ $((r % 2)) = 1 ]; then order=$(seq 0 $((${#bins[@]} - 1))); else order=$(seq $((${#bins[@]} - 1)) -1 0); fi
        for b in $order; do run "$b" "$w" "$r"; done
    done
done
for b in "${!bins[@]}"; do echo "binary $b = ${bins[$b]}"; done
awk '
function med(l,   a, n, i, j, t) {
    n = split(l, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ k = $1 " " $2; v[k] = v[k] " " $3; p[k] = p[k] " " $5; c = $7; sub("cpu_us=", "", c); u[k] = u[k] " " c }
END { for (k in v) printf "median binary %s: %.0f req/s, p99 %.2f ms, %.1f us CPU per request (runs:%s)\n", k, med(v[k]), med(p[k]), med(u[k]), v[k] }' "$out" | sort
