/*
 * test_concurrency.c - readers and writers on one engine at once.
 *
 * Writers put, overwrite, delete and batch; every value names its key, its
 * writer and the writer's op number, plus filler derived from those, so a
 * reader can tell a value that was written for that key from anything else.
 * Readers check that
 *
 *   - every value seen is one written for that key, by an op that had begun;
 *   - a key written by one writer never goes back to an older version;
 *   - keys that always exist are always found, by gets and by ranges;
 *   - ranges are in strictly increasing key order, inside their bounds, and
 *     no longer than their limit;
 *
 * and at the end (and after a reopen) the store equals the writers' models.
 * Work is bounded by operation counts, never by time, so the test behaves
 * the same under ThreadSanitizer (make test-tsan runs `ctest -R concurrency`).
 *
 * Threads never call cr_assert: the first failure is recorded, every thread
 * stops, and the main thread reports it.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/engine.h"
#include "testutil.h"

/*
 * Criterion cannot start under ThreadSanitizer: its runner maps an
 * inheritable arena at a random fixed address and every address it tries is
 * taken by TSan's shadow memory ("Could not initialize inheritable arena",
 * Snaipe/Criterion#274). So a TSan build of this file runs its tests without
 * the Criterion runner: Test() registers plain functions, the asserts print
 * and abort, and main() below runs every test in order. ctest -R concurrency
 * and its exit code work the same; TSan's own reports make the run fail.
 */
#if defined(__SANITIZE_THREAD__)
#define BR_TSAN_RUNNER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BR_TSAN_RUNNER 1
#endif
#endif

#ifdef BR_TSAN_RUNNER
typedef struct tsan_test {
    const char *name;
    void (*fn)(void);
} tsan_test;
static tsan_test tsan_tests[16];
static int tsan_ntests;

#undef Test
#define Test(suite, name)                                                                          \
    static void suite##_##name(void);                                                              \
    __attribute__((constructor)) static void suite##_##name##_register(void) {                     \
        tsan_tests[tsan_ntests++] = (tsan_test){#suite "::" #name, suite##_##name};                \
    }                                                                                              \
    static void suite##_##name(void)

static void tsan_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
static void tsan_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: assertion failed: %s\n  ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

#undef cr_assert
#undef cr_assert_eq
#define cr_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tsan_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                 \
    } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#endif

#define NW         3   /* writer threads */
#define NR         3   /* reader threads */
#define OWNED      200 /* keys per writer, only it writes them */
#define STABLE     99  /* keys that always exist (stable key i belongs to writer i % NW) */
#define CONTENDED  20  /* keys every writer puts and deletes */
#define WRITER_OPS 1500
#define READER_OPS 2000
#define VALUE_MAX  512
#define KEY_MAX    16
#define ALL_KEYS   (NW * OWNED + STABLE + CONTENDED)
#define MAX_BATCH  6

/* splitmix64 */
static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int keycmp(const void *a, size_t al, const void *b, size_t bl) {
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (al > bl) - (al < bl);
}

/* ---- Keys and values ------------------------------------------------------------ */

typedef enum { K_OWNED, K_STABLE, K_CONTENDED } key_kind;

static size_t owned_key(char *buf, unsigned w, unsigned i) {
    return (size_t)snprintf(buf, KEY_MAX, "o%u-%04u", w, i);
}
static size_t stable_key(char *buf, unsigned i) {
    return (size_t)snprintf(buf, KEY_MAX, "s%04u", i);
}
static size_t contended_key(char *buf, unsigned i) {
    return (size_t)snprintf(buf, KEY_MAX, "c%03u", i);
}

static uint64_t vhash(const void *key, size_t kl, unsigned w, unsigned ver) {
    uint64_t h = 1469598103934665603ULL ^ ((uint64_t)w << 32 | ver);
    for (size_t i = 0; i < kl; i++)
        h = (h ^ ((const uint8_t *)key)[i]) * 1099511628211ULL;
    return rnd(&h);
}

/* "<key>|w<w>|v<ver>|" then 0..299 filler bytes derived from all three. */
static size_t make_value(char *buf, const void *key, size_t kl, unsigned w, unsigned ver) {
    int n = snprintf(buf, VALUE_MAX, "%.*s|w%u|v%u|", (int)kl, (const char *)key, w, ver);
    uint64_t h = vhash(key, kl, w, ver);
    size_t fill = (size_t)(h % 300);
    for (size_t i = 0; i < fill; i++)
        buf[(size_t)n + i] = (char)('A' + (h >> (i % 40)) % 26);
    return (size_t)n + fill;
}

/* Returns 1 and the writer and version if val is a value made for key. */
static int parse_value(const void *key, size_t kl, const void *val, size_t vl, unsigned *w,
                       unsigned *ver) {
    char tmp[VALUE_MAX + 1];
    if (vl > VALUE_MAX || vl < kl + 1 || memcmp(val, key, kl) != 0)
        return 0;
    memcpy(tmp, val, vl);
    tmp[vl] = 0;
    if (sscanf(tmp + kl, "|w%u|v%u|", w, ver) != 2 || *w >= NW)
        return 0;
    char want[VALUE_MAX];
    size_t wl = make_value(want, key, kl, *w, *ver);
    return wl == vl && memcmp(want, val, vl) == 0;
}

