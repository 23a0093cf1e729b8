/*
 * fuzz_http.c - libFuzzer target for the HTTP API's parsers: the batch
 * bodies (both forms), range lines, %-decoding and base64. Built only with
 * clang and -DBR_FUZZ=ON:
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DBR_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_http && build-fuzz/tests/http/fuzz_http
 * The first byte picks the parser; a parser must never crash, and every
 * operation it hands on must lie within the limits of its input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static int check_op(void *ctx, int op, const char *k, size_t kl, const char *v, size_t vl) {
    size_t n = *(size_t *)ctx;
    if ((op != BR_OP_PUT && op != BR_OP_DELETE) || kl == 0 || kl > n || vl > n ||
        (op == BR_OP_PUT && !v))
        abort();
    volatile char sink = k[kl - 1];
    if (vl)
        sink = v[vl - 1];
    (void)sink;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char err[128];
    char *out = malloc(n + 1);
    if (!out)
        return 0;
    size_t ol;
    switch (data[0] % 5) {
    case 0:
        br_parse_kv_lines(s, n, check_op, &n, err, sizeof err);
        break;
    case 1:
        br_parse_ndjson_batch(s, n, check_op, &n, err, sizeof err);
        break;
    case 2: {
        const char *k, *v;
        size_t kl, vl;
        int next;
        if (br_parse_range_line(s, n, out, &k, &kl, &v, &vl, &next) == 0 && (kl > n || vl > n))
            abort();
        break;
    }
    case 3:
        if (br_pct_decode(s, n, out, &ol, data[0] & 8) == 0 && ol > n)
            abort();
        break;
    default:
        if (br_base64_dec(s, n, out, &ol) == 0) {
            br_buf b = {0};
            br_base64_enc(&b, out, ol);
            free(b.p);
        }
        break;
    }
    free(out);
    return 0;
}
