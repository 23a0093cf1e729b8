/* test_service.c - the standalone service: completions, the write pool,
 * group commit through it, close draining the writes in flight. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitraft/service.h"

static char dir[256];

static void setup(void) {
    const char *base = getenv("BR_TEST_TMP");
    if (!base)
        base = "/tmp";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", base);
    cr_assert_eq(system(cmd), 0);
    snprintf(dir, sizeof dir, "%s/svc.%d", base, (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static void teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, rc;
    pthread_t thread; /* the thread the completion ran on */
} waiter;

#define WAITER                                                                                     \
    { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 }

static void on_done(void *ctx, int rc) {
    waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->thread = pthread_self();
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int wait_for(waiter *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return w->rc;
}

typedef struct got {
    int rc;
    char *val;
    size_t vlen;
    int called;
} got;

static void on_get(void *ctx, int rc, void *val, size_t vlen) {
    got *g = ctx;
    g->rc = rc, g->val = val, g->vlen = vlen, g->called = 1;
}

typedef struct range_res {
    int rc;
    br_service_iter *it;
} range_res;

static void on_range(void *ctx, int rc, br_service_iter *it) {
    range_res *x = ctx;
    x->rc = rc, x->it = it;
}

static br_service *open_svc(unsigned threads) {
    br_service_options so;
    br_service_options_init(&so);
    so.write_threads = threads;
    br_service *s;
    char err[256] = "";
    int rc = br_service_open_standalone(dir, NULL, &so, &s, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    return s;
}

Test(service, writes_complete_on_pool_threads_and_reads_inline, .init = setup, .fini = teardown) {
    br_service *s = open_svc(4);
    waiter w = WAITER;
    cr_assert_eq(br_service_put(s, "k", 1, "v1", 2, on_done, &w), 0);
    cr_assert_eq(wait_for(&w), 0);
    cr_assert(!pthread_equal(w.thread, pthread_self()), "a write completed on the caller");
    cr_assert(br_service_reads_inline(s, 0));
    got g = {0};
    cr_assert_eq(br_service_get(s, "k", 1, 0, on_get, &g), 0);
    cr_assert(g.called, "a read did not complete inline");
    cr_assert(g.rc == 0 && g.vlen == 2 && memcmp(g.val, "v1", 2) == 0);
    free(g.val);
    waiter d = WAITER;
    cr_assert_eq(br_service_delete(s, "k", 1, on_done, &d), 0);
    cr_assert_eq(wait_for(&d), 0);
    waiter d2 = WAITER;
    cr_assert_eq(br_service_delete(s, "k", 1, on_done, &d2), 0);
    cr_assert_eq(wait_for(&d2), BR_ENOTFOUND);
    got g2 = {0};
    br_service_get(s, "k", 1, 0, on_get, &g2);
    cr_assert(g2.called && g2.rc == BR_ENOTFOUND && g2.val == NULL);
    /* One store: the read barrier passes at once, on the caller. */
    waiter rb = WAITER;
    cr_assert_eq(br_service_read_barrier(s, on_done, &rb), 0);
    cr_assert(rb.done && rb.rc == 0, "the barrier did not pass inline");
    cr_assert_eq(br_service_close(s), 0);
}

Test(service, batch_and_range, .init = setup, .fini = teardown) {
    br_service *s = open_svc(2);
    br_service_batch *b = br_service_batch_new(s);
    char k[16];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "r%02d", i);
        br_service_batch_put(b, k, strlen(k), k, strlen(k));
    }
    waiter w = WAITER;
    cr_assert_eq(br_service_write(s, b, on_done, &w), 0);
    cr_assert_eq(wait_for(&w), 0);
    br_service_batch_free(b);
    range_res x = {1, NULL};
    cr_assert_eq(br_service_range(s, "r03", 3, "r05", 3, 0, 0, on_range, &x), 0);
    cr_assert_eq(x.rc, 0);
    const void *kk, *vv;
    size_t kl, vl;
    int n = 0;
    while (br_service_iter_next(x.it, &kk, &kl, &vv, &vl) == 1)
        n++;
    cr_assert_eq(n, 3);
    br_service_iter_free(x.it);
    br_service_stats st;
    br_service_stats_get(s, &st);
    cr_assert_str_eq(st.mode, "standalone");
    cr_assert_eq(st.engine.keys, 10);
    cr_assert_eq(br_service_close(s), 0);
}