static key_kind kind_of(const void *key, size_t kl) {
    const char *k = key;
    if (kl && k[0] == 's')
        return K_STABLE;
    if (kl && k[0] == 'c')
        return K_CONTENDED;
    return K_OWNED;
}

/* Dense index of a key of the test (for the readers' per-key tables), or -1. */
static int key_index(const void *key, size_t kl) {
    char k[KEY_MAX + 1];
    if (kl == 0 || kl > KEY_MAX)
        return -1;
    memcpy(k, key, kl);
    k[kl] = 0;
    unsigned a, b;
    char canon[KEY_MAX];
    if (k[0] == 'o' && sscanf(k, "o%u-%u", &a, &b) == 2 && a < NW && b < OWNED) {
        owned_key(canon, a, b);
        return strcmp(canon, k) == 0 ? (int)(a * OWNED + b) : -1;
    }
    if (k[0] == 's' && sscanf(k, "s%u", &a) == 1 && a < STABLE) {
        stable_key(canon, a);
        return strcmp(canon, k) == 0 ? (int)(NW * OWNED + a) : -1;
    }
    if (k[0] == 'c' && sscanf(k, "c%u", &a) == 1 && a < CONTENDED) {
        contended_key(canon, a);
        return strcmp(canon, k) == 0 ? (int)(NW * OWNED + STABLE + a) : -1;
    }
    return -1;
}

static size_t key_of_index(char *buf, int idx) {
    if (idx < NW * OWNED)
        return owned_key(buf, (unsigned)idx / OWNED, (unsigned)idx % OWNED);
    idx -= NW * OWNED;
    if (idx < STABLE)
        return stable_key(buf, (unsigned)idx);
    return contended_key(buf, (unsigned)(idx - STABLE));
}

/* ---- Shared state ---------------------------------------------------------------- */

typedef struct shared {
    br_engine *e;
    pthread_barrier_t start;
    atomic_uint started[NW]; /* highest op number a writer has begun */
    atomic_int stop;
    atomic_int writers_done;
    pthread_mutex_t mu;
    char failure[1024];
    uint64_t seed;
} shared;

