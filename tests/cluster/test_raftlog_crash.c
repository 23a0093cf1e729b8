/*
 * test_raftlog_crash.c - br_raftlog after crashes and damage: torn tails,
 * unsynced writes lost in any order, stale bytes, corruption in durable
 * data, leftovers of interrupted operations, kill -9.
 *
 * A crash is simulated by copying the directory (what the page cache
 * holds) and then damaging the copy the way a power loss could: bytes
 * written after the last sync are lost, wholly or in part, in any order.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bitraft/error.h"
#include "test_raftlog_util.h"

#define REC_HDR 40u /* record header size (raftlog.c) */

TestSuite(raftlog_crash, .init = rlt_dir_make, .fini = rlt_dir_remove);

static void check_range(br_raftlog *log, uint64_t lo, uint64_t hi, uint64_t term) {
    for (uint64_t i = lo; i <= hi; i++)
        rlt_check_entry(log, i, term);
}

static char *sub(const char *dir, const char *name) {
    return tu_path(dir, name);
}

/* Newest segment's name, write offset and durable offset. */
static void newest(br_raftlog *log, char name[64], uint64_t *size, uint64_t *durable) {
    struct br_raftlog_stats st;
    br_raftlog_stats(log, &st);
    memcpy(name, st.active_name, 64);
    if (size)
        *size = st.active_size;
    if (durable)
        *durable = st.active_durable;
}

/* ------------------------------------------------------------ torn tails */

static bool all_of_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/*
 * The last record (an entry, or a hard state) cut at every byte offset, or
 * with any one byte garbled: the reopened log holds everything before it,
 * and can be appended to.
 */
static void torn_every_offset(bool hard_state_last) {
    char *img = sub(rlt_dir, "image"), *work = sub(rlt_dir, "work");
    br_raftlog *log = rlt_open(img, 16 << 10);
    rlt_append_range(log, 1, 50, 1);
    struct br_raft_hard_state hs1 = {.term = 1, .vote = 1, .commit = 40};
    cr_assert_eq(br_raftlog_set_hard_state(log, &hs1), 0);
    cr_assert_eq(br_raftlog_sync(log, NULL), 0);
    char name[64];
    uint64_t s0, s1;
    newest(log, name, &s0, NULL);
    struct br_raft_hard_state hs2 = {.term = 2, .vote = 3, .commit = 50};
    if (hard_state_last)
        cr_assert_eq(br_raftlog_set_hard_state(log, &hs2), 0);
    else
        rlt_append_range(log, 51, 51, 1);
    newest(log, name, &s1, NULL);
    cr_assert_gt(s1, s0 + REC_HDR - 1);
    rlt_copy_dir(img, work); /* holds the whole last record */
    cr_assert_eq(br_raftlog_close(log), 0);
    uint8_t rec[512];
    rlt_pread(img, name, rec, (size_t)(s1 - s0), s0);

    for (uint64_t k = s0; k < s1; k++) {
        for (int garble = 0; garble < 2; garble++) {
            tu_rmrf(work);
            rlt_copy_dir(img, work);
            if (garble) {
                uint8_t b = rec[k - s0] ^ 0x5a;
                rlt_pwrite(work, name, &b, 1, k);
            } else {
                rlt_zero(work, name, k, s1 - k);
            }
            rlt_warns = 0;
            log = rlt_open(work, 16 << 10);
            struct br_raft_hard_state hs;
            br_raftlog_hard_state(log, &hs);
            uint64_t last = br_raftlog_last_index(log);
            /* A cut that only zeroes bytes that were zero keeps the record. */
            bool kept = !garble && all_of_zero(rec + (k - s0), (size_t)(s1 - k));
            if (hard_state_last) {
                cr_assert_eq(last, 50);
                cr_assert_eq(hs.term, kept ? 2 : 1, "offset %llu garble %d", (unsigned long long)k,
                             garble);
            } else {
                cr_assert_eq(last, kept ? 51 : 50, "offset %llu garble %d: last %llu",
                             (unsigned long long)k, garble, (unsigned long long)last);
                cr_assert_eq(hs.term, 1);
            }
            if (!kept && (garble || k > s0))
                cr_assert_gt(rlt_warns, 0, "a torn tail is logged");
            check_range(log, 1, 50, 1);
            if (k % 16 == 0) {
                /* The cut log takes appends, and they survive a reopen. */
                rlt_append_range(log, last + 1, last + 3, 2);
                log = rlt_reopen(log, work, 16 << 10);
                cr_assert_eq(br_raftlog_last_index(log), last + 3);
                check_range(log, last + 1, last + 3, 2);
            }
            cr_assert_eq(br_raftlog_close(log), 0);
        }
    }
    free(img);
    free(work);
}

