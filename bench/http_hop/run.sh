#!/usr/bin/env bash
# Builds http_hop.c and measures each mode with wrk -t2 -c64 (a 10-byte GET
# reply), the modes taking turns for ROUNDS rounds; prints req/s, wrk's
# p50/p99 and the server's CPU time per request, then the medians.
#
# Usage: bench/http_hop/run.sh [ROUNDS] [SECONDS] [MODES]
#   defaults: 3 rounds of 5 s, modes "mhd-direct mhd h2o h2o-one"
# Needs libh2o-dev, libmicrohttpd-dev, libuv1-dev and wrk (apt-get install
# libh2o-dev: not a dependency of bitraft itself). Binds 127.0.0.1 on a
# port the kernel picked free; the server is killed by its PID on exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
secs=${2:-5}
modes=${3:-mhd-direct mhd h2o h2o-one}
tmp=$(mktemp -d /tmp/http-hop.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
gcc -O2 -Wall -Wextra -Werror -o "$tmp/http_hop" "$here/http_hop.c" \
    $(pkg-config --cflags --libs libh2o libmicrohttpd libuv) -lpthread || exit 1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
hz=$(getconf CLK_TCK)
echo "# fields: mode req/s p50_ms p99_ms cpu_us_per_request load"
for r in $(seq 1 "$rounds"); do
    for m in $modes; do
        "$tmp/http_hop" "$m" "$port" &
        pid=$!
        for _ in $(seq 1 50); do
            curl -s -o /dev/null "http://127.0.0.1:$port/" && break
            sleep 0.1
        done
        c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        res=$(timeout $((secs + 30)) wrk -t2 -c64 -d"${secs}s" --latency "http://127.0.0.1:$port/" |
            awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                                  if (v ~ /s$/) return v * 1000; return v }
                /Requests\/sec/ { rps = $2 }
                $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
                $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
                END { printf "%s %.2f %.2f\n", rps ? rps : 0, p50, p99 }')
        c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        kill "$pid"
        wait "$pid" 2>/dev/null
        pid=
        cpu=$(awk -v d=$((c1 - c0)) -v rps="${res%% *}" -v s="$secs" -v hz="$hz" \
            'BEGIN { printf "%.1f", (rps > 0 ? d / hz / (rps * s) * 1e6 : 0) }')
        echo "$m $res cpu_us=$cpu load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$tmp/raw"
    done
done
awk '
function med(l,   a, n, i, j, t) {
    n = split(l, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ v[$1] = v[$1] " " $2; c = $5; sub("cpu_us=", "", c); u[$1] = u[$1] " " c; p[$1] = p[$1] " " $4 }
END { for (k in v) printf "median %s: %.0f req/s, p99 %.2f ms, %.1f us server CPU per request (runs:%s)\n", k, med(v[k]), med(p[k]), med(u[k]), v[k] }' "$tmp/raw" | sort
