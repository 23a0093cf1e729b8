/*
 * test_recovery.c - black-box tests of what survives a close and reopen:
 * torn tails of the newest file, torn batches, corruption of closed and
 * newest files, deletes across restarts and rollovers, a million keys,
 * input limits, the directory LOCK, and ranges.
 *
 * The tests rely only on include/bitraft/engine.h and on the data file
 * layout documented in docs/FORMAT.md: files NNNNNNNNNN.data, a 32-byte file
 * header, then records of a 24-byte header (u32 checksum, u32 key length,
 * u32 value length, u8 flags, 3 reserved, u64 sequence number) followed by
 * key and value; a header with key length 0 ends the data.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "bitraft/engine.h"
#include "testutil.h"

#define FILE_HDR 32u
#define REC_HDR  24u

/* ---- Small helpers --------------------------------------------------------- */

/* splitmix64 */
static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    cr_assert(p != NULL, "out of memory");
    return p;
}

static void *xmemdup(const void *p, size_t n) {
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

static int keycmp(const void *a, size_t al, const void *b, size_t bl) {
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (al > bl) - (al < bl);
}

/* Log sink that keeps every message (the engine may log from any thread). */
typedef struct logcap {
    pthread_mutex_t mu;
    int warn_or_worse;
    char text[16384];
    size_t len;
} logcap;

static void log_sink(void *ctx, br_log_level level, const char *msg) {
    logcap *lc = ctx;
    pthread_mutex_lock(&lc->mu);
    if (level <= BR_LOG_WARN)
        lc->warn_or_worse++;
    size_t n = strlen(msg);
    if (lc->len + n + 2 < sizeof lc->text) {
        memcpy(lc->text + lc->len, msg, n);
        lc->len += n;
        lc->text[lc->len++] = '\n';
        lc->text[lc->len] = 0;
    }
    pthread_mutex_unlock(&lc->mu);
}

static void logcap_reset(logcap *lc) {
    pthread_mutex_lock(&lc->mu);
    lc->warn_or_worse = 0;
    lc->len = 0;
    lc->text[0] = 0;
    pthread_mutex_unlock(&lc->mu);
}

static br_engine *open_ok(const char *dir, const br_engine_options *o) {
    br_engine *e = NULL;
    char err[512] = "";
    int rc = br_engine_open(dir, o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "br_engine_open(%s): %s (%s)", dir, br_errname(rc), err);
    cr_assert(e != NULL);
    return e;
}

static void close_ok(br_engine *e) {
    int rc = br_engine_close(e);
    cr_assert_eq(rc, 0, "br_engine_close: %s", br_errname(rc));
}

/* Closes e and opens dir again. */
static br_engine *reopen(br_engine *e, const char *dir, const br_engine_options *o) {
    close_ok(e);
    return open_ok(dir, o);
}

/* Default options but for the data file size cap. */
static br_engine_options opts(uint64_t max_file_size) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = max_file_size;
    return o;
}

/* The same without fsync (BR_SYNC_NEVER). */
static br_engine_options opts_nosync(uint64_t max_file_size) {
    br_engine_options o = opts(max_file_size);
    o.sync = BR_SYNC_NEVER;
    return o;
}

/* Opens dir expecting the error `want`: no engine comes back, and err holds
 * the engine's message. */
static void open_fails(const char *dir, const br_engine_options *o, int want, char *err,
                       size_t errlen, const char *what) {
    br_engine *e = NULL;
    err[0] = 0;
    int rc = br_engine_open(dir, o, &e, err, errlen);
    cr_assert_eq(rc, want, "%s: open gave %s (%s)", what, br_errname(rc), err);
    cr_assert(e == NULL);
}

static void put_ok(br_engine *e, const void *k, size_t kl, const void *v, size_t vl) {
    int rc = br_engine_put(e, k, kl, v, vl);
    cr_assert_eq(rc, 0, "put(%.*s): %s", (int)kl, (const char *)k, br_errname(rc));
}

static void put_s(br_engine *e, const char *k, const char *v) {
    put_ok(e, k, strlen(k), v, strlen(v));
}

static void del_s(br_engine *e, const char *k) {
    int rc = br_engine_delete(e, k, strlen(k));
    cr_assert_eq(rc, 0, "delete(%s): %s", k, br_errname(rc));
}

static void expect_val(br_engine *e, const void *k, size_t kl, const void *v, size_t vl,
                       const char *ctx) {
    void *got = NULL;
    size_t gl = 0;
    int rc = br_engine_get(e, k, kl, &got, &gl);
    cr_assert_eq(rc, 0, "%s: get(%.*s) = %s, want a value", ctx, (int)kl, (const char *)k,
                 br_errname(rc));
    cr_assert(got != NULL, "%s: get returned NULL value", ctx);
    cr_assert(gl == vl && memcmp(got, v, vl) == 0, "%s: get(%.*s) = '%.*s', want '%.*s'", ctx,
              (int)kl, (const char *)k, (int)gl, (const char *)got, (int)vl, (const char *)v);
    free(got);
}

static void expect_absent(br_engine *e, const void *k, size_t kl, const char *ctx) {
    void *got = NULL;
    size_t gl = 0;
    int rc = br_engine_get(e, k, kl, &got, &gl);
    cr_assert_eq(rc, BR_ENOTFOUND, "%s: get(%.*s) = %s (%.*s), want BR_ENOTFOUND", ctx, (int)kl,
                 (const char *)k, br_errname(rc), rc == 0 ? (int)gl : 0,
                 rc == 0 ? (const char *)got : "");
    free(got);
}

/* Every test gets a fresh store directory, removed after it. */
static char *tdir;

static void tdir_make(void) {
    tdir = tu_tmpdir(criterion_current_test->name);
}

static void tdir_remove(void) {
    tu_rmrf(tdir);
    free(tdir);
}

TestSuite(recovery, .init = tdir_make, .fini = tdir_remove);

/* ---- Files ------------------------------------------------------------------ */

static char *data_path(const char *dir, unsigned id) {
    char name[32];
    snprintf(name, sizeof name, "%010u.data", id);
    return tu_path(dir, name);
}

static int is_data_name(const char *n, unsigned *id) {
    if (strlen(n) != 15 || strcmp(n + 10, ".data") != 0)
        return 0;
    unsigned v = 0;
    for (int i = 0; i < 10; i++) {
        if (n[i] < '0' || n[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(n[i] - '0');
    }
    *id = v;
    return 1;
}

/* Number of data files in dir and the highest id among them. */
static unsigned count_data_files(const char *dir, unsigned *max_id) {
    DIR *d = opendir(dir);
    cr_assert(d != NULL, "opendir(%s): %s", dir, strerror(errno));
    unsigned n = 0, hi = 0, id;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_data_name(de->d_name, &id)) {
            n++;
            if (id > hi)
                hi = id;
        }
    }
    closedir(d);
    if (max_id)
        *max_id = hi;
    return n;
}

static uint8_t *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    uint8_t *buf = xmalloc((size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        cr_assert(r > 0, "read(%s): %s", path, strerror(errno));
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

/* Writes len bytes of buf at offset off of path (the file must exist). */
static void pwrite_file(const char *path, const void *buf, size_t len, size_t off) {
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
        cr_assert(w > 0, "write(%s): %s", path, strerror(errno));
        done += (size_t)w;
    }
    close(fd);
}

/*
 * Walks the records of a data file image from offset 32. Fills starts[]
 * (up to max) and returns the number of records; *end is the end of the last
 * one.
 */
static size_t walk_records(const uint8_t *p, size_t len, size_t *starts, size_t max, size_t *end) {
    size_t off = FILE_HDR, n = 0;
    while (off + REC_HDR <= len) {
        uint32_t kl = le32(p + off + 4), vl = le32(p + off + 8);
        if (kl == 0)
            break;
        if ((uint64_t)off + REC_HDR + kl + vl > len)
            break;
        if (n < max)
            starts[n] = off;
        n++;
        off += REC_HDR + kl + vl;
    }
    *end = off;
    return n;
}

/* A copy of every file of a store directory (zero tails kept sparse). */
typedef struct snapfile {
    char name[256];
    uint8_t *data;
    size_t len;  /* bytes kept (up to the last nonzero byte) */
    size_t size; /* file size */
} snapfile;

typedef struct snapshot {
    snapfile f[64];
    int n;
} snapshot;

static void snap_take(const char *dir, snapshot *s) {
    s->n = 0;
    DIR *d = opendir(dir);
    cr_assert(d != NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p = tu_path(dir, de->d_name);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0);
        cr_assert(S_ISREG(st.st_mode), "unexpected non-file %s in store", p);
        cr_assert(s->n < 64);
        snapfile *f = &s->f[s->n++];
        snprintf(f->name, sizeof f->name, "%s", de->d_name);
        f->data = read_file(p, &f->size);
        f->len = f->size;
        while (f->len > 0 && f->data[f->len - 1] == 0)
            f->len--;
        free(p);
    }
    closedir(d);
}