static void failf(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(shared *sh, const char *fmt, ...) {
    pthread_mutex_lock(&sh->mu);
    if (!sh->failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sh->failure, sizeof sh->failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&sh->mu);
    atomic_store(&sh->stop, 1);
}

/* ---- Writers ---------------------------------------------------------------------- */

typedef struct last_op {
    int touched; /* this writer wrote the key */
    int del;
    unsigned ver;
} last_op;

typedef struct writer {
    shared *sh;
    unsigned w;
    uint64_t rng;
    /* The writer's model of its keys. */
    int owned_present[OWNED];
    unsigned owned_ver[OWNED];
    unsigned stable_ver[STABLE]; /* for the stable keys it owns */
    last_op contended[CONTENDED];
} writer;

typedef struct w_sub {
    key_kind kind;
    unsigned i;
    int del;
} w_sub;

static size_t sub_key(char *buf, const writer *wr, const w_sub *s) {
    switch (s->kind) {
    case K_OWNED:
        return owned_key(buf, wr->w, s->i);
    case K_STABLE:
        return stable_key(buf, s->i);
    default:
        return contended_key(buf, s->i);
    }
}

static void pick_sub(writer *wr, w_sub *s, int allow_del) {
    unsigned r = (unsigned)(rnd(&wr->rng) % 100);
    if (r < 55) {
        s->kind = K_OWNED;
        s->i = (unsigned)(rnd(&wr->rng) % OWNED);
        s->del = allow_del && rnd(&wr->rng) % 4 == 0;
    } else if (r < 80) {
        s->kind = K_STABLE;
        s->i = wr->w + NW * (unsigned)(rnd(&wr->rng) % (STABLE / NW));
        s->del = 0; /* stable keys are never deleted */
    } else {
        s->kind = K_CONTENDED;
        s->i = (unsigned)(rnd(&wr->rng) % CONTENDED);
        s->del = allow_del && rnd(&wr->rng) % 3 == 0;
    }
}

static void model_apply(writer *wr, const w_sub *s, unsigned ver) {
    switch (s->kind) {
    case K_OWNED:
        wr->owned_present[s->i] = !s->del;
        wr->owned_ver[s->i] = ver;
        break;
    case K_STABLE:
        wr->stable_ver[s->i] = ver;
        break;
    default:
        wr->contended[s->i] = (last_op){1, s->del, ver};
    }
}

/* After a write returned: a key only this writer writes reads back as written. */
static void read_own_write(writer *wr, const w_sub *s) {
    if (s->kind == K_CONTENDED)
        return;
    char k[KEY_MAX], want[VALUE_MAX];
    size_t kl = sub_key(k, wr, s);
    int present = s->kind == K_STABLE || wr->owned_present[s->i];
    unsigned ver = s->kind == K_STABLE ? wr->stable_ver[s->i] : wr->owned_ver[s->i];
    void *v = NULL;
    size_t vl = 0;
    int rc = br_engine_get(wr->sh->e, k, kl, &v, &vl);
    if (!present) {
        if (rc != BR_ENOTFOUND)
            failf(wr->sh, "writer %u: %s deleted by op %u reads as %s", wr->w, k, ver,
                  br_errname(rc));
    } else if (rc != 0) {
        failf(wr->sh, "writer %u: %s written by op %u reads as %s", wr->w, k, ver, br_errname(rc));
    } else {
        size_t wl = make_value(want, k, kl, wr->w, ver);
        if (vl != wl || memcmp(v, want, wl) != 0)
            failf(wr->sh, "writer %u: %s written by op %u reads as '%.*s'", wr->w, k, ver,
                  (int)(vl < 40 ? vl : 40), (const char *)v);
    }
    free(v);
}

static void *writer_main(void *arg) {
    writer *wr = arg;
    shared *sh = wr->sh;
    br_batch *b = br_batch_new();
    if (!b) {
        failf(sh, "br_batch_new failed");
        return NULL;
    }
    pthread_barrier_wait(&sh->start);
    char k[KEY_MAX], v[VALUE_MAX];
    for (unsigned op = 1; op <= WRITER_OPS && !atomic_load(&sh->stop); op++) {
        atomic_store(&sh->started[wr->w], op);
        w_sub subs[MAX_BATCH];
        int n = 1, is_batch = rnd(&wr->rng) % 5 == 0;
        if (is_batch)
            n = 2 + (int)(rnd(&wr->rng) % (MAX_BATCH - 1));
        for (int j = 0; j < n; j++)
            pick_sub(wr, &subs[j], 1);
        int rc;
        if (is_batch) {
            br_batch_clear(b);
            for (int j = 0; j < n; j++) {
                size_t kl = sub_key(k, wr, &subs[j]);
                int brc = subs[j].del ? br_batch_delete(b, k, kl)
                                      : br_batch_put(b, k, kl, v, make_value(v, k, kl, wr->w, op));
                if (brc != 0)
                    failf(sh, "br_batch_*: %s", br_errname(brc));
            }
            rc = br_engine_write(sh->e, b);
            if (rc != 0)
                failf(sh, "writer %u op %u: br_engine_write: %s", wr->w, op, br_errname(rc));
        } else {
            size_t kl = sub_key(k, wr, &subs[0]);
            if (subs[0].del) {
                rc = br_engine_delete(sh->e, k, kl);
                int was = subs[0].kind == K_OWNED ? wr->owned_present[subs[0].i] : -1;
                if (!(rc == 0 || rc == BR_ENOTFOUND) || (was == 1 && rc != 0) ||
                    (was == 0 && rc != BR_ENOTFOUND))
                    failf(sh, "writer %u op %u: delete(%s) = %s, key %s", wr->w, op, k,
                          br_errname(rc),
                          was < 0 ? "contended"
                          : was   ? "present"
                                  : "absent");
            } else {
                rc = br_engine_put(sh->e, k, kl, v, make_value(v, k, kl, wr->w, op));
                if (rc != 0)
                    failf(sh, "writer %u op %u: put(%s): %s", wr->w, op, k, br_errname(rc));
            }
        }
        for (int j = 0; j < n; j++)
            model_apply(wr, &subs[j], op);
        for (int j = 0; j < n; j++)
            read_own_write(wr, &subs[j]);
    }
    br_batch_free(b);
    atomic_fetch_add(&sh->writers_done, 1);
    return NULL;
}

/* ---- Readers ---------------------------------------------------------------------- */

typedef struct reader {
    shared *sh;
    unsigned r;
    uint64_t rng;
    /* Newest version seen per key and writer (0: none seen). */
    unsigned seen[ALL_KEYS][NW];
    uint64_t gets, ranges, range_keys;
} reader;

/* Checks one value seen for key; returns 0 on failure (recorded). */
static int check_seen(reader *rd, const void *key, size_t kl, const void *val, size_t vl,
                      const char *how) {
    unsigned w, ver;
    if (!parse_value(key, kl, val, vl, &w, &ver)) {
        failf(rd->sh, "reader %u (%s): key '%.*s' holds '%.*s', never written for it", rd->r, how,
              (int)kl, (const char *)key, (int)(vl < 60 ? vl : 60), (const char *)val);
        return 0;
    }
    unsigned started = atomic_load(&rd->sh->started[w]);
    if (ver > started) {
        failf(rd->sh,
              "reader %u (%s): key '%.*s' holds version %u of writer %u, which has only "
              "begun op %u",
              rd->r, how, (int)kl, (const char *)key, ver, w, started);
        return 0;
    }
    int idx = key_index(key, kl);
    if (idx < 0) {
        failf(rd->sh, "reader %u (%s): unknown key '%.*s'", rd->r, how, (int)kl, (const char *)key);
        return 0;
    }
    key_kind kind = kind_of(key, kl);
    if (kind != K_CONTENDED) {
        unsigned owner =
            kind == K_OWNED ? (unsigned)idx / OWNED : (unsigned)(idx - NW * OWNED) % NW;
        if (w != owner) {
            failf(rd->sh, "reader %u (%s): key '%.*s' written by writer %u, which never writes it",
                  rd->r, how, (int)kl, (const char *)key, w);
            return 0;
        }
    }
    /* A writer's versions of a key never go back. */
    if (ver < rd->seen[idx][w]) {
        failf(rd->sh, "reader %u (%s): key '%.*s' went back from version %u to %u (writer %u)",
              rd->r, how, (int)kl, (const char *)key, rd->seen[idx][w], ver, w);
        return 0;
    }
    rd->seen[idx][w] = ver;
    return 1;
}

static void reader_get(reader *rd) {
    char k[KEY_MAX];
    int idx = (int)(rnd(&rd->rng) % ALL_KEYS);
    size_t kl = key_of_index(k, idx);
    int stable = kind_of(k, kl) == K_STABLE;
    if (rnd(&rd->rng) % 3 == 0) {
        /* get_into with a buffer that is often too small. */
        size_t cap = rnd(&rd->rng) % 2 ? 16 : VALUE_MAX;
        char buf[VALUE_MAX];
        for (int tries = 0; tries < 100; tries++) {
            size_t vl = 0;
            int rc = br_engine_get_into(rd->sh->e, k, kl, buf, cap, &vl);
            if (rc == BR_ENOTFOUND && !stable)
                return;
            if (rc != 0) {
                failf(rd->sh, "reader %u: get_into(%s) = %s", rd->r, k, br_errname(rc));
                return;
            }
            if (vl <= cap) {
                check_seen(rd, k, kl, buf, vl, "get_into");
                return;
            }
            if (vl > VALUE_MAX) {
                failf(rd->sh, "reader %u: get_into(%s) says %zu bytes", rd->r, k, vl);
                return;
            }
            cap = vl; /* may change again before the next call */
        }
        return;
    }
    void *v = NULL;
    size_t vl = 0;
    int rc = br_engine_get(rd->sh->e, k, kl, &v, &vl);
    if (rc == 0) {
        if (v == NULL)
            failf(rd->sh, "reader %u: get(%s) returned a NULL value", rd->r, k);
        else
            check_seen(rd, k, kl, v, vl, "get");
    } else if (rc != BR_ENOTFOUND || stable) {
        failf(rd->sh, "reader %u: get(%s) = %s", rd->r, k, br_errname(rc));
    }
    free(v);
    rd->gets++;
}

/* A random bound: a key of the test, maybe shortened or extended, or a
 * prefix of a key family. */
static size_t rand_bound(reader *rd, char *buf) {
    size_t kl = key_of_index(buf, (int)(rnd(&rd->rng) % ALL_KEYS));
    switch (rnd(&rd->rng) % 4) {
    case 0:
        return 1 + (size_t)(rnd(&rd->rng) % kl); /* a prefix */
    case 1:
        buf[kl] = 0; /* just after the key */
        return kl + 1;
    default:
        return kl;
    }
}

typedef struct rkey {
    char k[KEY_MAX + 1];
    size_t kl;
} rkey;

/* One range being walked by a reader. */
typedef struct rwalk {
    reader *rd;
    const char *sp, *ep;
    size_t sl, el;
    rkey *got;
    size_t n;
} rwalk;

/* Checks the next key of a range; returns nonzero to stop. */
static int rwalk_visit(void *ctx, const void *k, size_t kl, const void *v, size_t vl) {
    rwalk *w = ctx;
    reader *rd = w->rd;
    if (w->n >= ALL_KEYS || kl > KEY_MAX) {
        failf(rd->sh, "reader %u: range returned more keys than exist", rd->r);
        return 1;
    }
    if (w->sp && keycmp(k, kl, w->sp, w->sl) < 0) {
        failf(rd->sh, "reader %u: range returned '%.*s' before its start", rd->r, (int)kl,
              (const char *)k);
        return 1;
    }
    if (w->ep && keycmp(k, kl, w->ep, w->el) > 0) {
        failf(rd->sh, "reader %u: range returned '%.*s' after its end", rd->r, (int)kl,
              (const char *)k);
        return 1;
    }
    if (w->n > 0 && keycmp(w->got[w->n - 1].k, w->got[w->n - 1].kl, k, kl) >= 0) {
        failf(rd->sh, "reader %u: range returned '%.*s' after '%.*s'", rd->r, (int)kl,
              (const char *)k, (int)w->got[w->n - 1].kl, w->got[w->n - 1].k);
        return 1;
    }
    if (!check_seen(rd, k, kl, v, vl, "range"))
        return 1;
    memcpy(w->got[w->n].k, k, kl);
    w->got[w->n].kl = kl;
    w->n++;
    return 0;
}

static void reader_range(reader *rd) {
    char s[KEY_MAX + 1], e[KEY_MAX + 1];
    size_t sl = rand_bound(rd, s), el = rand_bound(rd, e);
    int shape = (int)(rnd(&rd->rng) % 5);
    const char *sp = shape == 1 || shape == 3 ? NULL : s;
    const char *ep = shape == 2 || shape == 3 ? NULL : e;
    if (sp && ep && keycmp(sp, sl, ep, el) > 0 && rnd(&rd->rng) % 4 != 0) {
        const char *t = sp; /* mostly ordered bounds; sometimes end < start */
        size_t tl = sl;
        sp = ep, sl = el, ep = t, el = tl;
    }
    size_t limit = rnd(&rd->rng) % 3 == 0 ? 1 + (size_t)(rnd(&rd->rng) % 50) : 0;
    static _Thread_local rkey got[ALL_KEYS + 1];
    rwalk w = {rd, sp, ep, sp ? sl : 0, ep ? el : 0, got, 0};
    int rc;
    if (rnd(&rd->rng) % 2) {
        br_iter *it = NULL;
        rc = br_engine_iter(rd->sh->e, sp, w.sl, ep, w.el, limit, &it);
        if (rc != 0) {
            failf(rd->sh, "reader %u: br_engine_iter: %s", rd->r, br_errname(rc));
            return;
        }
        const void *k, *v;
        size_t kl, vl;
        while ((rc = br_iter_next(it, &k, &kl, &v, &vl)) == 1)
            if (rwalk_visit(&w, k, kl, v, vl))
                break;
        br_iter_free(it);
        if (rc < 0)
            failf(rd->sh, "reader %u: br_iter_next: %s", rd->r, br_errname(rc));
    } else {
        rc = br_engine_range(rd->sh->e, sp, w.sl, ep, w.el, limit, rwalk_visit, &w);
        if (rc < 0)
            failf(rd->sh, "reader %u: br_engine_range: %s", rd->r, br_errname(rc));
    }
    size_t n = w.n;
    if (atomic_load(&rd->sh->stop))
        return;
    if (sp && ep && keycmp(sp, sl, ep, el) > 0 && n > 0) {
        failf(rd->sh, "reader %u: a range with end < start returned %zu keys", rd->r, n);
        return;
    }
    if (limit && n > limit) {
        failf(rd->sh, "reader %u: range with limit %zu returned %zu keys", rd->r, limit, n);
        return;
    }
    /* Every stable key inside the part of the range walked must be there. */
    int complete = limit == 0 || n < limit;
    for (unsigned i = 0; i < STABLE; i++) {
        char sk[KEY_MAX];
        size_t skl = stable_key(sk, i);
        if (sp && keycmp(sk, skl, sp, sl) < 0)
            continue;
        if (complete ? (ep && keycmp(sk, skl, ep, el) > 0)
                     : keycmp(sk, skl, got[n - 1].k, got[n - 1].kl) > 0)
            continue;
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (keycmp(got[mid].k, got[mid].kl, sk, skl) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo >= n || keycmp(got[lo].k, got[lo].kl, sk, skl) != 0) {
            failf(rd->sh,
                  "reader %u: range [%.*s, %.*s] limit %zu (%zu keys) skipped the key %s, "
                  "which always exists",
                  rd->r, sp ? (int)sl : 4, sp ? sp : "NULL", ep ? (int)el : 4, ep ? ep : "NULL",
                  limit, n, sk);
            return;
        }
    }
    rd->ranges++;
    rd->range_keys += n;
}

static void *reader_main(void *arg) {
    reader *rd = arg;
    pthread_barrier_wait(&rd->sh->start);
    /* At least READER_OPS, and on until the writers are done (their work is
     * bounded, so this is too). */
    for (unsigned op = 0; !atomic_load(&rd->sh->stop) &&
                          (op < READER_OPS || atomic_load(&rd->sh->writers_done) < NW);
         op++) {
        if (rnd(&rd->rng) % 10 == 0)
            reader_range(rd);
        else
            reader_get(rd);
    }
    return NULL;
}

/* Callback form of a range, run by the main thread at the end. */
typedef struct cb_ctx {
    size_t n;
    rkey prev;
    int bad;
} cb_ctx;

static int order_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    cb_ctx *c = ctx;
    if (klen > KEY_MAX || (c->n && keycmp(c->prev.k, c->prev.kl, key, klen) >= 0)) {
        c->bad = 1;
        return 1;
    }
    memcpy(c->prev.k, key, klen);
    c->prev.kl = klen;
    c->n++;
    return 0;
}

