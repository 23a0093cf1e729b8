/*
 * test_crash.c - crash tests: a child process writes under BR_SYNC_ALWAYS and
 * reports every acknowledged write to the parent over a pipe; the parent kills
 * it with SIGKILL at a random moment, reopens the store and checks that
 *
 *   - every acknowledged write is there with its value, or was replaced by the
 *     one write that may have been in flight when the child died;
 *   - deleted keys stay deleted;
 *   - a batch is there whole or not at all;
 *   - nothing was invented.
 *
 * Each writer thread owns its own keys and has at most one call in flight, so
 * after a crash the keys of a thread must hold exactly the state after its
 * last acknowledged op (A) or the state after the op that followed it (B).
 * The ops are a deterministic function of the seed, so the parent replays
 * them instead of receiving them. The store lives on from round to round, so
 * crashes hit stores with history, rollovers and recovered tails.
 *
 * A failure prints the seed; BR_TEST_SEED=<seed> repeats the same ops and
 * kill delays (the kill moment itself is still up to the scheduler).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "testutil.h"

#define MAX_THREADS   4
#define MAX_KEYS      128
#define MAX_SUB       16
#define VAL_MAX       2048
#define MAX_OPS       200000 /* per thread per round; a kill comes far earlier */
#define REPORT_MAGIC  0x6b636172u
#define THREAD_OPENED 0xffffu /* report: the child has opened the store */
#define THREAD_FAILED 0xfffeu /* report: the child could not open the store */

