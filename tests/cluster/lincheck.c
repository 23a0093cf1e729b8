/*
 * lincheck — the linearizability checker (see lincheck.h for the model, the
 * format and the contract; docs/LINCHECK.md for how to read a failure).
 *
 * Layout of this file:
 *   - string tokens, the history and its parser
 *   - a string -> id map (keys, interned values)
 *   - the per-key search (events, memo table, DFS)
 *   - lc_check(), the shrinker and the table printer
 */
#include "lincheck.h"

#include <bitraft/error.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ========================================================================
 * Tokens, the history and its parser
 * ======================================================================== */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A token is non-empty printable ASCII without spaces (0x21..0x7e). */
static bool valid_token(const char *s) {
    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return false;
    return true;
}

static const char *kind_name(lc_kind k) {
    switch (k) {
    case LC_PUT:
        return "put";
    case LC_GET:
        return "get";
    case LC_DEL:
        return "del";
    }
    return "?";
}

static const char *outcome_name(lc_outcome o) {
    switch (o) {
    case LC_OK:
        return "ok";
    case LC_FAIL:
        return "fail";
    case LC_UNKNOWN:
        return "unknown";
    }
    return "?";
}

/* Checks that op's fields agree with each other; the message goes to err. */
static int validate_op(const lc_op *op, char *err, size_t errlen) {
    if (!valid_token(op->key)) {
        seterr(err, errlen, "key must be printable ASCII without spaces");
        return BR_EINVAL;
    }
    if (op->kind != LC_PUT && op->kind != LC_GET && op->kind != LC_DEL) {
        seterr(err, errlen, "unknown operation kind");
        return BR_EINVAL;
    }
    if (op->outcome != LC_OK && op->outcome != LC_FAIL && op->outcome != LC_UNKNOWN) {
        seterr(err, errlen, "unknown outcome");
        return BR_EINVAL;
    }
    if (op->kind == LC_PUT) {
        if (!valid_token(op->value) || strcmp(op->value, "-") == 0) {
            seterr(err, errlen, "put needs a value: printable ASCII without spaces, not \"-\"");
            return BR_EINVAL;
        }
    } else if (op->value != NULL) {
        seterr(err, errlen, "%s takes no value (write \"-\")", kind_name(op->kind));
        return BR_EINVAL;
    }
    if (op->kind == LC_GET) {
        if (op->result != NULL && (!valid_token(op->result) || strcmp(op->result, "-") == 0)) {
            seterr(err, errlen, "get result must be printable ASCII without spaces, or \"-\"");
            return BR_EINVAL;
        }
    } else if (op->result != NULL) {
        seterr(err, errlen, "only a get has a value as its result");
        return BR_EINVAL;
    }
    if (op->kind == LC_DEL) {
        if (op->del_result != LC_DEL_UNSEEN && op->del_result != LC_DEL_ABSENT &&
            op->del_result != LC_DEL_FOUND) {
            seterr(err, errlen, "bad del result");
            return BR_EINVAL;
        }
    } else if (op->del_result != LC_DEL_UNSEEN) {
        seterr(err, errlen, "only a del has found/absent as its result");
        return BR_EINVAL;
    }
    if (op->call_ns < 0) {
        seterr(err, errlen, "negative call time");
        return BR_EINVAL;
    }
    if (op->outcome == LC_OK && (op->return_ns == LC_INF || op->return_ns < op->call_ns)) {
        seterr(err, errlen, "an ok operation needs a return time >= its call time");
        return BR_EINVAL;
    }
    return 0;
}

int lc_history_add(lc_history *h, const lc_op *op, char *err, size_t errlen) {
    int rc = validate_op(op, err, errlen);
    if (rc != 0)
        return rc;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        lc_op *ops = realloc(h->ops, cap * sizeof(*ops));
        if (ops == NULL)
            return BR_ENOMEM;
        h->ops = ops;
        h->cap = cap;
    }
    lc_op c = *op;
    c.key = strdup(op->key);
    c.value = op->value ? strdup(op->value) : NULL;
    c.result = op->result ? strdup(op->result) : NULL;
    if (c.key == NULL || (op->value && c.value == NULL) || (op->result && c.result == NULL)) {
        free(c.key);
        free(c.value);
        free(c.result);
        return BR_ENOMEM;
    }
    if (c.outcome == LC_UNKNOWN)
        c.return_ns = LC_INF;
    h->ops[h->n++] = c;
    return 0;
}

void lc_history_free(lc_history *h) {
    for (size_t i = 0; i < h->n; i++) {
        free(h->ops[i].key);
        free(h->ops[i].value);
        free(h->ops[i].result);
    }
    free(h->ops);
    h->ops = NULL;
    h->n = h->cap = 0;
}

