/*
 * test_raftlog.c - br_raftlog: what the raft core and the node rely on.
 *
 * Crash and damage scenarios are in test_raftlog_crash.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitraft/error.h"
#include "test_raftlog_util.h"

#define SMALL 4096u /* the smallest segment: many segments from few entries */

TestSuite(raftlog, .init = rlt_dir_make, .fini = rlt_dir_remove);

static void check_range(br_raftlog *log, uint64_t lo, uint64_t hi, uint64_t term) {
    for (uint64_t i = lo; i <= hi; i++)
        rlt_check_entry(log, i, term);
}

Test(raftlog, empty_log_and_reopen) {
    br_raftlog *log = rlt_open(rlt_dir, 0);
    cr_assert_eq(br_raftlog_first_index(log), 1);
    cr_assert_eq(br_raftlog_last_index(log), 0);
    uint64_t t = 99;
    cr_assert_eq(br_raftlog_term(log, 0, &t), 0);
    cr_assert_eq(t, 0);
    struct br_raftlog_stats st;
    br_raftlog_stats(log, &st);
    cr_assert_eq(st.segments, 1);
    log = rlt_reopen(log, rlt_dir, 0);
    cr_assert_eq(br_raftlog_last_index(log), 0);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, append_read_back_across_segments_and_reopen) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    rlt_append_range(log, 1, 3000, 1);
    rlt_append_range(log, 3001, 5000, 2);
    cr_assert_eq(br_raftlog_last_index(log), 5000);
    check_range(log, 1, 3000, 1);
    check_range(log, 3001, 5000, 2);
    struct br_raftlog_stats st;
    br_raftlog_stats(log, &st);
    cr_assert_gt(st.segments, 50, "segments: %llu", (unsigned long long)st.segments);
    /* entries() honours max_bytes but always returns one. */
    const struct br_raft_storage *s = br_raftlog_storage(log);
    struct br_raft_entry e[100];
    size_t n;
    cr_assert_eq(s->entries(s->ctx, 10, 110, 0, e, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(s->entries(s->ctx, 10, 110, UINT64_MAX, e, &n), 0);
    cr_assert_eq(n, 100);
    cr_assert_eq(s->entries(s->ctx, 4990, 5002, UINT64_MAX, e, &n), BR_EINVAL);
    log = rlt_reopen(log, rlt_dir, SMALL);
    cr_assert_eq(br_raftlog_first_index(log), 1);
    cr_assert_eq(br_raftlog_last_index(log), 5000);
    check_range(log, 1, 3000, 1);
    check_range(log, 3001, 5000, 2);
    /* Appending after a reopen continues the same log. */
    rlt_append_range(log, 5001, 5100, 3);
    log = rlt_reopen(log, rlt_dir, 1 << 20); /* another segment size works too */
    check_range(log, 4990, 5000, 2);
    check_range(log, 5001, 5100, 3);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, large_entries_and_default_segment) {
    br_raftlog *log = rlt_open(rlt_dir, 64 << 10);
    static uint8_t big[60000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    for (uint64_t i = 1; i <= 20; i++) {
        struct br_raft_entry e = {.term = 1, .index = i, .len = sizeof big, .data = big};
        cr_assert_eq(br_raftlog_append(log, &e, 1), 0);
    }
    /* One that cannot fit in a segment. */
    static uint8_t huge[70000];
    struct br_raft_entry h = {.term = 1, .index = 21, .len = sizeof huge, .data = huge};
    cr_assert_eq(br_raftlog_append(log, &h, 1), BR_ETOOBIG);
    log = rlt_reopen(log, rlt_dir, 64 << 10);
    const struct br_raft_storage *s = br_raftlog_storage(log);
    for (uint64_t i = 1; i <= 20; i++) {
        struct br_raft_entry e;
        size_t n;
        cr_assert_eq(s->entries(s->ctx, i, i + 1, 0, &e, &n), 0);
        cr_assert_eq(e.len, sizeof big);
        cr_assert(memcmp(e.data, big, sizeof big) == 0);
    }
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, hard_state_and_conf_persist) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    struct br_raft_conf_state conf = {
        .n_voters = 3, .voters = {1, 2, 3}, .n_learners = 1, .learners = {9}};
    cr_assert_eq(br_raftlog_set_conf(log, &conf), 0);
    for (uint64_t t = 1; t <= 500; t++) {
        struct br_raft_hard_state hs = {.term = t, .vote = t % 3 + 1, .commit = 0};
        cr_assert_eq(br_raftlog_set_hard_state(log, &hs), 0);
        if (t % 50 == 0)
            rlt_append_range(log, br_raftlog_last_index(log) + 1, br_raftlog_last_index(log) + 30,
                             t);
    }
    /* Terms never go backwards. */
    struct br_raft_hard_state back = {.term = 7, .vote = 1};
    cr_assert_eq(br_raftlog_set_hard_state(log, &back), BR_EINVAL);
    struct br_raftlog_durable d;
    cr_assert_eq(br_raftlog_sync(log, &d), 0);
    cr_assert_eq(d.hs.term, 500);
    cr_assert_eq(d.hs.vote, 500 % 3 + 1);
    cr_assert_eq(d.last_index, 300);
    cr_assert_eq(d.last_term, 500);
    cr_assert_eq(d.conf.n_voters, 3);
    struct br_raftlog_stats st;
    br_raftlog_stats(log, &st);
    cr_assert_gt(st.segments, 3); /* hard states roll segments over too */
    log = rlt_reopen(log, rlt_dir, SMALL);
    const struct br_raft_storage *s = br_raftlog_storage(log);
    struct br_raft_hard_state hs;
    struct br_raft_conf_state c;
    cr_assert_eq(s->initial_state(s->ctx, &hs, &c), 0);
    cr_assert_eq(hs.term, 500);
    cr_assert_eq(hs.vote, 500 % 3 + 1);
    cr_assert_eq(c.n_voters, 3);
    cr_assert_eq(c.voters[2], 3);
    cr_assert_eq(c.n_learners, 1);
    cr_assert_eq(c.learners[0], 9);
    /* Commit moves within a term; a new conf replaces the old one. */
    struct br_raft_hard_state hs2 = {.term = 500, .vote = hs.vote, .commit = 250};
    cr_assert_eq(br_raftlog_set_hard_state(log, &hs2), 0);
    struct br_raft_conf_state conf2 = {.n_voters = 1, .voters = {4}};
    cr_assert_eq(br_raftlog_set_conf(log, &conf2), 0);
    log = rlt_reopen(log, rlt_dir, SMALL);
    br_raftlog_hard_state(log, &hs);
    br_raftlog_conf(log, &c);
    cr_assert_eq(hs.commit, 250);
    cr_assert_eq(c.n_voters, 1);
    cr_assert_eq(c.voters[0], 4);
    cr_assert_eq(c.n_learners, 0);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, truncate_on_conflict_in_newest_segment) {
    br_raftlog *log = rlt_open(rlt_dir, 0);
    rlt_append_range(log, 1, 100, 1);
    rlt_append_range(log, 60, 80, 2); /* replaces 60..100 */
    cr_assert_eq(br_raftlog_last_index(log), 80);
    check_range(log, 1, 59, 1);
    check_range(log, 60, 80, 2);
    rlt_append_range(log, 81, 90, 2);
    rlt_append_range(log, 70, 70, 3); /* again, shorter */
    cr_assert_eq(br_raftlog_last_index(log), 70);
    log = rlt_reopen(log, rlt_dir, 0);
    cr_assert_eq(br_raftlog_last_index(log), 70);
    check_range(log, 1, 59, 1);
    check_range(log, 60, 69, 2);
    rlt_check_entry(log, 70, 3);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, truncate_on_conflict_across_segments) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    rlt_append_range(log, 1, 2000, 1);
    char **names;
    size_t before = rlt_segments(rlt_dir, &names);
    rlt_free_names(names, before);
    /* The conflict reaches back many segments. */
    rlt_append_range(log, 500, 520, 2);
    cr_assert_eq(br_raftlog_last_index(log), 520);
    check_range(log, 1, 499, 1);
    check_range(log, 500, 520, 2);
    size_t after = rlt_segments(rlt_dir, &names);
    rlt_free_names(names, after);
    cr_assert_lt(after, before / 2, "segments past the conflict are deleted (%zu -> %zu)", before,
                 after);
    /* And once more at exactly the same index, then at a lower one. */
    rlt_append_range(log, 500, 510, 3);
    rlt_append_range(log, 300, 310, 4);
    log = rlt_reopen(log, rlt_dir, SMALL);
    cr_assert_eq(br_raftlog_last_index(log), 310);
    check_range(log, 1, 299, 1);
    check_range(log, 300, 310, 4);
    rlt_append_range(log, 311, 400, 4);
    log = rlt_reopen(log, rlt_dir, SMALL);
    check_range(log, 300, 400, 4);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, bad_appends_change_nothing) {
    br_raftlog *log = rlt_open(rlt_dir, 0);
    rlt_append_range(log, 1, 10, 5);
    uint8_t b[300];
    struct br_raft_entry e[2];
    rlt_entry(&e[0], 12, 5, b); /* a gap */
    cr_assert_eq(br_raftlog_append(log, e, 1), BR_EINVAL);
    rlt_entry(&e[0], 11, 4, b); /* term goes down */
    cr_assert_eq(br_raftlog_append(log, e, 1), BR_EINVAL);
    rlt_entry(&e[0], 11, 5, b);
    rlt_entry(&e[1], 13, 5, b); /* not consecutive */
    cr_assert_eq(br_raftlog_append(log, e, 2), BR_EINVAL);
    rlt_entry(&e[0], 11, 6, b);
    rlt_entry(&e[1], 12, 5, b); /* term goes down inside the batch */
    cr_assert_eq(br_raftlog_append(log, e, 2), BR_EINVAL);
    rlt_entry(&e[0], 11, 5, b);
    e[0].type = 300;
    cr_assert_eq(br_raftlog_append(log, e, 1), BR_EINVAL);
    cr_assert_eq(br_raftlog_last_index(log), 10);
    check_range(log, 1, 10, 5);
    cr_assert_eq(br_raftlog_append(log, NULL, 0), 0);
    /* Compaction and snapshot bounds. */
    struct br_raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    cr_assert_eq(br_raftlog_compact(log, 5), BR_EINVAL); /* no snapshot covers it */
    cr_assert_eq(br_raftlog_set_snapshot(log, 11, &conf), BR_EINVAL);
    cr_assert_eq(br_raftlog_set_snapshot(log, 6, &conf), 0);
    cr_assert_eq(br_raftlog_set_snapshot(log, 5, &conf), BR_EINVAL);
    cr_assert_eq(br_raftlog_compact(log, 7), BR_EINVAL);
    cr_assert_eq(br_raftlog_compact(log, 6), 0);
    cr_assert_eq(br_raftlog_bootstrap(log, &conf), BR_EINVAL); /* not empty */
    uint64_t t;
    cr_assert_eq(br_raftlog_term(log, 5, &t), BR_EINVAL);
    cr_assert_eq(br_raftlog_term(log, 11, &t), BR_EINVAL);
    cr_assert_eq(br_raftlog_term(log, 6, &t), 0);
    cr_assert_eq(t, 5);
    struct br_raft_snapshot_meta old = {.index = 3, .term = 5, .conf = conf};
    cr_assert_eq(br_raftlog_apply_snapshot(log, &old), BR_EINVAL);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, second_opener_is_locked_out) {
    br_raftlog *log = rlt_open(rlt_dir, 0);
    char err[256];
    cr_assert_eq(rlt_open_err(rlt_dir, 0, err, sizeof err), BR_ELOCKED);
    cr_assert(strstr(err, "LOCK") != NULL, "%s", err);
    cr_assert_eq(br_raftlog_close(log), 0);
    cr_assert_eq(rlt_open_err(rlt_dir, 0, err, sizeof err), 0);
    cr_assert_eq(rlt_open_err(rlt_dir, 100, err, sizeof err), BR_EINVAL);
}

