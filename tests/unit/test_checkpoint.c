/*
 * test_checkpoint.c - what cluster mode needs from the engine: numbered
 * writes (the Raft index as sequence number, replays skipped) and
 * checkpoints (closed files hard-linked into a directory that opens as a
 * store holding every write up to a sequence number).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "testutil.h"

static br_engine *open_dir(const char *dir, uint32_t compact_pct) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 8192;
    o.sync = BR_SYNC_NEVER;
    o.compact_dead_pct = compact_pct;
    o.compact_interval_ms = 1;
    o.compact_rate = 0;
    br_engine *e;
    char err[256] = "";
    int rc = br_engine_open(dir, &o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s (%s)", dir, br_strerror(rc), err);
    return e;
}

static void expect(br_engine *e, const char *k, const char *v) {
    void *got = NULL;
    size_t n = 0;
    int rc = br_engine_get(e, k, strlen(k), &got, &n);
    if (!v) {
        cr_assert_eq(rc, BR_ENOTFOUND, "%s should be absent (%s)", k, br_strerror(rc));
        return;
    }
    cr_assert_eq(rc, 0, "%s: %s", k, br_strerror(rc));
    cr_assert(n == strlen(v) && memcmp(got, v, n) == 0, "%s = '%.*s', want '%s'", k, (int)n,
              (char *)got, v);
    free(got);
}

static uint64_t last_seq(br_engine *e) {
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    return st.last_seq;
}

Test(write_seq, numbers_are_the_callers_and_replays_are_skipped) {
    char *dir = tu_tmpdir("wseq");
    br_engine *e = open_dir(dir, 0);
    br_batch *b = br_batch_new();
    br_batch_put(b, "a", 1, "1", 1);
    br_batch_put(b, "b", 1, "1", 1);
    cr_assert_eq(br_engine_write_seq(e, b, 5), 0);
    cr_assert_eq(last_seq(e), 5);
    br_batch_clear(b);
    br_batch_put(b, "a", 1, "2", 1);
    br_batch_delete(b, "b", 1);
    cr_assert_eq(br_engine_write_seq(e, b, 9), 0);
    cr_assert_eq(last_seq(e), 9);
    /* A replay of index 5 (or anything up to 9) changes nothing. */
    br_batch_clear(b);
    br_batch_put(b, "a", 1, "stale", 5);
    cr_assert_eq(br_engine_write_seq(e, b, 5), 0);
    cr_assert_eq(br_engine_write_seq(e, b, 9), 0);
    expect(e, "a", "2");
    expect(e, "b", NULL);
    cr_assert_eq(br_engine_write_seq(e, b, 0), BR_EINVAL);
    /* An empty batch writes nothing and records nothing. */
    br_batch_clear(b);
    cr_assert_eq(br_engine_write_seq(e, b, 12), 0);
    cr_assert_eq(last_seq(e), 9);
    cr_assert_eq(br_engine_close(e), 0);
    e = open_dir(dir, 0);
    cr_assert_eq(last_seq(e), 9, "the last applied index survives a reopen");
    expect(e, "a", "2");
    expect(e, "b", NULL);
    br_batch_put(b, "c", 1, "3", 1);
    cr_assert_eq(br_engine_write_seq(e, b, 10), 0);
    expect(e, "c", "3");
    br_engine_close(e);
    br_batch_free(b);
    tu_rmrf(dir);
    free(dir);
}