/* Parses a non-negative decimal int64; false on anything else. */
static bool parse_i64(const char *s, int64_t *out) {
    if (*s < '0' || *s > '9')
        return false;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        int d = *s - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Parses one line (already stripped of its newline) into h. */
static int parse_line(char *line, uint32_t lineno, lc_history *h, char *err, size_t errlen) {
    char *f[9];
    int nf = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (nf == 9)
            break;
        f[nf++] = t;
    }
    if (nf == 0 || f[0][0] == '#')
        return 0;
    if (nf != 8) {
        seterr(err, errlen, "line %" PRIu32 ": expected 8 fields, found %s%d", lineno,
               nf > 8 ? "more than " : "", nf > 8 ? 8 : nf);
        return BR_EINVAL;
    }
    for (int i = 0; i < 8; i++) {
        if (!valid_token(f[i])) {
            seterr(err, errlen, "line %" PRIu32 ": field %d has a byte outside printable ASCII",
                   lineno, i + 1);
            return BR_EINVAL;
        }
    }
    lc_op op = {.del_result = LC_DEL_UNSEEN, .line = lineno};
    int64_t client;
    if (!parse_i64(f[0], &client) || client > UINT32_MAX) {
        seterr(err, errlen, "line %" PRIu32 ": bad client id '%s'", lineno, f[0]);
        return BR_EINVAL;
    }
    op.client = (uint32_t)client;
    if (strcmp(f[1], "put") == 0)
        op.kind = LC_PUT;
    else if (strcmp(f[1], "get") == 0)
        op.kind = LC_GET;
    else if (strcmp(f[1], "del") == 0)
        op.kind = LC_DEL;
    else {
        seterr(err, errlen, "line %" PRIu32 ": unknown operation '%s' (put, get, del)", lineno,
               f[1]);
        return BR_EINVAL;
    }
    op.key = f[2];
    op.value = strcmp(f[3], "-") == 0 ? NULL : f[3];
    if (!parse_i64(f[4], &op.call_ns)) {
        seterr(err, errlen, "line %" PRIu32 ": bad call time '%s'", lineno, f[4]);
        return BR_EINVAL;
    }
    if (strcmp(f[6], "ok") == 0)
        op.outcome = LC_OK;
    else if (strcmp(f[6], "fail") == 0)
        op.outcome = LC_FAIL;
    else if (strcmp(f[6], "unknown") == 0)
        op.outcome = LC_UNKNOWN;
    else {
        seterr(err, errlen, "line %" PRIu32 ": unknown outcome '%s' (ok, fail, unknown)", lineno,
               f[6]);
        return BR_EINVAL;
    }
    if (strcmp(f[5], "-") == 0) {
        if (op.outcome == LC_OK) {
            seterr(err, errlen, "line %" PRIu32 ": an ok operation needs a return time", lineno);
            return BR_EINVAL;
        }
        op.return_ns = LC_INF;
    } else if (!parse_i64(f[5], &op.return_ns)) {
        seterr(err, errlen, "line %" PRIu32 ": bad return time '%s'", lineno, f[5]);
        return BR_EINVAL;
    }
    const char *res = f[7];
    if (op.kind == LC_GET) {
        op.result = strcmp(res, "-") == 0 ? NULL : f[7];
    } else if (op.kind == LC_DEL) {
        if (strcmp(res, "found") == 0)
            op.del_result = LC_DEL_FOUND;
        else if (strcmp(res, "absent") == 0)
            op.del_result = LC_DEL_ABSENT;
        else if (strcmp(res, "-") != 0) {
            seterr(err, errlen, "line %" PRIu32 ": del result must be found, absent or -, not '%s'",
                   lineno, res);
            return BR_EINVAL;
        }
    } else if (strcmp(res, "-") != 0) {
        seterr(err, errlen, "line %" PRIu32 ": a put has no result (write -), found '%s'", lineno,
               res);
        return BR_EINVAL;
    }
    char why[200];
    int rc = lc_history_add(h, &op, why, sizeof(why));
    if (rc == BR_EINVAL)
        seterr(err, errlen, "line %" PRIu32 ": %s", lineno, why);
    else if (rc != 0)
        seterr(err, errlen, "line %" PRIu32 ": %s", lineno, br_strerror(rc));
    return rc;
}

static void strip_eol(char *s, size_t *len) {
    while (*len > 0 && (s[*len - 1] == '\n' || s[*len - 1] == '\r'))
        s[--*len] = '\0';
}

int lc_history_parse(FILE *f, lc_history *h, char *err, size_t errlen) {
    char *line = NULL;
    size_t cap = 0;
    uint32_t lineno = 0;
    int rc = 0;
    ssize_t len;
    errno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t l = (size_t)len;
        if (memchr(line, '\0', l) != NULL) {
            seterr(err, errlen, "line %" PRIu32 ": NUL byte", lineno);
            rc = BR_EINVAL;
            goto out;
        }
        strip_eol(line, &l);
        rc = parse_line(line, lineno, h, err, errlen);
        if (rc != 0)
            goto out;
        errno = 0;
    }
    if (ferror(f)) {
        rc = errno ? -errno : -EIO;
        seterr(err, errlen, "read error after line %" PRIu32 ": %s", lineno, strerror(-rc));
    }
out:
    free(line);
    return rc;
}

int lc_history_parse_str(const char *text, lc_history *h, char *err, size_t errlen) {
    uint32_t lineno = 0;
    int rc = 0;
    while (*text) {
        const char *e = strchr(text, '\n');
        size_t l = e ? (size_t)(e - text) : strlen(text);
        char *line = malloc(l + 1);
        if (line == NULL)
            return BR_ENOMEM;
        memcpy(line, text, l);
        line[l] = '\0';
        strip_eol(line, &l);
        rc = parse_line(line, ++lineno, h, err, errlen);
        free(line);
        if (rc != 0)
            return rc;
        text += e ? (size_t)(e - text) + 1 : l;
    }
    return 0;
}

void lc_op_write(FILE *f, const lc_op *op) {
    char ret[24];
    if (op->outcome == LC_UNKNOWN || op->return_ns == LC_INF)
        snprintf(ret, sizeof(ret), "-");
    else
        snprintf(ret, sizeof(ret), "%" PRId64, op->return_ns);
    const char *res = "-";
    if (op->kind == LC_GET && op->result)
        res = op->result;
    else if (op->kind == LC_DEL && op->del_result == LC_DEL_FOUND)
        res = "found";
    else if (op->kind == LC_DEL && op->del_result == LC_DEL_ABSENT)
        res = "absent";
    fprintf(f, "%" PRIu32 " %s %s %s %" PRId64 " %s %s %s\n", op->client, kind_name(op->kind),
            op->key, op->value ? op->value : "-", op->call_ns, ret, outcome_name(op->outcome), res);
}

