/*
 * test_compact.c - online compaction: space comes back, contents never
 * change (against a model), writes during a merge win, deleted keys stay
 * deleted, a crash at every step of a merge leaves the same contents, and
 * replaced files go only once no reader uses them.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "engine/internal.h"
#include "testutil.h"

#define NKEYS 600
#define VMAX  160

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static br_engine_options small_opts(void) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 16u << 10;
    o.sync = BR_SYNC_NEVER; /* process crashes only: the page cache keeps writes */
    o.compact_dead_pct = 0; /* by hand, unless a test turns the thread on */
    o.compact_rate = 0;     /* unpaced */
    return o;
}

static br_engine *open_with(const char *dir, const br_engine_options *o) {
    br_engine *e;
    char err[256] = "";
    int rc = br_engine_open(dir, o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s (%s)", dir, br_strerror(rc), err);
    return e;
}

/* ---- A model: key i holds val[i] (len[i] bytes) or is absent (len -1) ---- */

typedef struct model {
    int len[NKEYS];
    char val[NKEYS][VMAX];
} model;

static void keyname(char *k, size_t cap, int i) {
    snprintf(k, cap, "key-%05d", i);
}

static void put(br_engine *e, model *m, int i, uint64_t tag) {
    char k[32];
    keyname(k, sizeof k, i);
    int n = snprintf(m->val[i], VMAX, "v%d-%" PRIu64 "-", i, tag);
    int pad = (int)(tag % 100);
    memset(m->val[i] + n, 'a' + (int)(tag % 26), (size_t)pad);
    m->len[i] = n + pad;
    cr_assert_eq(br_engine_put(e, k, strlen(k), m->val[i], (size_t)m->len[i]), 0);
}

static void del(br_engine *e, model *m, int i) {
    char k[32];
    keyname(k, sizeof k, i);
    int rc = br_engine_delete(e, k, strlen(k));
    cr_assert_eq(rc, m->len[i] < 0 ? BR_ENOTFOUND : 0, "delete %s: %s", k, br_strerror(rc));
    m->len[i] = -1;
}

static int count_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    (void)key, (void)klen, (void)val, (void)vlen;
    (*(size_t *)ctx)++;
    return 0;
}

/* Every key of the model reads as the model says; a range sees exactly the
 * present keys; stats agree. */
static void check(br_engine *e, const model *m, const char *when) {
    size_t present = 0;
    char k[32], buf[VMAX];
    for (int i = 0; i < NKEYS; i++) {
        keyname(k, sizeof k, i);
        size_t vlen = 0;
        int rc = br_engine_get_into(e, k, strlen(k), buf, sizeof buf, &vlen);
        if (m->len[i] < 0) {
            cr_assert_eq(rc, BR_ENOTFOUND, "%s: %s should be absent, got %s", when, k,
                         br_strerror(rc));
            continue;
        }
        present++;
        cr_assert_eq(rc, 0, "%s: %s: %s", when, k, br_strerror(rc));
        cr_assert(vlen == (size_t)m->len[i] && memcmp(buf, m->val[i], vlen) == 0,
                  "%s: %s holds '%.*s', want '%.*s'", when, k, (int)vlen, buf, m->len[i],
                  m->val[i]);
    }
    size_t n = 0;
    cr_assert_eq(br_engine_range(e, NULL, 0, NULL, 0, 0, count_fn, &n), 0);
    cr_assert_eq(n, present, "%s: range saw %zu keys, want %zu", when, n, present);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.keys, present, "%s: stats.keys", when);
    /* Every record on disk is counted live or dead, merge outputs too. */
    cr_assert_eq(st.disk_bytes, st.live_bytes + st.dead_bytes + 32 * st.data_files,
                 "%s: disk %" PRIu64 " live %" PRIu64 " dead %" PRIu64 " files %" PRIu64, when,
                 st.disk_bytes, st.live_bytes, st.dead_bytes, st.data_files);
}

/* Every test gets a fresh store directory (removed after it) and a model in
 * which every key is absent. */
static char *tdir;
static model *md;