/* splitmix64 */
static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t test_seed(const char *name) {
    const char *s = getenv("BR_TEST_SEED");
    uint64_t seed;
    if (s && *s) {
        seed = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    }
    fprintf(stderr, "test_crash %s: seed %" PRIu64 " (BR_TEST_SEED=%" PRIu64 " repeats it)\n", name,
            seed, seed);
    return seed;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- Workload ------------------------------------------------------------------ */

typedef enum { MODE_MIXED, MODE_BATCH_GEN } crash_mode;

typedef struct c_sub {
    int del;
    unsigned key;
    size_t vlen;
    char val[VAL_MAX];
} c_sub;

typedef struct c_op {
    int batch;
    int nsub;
    c_sub s[MAX_SUB];
} c_op;

typedef struct crash_cfg {
    const char *name;
    crash_mode mode;
    unsigned threads;
    unsigned keys;      /* per thread */
    unsigned batch_len; /* MODE_BATCH_GEN: keys per batch */
    int rounds;
    unsigned max_ops; /* per thread per round (at most MAX_OPS) */
    uint64_t seed;
    char *dir;
    br_engine_options opts;
} crash_cfg;

static int keyname(char *buf, size_t cap, unsigned t, unsigned k) {
    return snprintf(buf, cap, "t%u-k%03u", t, k);
}

/* The value of sub j of op i of thread t in round r: names all of them, so
 * a value found in the store tells where it came from. */
static void make_val(c_sub *s, uint64_t *rng, const crash_cfg *cfg, unsigned t, unsigned round,
                     unsigned opi, unsigned j) {
    if (cfg->mode == MODE_MIXED && rnd(rng) % 20 == 0) {
        s->vlen = 0; /* an empty value is a value, not a delete */
        return;
    }
    int n;
    size_t fill;
    if (cfg->mode == MODE_BATCH_GEN) {
        n = snprintf(s->val, VAL_MAX, "t%u-k%03u|gen=%u.%u|", t, s->key, round, opi);
        fill = 500 + (size_t)(rnd(rng) % 1200);
    } else {
        n = snprintf(s->val, VAL_MAX, "t%u-k%03u|r%u|o%u|s%u|", t, s->key, round, opi, j);
        fill = (size_t)(rnd(rng) % 700);
    }
    uint64_t f = rnd(rng);
    for (size_t i = 0; i < fill && (size_t)n + i < VAL_MAX; i++)
        s->val[(size_t)n + i] = (char)('a' + (f + i * 7) % 26);
    s->vlen = (size_t)n + fill < VAL_MAX ? (size_t)n + fill : VAL_MAX;
}

/* Op opi of thread t in round r; a pure function of the rng state. */
static void gen_op(c_op *op, uint64_t *rng, const crash_cfg *cfg, unsigned t, unsigned round,
                   unsigned opi) {
    if (cfg->mode == MODE_BATCH_GEN) {
        /* A batch of batch_len distinct keys, all with one generation. */
        unsigned char used[MAX_KEYS] = {0};
        op->batch = 1;
        op->nsub = (int)cfg->batch_len;
        for (unsigned j = 0; j < cfg->batch_len; j++) {
            c_sub *s = &op->s[j];
            s->del = 0;
            s->key = (unsigned)(rnd(rng) % cfg->keys);
            while (used[s->key])
                s->key = (s->key + 1) % cfg->keys;
            used[s->key] = 1;
            make_val(s, rng, cfg, t, round, opi, j);
        }
        return;
    }
    unsigned r = (unsigned)(rnd(rng) % 100);
    if (r < 55) {
        op->batch = 0;
        op->nsub = 1;
        op->s[0].del = 0;
        op->s[0].key = (unsigned)(rnd(rng) % cfg->keys);
        make_val(&op->s[0], rng, cfg, t, round, opi, 0);
    } else if (r < 75) {
        op->batch = 0;
        op->nsub = 1;
        op->s[0].del = 1;
        op->s[0].key = (unsigned)(rnd(rng) % cfg->keys);
        op->s[0].vlen = 0;
    } else {
        /* A batch of puts and deletes; a key may repeat (the later op wins). */
        op->batch = 1;
        op->nsub = 2 + (int)(rnd(rng) % 7);
        for (int j = 0; j < op->nsub; j++) {
            c_sub *s = &op->s[j];
            s->del = rnd(rng) % 5 == 0;
            s->key = (unsigned)(rnd(rng) % cfg->keys);
            s->vlen = 0;
            if (!s->del)
                make_val(s, rng, cfg, t, round, opi, (unsigned)j);
        }
    }
}

static uint64_t thread_rng(const crash_cfg *cfg, int round, unsigned t) {
    return cfg->seed * 0x100000001b3ULL + (uint64_t)round * 0x9e3779b97f4a7c15ULL +
           (uint64_t)(t + 1) * 0xc2b2ae3d27d4eb4fULL;
}

/* ---- The child ----------------------------------------------------------------- */

typedef struct report {
    uint32_t magic;
    uint32_t thread;
    uint32_t op;
    int32_t rc;
} report;

typedef struct child_ctx {
    const crash_cfg *cfg;
    br_engine *e;
    int wfd;
    int round;
    unsigned t;
} child_ctx;

static void send_report(int fd, unsigned t, unsigned op, int rc) {
    report r = {REPORT_MAGIC, t, op, rc};
    /* 16 bytes: one atomic pipe write. */
    while (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        if (errno != EINTR)
            _exit(5);
}

static int exec_op(br_engine *e, const c_op *op, unsigned t) {
    char k[32];
    if (!op->batch) {
        int kl = keyname(k, sizeof k, t, op->s[0].key);
        if (op->s[0].del)
            return br_engine_delete(e, k, (size_t)kl);
        return br_engine_put(e, k, (size_t)kl, op->s[0].val, op->s[0].vlen);
    }
    br_batch *b = br_batch_new();
    if (!b)
        return BR_ENOMEM;
    int rc = 0;
    for (int j = 0; j < op->nsub && rc == 0; j++) {
        int kl = keyname(k, sizeof k, t, op->s[j].key);
        rc = op->s[j].del ? br_batch_delete(b, k, (size_t)kl)
                          : br_batch_put(b, k, (size_t)kl, op->s[j].val, op->s[j].vlen);
    }
    if (rc == 0)
        rc = br_engine_write(e, b);
    br_batch_free(b);
    return rc;
}

static void *child_writer(void *arg) {
    child_ctx *c = arg;
    uint64_t rng = thread_rng(c->cfg, c->round, c->t);
    c_op *op = malloc(sizeof *op);
    if (!op)
        _exit(6);
    for (unsigned i = 0; i < c->cfg->max_ops; i++) {
        gen_op(op, &rng, c->cfg, c->t, (unsigned)c->round, i);
        int rc = exec_op(c->e, op, c->t);
        /* The report goes out only after the call has returned. */
        send_report(c->wfd, c->t, i, rc);
        if (rc != 0 && !(rc == BR_ENOTFOUND && !op->batch && op->s[0].del))
            _exit(3);
    }
    free(op);
    return NULL;
}

static void child_main(const crash_cfg *cfg, int round, int wfd) {
    br_engine *e = NULL;
    char err[256];
    int rc = br_engine_open(cfg->dir, &cfg->opts, &e, err, sizeof err);
    if (rc != 0) {
        send_report(wfd, THREAD_FAILED, 0, rc);
        _exit(4);
    }
    send_report(wfd, THREAD_OPENED, 0, 0);
    pthread_t th[MAX_THREADS];
    child_ctx ctx[MAX_THREADS];
    for (unsigned t = 0; t < cfg->threads; t++) {
        ctx[t] = (child_ctx){cfg, e, wfd, round, t};
        if (pthread_create(&th[t], NULL, child_writer, &ctx[t]) != 0)
            _exit(7);
    }
    for (unsigned t = 0; t < cfg->threads; t++)
        pthread_join(th[t], NULL);
    br_engine_close(e);
    _exit(0);
}

/* ---- The parent's model ---------------------------------------------------------- */

typedef struct kstate {
    int present;
    size_t vlen;
    char *val;
} kstate;

typedef struct tmodel {
    kstate k[MAX_KEYS];
} tmodel;

static void km_set(kstate *s, int present, const char *v, size_t vl) {
    free(s->val);
    s->val = NULL;
    s->present = present;
    s->vlen = present ? vl : 0;
    if (present) {
        s->val = malloc(vl ? vl : 1);
        cr_assert(s->val != NULL);
        if (vl)
            memcpy(s->val, v, vl);
    }
}

static void tm_copy(tmodel *dst, const tmodel *src, unsigned keys) {
    for (unsigned i = 0; i < keys; i++)
        km_set(&dst->k[i], src->k[i].present, src->k[i].val, src->k[i].vlen);
}

static void tm_free(tmodel *m, unsigned keys) {
    for (unsigned i = 0; i < keys; i++)
        km_set(&m->k[i], 0, NULL, 0);
}

static void tm_apply(tmodel *m, const c_op *op) {
    for (int j = 0; j < op->nsub; j++) {
        const c_sub *s = &op->s[j];
        km_set(&m->k[s->key], !s->del, s->val, s->vlen);
    }
}

static int ks_eq(const kstate *a, const kstate *b) {
    if (a->present != b->present)
        return 0;
    return !a->present ||
           (a->vlen == b->vlen && (a->vlen == 0 || !memcmp(a->val, b->val, a->vlen)));
}

static void ks_fmt(char *buf, size_t cap, const kstate *s) {
    if (!s->present)
        snprintf(buf, cap, "<absent>");
    else
        snprintf(buf, cap, "'%.*s%s' (%zu bytes)", (int)(s->vlen < 40 ? s->vlen : 40), s->val,
                 s->vlen > 40 ? "..." : "", s->vlen);
}

/* ---- One round --------------------------------------------------------------------- */

typedef struct round_result {
    unsigned acked[MAX_THREADS];
    uint64_t notfound[MAX_THREADS][MAX_OPS / 64 + 1]; /* ops that returned BR_ENOTFOUND */
    int opened;
} round_result;

/*
 * Reads once from the pipe and consumes the whole reports read. Returns 0 at
 * end of file (the child is gone), 1 otherwise.
 */
static int read_reports(int fd, const crash_cfg *cfg, round_result *rr, char *buf, size_t *have,
                        int round) {
    ssize_t n;
    do
        n = read(fd, buf + *have, 4096 - *have);
    while (n < 0 && errno == EINTR);
    cr_assert(n >= 0, "read: %s", strerror(errno));
    if (n == 0)
        return 0;
    *have += (size_t)n;
    size_t off = 0;
    while (*have - off >= sizeof(report)) {
        report r;
        memcpy(&r, buf + off, sizeof r);
        off += sizeof r;
        cr_assert_eq(r.magic, REPORT_MAGIC, "%s round %d: garbled report", cfg->name, round);
        if (r.thread == THREAD_OPENED) {
            rr->opened = 1;
            continue;
        }
        cr_assert(r.thread != THREAD_FAILED,
                  "%s round %d seed %" PRIu64 ": the child could not open the store: %s", cfg->name,
                  round, cfg->seed, br_errname(r.rc));
        cr_assert(r.thread < cfg->threads);
        cr_assert_eq(r.op, rr->acked[r.thread], "%s round %d: reports out of order", cfg->name,
                     round);
        cr_assert(r.rc == 0 || r.rc == BR_ENOTFOUND,
                  "%s round %d seed %" PRIu64 ": thread %u op %u failed: %s", cfg->name, round,
                  cfg->seed, r.thread, r.op, br_errname(r.rc));
        if (r.rc == BR_ENOTFOUND)
            rr->notfound[r.thread][r.op / 64] |= 1ULL << (r.op % 64);
        rr->acked[r.thread]++;
    }
    memmove(buf, buf + off, *have - off);
    *have -= off;
    return 1;
}

/*
 * Runs the child for one round and kills it. Fills rr with the ops each
 * thread had acknowledged.
 */
static void run_child(const crash_cfg *cfg, int round, uint64_t *delay_rng, round_result *rr) {
    memset(rr, 0, sizeof *rr);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* Die with the test process, should an assertion end it first. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(9);
        close(pfd[0]);
        child_main(cfg, round, pfd[1]);
        _exit(8);
    }
    close(pfd[1]);

    /* Odd rounds time the kill from the fork (so it can hit the open), even
     * rounds from the moment the child has opened the store. */
    double delay = (double)(rnd(delay_rng) % 30001) / 1000.0;
    double start = now_ms(), deadline = start + delay;
    int from_open = round % 2 == 0;
    char buf[4096];
    size_t have = 0;
    int eof = 0;
    for (;;) {
        double now = now_ms();
        if (from_open && !rr->opened && now - start > 10000)
            from_open = 0; /* a very slow open: just kill it */
        if (from_open && !rr->opened)
            deadline = now + delay;
        if (now >= deadline || eof)
            break;
        struct pollfd p = {pfd[0], POLLIN, 0};
        int ms = (int)(deadline - now);
        int pr = poll(&p, 1, ms < 1 ? 1 : ms);
        if (pr > 0 && !read_reports(pfd[0], cfg, rr, buf, &have, round))
            eof = 1; /* the child exited on its own */
    }
    kill(pid, SIGKILL);
    while (!eof && read_reports(pfd[0], cfg, rr, buf, &have, round))
        ;
    close(pfd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                  (WIFEXITED(status) && WEXITSTATUS(status) == 0),
              "%s round %d seed %" PRIu64 ": child ended with status 0x%x", cfg->name, round,
              cfg->seed, (unsigned)status);
    cr_assert_eq(have, 0, "%s round %d: partial report", cfg->name, round);
}

/*
 * Replays thread t's acknowledged ops on its model (checking the delete
 * results), then checks the store against A (all acknowledged) and B (plus
 * the one op that may have been in flight). Leaves the state found in *m;
 * returns 1 if that was B with B != A.
 */
static int verify_thread(br_engine *e, const crash_cfg *cfg, int round, unsigned t,
                         const round_result *rr, tmodel *m, c_op *op) {
    uint64_t rng = thread_rng(cfg, round, t);
    unsigned acked = rr->acked[t];
    char k[32];
    for (unsigned i = 0; i < acked; i++) {
        gen_op(op, &rng, cfg, t, (unsigned)round, i);
        int notfound = (rr->notfound[t][i / 64] >> (i % 64)) & 1;
        int want_nf = !op->batch && op->s[0].del && !m->k[op->s[0].key].present;
        cr_assert_eq(notfound, want_nf,
                     "%s round %d seed %" PRIu64 ": thread %u op %u (%s) returned %s, want %s",
                     cfg->name, round, cfg->seed, t, i,
                     op->batch      ? "batch"
                     : op->s[0].del ? "delete"
                                    : "put",
                     notfound ? "BR_ENOTFOUND" : "0", want_nf ? "BR_ENOTFOUND" : "0");
        tm_apply(m, op);
    }
    /* B: the model after the op that may have been in flight. */
    static tmodel b;
    tm_copy(&b, m, cfg->keys);
    int has_b = acked < cfg->max_ops;
    if (has_b) {
        gen_op(op, &rng, cfg, t, (unsigned)round, acked);
        tm_apply(&b, op);
    }

    static tmodel got;
    for (unsigned i = 0; i < cfg->keys; i++) {
        int kl = keyname(k, sizeof k, t, i);
        void *v = NULL;
        size_t vl = 0;
        int rc = br_engine_get(e, k, (size_t)kl, &v, &vl);
        cr_assert(rc == 0 || rc == BR_ENOTFOUND, "%s round %d seed %" PRIu64 ": get(%s): %s",
                  cfg->name, round, cfg->seed, k, br_errname(rc));
        km_set(&got.k[i], rc == 0, v, vl);
        free(v);
    }

    if (cfg->mode == MODE_BATCH_GEN && has_b) {
        /* The in-flight batch: all of its keys hold its values, or none. */
        int n_new = 0;
        for (int j = 0; j < op->nsub; j++) {
            kstate want = {1, op->s[j].vlen, op->s[j].val};
            n_new += ks_eq(&got.k[op->s[j].key], &want);
        }
        cr_assert(n_new == 0 || n_new == op->nsub,
                  "%s round %d seed %" PRIu64 ": thread %u batch %u.%u is torn: %d of %d keys "
                  "hold its generation",
                  cfg->name, round, cfg->seed, t, round, acked, n_new, op->nsub);
    }

    int eq_a = 1, eq_b = 1;
    unsigned bad_a = 0, bad_b = 0;
    for (unsigned i = 0; i < cfg->keys; i++) {
        if (eq_a && !ks_eq(&got.k[i], &m->k[i]))
            eq_a = 0, bad_a = i;
        if (eq_b && !ks_eq(&got.k[i], &b.k[i]))
            eq_b = 0, bad_b = i;
    }
    if (!eq_a && !(has_b && eq_b)) {
        char sg[80], sa[80], sb[80], kb[32];
        ks_fmt(sg, sizeof sg, &got.k[bad_a]);
        ks_fmt(sa, sizeof sa, &m->k[bad_a]);
        ks_fmt(sb, sizeof sb, &b.k[bad_a]);
        keyname(k, sizeof k, t, bad_a);
        keyname(kb, sizeof kb, t, bad_b);
        cr_assert_fail("%s round %d seed %" PRIu64 ": thread %u had %u ops acknowledged (op %u, "
                       "a %s of %d, may have been in flight); the store matches neither state: "
                       "key %s holds %s, acknowledged state %s, in-flight state %s; first "
                       "mismatch with the in-flight state: key %s",
                       cfg->name, round, cfg->seed, t, acked, acked,
                       op->batch      ? "batch"
                       : op->s[0].del ? "delete"
                                      : "put",
                       op->nsub, k, sg, sa, sb, kb);
    }
    if (!eq_a) {
        tm_copy(m, &b, cfg->keys);
        return 1;
    }
    return 0;
}

/* Every key in the store belongs to some thread's key space and matches the
 * model (nothing invented), and the counts agree. */
typedef struct scan_ctx {
    const crash_cfg *cfg;
    tmodel *models;
    size_t n;
    int bad;
    char what[160];
} scan_ctx;

static int scan_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    scan_ctx *s = ctx;
    char k[32];
    unsigned t, i;
    if (klen >= sizeof k)
        goto bad;
    memcpy(k, key, klen);
    k[klen] = 0;
    char tail;
    if (sscanf(k, "t%u-k%u%c", &t, &i, &tail) != 2 || t >= s->cfg->threads || i >= s->cfg->keys)
        goto bad;
    char canon[32];
    keyname(canon, sizeof canon, t, i);
    if (strcmp(canon, k) != 0)
        goto bad;
    kstate got = {1, vlen, (char *)(uintptr_t)val};
    if (!ks_eq(&got, &s->models[t].k[i]))
        goto bad;
    s->n++;
    return 0;
bad:
    s->bad = 1;
    snprintf(s->what, sizeof s->what, "key '%.*s' = '%.*s'", (int)(klen < 40 ? klen : 40),
             (const char *)key, (int)(vlen < 60 ? vlen : 60), (const char *)val);
    return 1;
}