/* ========================================================================
 * A string -> id map (open addressing; the strings are borrowed)
 * ======================================================================== */

typedef struct {
    const char **keys; /* slot -> string, NULL when empty */
    uint32_t *ids;     /* slot -> id */
    size_t cap;        /* slots, a power of two */
    size_t n;          /* entries */
} strmap;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void strmap_free(strmap *m) {
    free(m->keys);
    free(m->ids);
    memset(m, 0, sizeof(*m));
}

static int strmap_grow(strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    const char **keys = calloc(cap, sizeof(*keys));
    uint32_t *ids = calloc(cap, sizeof(*ids));
    if (keys == NULL || ids == NULL) {
        free(keys);
        free(ids);
        return BR_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == NULL)
            continue;
        size_t s = hash_str(m->keys[i]) & (cap - 1);
        while (keys[s])
            s = (s + 1) & (cap - 1);
        keys[s] = m->keys[i];
        ids[s] = m->ids[i];
    }
    free(m->keys);
    free(m->ids);
    m->keys = keys;
    m->ids = ids;
    m->cap = cap;
    return 0;
}

/* True when s is in m. */
static bool strmap_has(const strmap *m, const char *s) {
    if (m->cap == 0)
        return false;
    for (size_t slot = hash_str(s) & (m->cap - 1); m->keys[slot]; slot = (slot + 1) & (m->cap - 1))
        if (strcmp(m->keys[slot], s) == 0)
            return true;
    return false;
}

/*
 * Finds s; if absent, inserts it with id next_id. Sets *id and returns 1 if
 * inserted, 0 if found, BR_ENOMEM on failure.
 */
static int strmap_intern(strmap *m, const char *s, uint32_t next_id, uint32_t *id) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != 0)
        return BR_ENOMEM;
    size_t slot = hash_str(s) & (m->cap - 1);
    while (m->keys[slot]) {
        if (strcmp(m->keys[slot], s) == 0) {
            *id = m->ids[slot];
            return 0;
        }
        slot = (slot + 1) & (m->cap - 1);
    }
    m->keys[slot] = s;
    m->ids[slot] = next_id;
    m->n++;
    *id = next_id;
    return 1;
}

/* ========================================================================
 * The per-key search
 * ======================================================================== */

/* Model state: 0 = absent, v >= 1 = the value with id v. */

typedef struct {
    lc_kind kind;
    bool unknown;  /* outcome unknown: returns at +infinity */
    uint32_t arg;  /* put: value id */
    uint32_t want; /* get: value id read (0 = absent) */
    int del;       /* del: LC_DEL_* */
    int64_t call, ret;
} sop;

/* Applies op to state: returns false if op cannot happen in it. */
static bool step(const sop *op, uint32_t state, uint32_t *next) {
    switch (op->kind) {
    case LC_PUT:
        *next = op->arg;
        return true;
    case LC_GET:
        *next = state;
        return state == op->want;
    case LC_DEL:
        if (op->del == LC_DEL_FOUND && state == 0)
            return false;
        if (op->del == LC_DEL_ABSENT && state != 0)
            return false;
        *next = 0;
        return true;
    }
    return false;
}

static uint64_t mix64(uint64_t x) { /* splitmix64 finalizer */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/*
 * The memo table: a set of (linearized set, state). A linearized set is
 * stored canonically as the words [lw, hw] of its bitset, where every word
 * below lw is all ones and every word above hw is zero; so equal sets have
 * equal representations. Hashes are Zobrist hashes (xor of one random word
 * per member), kept up to date as bits flip.
 */
typedef struct {
    uint64_t hash;
    uint64_t off; /* into words; UINT64_MAX when the slot is empty */
    uint32_t lw, nw;
    uint32_t state;
} memo_slot;

typedef struct {
    memo_slot *slots;
    size_t cap, n;
    uint64_t *words; /* arena of stored bitset words */
    size_t wlen, wcap;
} memo;

static void memo_free(memo *m) {
    free(m->slots);
    free(m->words);
    memset(m, 0, sizeof(*m));
}

static int memo_grow(memo *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    memo_slot *s = malloc(cap * sizeof(*s));
    if (s == NULL)
        return BR_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        s[i].off = UINT64_MAX;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].off == UINT64_MAX)
            continue;
        size_t j = m->slots[i].hash & (cap - 1);
        while (s[j].off != UINT64_MAX)
            j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return 0;
}

/* Adds (bits[lw..lw+nw), state); returns 1 if new, 0 if seen, BR_ENOMEM. */
static int memo_add(memo *m, uint64_t zob, const uint64_t *bits, uint32_t lw, uint32_t nw,
                    uint32_t state) {
    if ((m->n + 1) * 2 > m->cap && memo_grow(m) != 0)
        return BR_ENOMEM;
    uint64_t h = zob ^ mix64(state);
    size_t j = h & (m->cap - 1);
    for (; m->slots[j].off != UINT64_MAX; j = (j + 1) & (m->cap - 1)) {
        memo_slot *s = &m->slots[j];
        if (s->hash == h && s->state == state && s->lw == lw && s->nw == nw &&
            memcmp(m->words + s->off, bits + lw, nw * sizeof(uint64_t)) == 0)
            return 0;
    }
    if (m->wlen + nw > m->wcap) {
        size_t wcap = m->wcap ? m->wcap * 2 : 4096;
        while (wcap < m->wlen + nw)
            wcap *= 2;
        uint64_t *w = realloc(m->words, wcap * sizeof(*w));
        if (w == NULL)
            return BR_ENOMEM;
        m->words = w;
        m->wcap = wcap;
    }
    memcpy(m->words + m->wlen, bits + lw, nw * sizeof(uint64_t));
    m->slots[j] = (memo_slot){.hash = h, .off = m->wlen, .lw = lw, .nw = nw, .state = state};
    m->wlen += nw;
    m->n++;
    return 1;
}

