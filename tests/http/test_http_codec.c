/* test_http_codec.c - the HTTP API's wire formats (src/http/codec.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

typedef struct rec {
    int n;
    int op[8];
    char k[8][64], v[8][64];
    size_t kl[8], vl[8];
} rec;

static int record(void *ctx, int op, const char *k, size_t kl, const char *v, size_t vl) {
    rec *r = ctx;
    if (r->n == 8)
        return -99;
    r->op[r->n] = op;
    memcpy(r->k[r->n], k, kl);
    r->kl[r->n] = kl;
    if (v)
        memcpy(r->v[r->n], v, vl);
    r->vl[r->n] = vl;
    r->n++;
    return 0;
}

Test(pct, decodes_strictly_and_binary_safely) {
    char out[32];
    size_t n;
    cr_assert_eq(br_pct_decode("a%00b%2Fc+d", 11, out, &n, 0), 0);
    cr_assert_eq(n, 7);
    cr_assert(memcmp(out, "a\0b/c+d", 7) == 0);
    cr_assert_eq(br_pct_decode("a+b", 3, out, &n, 1), 0);
    cr_assert(n == 3 && memcmp(out, "a b", 3) == 0);
    cr_assert_eq(br_pct_decode("%zz", 3, out, &n, 0), -1);
    cr_assert_eq(br_pct_decode("%4", 2, out, &n, 0), -1);
    cr_assert_eq(br_pct_decode("%", 1, out, &n, 0), -1);
    cr_assert_eq(br_pct_decode("ab%", 3, out, &n, 0), -1);
}

Test(pct, encode_round_trips) {
    br_buf b = {0};
    cr_assert_eq(br_pct_encode(&b, "a\0b/ ~", 6), 0);
    cr_assert(b.len == 12 && memcmp(b.p, "a%00b%2F%20~", 12) == 0);
    char out[32];
    size_t n;
    cr_assert_eq(br_pct_decode(b.p, b.len, out, &n, 0), 0);
    cr_assert(n == 6 && memcmp(out, "a\0b/ ~", 6) == 0);
    free(b.p);
}

Test(utf8, validates) {
    cr_assert(br_utf8_valid("h\xc3\xa9llo", 6));
    cr_assert(!br_utf8_valid("\xff", 1));
    cr_assert(!br_utf8_valid("\xc3", 1));
    cr_assert(!br_utf8_valid("\xc0\xaf", 2));        /* overlong */
    cr_assert(!br_utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
    cr_assert(br_utf8_valid("\xf0\x9f\x98\x80", 4)); /* U+1F600 */
}

Test(base64, round_trips) {
    for (size_t len = 0; len < 10; len++) {
        char in[10], out[16];
        for (size_t i = 0; i < len; i++)
            in[i] = (char)(0xf0 + i);
        br_buf b = {0};
        cr_assert_eq(br_base64_enc(&b, in, len), 0);
        size_t n;
        cr_assert_eq(br_base64_dec(b.p ? b.p : "", b.len, out, &n), 0);
        cr_assert_eq(n, len);
        cr_assert(memcmp(in, out, len) == 0);
        free(b.p);
    }
    char out[8];
    size_t n;
    cr_assert_eq(br_base64_dec("a", 1, out, &n), -1);
    cr_assert_eq(br_base64_dec("a*==", 4, out, &n), -1);
}

Test(kv_lines, both_forms_value_is_rest_of_line) {
    rec r = {0};
    const char *body = "key:1,value:2000\r\n\n2,a,b\nkey:x,y,value:z";
    cr_assert_eq(br_parse_kv_lines(body, strlen(body), record, &r, NULL, 0), 3);
    cr_assert(r.kl[0] == 1 && r.k[0][0] == '1' && r.vl[0] == 4 && memcmp(r.v[0], "2000", 4) == 0);
    cr_assert(r.kl[1] == 1 && r.vl[1] == 3 && memcmp(r.v[1], "a,b", 3) == 0);
    cr_assert(r.kl[2] == 3 && memcmp(r.k[2], "x,y", 3) == 0 && r.v[2][0] == 'z');
}

Test(kv_lines, bad_line_names_it_and_nothing_is_handed_on) {
    rec r = {0};
    char err[128];
    const char *body = "a,1\nb,2\nnocomma\n";
    cr_assert_eq(br_parse_kv_lines(body, strlen(body), record, &r, err, sizeof err), -1);
    cr_assert_eq(r.n, 0);
    cr_assert(strstr(err, "line 3") != NULL, "%s", err);
    cr_assert_eq(br_parse_kv_lines(",x", 2, record, &r, err, sizeof err), -1);
    cr_assert_eq(br_parse_kv_lines("\n\n", 2, record, &r, err, sizeof err), -1);
    cr_assert_eq(r.n, 0);
}

