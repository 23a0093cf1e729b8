#!/usr/bin/env bash
# Runs every curl example of docs/API.md against a real `bitraft serve`, so
# the documentation cannot drift from the server: each request must get an
# HTTP answer below 500. Servers bind 127.0.0.1 on ports the kernel picks
# and are killed by PID when the script exits.
#
# Usage: api_doc_test.sh BITRAFT_BINARY API_MD TMPDIR
set -u
# shellcheck source=../lib/cluster.sh
. "$(dirname "$0")/../lib/cluster.sh"
test_setup api-doc-test "${1:?usage: api_doc_test.sh BITRAFT API_MD TMPDIR}" "${3:-/tmp}"
DOC=${2:?}

start_server bytes "$ROOT/bytes" 0 || exit 1
BYTES_PORT=$PORT
start_server ints "$ROOT/ints" 0 --int-keys || exit 1
INT_PORT=$PORT

# Every fenced block of the document that runs curl, one file per block.
awk -v dir="$ROOT" '
/^```/ { if (inblock) { close(f); inblock = 0 } else { n++; f = dir "/block" n ".sh"; inblock = 1 } next }
inblock { print > f }
' "$DOC"

cd "$ROOT"
printf 'photo bytes' > photo.jpg
for b in "$ROOT"/block*.sh; do
    grep -q '\bcurl\b' "$b" || continue
    port=$BYTES_PORT
    grep -q -- '--int-keys' "$b" && port=$INT_PORT
    # Servers are ours; requests go to them only, with a time limit, and
    # each one's status code is checked.
    {
        echo 'curl() { local c; c=$(command curl -s -o /dev/null -w "%{http_code}" --max-time 5 "$@");'
        echo '  local a="$*"; echo "$c ${a//$'"'"'\n'"'"'/ }" >> codes; }'
        grep -v '^bitraft serve' "$b" | sed "s/localhost:4000/127.0.0.1:$port/g"
    } > run.sh
    : > codes
    bash run.sh
    while read -r code rest; do
        CHECKS=$((CHECKS + 1))
        if [ "$code" = 000 ] || [ "$code" -ge 500 ]; then
            FAILS=$((FAILS + 1))
            echo "FAIL: $code for: curl $rest"
        fi
    done < codes
done

# The examples that promise a result.
got=$(command curl -s --max-time 5 "http://127.0.0.1:$INT_PORT/?start_key=1&end_key=10")
CHECKS=$((CHECKS + 1))
case "$got" in
*2000*5000*) case "$got" in *502*) FAILS=$((FAILS + 1)); echo "FAIL: key 11 in 1..10: $got" ;; esac ;;
*) FAILS=$((FAILS + 1)); echo "FAIL: numeric range: $got" ;;
esac

echo "api docs: $((CHECKS - FAILS)) passed, $FAILS failed"
[ "$CHECKS" -gt 10 ] || { echo "FAIL: only $CHECKS requests found in $DOC"; exit 1; }
[ "$FAILS" -eq 0 ]