Test(raftlog, compaction_deletes_segments_behind_the_snapshot) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    rlt_append_range(log, 1, 3000, 1);
    struct br_raftlog_stats st;
    br_raftlog_stats(log, &st);
    uint64_t before = st.segments;
    struct br_raft_conf_state conf = {.n_voters = 3, .voters = {1, 2, 3}};
    cr_assert_eq(br_raftlog_set_snapshot(log, 2000, &conf), 0);
    cr_assert_eq(br_raftlog_compact(log, 1900), 0);
    cr_assert_eq(br_raftlog_first_index(log), 1901);
    uint64_t t;
    cr_assert_eq(br_raftlog_term(log, 1900, &t), 0);
    cr_assert_eq(t, 1);
    br_raftlog_stats(log, &st);
    cr_assert_lt(st.segments, before / 2, "%llu -> %llu", (unsigned long long)before,
                 (unsigned long long)st.segments);
    char **names;
    size_t nfiles = rlt_segments(rlt_dir, &names);
    rlt_free_names(names, nfiles);
    cr_assert_eq(nfiles, st.segments);
    check_range(log, 1901, 3000, 1);
    log = rlt_reopen(log, rlt_dir, SMALL);
    /* It may start a little earlier (a segment boundary), never later. */
    cr_assert_leq(br_raftlog_first_index(log), 1901);
    cr_assert_gt(br_raftlog_first_index(log), 1700);
    check_range(log, 1901, 3000, 1);
    struct br_raft_snapshot_meta m;
    br_raftlog_snapshot(log, &m);
    cr_assert_eq(m.index, 2000);
    cr_assert_eq(m.term, 1);
    cr_assert_eq(m.conf.n_voters, 3);
    /* Compacting everything keeps only the newest segment. */
    cr_assert_eq(br_raftlog_set_snapshot(log, 3000, &conf), 0);
    cr_assert_eq(br_raftlog_compact(log, 3000), 0);
    cr_assert_eq(br_raftlog_first_index(log), 3001);
    cr_assert_eq(br_raftlog_last_index(log), 3000);
    br_raftlog_stats(log, &st);
    cr_assert_eq(st.segments, 1);
    rlt_append_range(log, 3001, 3100, 2);
    log = rlt_reopen(log, rlt_dir, SMALL);
    cr_assert_leq(br_raftlog_first_index(log), 3001);
    check_range(log, 3001, 3100, 2);
    cr_assert_eq(br_raftlog_term(log, 3000, &t), 0);
    cr_assert_eq(t, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, apply_snapshot_replaces_the_log_and_survives_reopen) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    rlt_append_range(log, 1, 1000, 1);
    struct br_raft_hard_state hs = {.term = 3, .vote = 2, .commit = 900};
    cr_assert_eq(br_raftlog_set_hard_state(log, &hs), 0);
    struct br_raft_snapshot_meta m = {
        .index = 5000, .term = 3, .conf = {.n_voters = 2, .voters = {2, 5}}};
    cr_assert_eq(br_raftlog_apply_snapshot(log, &m), 0);
    cr_assert_eq(br_raftlog_first_index(log), 5001);
    cr_assert_eq(br_raftlog_last_index(log), 5000);
    char **names;
    size_t nf = rlt_segments(rlt_dir, &names);
    rlt_free_names(names, nf);
    cr_assert_eq(nf, 1);
    /* Durable on return: the coverage says so. */
    struct br_raftlog_durable d;
    br_raftlog_durable(log, &d);
    cr_assert_eq(d.last_index, 5000);
    cr_assert_eq(d.hs.term, 3);
    log = rlt_reopen(log, rlt_dir, SMALL);
    cr_assert_eq(br_raftlog_first_index(log), 5001);
    cr_assert_eq(br_raftlog_last_index(log), 5000);
    uint64_t t;
    cr_assert_eq(br_raftlog_term(log, 5000, &t), 0);
    cr_assert_eq(t, 3);
    struct br_raft_snapshot_meta got;
    br_raftlog_snapshot(log, &got);
    cr_assert_eq(got.index, 5000);
    cr_assert_eq(got.conf.n_voters, 2);
    cr_assert_eq(got.conf.voters[1], 5);
    struct br_raft_conf_state c;
    br_raftlog_conf(log, &c);
    cr_assert_eq(c.n_voters, 2);
    struct br_raft_hard_state h2;
    br_raftlog_hard_state(log, &h2);
    cr_assert_eq(h2.term, 3);
    cr_assert_eq(h2.vote, 2);
    rlt_append_range(log, 5001, 6000, 3);
    log = rlt_reopen(log, rlt_dir, SMALL);
    check_range(log, 5001, 6000, 3);
    cr_assert_eq(br_raftlog_first_index(log), 5001);
    cr_assert_eq(br_raftlog_close(log), 0);
}

