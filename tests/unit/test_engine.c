/* test_engine.c - the engine API: puts, gets, deletes, batches, limits,
 * reopen, stats, sync policies. */
#include <criterion/criterion.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/engine.h"
#include "testutil.h"

static br_engine *open_or_die(const char *dir, const br_engine_options *o) {
    br_engine *e;
    char err[256] = "";
    int rc = br_engine_open(dir, o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s (%s)", dir, br_strerror(rc), err);
    return e;
}

static void expect_value(br_engine *e, const char *key, const char *val) {
    void *v;
    size_t vl;
    int rc = br_engine_get(e, key, strlen(key), &v, &vl);
    cr_assert_eq(rc, 0, "get %s: %s", key, br_strerror(rc));
    cr_assert_eq(vl, strlen(val));
    cr_assert_eq(memcmp(v, val, vl), 0);
    free(v);
}

static void expect_absent(br_engine *e, const char *key) {
    void *v;
    size_t vl;
    cr_assert_eq(br_engine_get(e, key, strlen(key), &v, &vl), BR_ENOTFOUND, "%s present", key);
}

Test(engine, put_get_delete_overwrite) {
    char *dir = tu_tmpdir("engine");
    br_engine *e = open_or_die(dir, NULL);
    expect_absent(e, "a");
    cr_assert_eq(br_engine_put(e, "a", 1, "1", 1), 0);
    cr_assert_eq(br_engine_put(e, "b", 1, "", 0), 0, "empty value is allowed");
    expect_value(e, "a", "1");
    expect_value(e, "b", "");
    cr_assert_eq(br_engine_put(e, "a", 1, "22", 2), 0);
    expect_value(e, "a", "22");
    cr_assert_eq(br_engine_delete(e, "a", 1), 0);
    expect_absent(e, "a");
    cr_assert_eq(br_engine_delete(e, "a", 1), BR_ENOTFOUND);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, 1);
    cr_assert_eq(st.puts, 3);
    cr_assert_eq(st.deletes, 1);
    cr_assert(st.dead_bytes > 0, "overwritten and deleted records are dead bytes");
    cr_assert_eq(br_engine_close(e), 0);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, get_into_reports_needed_size) {
    char *dir = tu_tmpdir("engine");
    br_engine *e = open_or_die(dir, NULL);
    cr_assert_eq(br_engine_put(e, "k", 1, "hello world", 11), 0);
    char buf[4];
    size_t vl = 0;
    cr_assert_eq(br_engine_get_into(e, "k", 1, buf, sizeof buf, &vl), 0);
    cr_assert_eq(vl, 11, "too small a buffer reports the size");
    char big[32];
    cr_assert_eq(br_engine_get_into(e, "k", 1, big, sizeof big, &vl), 0);
    cr_assert_eq(memcmp(big, "hello world", 11), 0);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, reopen_keeps_everything) {
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    br_engine *e = open_or_die(dir, &o);
    char k[32], v[64];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key%04d", i);
        snprintf(v, sizeof v, "value-%d-%d", i, i * 7);
        cr_assert_eq(br_engine_put(e, k, strlen(k), v, strlen(v)), 0);
    }
    for (int i = 0; i < 500; i += 3) {
        snprintf(k, sizeof k, "key%04d", i);
        cr_assert_eq(br_engine_delete(e, k, strlen(k)), 0);
    }
    br_engine_stats st1;
    br_engine_stats_get(e, &st1);
    cr_assert(st1.data_files > 5, "tiny cap rolls over (%llu files)",
              (unsigned long long)st1.data_files);
    br_engine_close(e);
    e = open_or_die(dir, &o);
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key%04d", i);
        snprintf(v, sizeof v, "value-%d-%d", i, i * 7);
        if (i % 3 == 0)
            expect_absent(e, k);
        else
            expect_value(e, k, v);
    }
    br_engine_stats st2;
    br_engine_stats_get(e, &st2);
    cr_assert_eq(st2.keys, st1.keys);
    cr_assert_eq(st2.live_bytes, st1.live_bytes, "live bytes are rebuilt exactly");
    cr_assert_eq(st2.dead_bytes, st1.dead_bytes, "dead bytes are rebuilt exactly");
    cr_assert_eq(st2.last_seq, st1.last_seq);
    /* New writes after a reopen go on with higher sequence numbers. */
    cr_assert_eq(br_engine_put(e, "new", 3, "x", 1), 0);
    br_engine_stats_get(e, &st2);
    cr_assert_eq(st2.last_seq, st1.last_seq + 1);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, batch_is_applied_in_order) {
    char *dir = tu_tmpdir("engine");
    br_engine *e = open_or_die(dir, NULL);
    br_engine_put(e, "gone", 4, "x", 1);
    br_batch *b = br_batch_new();
    cr_assert_eq(br_batch_put(b, "a", 1, "1", 1), 0);
    cr_assert_eq(br_batch_put(b, "a", 1, "2", 1), 0);
    cr_assert_eq(br_batch_delete(b, "gone", 4), 0);
    cr_assert_eq(br_batch_delete(b, "never", 5), 0, "deleting an absent key is fine");
    cr_assert_eq(br_batch_put(b, "c", 1, "3", 1), 0);
    cr_assert_eq(br_batch_count(b), 5);
    cr_assert_eq(br_engine_write(e, b), 0);
    expect_value(e, "a", "2");
    expect_value(e, "c", "3");
    expect_absent(e, "gone");
    br_engine_close(e);
    e = open_or_die(dir, NULL);
    expect_value(e, "a", "2");
    expect_value(e, "c", "3");
    expect_absent(e, "gone");
    br_batch_free(b);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, limits_reject_and_write_nothing) {
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_key_size = 8;
    o.max_value_size = 16;
    br_engine *e = open_or_die(dir, &o);
    char big[64] = {0};
    cr_assert_eq(br_engine_put(e, "", 0, "v", 1), BR_EEMPTYKEY);
    cr_assert_eq(br_engine_put(e, big, 9, "v", 1), BR_EKEYTOOBIG);
    cr_assert_eq(br_engine_put(e, "k", 1, big, 17), BR_EVALTOOBIG);
    cr_assert_eq(br_engine_put(e, big, 8, big, 16), 0, "exactly at the limits is fine");
    br_batch *b = br_batch_new();
    br_batch_put(b, "ok", 2, "v", 1);
    br_batch_put(b, "bad", 3, big, 17);
    cr_assert_eq(br_engine_write(e, b), BR_EVALTOOBIG);
    expect_absent(e, "ok");
    cr_assert_eq(br_batch_put(b, "", 0, "v", 1), BR_EEMPTYKEY);
    br_batch_free(b);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, 1);
    cr_assert_eq(st.last_seq, 1, "only the one good write reached the log");
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, bad_options_are_refused) {
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 100;
    br_engine *e;
    cr_assert_eq(br_engine_open(dir, &o, &e, NULL, 0), BR_EINVAL);
    cr_assert_null(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, value_larger_than_file_cap_gets_its_own_file) {
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    br_engine *e = open_or_die(dir, &o);
    size_t n = 100000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 13);
    cr_assert_eq(br_engine_put(e, "small", 5, "x", 1), 0);
    cr_assert_eq(br_engine_put(e, "big", 3, big, n), 0);
    cr_assert_eq(br_engine_put(e, "after", 5, "y", 1), 0);
    br_engine_close(e);
    e = open_or_die(dir, &o);
    void *v;
    size_t vl;
    cr_assert_eq(br_engine_get(e, "big", 3, &v, &vl), 0);
    cr_assert_eq(vl, n);
    cr_assert_eq(memcmp(v, big, n), 0);
    free(v);
    expect_value(e, "after", "y");
    br_engine_close(e);
    free(big);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, every_sync_policy_survives_reopen) {
    br_sync_policy pols[] = {BR_SYNC_ALWAYS, BR_SYNC_INTERVAL, BR_SYNC_NEVER};
    for (int p = 0; p < 3; p++) {
        char *dir = tu_tmpdir("engine");
        br_engine_options o;
        br_engine_options_init(&o);
        o.sync = pols[p];
        o.sync_interval_ms = 5;
        br_engine *e = open_or_die(dir, &o);
        for (int i = 0; i < 100; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            cr_assert_eq(br_engine_put(e, k, strlen(k), k, strlen(k)), 0);
        }
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        if (pols[p] == BR_SYNC_ALWAYS)
            cr_assert(st.syncs >= 1 && st.syncs <= 100);
        if (pols[p] == BR_SYNC_NEVER)
            cr_assert_eq(st.syncs, 0, "never means no sync before close");
        cr_assert_eq(br_engine_sync(e), 0);
        br_engine_close(e);
        e = open_or_die(dir, &o);
        expect_value(e, "k99", "k99");
        br_engine_close(e);
        tu_rmrf(dir);
        free(dir);
    }
}