static void fixture_init(void) {
    tdir = tu_tmpdir(criterion_current_test->name);
    md = calloc(1, sizeof *md);
    cr_assert(md != NULL);
    for (int i = 0; i < NKEYS; i++)
        md->len[i] = -1;
}

static void fixture_fini(void) {
    free(md);
    tu_rmrf(tdir);
    free(tdir);
}

TestSuite(compact, .init = fixture_init, .fini = fixture_fini);

/* Closes e (asserting success) and opens dir again. */
static br_engine *reopen(br_engine *e, const char *dir, const br_engine_options *o) {
    cr_assert_eq(br_engine_close(e), 0);
    return open_with(dir, o);
}

static size_t count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    cr_assert(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        n += l > s && strcmp(de->d_name + l - s, suffix) == 0;
    }
    closedir(d);
    return n;
}

/* ---- Space and contents ------------------------------------------------------ */

Test(compact, reclaims_overwritten_space_and_keeps_every_value) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    for (int round = 0; round < 4; round++)
        for (int i = 0; i < NKEYS; i++)
            put(e, md, i, (uint64_t)round * 1000 + (uint64_t)i);
    br_engine_stats before, after;
    br_engine_stats_get(e, &before);
    cr_assert_eq(br_engine_compact(e, 0), 0);
    br_engine_stats_get(e, &after);
    check(e, md, "after compaction");
    cr_assert_gt(after.compactions, 0);
    cr_assert_gt(after.compact_reclaimed, 0);
    cr_assert_eq(after.compact_running, 0);
    cr_assert_eq(after.compact_done_bytes, after.compact_todo_bytes);
    /* Before: four copies of every value; after: one, plus the active
     * file's share and the file headers. */
    cr_assert_gt(before.disk_bytes, 3 * before.live_bytes);
    cr_assert_leq(after.disk_bytes, after.live_bytes + after.live_bytes / 5 + (16u << 10),
                  "disk %" PRIu64 " live %" PRIu64, after.disk_bytes, after.live_bytes);
    cr_assert_eq(after.live_bytes, before.live_bytes);
    /* A second compaction has nothing left to do. */
    cr_assert_eq(br_engine_compact(e, 0), 0);
    br_engine_stats st2;
    br_engine_stats_get(e, &st2);
    cr_assert_eq(st2.compactions, after.compactions, "compaction repeated itself");
    cr_assert_eq(br_engine_close(e), 0);
    /* The replaced files are gone from the disk; the outputs got hints. */
    cr_assert_eq(count_files(tdir, ".data"), after.data_files);
    cr_assert_eq(count_files(tdir, ".tmp"), 0);
    e = open_with(tdir, &o);
    check(e, md, "after reopen");
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.live_bytes, after.live_bytes);
    cr_assert_eq(st.dead_bytes, after.dead_bytes);
    cr_assert_eq(st.disk_bytes, after.disk_bytes);
    cr_assert_eq(st.problems, 0);
    br_engine_close(e);
}

typedef struct logcap {
    char hinted[512];
} logcap;

static void hint_log(void *ctx, br_log_level lvl, const char *msg) {
    logcap *l = ctx;
    if (lvl == BR_LOG_INFO && strstr(msg, "loaded from hint files"))
        snprintf(l->hinted, sizeof l->hinted, "%s", msg);
}

Test(compact, merge_outputs_get_hint_files_used_at_open) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < NKEYS; i++)
            put(e, md, i, (uint64_t)round * 7 + (uint64_t)i);
    cr_assert_eq(br_engine_compact(e, 0), 0);
    cr_assert_eq(br_engine_close(e), 0);
    logcap l = {""};
    o.log = hint_log;
    o.log_ctx = &l;
    e = open_with(tdir, &o);
    check(e, md, "reopen");
    unsigned a = 0, b = 1;
    cr_assert_eq(sscanf(strstr(l.hinted, ": ") + 2, "%u of %u", &a, &b), 2, "%s", l.hinted);
    cr_assert_eq(a, b, "every closed file, merge outputs too, loads from its hint: %s", l.hinted);
    br_engine_close(e);
}

/* Random puts, overwrites and deletes, with compactions of every kind
 * (picky and not) and reopens in between; after every step the store
 * equals the model. Partial merges keep tombstones that older files still
 * need; full ones drop them. */