static void snap_restore(const char *dir, const snapshot *s) {
    tu_rmrf(dir);
    cr_assert_eq(mkdir(dir, 0755), 0, "mkdir(%s): %s", dir, strerror(errno));
    for (int i = 0; i < s->n; i++) {
        char *p = tu_path(dir, s->f[i].name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert(fd >= 0);
        cr_assert_eq(ftruncate(fd, (off_t)s->f[i].size), 0);
        close(fd);
        pwrite_file(p, s->f[i].data, s->f[i].len, 0);
        free(p);
    }
}

static void snap_free(snapshot *s) {
    for (int i = 0; i < s->n; i++)
        free(s->f[i].data);
    s->n = 0;
}

/* ---- A model of the store: a sorted array ---------------------------------- */

typedef struct kv {
    uint8_t *k, *v;
    size_t kl, vl;
} kv;

typedef struct model {
    kv *a;
    size_t n, cap;
} model;

/* Index of the first entry >= key; *found says whether it equals key. */
static size_t m_lower(const model *m, const void *k, size_t kl, int *found) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keycmp(m->a[mid].k, m->a[mid].kl, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (found)
        *found = lo < m->n && keycmp(m->a[lo].k, m->a[lo].kl, k, kl) == 0;
    return lo;
}

static void m_put(model *m, const void *k, size_t kl, const void *v, size_t vl) {
    int found;
    size_t i = m_lower(m, k, kl, &found);
    if (found) {
        free(m->a[i].v);
        m->a[i].v = xmemdup(v, vl);
        m->a[i].vl = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->a = realloc(m->a, m->cap * sizeof *m->a);
        cr_assert(m->a != NULL);
    }
    memmove(&m->a[i + 1], &m->a[i], (m->n - i) * sizeof *m->a);
    m->a[i] = (kv){xmemdup(k, kl), xmemdup(v, vl), kl, vl};
    m->n++;
}

static void m_del(model *m, const void *k, size_t kl) {
    int found;
    size_t i = m_lower(m, k, kl, &found);
    if (!found)
        return;
    free(m->a[i].k);
    free(m->a[i].v);
    memmove(&m->a[i], &m->a[i + 1], (m->n - i - 1) * sizeof *m->a);
    m->n--;
}

static const kv *m_get(const model *m, const void *k, size_t kl) {
    int found;
    size_t i = m_lower(m, k, kl, &found);
    return found ? &m->a[i] : NULL;
}

static void m_free(model *m) {
    for (size_t i = 0; i < m->n; i++) {
        free(m->a[i].k);
        free(m->a[i].v);
    }
    free(m->a);
    memset(m, 0, sizeof *m);
}

/* Writes k = v into both the store and the model. */
static void put_both(br_engine *e, model *m, const void *k, size_t kl, const void *v, size_t vl) {
    put_ok(e, k, kl, v, vl);
    m_put(m, k, kl, v, vl);
}

/* Checks that the store holds exactly the model: a full range, a get of
 * every key, and the live key count. */
static void check_store(br_engine *e, const model *m, const char *ctx) {
    br_iter *it = NULL;
    int rc = br_engine_iter(e, NULL, 0, NULL, 0, 0, &it);
    cr_assert_eq(rc, 0, "%s: iter: %s", ctx, br_errname(rc));
    size_t i = 0;
    const void *k, *v;
    size_t kl, vl;
    while ((rc = br_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        cr_assert(i < m->n, "%s: range returned an extra key '%.*s' (model has %zu keys)", ctx,
                  (int)kl, (const char *)k, m->n);
        const kv *x = &m->a[i];
        cr_assert(kl == x->kl && memcmp(k, x->k, kl) == 0,
                  "%s: range key %zu is '%.*s', want '%.*s'", ctx, i, (int)kl, (const char *)k,
                  (int)x->kl, (const char *)x->k);
        cr_assert(vl == x->vl && (vl == 0 || memcmp(v, x->v, vl) == 0),
                  "%s: range value of '%.*s' is '%.*s', want '%.*s'", ctx, (int)kl, (const char *)k,
                  (int)vl, (const char *)v, (int)x->vl, (const char *)x->v);
        i++;
    }
    cr_assert_eq(rc, 0, "%s: iter_next: %s", ctx, br_errname(rc));
    br_iter_free(it);
    cr_assert_eq(i, m->n, "%s: range returned %zu keys, model has %zu", ctx, i, m->n);
    for (i = 0; i < m->n; i++)
        expect_val(e, m->a[i].k, m->a[i].kl, m->a[i].v, m->a[i].vl, ctx);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, (uint64_t)m->n, "%s: stats.keys %" PRIu64 ", model %zu", ctx, st.keys,
                 m->n);
}

/* ---- Scripted operations (for the torn tail tests) ------------------------- */

typedef struct t_sub {
    int del;
    const char *k, *v;
    size_t vlen; /* 0: strlen(v) */
} t_sub;

static size_t sub_vlen(const t_sub *s) {
    return s->vlen ? s->vlen : strlen(s->v);
}

typedef struct t_op {
    int batch; /* nonzero: the subs go in one br_batch */
    int nsub;
    t_sub s[6];
} t_op;

static void t_apply_engine(br_engine *e, const t_op *op) {
    if (!op->batch) {
        if (op->s[0].del)
            del_s(e, op->s[0].k);
        else
            put_ok(e, op->s[0].k, strlen(op->s[0].k), op->s[0].v, sub_vlen(&op->s[0]));
        return;
    }
    br_batch *b = br_batch_new();
    cr_assert(b != NULL);
    for (int i = 0; i < op->nsub; i++) {
        const t_sub *s = &op->s[i];
        int rc = s->del ? br_batch_delete(b, s->k, strlen(s->k))
                        : br_batch_put(b, s->k, strlen(s->k), s->v, sub_vlen(s));
        cr_assert_eq(rc, 0);
    }
    int rc = br_engine_write(e, b);
    cr_assert_eq(rc, 0, "br_engine_write: %s", br_errname(rc));
    br_batch_free(b);
}

static void t_apply_model(model *m, const t_op *op) {
    for (int i = 0; i < op->nsub; i++) {
        const t_sub *s = &op->s[i];
        if (s->del)
            m_del(m, s->k, strlen(s->k));
        else
            m_put(m, s->k, strlen(s->k), s->v, sub_vlen(s));
    }
}

/*
 * Writes ops into a fresh store, closes it, then for every byte offset c from
 * the start of op first_cut to the end of the last op cuts the newest file at
 * c -- once by truncating it, once by zeroing everything from c on -- and
 * checks after a reopen that exactly the ops wholly before c are there, that
 * a new write is accepted, and that it survives another reopen.
 */
static void torn_run(const char *name, const t_op *ops, size_t nops, size_t first_cut) {
    const char *dir = tdir;
    logcap lc = {.mu = PTHREAD_MUTEX_INITIALIZER};
    br_engine_options o = opts(1u << 20);
    o.log = log_sink;
    o.log_ctx = &lc;

    br_engine *e = open_ok(dir, &o);
    size_t nrec = 0;
    for (size_t i = 0; i < nops; i++) {
        t_apply_engine(e, &ops[i]);
        nrec += (size_t)ops[i].nsub;
    }
    close_ok(e);

    snapshot snap;
    snap_take(dir, &snap);
    unsigned newest_id = 0;
    cr_assert(count_data_files(dir, &newest_id) >= 1);
    char *newest = data_path(dir, newest_id);
    char newest_name[32];
    snprintf(newest_name, sizeof newest_name, "%010u.data", newest_id);
    const snapfile *nf = NULL;
    for (int i = 0; i < snap.n; i++)
        if (strcmp(snap.f[i].name, newest_name) == 0)
            nf = &snap.f[i];
    cr_assert(nf != NULL);

    size_t starts[64], data_end;
    size_t n = walk_records(nf->data, nf->size, starts, 64, &data_end);
    cr_assert_eq(n, nrec, "%s: newest file %s holds %zu records, %zu were written", name,
                 newest_name, n, nrec);
    cr_assert(nrec < 64);

    /* Byte extent of each op. */
    size_t op_start[32], op_end[32];
    cr_assert(nops <= 32);
    for (size_t i = 0, r = 0; i < nops; i++) {
        op_start[i] = starts[r];
        r += (size_t)ops[i].nsub;
        op_end[i] = r < n ? starts[r] : data_end;
    }

    size_t cuts = 0;
    for (int variant = 0; variant < 2; variant++) {
        for (size_t c = op_start[first_cut]; c <= data_end; c++) {
            char ctx[160];
            snprintf(ctx, sizeof ctx, "%s: cut %s at %zu (records end at %zu)", name,
                     variant ? "by zeroing" : "by truncation", c, data_end);
            snap_restore(dir, &snap);
            if (variant == 0) {
                cr_assert_eq(truncate(newest, (off_t)c), 0);
            } else if (nf->size > c) {
                uint8_t *z = calloc(1, nf->size - c);
                cr_assert(z != NULL);
                pwrite_file(newest, z, nf->size - c, c);
                free(z);
            }

            /* Ops wholly before the cut survive; the rest are gone. */
            size_t m = 0;
            while (m < nops && op_end[m] <= c)
                m++;
            model md = {0};
            for (size_t i = 0; i < m; i++)
                t_apply_model(&md, &ops[i]);

            logcap_reset(&lc);
            char err[512] = "";
            e = NULL;
            int rc = br_engine_open(dir, &o, &e, err, sizeof err);
            cr_assert_eq(rc, 0, "%s: open: %s (%s)", ctx, br_errname(rc), err);
            check_store(e, &md, ctx);
            for (size_t i = 0; i < nops; i++)
                for (int j = 0; j < ops[i].nsub; j++) {
                    const char *k = ops[i].s[j].k;
                    if (!m_get(&md, k, strlen(k)))
                        expect_absent(e, k, strlen(k), ctx);
                }

            /* A cut strictly inside a record whose header is whole is a torn
             * record: the contract says it is logged. */
            for (size_t r = 0; r < n; r++) {
                size_t rend = r + 1 < n ? starts[r + 1] : data_end;
                if (c >= starts[r] + REC_HDR && c < rend)
                    cr_assert(lc.warn_or_worse > 0, "%s: torn record at %zu was not logged", ctx,
                              starts[r]);
            }

            /* The store takes new writes after the cut, and keeps them. */
            put_s(e, "after-cut", ctx);
            m_put(&md, "after-cut", 9, ctx, strlen(ctx));
            e = reopen(e, dir, &o);
            check_store(e, &md, ctx);
            close_ok(e);
            m_free(&md);
            cuts++;
        }
    }
    cr_assert(cuts > 10);
    free(newest);
    snap_free(&snap);
}

/* ---- Torn tails ------------------------------------------------------------ */

Test(recovery, torn_tail_records) {
    static const t_op ops[] = {
        {0, 1, {{0, "alpha", "value-of-alpha", 0}}},
        {0, 1, {{0, "bravo", "value-of-bravo-1", 0}}},
        {0, 1, {{0, "charlie", "c", 0}}},
        {0, 1, {{0, "delta", "value-of-delta", 0}}},
        {0, 1, {{0, "echo", "", 0}}}, /* empty value: present, not deleted */
        {0, 1, {{0, "foxtrot", "value-of-foxtrot", 0}}},
        /* The last three: an overwrite, a delete, a new key. */
        {0, 1, {{0, "bravo", "value-of-bravo-2", 0}}},
        {0, 1, {{1, "delta", NULL, 0}}},
        {0, 1, {{0, "golf", "value-of-golf", 0}}},
    };
    size_t nops = sizeof ops / sizeof ops[0];
    torn_run("torn_tail", ops, nops, nops - 3);
}

Test(recovery, torn_batch) {
    static const t_op ops[] = {
        {0, 1, {{0, "k1", "old-1", 0}}},
        {0, 1, {{0, "k2", "old-2", 0}}},
        {0, 1, {{0, "k3", "old-3", 0}}},
        {1, 2, {{0, "b0", "first-batch-0", 0}, {0, "b1", "first-batch-1", 0}}},
        /* The batch that gets cut: overwrites, a delete, new keys. */
        {1,
         5,
         {{0, "k1", "new-1", 0},
          {1, "k2", NULL, 0},
          {0, "n1", "batch-new-1", 0},
          {0, "b0", "second-batch-0", 0},
          {0, "n2", "batch-new-2", 0}}},
    };
    size_t nops = sizeof ops / sizeof ops[0];
    torn_run("torn_batch", ops, nops, nops - 1);
}

/* Encodes a valid record (FORMAT.md) into out; returns its size. */
static size_t forge_record(uint8_t *out, uint64_t seq, const char *k, const char *v) {
    uint32_t kl = (uint32_t)strlen(k), vl = (uint32_t)strlen(v);
    memset(out, 0, REC_HDR);
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (uint8_t)(kl >> (8 * i));
        out[8 + i] = (uint8_t)(vl >> (8 * i));
    }
    for (int i = 0; i < 8; i++)
        out[16 + i] = (uint8_t)(seq >> (8 * i));
    memcpy(out + REC_HDR, k, kl);
    memcpy(out + REC_HDR + kl, v, vl);
    uint32_t sum = (uint32_t)XXH3_64bits(out + 4, REC_HDR + kl + vl - 4);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(sum >> (8 * i));
    return REC_HDR + kl + vl;
}