#define NW 2000
static atomic_int completed;
static void count_done(void *ctx, int rc) {
    (void)ctx;
    cr_assert_eq(rc, 0);
    atomic_fetch_add(&completed, 1);
}

/* Many writes in flight at once share fdatasyncs, and close waits for
 * every accepted write to complete. */
Test(service, close_drains_and_writes_share_syncs, .init = setup, .fini = teardown) {
    br_service *s = open_svc(32);
    static char keys[NW][16];
    for (int i = 0; i < NW; i++) {
        snprintf(keys[i], sizeof keys[i], "w%05d", i);
        cr_assert_eq(br_service_put(s, keys[i], strlen(keys[i]), "v", 1, count_done, NULL), 0);
    }
    br_service_stats st;
    br_service_stats_get(s, &st);
    cr_assert_eq(br_service_close(s), 0);
    cr_assert_eq(atomic_load(&completed), NW);
    s = open_svc(32);
    for (int i = 0; i < NW; i++)
        cr_assert_eq(br_service_put(s, keys[i], strlen(keys[i]), "v", 1, count_done, NULL), 0);
    while (atomic_load(&completed) < 2 * NW)
        usleep(1000);
    br_service_stats_get(s, &st);
    cr_assert_lt(st.engine.syncs, NW / 2, "%llu syncs for %d concurrent puts",
                 (unsigned long long)st.engine.syncs, NW);
    cr_assert_eq(br_service_close(s), 0);
    s = open_svc(1);
    br_service_stats_get(s, &st);
    cr_assert_eq(st.engine.keys, NW);
    br_service_close(s);
}

Test(service, second_open_is_locked, .init = setup, .fini = teardown) {
    br_service *s = open_svc(1), *s2 = NULL;
    char err[256];
    cr_assert_eq(br_service_open_standalone(dir, NULL, NULL, &s2, err, sizeof err), BR_ELOCKED);
    cr_assert_null(s2);
    br_service_close(s);
}

Test(service, bad_thread_count_is_refused, .init = setup, .fini = teardown) {
    br_service_options so;
    br_service_options_init(&so);
    so.write_threads = 0;
    br_service *s = NULL;
    char err[256];
    cr_assert_eq(br_service_open_standalone(dir, NULL, &so, &s, err, sizeof err), BR_EINVAL);
    cr_assert_null(s);
}

Test(service, inline_writes_only_without_sync_always, .init = setup, .fini = teardown) {
    br_service_options so;
    br_service_options_init(&so);
    so.inline_writes = 1;
    br_engine_options eo;
    br_engine_options_init(&eo);
    br_service *s;
    char err[256];
    cr_assert_eq(br_service_open_standalone(dir, &eo, &so, &s, err, sizeof err), 0);
    cr_assert(!br_service_writes_inline(s), "inline writes under sync always");
    br_service_close(s);
    eo.sync = BR_SYNC_NEVER;
    cr_assert_eq(br_service_open_standalone(dir, &eo, &so, &s, err, sizeof err), 0);
    cr_assert(br_service_writes_inline(s));
    waiter w = WAITER;
    cr_assert_eq(br_service_put(s, "k", 1, "v", 1, on_done, &w), 0);
    cr_assert(w.done, "an inline write did not complete before returning");
    cr_assert(w.rc == 0 && pthread_equal(w.thread, pthread_self()));
    cr_assert_eq(br_service_close(s), 0);
}

