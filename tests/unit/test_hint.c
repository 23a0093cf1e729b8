/* test_hint.c - hint files: written for closed files, used at open, and
 * ignored (the data file scanned instead) whenever they do not check out. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "engine/hint.h"
#include "engine/record.h"
#include "testutil.h"

typedef struct logs {
    int warnings;
    char last[512];
} logs;

static void log_cb(void *ctx, br_log_level lvl, const char *msg) {
    logs *l = ctx;
    if (lvl <= BR_LOG_WARN) {
        l->warnings++;
        snprintf(l->last, sizeof l->last, "%s", msg);
    }
}

static br_engine *open_store(const char *dir, logs *l) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    o.compact_dead_pct = 0; /* the tests look at particular files */
    o.sync = BR_SYNC_NEVER;
    o.log = log_cb;
    o.log_ctx = l;
    br_engine *e;
    char err[256] = "";
    int rc = br_engine_open(dir, &o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open: %s (%s)", br_strerror(rc), err);
    return e;
}

/* Fills a store across many files, with overwrites, deletes and batches. */
static void fill(const char *dir) {
    logs l = {0};
    br_engine *e = open_store(dir, &l);
    char k[32], v[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "key%05d", i % 700);
        snprintf(v, sizeof v, "value-%d", i);
        cr_assert_eq(br_engine_put(e, k, strlen(k), v, strlen(v)), 0);
        if (i % 7 == 0)
            br_engine_delete(e, k, strlen(k));
    }
    br_batch *b = br_batch_new();
    br_batch_put(b, "batch-a", 7, "1", 1);
    br_batch_delete(b, "key00003", 8);
    br_batch_put(b, "batch-b", 7, "2", 1);
    cr_assert_eq(br_engine_write(e, b), 0);
    br_batch_free(b);
    for (int i = 0; i < 300; i++) { /* push the batch into a closed file */
        snprintf(k, sizeof k, "tail%04d", i);
        br_engine_put(e, k, strlen(k), k, strlen(k));
    }
    cr_assert_eq(br_engine_close(e), 0);
}

/* Every key, value and figure of the store, as one string. */
typedef struct dump {
    char *s;
    size_t len, cap;
} dump;

static int dump_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl) {
    dump *d = ctx;
    if (d->len + kl + vl + 4 > d->cap) {
        d->cap = (d->cap + kl + vl + 4) * 2;
        d->s = realloc(d->s, d->cap);
    }
    memcpy(d->s + d->len, k, kl);
    d->len += kl;
    d->s[d->len++] = '=';
    memcpy(d->s + d->len, v, vl);
    d->len += vl;
    d->s[d->len++] = '\n';
    return 0;
}

static dump snapshot(const char *dir, logs *l, br_engine_stats *st) {
    br_engine *e = open_store(dir, l);
    dump d = {0};
    cr_assert_eq(br_engine_range(e, NULL, 0, NULL, 0, 0, dump_cb, &d), 0);
    br_engine_stats_get(e, st);
    cr_assert_eq(br_engine_close(e), 0);
    return d;
}

static int count_suffix(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    size_t sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void remove_suffix(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0) {
            char *p = tu_path(dir, de->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
}

static void expect_same(const dump *a, const br_engine_stats *sa, const dump *b,
                        const br_engine_stats *sb, const char *what) {
    cr_assert_eq(a->len, b->len, "%s: contents differ in size", what);
    cr_assert_eq(memcmp(a->s, b->s, a->len), 0, "%s: contents differ", what);
    cr_assert_eq(sa->keys, sb->keys, "%s: keys", what);
    cr_assert_eq(sa->live_bytes, sb->live_bytes, "%s: live bytes", what);
    cr_assert_eq(sa->dead_bytes, sb->dead_bytes, "%s: dead bytes", what);
    cr_assert_eq(sa->last_seq, sb->last_seq, "%s: last sequence number", what);
}

Test(hint, every_closed_file_gets_one_and_open_uses_them) {
    char *dir = tu_tmpdir("hint");
    fill(dir);
    int data = count_suffix(dir, ".data");
    cr_assert(data > 5);
    cr_assert_eq(count_suffix(dir, ".hint"), data - 1, "a hint per closed file after close");
    logs l1 = {0}, l2 = {0};
    br_engine_stats s1, s2;
    dump with = snapshot(dir, &l1, &s1);
    cr_assert_eq(l1.warnings, 0, "valid hints: %s", l1.last);
    remove_suffix(dir, ".hint");
    dump without = snapshot(dir, &l2, &s2);
    expect_same(&with, &s1, &without, &s2, "hints vs scan");
    cr_assert_eq(count_suffix(dir, ".hint"), data - 1,
                 "open queued the missing hints, close wrote them");
    free(with.s);
    free(without.s);
    tu_rmrf(dir);
    free(dir);
}

/* Damages file 1's hint in some way, reopens: the contents must not change,
 * the bad hint must be reported and replaced. */
static void damaged_hint(void (*damage)(const char *path)) {
    char *dir = tu_tmpdir("hint");
    fill(dir);
    logs l0 = {0}, l1 = {0}, l2 = {0};
    br_engine_stats s0, s1, s2;
    dump good = snapshot(dir, &l0, &s0);
    char *p = tu_path(dir, "0000000001.hint");
    damage(p);
    dump after = snapshot(dir, &l1, &s1);
    expect_same(&good, &s0, &after, &s1, "damaged hint");
    cr_assert(l1.warnings > 0, "a damaged hint must be reported");
    cr_assert(strstr(l1.last, "0000000001") != NULL, "report names the file: %s", l1.last);
    dump again = snapshot(dir, &l2, &s2);
    cr_assert_eq(l2.warnings, 0, "the hint was rewritten: %s", l2.last);
    expect_same(&good, &s0, &again, &s2, "rewritten hint");
    free(p);
    free(good.s);
    free(after.s);
    free(again.s);
    tu_rmrf(dir);
    free(dir);
}

static void flip_middle(const char *path) {
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, st.st_size / 2), 1);
    b ^= 0x10;
    cr_assert_eq(pwrite(fd, &b, 1, st.st_size / 2), 1);
    close(fd);
}