Test(raftlog, bootstrap_like_memstorage) {
    br_raftlog *log = rlt_open(rlt_dir, 0);
    struct br_raft_conf_state empty = {0};
    cr_assert_eq(br_raftlog_bootstrap(log, &empty), BR_EINVAL);
    struct br_raft_conf_state conf = {.n_voters = 3, .voters = {1, 2, 3}};
    cr_assert_eq(br_raftlog_bootstrap(log, &conf), 0);
    cr_assert_eq(br_raftlog_bootstrap(log, &conf), BR_EINVAL);
    log = rlt_reopen(log, rlt_dir, 0);
    br_raft_memstorage *ms;
    cr_assert_eq(br_raft_memstorage_new(&ms), 0);
    cr_assert_eq(br_raft_memstorage_bootstrap(ms, &conf), 0);
    const struct br_raft_storage *a = br_raftlog_storage(log), *b = br_raft_memstorage_storage(ms);
    struct br_raft_hard_state ha, hb;
    struct br_raft_conf_state ca, cb;
    a->initial_state(a->ctx, &ha, &ca);
    b->initial_state(b->ctx, &hb, &cb);
    cr_assert(memcmp(&ha, &hb, sizeof ha) == 0);
    cr_assert(memcmp(&ca, &cb, sizeof ca) == 0);
    uint64_t fa, fb, la, lb, ta, tb;
    a->first_index(a->ctx, &fa);
    b->first_index(b->ctx, &fb);
    a->last_index(a->ctx, &la);
    b->last_index(b->ctx, &lb);
    a->term(a->ctx, 1, &ta);
    b->term(b->ctx, 1, &tb);
    cr_assert_eq(fa, fb);
    cr_assert_eq(la, lb);
    cr_assert_eq(ta, tb);
    struct br_raft_snapshot_meta sa, sb;
    a->snapshot(a->ctx, &sa);
    b->snapshot(b->ctx, &sb);
    cr_assert(memcmp(&sa, &sb, sizeof sa) == 0);
    br_raft_memstorage_free(ms);
    cr_assert_eq(br_raftlog_close(log), 0);
}