Test(service, key_mode_is_fixed_at_creation, .init = setup, .fini = teardown) {
    br_service_options so;
    br_service_options_init(&so);
    so.int_keys = 1;
    br_service *s;
    char err[256] = "";
    cr_assert_eq(br_service_open_standalone(dir, NULL, &so, &s, err, sizeof err), 0, "%s", err);
    cr_assert_eq(br_service_key_mode(s), BR_KEYS_INT);
    br_service_close(s);
    s = open_svc(1); /* no flag: the directory's KEYS file decides */
    cr_assert_eq(br_service_key_mode(s), BR_KEYS_INT);
    br_service_close(s);

    char other[300];
    snprintf(other, sizeof other, "%s/bytes", dir);
    br_service_options bo;
    br_service_options_init(&bo);
    cr_assert_eq(br_service_open_standalone(other, NULL, &bo, &s, err, sizeof err), 0);
    waiter w = WAITER;
    br_service_put(s, "k", 1, "v", 1, on_done, &w);
    cr_assert_eq(wait_for(&w), 0);
    br_service_close(s);
    cr_assert_eq(br_service_open_standalone(other, NULL, &so, &s, err, sizeof err), BR_EINVAL);
    cr_assert(strstr(err, "chosen when a directory is created") != NULL, "%s", err);
    so.int_keys = 2;
    cr_assert_eq(br_service_open_standalone(other, NULL, &so, &s, err, sizeof err), 0);
    cr_assert_eq(br_service_key_mode(s), BR_KEYS_BYTES);
    br_service_close(s);
}

/* ---- The replicated service: a one-member cluster ------------------------ */

static br_service *open_repl(void) {
    br_service_member m = {1, "127.0.0.1", 1, "127.0.0.1:1"};
    br_service_cluster_options co;
    br_service_cluster_options_init(&co);
    co.id = 1;
    co.members = &m;
    co.n_members = 1;
    co.listen_port = 0; /* any free port */
    co.election_ticks = 5;
    co.heartbeat_ticks = 1;
    br_service *s = NULL;
    char err[256] = "";
    int rc = br_service_open_replicated(dir, NULL, NULL, &co, &s, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    return s;
}

/* Waits (bounded) until the single member has elected itself. */
static void wait_leader(br_service *s) {
    for (int i = 0; i < 500; i++) {
        br_service_stats st;
        br_service_stats_get(s, &st);
        if (st.raft.is_leader)
            return;
        usleep(10000);
    }
    cr_assert_fail("no leader after 5 s");
}

typedef struct gwait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int called, rc;
    char *val;
    size_t vlen;
    br_service_iter *it;
} gwait;
#define GWAIT                                                                                      \
    { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, 0, NULL }