Test(compact, random_operations_with_compactions_match_a_model) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    uint64_t rng = 42;
    const uint32_t pcts[] = {0, 10, 30, 60, 90};
    int steps = tu_long() ? 200 : 40;
    uint64_t compactions = 0;
    for (int step = 0; step < steps; step++) {
        int ops = 200 + (int)(rnd(&rng) % 800);
        for (int j = 0; j < ops; j++) {
            /* Skewed: low keys change often, so files die unevenly. */
            int i = (int)(rnd(&rng) % (rnd(&rng) % 2 ? 60 : NKEYS));
            if (rnd(&rng) % 4 == 0) {
                if (md->len[i] >= 0)
                    del(e, md, i);
            } else {
                put(e, md, i, rnd(&rng));
            }
        }
        uint32_t pct = pcts[rnd(&rng) % 5];
        cr_assert_eq(br_engine_compact(e, pct), 0, "step %d", step);
        char when[64];
        snprintf(when, sizeof when, "step %d after compact(%u)", step, pct);
        check(e, md, when);
        br_engine_stats st;
        br_engine_stats_get(e, &st);
        compactions = st.compactions;
        if (rnd(&rng) % 4 == 0) {
            e = reopen(e, tdir, &o);
            snprintf(when, sizeof when, "step %d after reopen", step);
            check(e, md, when);
        }
    }
    /* Finally everything: with all files merged, no tombstone is needed. */
    cr_assert_eq(br_engine_compact(e, 0), 0);
    check(e, md, "final");
    e = reopen(e, tdir, &o);
    check(e, md, "final reopen");
    br_engine_close(e);
    fprintf(stderr, "compact random: %d steps, %" PRIu64 " merges in the last session\n", steps,
            compactions);
}

/* A key written once in an old file and deleted in a newer one: merging
 * the newer file alone must keep the tombstone (the old put is outside
 * the merge), merging both may drop both; the key never comes back. */
Test(compact, tombstones_stay_while_older_copies_exist) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    /* The first file: keys that are never overwritten, until it is full. */
    br_engine_stats st;
    int next = 0;
    do {
        put(e, md, next++, 99);
        br_engine_stats_get(e, &st);
    } while (st.data_files == 1);
    cr_assert_gt(next, 60);
    /* The second file: the deletes of 40 of them (under half of the
     * first file) and many overwrites of one key. */
    for (int i = 0; i < 40; i++)
        del(e, md, i);
    for (int r = 0; r < 300; r++)
        put(e, md, NKEYS - 1, (uint64_t)r);
    /* Picky: the first file is under 60% dead and stays; the second goes,
     * and its tombstones must stay since the puts they hide stay. */
    cr_assert_eq(br_engine_compact(e, 60), 0);
    br_engine_stats_get(e, &st);
    cr_assert_gt(st.compactions, 0);
    char *first = tu_path(tdir, "0000000001.data");
    cr_assert_eq(access(first, F_OK), 0, "the first file was left alone");
    check(e, md, "after the newer files were merged");
    e = reopen(e, tdir, &o);
    check(e, md, "reopen after the partial merge");
    br_engine_stats_get(e, &st);
    uint64_t dead_before = st.dead_bytes;
    /* Everything: the first file and the tombstones go together. */
    cr_assert_eq(br_engine_compact(e, 0), 0);
    cr_assert_neq(access(first, F_OK), 0, "the first file was merged");
    check(e, md, "after the full merge");
    br_engine_stats_get(e, &st);
    cr_assert_lt(st.dead_bytes, dead_before, "the full merge dropped the tombstones");
    e = reopen(e, tdir, &o);
    check(e, md, "reopen after the full merge");
    br_engine_close(e);
    free(first);
}