/* ---- The final model ---------------------------------------------------------------- */

/* Checks the store against the writers' models. Returns the live key count. */
static size_t check_final(br_engine *e, writer *wrs, const char *ctx) {
    char k[KEY_MAX], want[VALUE_MAX];
    size_t live = 0;
    for (unsigned w = 0; w < NW; w++) {
        for (unsigned i = 0; i < OWNED; i++) {
            size_t kl = owned_key(k, w, i);
            void *v = NULL;
            size_t vl = 0;
            int rc = br_engine_get(e, k, kl, &v, &vl);
            if (!wrs[w].owned_present[i]) {
                cr_assert_eq(rc, BR_ENOTFOUND, "%s: %s should be absent, get gave %s", ctx, k,
                             br_errname(rc));
            } else {
                cr_assert_eq(rc, 0, "%s: get(%s): %s", ctx, k, br_errname(rc));
                size_t wl = make_value(want, k, kl, w, wrs[w].owned_ver[i]);
                cr_assert(vl == wl && memcmp(v, want, wl) == 0, "%s: %s holds '%.*s', want op %u",
                          ctx, k, (int)(vl < 40 ? vl : 40), (const char *)v, wrs[w].owned_ver[i]);
                live++;
            }
            free(v);
        }
    }
    for (unsigned i = 0; i < STABLE; i++) {
        size_t kl = stable_key(k, i);
        unsigned w = i % NW;
        void *v = NULL;
        size_t vl = 0;
        int rc = br_engine_get(e, k, kl, &v, &vl);
        cr_assert_eq(rc, 0, "%s: get(%s): %s", ctx, k, br_errname(rc));
        size_t wl = make_value(want, k, kl, w, wrs[w].stable_ver[i]);
        cr_assert(vl == wl && memcmp(v, want, wl) == 0, "%s: %s holds '%.*s', want op %u of %u",
                  ctx, k, (int)(vl < 40 ? vl : 40), (const char *)v, wrs[w].stable_ver[i], w);
        free(v);
        live++;
    }
    /* A contended key ends as the last op of one of its writers. */
    for (unsigned i = 0; i < CONTENDED; i++) {
        size_t kl = contended_key(k, i);
        void *v = NULL;
        size_t vl = 0;
        int rc = br_engine_get(e, k, kl, &v, &vl);
        cr_assert(rc == 0 || rc == BR_ENOTFOUND, "%s: get(%s): %s", ctx, k, br_errname(rc));
        int ok = 0, touched = 0;
        for (unsigned w = 0; w < NW; w++) {
            const last_op *lo = &wrs[w].contended[i];
            if (!lo->touched)
                continue;
            touched = 1;
            if (lo->del) {
                ok |= rc == BR_ENOTFOUND;
            } else if (rc == 0) {
                size_t wl = make_value(want, k, kl, w, lo->ver);
                ok |= vl == wl && memcmp(v, want, wl) == 0;
            }
        }
        if (!touched)
            ok = rc == BR_ENOTFOUND;
        cr_assert(ok, "%s: contended key %s is %s '%.*s', not the last write of any writer", ctx, k,
                  rc == 0 ? "present" : "absent", rc == 0 ? (int)(vl < 40 ? vl : 40) : 0,
                  rc == 0 ? (const char *)v : "");
        live += rc == 0;
        free(v);
    }
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, (uint64_t)live, "%s: stats.keys %" PRIu64 ", model %zu", ctx, st.keys,
                 live);
    cb_ctx cc = {0};
    int rc = br_engine_range(e, NULL, 0, NULL, 0, 0, order_fn, &cc);
    cr_assert_eq(rc, 0, "%s: range: %d", ctx, rc);
    cr_assert(!cc.bad, "%s: final range out of order", ctx);
    cr_assert_eq(cc.n, live, "%s: final range has %zu keys, model %zu", ctx, cc.n, live);
    return live;
}