/* ------------------------------------------------------------ model test */

struct model_ctx {
    br_raftlog *log;
    br_raft_memstorage *ms;
    uint64_t seed;
};

static uint64_t rnd(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void compare(br_raftlog *log, br_raft_memstorage *ms, int step) {
    const struct br_raft_storage *a = br_raftlog_storage(log), *b = br_raft_memstorage_storage(ms);
    uint64_t fa, fb, la, lb;
    a->first_index(a->ctx, &fa);
    b->first_index(b->ctx, &fb);
    a->last_index(a->ctx, &la);
    b->last_index(b->ctx, &lb);
    cr_assert_eq(la, lb, "step %d: last %llu vs %llu", step, (unsigned long long)la,
                 (unsigned long long)lb);
    cr_assert_leq(fa, fb, "step %d: first %llu vs %llu", step, (unsigned long long)fa,
                  (unsigned long long)fb);
    for (uint64_t i = fb - 1; i <= lb; i++) {
        uint64_t ta, tb;
        cr_assert_eq(a->term(a->ctx, i, &ta), 0, "step %d: term(%llu)", step,
                     (unsigned long long)i);
        b->term(b->ctx, i, &tb);
        cr_assert_eq(ta, tb, "step %d: term(%llu) %llu vs %llu", step, (unsigned long long)i,
                     (unsigned long long)ta, (unsigned long long)tb);
    }
    if (fb <= lb) {
        size_t cnt = (size_t)(lb - fb + 1);
        struct br_raft_entry *ea = calloc(cnt, sizeof(*ea)), *eb = calloc(cnt, sizeof(*eb));
        size_t na, nb;
        cr_assert_eq(a->entries(a->ctx, fb, lb + 1, UINT64_MAX, ea, &na), 0);
        cr_assert_eq(b->entries(b->ctx, fb, lb + 1, UINT64_MAX, eb, &nb), 0);
        cr_assert_eq(na, cnt);
        cr_assert_eq(nb, cnt);
        for (size_t k = 0; k < cnt; k++) {
            cr_assert_eq(ea[k].index, eb[k].index);
            cr_assert_eq(ea[k].term, eb[k].term);
            cr_assert_eq(ea[k].type, eb[k].type);
            cr_assert_eq(ea[k].len, eb[k].len, "step %d: len of %llu", step,
                         (unsigned long long)eb[k].index);
            cr_assert(ea[k].len == 0 || memcmp(ea[k].data, eb[k].data, ea[k].len) == 0,
                      "step %d: content of %llu", step, (unsigned long long)eb[k].index);
        }
        free(ea);
        free(eb);
    }
    struct br_raft_hard_state ha, hb;
    struct br_raft_conf_state ca, cb;
    a->initial_state(a->ctx, &ha, &ca);
    b->initial_state(b->ctx, &hb, &cb);
    cr_assert(memcmp(&ha, &hb, sizeof ha) == 0, "step %d: hard state", step);
    cr_assert(memcmp(&ca, &cb, sizeof ca) == 0, "step %d: conf", step);
    struct br_raft_snapshot_meta sa, sb;
    a->snapshot(a->ctx, &sa);
    b->snapshot(b->ctx, &sb);
    cr_assert(memcmp(&sa, &sb, sizeof sa) == 0, "step %d: snapshot %llu vs %llu", step,
              (unsigned long long)sa.index, (unsigned long long)sb.index);
}

static struct br_raft_conf_state random_conf(uint64_t *s) {
    struct br_raft_conf_state c = {0};
    c.n_voters = 1 + (uint32_t)(rnd(s) % 5);
    c.n_learners = (uint32_t)(rnd(s) % 3);
    for (uint32_t i = 0; i < c.n_voters; i++)
        c.voters[i] = 1 + rnd(s) % 100;
    for (uint32_t i = 0; i < c.n_learners; i++)
        c.learners[i] = 101 + rnd(s) % 100;
    return c;
}

static int no_sync(int fd, int datasync) {
    (void)fd, (void)datasync;
    return 0;
}

/* Random appends, conflicts, hard states, configurations, snapshots,
 * compactions, snapshot installs and reopens, compared after every step
 * with br_raft_memstorage. Durability is not what this test is about, so
 * it skips the fsyncs (each test runs in its own process). */
Test(raftlog, randomized_against_memstorage, .timeout = 600) {
    br_raftlog_fsync = no_sync;
    const char *env = getenv("BR_TEST_LONG");
    int rounds = env && *env && strcmp(env, "0") != 0 ? 20000 : 3000;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        uint64_t s = seed * 7919;
        tu_rmrf(rlt_dir);
        br_raftlog *log = rlt_open(rlt_dir, SMALL);
        br_raft_memstorage *ms;
        cr_assert_eq(br_raft_memstorage_new(&ms), 0);
        uint64_t term = 1;
        struct br_raft_hard_state hs = {0};
        static uint8_t data[64][600];
        for (int step = 0; step < rounds; step++) {
            uint64_t first = br_raft_memstorage_first_index(ms);
            uint64_t last = br_raft_memstorage_last_index(ms);
            const struct br_raft_storage *b = br_raft_memstorage_storage(ms);
            struct br_raft_snapshot_meta snap;
            b->snapshot(b->ctx, &snap);
            uint64_t op = rnd(&s) % 100;
            if (op < 55) {
                /* Append, sometimes replacing a suffix. */
                uint64_t lo = last + 1;
                if (rnd(&s) % 4 == 0 && last >= first) {
                    uint64_t floor = first > snap.index + 1 ? first : snap.index + 1;
                    uint64_t back = rnd(&s) % 200;
                    lo = last + 1 > floor + back ? last + 1 - back : floor;
                    if (lo > last + 1)
                        lo = last + 1;
                }
                uint64_t prev;
                b->term(b->ctx, lo - 1, &prev);
                if (rnd(&s) % 3 == 0)
                    term++;
                if (term < prev)
                    term = prev;
                size_t n = 1 + (size_t)(rnd(&s) % 64);
                struct br_raft_entry e[64];
                for (size_t k = 0; k < n; k++) {
                    uint32_t len = (uint32_t)(rnd(&s) % (rnd(&s) % 10 == 0 ? 600 : 100));
                    for (uint32_t j = 0; j < len; j++)
                        data[k][j] = (uint8_t)rnd(&s);
                    e[k] = (struct br_raft_entry){.term = term,
                                                  .index = lo + k,
                                                  .type = (uint32_t)(rnd(&s) % 2),
                                                  .len = len,
                                                  .data = len ? data[k] : NULL};
                }
                cr_assert_eq(br_raftlog_append(log, e, n), 0, "step %d", step);
                cr_assert_eq(br_raft_memstorage_append(ms, e, n), 0);
            } else if (op < 70) {
                hs.commit = last;
                if (rnd(&s) % 2) {
                    hs.term = ++term;
                    hs.vote = rnd(&s) % 4;
                }
                cr_assert_eq(br_raftlog_set_hard_state(log, &hs), 0);
                br_raft_memstorage_set_hard_state(ms, &hs);
            } else if (op < 75) {
                struct br_raft_conf_state c = random_conf(&s);
                cr_assert_eq(br_raftlog_set_conf(log, &c), 0);
                br_raft_memstorage_set_conf(ms, &c);
            } else if (op < 82) {
                uint64_t lo = snap.index > first - 1 ? snap.index : first - 1;
                if (last >= lo) {
                    uint64_t idx = lo + rnd(&s) % (last - lo + 1);
                    struct br_raft_conf_state c = random_conf(&s);
                    cr_assert_eq(br_raftlog_set_snapshot(log, idx, &c), 0, "step %d", step);
                    cr_assert_eq(br_raft_memstorage_create_snapshot(ms, idx, &c), 0);
                }
            } else if (op < 90) {
                if (snap.index >= first) {
                    uint64_t idx = first + rnd(&s) % (snap.index - first + 1);
                    cr_assert_eq(br_raftlog_compact(log, idx), 0, "step %d", step);
                    cr_assert_eq(br_raft_memstorage_compact(ms, idx), 0);
                }
            } else if (op < 92) {
                struct br_raft_snapshot_meta m = {
                    .index = snap.index + rnd(&s) % 300, .term = ++term, .conf = random_conf(&s)};
                cr_assert_eq(br_raftlog_apply_snapshot(log, &m), 0, "step %d", step);
                cr_assert_eq(br_raft_memstorage_apply_snapshot(ms, &m), 0);
            } else if (op < 96) {
                cr_assert_eq(br_raftlog_sync(log, NULL), 0);
            } else {
                log = rlt_reopen(log, rlt_dir, rnd(&s) % 2 ? SMALL : 3 * SMALL);
            }
            compare(log, ms, step);
        }
        log = rlt_reopen(log, rlt_dir, SMALL);
        compare(log, ms, -1);
        cr_assert_eq(br_raftlog_close(log), 0);
        br_raft_memstorage_free(ms);
    }
}