Test(compact, store_with_only_deleted_keys_compacts_to_nothing) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    for (int i = 0; i < NKEYS; i++)
        put(e, md, i, 3);
    for (int i = 0; i < NKEYS; i++)
        del(e, md, i);
    for (int i = 0; i < 200; i++) /* roll the deletes into closed files */
        put(e, md, i, 4), del(e, md, i);
    cr_assert_eq(br_engine_compact(e, 0), 0);
    check(e, md, "after");
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.live_bytes, 0);
    uint64_t n = st.compactions;
    cr_assert_eq(br_engine_compact(e, 0), 0);
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.compactions, n, "an empty output is not merged again and again");
    e = reopen(e, tdir, &o);
    check(e, md, "reopen");
    br_engine_close(e);
    cr_assert_leq(count_files(tdir, ".data"), 3, "what remains: the active file and little else");
}

/* ---- Concurrency ---------------------------------------------------------------- */

typedef struct conc {
    br_engine *e;
    int t;
    int ops;
    model *m; /* shared; a writer touches only its own keys (i % 4 == t) */
    atomic_int *stop;
    atomic_long bad;
} conc;

static void *writer(void *arg) {
    conc *c = arg;
    uint64_t rng = (uint64_t)c->t * 7919 + 1;
    for (int j = 0; j < c->ops; j++) {
        int i = (int)(rnd(&rng) % (NKEYS / 4)) * 4 + c->t;
        if (rnd(&rng) % 5 == 0) {
            if (c->m->len[i] >= 0)
                del(c->e, c->m, i);
        } else {
            put(c->e, c->m, i, rnd(&rng));
        }
    }
    return NULL;
}

/* Readers check that whatever they see is a whole value of the key read. */
static void *reader(void *arg) {
    conc *c = arg;
    uint64_t rng = 99;
    char k[32], buf[VMAX], want[32];
    while (!atomic_load(c->stop)) {
        int i = (int)(rnd(&rng) % NKEYS);
        keyname(k, sizeof k, i);
        size_t vlen;
        int rc = br_engine_get_into(c->e, k, strlen(k), buf, sizeof buf, &vlen);
        if (rc == BR_ENOTFOUND)
            continue;
        int n = snprintf(want, sizeof want, "v%d-", i);
        if (rc != 0 || vlen < (size_t)n || memcmp(buf, want, (size_t)n) != 0)
            atomic_fetch_add(&c->bad, 1);
    }
    return NULL;
}

static void *compactor(void *arg) {
    conc *c = arg;
    while (!atomic_load(c->stop)) {
        int rc = br_engine_compact(c->e, 0);
        if (rc != 0)
            atomic_fetch_add(&c->bad, 1000000);
    }
    return NULL;
}

