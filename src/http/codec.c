/*
 * codec.c - percent-encoding, UTF-8, JSON strings, base64, and the batch
 * and range line formats of the HTTP API (see codec.h and docs/API.md).
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Buffers ------------------------------------------------------------- */

int br_buf_add(br_buf *b, const void *data, size_t n) {
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

int br_buf_addc(br_buf *b, char c) {
    return br_buf_add(b, &c, 1);
}

int br_buf_adds(br_buf *b, const char *s) {
    return br_buf_add(b, s, strlen(s));
}

/* ---- Percent-encoding ---------------------------------------------------- */

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int br_pct_decode(const char *in, size_t n, char *out, size_t *outlen, int plus_space) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int h = hexval((unsigned char)in[i + 1]), l = hexval((unsigned char)in[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            out[o++] = (char)(h << 4 | l);
            i += 2;
        } else if (c == '+' && plus_space) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    *outlen = o;
    return 0;
}

int br_pct_encode(br_buf *b, const void *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        int unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            if (br_buf_addc(b, (char)c))
                return -1;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (br_buf_add(b, e, 3))
                return -1;
        }
    }
    return 0;
}

/* ---- UTF-8 and JSON strings ---------------------------------------------- */

int br_utf8_valid(const void *s, size_t n) {
    const unsigned char *p = s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int br_json_str(br_buf *b, const void *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s;
    if (br_buf_addc(b, '"'))
        return -1;
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (br_buf_add(b, p + run, i - run))
            return -1;
        run = i + 1;
        char e[6] = {'\\', 0};
        size_t el = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        }
        if (br_buf_add(b, e, el))
            return -1;
    }
    if (br_buf_add(b, p + run, n - run))
        return -1;
    return br_buf_addc(b, '"');
}

/* ---- Base64 -------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int br_base64_enc(br_buf *b, const void *s, size_t n) {
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char o[4] = {b64[v >> 18 & 63], b64[v >> 12 & 63], i + 1 < n ? b64[v >> 6 & 63] : '=',
                     i + 2 < n ? b64[v & 63] : '='};
        if (br_buf_add(b, o, 4))
            return -1;
    }
    return 0;
}

static int b64val(unsigned char c) {
    const char *q = c ? strchr(b64, c) : NULL;
    return q ? (int)(q - b64) : -1;
}

int br_base64_dec(const char *in, size_t n, char *out, size_t *outlen) {
    while (n && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    *outlen = o;
    return 0;
}

int br_parse_u64(const char *s, size_t n, uint64_t *out) {
    if (n == 0 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int br_intkey_enc(const char *s, size_t n, char out[8]) {
    uint64_t v;
    if (br_parse_u64(s, n, &v))
        return -1;
    for (int i = 0; i < 8; i++)
        out[i] = (char)(v >> (56 - 8 * i));
    return 0;
}

size_t br_intkey_dec(const void *key, size_t klen, char out[21]) {
    if (klen != 8)
        return 0;
    const unsigned char *k = key;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | k[i];
    int n = snprintf(out, 21, "%llu", (unsigned long long)v);
    return n > 0 ? (size_t)n : 0;
}

/* ---- A flat JSON object of string and boolean members -------------------- */

typedef struct jfield {
    char name[12];
    int is_bool, bval;
    const char *s; /* decoded string (in scratch) */
    size_t n;
} jfield;

typedef struct lexer {
    const char *p, *end;
} lexer;

static void skip_ws(lexer *l) {
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\r' || *l->p == '\n'))
        l->p++;
}

static void put_utf8(char *out, size_t *o, uint32_t cp) {
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | cp >> 18);
        out[(*o)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0)
            return -1;
        *v = *v << 4 | (uint32_t)h;
    }
    return 0;
}

/* Decodes a JSON string at l->p (on the opening quote) into out, which has
 * room for at least the encoded length. Returns 0 or -1. */
static int json_string(lexer *l, char *out, size_t *olen) {
    if (l->p >= l->end || *l->p != '"')
        return -1;
    l->p++;
    size_t o = 0;
    while (l->p < l->end && *l->p != '"') {
        unsigned char c = (unsigned char)*l->p;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            out[o++] = (char)c;
            l->p++;
            continue;
        }
        if (l->end - l->p < 2)
            return -1;
        char e = l->p[1];
        l->p += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[o++] = e;
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (l->end - l->p < 4 || hex4(l->p, &cp))
                return -1;
            l->p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (l->end - l->p < 6 || l->p[0] != '\\' || l->p[1] != 'u' || hex4(l->p + 2, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                l->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(out, &o, cp);
            break;
        }
        default:
            return -1;
        }
    }
    if (l->p >= l->end)
        return -1;
    l->p++; /* closing quote */
    if (!br_utf8_valid(out, o))
        return -1;
    *olen = o;
    return 0;
}

/* Parses one flat object filling f[0..*nf). Strings are decoded into
 * scratch (needs n bytes). Returns 0 or -1 with *why set. */