Test(raftlog_crash, torn_entry_at_every_byte_offset) {
    torn_every_offset(false);
}

Test(raftlog_crash, torn_hard_state_at_every_byte_offset) {
    torn_every_offset(true);
}

/* ------------------------------------------------------------ corruption */

Test(raftlog_crash, corruption_in_an_older_segment_is_an_error_naming_it) {
    br_raftlog *log = rlt_open(rlt_dir, 4096);
    rlt_append_range(log, 1, 500, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
    char **names;
    size_t n = rlt_segments(rlt_dir, &names);
    cr_assert_gt(n, 5);
    const char *victim = names[2];
    uint8_t b;
    rlt_pread(rlt_dir, victim, &b, 1, 1000);
    b ^= 0x01;
    rlt_pwrite(rlt_dir, victim, &b, 1, 1000);
    char err[512];
    cr_assert_eq(rlt_open_err(rlt_dir, 4096, err, sizeof err), BR_ECORRUPT);
    cr_assert(strstr(err, victim) != NULL, "%s", err);
    cr_assert(strstr(err, "offset") != NULL, "%s", err);
    /* Nothing was changed by the failed open: fixing the byte fixes it. */
    b ^= 0x01;
    rlt_pwrite(rlt_dir, victim, &b, 1, 1000);
    log = rlt_open(rlt_dir, 4096);
    check_range(log, 1, 500, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
    /* A sealed segment cut short, or with a bad header, is corrupt too. */
    uint64_t size = rlt_file_size(rlt_dir, victim);
    char *p = tu_path(rlt_dir, victim);
    cr_assert_eq(truncate(p, (off_t)(size - 7)), 0);
    cr_assert_eq(rlt_open_err(rlt_dir, 4096, err, sizeof err), BR_ECORRUPT);
    cr_assert(strstr(err, victim) != NULL, "%s", err);
    uint8_t h = 'X';
    rlt_pwrite(rlt_dir, names[1], &h, 1, 3);
    cr_assert_eq(rlt_open_err(rlt_dir, 4096, err, sizeof err), BR_ECORRUPT);
    cr_assert(strstr(err, names[1]) != NULL, "%s", err);
    free(p);
    rlt_free_names(names, n);
}

Test(raftlog_crash, corruption_of_synced_records_in_the_newest_segment_is_an_error) {
    br_raftlog *log = rlt_open(rlt_dir, 1 << 20);
    rlt_append_range(log, 1, 49, 1);
    char name[64];
    uint64_t off50;
    newest(log, name, &off50, NULL);
    rlt_append_range(log, 50, 100, 1);
    cr_assert_eq(br_raftlog_sync(log, NULL), 0);
    rlt_append_range(log, 101, 110, 1); /* written after 50 was synced */
    cr_assert_eq(br_raftlog_close(log), 0);
    uint8_t b;
    rlt_pread(rlt_dir, name, &b, 1, off50 + 20);
    b ^= 0x80;
    rlt_pwrite(rlt_dir, name, &b, 1, off50 + 20);
    char err[512];
    cr_assert_eq(rlt_open_err(rlt_dir, 1 << 20, err, sizeof err), BR_ECORRUPT);
    cr_assert(strstr(err, name) != NULL, "%s", err);
    char want[64];
    snprintf(want, sizeof want, "offset %llu", (unsigned long long)off50);
    cr_assert(strstr(err, want) != NULL, "%s", err);
}

Test(raftlog_crash, a_missing_segment_is_an_error) {
    br_raftlog *log = rlt_open(rlt_dir, 4096);
    rlt_append_range(log, 1, 500, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
    char **names;
    size_t n = rlt_segments(rlt_dir, &names);
    char *p = tu_path(rlt_dir, names[3]);
    cr_assert_eq(unlink(p), 0);
    free(p);
    char err[512];
    cr_assert_eq(rlt_open_err(rlt_dir, 4096, err, sizeof err), BR_ECORRUPT);
    cr_assert(strstr(err, names[4]) != NULL, "%s", err);
    cr_assert(strstr(err, "missing") != NULL, "%s", err);
    /* The first one missing: the log would start after index 1. */
    p = tu_path(rlt_dir, names[0]);
    cr_assert_eq(unlink(p), 0);
    free(p);
    cr_assert_eq(rlt_open_err(rlt_dir, 4096, err, sizeof err), BR_ECORRUPT);
    rlt_free_names(names, n);
}

/* ------------------------------------------------------------ stale bytes */

/* A log in rlt_dir/image (*img; *work is rlt_dir/work, both malloc'd) of
 * entries 1..10 in term 1, synced; name and *end: its newest segment and
 * that segment's write offset. */
static br_raftlog *ten_synced(char **img, char **work, char name[64], uint64_t *end) {
    *img = sub(rlt_dir, "image");
    *work = sub(rlt_dir, "work");
    br_raftlog *log = rlt_open(*img, 1 << 20);
    rlt_append_range(log, 1, 10, 1);
    cr_assert_eq(br_raftlog_sync(log, NULL), 0);
    newest(log, name, end, NULL);
    return log;
}

/*
 * Writes after a sync reach the disk out of order: entry 11's bytes are
 * lost but 12..20 (never synced) made it. Open cuts at 11 and zeroes the
 * rest. A new entry 11 of the same size lands where the old one was; if
 * the old 12..20 were still behind it, they would be read back after a
 * second crash as if they followed the new 11.
 */
static void stale_after_cut(uint64_t new_term) {
    char *img, *work, name[64];
    uint64_t off11;
    br_raftlog *log = ten_synced(&img, &work, name, &off11);
    rlt_append_range(log, 11, 20, 1);
    rlt_copy_dir(img, work);
    cr_assert_eq(br_raftlog_close(log), 0);
    rlt_zero(work, name, off11 + 8, 4); /* entry 11 never fully reached the disk */

    rlt_warns = 0;
    log = rlt_open(work, 1 << 20);
    cr_assert_eq(br_raftlog_last_index(log), 10);
    cr_assert_eq(rlt_warns, 1, "%s", rlt_last_warn);
    rlt_append_range(log, 11, 11, new_term); /* same length as the old 11 */
    cr_assert_eq(br_raftlog_sync(log, NULL), 0);
    char *img2 = sub(rlt_dir, "image2");
    rlt_copy_dir(work, img2); /* crash right after the sync */
    log = rlt_reopen(log, img2, 1 << 20);
    cr_assert_eq(br_raftlog_last_index(log), 11);
    rlt_check_entry(log, 11, new_term);
    check_range(log, 1, 10, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
    free(img);
    free(img2);
    free(work);
}

Test(raftlog_crash, stale_records_never_follow_the_new_end_same_term) {
    stale_after_cut(1);
}

Test(raftlog_crash, stale_records_never_follow_the_new_end_new_term) {
    stale_after_cut(2);
}

/*
 * A conflicting append that was not synced, with its records reaching
 * the disk in any subset: the log after the crash is the old log or the
 * new one cut after a whole prefix of the new records, never a mix.
 */
Test(raftlog_crash, unsynced_conflict_lost_in_any_order_never_mixes) {
    char *img, *work, name[64];
    uint64_t o6;
    br_raftlog *log = ten_synced(&img, &work, name, &o6);
    rlt_append_range(log, 6, 8, 2); /* replaces 6..10 by 6'..8' */
    uint64_t end;
    newest(log, name, &end, NULL);
    rlt_copy_dir(img, work);
    cr_assert_eq(br_raftlog_close(log), 0);
    uint64_t o7 = o6 + REC_HDR + rlt_len(6), o8 = o7 + REC_HDR + rlt_len(7);
    cr_assert_eq(o8 + REC_HDR + rlt_len(8), end);
    uint64_t offs[3] = {o6, o7, o8};
    char *img_copy = sub(rlt_dir, "pristine");
    rlt_copy_dir(work, img_copy);
    for (int mask = 0; mask < 8; mask++) { /* bit k: record k reached the disk */
        tu_rmrf(work);
        rlt_copy_dir(img_copy, work);
        for (int k = 0; k < 3; k++)
            if (!(mask & (1 << k)))
                rlt_zero(work, name, offs[k], REC_HDR / 2); /* lost (partly) */
        log = rlt_open(work, 1 << 20);
        int prefix = 0;
        while (prefix < 3 && (mask & (1 << prefix)))
            prefix++;
        if (prefix == 0) {
            cr_assert_eq(br_raftlog_last_index(log), 10, "mask %d", mask);
            check_range(log, 1, 10, 1);
        } else {
            cr_assert_eq(br_raftlog_last_index(log), 5 + (uint64_t)prefix, "mask %d", mask);
            check_range(log, 1, 5, 1);
            check_range(log, 6, 5 + (uint64_t)prefix, 2);
        }
        cr_assert_eq(br_raftlog_close(log), 0);
    }
    free(img);
    free(img_copy);
    free(work);
}

/* ------------------------------------------------------------ leftovers */

/* Entries 1..1000 (term 1, synced) in a log in rlt_dir/log, whose files are
 * then copied to rlt_dir/old (both paths malloc'd); returns the open log. */
static br_raftlog *log_with_old_copy(char **dir, char **old) {
    *dir = sub(rlt_dir, "log");
    *old = sub(rlt_dir, "old");
    br_raftlog *log = rlt_open(*dir, 4096);
    rlt_append_range(log, 1, 1000, 1);
    cr_assert_eq(br_raftlog_sync(log, NULL), 0);
    rlt_copy_dir(*dir, *old);
    return log;
}

Test(raftlog_crash, segments_a_conflict_replaced_are_ignored_if_their_deletion_was_lost) {
    char *dir, *old;
    br_raftlog *log = log_with_old_copy(&dir, &old);
    rlt_append_range(log, 300, 320, 2);
    cr_assert_eq(br_raftlog_close(log), 0);
    char **before, **after;
    size_t nb = rlt_segments(old, &before), na = rlt_segments(dir, &after);
    cr_assert_lt(na, nb);
    rlt_free_names(after, na);
    /* Every unlink undone. The old image's newest segment is left out: it
     * was sealed (truncated and synced) before the new one existed, so
     * its unsealed copy in the image never coexists with the new one. */
    for (size_t i = 0; i + 1 < nb; i++) {
        char *from = tu_path(old, before[i]), *to = tu_path(dir, before[i]);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cp -n '%s' '%s'", from, to);
        cr_assert_eq(system(cmd), 0);
        free(from);
        free(to);
    }
    size_t nmid = rlt_segments(dir, &after);
    rlt_free_names(after, nmid);
    cr_assert_gt(nmid, na);
    log = rlt_open(dir, 4096);
    cr_assert_eq(br_raftlog_last_index(log), 320);
    check_range(log, 1, 299, 1);
    check_range(log, 300, 320, 2);
    cr_assert_eq(br_raftlog_close(log), 0);
    size_t nend = rlt_segments(dir, &after);
    cr_assert_eq(nend, na, "open deletes the superseded segments again");
    rlt_free_names(after, nend);
    rlt_free_names(before, nb);
    free(dir);
    free(old);
}

Test(raftlog_crash, an_interrupted_snapshot_install_is_finished_on_open) {
    char *dir, *old;
    br_raftlog *log = log_with_old_copy(&dir, &old);
    struct br_raft_snapshot_meta m = {
        .index = 700, .term = 5, .conf = {.n_voters = 1, .voters = {7}}};
    cr_assert_eq(br_raftlog_apply_snapshot(log, &m), 0);
    cr_assert_eq(br_raftlog_close(log), 0);
    rlt_copy_dir(old, dir); /* the old segments' deletion never happened */
    /* and a creation that never got renamed */
    rlt_pwrite(dir, "00000000000000000002-00000000000000099999.seg.tmp", "junk", 4, 0);
    log = rlt_open(dir, 4096);
    cr_assert_eq(br_raftlog_first_index(log), 701);
    cr_assert_eq(br_raftlog_last_index(log), 700);
    uint64_t t;
    cr_assert_eq(br_raftlog_term(log, 700, &t), 0);
    cr_assert_eq(t, 5);
    struct br_raft_conf_state c;
    br_raftlog_conf(log, &c);
    cr_assert_eq(c.voters[0], 7);
    cr_assert_eq(br_raftlog_close(log), 0);
    char **names;
    size_t n = rlt_segments(dir, &names);
    cr_assert_eq(n, 1);
    rlt_free_names(names, n);
    char *tmp = tu_path(dir, "00000000000000000002-00000000000000099999.seg.tmp");
    cr_assert(access(tmp, F_OK) != 0, "the .tmp was removed");
    free(tmp);
    free(dir);
    free(old);
}

/* ------------------------------------------------------------ kill -9 */

/* What a child reports after each successful sync. */
struct report {
    uint64_t last_index, last_term, hs_term;
};

struct child_sync {
    br_raftlog *log;
    int fd;
};

static void *child_syncer(void *arg) {
    struct child_sync *cs = arg;
    for (;;) {
        struct br_raftlog_durable d;
        if (br_raftlog_sync(cs->log, &d) != 0)
            _exit(3);
        struct report r = {d.last_index, d.last_term, d.hs.term};
        if (write(cs->fd, &r, sizeof r) != (ssize_t)sizeof r)
            _exit(4);
    }
    return NULL;
}

/* The child: appends and syncs until killed, reporting what each sync
 * covered. With a worker, syncs run on another thread (group commit). */
static void child(const char *dir, int fd, uint64_t term, bool worker, uint64_t seed) {
    struct br_raftlog_options o;
    br_raftlog_options_init(&o);
    o.segment_size = 64 << 10;
    br_raftlog *log;
    if (br_raftlog_open(dir, &o, &log, NULL, 0) != 0)
        _exit(2);
    struct br_raft_hard_state hs = {.term = term, .vote = 1};
    if (br_raftlog_set_hard_state(log, &hs) != 0)
        _exit(2);
    if (worker) {
        static struct child_sync cs;
        cs = (struct child_sync){log, fd};
        pthread_t th;
        if (pthread_create(&th, NULL, child_syncer, &cs) != 0)
            _exit(2);
    }
    static uint8_t bufs[64][300];
    for (;;) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = 1 + (size_t)((seed >> 33) % 64);
        uint64_t last = br_raftlog_last_index(log);
        struct br_raft_entry e[64];
        for (size_t k = 0; k < n; k++)
            rlt_entry(&e[k], last + 1 + k, term, bufs[k]);
        if (br_raftlog_append(log, e, n) != 0)
            _exit(5);
        hs.commit = last;
        if (br_raftlog_set_hard_state(log, &hs) != 0)
            _exit(5);
        if (!worker) {
            struct br_raftlog_durable d;
            if (br_raftlog_sync(log, &d) != 0)
                _exit(3);
            struct report r = {d.last_index, d.last_term, d.hs.term};
            if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
                _exit(4);
        }
    }
}

Test(raftlog_crash, kill_9_during_append_and_sync_loses_nothing_synced, .timeout = 600) {
    const char *env = getenv("BR_TEST_LONG");
    int rounds = env && *env && strcmp(env, "0") != 0 ? 400 : 40;
    uint64_t seed = (uint64_t)time(NULL);
    int killed_with_reports = 0;
    for (int round = 0; round < rounds; round++) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        uint64_t term = (uint64_t)round + 1;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child(rlt_dir, p[1], term, round % 2 == 1, seed);
            _exit(0);
        }
        close(p[1]);
        struct timespec ts = {0, (long)(1 + (seed >> 40) % 120) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status), "child exited with %d before the kill",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        struct report r = {0}, x;
        bool any = false;
        while (read(p[0], &x, sizeof x) == (ssize_t)sizeof x) {
            cr_assert_geq(x.hs_term, r.hs_term);
            r = x;
            any = true;
        }
        close(p[0]);
        killed_with_reports += any;

        br_raftlog *log = rlt_open(rlt_dir, 64 << 10);
        uint64_t last = br_raftlog_last_index(log);
        struct br_raft_hard_state hs;
        br_raftlog_hard_state(log, &hs);
        cr_assert_geq(last, r.last_index, "round %d: synced up to %llu, found %llu", round,
                      (unsigned long long)r.last_index, (unsigned long long)last);
        cr_assert_geq(hs.term, r.hs_term, "round %d: term went back", round);
        if (any && r.last_index > 0) {
            uint64_t t;
            cr_assert_eq(br_raftlog_term(log, r.last_index, &t), 0);
            cr_assert_eq(t, r.last_term);
        }
        /* Every entry is whole, with the content its index and term give. */
        uint64_t prev = 0;
        for (uint64_t i = br_raftlog_first_index(log); i <= last; i++) {
            uint64_t t;
            cr_assert_eq(br_raftlog_term(log, i, &t), 0);
            cr_assert_geq(t, prev);
            prev = t;
            rlt_check_entry(log, i, t);
        }
        cr_assert_eq(br_raftlog_close(log), 0);
    }
    cr_assert_gt(killed_with_reports, rounds / 4, "too few rounds got as far as a sync");
}