typedef struct collect_ctx {
    char keys[64][16];
    int n;
} collect_ctx;

static int collect_cb(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    collect_ctx *c = ctx;
    (void)val, (void)vlen;
    memcpy(c->keys[c->n], key, klen);
    c->keys[c->n][klen] = 0;
    c->n++;
    return 0;
}

Test(engine, range_is_ordered_and_inclusive) {
    char *dir = tu_tmpdir("engine");
    br_engine *e = open_or_die(dir, NULL);
    const char *ks[] = {"d", "b", "a", "e", "c"};
    for (int i = 0; i < 5; i++)
        br_engine_put(e, ks[i], 1, ks[i], 1);
    collect_ctx c = {.n = 0};
    cr_assert_eq(br_engine_range(e, "b", 1, "d", 1, 0, collect_cb, &c), 0);
    cr_assert_eq(c.n, 3);
    cr_assert_str_eq(c.keys[0], "b");
    cr_assert_str_eq(c.keys[2], "d");
    c.n = 0;
    cr_assert_eq(br_engine_range(e, NULL, 0, NULL, 0, 2, collect_cb, &c), 0);
    cr_assert_eq(c.n, 2);
    cr_assert_str_eq(c.keys[1], "b");
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(engine, iterator_pages_through_a_large_range) {
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.sync = BR_SYNC_NEVER;
    br_engine *e = open_or_die(dir, &o);
    char k[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "%06d", i);
        br_engine_put(e, k, 6, k, 6);
    }
    br_iter *it;
    cr_assert_eq(br_engine_iter(e, "000100", 6, "002999", 6, 0, &it), 0);
    const void *kp, *vp;
    size_t kl, vl;
    int n = 0, rc;
    while ((rc = br_iter_next(it, &kp, &kl, &vp, &vl)) == 1) {
        snprintf(k, sizeof k, "%06d", 100 + n);
        cr_assert_eq(kl, 6);
        cr_assert_eq(memcmp(kp, k, 6), 0, "key %d out of order", n);
        cr_assert_eq(memcmp(vp, k, 6), 0);
        n++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(n, 2900);
    br_iter_free(it);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

/* ---- A failed fdatasync --------------------------------------------------- */

#include "engine/datafile.h"

static int syncs_before_failure;
static int failing_fdatasync(int fd) {
    if (syncs_before_failure-- > 0)
        return fdatasync(fd);
    errno = EIO;
    return -1;
}

Test(engine, failed_sync_fails_the_write_and_makes_the_store_read_only) {
    char *dir = tu_tmpdir("engine");
    br_engine *e = open_or_die(dir, NULL);
    cr_assert_eq(br_engine_put(e, "before", 6, "1", 1), 0);
    syncs_before_failure = 0;
    br_df_fdatasync = failing_fdatasync;
    cr_assert_eq(br_engine_put(e, "lost", 4, "2", 1), -EIO, "a write whose sync fails fails");
    br_df_fdatasync = fdatasync;
    /* What reached the disk is unknown now: no later write may be
     * acknowledged on top of it, but reads go on. */
    cr_assert_eq(br_engine_put(e, "after", 5, "3", 1), -EIO);
    expect_value(e, "before", "1");
    expect_absent(e, "lost");
    cr_assert_neq(br_engine_close(e), 0, "close reports the failure");
    e = open_or_die(dir, NULL);
    expect_value(e, "before", "1");
    expect_absent(e, "after");
    cr_assert_eq(br_engine_put(e, "after", 5, "3", 1), 0, "a reopened store writes again");
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

/* ---- Ranges over cold data ------------------------------------------------ */

#include <dirent.h>
#include <fcntl.h>

static void evict_data_files(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strstr(de->d_name, ".data"))
            continue;
        char *p = tu_path(dir, de->d_name);
        int fd = open(p, O_RDONLY);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
        free(p);
    }
    closedir(d);
}

Test(engine, cold_ranges_with_range_readers_return_every_record) {
    /* The readers only fault pages in; what the iterator returns must be
     * the same, and closing with reads still queued must be safe. */
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 1 << 16;
    o.sync = BR_SYNC_NEVER;
    o.range_readers = 4;
    br_engine *e = open_or_die(dir, &o);
    char k[32], v[512];
    memset(v, 'x', sizeof v);
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "%06d", (i * 7919) % 3000);
        snprintf(v, 16, "%06d", (i * 7919) % 3000);
        cr_assert_eq(br_engine_put(e, k, 6, v, sizeof v), 0);
    }
    br_engine_close(e);
    for (int round = 0; round < 3; round++) {
        sync();
        evict_data_files(dir);
        e = open_or_die(dir, &o);
        br_iter *it;
        cr_assert_eq(br_engine_iter(e, NULL, 0, NULL, 0, round == 2 ? 700 : 0, &it), 0);
        const void *kp, *vp;
        size_t kl, vl;
        int n = 0, rc;
        while ((rc = br_iter_next(it, &kp, &kl, &vp, &vl)) == 1) {
            snprintf(k, sizeof k, "%06d", n);
            cr_assert_eq(memcmp(kp, k, 6), 0);
            cr_assert_eq(vl, sizeof v);
            cr_assert_eq(memcmp(vp, k, 6), 0);
            n++;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(n, round == 2 ? 700 : 3000);
        br_iter_free(it);
        br_engine_close(e);
    }
    tu_rmrf(dir);
    free(dir);
}