Test(compact, concurrent_writers_readers_and_compactions_match_the_model, .timeout = 240) {
    br_engine_options o = small_opts();
    o.compact_dead_pct = 20; /* the background thread too */
    o.compact_interval_ms = 1;
    br_engine *e = open_with(tdir, &o);
    atomic_int stop = 0;
    conc w[4], r = {.e = e, .stop = &stop}, cp = {.e = e, .stop = &stop};
    pthread_t tw[4], tr, tc;
    int ops = tu_long() ? 40000 : 6000;
    for (int t = 0; t < 4; t++) {
        w[t] = (conc){.e = e, .t = t, .ops = ops, .m = md, .stop = &stop};
        cr_assert_eq(pthread_create(&tw[t], NULL, writer, &w[t]), 0);
    }
    cr_assert_eq(pthread_create(&tr, NULL, reader, &r), 0);
    cr_assert_eq(pthread_create(&tc, NULL, compactor, &cp), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(tw[t], NULL);
    atomic_store(&stop, 1);
    pthread_join(tr, NULL);
    pthread_join(tc, NULL);
    cr_assert_eq(atomic_load(&r.bad), 0, "a reader saw a wrong value");
    cr_assert_eq(atomic_load(&cp.bad), 0, "a compaction failed");
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_gt(st.compactions, 0);
    check(e, md, "after the run");
    cr_assert_eq(br_engine_compact(e, 0), 0);
    check(e, md, "after a last compaction");
    e = reopen(e, tdir, &o);
    check(e, md, "after reopen");
    br_engine_close(e);
    fprintf(stderr, "compact concurrent: %d ops per writer, %" PRIu64 " merges\n", ops,
            st.compactions);
}

/* An iterator holds pins on the files of its page: a merge replaces them
 * under it, the values it returns stay right, and the files are deleted
 * only after it lets go. */
Test(compact, replaced_files_live_until_readers_let_go) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < NKEYS; i++)
            put(e, md, i, (uint64_t)round);
    br_iter *it;
    cr_assert_eq(br_engine_iter(e, NULL, 0, NULL, 0, 0, &it), 0);
    const void *k, *v;
    size_t kl, vl;
    cr_assert_eq(br_iter_next(it, &k, &kl, &v, &vl), 1);
    size_t files_before = count_files(tdir, ".data");
    cr_assert_eq(br_engine_compact(e, 0), 0);
    size_t files_pinned = count_files(tdir, ".data");
    cr_assert_geq(files_pinned, files_before - 1, "pinned inputs stay on disk");
    int i = 0, rc;
    do {
        char want[32];
        keyname(want, sizeof want, i);
        cr_assert(kl == strlen(want) && memcmp(k, want, kl) == 0);
        cr_assert(vl == (size_t)md->len[i] && memcmp(v, md->val[i], vl) == 0, "key %d", i);
        i++;
    } while ((rc = br_iter_next(it, &k, &kl, &v, &vl)) == 1);
    cr_assert_eq(rc, 0);
    cr_assert_eq(i, NKEYS);
    br_iter_free(it);
    /* Released: the next compaction pass deletes them. */
    br_engine_stats st;
    for (int tries = 0;; tries++) {
        cr_assert_eq(br_engine_compact(e, 0), 0);
        br_engine_stats_get(e, &st);
        if (count_files(tdir, ".data") == st.data_files || tries == 500)
            break;
        usleep(10000);
    }
    cr_assert_eq(count_files(tdir, ".data"), st.data_files);
    cr_assert_lt(st.data_files, files_before);
    br_engine_close(e);
}

/* ---- Crashes in the middle of a merge ------------------------------------------ */

static int crash_step;

static void crash_hook(int step) {
    if (step == crash_step)
        _exit(0);
}

/* Waits for child pid and asserts that it exited with status 0. */
static void wait_child_ok(pid_t pid, const char *what) {
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (status %d)", what, status);
}

/* A child process opens dir, merges everything and ends itself when the
 * merge reaches `step` (a crash there); asserts that it got there. */
static void crash_merge_at(const char *dir, const br_engine_options *o, int step) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        crash_step = step;
        br_compact_test_hook = crash_hook;
        br_engine *e;
        if (br_engine_open(dir, o, &e, NULL, 0) != 0)
            _exit(2);
        br_engine_compact(e, 0);
        _exit(3); /* the hook should have ended the process */
    }
    char what[64];
    snprintf(what, sizeof what, "step %d: the child did not reach the step", step);
    wait_child_ok(pid, what);
}

/* Builds the store the crash tests merge: old puts, newer deletes of half
 * of them (tombstones a full merge drops), overwrites. */
static void build_history(const char *dir, const br_engine_options *o, model *m) {
    br_engine *e = open_with(dir, o);
    for (int i = 0; i < NKEYS; i++)
        m->len[i] = -1;
    for (int i = 0; i < NKEYS; i++)
        put(e, m, i, 1);
    for (int i = 0; i < NKEYS; i += 2)
        del(e, m, i);
    for (int r = 0; r < 3; r++)
        for (int i = 1; i < NKEYS; i += 4)
            put(e, m, i, (uint64_t)r + 10);
    for (int i = 0; i < 100; i++) /* push the deletes out of the active file */
        put(e, m, NKEYS - 1, (uint64_t)i + 100);
    cr_assert_eq(br_engine_close(e), 0);
}

Test(compact, a_crash_at_every_step_of_a_merge_changes_nothing) {
    br_engine_options o = small_opts();
    for (int step = BR_COMPACT_STEP_COPIED; step <= BR_COMPACT_STEP_DELETED_ONE; step++) {
        char *dir = tu_tmpdir("compact-crash");
        build_history(dir, &o, md);
        crash_merge_at(dir, &o, step);
        char when[64];
        snprintf(when, sizeof when, "reopen after a crash at merge step %d", step);
        br_engine *e = open_with(dir, &o);
        check(e, md, when);
        cr_assert_eq(count_files(dir, ".data.tmp"), 0, "%s: a half-written output is removed",
                     when);
        /* The store goes on: another full compaction and reopen. */
        cr_assert_eq(br_engine_compact(e, 0), 0);
        check(e, md, when);
        e = reopen(e, dir, &o);
        check(e, md, when);
        br_engine_close(e);
        tu_rmrf(dir);
        free(dir);
    }
}