/*
 * Values are arbitrary bytes: one may hold the bytes of a valid record (a
 * store of backups, a log of another store...). A crash while such a value
 * is being written leaves a torn record whose written part holds a whole
 * valid-looking record; that is still a torn tail, and the store must open
 * without the torn record and without the record inside it.
 */
Test(recovery, torn_tail_value_holding_a_record) {
    static uint8_t val[200];
    memset(val, 'v', sizeof val);
    size_t n = forge_record(val + 20, 99, "ghost", "boo");
    cr_assert(20 + n + 40 < sizeof val);
    t_op ops[] = {
        {0, 1, {{0, "alpha", "value-of-alpha", 0}}},
        {0, 1, {{0, "bravo", "value-of-bravo", 0}}},
        {0, 1, {{0, "carrier", (const char *)val, 20 + n + 40}}},
    };
    torn_run("torn_embedded", ops, 3, 2);
}

/* ---- Corruption ------------------------------------------------------------ */

static int mentions_offset(const char *err, size_t a, size_t b) {
    size_t offs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        char dec[32], hex[32], hexu[32];
        snprintf(dec, sizeof dec, "%zu", offs[i]);
        snprintf(hex, sizeof hex, "0x%zx", offs[i]);
        snprintf(hexu, sizeof hexu, "0x%zX", offs[i]);
        if (strstr(err, dec) || strstr(err, hex) || strstr(err, hexu))
            return 1;
    }
    return 0;
}

static void corrupt_key(char *buf, size_t cap, int i) {
    snprintf(buf, cap, "ck%05d", i);
}

static void corrupt_val(char *buf, size_t cap, int i) {
    snprintf(buf, cap, "corrupt-test-value-%05d-padding-padding-padding", i);
}

/* Flips a byte in the value of record `rec` of data file `id`. Returns the
 * record's offset; *byte_off is the flipped byte's offset, *key its key. */
static size_t flip_value_byte(const char *dir, unsigned id, size_t rec, size_t *byte_off, char *key,
                              size_t keycap) {
    char *p = data_path(dir, id);
    size_t len;
    uint8_t *img = read_file(p, &len);
    size_t starts[4096], end;
    size_t n = walk_records(img, len, starts, 4096, &end);
    cr_assert(n > rec, "file %u holds only %zu records", id, n);
    size_t off = starts[rec];
    uint32_t kl = le32(img + off + 4), vl = le32(img + off + 8);
    cr_assert(vl > 4);
    cr_assert(kl < keycap);
    memcpy(key, img + off + REC_HDR, kl);
    key[kl] = 0;
    *byte_off = off + REC_HDR + kl + 2;
    uint8_t b = img[*byte_off] ^ 0x5a;
    pwrite_file(p, &b, 1, *byte_off);
    free(img);
    free(p);
    return off;
}

/* Writes keys 0..nkeys-1 (corrupt_key, corrupt_val) into the store at dir
 * and closes it. Returns the number of data files; *newest gets the highest
 * id. */
static unsigned fill_corrupt(const char *dir, const br_engine_options *o, int nkeys,
                             unsigned *newest) {
    char k[64], v[128];
    br_engine *e = open_ok(dir, o);
    for (int i = 0; i < nkeys; i++) {
        corrupt_key(k, sizeof k, i);
        corrupt_val(v, sizeof v, i);
        put_s(e, k, v);
    }
    close_ok(e);
    return count_data_files(dir, newest);
}

/* Expects key i of fill_corrupt to hold its value. */
static void expect_corrupt_kv(br_engine *e, int i, const char *ctx) {
    char k[64], v[128];
    corrupt_key(k, sizeof k, i);
    corrupt_val(v, sizeof v, i);
    expect_val(e, k, strlen(k), v, strlen(v), ctx);
}