Test(engine, failed_seal_at_rollover_fails_the_write_and_the_store_reopens) {
    /* Under sync=never only rollover syncs (sealing the old file): make
     * that fail. The write that needed the new file fails, later writes
     * are refused, reads go on, and a reopened store holds what was
     * acknowledged and takes writes again. */
    char *dir = tu_tmpdir("engine");
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    o.sync = BR_SYNC_NEVER;
    br_engine *e = open_or_die(dir, &o);
    syncs_before_failure = 0;
    br_df_fdatasync = failing_fdatasync;
    char k[16], v[200];
    memset(v, 'v', sizeof v);
    int acked = 0, rc = 0;
    for (; acked < 100; acked++) {
        snprintf(k, sizeof k, "k%03d", acked);
        if ((rc = br_engine_put(e, k, strlen(k), v, sizeof v)) != 0)
            break;
    }
    br_df_fdatasync = fdatasync;
    cr_assert_eq(rc, -EIO, "the write that rolled over must fail: %s", br_strerror(rc));
    cr_assert_gt(acked, 5, "some writes fit in the first file");
    cr_assert_eq(br_engine_put(e, "later", 5, "x", 1), -EIO, "the store is read-only now");
    snprintf(k, sizeof k, "k%03d", 0);
    char got[256];
    size_t gl;
    cr_assert_eq(br_engine_get_into(e, k, strlen(k), got, sizeof got, &gl), 0, "reads go on");
    br_engine_close(e);
    e = open_or_die(dir, &o);
    for (int i = 0; i < acked; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        cr_assert_eq(br_engine_get_into(e, k, strlen(k), got, sizeof got, &gl), 0, "%s lost", k);
        cr_assert_eq(gl, sizeof v);
    }
    cr_assert_eq(br_engine_put(e, "again", 5, "y", 1), 0);
    br_engine_close(e);
    e = open_or_die(dir, &o);
    char y[4];
    cr_assert_eq(br_engine_get_into(e, "again", 5, y, sizeof y, &gl), 0);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}