/* ------------------------------------------------------------ failures */

static atomic_int fail_syncs;

static int failing_sync(int fd, int datasync) {
    if (atomic_load(&fail_syncs)) {
        errno = EIO;
        return -1;
    }
    return datasync ? fdatasync(fd) : fsync(fd);
}

Test(raftlog, a_failed_sync_breaks_the_log_until_reopened) {
    br_raftlog_fsync = failing_sync;
    br_raftlog *log = rlt_open(rlt_dir, 0);
    rlt_append_range(log, 1, 10, 1);
    struct br_raftlog_durable d;
    cr_assert_eq(br_raftlog_sync(log, &d), 0);
    atomic_store(&fail_syncs, 1);
    rlt_append_range(log, 11, 12, 1);
    cr_assert_eq(br_raftlog_sync(log, &d), -EIO);
    /* The kernel may have dropped the pages: nothing more is accepted. */
    uint8_t b[300];
    struct br_raft_entry e;
    rlt_entry(&e, 13, 1, b);
    cr_assert_eq(br_raftlog_append(log, &e, 1), -EIO);
    struct br_raft_hard_state hs = {.term = 2};
    cr_assert_eq(br_raftlog_set_hard_state(log, &hs), -EIO);
    cr_assert_eq(br_raftlog_sync(log, &d), -EIO);
    br_raftlog_durable(log, &d);
    cr_assert_eq(d.last_index, 10);
    atomic_store(&fail_syncs, 0);
    cr_assert_eq(br_raftlog_sync(log, &d), -EIO, "still broken");
    cr_assert_eq(br_raftlog_close(log), -EIO);
    log = rlt_open(rlt_dir, 0);
    cr_assert_geq(br_raftlog_last_index(log), 10);
    check_range(log, 1, 10, 1);
    cr_assert_eq(br_raftlog_close(log), 0);
}