/* The worst order a crash could leave: the merge is committed but of its
 * inputs only the ones holding tombstones are gone, the older puts they
 * hid are still there. The output's input list keeps those puts out. */
Test(compact, committed_merge_hides_leftover_inputs_in_any_order) {
    br_engine_options o = small_opts();
    build_history(tdir, &o, md);
    size_t before = count_files(tdir, ".data");
    crash_merge_at(tdir, &o, BR_COMPACT_STEP_ADOPTED);
    /* Inputs and output all on disk. Delete the newest inputs (deletes,
     * overwrites), keep the oldest (the first puts). */
    size_t after = count_files(tdir, ".data");
    cr_assert_gt(after, before, "the output was committed");
    DIR *d = opendir(tdir);
    unsigned ids[4096];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 4096) {
        unsigned id;
        if (strlen(de->d_name) == 15 && strcmp(de->d_name + 10, ".data") == 0 &&
            sscanf(de->d_name, "%10u", &id) == 1)
            ids[n++] = id;
    }
    closedir(d);
    /* Sort ids. */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            unsigned t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    /* The inputs were the closed files before the merge: all but the
     * active (largest of the old ones) and the new output (largest). */
    cr_assert_geq(n, 4);
    for (size_t i = 1; i + 2 < n; i++) {
        char name[1024];
        snprintf(name, sizeof name, "%s/%010u.data", tdir, ids[i]);
        cr_assert_eq(unlink(name), 0, "%s: %s", name, strerror(errno));
        snprintf(name, sizeof name, "%s/%010u.hint", tdir, ids[i]);
        unlink(name);
    }
    br_engine *e = open_with(tdir, &o);
    check(e, md, "reopen with the oldest input left over");
    br_engine_close(e);
}

/* Pacing at a rate that never allows progress (the clock stands still):
 * close abandons the merge at once, and nothing changed. */
static uint64_t frozen_clock(void) {
    return 1000;
}

Test(compact, close_abandons_a_paced_merge, .timeout = 60) {
    br_engine_options o = small_opts();
    build_history(tdir, &o, md);
    o.compact_dead_pct = 1;
    o.compact_interval_ms = 1;
    o.compact_rate = 1; /* one byte a second */
    o.clock_ms = frozen_clock;
    br_engine *e = open_with(tdir, &o);
    br_engine_stats st;
    for (int i = 0; i < 2000; i++) { /* until the thread is inside a merge */
        br_engine_stats_get(e, &st);
        if (st.compact_running)
            break;
        usleep(1000);
    }
    cr_assert_eq(st.compact_running, 1, "the compaction thread started a merge");
    cr_assert_eq(br_engine_close(e), 0);
    cr_assert_eq(count_files(tdir, ".data.tmp"), 0);
    o = small_opts();
    e = open_with(tdir, &o);
    check(e, md, "after the abandoned merge");
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.problems, 0);
    br_engine_close(e);
}

/* A bad record in an input: that merge is refused with BR_ECORRUPT,
 * nothing changes, and the error is logged with the file. */
Test(compact, corrupt_input_refuses_the_merge_and_changes_nothing) {
    br_engine_options o = small_opts();
    build_history(tdir, &o, md);
    /* Damage a value byte in the oldest data file; its hint lets open
     * skip reading it. */
    char *p = tu_path(tdir, "0000000001.data");
    int fd = open(p, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, 200), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, 200), 1);
    close(fd);
    br_engine *e = open_with(tdir, &o);
    br_engine_stats st0, st1;
    br_engine_stats_get(e, &st0);
    cr_assert_eq(br_engine_compact(e, 0), BR_ECORRUPT);
    br_engine_stats_get(e, &st1);
    cr_assert_eq(st1.keys, st0.keys);
    cr_assert_eq(count_files(tdir, ".data.tmp"), 0);
    cr_assert_eq(access(p, F_OK), 0, "the damaged file is still there");
    br_engine_close(e);
    free(p);
}