Test(recovery, corrupt_closed_file) {
    br_engine_options o = opts_nosync(4096);
    const int nkeys = 300;
    char k[64];
    cr_assert(fill_corrupt(tdir, &o, nkeys, NULL) >= 3, "expected several data files");

    char bad_key[64];
    size_t byte_off;
    size_t rec_off = flip_value_byte(tdir, 1, 3, &byte_off, bad_key, sizeof bad_key);

    /* With its hint file, open does not read the data file: the damage is
     * found when the record is read, an error naming file and offset. */
    char *hint = tu_path(tdir, "0000000001.hint");
    cr_assert(access(hint, F_OK) == 0, "close left no hint file for a closed data file");
    logcap hlc = {.mu = PTHREAD_MUTEX_INITIALIZER};
    br_engine_options ho = o;
    ho.log = log_sink;
    ho.log_ctx = &hlc;
    br_engine *e = open_ok(tdir, &ho);
    void *hv = NULL;
    size_t hl;
    cr_assert_eq(br_engine_get(e, bad_key, strlen(bad_key), &hv, &hl), BR_ECORRUPT,
                 "a damaged value must read as BR_ECORRUPT");
    cr_assert(hlc.warn_or_worse > 0, "the damaged read was not logged");
    cr_assert(strstr(hlc.text, "0000000001.data") != NULL &&
                  mentions_offset(hlc.text, rec_off, byte_off),
              "the log does not name file and offset: '%s'", hlc.text);
    corrupt_key(k, sizeof k, 0);
    if (strcmp(k, bad_key) != 0)
        expect_corrupt_kv(e, 0, "beside a damaged record");
    close_ok(e);

    /* Without it, open scans the data file and refuses it. */
    cr_assert_eq(unlink(hint), 0);
    free(hint);
    char err[512];
    open_fails(tdir, &o, BR_ECORRUPT, err, sizeof err,
               "a store with a bad record in a closed file");
    cr_assert(strstr(err, "0000000001.data") != NULL, "err does not name the file: '%s'", err);
    cr_assert(mentions_offset(err, rec_off, byte_off),
              "err does not name the offset (record at %zu, byte %zu): '%s'", rec_off, byte_off,
              err);

    /* Repair skips the bad record and logs it; every other key is intact. */
    logcap lc = {.mu = PTHREAD_MUTEX_INITIALIZER};
    o.repair = 1;
    o.log = log_sink;
    o.log_ctx = &lc;
    e = open_ok(tdir, &o);
    cr_assert(lc.warn_or_worse > 0, "repair dropped a record without logging it");
    for (int i = 0; i < nkeys; i++) {
        corrupt_key(k, sizeof k, i);
        if (strcmp(k, bad_key) == 0) {
            void *got = NULL;
            size_t gl;
            int rc = br_engine_get(e, k, strlen(k), &got, &gl);
            cr_assert(rc == BR_ENOTFOUND || rc == BR_ECORRUPT,
                      "the damaged key %s reads as %s '%.*s'", k, br_errname(rc),
                      rc == 0 ? (int)gl : 0, rc == 0 ? (const char *)got : "");
            free(got);
            continue;
        }
        expect_corrupt_kv(e, i, "after repair");
    }
    put_s(e, "after-repair", "yes");
    expect_val(e, "after-repair", 12, "yes", 3, "after repair");
    close_ok(e);
}

Test(recovery, corrupt_middle_of_newest_file) {
    br_engine_options o = opts(1u << 20);
    const int nkeys = 40;
    unsigned id;
    cr_assert_eq(fill_corrupt(tdir, &o, nkeys, &id), 1);

    /* Record 20 is bad, valid records follow: that is not a torn tail. */
    char bad_key[64];
    size_t byte_off;
    size_t rec_off = flip_value_byte(tdir, id, 20, &byte_off, bad_key, sizeof bad_key);
    char err[512];
    open_fails(tdir, &o, BR_ECORRUPT, err, sizeof err, "bad record followed by valid ones");
    char fname[32];
    snprintf(fname, sizeof fname, "%010u.data", id);
    cr_assert(strstr(err, fname) != NULL, "err does not name %s: '%s'", fname, err);
    cr_assert(mentions_offset(err, rec_off, byte_off),
              "err does not name the offset (record at %zu, byte %zu): '%s'", rec_off, byte_off,
              err);

    /* Repair cuts the file at the bad record: the 20 before it survive. */
    o.repair = 1;
    br_engine *e = open_ok(tdir, &o);
    for (int i = 0; i < nkeys; i++) {
        char k[64];
        corrupt_key(k, sizeof k, i);
        if (i < 20)
            expect_corrupt_kv(e, i, "repaired newest file");
        else
            expect_absent(e, k, strlen(k), "repaired newest file (cut records)");
    }
    put_s(e, "after-repair", "yes");

    /* The cut is on disk: a plain open now succeeds and keeps the new write. */
    o.repair = 0;
    e = reopen(e, tdir, &o);
    expect_val(e, "after-repair", 12, "yes", 3, "reopen after repair");
    expect_corrupt_kv(e, 19, "reopen after repair");
    close_ok(e);
}

/* The same with numbered writes that skip numbers, as cluster mode writes
 * them (Raft entries that write nothing take numbers too): the records
 * after the damage are still recognized as the store's own. */
Test(recovery, corrupt_middle_of_newest_file_with_numbered_writes) {
    br_engine_options o = opts(1u << 20);
    const int nkeys = 40;
    char k[64], v[128];
    br_engine *e = open_ok(tdir, &o);
    br_batch *b = br_batch_new();
    for (int i = 0; i < nkeys; i++) {
        corrupt_key(k, sizeof k, i);
        corrupt_val(v, sizeof v, i);
        br_batch_clear(b);
        br_batch_put(b, k, strlen(k), v, strlen(v));
        cr_assert_eq(br_engine_write_seq(e, b, 10 + 7 * (uint64_t)i), 0);
    }
    br_batch_free(b);
    close_ok(e);
    unsigned id;
    cr_assert_eq(count_data_files(tdir, &id), 1);
    char bad_key[64];
    size_t byte_off;
    flip_value_byte(tdir, id, 20, &byte_off, bad_key, sizeof bad_key);
    char err[512];
    open_fails(tdir, &o, BR_ECORRUPT, err, sizeof err,
               "bad record followed by valid numbered ones");
    /* Repair cuts the file at the bad record: the 20 before it survive. */
    o.repair = 1;
    e = open_ok(tdir, &o);
    expect_corrupt_kv(e, 19, "repaired newest file");
    close_ok(e);
}

/*
 * A damaged length field in a record in the middle of the newest file, with
 * valid records after it. The engine writes whole headers, in order, for
 * records that fit the file, so no torn write can leave such a header: this
 * is corruption, and the acknowledged records after it must not be dropped
 * as if they were a torn tail.
 */
Test(recovery, corrupt_length_in_middle_of_newest_file) {
    static const struct {
        const char *what;
        int field;      /* 4: key length, 8: value length */
        uint32_t value; /* new field value */
    } cases[] = {
        {"value length inflated past the file", 8, 0x01000040},
        {"value length inflated inside the data", 8, 300},
        {"value length deflated", 8, 3},
        {"key length inflated past the file", 4, 0x00800007},
    };
    static char failures[4096];
    br_engine_options o = opts(1u << 20);
    const int nkeys = 40;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        char *dir = tu_tmpdir("corrupt_length");
        unsigned id;
        cr_assert_eq(fill_corrupt(dir, &o, nkeys, &id), 1);
        char *p = data_path(dir, id);
        size_t len;
        uint8_t *img = read_file(p, &len);
        size_t starts[64], end;
        cr_assert_eq(walk_records(img, len, starts, 64, &end), (size_t)nkeys);
        size_t rec_off = starts[20];
        uint8_t f[4];
        for (int i = 0; i < 4; i++)
            f[i] = (uint8_t)(cases[ci].value >> (8 * i));
        pwrite_file(p, f, 4, rec_off + (size_t)cases[ci].field);
        free(img);
        free(p);

        char err[512] = "";
        br_engine *e = NULL;
        int rc = br_engine_open(dir, &o, &e, err, sizeof err);
        size_t fl = strlen(failures);
        if (rc == 0) {
            char k[64];
            corrupt_key(k, sizeof k, nkeys - 1);
            void *got = NULL;
            size_t gl;
            int grc = br_engine_get(e, k, strlen(k), &got, &gl);
            free(got);
            br_engine_close(e);
            snprintf(failures + fl, sizeof failures - fl,
                     "\n  %s: open succeeded, the last key reads as %s (want BR_ECORRUPT)",
                     cases[ci].what, br_errname(grc));
        } else if (rc != BR_ECORRUPT ||
                   !mentions_offset(err, rec_off, rec_off + (size_t)cases[ci].field)) {
            snprintf(failures + fl, sizeof failures - fl,
                     "\n  %s: open gave %s '%s' (want BR_ECORRUPT naming offset %zu)",
                     cases[ci].what, br_errname(rc), err, rec_off);
        }
        tu_rmrf(dir);
        free(dir);
    }
    cr_assert(failures[0] == 0,
              "a damaged length in record 20 of 40 of the newest file, valid records after it:%s",
              failures);
}

/* ---- Deletes across restarts ----------------------------------------------- */

