#!/usr/bin/env bash
# Runs the HTTP workloads against `bitraft serve` and, side by side, nginx
# answering a fixed 10-byte reply (`return 200`), with wrk on the same
# machine: every workload at 1, 16 and 64 connections, ROUNDS rounds taking
# turns, and prints the median req/s of each. Both servers bind 127.0.0.1 on
# free ports and are stopped (by PID) when the script exits.
#
# Usage: bench/http/compare.sh [ROUNDS] [SECONDS] [OUT]
# Needs build/bitraft, wrk and nginx (apt-get install wrk nginx-light; not
# project dependencies).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-5}
out=${3:-bench/results/http-$(date +%Y%m%d-%H%M).txt}
tmp=$(mktemp -d /tmp/bitraft-http-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nport=$(free_port)
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server { listen 127.0.0.1:$nport; location / { return 200 "0123456789"; } }
}
CONF
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -g 'daemon off;' &
pids+=($!)

bport=$(free_port)
build/bitraft serve --port "$bport" --data-dir "$tmp/data" --sync always 2>"$tmp/bitraft.log" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$bport/health" && curl -sf -o /dev/null "http://127.0.0.1:$nport/" && break
    sleep 0.1
done
curl -sf -X PUT --data-binary v "http://127.0.0.1:$bport/kv/bench:1" >/dev/null
# Keys for the ranges: one batch run loads them.
wrk -t1 -c1 -d2s -s bench/http/batch.lua "http://127.0.0.1:$bport" >/dev/null

run() { # NAME URL SCRIPT CONNS -> req/s
    local script=()
    [ -n "$3" ] && script=(-s "$3")
    local t=2
    [ "$4" -eq 1 ] && t=1
    wrk -t"$t" -c"$4" -d"${secs}s" "${script[@]}" "$2" | awk '/Requests\/sec/ {print $2}'
}

{
    echo "# $(date -u +%FT%TZ) nproc=$(nproc) rounds=$rounds seconds=$secs load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# bitraft serve --sync always; nginx 2 workers, return 200; wrk on the same 2 cores"
} > "$out"
workloads=(
    "nginx|http://127.0.0.1:$nport/|"
    "get|http://127.0.0.1:$bport|bench/http/get.lua"
    "put|http://127.0.0.1:$bport|bench/http/put.lua"
    "batch100|http://127.0.0.1:$bport|bench/http/batch.lua"
    "range100|http://127.0.0.1:$bport|bench/http/range.lua"
)
for r in $(seq 1 "$rounds"); do
    for w in "${workloads[@]}"; do
        IFS='|' read -r name url script <<<"$w"
        for c in 1 16 64; do
            echo "round $r: $name c=$c" >&2
            echo "$name $c $(run "$name" "$url" "$script" "$c")" >> "$out"
        done
    done
done
echo "# done $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out"

awk '
/^#/ { print; next }
{ v[$1 " " $2] = v[$1 " " $2] " " $3; names[$1] = 1 }
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END {
    printf "%-10s %10s %10s %10s\n", "req/s", "c=1", "c=16", "c=64"
    split("nginx get put batch100 range100", order, " ")
    for (k = 1; k in order; k++) {
        n = order[k]
        printf "%-10s %10.0f %10.0f %10.0f\n", n, median(v[n " 1"]), median(v[n " 16"]), median(v[n " 64"])
    }
}' "$out"