/* The operator's trigger: br_engine_compact_start returns at once and the
 * compaction thread does the work (even with background compaction off);
 * bad arguments are refused and change nothing. */
Test(compact, compact_start_hands_the_work_to_the_thread, .timeout = 60) {
    br_engine_options o = small_opts();
    o.compact_interval_ms = 60000; /* only the request wakes it */
    br_engine *e = open_with(tdir, &o);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < NKEYS; i++)
            put(e, md, i, (uint64_t)round);
    cr_assert_eq(br_engine_compact_start(e, 101), BR_EINVAL);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    cr_assert_eq(st.compactions, 0);
    cr_assert_eq(br_engine_compact_start(e, 0), 0);
    for (int i = 0; i < 5000; i++) {
        br_engine_stats_get(e, &st);
        if (st.compactions > 0 && !st.compact_running)
            break;
        usleep(1000);
    }
    cr_assert_gt(st.compactions, 0, "the thread ran the requested compaction");
    check(e, md, "after a requested compaction");
    br_engine_close(e);
    o.read_only = 1;
    e = open_with(tdir, &o);
    cr_assert_eq(br_engine_compact_start(e, 0), BR_EREADONLY);
    cr_assert_eq(br_engine_compact(e, 0), BR_EREADONLY);
    br_engine_close(e);
}

/*
 * Found by test_crash under ASan: a replaced file still pinned by a reader
 * (so not deleted yet) is listed only by its merge output O1; when O1 is
 * itself merged into O2 and deleted, O2 must list the pinned file too, or a
 * crash lets it come back at the next open — with it, a put whose
 * tombstone the first merge dropped. Here: a put in the first file, its
 * delete later, an iterator pinning the first file across two merges, then
 * a crash (the child exits with the iterator open).
 */
Test(compact, files_replaced_twice_while_pinned_stay_replaced) {
    br_engine_options o = small_opts();
    br_engine *e = open_with(tdir, &o);
    for (int i = 0; i < NKEYS; i++)
        put(e, md, i, 50);
    for (int i = 0; i < NKEYS; i += 2)
        del(e, md, i);
    for (int i = 0; i < 200; i++) /* the deletes into closed files */
        put(e, md, NKEYS - 1, (uint64_t)i + 300);
    cr_assert_eq(br_engine_close(e), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        br_engine *c;
        if (br_engine_open(tdir, &o, &c, NULL, 0) != 0)
            _exit(2);
        /* Pin the first file: a page of keys whose records lie in it. */
        br_iter *it;
        const void *k, *v;
        size_t kl, vl;
        if (br_engine_iter(c, NULL, 0, NULL, 0, 0, &it) != 0 ||
            br_iter_next(it, &k, &kl, &v, &vl) != 1)
            _exit(3);
        if (br_engine_compact(c, 0) != 0) /* O1: drops the tombstones */
            _exit(4);
        model *mm = calloc(1, sizeof *mm);
        for (int i = 1; i < NKEYS; i += 2) /* O1 now dead: merge it again */
            put(c, mm, i, 60);
        for (int i = 0; i < 200; i++)
            put(c, mm, NKEYS - 1, (uint64_t)i + 700);
        if (br_engine_compact(c, 0) != 0) /* O2 replaces O1; O1 is deleted */
            _exit(5);
        _exit(0); /* a crash: the iterator still pins the first file */
    }
    wait_child_ok(pid, "the child did not get through both merges");
    e = open_with(tdir, &o);
    char k[32];
    for (int i = 0; i < NKEYS; i += 2) {
        keyname(k, sizeof k, i);
        size_t vl;
        int rc = br_engine_get_into(e, k, strlen(k), NULL, 0, &vl);
        cr_assert_eq(rc, BR_ENOTFOUND, "deleted %s came back (%s)", k, br_strerror(rc));
    }
    br_engine_close(e);
}