Test(recovery, delete_survives_restart) {
    br_engine *e = open_ok(tdir, NULL);
    put_s(e, "gone", "v1");
    put_s(e, "kept", "v1");
    del_s(e, "gone");
    expect_absent(e, "gone", 4, "before restart");
    cr_assert_eq(br_engine_delete(e, "gone", 4), BR_ENOTFOUND);
    cr_assert_eq(br_engine_delete(e, "never", 5), BR_ENOTFOUND);
    e = reopen(e, tdir, NULL);
    expect_absent(e, "gone", 4, "after restart");
    expect_val(e, "kept", 4, "v1", 2, "after restart");
    cr_assert_eq(br_engine_delete(e, "gone", 4), BR_ENOTFOUND);
    /* Put back after a delete: the new value wins over the tombstone. */
    put_s(e, "gone", "v2");
    e = reopen(e, tdir, NULL);
    expect_val(e, "gone", 4, "v2", 2, "put after delete, restart");
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, 2);
    close_ok(e);
}

Test(recovery, delete_in_later_file_survives_restart) {
    br_engine_options o = opts_nosync(4096);
    char k[32], v[128];
    br_engine *e = open_ok(tdir, &o);
    put_s(e, "victim", "in-file-1");
    put_s(e, "victim2", "in-file-1");
    for (int i = 0; i < 100; i++) { /* several files of filler */
        snprintf(k, sizeof k, "filler%03d", i);
        snprintf(v, sizeof v, "filler-value-%03d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", i);
        put_s(e, k, v);
    }
    put_s(e, "victim2", "overwritten-in-a-later-file");
    for (int i = 100; i < 200; i++) {
        snprintf(k, sizeof k, "filler%03d", i);
        snprintf(v, sizeof v, "filler-value-%03d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", i);
        put_s(e, k, v);
    }
    del_s(e, "victim");
    del_s(e, "victim2");
    close_ok(e);
    unsigned hi;
    cr_assert(count_data_files(tdir, &hi) >= 3, "expected the delete in a later file");

    for (int round = 0; round < 2; round++) {
        e = open_ok(tdir, &o);
        expect_absent(e, "victim", 6, "delete in a later file");
        expect_absent(e, "victim2", 7, "delete in a later file");
        expect_val(e, "filler000", 9,
                   "filler-value-000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 62, "filler");
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        cr_assert_eq(st.keys, 200);
        close_ok(e);
    }
}

/* ---- Rollover and size --------------------------------------------------- */

static size_t roll_val(char *buf, size_t cap, int i, int gen) {
    uint64_t s = (uint64_t)i * 7919u + (uint64_t)gen;
    size_t len = 20 + (size_t)(rnd(&s) % 100);
    int n = snprintf(buf, cap, "v%d-g%d-", i, gen);
    for (size_t j = (size_t)n; j < len; j++)
        buf[j] = (char)('a' + (i + gen + (int)j) % 26);
    return len;
}

Test(recovery, rollover_many_files) {
    br_engine_options o = opts_nosync(4096);
    o.compact_dead_pct = 0; /* the figures must stay put across the reopen */
    const int nkeys = 3000;
    model md = {0};
    char k[32], v[256];
    br_engine *e = open_ok(tdir, &o);
    for (int i = 0; i < nkeys; i++) {
        int kl = snprintf(k, sizeof k, "roll%05d", i);
        size_t vl = roll_val(v, sizeof v, i, 0);
        put_both(e, &md, k, (size_t)kl, v, vl);
    }
    /* Overwrite every third key and delete every seventh, spread over files. */
    for (int i = 0; i < nkeys; i += 3) {
        int kl = snprintf(k, sizeof k, "roll%05d", i);
        size_t vl = roll_val(v, sizeof v, i, 1);
        put_both(e, &md, k, (size_t)kl, v, vl);
    }
    for (int i = 0; i < nkeys; i += 7) {
        int kl = snprintf(k, sizeof k, "roll%05d", i);
        cr_assert_eq(br_engine_delete(e, k, (size_t)kl), 0);
        m_del(&md, k, (size_t)kl);
    }
    check_store(e, &md, "rollover, before close");
    br_engine_stats before;
    br_engine_stats_get(e, &before);
    /* Every record is live or dead. (disk_bytes is documented as bytes of
     * records; the 32-byte file headers are tolerated in it.) */
    uint64_t recs = before.live_bytes + before.dead_bytes;
    cr_assert(before.disk_bytes == recs || before.disk_bytes == recs + 32 * before.data_files,
              "live %" PRIu64 " + dead %" PRIu64 " = %" PRIu64 ", disk_bytes %" PRIu64 " (%" PRIu64
              " files)",
              before.live_bytes, before.dead_bytes, recs, before.disk_bytes, before.data_files);
    close_ok(e);

    for (int round = 0; round < 2; round++) {
        e = open_ok(tdir, &o);
        check_store(e, &md, "rollover, after reopen");
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        cr_assert_gt(st.data_files, 1);
        unsigned on_disk = count_data_files(tdir, NULL);
        cr_assert_eq(st.data_files, (uint64_t)on_disk,
                     "stats.data_files %" PRIu64 ", %u data files on disk", st.data_files, on_disk);
        /* The byte counts describe the data on disk: a reopen finds them again. */
        cr_assert_eq(st.disk_bytes, before.disk_bytes,
                     "disk_bytes %" PRIu64 " after reopen, %" PRIu64 " before", st.disk_bytes,
                     before.disk_bytes);
        cr_assert_eq(st.live_bytes, before.live_bytes,
                     "live_bytes %" PRIu64 " after reopen, %" PRIu64 " before", st.live_bytes,
                     before.live_bytes);
        cr_assert_eq(st.dead_bytes, before.dead_bytes,
                     "dead_bytes %" PRIu64 " after reopen, %" PRIu64 " before", st.dead_bytes,
                     before.dead_bytes);
        cr_assert_eq(st.key_bytes, before.key_bytes);
        cr_assert_eq(st.last_seq, before.last_seq);
        close_ok(e);
    }
    m_free(&md);
}

/* The options may change between runs: a newest file longer than the new
 * max_file_size, or a larger cap than the one it was made with. */
Test(recovery, reopen_with_other_max_file_size) {
    br_engine_options o = opts_nosync(1u << 20);
    model md = {0};
    char k[32], v[256];
    br_engine *e = open_ok(tdir, &o);
    for (int i = 0; i < 2000; i++) {
        int kl = snprintf(k, sizeof k, "cap%05d", i);
        size_t vl = roll_val(v, sizeof v, i, 3);
        put_both(e, &md, k, (size_t)kl, v, vl);
    }
    close_ok(e);
    static const uint64_t caps[] = {64u << 10, 4096, 8u << 20, 1u << 20};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "reopened with max_file_size %" PRIu64, caps[c]);
        o.max_file_size = caps[c];
        e = open_ok(tdir, &o);
        check_store(e, &md, ctx);
        for (int i = 0; i < 300; i++) {
            int kl = snprintf(k, sizeof k, "cap%05d", (int)(c * 300) + i);
            size_t vl = roll_val(v, sizeof v, i, 4 + (int)c);
            put_both(e, &md, k, (size_t)kl, v, vl);
        }
        check_store(e, &md, ctx);
        close_ok(e);
    }
    e = open_ok(tdir, &o);
    check_store(e, &md, "final reopen");
    close_ok(e);
    m_free(&md);
}

/* A record, or a batch, bigger than max_file_size gets a file of its own;
 * it must read back, also after a reopen, also as the newest file. */
Test(recovery, records_larger_than_max_file_size) {
    br_engine_options o = opts(4096);
    model md = {0};
    static char big[3][20000];
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < sizeof big[i]; j++)
            big[i][j] = (char)('a' + (i * 7 + (int)j) % 26);
    br_engine *e = open_ok(tdir, &o);
    put_s(e, "small-1", "s1");
    m_put(&md, "small-1", 7, "s1", 2);
    put_both(e, &md, "big-1", 5, big[0], 10000);
    check_store(e, &md, "big value");
    close_ok(e);

    /* The newest file is now the oversized one. */
    e = open_ok(tdir, &o);
    check_store(e, &md, "big value as the newest file, reopened");
    br_batch *b = br_batch_new();
    cr_assert(b != NULL);
    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof k, "batch-big-%d", i);
        cr_assert_eq(br_batch_put(b, k, strlen(k), big[i], 6000 + (size_t)i), 0);
        m_put(&md, k, strlen(k), big[i], 6000 + (size_t)i);
    }
    int rc = br_engine_write(e, b);
    cr_assert_eq(rc, 0, "a batch bigger than max_file_size: %s", br_errname(rc));
    br_batch_free(b);
    check_store(e, &md, "big batch");
    e = reopen(e, tdir, &o);
    check_store(e, &md, "big batch as the newest file, reopened");
    put_s(e, "small-2", "s2");
    m_put(&md, "small-2", 7, "s2", 2);
    put_both(e, &md, "big-2", 5, big[1], 20000);
    e = reopen(e, tdir, &o);
    check_store(e, &md, "reopened again");
    close_ok(e);
    m_free(&md);
}