static void cut_short(const char *path) {
    struct stat st;
    stat(path, &st);
    cr_assert_eq(truncate(path, st.st_size - 3), 0);
}

/* The first two entries swapped, checksums redone: only the order check
 * can tell (the merge at open relies on sorted hints). */
static void swap_first_entries(const char *path) {
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t *img = malloc((size_t)st.st_size), *tmp = malloc((size_t)st.st_size);
    cr_assert_eq(read(fd, img, (size_t)st.st_size), st.st_size);
    uint8_t *e0 = img + BR_HINT_HEADER_SIZE;
    size_t l0 = BR_HINT_ENTRY_SIZE + (br_get32(e0) & ~BR_HINT_TOMBSTONE);
    size_t l1 = BR_HINT_ENTRY_SIZE + (br_get32(e0 + l0) & ~BR_HINT_TOMBSTONE);
    memcpy(tmp, e0 + l0, l1);
    memcpy(tmp + l1, e0, l0);
    memcpy(e0, tmp, l0 + l1);
    br_put32(img + 40,
             br_checksum(img + BR_HINT_HEADER_SIZE, (size_t)st.st_size - BR_HINT_HEADER_SIZE));
    br_put32(img + 44, br_checksum(img, 44));
    cr_assert_eq(pwrite(fd, img, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    free(img);
    free(tmp);
}

static void wrong_data_size(const char *path) {
    /* A hint made for a longer data file: header checksum redone so only
     * the size check can catch it. */
    int fd = open(path, O_RDWR);
    uint8_t hd[BR_HINT_HEADER_SIZE];
    cr_assert_eq(pread(fd, hd, sizeof hd, 0), (ssize_t)sizeof hd);
    br_put64(hd + 16, br_get64(hd + 16) + 100);
    br_put32(hd + 44, br_checksum(hd, 44));
    cr_assert_eq(pwrite(fd, hd, sizeof hd, 0), (ssize_t)sizeof hd);
    close(fd);
}

Test(hint, flipped_byte_is_ignored) {
    damaged_hint(flip_middle);
}
Test(hint, truncated_hint_is_ignored) {
    damaged_hint(cut_short);
}
Test(hint, hint_for_another_file_size_is_ignored) {
    damaged_hint(wrong_data_size);
}

Test(hint, leftover_tmp_is_removed) {
    char *dir = tu_tmpdir("hint");
    fill(dir);
    char *p = tu_path(dir, "0000000002.hint.tmp");
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    cr_assert(write(fd, "partial", 7) == 7);
    close(fd);
    logs l = {0};
    br_engine_stats st;
    dump d = snapshot(dir, &l, &st);
    cr_assert_eq(access(p, F_OK), -1, "a half-written hint is removed at open");
    free(d.s);
    free(p);
    tu_rmrf(dir);
    free(dir);
}

Test(hint, untruncated_closed_file_gets_a_hint_that_sticks) {
    /* A crash between sealing a file and truncating it leaves zeros after
     * its data. The hint written for it must match it as it is, so that
     * later opens use the hint instead of scanning every time. */
    char *dir = tu_tmpdir("hint");
    fill(dir);
    char *d1 = tu_path(dir, "0000000001.data");
    struct stat st;
    cr_assert_eq(stat(d1, &st), 0);
    cr_assert_eq(truncate(d1, st.st_size + 8192), 0);
    logs l0 = {0}, l1 = {0}, l2 = {0};
    br_engine_stats s0, s1, s2;
    dump first = snapshot(dir, &l0, &s0);
    cr_assert(l0.warnings > 0, "the stale hint is reported");
    dump second = snapshot(dir, &l1, &s1);
    cr_assert_eq(l1.warnings, 0, "the new hint is used: %s", l1.last);
    expect_same(&first, &s0, &second, &s1, "untruncated file");
    dump third = snapshot(dir, &l2, &s2);
    cr_assert_eq(l2.warnings, 0);
    free(first.s);
    free(second.s);
    free(third.s);
    free(d1);
    tu_rmrf(dir);
    free(dir);
}

static uint64_t fake_ms;
static uint64_t fake_clock(void) {
    return fake_ms += 250; /* every reading a quarter second later */
}

static void info_cb(void *ctx, br_log_level lvl, const char *msg) {
    (void)lvl;
    if (strstr(msg, "index rebuilt"))
        snprintf(ctx, 512, "%s", msg);
}

Test(hint, open_logs_its_progress_with_the_callers_clock) {
    char *dir = tu_tmpdir("hint");
    fill(dir);
    char line[512] = "";
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    o.compact_dead_pct = 0; /* the tests look at particular files */
    o.clock_ms = fake_clock;
    o.log = info_cb;
    o.log_ctx = line;
    br_engine *e;
    cr_assert_eq(br_engine_open(dir, &o, &e, NULL, 0), 0);
    cr_assert(strstr(line, "files") && strstr(line, "records") && strstr(line, "MB/s"),
              "progress line: '%s'", line);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(hint, entries_out_of_order_are_ignored) {
    damaged_hint(swap_first_entries);
}