static void crash_run(crash_cfg *cfg) {
    cfg->dir = tu_tmpdir(cfg->name);
    tmodel *models = calloc(cfg->threads, sizeof *models);
    c_op *op = malloc(sizeof *op);
    cr_assert(models && op);
    uint64_t delay_rng = cfg->seed ^ 0xdeadbeefcafef00dULL;
    uint64_t total_acked = 0, max_files = 0;
    unsigned in_flight_applied = 0, killed_before_open = 0;

    for (int round = 0; round < cfg->rounds; round++) {
        static round_result rr;
        run_child(cfg, round, &delay_rng, &rr);
        killed_before_open += !rr.opened;

        br_engine *e = NULL;
        char err[512] = "";
        int rc = br_engine_open(cfg->dir, &cfg->opts, &e, err, sizeof err);
        cr_assert_eq(rc, 0, "%s round %d seed %" PRIu64 ": reopen after the crash: %s (%s)",
                     cfg->name, round, cfg->seed, br_errname(rc), err);
        for (unsigned t = 0; t < cfg->threads; t++) {
            in_flight_applied += verify_thread(e, cfg, round, t, &rr, &models[t], op);
            total_acked += rr.acked[t];
        }
        scan_ctx sc = {cfg, models, 0, 0, ""};
        rc = br_engine_range(e, NULL, 0, NULL, 0, 0, scan_fn, &sc);
        cr_assert(rc == 0 || sc.bad, "range: %s", br_errname(rc));
        cr_assert(!sc.bad, "%s round %d seed %" PRIu64 ": the store holds %s, never written",
                  cfg->name, round, cfg->seed, sc.what);
        size_t want = 0;
        for (unsigned t = 0; t < cfg->threads; t++)
            for (unsigned i = 0; i < cfg->keys; i++)
                want += (size_t)models[t].k[i].present;
        cr_assert_eq(sc.n, want, "%s round %d seed %" PRIu64 ": range saw %zu keys, want %zu",
                     cfg->name, round, cfg->seed, sc.n, want);
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        cr_assert_eq(st.keys, (uint64_t)want, "%s round %d: stats.keys %" PRIu64 ", want %zu",
                     cfg->name, round, st.keys, want);
        if (st.data_files > max_files)
            max_files = st.data_files;
        rc = br_engine_close(e);
        cr_assert_eq(rc, 0, "close: %s", br_errname(rc));
    }
    fprintf(stderr,
            "test_crash %s: %d rounds, %" PRIu64 " acknowledged ops, %u in-flight ops found "
            "applied, %u kills before the open finished, up to %" PRIu64 " data files\n",
            cfg->name, cfg->rounds, total_acked, in_flight_applied, killed_before_open, max_files);
    for (unsigned t = 0; t < cfg->threads; t++)
        tm_free(&models[t], cfg->keys);
    free(models);
    free(op);
    tu_rmrf(cfg->dir);
    free(cfg->dir);
}