/* Within a batch a later op on the same key wins, and stays won after a
 * reopen; deleting an absent key in a batch is not an error. */
Test(recovery, batch_later_op_wins) {
    br_engine *e = open_ok(tdir, NULL);
    put_s(e, "a", "a0");
    put_s(e, "b", "b0");
    br_batch *b = br_batch_new();
    cr_assert(b != NULL);
    cr_assert_eq(br_batch_put(b, "a", 1, "a1", 2), 0);
    cr_assert_eq(br_batch_delete(b, "a", 1), 0); /* a: deleted */
    cr_assert_eq(br_batch_delete(b, "b", 1), 0);
    cr_assert_eq(br_batch_put(b, "b", 1, "b1", 2), 0); /* b: b1 */
    cr_assert_eq(br_batch_put(b, "c", 1, "c1", 2), 0);
    cr_assert_eq(br_batch_put(b, "c", 1, "c2", 2), 0); /* c: c2 */
    cr_assert_eq(br_batch_delete(b, "d", 1), 0);       /* absent: fine */
    cr_assert_eq(br_batch_put(b, "e", 1, "", 0), 0);   /* empty value */
    cr_assert_eq(br_batch_count(b), 8);
    int rc = br_engine_write(e, b);
    cr_assert_eq(rc, 0, "write: %s", br_errname(rc));
    br_batch_free(b);
    model md = {0};
    m_put(&md, "b", 1, "b1", 2);
    m_put(&md, "c", 1, "c2", 2);
    m_put(&md, "e", 1, "", 0);
    check_store(e, &md, "batch order");
    expect_absent(e, "a", 1, "batch order");
    expect_absent(e, "d", 1, "batch order");
    e = reopen(e, tdir, NULL);
    check_store(e, &md, "batch order, reopened");
    expect_absent(e, "a", 1, "batch order, reopened");
    close_ok(e);
    m_free(&md);
}

/* br_engine_get_into: a value that does not fit reports its length. */
Test(recovery, get_into_sizes) {
    br_engine *e = open_ok(tdir, NULL);
    char v[100];
    memset(v, 'q', sizeof v);
    put_ok(e, "k", 1, v, sizeof v);
    put_ok(e, "empty", 5, "", 0);
    char buf[128];
    size_t vl = 0;
    cr_assert_eq(br_engine_get_into(e, "k", 1, buf, 10, &vl), 0);
    cr_assert_eq(vl, 100, "a value that does not fit reports its length");
    vl = 0;
    cr_assert_eq(br_engine_get_into(e, "k", 1, NULL, 0, &vl), 0, "size query with no buffer");
    cr_assert_eq(vl, 100);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(br_engine_get_into(e, "k", 1, buf, 100, &vl), 0);
    cr_assert(vl == 100 && memcmp(buf, v, 100) == 0);
    vl = 7;
    cr_assert_eq(br_engine_get_into(e, "empty", 5, NULL, 0, &vl), 0);
    cr_assert_eq(vl, 0);
    cr_assert_eq(br_engine_get_into(e, "nope", 4, buf, sizeof buf, &vl), BR_ENOTFOUND);
    void *got = NULL;
    cr_assert_eq(br_engine_get(e, "empty", 5, &got, &vl), 0);
    cr_assert(got != NULL, "get of an empty value returned NULL");
    cr_assert_eq(vl, 0);
    free(got);
    close_ok(e);
}

/* A crash while a new data file was being made leaves NNNNNNNNNN.data.tmp. */
Test(recovery, leftover_tmp_file) {
    br_engine_options o = opts(4096);
    br_engine *e = open_ok(tdir, &o);
    model md = {0};
    char k[32], v[256];
    for (int i = 0; i < 100; i++) {
        int kl = snprintf(k, sizeof k, "t%03d", i);
        size_t vl = roll_val(v, sizeof v, i, 5);
        put_both(e, &md, k, (size_t)kl, v, vl);
    }
    close_ok(e);
    unsigned hi;
    count_data_files(tdir, &hi);
    /* The half-made next file holds garbage. */
    char name[64];
    snprintf(name, sizeof name, "%010u.data.tmp", hi + 1);
    char *p = tu_path(tdir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f != NULL);
    for (int i = 0; i < 5000; i++)
        fputc(i * 31 % 251, f);
    fclose(f);
    e = open_ok(tdir, &o);
    check_store(e, &md, "leftover .tmp");
    for (int i = 100; i < 200; i++) {
        int kl = snprintf(k, sizeof k, "t%03d", i);
        size_t vl = roll_val(v, sizeof v, i, 5);
        put_both(e, &md, k, (size_t)kl, v, vl);
    }
    e = reopen(e, tdir, &o);
    check_store(e, &md, "leftover .tmp, after more rollovers");
    close_ok(e);
    free(p);
    m_free(&md);
}

static int million_val(char *buf, unsigned i) {
    return snprintf(buf, 16, "%08x", i * 2654435761u);
}

typedef struct count_ctx {
    size_t n;
    char prev[16];
    size_t prevlen;
    int bad;
} count_ctx;

static int count_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    count_ctx *c = ctx;
    if (c->n > 0 && keycmp(c->prev, c->prevlen, key, klen) >= 0)
        c->bad = 1;
    if (klen >= sizeof c->prev || vlen != 8) {
        c->bad = 1;
        return 1;
    }
    memcpy(c->prev, key, klen);
    c->prevlen = klen;
    c->n++;
    return 0;
}

Test(recovery, million_keys) {
    br_engine_options o = opts_nosync(16u << 20);
    const unsigned n = 1000000;
    char k[16], v[16];
    br_engine *e = open_ok(tdir, &o);
    /* First half plain puts, second half batches of 1000. */
    for (unsigned i = 0; i < n / 2; i++) {
        snprintf(k, sizeof k, "k%07u", i);
        million_val(v, i);
        put_ok(e, k, 8, v, 8);
    }
    br_batch *b = br_batch_new();
    cr_assert(b != NULL);
    for (unsigned i = n / 2; i < n; i++) {
        snprintf(k, sizeof k, "k%07u", i);
        million_val(v, i);
        cr_assert_eq(br_batch_put(b, k, 8, v, 8), 0);
        if (br_batch_count(b) == 1000 || i == n - 1) {
            int rc = br_engine_write(e, b);
            cr_assert_eq(rc, 0, "write: %s", br_errname(rc));
            br_batch_clear(b);
        }
    }
    br_batch_free(b);
    e = reopen(e, tdir, &o);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, n);
    char buf[16];
    for (unsigned i = 0; i < n; i++) {
        snprintf(k, sizeof k, "k%07u", i);
        million_val(v, i);
        size_t vl = 0;
        int rc = br_engine_get_into(e, k, 8, buf, sizeof buf, &vl);
        cr_assert_eq(rc, 0, "get_into(%s): %s", k, br_errname(rc));
        cr_assert(vl == 8 && memcmp(buf, v, 8) == 0, "%s: got '%.*s' want '%s'", k, (int)vl, buf,
                  v);
    }
    count_ctx cc = {0};
    int rc = br_engine_range(e, NULL, 0, NULL, 0, 0, count_fn, &cc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(cc.bad, 0, "full range out of order or with bad values");
    cr_assert_eq(cc.n, n);
    close_ok(e);
}

/* ---- Limits ------------------------------------------------------------------ */

static void stats_same(const br_engine_stats *a, const br_engine_stats *b, const char *ctx) {
    cr_assert_eq(a->keys, b->keys, "%s: keys changed", ctx);
    cr_assert_eq(a->disk_bytes, b->disk_bytes, "%s: disk_bytes changed", ctx);
    cr_assert_eq(a->live_bytes, b->live_bytes, "%s: live_bytes changed", ctx);
    cr_assert_eq(a->dead_bytes, b->dead_bytes, "%s: dead_bytes changed", ctx);
    cr_assert_eq(a->last_seq, b->last_seq, "%s: last_seq changed", ctx);
    cr_assert_eq(a->data_files, b->data_files, "%s: data_files changed", ctx);
    cr_assert_eq(a->puts, b->puts, "%s: puts changed", ctx);
    cr_assert_eq(a->deletes, b->deletes, "%s: deletes changed", ctx);
    cr_assert_eq(a->batches, b->batches, "%s: batches changed", ctx);
}