/* An event: the call or the return of op. Linked in time order. */
typedef struct {
    uint32_t op;
    bool call;
    uint32_t match; /* the other event of the same op */
    uint32_t prev, next;
    int64_t t; /* time, for sorting */
} event;

static int cmp_event(const void *a, const void *b) {
    const event *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    /* At equal times calls come first: the two ops count as concurrent. */
    if (x->call != y->call)
        return x->call ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op ? 1 : 0;
}

typedef struct {
    uint32_t entry; /* the call event lifted */
    uint32_t state; /* the state before */
    bool forced;    /* a read placed with no alternative (see search) */
} frame;

/* The bitset of linearized ops, its canonical window and its hash. */
typedef struct {
    uint64_t *w;
    uint32_t nwords;
    uint32_t lw; /* first word that is not all ones */
    int64_t hw;  /* last word that is not zero, -1 if none */
    uint64_t zob;
} lin_set;

static void lin_set_bit(lin_set *s, uint32_t i, const uint64_t *zkeys) {
    s->w[i / 64] |= 1ULL << (i % 64);
    s->zob ^= zkeys[i];
    if ((int64_t)(i / 64) > s->hw)
        s->hw = i / 64;
    while (s->lw < s->nwords && s->w[s->lw] == ~0ULL)
        s->lw++;
}

static void lin_clear_bit(lin_set *s, uint32_t i, const uint64_t *zkeys) {
    s->w[i / 64] &= ~(1ULL << (i % 64));
    s->zob ^= zkeys[i];
    if (i / 64 < s->lw)
        s->lw = i / 64;
    while (s->hw >= 0 && s->w[s->hw] == 0)
        s->hw--;
}

typedef struct {
    const lc_limits *lim;
    struct timespec deadline; /* valid when lim->max_seconds > 0 */
} budget;

static bool past(const struct timespec *d) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

static int cmp_sop_call(const void *a, const void *b) {
    const sop *x = a, *y = b;
    return x->call < y->call ? -1 : x->call > y->call ? 1 : 0;
}

/*
 * Searches for a linearization of ops[0..n) (sorted by call time). Returns
 * the verdict; *states gets the states explored.
 */
static lc_verdict search(sop *ops, uint32_t n, const budget *b, uint64_t *states) {
    lc_verdict verdict = LC_INCONCLUSIVE;
    uint32_t nev = 2 * n, head = nev; /* head: the sentinel */
    event *ev = calloc(nev + 1, sizeof(*ev));
    frame *stack = malloc((n + 1) * sizeof(*stack));
    uint64_t *zkeys = malloc((n + 1) * sizeof(*zkeys));
    uint32_t *pos = malloc((n + 1) * sizeof(*pos));
    lin_set lin = {.nwords = (n + 63) / 64, .hw = -1};
    lin.w = calloc(lin.nwords + 1, sizeof(uint64_t));
    memo m = {0};
    *states = 0;
    if (ev == NULL || stack == NULL || zkeys == NULL || pos == NULL || lin.w == NULL)
        goto out;

    uint32_t remaining_ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        ev[2 * i] = (event){.op = i, .call = true, .t = ops[i].call};
        ev[2 * i + 1] = (event){.op = i, .call = false, .t = ops[i].unknown ? LC_INF : ops[i].ret};
        zkeys[i] = mix64(i * 0x2545f4914f6cdd1dULL + 17);
        remaining_ok += !ops[i].unknown;
    }
    qsort(ev, nev, sizeof(*ev), cmp_event);
    /* Link the events and pair each call with its return. */
    for (uint32_t i = 0; i < nev; i++) {
        ev[i].prev = i == 0 ? head : i - 1;
        ev[i].next = i + 1 == nev ? head : i + 1;
        if (ev[i].call)
            pos[ev[i].op] = i;
        else {
            ev[i].match = pos[ev[i].op];
            ev[pos[ev[i].op]].match = i;
        }
    }
    ev[head].prev = nev ? nev - 1 : head;
    ev[head].next = nev ? 0 : head;

    uint32_t state = 0, depth = 0;
    uint32_t e = ev[head].next;
    bool fresh = true; /* e is the head of a node not yet looked at */
    for (;;) {
        if (remaining_ok == 0) {
            /* Every completed op is placed; unknown ones may follow them, or
             * never happen: no later observation can tell. */
            verdict = LC_LINEARIZABLE;
            goto out;
        }
        bool forced = false;
        if (fresh) {
            /* A read that sees the current state (a get of the value, a del
             * that reports absent when absent) is placed now, with no
             * alternative tried: every op that must precede it is placed
             * already, it changes nothing, and any linearization that puts
             * it later stays one with it moved here. Without this, k
             * concurrent reads of one value cost 2^k states. */
            fresh = false;
            for (uint32_t c = ev[head].next; ev[c].call; c = ev[c].next) {
                const sop *op = &ops[ev[c].op];
                if ((op->kind == LC_GET && op->want == state) ||
                    (op->kind == LC_DEL && op->del == LC_DEL_ABSENT && state == 0)) {
                    e = c;
                    forced = true;
                    break;
                }
            }
        }
        if (ev[e].call) {
            const sop *op = &ops[ev[e].op];
            uint32_t next;
            if (step(op, state, &next)) {
                lin_set_bit(&lin, ev[e].op, zkeys);
                uint32_t nw = lin.hw >= (int64_t)lin.lw ? (uint32_t)(lin.hw - lin.lw + 1) : 0;
                int r = memo_add(&m, lin.zob, lin.w, lin.lw, nw, next);
                if (r < 0)
                    goto out;
                if (r == 1) {
                    ++*states;
                    if (b->lim && b->lim->max_states && *states > b->lim->max_states)
                        goto out;
                    if (b->lim && b->lim->max_seconds > 0 && (*states & 4095) == 0 &&
                        past(&b->deadline))
                        goto out;
                    stack[depth++] = (frame){.entry = e, .state = state, .forced = forced};
                    state = next;
                    remaining_ok -= !op->unknown;
                    /* Lift the call and its return out of the list. */
                    uint32_t r_ev = ev[e].match;
                    ev[ev[e].prev].next = ev[e].next;
                    ev[ev[e].next].prev = ev[e].prev;
                    ev[ev[r_ev].prev].next = ev[r_ev].next;
                    ev[ev[r_ev].next].prev = ev[r_ev].prev;
                    e = ev[head].next;
                    fresh = true;
                    continue;
                }
                lin_clear_bit(&lin, ev[e].op, zkeys);
            }
            if (!forced) {
                e = ev[e].next;
                continue;
            }
            /* A forced read already explored from here: this node fails. */
        }
        /* Backtrack: a pending op must return here and is not placed, or
         * the node's forced read failed. Undo until a free choice. */
        for (;;) {
            if (depth == 0) {
                verdict = LC_VIOLATION;
                goto out;
            }
            frame f = stack[--depth];
            uint32_t r_ev = ev[f.entry].match;
            ev[ev[r_ev].prev].next = r_ev;
            ev[ev[r_ev].next].prev = r_ev;
            ev[ev[f.entry].prev].next = f.entry;
            ev[ev[f.entry].next].prev = f.entry;
            lin_clear_bit(&lin, ev[f.entry].op, zkeys);
            remaining_ok += !ops[ev[f.entry].op].unknown;
            state = f.state;
            e = ev[f.entry].next;
            if (!f.forced)
                break;
        }
    }