static void cfg_init(crash_cfg *cfg, const char *name, crash_mode mode, unsigned threads) {
    memset(cfg, 0, sizeof *cfg);
    cfg->name = name;
    cfg->mode = mode;
    cfg->threads = threads;
    cfg->keys = mode == MODE_BATCH_GEN ? 64 : 100;
    cfg->batch_len = 12;
    cfg->rounds = tu_long() ? 500 : 40;
    cfg->max_ops = MAX_OPS;
    cfg->seed = test_seed(name);
    br_engine_options_init(&cfg->opts);
    cfg->opts.sync = BR_SYNC_ALWAYS;
    cfg->opts.max_file_size = 64u << 10;
}

Test(crash, single_writer) {
    crash_cfg cfg;
    cfg_init(&cfg, "single_writer", MODE_MIXED, 1);
    crash_run(&cfg);
}

Test(crash, several_writer_threads) {
    crash_cfg cfg;
    cfg_init(&cfg, "several_writers", MODE_MIXED, 4);
    crash_run(&cfg);
}

Test(crash, batch_atomicity) {
    crash_cfg cfg;
    cfg_init(&cfg, "batch_atomicity", MODE_BATCH_GEN, 2);
    crash_run(&cfg);
}

/* With BR_SYNC_NEVER or BR_SYNC_INTERVAL a crash of the process (not of the
 * machine) still loses nothing acknowledged: the page cache survives it. */