Test(recovery, limits_write_nothing) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_key_size = 16;
    o.max_value_size = 100;
    char big[256];
    memset(big, 'x', sizeof big);

    br_engine *e = open_ok(tdir, &o);
    put_s(e, "existing", "value");
    br_engine_stats before, after;
    br_engine_stats_get(e, &before);

    cr_assert_eq(br_engine_put(e, "", 0, "v", 1), BR_EEMPTYKEY);
    cr_assert_eq(br_engine_put(e, big, 17, "v", 1), BR_EKEYTOOBIG);
    cr_assert_eq(br_engine_put(e, "k", 1, big, 101), BR_EVALTOOBIG);
    cr_assert_eq(br_engine_put(e, big, 17, big, 101) < 0, 1);
    br_engine_stats_get(e, &after);
    stats_same(&before, &after, "bad puts");

    /* A batch with one bad op writes none of its ops. */
    br_batch *b = br_batch_new();
    cr_assert(b != NULL);
    cr_assert_eq(br_batch_put(b, "", 0, "v", 1), BR_EEMPTYKEY);
    cr_assert_eq(br_batch_delete(b, "", 0), BR_EEMPTYKEY);
    cr_assert_eq(br_batch_count(b), 0);
    cr_assert_eq(br_batch_put(b, "good1", 5, "v", 1), 0);
    cr_assert_eq(br_batch_put(b, "existing", 8, "changed", 7), 0);
    cr_assert_eq(br_batch_put(b, "k", 1, big, 101), 0);
    cr_assert_eq(br_batch_put(b, "good2", 5, "v", 1), 0);
    cr_assert_eq(br_batch_count(b), 4);
    cr_assert_eq(br_engine_write(e, b), BR_EVALTOOBIG);
    cr_assert_eq(br_batch_count(b), 4, "a failed write changed the batch");
    br_batch_clear(b);
    cr_assert_eq(br_batch_put(b, "good3", 5, "v", 1), 0);
    cr_assert_eq(br_batch_delete(b, "existing", 8), 0);
    cr_assert_eq(br_batch_put(b, big, 17, "v", 1), 0);
    cr_assert_eq(br_engine_write(e, b), BR_EKEYTOOBIG);
    br_engine_stats_get(e, &after);
    stats_same(&before, &after, "bad batches");
    expect_absent(e, "good1", 5, "bad batch");
    expect_absent(e, "good2", 5, "bad batch");
    expect_absent(e, "good3", 5, "bad batch");
    expect_absent(e, "k", 1, "bad put");
    expect_val(e, "existing", 8, "value", 5, "bad batch");
    e = reopen(e, tdir, &o);
    model md = {0};
    m_put(&md, "existing", 8, "value", 5);
    check_store(e, &md, "reopen after bad writes");
    br_engine_stats_get(e, &after);
    cr_assert_eq(after.last_seq, before.last_seq, "bad writes left records on disk");

    /* Exactly at the limits is fine. */
    put_both(e, &md, big, 16, big, 100);
    cr_assert_eq(br_batch_put(b, "good3", 5, big, 100), 0);
    cr_assert_eq(br_engine_write(e, b), BR_EKEYTOOBIG, "the batch was left unchanged");
    br_batch_clear(b);
    cr_assert_eq(br_batch_put(b, "good3", 5, big, 100), 0);
    cr_assert_eq(br_batch_delete(b, "absent-key", 10), 0);
    cr_assert_eq(br_engine_write(e, b), 0, "deleting an absent key in a batch is not an error");
    m_put(&md, "good3", 5, big, 100);
    br_batch_free(b);
    e = reopen(e, tdir, &o);
    check_store(e, &md, "values at the limits");
    close_ok(e);
    m_free(&md);
}

/* ---- LOCK -------------------------------------------------------------------- */

static int try_open_rc(const char *dir) {
    br_engine *e = NULL;
    char err[256];
    int rc = br_engine_open(dir, NULL, &e, err, sizeof err);
    if (rc == 0)
        rc = br_engine_close(e);
    else if (e != NULL)
        rc = -1000000; /* *out must be NULL on failure */
    return rc;
}

/* Forks a child that tries to open dir; returns its br_engine_open result. */
static int child_open_rc(const char *dir) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int rc = try_open_rc(dir);
        _exit(rc == 0 ? 0 : rc == BR_ELOCKED ? 1 : 2);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child crashed");
    int code = WEXITSTATUS(status);
    return code == 0 ? 0 : code == 1 ? BR_ELOCKED : -1;
}

Test(recovery, lock_excludes_second_opener) {
    br_engine *e = open_ok(tdir, NULL);
    put_s(e, "k", "v");

    br_engine *e2 = (br_engine *)(uintptr_t)1;
    char err[256] = "";
    int rc = br_engine_open(tdir, NULL, &e2, err, sizeof err);
    cr_assert_eq(rc, BR_ELOCKED, "second open in the same process: %s (%s)", br_errname(rc), err);
    cr_assert(e2 == NULL, "*out not NULL on failure");
    cr_assert_eq(child_open_rc(tdir), BR_ELOCKED, "open from another process while locked");
    /* The failed opens did not disturb the first engine. */
    expect_val(e, "k", 1, "v", 1, "after failed opens");
    put_s(e, "k2", "v2");
    close_ok(e);

    cr_assert_eq(child_open_rc(tdir), 0, "open from another process after close");
    e = open_ok(tdir, NULL);
    expect_val(e, "k2", 2, "v2", 2, "reopen");
    cr_assert_eq(try_open_rc(tdir), BR_ELOCKED);
    close_ok(e);
    cr_assert_eq(try_open_rc(tdir), 0);
}

/* ---- Ranges ------------------------------------------------------------------ */

typedef struct coll {
    kv *a;
    size_t n, cap;
    size_t stop_after; /* 0: never stop */
} coll;

static int coll_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    coll *c = ctx;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->a = realloc(c->a, c->cap * sizeof *c->a);
        if (!c->a)
            abort();
    }
    c->a[c->n++] = (kv){xmemdup(key, klen), xmemdup(val, vlen), klen, vlen};
    if (c->stop_after && c->n == c->stop_after)
        return 7;
    return 0;
}

static void coll_free(coll *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->a[i].k);
        free(c->a[i].v);
    }
    free(c->a);
    memset(c, 0, sizeof *c);
}

static void fmt_key(char *out, size_t cap, const void *k, size_t kl) {
    const uint8_t *p = k;
    size_t o = 0;
    for (size_t i = 0; i < kl && o + 5 < cap; i++) {
        if (p[i] >= 0x21 && p[i] < 0x7f)
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
    }
    out[o] = 0;
}

/* Compares one range (iterator and callback forms) with the model. */
static void check_range(br_engine *e, const model *m, const void *s, size_t sl, const void *en,
                        size_t el, size_t limit, const char *ctx) {
    /* Expected slice. */
    size_t lo = s ? m_lower(m, s, sl, NULL) : 0;
    size_t hi = lo;
    while (hi < m->n && (!en || keycmp(m->a[hi].k, m->a[hi].kl, en, el) <= 0) &&
           (limit == 0 || hi - lo < limit))
        hi++;
    char sbuf[64], ebuf[64];
    fmt_key(sbuf, sizeof sbuf, s, s ? sl : 0);
    fmt_key(ebuf, sizeof ebuf, en, en ? el : 0);

    for (int form = 0; form < 2; form++) {
        coll c = {0};
        int rc;
        if (form == 0) {
            br_iter *it = NULL;
            rc = br_engine_iter(e, s, sl, en, el, limit, &it);
            cr_assert_eq(rc, 0, "%s: iter: %s", ctx, br_errname(rc));
            const void *k, *v;
            size_t kl, vl;
            while ((rc = br_iter_next(it, &k, &kl, &v, &vl)) == 1)
                coll_fn(&c, k, kl, v, vl);
            br_iter_free(it);
        } else {
            rc = br_engine_range(e, s, sl, en, el, limit, coll_fn, &c);
        }
        cr_assert_eq(rc, 0, "%s: %s: %s", ctx, form ? "range" : "iter_next", br_errname(rc));
        cr_assert_eq(c.n, hi - lo, "%s: [%s%s, %s%s] limit %zu (%s) gave %zu keys, want %zu", ctx,
                     s ? "" : "NULL", sbuf, en ? "" : "NULL", ebuf, limit,
                     form ? "br_engine_range" : "br_iter", c.n, hi - lo);
        for (size_t i = 0; i < c.n; i++) {
            const kv *x = &m->a[lo + i];
            char got[64], want[64];
            fmt_key(got, sizeof got, c.a[i].k, c.a[i].kl);
            fmt_key(want, sizeof want, x->k, x->kl);
            cr_assert(c.a[i].kl == x->kl && memcmp(c.a[i].k, x->k, x->kl) == 0,
                      "%s: [%s, %s] key %zu is %s, want %s", ctx, sbuf, ebuf, i, got, want);
            cr_assert(c.a[i].vl == x->vl && (x->vl == 0 || memcmp(c.a[i].v, x->v, x->vl) == 0),
                      "%s: value of %s differs", ctx, got);
        }
        coll_free(&c);
    }
}