static int json_object(const char *s, size_t n, char *scratch, jfield *f, int maxf, int *nf,
                       const char **why) {
    lexer l = {s, s + n};
    size_t used = 0;
    *nf = 0;
    skip_ws(&l);
    if (l.p >= l.end || *l.p != '{') {
        *why = "expected a JSON object";
        return -1;
    }
    l.p++;
    skip_ws(&l);
    if (l.p < l.end && *l.p == '}') {
        l.p++;
        goto done;
    }
    for (;;) {
        skip_ws(&l);
        size_t nl;
        char *nm = scratch + used;
        if (json_string(&l, nm, &nl)) {
            *why = "bad member name";
            return -1;
        }
        if (*nf == maxf || nl >= sizeof f->name || memchr(nm, 0, nl)) {
            *why = "unknown member";
            return -1;
        }
        jfield *x = &f[*nf];
        memset(x, 0, sizeof *x);
        memcpy(x->name, nm, nl);
        for (int i = 0; i < *nf; i++) {
            if (strcmp(f[i].name, x->name) == 0) {
                *why = "duplicate member";
                return -1;
            }
        }
        skip_ws(&l);
        if (l.p >= l.end || *l.p != ':') {
            *why = "expected ':'";
            return -1;
        }
        l.p++;
        skip_ws(&l);
        if (l.p < l.end && *l.p == '"') {
            char *out = scratch + used;
            if (json_string(&l, out, &x->n)) {
                *why = "bad string";
                return -1;
            }
            x->s = out;
            used += x->n;
        } else if (l.end - l.p >= 4 && memcmp(l.p, "true", 4) == 0) {
            x->is_bool = 1, x->bval = 1, l.p += 4;
        } else if (l.end - l.p >= 5 && memcmp(l.p, "false", 5) == 0) {
            x->is_bool = 1, x->bval = 0, l.p += 5;
        } else {
            *why = "member values must be strings or booleans";
            return -1;
        }
        (*nf)++;
        skip_ws(&l);
        if (l.p < l.end && *l.p == ',') {
            l.p++;
            continue;
        }
        if (l.p < l.end && *l.p == '}') {
            l.p++;
            break;
        }
        *why = "expected ',' or '}'";
        return -1;
    }
done:
    skip_ws(&l);
    if (l.p != l.end) {
        *why = "trailing bytes after the object";
        return -1;
    }
    return 0;
}

static jfield *field(jfield *f, int nf, const char *name) {
    for (int i = 0; i < nf; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/* ---- Batch bodies -------------------------------------------------------- */

typedef int (*line_fn)(const char *line, size_t n, char *scratch, int *op, const char **k,
                       size_t *kl, const char **v, size_t *vl, const char **why);

static int kv_line(const char *line, size_t n, char *scratch, int *op, const char **k, size_t *kl,
                   const char **v, size_t *vl, const char **why) {
    (void)scratch;
    *op = BR_OP_PUT;
    if (n >= 4 && memcmp(line, "key:", 4) == 0) {
        const char *sep = NULL;
        for (size_t i = 4; i + 7 <= n; i++) {
            if (memcmp(line + i, ",value:", 7) == 0) {
                sep = line + i;
                break;
            }
        }
        if (!sep) {
            *why = "expected key:K,value:V";
            return -1;
        }
        *k = line + 4;
        *kl = (size_t)(sep - *k);
        *v = sep + 7;
        *vl = (size_t)(line + n - *v);
    } else {
        const char *comma = memchr(line, ',', n);
        if (!comma) {
            *why = "expected key:K,value:V or K,V";
            return -1;
        }
        *k = line;
        *kl = (size_t)(comma - line);
        *v = comma + 1;
        *vl = (size_t)(line + n - *v);
    }
    if (*kl == 0) {
        *why = "empty key";
        return -1;
    }
    return 0;
}

static int ndjson_line(const char *line, size_t n, char *scratch, int *op, const char **k,
                       size_t *kl, const char **v, size_t *vl, const char **why) {
    jfield f[4];
    int nf;
    if (json_object(line, n, scratch, f, 4, &nf, why))
        return -1;
    jfield *fo = field(f, nf, "op"), *fk = field(f, nf, "key"), *fv = field(f, nf, "value"),
           *fb = field(f, nf, "base64");
    if (nf != !!fo + !!fk + !!fv + !!fb) {
        *why = "unknown member (expected op, key, value, base64)";
        return -1;
    }
    if (!fo || fo->is_bool || !fk || fk->is_bool || (fv && fv->is_bool) || (fb && !fb->is_bool)) {
        *why = "expected {\"op\":\"put\"|\"delete\",\"key\":\"...\"[,\"value\":\"...\"]}";
        return -1;
    }
    if (fo->n == 3 && memcmp(fo->s, "put", 3) == 0) {
        *op = BR_OP_PUT;
        if (!fv) {
            *why = "put without a value";
            return -1;
        }
    } else if (fo->n == 6 && memcmp(fo->s, "delete", 6) == 0) {
        *op = BR_OP_DELETE;
        if (fv) {
            *why = "delete with a value";
            return -1;
        }
    } else {
        *why = "op must be put or delete";
        return -1;
    }
    *k = fk->s, *kl = fk->n;
    *v = fv ? fv->s : NULL, *vl = fv ? fv->n : 0;
    if (fb && fb->bval) {
        /* Decode in place: base64 output is shorter than its input. */
        if (br_base64_dec(fk->s, fk->n, (char *)fk->s, kl) ||
            (fv && br_base64_dec(fv->s, fv->n, (char *)fv->s, vl))) {
            *why = "bad base64";
            return -1;
        }
    }
    if (*kl == 0) {
        *why = "empty key";
        return -1;
    }
    return 0;
}

/* Runs parse over every line twice: first to check, then to hand on. */
static int parse_lines(const char *body, size_t n, line_fn parse, br_op_fn fn, void *ctx, char *err,
                       size_t errlen) {
    size_t maxline = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(body + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (body + i)) : n - i;
        if (len > maxline)
            maxline = len;
        i += len + 1;
    }
    char *scratch = malloc(maxline + 1);
    if (!scratch) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    int count = 0, rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        count = 0;
        size_t lineno = 0;
        for (size_t i = 0; i < n;) {
            const char *line = body + i;
            const char *nl = memchr(line, '\n', n - i);
            size_t len = nl ? (size_t)(nl - line) : n - i;
            i += len + 1;
            lineno++;
            if (len && line[len - 1] == '\r')
                len--;
            if (len == 0)
                continue;
            int op;
            const char *k, *v, *why = "bad line";
            size_t kl, vl;
            if (parse(line, len, scratch, &op, &k, &kl, &v, &vl, &why)) {
                if (err && errlen)
                    snprintf(err, errlen, "line %zu: %s", lineno, why);
                rc = -1;
                break;
            }
            if (count == INT32_MAX) {
                if (err && errlen)
                    snprintf(err, errlen, "too many lines");
                rc = -1;
                break;
            }
            count++;
            if (pass == 1 && fn && (rc = fn(ctx, op, k, kl, v, vl)) != 0)
                break;
        }
        if (rc == 0 && count == 0) {
            if (err && errlen)
                snprintf(err, errlen, "empty body: no operations");
            rc = -1;
        }
    }
    free(scratch);
    return rc ? rc : count;
}