Test(ndjson, parses_ops_escapes_and_base64) {
    rec r = {0};
    const char *body = "{\"op\":\"put\",\"key\":\"k\\u00e9\",\"value\":\"a\\nb\"}\n"
                       " { \"key\" : \"d\" , \"op\" : \"delete\" } \n"
                       "{\"op\":\"put\",\"key\":\"YgA=\",\"value\":\"/w==\",\"base64\":true}\n"
                       "{\"op\":\"put\",\"key\":\"s\",\"value\":\"\\ud83d\\ude00\"}";
    char err[128] = "";
    cr_assert_eq(br_parse_ndjson_batch(body, strlen(body), record, &r, err, sizeof err), 4, "%s",
                 err);
    cr_assert(r.op[0] == BR_OP_PUT && r.kl[0] == 3 && memcmp(r.k[0], "k\xc3\xa9", 3) == 0);
    cr_assert(r.vl[0] == 3 && memcmp(r.v[0], "a\nb", 3) == 0);
    cr_assert(r.op[1] == BR_OP_DELETE && r.kl[1] == 1);
    cr_assert(r.kl[2] == 2 && memcmp(r.k[2], "b\0", 2) == 0 && r.vl[2] == 1 &&
              (unsigned char)r.v[2][0] == 0xff);
    cr_assert(r.vl[3] == 4 && memcmp(r.v[3], "\xf0\x9f\x98\x80", 4) == 0);
}

Test(ndjson, rejects_bad_lines_whole) {
    static const char *bad[] = {
        "{\"op\":\"put\",\"key\":\"k\"}",
        "{\"op\":\"delete\",\"key\":\"k\",\"value\":\"v\"}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"x\":\"y\"}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"key\":\"k\"}",
        "{\"op\":\"put\",\"key\":\"\",\"value\":\"v\"}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"\\ud800\"}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":1}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"} x",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"\x01\"}",
        "{\"op\":\"put\",\"key\":\"k\",\"value\":\"\xff\"}",
        "{\"op\":\"put\",\"key\":\"**\",\"value\":\"v\",\"base64\":true}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rec r = {0};
        char body[256], err[128] = "";
        int n = snprintf(body, sizeof body, "{\"op\":\"put\",\"key\":\"ok\",\"value\":\"1\"}\n%s",
                         bad[i]);
        cr_assert_eq(br_parse_ndjson_batch(body, (size_t)n, record, &r, err, sizeof err), -1,
                     "accepted: %s", bad[i]);
        cr_assert_eq(r.n, 0);
        cr_assert(strstr(err, "line 2") != NULL, "%s: %s", bad[i], err);
    }
}

Test(range_line, round_trips_text_binary_and_next) {
    br_buf b = {0};
    cr_assert_eq(br_range_line(&b, "k\"1", 3, "v\n", 2), 0);
    cr_assert_eq(br_range_line(&b, "b\0", 2, "\xff", 1), 0);
    cr_assert_eq(br_range_line(&b, "n", 1, NULL, 0), 0);
    char scratch[256];
    const char *k, *v;
    size_t kl, vl;
    int next;
    char *line = b.p, *nl = memchr(line, '\n', b.len);
    cr_assert_eq(br_parse_range_line(line, (size_t)(nl - line), scratch, &k, &kl, &v, &vl, &next),
                 0);
    cr_assert(!next && kl == 3 && memcmp(k, "k\"1", 3) == 0 && vl == 2 && v[0] == 'v');
    line = nl + 1, nl = memchr(line, '\n', b.len - (size_t)(line - b.p));
    cr_assert(strstr(line, "\"base64\":true") != NULL);
    cr_assert_eq(br_parse_range_line(line, (size_t)(nl - line), scratch, &k, &kl, &v, &vl, &next),
                 0);
    cr_assert(!next && kl == 2 && k[1] == 0 && vl == 1 && (unsigned char)v[0] == 0xff);
    line = nl + 1, nl = memchr(line, '\n', b.len - (size_t)(line - b.p));
    cr_assert_eq(br_parse_range_line(line, (size_t)(nl - line), scratch, &k, &kl, &v, &vl, &next),
                 0);
    cr_assert(next && kl == 1 && k[0] == 'n');
    free(b.p);
}

Test(u64, parses_decimal_only) {
    uint64_t v;
    cr_assert(br_parse_u64("18446744073709551615", 20, &v) == 0 && v == UINT64_MAX);
    cr_assert_eq(br_parse_u64("18446744073709551616", 20, &v), -1);
    cr_assert_eq(br_parse_u64("", 0, &v), -1);
    cr_assert_eq(br_parse_u64("-1", 2, &v), -1);
    cr_assert_eq(br_parse_u64("1x", 2, &v), -1);
}

Test(intkey, big_endian_round_trip_in_numeric_order) {
    char a[8], b[8], d[21];
    cr_assert_eq(br_intkey_enc("2", 1, a), 0);
    cr_assert_eq(br_intkey_enc("10", 2, b), 0);
    cr_assert_lt(memcmp(a, b, 8), 0);
    cr_assert_eq(br_intkey_dec(b, 8, d), 2);
    cr_assert_str_eq(d, "10");
    cr_assert_eq(br_intkey_enc("18446744073709551615", 20, a), 0);
    cr_assert_eq(br_intkey_dec(a, 8, d), 20);
    cr_assert_str_eq(d, "18446744073709551615");
    cr_assert_eq(br_intkey_enc("18446744073709551616", 20, a), -1);
    cr_assert_eq(br_intkey_enc("x", 1, a), -1);
    cr_assert_eq(br_intkey_enc("", 0, a), -1);
    cr_assert_eq(br_intkey_dec(a, 7, d), 0);
}