/* ------------------------------------------------------------ group commit */

struct syncer {
    br_raftlog *log;
    atomic_bool stop;
    uint64_t syncs;
    uint64_t max_term_seen;
    int error;
};

static void *sync_loop(void *arg) {
    struct syncer *sy = arg;
    while (!atomic_load(&sy->stop)) {
        struct br_raftlog_durable d;
        int rc = br_raftlog_sync(sy->log, &d);
        if (rc) {
            sy->error = rc;
            break;
        }
        if (d.hs.term < sy->max_term_seen)
            sy->error = BR_ECORRUPT; /* a report went back in term */
        sy->max_term_seen = d.hs.term;
        sy->syncs++;
    }
    return NULL;
}

Test(raftlog, sync_from_a_worker_while_the_owner_appends) {
    br_raftlog *log = rlt_open(rlt_dir, 16 << 10);
    struct syncer sy = {.log = log};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, sync_loop, &sy), 0);
    uint64_t term = 1;
    for (int round = 0; round < 400; round++) {
        uint64_t last = br_raftlog_last_index(log);
        if (round % 37 == 36 && last > 100) {
            /* A conflict, sometimes reaching below the newest segment. */
            term++;
            uint64_t at = last - (round % 2 ? 5 : 90);
            rlt_append_range(log, at, at + 10, term);
        } else {
            rlt_append_range(log, last + 1, last + 1 + round % 20, term);
        }
        struct br_raft_hard_state hs = {.term = term, .vote = 1, .commit = last};
        cr_assert_eq(br_raftlog_set_hard_state(log, &hs), 0);
        uint64_t l = br_raftlog_last_index(log);
        uint64_t t;
        cr_assert_eq(br_raftlog_term(log, l, &t), 0);
        cr_assert_eq(t, term);
        rlt_check_entry(log, l, term);
    }
    atomic_store(&sy.stop, true);
    pthread_join(th, NULL);
    cr_assert_eq(sy.error, 0, "%s", br_strerror(sy.error));
    cr_assert_gt(sy.syncs, 0);
    struct br_raftlog_durable d;
    cr_assert_eq(br_raftlog_sync(log, &d), 0);
    cr_assert_eq(d.last_index, br_raftlog_last_index(log));
    cr_assert_eq(d.last_term, term);
    cr_assert_eq(d.hs.term, term);
    uint64_t last = br_raftlog_last_index(log);
    log = rlt_reopen(log, rlt_dir, 16 << 10);
    cr_assert_eq(br_raftlog_last_index(log), last);
    rlt_check_entry(log, last, term);
    cr_assert_eq(br_raftlog_close(log), 0);
}