out:
    free(ev);
    free(stack);
    free(zkeys);
    free(pos);
    free(lin.w);
    memo_free(&m);
    return verdict;
}

/*
 * Builds the search's view of ops[idx[0..n)], where the ops idx[n_kept..n)
 * are taken as unknown (the shrinker's dropped ops: they may have happened
 * at any time after their call, or never). Values are interned; failed ops
 * and unknown gets are dropped. Two kinds of unknown writes are dropped
 * too, because placing them can never help:
 *   - a put whose value nobody read, unless a completed del that reported
 *     "found" returned after the put's call: wherever it goes, it is
 *     overwritten unobserved, deleted by a del that did not need it, or
 *     makes a later read fail;
 *   - a del, unless a completed get that read absent, or del that reported
 *     absent, returned after the del's call: it can only make reads of
 *     values and "found" dels fail.
 * Either would otherwise double the search space. Sorted by call time;
 * *out_n gets the count; *impossible is set when a completed get read a
 * value that no put (not failed) wrote, a violation found without search.
 * Returns NULL on allocation failure.
 */
static sop *prepare(const lc_op *ops, const size_t *idx, size_t n, size_t n_kept, uint32_t *out_n,
                    bool *impossible) {
    sop *s = malloc((n + 1) * sizeof(*s));
    bool *read = calloc(n + 2, sizeof(bool)); /* by value id */
    strmap vals = {0};
    uint32_t nvals = 0, k = 0;
    int64_t found = INT64_MIN;  /* latest return of a completed del that found a value */
    int64_t absent = INT64_MIN; /* latest return of a completed op that saw absence */
    *impossible = false;
    if (s == NULL || read == NULL)
        goto fail;
    /* Values of puts get ids 1..; values read but never written get more. */
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[idx[i]];
        if (o->kind == LC_PUT && o->outcome != LC_FAIL) {
            uint32_t id;
            int r = strmap_intern(&vals, o->value, nvals + 1, &id);
            if (r < 0)
                goto fail;
            nvals += r;
        }
        if (i >= n_kept || o->outcome != LC_OK)
            continue;
        if (o->kind == LC_DEL && o->del_result == LC_DEL_FOUND && o->return_ns > found)
            found = o->return_ns;
        if (((o->kind == LC_DEL && o->del_result == LC_DEL_ABSENT) ||
             (o->kind == LC_GET && o->result == NULL)) &&
            o->return_ns > absent)
            absent = o->return_ns;
    }
    uint32_t nwritten = nvals;
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[idx[i]];
        lc_outcome out = o->outcome == LC_OK && i >= n_kept ? LC_UNKNOWN : o->outcome;
        if (out == LC_FAIL || (o->kind == LC_GET && out == LC_UNKNOWN))
            continue;
        sop so = {.kind = o->kind,
                  .unknown = out == LC_UNKNOWN,
                  .del = out == LC_OK ? o->del_result : LC_DEL_UNSEEN,
                  .call = o->call_ns,
                  .ret = out == LC_UNKNOWN ? LC_INF : o->return_ns};
        if (o->kind == LC_PUT) {
            strmap_intern(&vals, o->value, 0, &so.arg);
        } else if (o->kind == LC_GET && o->result) {
            int r = strmap_intern(&vals, o->result, nvals + 1, &so.want);
            if (r < 0)
                goto fail;
            nvals += r;
            if (so.want <= nwritten)
                read[so.want] = true;
            else
                *impossible = true;
        }
        s[k++] = so;
    }
    uint32_t j = 0;
    for (uint32_t i = 0; i < k; i++) {
        bool idle_put = s[i].kind == LC_PUT && !read[s[i].arg] && s[i].call > found;
        bool idle_del = s[i].kind == LC_DEL && s[i].call > absent;
        if (!(s[i].unknown && (idle_put || idle_del)))
            s[j++] = s[i];
    }
    k = j;
    qsort(s, k, sizeof(*s), cmp_sop_call);
    strmap_free(&vals);
    free(read);
    *out_n = k;
    return s;