int br_parse_kv_lines(const char *body, size_t n, br_op_fn fn, void *ctx, char *err,
                      size_t errlen) {
    return parse_lines(body, n, kv_line, fn, ctx, err, errlen);
}

int br_parse_ndjson_batch(const char *body, size_t n, br_op_fn fn, void *ctx, char *err,
                          size_t errlen) {
    return parse_lines(body, n, ndjson_line, fn, ctx, err, errlen);
}

/* ---- Range lines --------------------------------------------------------- */

int br_range_line(br_buf *b, const void *key, size_t klen, const void *val, size_t vlen) {
    int bin = !br_utf8_valid(key, klen) || (val && !br_utf8_valid(val, vlen));
    int (*enc)(br_buf *, const void *, size_t) = bin ? br_base64_enc : br_json_str;
    const char *q = bin ? "\"" : "";
    if (br_buf_adds(b, val ? "{\"key\":" : "{\"next\":") || br_buf_adds(b, q) ||
        enc(b, key, klen) || br_buf_adds(b, q))
        return -1;
    if (val && (br_buf_adds(b, ",\"value\":") || br_buf_adds(b, q) || enc(b, val, vlen) ||
                br_buf_adds(b, q)))
        return -1;
    if (bin && br_buf_adds(b, ",\"base64\":true"))
        return -1;
    return br_buf_adds(b, "}\n");
}

int br_parse_range_line(const char *s, size_t n, char *scratch, const char **key, size_t *klen,
                        const char **val, size_t *vlen, int *is_next) {
    jfield f[4];
    int nf;
    const char *why;
    if (json_object(s, n, scratch, f, 4, &nf, &why))
        return -1;
    jfield *fk = field(f, nf, "key"), *fv = field(f, nf, "value"), *fn = field(f, nf, "next"),
           *fb = field(f, nf, "base64");
    int bin = fb && fb->is_bool && fb->bval;
    if (fn && !fn->is_bool && !fk && !fv) {
        *is_next = 1;
        *key = fn->s, *klen = fn->n, *val = NULL, *vlen = 0;
        if (bin && br_base64_dec(fn->s, fn->n, (char *)fn->s, klen))
            return -1;
        return 0;
    }
    if (!fk || !fv || fk->is_bool || fv->is_bool || fn)
        return -1;
    *is_next = 0;
    *key = fk->s, *klen = fk->n, *val = fv->s, *vlen = fv->n;
    if (bin && (br_base64_dec(fk->s, fk->n, (char *)fk->s, klen) ||
                br_base64_dec(fv->s, fv->n, (char *)fv->s, vlen)))
        return -1;
    return 0;
}