static void gw_get(void *ctx, int rc, void *val, size_t vlen) {
    gwait *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->rc = rc, g->val = val, g->vlen = vlen, g->called = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gw_range(void *ctx, int rc, br_service_iter *it) {
    gwait *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->rc = rc, g->it = it, g->called = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gw_wait(gwait *g) {
    pthread_mutex_lock(&g->mu);
    for (int i = 0; !g->called && i < 1000; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000)
            ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    cr_assert(g->called, "no callback within 10 s");
}

Test(replicated, writes_reads_batches_and_chunked_ranges, .init = setup, .fini = teardown) {
    br_service *s = open_repl();
    wait_leader(s);
    uint64_t self = 0, leader = 0;
    char addr[64];
    br_service_leader(s, &self, &leader, addr, sizeof addr);
    cr_assert(self == 1 && leader == 1 && strcmp(addr, "127.0.0.1:1") == 0, "%s", addr);
    cr_assert(!br_service_reads_inline(s, 0));
    cr_assert(br_service_reads_inline(s, BR_SERVICE_STALE));

    waiter w = WAITER;
    cr_assert_eq(br_service_put(s, "k", 1, "v1", 2, on_done, &w), 0);
    cr_assert_eq(wait_for(&w), 0);
    gwait g = GWAIT;
    cr_assert_eq(br_service_get(s, "k", 1, 0, gw_get, &g), 0);
    gw_wait(&g);
    cr_assert(g.rc == 0 && g.vlen == 2 && memcmp(g.val, "v1", 2) == 0);
    free(g.val);
    got sg = {0};
    cr_assert_eq(br_service_get(s, "k", 1, BR_SERVICE_STALE, on_get, &sg), 0);
    cr_assert(sg.called && sg.rc == 0 && sg.vlen == 2);
    free(sg.val);
    /* A barrier, then a stale read on this thread: sees the write above. */
    waiter w2 = WAITER;
    cr_assert_eq(br_service_put(s, "k", 1, "v2", 2, on_done, &w2), 0);
    cr_assert_eq(wait_for(&w2), 0);
    waiter rb = WAITER;
    cr_assert_eq(br_service_read_barrier(s, on_done, &rb), 0);
    cr_assert_eq(wait_for(&rb), 0);
    cr_assert(!pthread_equal(rb.thread, pthread_self()), "the barrier passed on the caller");
    got bg = {0};
    cr_assert_eq(br_service_get(s, "k", 1, BR_SERVICE_STALE, on_get, &bg), 0);
    cr_assert(bg.called && bg.rc == 0 && bg.vlen == 2 && memcmp(bg.val, "v2", 2) == 0);
    free(bg.val);
    waiter d = WAITER;
    cr_assert_eq(br_service_delete(s, "nope", 4, on_done, &d), 0);
    cr_assert_eq(wait_for(&d), BR_ENOTFOUND);

    /* More entries than one chunk of the iterator (256), one batch. */
    br_service_batch *b = br_service_batch_new(s);
    char k[16];
    for (int i = 0; i < 700; i++) {
        snprintf(k, sizeof k, "r%04d", i);
        cr_assert_eq(br_service_batch_put(b, k, strlen(k), k, strlen(k)), 0);
    }
    waiter wb = WAITER;
    cr_assert_eq(br_service_write(s, b, on_done, &wb), 0);
    cr_assert_eq(wait_for(&wb), 0);
    br_service_batch_free(b);
    for (int lim = 0; lim <= 600; lim += 300) {
        gwait rg = GWAIT;
        cr_assert_eq(br_service_range(s, "r0010", 5, "r0689", 5, (size_t)lim, 0, gw_range, &rg), 0);
        gw_wait(&rg);
        cr_assert_eq(rg.rc, 0);
        const void *kk, *vv;
        size_t kl, vl;
        int n = 0, rc;
        while ((rc = br_service_iter_next(rg.it, &kk, &kl, &vv, &vl)) == 1) {
            snprintf(k, sizeof k, "r%04d", 10 + n);
            cr_assert(kl == 5 && memcmp(kk, k, 5) == 0 && vl == 5, "entry %d", n);
            n++;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(n, lim ? lim : 680, "limit %d: %d entries", lim, n);
        br_service_iter_free(rg.it);
    }
    br_service_stats st;
    br_service_stats_get(s, &st);
    cr_assert_str_eq(st.mode, "cluster");
    cr_assert_str_eq(st.raft.role, "leader");
    cr_assert_eq(st.engine.keys, 701);
    cr_assert_eq(br_service_close(s), 0);

    /* Everything is there after a restart. */
    s = open_repl();
    wait_leader(s);
    got g2 = {0};
    for (int i = 0; i < 200 && !(g2.called && g2.rc == 0); i++) {
        memset(&g2, 0, sizeof g2);
        br_service_get(s, "r0699", 5, BR_SERVICE_STALE, on_get, &g2);
        if (g2.rc)
            usleep(10000);
    }
    cr_assert(g2.called && g2.rc == 0 && g2.vlen == 5);
    free(g2.val);
    cr_assert_eq(br_service_close(s), 0);
}