fail:
    strmap_free(&vals);
    free(read);
    free(s);
    return NULL;
}

static void budget_init(budget *b, const lc_limits *lim) {
    b->lim = lim;
    if (lim && lim->max_seconds > 0) {
        clock_gettime(CLOCK_MONOTONIC, &b->deadline);
        double s = lim->max_seconds;
        b->deadline.tv_sec += (time_t)s;
        b->deadline.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
        if (b->deadline.tv_nsec >= 1000000000L) {
            b->deadline.tv_sec++;
            b->deadline.tv_nsec -= 1000000000L;
        }
    }
}

static const lc_limits default_limits = {.max_states = LC_DEFAULT_MAX_STATES};

static lc_verdict check_ops(const lc_op *ops, const size_t *idx, size_t n, size_t n_kept,
                            const budget *b, uint64_t *states) {
    uint32_t k;
    uint64_t st = 0;
    bool impossible;
    lc_verdict v = LC_INCONCLUSIVE;
    sop *s = prepare(ops, idx, n, n_kept, &k, &impossible);
    if (s != NULL) {
        v = impossible ? LC_VIOLATION : search(s, k, b, &st);
        free(s);
    }
    if (states)
        *states = st;
    return v;
}

lc_verdict lc_check_ops(const lc_op *ops, const size_t *idx, size_t n, const lc_limits *lim,
                        uint64_t *states) {
    budget b;
    budget_init(&b, lim ? lim : &default_limits);
    return check_ops(ops, idx, n, n, &b, states);
}

lc_verdict lc_check_mixed(const lc_op *ops, const size_t *idx, size_t n, size_t n_kept,
                          const lc_limits *lim, uint64_t *states) {
    budget b;
    budget_init(&b, lim ? lim : &default_limits);
    return check_ops(ops, idx, n, n_kept, &b, states);
}

/* ========================================================================
 * The whole history
 * ======================================================================== */

void lc_report_free(lc_report *rep) {
    free(rep->bad_ops);
    free(rep->keys);
    memset(rep, 0, sizeof(*rep));
}

lc_verdict lc_check(const lc_history *h, const lc_limits *lim, lc_report *rep) {
    memset(rep, 0, sizeof(*rep));
    rep->verdict = LC_INCONCLUSIVE;
    budget b;
    budget_init(&b, lim ? lim : &default_limits);
    strmap keys = {0};
    uint32_t nkeys = 0;
    uint32_t *key_of = malloc((h->n + 1) * sizeof(*key_of));
    size_t *count = NULL, *start = NULL, *order = NULL;
    const char **names = NULL;
    if (key_of == NULL)
        goto out;
    for (size_t i = 0; i < h->n; i++) {
        int r = strmap_intern(&keys, h->ops[i].key, nkeys, &key_of[i]);
        if (r < 0)
            goto out;
        nkeys += r;
    }
    count = calloc(nkeys + 1, sizeof(*count));
    start = calloc(nkeys + 1, sizeof(*start));
    order = malloc((h->n + 1) * sizeof(*order));
    names = calloc(nkeys + 1, sizeof(*names));
    rep->keys = calloc(nkeys + 1, sizeof(*rep->keys));
    if (!count || !start || !order || !names || !rep->keys)
        goto out;
    /* Group the kept ops by key (a counting sort keeps their order). */
    for (size_t i = 0; i < h->n; i++) {
        const lc_op *o = &h->ops[i];
        names[key_of[i]] = names[key_of[i]] ? names[key_of[i]] : o->key;
        if (o->outcome == LC_FAIL || (o->kind == LC_GET && o->outcome == LC_UNKNOWN))
            rep->ops_dropped++;
        else
            count[key_of[i]]++;
    }
    for (uint32_t k = 1; k < nkeys; k++)
        start[k] = start[k - 1] + count[k - 1];
    memset(count, 0, (nkeys + 1) * sizeof(*count));
    for (size_t i = 0; i < h->n; i++) {
        const lc_op *o = &h->ops[i];
        if (o->outcome == LC_FAIL || (o->kind == LC_GET && o->outcome == LC_UNKNOWN))
            continue;
        order[start[key_of[i]] + count[key_of[i]]++] = i;
    }
    rep->nkeys = nkeys;
    lc_verdict all = LC_LINEARIZABLE;
    for (uint32_t k = 0; k < nkeys; k++) {
        lc_key_report *kr = &rep->keys[k];
        kr->key = names[k];
        kr->ops = count[k];
        kr->verdict = check_ops(h->ops, order + start[k], count[k], count[k], &b, &kr->states);
        rep->states += kr->states;
        bool first_bad = kr->verdict == LC_VIOLATION && all != LC_VIOLATION;
        bool first_inc = kr->verdict == LC_INCONCLUSIVE && all == LC_LINEARIZABLE;
        if (first_bad || first_inc) {
            size_t *bad = malloc((count[k] + 1) * sizeof(*bad));
            if (bad == NULL)
                goto out;
            memcpy(bad, order + start[k], count[k] * sizeof(*bad));
            free(rep->bad_ops);
            rep->bad_ops = bad;
            rep->bad_n = count[k];
            rep->bad_key = names[k];
            all = kr->verdict;
        }
    }
    rep->verdict = all;
out:
    strmap_free(&keys);
    free(key_of);
    free(count);
    free(start);
    free(order);
    free(names);
    if (rep->verdict == LC_INCONCLUSIVE && rep->nkeys == 0) {
        free(rep->keys);
        rep->keys = NULL;
    }
    return rep->verdict;
}

/* ========================================================================
 * The shrinker
 * ======================================================================== */

static int cmp_idx_call(const void *a, const void *b, void *base) {
    const lc_op *ops = base;
    const lc_op *x = &ops[*(const size_t *)a], *y = &ops[*(const size_t *)b];
    if (x->call_ns != y->call_ns)
        return x->call_ns < y->call_ns ? -1 : 1;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j ? 1 : 0;
}