/* ------------------------------------------------------------ raft core */

/* Drives a single-node br_raft over the log: persist, advance. Returns the
 * number of entries applied. */
static size_t drive(br_raft *r, br_raftlog *log, uint64_t *applied) {
    size_t n = 0;
    for (int i = 0; i < 1000 && br_raft_has_ready(r); i++) {
        struct br_raft_ready rd;
        cr_assert_eq(br_raft_ready(r, &rd), 0);
        if (rd.has_snapshot)
            cr_assert_eq(br_raftlog_apply_snapshot(log, &rd.snapshot), 0);
        if (rd.n_entries)
            cr_assert_eq(br_raftlog_append(log, rd.entries, rd.n_entries), 0);
        if (rd.has_hard_state)
            cr_assert_eq(br_raftlog_set_hard_state(log, &rd.hard_state), 0);
        if (rd.must_sync) {
            struct br_raftlog_durable d;
            cr_assert_eq(br_raftlog_sync(log, &d), 0);
            cr_assert_eq(d.last_index, br_raftlog_last_index(log));
        }
        for (size_t k = 0; k < rd.n_committed; k++) {
            cr_assert_eq(rd.committed[k].index, *applied + 1);
            *applied = rd.committed[k].index;
            n++;
        }
        br_raft_advance(r);
        struct br_raft_conf_state conf;
        br_raft_get_conf(r, &conf);
        cr_assert_eq(br_raftlog_set_conf(log, &conf), 0);
    }
    return n;
}