static br_engine *open_ok(const char *dir, const br_engine_options *o) {
    br_engine *e = NULL;
    char err[512] = "";
    int rc = br_engine_open(dir, o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open: %s (%s)", br_errname(rc), err);
    return e;
}

Test(concurrency, readers_during_writes) {
    char *dir = tu_tmpdir("concurrency");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 128u << 10; /* several rollovers while readers read */
    o.sync = BR_SYNC_ALWAYS;
    static shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    sh.e = open_ok(dir, &o);
    sh.seed = 0xc0ffee;

    static writer wrs[NW];
    static reader rds[NR];
    memset(wrs, 0, sizeof wrs);
    memset(rds, 0, sizeof rds);
    /* The stable keys exist before anyone reads; version 0 is this write. */
    char k[KEY_MAX], v[VALUE_MAX];
    for (unsigned i = 0; i < STABLE; i++) {
        size_t kl = stable_key(k, i);
        int rc = br_engine_put(sh.e, k, kl, v, make_value(v, k, kl, i % NW, 0));
        cr_assert_eq(rc, 0);
    }
    pthread_barrier_init(&sh.start, NULL, NW + NR);
    pthread_t th[NW + NR];
    for (unsigned w = 0; w < NW; w++) {
        wrs[w].sh = &sh;
        wrs[w].w = w;
        wrs[w].rng = sh.seed * 31 + w;
        cr_assert_eq(pthread_create(&th[w], NULL, writer_main, &wrs[w]), 0);
    }
    for (unsigned r = 0; r < NR; r++) {
        rds[r].sh = &sh;
        rds[r].r = r;
        rds[r].rng = sh.seed * 77 + r;
        cr_assert_eq(pthread_create(&th[NW + r], NULL, reader_main, &rds[r]), 0);
    }
    for (unsigned i = 0; i < NW + NR; i++)
        pthread_join(th[i], NULL);
    cr_assert(sh.failure[0] == 0, "%s", sh.failure);

    uint64_t ranges = 0, range_keys = 0;
    for (unsigned r = 0; r < NR; r++)
        ranges += rds[r].ranges, range_keys += rds[r].range_keys;
    size_t live = check_final(sh.e, wrs, "after the threads");
    br_engine_stats st;
    br_engine_stats_get(sh.e, &st);
    fprintf(stderr,
            "concurrency: %zu live keys, %" PRIu64 " ranges (%" PRIu64 " keys), %" PRIu64
            " data files, %" PRIu64 " write groups, %" PRIu64 " syncs\n",
            live, ranges, range_keys, st.data_files, st.write_groups, st.syncs);
    cr_assert_eq(br_engine_close(sh.e), 0);

    sh.e = open_ok(dir, &o);
    check_final(sh.e, wrs, "after reopen");
    cr_assert_eq(br_engine_close(sh.e), 0);
    pthread_barrier_destroy(&sh.start);
    tu_rmrf(dir);
    free(dir);
}

/* ---- Batch visibility ------------------------------------------------------------------ */

#define PAIRS      8
#define BATCH_OPS  1500
#define PAIR_READS 4000

typedef struct pair_ctx {
    br_engine *e;
    pthread_barrier_t start;
    atomic_int stop;
    atomic_int writer_done;
    pthread_mutex_t mu;
    char failure[512];
    unsigned r;
} pair_ctx;

static unsigned pair_version(const void *v, size_t vl) {
    char buf[32];
    if (vl == 0 || vl >= sizeof buf)
        return (unsigned)-1;
    memcpy(buf, v, vl);
    buf[vl] = 0;
    unsigned ver;
    return sscanf(buf, "ver%u", &ver) == 1 ? ver : (unsigned)-1;
}

static void *pair_writer(void *arg) {
    pair_ctx *pc = arg;
    br_batch *b = br_batch_new();
    uint64_t rng = 42;
    pthread_barrier_wait(&pc->start);
    for (unsigned ver = 1; ver <= BATCH_OPS && !atomic_load(&pc->stop); ver++) {
        unsigned p = (unsigned)(rnd(&rng) % PAIRS);
        char ka[8], kb[8], v[32];
        snprintf(ka, sizeof ka, "pa%02u", p);
        snprintf(kb, sizeof kb, "pb%02u", p);
        int vl = snprintf(v, sizeof v, "ver%u", ver);
        br_batch_clear(b);
        br_batch_put(b, ka, 4, v, (size_t)vl);
        br_batch_put(b, kb, 4, v, (size_t)vl);
        int rc = br_engine_write(pc->e, b);
        if (rc != 0) {
            pthread_mutex_lock(&pc->mu);
            snprintf(pc->failure, sizeof pc->failure, "write: %s", br_errname(rc));
            pthread_mutex_unlock(&pc->mu);
            atomic_store(&pc->stop, 1);
        }
    }
    br_batch_free(b);
    atomic_store(&pc->writer_done, 1);
    return NULL;
}

static void *pair_reader(void *arg) {
    pair_ctx *pc = arg;
    pthread_mutex_lock(&pc->mu);
    uint64_t rng = 1000 + pc->r++;
    pthread_mutex_unlock(&pc->mu);
    pthread_barrier_wait(&pc->start);
    for (unsigned i = 0;
         !atomic_load(&pc->stop) && (i < PAIR_READS || !atomic_load(&pc->writer_done)); i++) {
        unsigned p = (unsigned)(rnd(&rng) % PAIRS);
        char k1[8], k2[8];
        int a_first = rnd(&rng) % 2;
        snprintf(k1, sizeof k1, a_first ? "pa%02u" : "pb%02u", p);
        snprintf(k2, sizeof k2, a_first ? "pb%02u" : "pa%02u", p);
        void *v1 = NULL, *v2 = NULL;
        size_t l1 = 0, l2 = 0;
        int rc1 = br_engine_get(pc->e, k1, 4, &v1, &l1);
        int rc2 = br_engine_get(pc->e, k2, 4, &v2, &l2);
        unsigned ver1 = rc1 == 0 ? pair_version(v1, l1) : 0;
        unsigned ver2 = rc2 == 0 ? pair_version(v2, l2) : 0;
        /* Both keys of pair p are only ever written together, so once one
         * shows version v the other shows v or newer. */
        if ((rc1 != 0 && rc1 != BR_ENOTFOUND) || (rc2 != 0 && rc2 != BR_ENOTFOUND) ||
            ver1 == (unsigned)-1 || ver2 == (unsigned)-1 || ver2 < ver1) {
            pthread_mutex_lock(&pc->mu);
            if (!pc->failure[0])
                snprintf(pc->failure, sizeof pc->failure,
                         "read %s = %s ver %u, then %s = %s ver %u: the batch that wrote both "
                         "was seen half applied",
                         k1, br_errname(rc1), ver1, k2, br_errname(rc2), ver2);
            pthread_mutex_unlock(&pc->mu);
            atomic_store(&pc->stop, 1);
        }
        free(v1);
        free(v2);
    }
    return NULL;
}

Test(concurrency, batch_visible_whole) {
    char *dir = tu_tmpdir("concurrency_batch");
    br_engine_options o;
    br_engine_options_init(&o);
    o.sync = BR_SYNC_NEVER; /* many batches, quickly */
    static pair_ctx pc;
    memset(&pc, 0, sizeof pc);
    pthread_mutex_init(&pc.mu, NULL);
    pc.e = open_ok(dir, &o);
    pthread_barrier_init(&pc.start, NULL, 1 + NR);
    pthread_t th[1 + NR];
    cr_assert_eq(pthread_create(&th[0], NULL, pair_writer, &pc), 0);
    for (unsigned r = 0; r < NR; r++)
        cr_assert_eq(pthread_create(&th[1 + r], NULL, pair_reader, &pc), 0);
    for (unsigned i = 0; i < 1 + NR; i++)
        pthread_join(th[i], NULL);
    cr_assert(pc.failure[0] == 0, "%s", pc.failure);
    cr_assert_eq(br_engine_close(pc.e), 0);
    pthread_barrier_destroy(&pc.start);
    tu_rmrf(dir);
    free(dir);
}

/* ---- Group commit -------------------------------------------------------------------- */

#define GC_THREADS 4
#define GC_PUTS    300

typedef struct gc_arg {
    br_engine *e;
    unsigned t;
    int failed;
} gc_arg;

static void *gc_writer(void *arg) {
    gc_arg *a = arg;
    char k[16], v[32];
    for (unsigned i = 0; i < GC_PUTS; i++) {
        int kl = snprintf(k, sizeof k, "g%u-%04u", a->t, i);
        int vl = snprintf(v, sizeof v, "value-%u-%u", a->t, i);
        if (br_engine_put(a->e, k, (size_t)kl, v, (size_t)vl) != 0)
            a->failed = 1;
    }
    return NULL;
}

Test(concurrency, group_commit_durable_writes) {
    char *dir = tu_tmpdir("concurrency_gc");
    br_engine_options o;
    br_engine_options_init(&o);
    o.sync = BR_SYNC_ALWAYS;
    br_engine *e = open_ok(dir, &o);
    pthread_t th[GC_THREADS];
    gc_arg args[GC_THREADS];
    for (unsigned t = 0; t < GC_THREADS; t++) {
        args[t] = (gc_arg){e, t, 0};
        cr_assert_eq(pthread_create(&th[t], NULL, gc_writer, &args[t]), 0);
    }
    for (unsigned t = 0; t < GC_THREADS; t++) {
        pthread_join(th[t], NULL);
        cr_assert(!args[t].failed, "a put failed in thread %u", t);
    }
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, GC_THREADS * GC_PUTS);
    cr_assert_eq(st.puts, GC_THREADS * GC_PUTS);
    cr_assert(st.write_groups >= 1 && st.write_groups <= st.puts,
              "write_groups %" PRIu64 " for %" PRIu64 " puts", st.write_groups, st.puts);
    cr_assert(st.syncs >= st.write_groups,
              "BR_SYNC_ALWAYS: %" PRIu64 " syncs for %" PRIu64 " write groups", st.syncs,
              st.write_groups);
    cr_assert_eq(br_engine_close(e), 0);

    e = open_ok(dir, &o);
    char k[16], v[32], buf[32];
    for (unsigned t = 0; t < GC_THREADS; t++)
        for (unsigned i = 0; i < GC_PUTS; i++) {
            int kl = snprintf(k, sizeof k, "g%u-%04u", t, i);
            int vl = snprintf(v, sizeof v, "value-%u-%u", t, i);
            size_t got = 0;
            int rc = br_engine_get_into(e, k, (size_t)kl, buf, sizeof buf, &got);
            cr_assert_eq(rc, 0, "get(%s): %s", k, br_errname(rc));
            cr_assert(got == (size_t)vl && memcmp(buf, v, got) == 0, "%s: wrong value", k);
        }
    cr_assert_eq(br_engine_close(e), 0);
    tu_rmrf(dir);
    free(dir);
}

#ifdef BR_TSAN_RUNNER
int main(void) {
    for (int i = 0; i < tsan_ntests; i++) {
        fprintf(stderr, "[RUN ] %s\n", tsan_tests[i].name);
        tsan_tests[i].fn();
        fprintf(stderr, "[PASS] %s\n", tsan_tests[i].name);
    }
    return 0;
}
#endif