static void sort_by_call(const lc_op *ops, size_t *idx, size_t n) {
    qsort_r(idx, n, sizeof(*idx), cmp_idx_call, (void *)ops);
}

/*
 * Keeps each read's write: removes from sub[0..*n) every get whose value
 * some put of the key's history wrote (the map all) but no put left in sub
 * does, appending the removed gets to drop[*nd..]. Then every read shown
 * has its write beside it.
 */
static int complete(const lc_op *ops, size_t *sub, size_t *n, size_t *drop, size_t *nd,
                    const strmap *all) {
    strmap here = {0};
    uint32_t id;
    for (size_t i = 0; i < *n; i++) {
        const lc_op *o = &ops[sub[i]];
        if (o->kind == LC_PUT && strmap_intern(&here, o->value, 0, &id) < 0) {
            strmap_free(&here);
            return BR_ENOMEM;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        const lc_op *o = &ops[sub[i]];
        if (o->kind == LC_GET && o->result && strmap_has(all, o->result) &&
            !strmap_has(&here, o->result))
            drop[(*nd)++] = sub[i];
        else
            sub[k++] = sub[i];
    }
    *n = k;
    strmap_free(&here);
    return 0;
}

/*
 * Shrinking. Dropping a write could make a violation where there was none
 * (drop the del and a later "absent" read looks wrong). So a dropped op is
 * not forgotten: each candidate is checked with every dropped op taken as
 * unknown (it may have happened at any time after its call, or never), and
 * only a candidate that still violates is adopted. By induction the final
 * history violates whatever the dropped ops did: a faithful witness (and,
 * taking "never" for all of them, a violation on its own).
 *
 * This check is monotone — dropping more ops only adds behaviours — so the
 * shortest violating prefix (by call order) and then the shortest
 * violating suffix of it are found by binary search, which cuts a long
 * history to the window around the violation in O(log n) checks. Then
 * chunks of halving size, and finally single ops, are dropped while the
 * rest violates, until no single op can go (1-minimal). A put whose value a
 * kept get read stays with it: dropping the put drops the get too.
 *
 * Each check gets a budget (SHRINK_STATES); one that runs out counts as
 * "not a violation", so the op stays: the witness may then be larger than
 * needed, never wrong. After SHRINK_SECONDS the shrinker stops where it is.
 */
#define SHRINK_STATES  500000ULL
#define SHRINK_SECONDS 20.0

typedef struct {
    const lc_op *ops;
    lc_limits check;          /* the budget of one check */
    struct timespec deadline; /* of the whole shrink */
    size_t *scratch;          /* room for every op */
} shrinker;

/* True when kept[0..nk) violates with drop[0..nd) taken as unknown. */
static bool violates(const shrinker *sh, const size_t *kept, size_t nk, const size_t *drop,
                     size_t nd) {
    memcpy(sh->scratch, kept, nk * sizeof(*kept));
    memcpy(sh->scratch + nk, drop, nd * sizeof(*drop));
    budget b;
    budget_init(&b, &sh->check);
    return check_ops(sh->ops, sh->scratch, nk + nd, nk, &b, NULL) == LC_VIOLATION;
}

/* True when the window cur[lo..hi) violates with the rest dropped. */
static bool window_violates(const shrinker *sh, const size_t *cur, size_t m, size_t lo, size_t hi,
                            size_t *drop) {
    size_t nd = 0;
    for (size_t i = 0; i < m; i++)
        if (i < lo || i >= hi)
            drop[nd++] = cur[i];
    return violates(sh, cur + lo, hi - lo, drop, nd);
}

size_t lc_shrink(const lc_op *ops, const size_t *idx, size_t n, const lc_limits *lim, size_t *out) {
    if (lim == NULL)
        lim = &default_limits;
    size_t *cur = malloc((n + 1) * sizeof(*cur));   /* kept */
    size_t *drop = malloc((n + 1) * sizeof(*drop)); /* dropped */
    size_t *cand = malloc((n + 1) * sizeof(*cand));
    size_t *win = malloc((n + 1) * sizeof(*win));
    shrinker sh = {.ops = ops, .scratch = malloc((n + 1) * sizeof(size_t))};
    sh.check.max_states =
        lim->max_states && lim->max_states < SHRINK_STATES ? lim->max_states : SHRINK_STATES;
    budget whole;
    lc_limits wl = {.max_seconds = lim->max_seconds > 0 && lim->max_seconds < SHRINK_SECONDS
                                       ? lim->max_seconds
                                       : SHRINK_SECONDS};
    budget_init(&whole, &wl);
    sh.deadline = whole.deadline;
    size_t m = 0, nd = 0;
    strmap all = {0}; /* values written in the key's history */
    if (cur == NULL || drop == NULL || cand == NULL || win == NULL || sh.scratch == NULL)
        goto out;
    /* Failed ops and unknown gets play no part: leave them out first. */
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[idx[i]];
        if (!(o->outcome == LC_FAIL || (o->kind == LC_GET && o->outcome == LC_UNKNOWN)))
            cur[m++] = idx[i];
    }
    sort_by_call(ops, cur, m);
    for (size_t i = 0; i < m; i++) {
        uint32_t id;
        if (ops[cur[i]].kind == LC_PUT && strmap_intern(&all, ops[cur[i]].value, 0, &id) < 0)
            goto fail;
    }
    if (!violates(&sh, cur, m, drop, 0))
        goto fail;

    /* The shortest violating prefix, then the shortest suffix of it. */
    size_t lo = 1, hi = m; /* cur[0..hi) violates */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (window_violates(&sh, cur, m, 0, mid, drop))
            hi = mid;
        else
            lo = mid + 1;
    }
    size_t end = hi;
    lo = 0;
    hi = end - 1; /* cur[lo..end) violates */
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (window_violates(&sh, cur, m, mid, end, drop))
            lo = mid;
        else
            hi = mid - 1;
    }
    /* The window, plus the puts that wrote what it read (kept puts only
     * add constraints, so it still violates). */
    size_t nw = 0;
    strmap wanted = {0};
    uint32_t id;
    for (size_t i = lo; i < end; i++) {
        win[nw++] = cur[i];
        const lc_op *o = &ops[cur[i]];
        if (o->kind == LC_GET && o->result && strmap_intern(&wanted, o->result, 0, &id) < 0) {
            strmap_free(&wanted);
            goto fail;
        }
    }
    nd = 0;
    for (size_t i = 0; i < m; i++) {
        const lc_op *o = &ops[cur[i]];
        if (i >= lo && i < end)
            continue;
        if (o->kind == LC_PUT && strmap_has(&wanted, o->value))
            win[nw++] = cur[i];
        else
            drop[nd++] = cur[i];
    }
    strmap_free(&wanted);
    sort_by_call(ops, win, nw);
    memcpy(cur, win, nw * sizeof(*cur));
    m = nw;

    /* Drop chunks, halving their size, then single ops (1-minimal). */
    size_t chunk = m / 2 ? m / 2 : 1;
    for (;;) {
        bool changed = false;
        for (size_t i = 0; i < m;) {
            if (past(&sh.deadline))
                goto out;
            size_t len = chunk < m - i ? chunk : m - i;
            size_t cm = 0, cd = nd;
            memcpy(cand, cur, i * sizeof(*cur));
            memcpy(cand + i, cur + i + len, (m - i - len) * sizeof(*cur));
            cm = m - len;
            memcpy(drop + cd, cur + i, len * sizeof(*cur));
            cd += len;
            if (complete(ops, cand, &cm, drop, &cd, &all) < 0)
                goto fail;
            if (cm > 0 && violates(&sh, cand, cm, drop, cd)) {
                memcpy(cur, cand, cm * sizeof(*cur));
                m = cm;
                nd = cd;
                changed = true;
            } else {
                i += len;
            }
        }
        if (chunk > 1)
            chunk /= 2;
        else if (!changed)
            break;
    }
    goto out;