Test(crash, sync_never_process_crash) {
    crash_cfg cfg;
    cfg_init(&cfg, "sync_never", MODE_MIXED, 2);
    cfg.opts.sync = BR_SYNC_NEVER;
    cfg.max_ops = 1000; /* writes are fast: bound the data per round */
    crash_run(&cfg);
}

Test(crash, sync_interval_process_crash) {
    crash_cfg cfg;
    cfg_init(&cfg, "sync_interval", MODE_MIXED, 2);
    cfg.opts.sync = BR_SYNC_INTERVAL;
    cfg.opts.sync_interval_ms = 5;
    cfg.max_ops = 1000;
    crash_run(&cfg);
}

/* Kills land in the middle of merges too: the compaction thread looks
 * for work every millisecond and merges any file a tenth dead. Without
 * syncs (a process crash keeps the page cache) the child writes enough
 * for many merges per round. */
Test(crash, during_compaction) {
    crash_cfg cfg;
    cfg_init(&cfg, "during_compaction", MODE_MIXED, 2);
    cfg.opts.sync = BR_SYNC_NEVER;
    cfg.max_ops = 3000;
    cfg.opts.compact_dead_pct = 10;
    cfg.opts.compact_interval_ms = 1;
    cfg.opts.compact_rate = 0;
    crash_run(&cfg);
}

Test(crash, batches_during_compaction) {
    crash_cfg cfg;
    cfg_init(&cfg, "batches_during_compaction", MODE_BATCH_GEN, 2);
    cfg.opts.sync = BR_SYNC_NEVER;
    cfg.max_ops = 1000;
    cfg.opts.compact_dead_pct = 10;
    cfg.opts.compact_interval_ms = 1;
    cfg.opts.compact_rate = 0;
    crash_run(&cfg);
}
