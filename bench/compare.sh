#!/usr/bin/env bash
# Runs the engine workload on bitraft and on the reference engines side by
# side, ROUNDS times in turn (so machine noise falls on all alike), and
# prints the median of each figure per engine, with bitraft's ratio to each
# (ops/s for the phases, seconds for reopen_s, MB for memory and disk: for
# the last three a ratio below 1 is bitraft's advantage). idx_B/key is the
# index's bytes per key beyond the key after reopen, idx_B/key_f after the
# random fill.
#
# Usage: bench/compare.sh [ROUNDS] [N] [OUT]
#   ROUNDS  rounds of all engines (default 3)
#   N       records (default 2000000)
#   OUT     raw JSON lines go here (default bench/results/compare-DATE.jsonl)
# Needs build/bitraft-bench and build/bitraft-refbench (make bench-deps build).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
n=${2:-2000000}
out=${3:-bench/results/compare-$(date +%Y%m%d-%H%M).jsonl}
engines=(bitraft lmdb leveldb rocksdb)
mkdir -p "$(dirname "$out")"
{
    echo "# $(date -u +%FT%TZ) nproc=$(nproc) n=$n rounds=$rounds load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
} > "$out"
for r in $(seq 1 "$rounds"); do
    for e in "${engines[@]}"; do
        echo "round $r/$rounds: $e" >&2
        if [ "$e" = bitraft ]; then
            build/bitraft-bench engine --n "$n" 2>/dev/null | sed "s/^{/{\"round\":$r,/" >> "$out"
        else
            build/bitraft-refbench "$e" --n "$n" 2>/dev/null | sed "s/^{/{\"round\":$r,/" >> "$out"
        fi
    done
done
echo "# done $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out"

# Medians: ops/s per phase (seconds for reopen), and the memory/disk line.
awk -v engines="${engines[*]}" '
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function field(line, name,   m) {
    if (match(line, "\"" name "\":\"?[^,\"}]*")) { m = substr(line, RSTART, RLENGTH); sub(/^[^:]*:"?/, "", m); return m }
    return ""
}
/^#/ { print; next }
{
    e = field($0, "engine"); p = field($0, "phase")
    if (p == "") {
        p = "peak_rss_MB"; v = field($0, "peak_rss_bytes") / 1e6
        vals[e, p] = vals[e, p] " " v; phases[p] = 1
        if (e == "bitraft") {
            p = "idx_B/key"; v = field($0, "index_bytes_per_key")
            vals[e, p] = vals[e, p] " " v; phases[p] = 1
            p = "idx_B/key_f"; v = field($0, "index_bytes_per_key_after_fill")
            vals[e, p] = vals[e, p] " " v; phases[p] = 1
        }
        p = "disk_MB"; v = field($0, "disk_bytes") / 1e6
    } else if (p == "reopen") { p = "reopen_s"; v = field($0, "seconds") }
    else v = field($0, "ops_per_s")
    vals[e, p] = vals[e, p] " " v; phases[p] = 1
}
END {
    n = split(engines, en, " ")
    split("fillrandom fillbatch readrandom scan100 fullscan reopen_s rawsync syncwrite syncwrite16 peak_rss_MB disk_MB idx_B/key idx_B/key_f", order, " ")
    printf "%-12s", "phase"; for (i = 1; i <= n; i++) printf " %12s", en[i]
    for (i = 2; i <= n; i++) printf " %10s", "bt/" en[i]; printf "\n"
    for (k = 1; k in order; k++) {
        p = order[k]; if (!(p in phases)) continue
        printf "%-12s", p
        for (i = 1; i <= n; i++) { m[i] = ((en[i], p) in vals) ? median(vals[en[i], p]) : ""; printf " %12s", m[i] == "" ? "-" : (m[i] + 0 >= 100 ? sprintf("%.0f", m[i]) : sprintf("%.3g", m[i])) }
        for (i = 2; i <= n; i++) printf " %10s", (m[1] != "" && m[i] + 0 > 0) ? sprintf("%.2f", m[1] / m[i]) : "-"
        printf "\n"
    }
}' "$out"