Test(checkpoint, holds_every_write_up_to_its_number_and_shares_nothing_written) {
    char *dir = tu_tmpdir("ckpt");
    char *cp = tu_path(dir, "snap");
    char *src = tu_path(dir, "store");
    br_engine *e = open_dir(src, 0);
    char k[32], v[64];
    br_batch *b = br_batch_new();
    for (uint64_t i = 1; i <= 500; i++) {
        br_batch_clear(b);
        snprintf(k, sizeof k, "k%03" PRIu64, i % 200);
        snprintf(v, sizeof v, "v%" PRIu64, i);
        br_batch_put(b, k, strlen(k), v, strlen(v));
        cr_assert_eq(br_engine_write_seq(e, b, i), 0);
    }
    uint64_t seq = 0;
    cr_assert_eq(br_engine_checkpoint(e, cp, &seq), 0);
    cr_assert_eq(seq, 500);
    cr_assert_eq(br_engine_checkpoint(e, cp, &seq), -EEXIST);
    /* Later writes do not reach the checkpoint. */
    for (uint64_t i = 501; i <= 700; i++) {
        br_batch_clear(b);
        snprintf(k, sizeof k, "k%03" PRIu64, i % 200);
        snprintf(v, sizeof v, "v%" PRIu64, i);
        br_batch_put(b, k, strlen(k), v, strlen(v));
        cr_assert_eq(br_engine_write_seq(e, b, i), 0);
    }
    br_engine *c = open_dir(cp, 0);
    cr_assert_eq(last_seq(c), 500);
    for (uint64_t i = 301; i <= 500; i++) {
        snprintf(k, sizeof k, "k%03" PRIu64, i % 200);
        snprintf(v, sizeof v, "v%" PRIu64, i);
        expect(c, k, v);
    }
    /* Writing into the checkpoint leaves the store alone. */
    br_batch_clear(b);
    br_batch_put(b, "k001", 4, "changed", 7);
    cr_assert_eq(br_engine_write_seq(c, b, 501), 0);
    cr_assert_eq(br_engine_compact(c, 0), 0);
    cr_assert_eq(br_engine_close(c), 0);
    expect(e, "k001", "v601");
    cr_assert_eq(br_engine_close(e), 0);
    e = open_dir(src, 0);
    expect(e, "k001", "v601");
    cr_assert_eq(last_seq(e), 700);
    br_engine_close(e);
    br_batch_free(b);
    free(cp);
    free(src);
    tu_rmrf(dir);
    free(dir);
}

typedef struct writer_ctx {
    br_engine *e;
    atomic_uint_fast64_t applied; /* last index written */
    atomic_int stop;
} writer_ctx;

static void *writer(void *arg) {
    writer_ctx *w = arg;
    br_batch *b = br_batch_new();
    char k[32], v[64];
    for (uint64_t i = 1; !atomic_load(&w->stop); i++) {
        br_batch_clear(b);
        snprintf(k, sizeof k, "k%03" PRIu64, i % 300);
        snprintf(v, sizeof v, "v%" PRIu64, i);
        br_batch_put(b, k, strlen(k), v, strlen(v));
        if (br_engine_write_seq(w->e, b, i) != 0)
            break;
        atomic_store(&w->applied, i);
    }
    br_batch_free(b);
    return NULL;
}

/* Checkpoints taken while an applier writes and compaction merges: each
 * opens as a store whose every key holds the value of the newest write up
 * to the checkpoint's number (or a later one, which the store's numbers
 * tell apart). */
Test(checkpoint, under_writes_and_compaction) {
    char *dir = tu_tmpdir("ckpt");
    char *src = tu_path(dir, "store");
    br_engine *e = open_dir(src, 10);
    writer_ctx w = {.e = e};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer, &w), 0);
    for (int round = 0; round < 8; round++) {
        while (atomic_load(&w.applied) < (uint64_t)(round + 1) * 400)
            usleep(1000);
        char name[32];
        snprintf(name, sizeof name, "snap%d", round);
        char *cp = tu_path(dir, name);
        uint64_t seq = 0;
        cr_assert_eq(br_engine_checkpoint(e, cp, &seq), 0);
        br_engine *c = open_dir(cp, 0);
        uint64_t top = last_seq(c);
        cr_assert_geq(top, seq);
        /* Key k holds write i where i is the newest index <= top with
         * i % 300 == k (every index up to top is in the checkpoint). */
        for (uint64_t k = 0; k < 300 && k <= top; k++) {
            uint64_t i = top - ((top - k) % 300);
            if (i == 0)
                continue;
            char key[32], val[64];
            snprintf(key, sizeof key, "k%03" PRIu64, k);
            snprintf(val, sizeof val, "v%" PRIu64, i);
            expect(c, key, val);
        }
        br_engine_close(c);
        free(cp);
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    br_engine_close(e);
    free(src);
    tu_rmrf(dir);
    free(dir);
}