Test(recovery, range_empty_store) {
    br_engine *e = open_ok(tdir, NULL);
    model md = {0};
    check_range(e, &md, NULL, 0, NULL, 0, 0, "empty");
    check_range(e, &md, "a", 1, "z", 1, 0, "empty");
    check_range(e, &md, NULL, 0, NULL, 0, 5, "empty");
    close_ok(e);
}

Test(recovery, range_single_key) {
    br_engine *e = open_ok(tdir, NULL);
    model md = {0};
    put_s(e, "m", "only");
    m_put(&md, "m", 1, "only", 4);
    for (int pass = 0; pass < 2; pass++) {
        const char *ctx = pass ? "single key, reopened" : "single key";
        check_range(e, &md, NULL, 0, NULL, 0, 0, ctx);
        check_range(e, &md, "m", 1, "m", 1, 0, ctx);    /* both bounds inclusive */
        check_range(e, &md, "m", 1, NULL, 0, 0, ctx);   /* start inclusive */
        check_range(e, &md, NULL, 0, "m", 1, 0, ctx);   /* end inclusive */
        check_range(e, &md, "m\0", 2, NULL, 0, 0, ctx); /* just after */
        check_range(e, &md, NULL, 0, "l\xff", 2, 0, ctx);
        check_range(e, &md, "a", 1, "l", 1, 0, ctx);
        check_range(e, &md, "n", 1, "z", 1, 0, ctx);
        check_range(e, &md, "z", 1, "a", 1, 0, ctx); /* end < start */
        check_range(e, &md, NULL, 0, NULL, 0, 1, ctx);
        e = reopen(e, tdir, NULL);
    }
    close_ok(e);
    m_free(&md);
}

/* Random binary keys with many 0x00 and 0xFF bytes and shared prefixes. */
static size_t rand_bin_key(uint64_t *s, uint8_t *k) {
    size_t kl = 1 + (size_t)(rnd(s) % 12);
    static const uint8_t alphabet[] = {0x00, 0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0xff, 'a', 'b'};
    for (size_t i = 0; i < kl; i++)
        k[i] = alphabet[rnd(s) % sizeof alphabet];
    return kl;
}

Test(recovery, range_binary_keys_and_bounds) {
    br_engine *e = open_ok(tdir, NULL);
    model md = {0};
    /* Prefix pairs in bytewise order. */
    static const struct {
        const char *k;
        size_t kl;
    } fixed[] = {{"\x00", 1},
                 {"\x00\x00", 2},
                 {"\x00\x01", 2},
                 {"\x01", 1},
                 {"a", 1},
                 {"a\x00", 2},
                 {"a\x00"
                  "b",
                  3},
                 {"a\xff", 2},
                 {"ab", 2},
                 {"\xff", 1},
                 {"\xff\x00", 2},
                 {"\xff\xff", 2},
                 {"\xff\xff\xff", 3}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "fixed-%zu", i);
        put_both(e, &md, fixed[i].k, fixed[i].kl, v, (size_t)vl);
    }
    check_range(e, &md, NULL, 0, NULL, 0, 0, "fixed binary keys in order");

    uint64_t seed = 0x5eed0001;
    uint8_t k[16], k2[16];
    for (int i = 0; i < 600; i++) {
        size_t kl = rand_bin_key(&seed, k);
        char v[32];
        int vl = snprintf(v, sizeof v, "rand-%d", i);
        if (rnd(&seed) % 5 == 0) {
            int rc = br_engine_delete(e, k, kl);
            cr_assert(rc == 0 || rc == BR_ENOTFOUND);
            cr_assert_eq(rc == 0, m_get(&md, k, kl) != NULL, "delete result disagrees");
            m_del(&md, k, kl);
        } else {
            put_both(e, &md, k, kl, v, (size_t)vl);
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        const char *ctx = pass ? "binary keys, reopened" : "binary keys";
        check_store(e, &md, ctx);
        check_range(e, &md, NULL, 0, NULL, 0, 0, ctx);
        /* Bounds that are existing keys are inclusive at both ends. */
        for (size_t i = 0; i + 5 < md.n; i += 7)
            check_range(e, &md, md.a[i].k, md.a[i].kl, md.a[i + 5].k, md.a[i + 5].kl, 0, ctx);
        check_range(e, &md, md.a[3].k, md.a[3].kl, md.a[3].k, md.a[3].kl, 0, ctx);
        /* Random bounds, limits, NULL ends, end < start. */
        for (int q = 0; q < 300; q++) {
            size_t sl = rand_bin_key(&seed, k), el = rand_bin_key(&seed, k2);
            int shape = (int)(rnd(&seed) % 4);
            size_t limit = rnd(&seed) % 3 == 0 ? (size_t)(rnd(&seed) % 20) : 0;
            check_range(e, &md, shape == 1 ? NULL : k, shape == 1 ? 0 : sl, shape == 2 ? NULL : k2,
                        shape == 2 ? 0 : el, limit, ctx);
        }
        check_range(e, &md, "\xff", 1, "\x00", 1, 0, ctx);
        for (size_t limit = 1; limit <= md.n + 3; limit += (limit < 10 ? 1 : 97))
            check_range(e, &md, NULL, 0, NULL, 0, limit, ctx);
        e = reopen(e, tdir, NULL);
    }
    close_ok(e);
    m_free(&md);
}

/* Keys that are each a prefix of the next ("p", "p\0", "p\0\0", ...), long
 * enough to cross every page of the iterator and the index's inline limit. */
Test(recovery, range_prefix_chain) {
    br_engine *e = open_ok(tdir, NULL);
    model md = {0};
    const size_t n = 1200;
    uint8_t *k = calloc(1, n + 1);
    cr_assert(k != NULL);
    k[0] = 'p';
    for (size_t i = 1; i <= n; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "len-%zu", i);
        put_both(e, &md, k, i, v, (size_t)vl);
    }
    put_both(e, &md, "p\x01", 2, "after-chain", 11);
    put_both(e, &md, "o\xff", 2, "before-chain", 12);
    for (int pass = 0; pass < 2; pass++) {
        const char *ctx = pass ? "prefix chain, reopened" : "prefix chain";
        check_store(e, &md, ctx);
        check_range(e, &md, k, 1, k, n, 0, ctx);
        check_range(e, &md, k, 500, k, 700, 0, ctx);
        check_range(e, &md, k, 500, NULL, 0, 100, ctx);
        check_range(e, &md, NULL, 0, k, 3, 0, ctx);
        e = reopen(e, tdir, NULL);
    }
    close_ok(e);
    free(k);
    m_free(&md);
}

Test(recovery, range_across_many_files) {
    br_engine_options o = opts_nosync(4096);
    br_engine *e = open_ok(tdir, &o);
    model md = {0};
    uint64_t seed = 0x5eed0002;
    char k[32], v[256];
    for (int i = 0; i < 4000; i++) {
        int kl = snprintf(k, sizeof k, "f%05u", (unsigned)(rnd(&seed) % 2500));
        if (i % 6 == 5) {
            int rc = br_engine_delete(e, k, (size_t)kl);
            cr_assert(rc == 0 || rc == BR_ENOTFOUND);
            m_del(&md, k, (size_t)kl);
        } else {
            size_t vl = roll_val(v, sizeof v, i, 2);
            put_both(e, &md, k, (size_t)kl, v, vl);
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        const char *ctx = pass ? "many files, reopened" : "many files";
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        cr_assert_gt(st.data_files, 5);
        check_store(e, &md, ctx);
        check_range(e, &md, "f00100", 6, "f02000", 6, 0, ctx);
        check_range(e, &md, "f00100", 6, "f02000", 6, 333, ctx);
        check_range(e, &md, NULL, 0, "f01234", 6, 0, ctx);
        check_range(e, &md, "f01234", 6, NULL, 0, 0, ctx);
        e = reopen(e, tdir, &o);
    }
    close_ok(e);
    m_free(&md);
}

Test(recovery, range_callback_stops) {
    br_engine *e = open_ok(tdir, NULL);
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "s%02d", i);
        put_s(e, k, "v");
    }
    coll c = {.stop_after = 5};
    int rc = br_engine_range(e, NULL, 0, NULL, 0, 0, coll_fn, &c);
    cr_assert_eq(rc, 7, "range did not return the callback's stop value: %d", rc);
    cr_assert_eq(c.n, 5, "callback called %zu times after asking to stop at 5", c.n);
    cr_assert(c.a[4].kl == 3 && memcmp(c.a[4].k, "s04", 3) == 0);
    coll_free(&c);
    c = (coll){.stop_after = 1};
    rc = br_engine_range(e, "s10", 3, "s20", 3, 0, coll_fn, &c);
    cr_assert_eq(rc, 7);
    cr_assert_eq(c.n, 1);
    cr_assert(memcmp(c.a[0].k, "s10", 3) == 0);
    coll_free(&c);
    close_ok(e);
}