static br_raft *new_node(br_raftlog *log, uint64_t applied) {
    struct br_raft_config cfg = {.id = 1,
                                 .election_tick = 10,
                                 .heartbeat_tick = 1,
                                 .seed = 42,
                                 .applied = applied,
                                 .storage = br_raftlog_storage(log)};
    br_raft *r;
    cr_assert_eq(br_raft_new(&cfg, &r), 0);
    return r;
}

static void become_leader(br_raft *r, br_raftlog *log, uint64_t *applied) {
    br_raft_campaign(r);
    drive(r, log, applied);
    struct br_raft_status st;
    br_raft_get_status(r, &st);
    cr_assert_eq(st.role, BR_RAFT_LEADER);
}

Test(raftlog, drives_the_raft_core_and_restarts_from_it) {
    br_raftlog *log = rlt_open(rlt_dir, SMALL);
    struct br_raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    cr_assert_eq(br_raftlog_bootstrap(log, &conf), 0);
    uint64_t applied = 1;
    br_raft *r = new_node(log, applied);
    become_leader(r, log, &applied);
    for (int i = 0; i < 300; i++) {
        char cmd[32];
        int len = snprintf(cmd, sizeof cmd, "put k%d v%d", i, i);
        cr_assert_eq(br_raft_propose(r, cmd, (size_t)len, NULL, NULL), 0);
        if (i % 7 == 0)
            drive(r, log, &applied);
    }
    drive(r, log, &applied);
    struct br_raft_status st1;
    br_raft_get_status(r, &st1);
    cr_assert_eq(st1.commit, st1.last_index);
    cr_assert_eq(applied, st1.last_index);
    br_raft_free(r);
    cr_assert_eq(br_raftlog_close(log), 0);

    /* Restart: the same log and hard state, nothing to re-apply. */
    log = rlt_open(rlt_dir, SMALL);
    r = new_node(log, applied);
    struct br_raft_status st2;
    br_raft_get_status(r, &st2);
    cr_assert_eq(st2.term, st1.term);
    cr_assert_eq(st2.vote, 1);
    cr_assert_eq(st2.commit, st1.commit);
    cr_assert_eq(st2.last_index, st1.last_index);
    /* The proposals are in the log, in order. */
    const struct br_raft_storage *s = br_raftlog_storage(log);
    int seen = 0;
    for (uint64_t i = 2; i <= st2.last_index; i++) {
        struct br_raft_entry e;
        size_t n;
        cr_assert_eq(s->entries(s->ctx, i, i + 1, 0, &e, &n), 0);
        char want[32];
        int len = snprintf(want, sizeof want, "put k%d v%d", seen, seen);
        if (e.len == (uint32_t)len && memcmp(e.data, want, (size_t)len) == 0)
            seen++;
    }
    cr_assert_eq(seen, 300);
    /* A new election in a higher term, more proposals, compaction. */
    become_leader(r, log, &applied);
    br_raft_get_status(r, &st2);
    cr_assert_gt(st2.term, st1.term);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(br_raft_propose(r, "x", 1, NULL, NULL), 0);
    drive(r, log, &applied);
    br_raft_get_conf(r, &conf);
    cr_assert_eq(br_raftlog_set_snapshot(log, applied, &conf), 0);
    cr_assert_eq(br_raftlog_compact(log, applied - 10), 0);
    br_raft_get_status(r, &st2);
    br_raft_free(r);
    log = rlt_reopen(log, rlt_dir, SMALL);
    r = new_node(log, applied);
    struct br_raft_status st3;
    br_raft_get_status(r, &st3);
    cr_assert_eq(st3.term, st2.term);
    cr_assert_eq(st3.commit, st2.commit);
    cr_assert_eq(st3.last_index, st2.last_index);
    become_leader(r, log, &applied);
    cr_assert_eq(br_raft_propose(r, "y", 1, NULL, NULL), 0);
    drive(r, log, &applied);
    br_raft_get_status(r, &st3);
    cr_assert_eq(applied, st3.last_index);
    br_raft_free(r);
    cr_assert_eq(br_raftlog_close(log), 0);
}