fail:
    m = 0;
out:
    if (m > 0)
        memcpy(out, cur, m * sizeof(*cur));
    free(cur);
    free(drop);
    free(cand);
    free(win);
    free(sh.scratch);
    strmap_free(&all);
    return m;
}

/* ========================================================================
 * The table
 * ======================================================================== */

static void describe(const lc_op *o, char *buf, size_t len) {
    switch (o->kind) {
    case LC_PUT:
        snprintf(buf, len, "put(%s, %s)", o->key, o->value);
        break;
    case LC_GET:
        if (o->outcome != LC_OK)
            snprintf(buf, len, "get(%s)", o->key);
        else
            snprintf(buf, len, "get(%s) -> %s", o->key, o->result ? o->result : "absent");
        break;
    case LC_DEL:
        snprintf(buf, len, "del(%s)%s", o->key,
                 o->outcome != LC_OK || o->del_result == LC_DEL_UNSEEN ? ""
                 : o->del_result == LC_DEL_FOUND                       ? " -> found"
                                                                       : " -> absent");
        break;
    }
}

void lc_print_table(FILE *f, const lc_op *ops, const size_t *idx, size_t n) {
    size_t *s = malloc((n + 1) * sizeof(*s));
    if (s == NULL)
        return;
    memcpy(s, idx, n * sizeof(*s));
    sort_by_call(ops, s, n);
    int64_t t0 = n ? ops[s[0]].call_ns : 0, t1 = t0;
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[s[i]];
        int64_t end = o->outcome == LC_UNKNOWN ? o->call_ns : o->return_ns;
        if (end > t1)
            t1 = end;
    }
    enum { BAR = 40 };
    bool bars = n <= 40;
    fprintf(f, "%4s %6s %-40s %12s %12s %-8s %6s%s\n", "#", "client", "operation", "call ms",
            "return ms", "outcome", "line", bars ? "  timeline" : "");
    for (size_t i = 0; i < n; i++) {
        const lc_op *o = &ops[s[i]];
        char what[256], ret[32], line[16];
        describe(o, what, sizeof(what));
        if (o->outcome == LC_UNKNOWN)
            snprintf(ret, sizeof(ret), "?");
        else
            snprintf(ret, sizeof(ret), "%.3f", (double)(o->return_ns - t0) / 1e6);
        snprintf(line, sizeof(line), "%" PRIu32, o->line);
        fprintf(f, "%4zu %6" PRIu32 " %-40s %12.3f %12s %-8s %6s", i + 1, o->client, what,
                (double)(o->call_ns - t0) / 1e6, ret, outcome_name(o->outcome),
                o->line ? line : "-");
        if (bars) {
            char bar[BAR + 1];
            double span = t1 > t0 ? (double)(t1 - t0) : 1.0;
            int a = (int)((double)(o->call_ns - t0) / span * (BAR - 1));
            int z = o->outcome == LC_UNKNOWN
                        ? BAR - 1
                        : (int)((double)(o->return_ns - t0) / span * (BAR - 1));
            for (int c = 0; c < BAR; c++)
                bar[c] = c < a || c > z ? ' ' : c == a ? '[' : c == z ? ']' : '-';
            if (o->outcome == LC_UNKNOWN)
                bar[BAR - 1] = '>';
            else if (a == z)
                bar[a] = '|';
            bar[BAR] = '\0';
            fprintf(f, "  %s", bar);
        }
        fputc('\n', f);
    }
    free(s);
}
