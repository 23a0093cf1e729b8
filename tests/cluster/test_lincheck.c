/*
 * Tests of the linearizability checker (lincheck.h): classic examples both
 * ways, unknown and failed outcomes, random linearizable histories and
 * targeted corruptions of them, the parser, the shrinker, the budget, and
 * the speed on a large history.
 */
#include "lincheck.h"

#include <bitraft/error.h>

#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static lc_verdict check_text(const char *text) {
    lc_history h = {0};
    char err[256] = "";
    int rc = lc_history_parse_str(text, &h, err, sizeof(err));
    cr_assert_eq(rc, 0, "parse: %s", err);
    lc_report rep;
    lc_verdict v = lc_check(&h, NULL, &rep);
    lc_report_free(&rep);
    lc_history_free(&h);
    return v;
}

#define LIN(text) cr_assert_eq(check_text(text), LC_LINEARIZABLE, "expected linearizable")
#define BAD(text) cr_assert_eq(check_text(text), LC_VIOLATION, "expected a violation")

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/*
 * A random linearizable history: ops take effect one at a time at points
 * 1000, 2000, ... on a sequential model; each client's ops then get
 * intervals widened around their points, up to halfway to the client's
 * neighbouring points, so ops of different clients overlap. p_unknown and
 * p_fail (percent) make ops unknown (a write then happens or not, at
 * random) or failed (it does not happen).
 */
static void gen(lc_history *h, uint64_t seed, int nops, int nkeys, int nclients, int p_unknown,
                int p_fail) {
    uint64_t s = seed;
    int64_t *pt = calloc((size_t)nops, sizeof(*pt));
    int *cl = calloc((size_t)nops, sizeof(*cl));
    int *prev = malloc((size_t)nclients * sizeof(int));
    int *nextop = malloc((size_t)nops * sizeof(int));
    char **state = calloc((size_t)nkeys, sizeof(char *));
    lc_op *ops = calloc((size_t)nops, sizeof(*ops));
    char(*vals)[32] = calloc((size_t)nops, sizeof(*vals));
    char(*keys)[16] = calloc((size_t)nkeys, sizeof(*keys));
    for (int k = 0; k < nkeys; k++)
        snprintf(keys[k], sizeof(keys[k]), "k%d", k);
    for (int c = 0; c < nclients; c++)
        prev[c] = -1;
    for (int i = 0; i < nops; i++) {
        pt[i] = 1000LL * (i + 1);
        cl[i] = (int)(rnd(&s) % (uint64_t)nclients);
        nextop[i] = -1;
        if (prev[cl[i]] >= 0)
            nextop[prev[cl[i]]] = i;
        lc_op *o = &ops[i];
        o->client = (uint32_t)cl[i];
        int k = (int)(rnd(&s) % (uint64_t)nkeys);
        o->key = keys[k];
        int r = (int)(rnd(&s) % 100);
        o->kind = r < 50 ? LC_GET : r < 90 ? LC_PUT : LC_DEL;
        o->outcome = LC_OK;
        int ro = (int)(rnd(&s) % 100);
        if (ro < p_unknown)
            o->outcome = LC_UNKNOWN;
        else if (ro < p_unknown + p_fail)
            o->outcome = LC_FAIL;
        bool happens = o->outcome == LC_OK || (o->outcome == LC_UNKNOWN && rnd(&s) % 2);
        if (o->kind == LC_PUT) {
            snprintf(vals[i], sizeof(vals[i]), "v%d", i);
            o->value = vals[i];
            if (happens)
                state[k] = vals[i];
        } else if (o->kind == LC_GET) {
            o->result = o->outcome == LC_OK ? state[k] : NULL;
        } else {
            if (o->outcome == LC_OK)
                o->del_result = state[k] ? LC_DEL_FOUND : LC_DEL_ABSENT;
            if (happens)
                state[k] = NULL;
        }
        /* Interval: from halfway after the client's previous point. */
        int64_t lo = prev[cl[i]] >= 0 ? (pt[prev[cl[i]]] + pt[i]) / 2 + 1 : pt[i] - 500;
        o->call_ns = pt[i] - (int64_t)(rnd(&s) % (uint64_t)(pt[i] - lo + 1));
        prev[cl[i]] = i;
    }
    for (int i = 0; i < nops; i++) {
        int64_t hi = nextop[i] >= 0 ? (pt[i] + pt[nextop[i]]) / 2 : pt[i] + 500;
        ops[i].return_ns = pt[i] + (int64_t)(rnd(&s) % (uint64_t)(hi - pt[i] + 1));
        if (ops[i].outcome == LC_UNKNOWN)
            ops[i].return_ns = LC_INF;
        char err[128];
        int rc = lc_history_add(h, &ops[i], err, sizeof(err));
        cr_assert_eq(rc, 0, "gen: %s", err);
    }
    free(pt);
    free(cl);
    free(prev);
    free(nextop);
    free(state);
    free(ops);
    free(vals);
    free(keys);
}

static lc_verdict check_h(const lc_history *h) {
    lc_report rep;
    lc_verdict v = lc_check(h, NULL, &rep);
    lc_report_free(&rep);
    return v;
}

static void set_result(lc_op *o, const char *v) {
    free(o->result);
    o->result = v ? strdup(v) : NULL;
}

/* ------------------------------------------------------------------------
 * Classic examples
 * ------------------------------------------------------------------------ */

Test(classic, empty_and_sequential) {
    LIN("");
    LIN("# only a comment\n\n");
    LIN("0 get k - 0 10 ok -\n"
        "0 put k a 20 30 ok -\n"
        "0 get k - 40 50 ok a\n"
        "0 del k - 60 70 ok found\n"
        "0 get k - 80 90 ok -\n"
        "0 del k - 100 110 ok absent\n");
}

Test(classic, stale_read_after_completed_write) {
    BAD("0 put k a 0 10 ok -\n"
        "0 put k b 20 30 ok -\n"
        "1 get k - 40 50 ok a\n");
    /* The same read while b is still in flight is fine. */
    LIN("0 put k a 0 10 ok -\n"
        "0 put k b 20 60 ok -\n"
        "1 get k - 40 50 ok a\n");
}

Test(classic, lost_write) {
    BAD("0 put k a 0 10 ok -\n"
        "1 get k - 20 30 ok -\n");
    LIN("0 put k a 0 25 ok -\n"
        "1 get k - 20 30 ok -\n");
}

Test(classic, read_of_a_value_never_written) {
    BAD("0 put k a 0 10 ok -\n"
        "1 get k - 5 30 ok zzz\n");
}

Test(classic, read_your_writes) {
    BAD("0 put k a 0 10 ok -\n"
        "0 get k - 20 30 ok -\n");
    BAD("0 put k a 0 10 ok -\n"
        "0 put k b 20 30 ok -\n"
        "0 get k - 40 50 ok a\n");
    /* Another client's concurrent write may hide mine. */
    LIN("0 put k a 0 10 ok -\n"
        "1 put k b 5 35 ok -\n"
        "0 get k - 20 30 ok b\n");
}

Test(classic, overlapping_ops_fine_in_one_order_only) {
    /* put(a) is long: b, then a, explains both reads. */
    LIN("0 put k a 0 100 ok -\n"
        "1 put k b 10 20 ok -\n"
        "2 get k - 30 40 ok b\n"
        "2 get k - 50 60 ok a\n");
    /* Reversed reads: a must come after b (b completed first), so reading
     * b after a is impossible. */
    BAD("0 put k a 0 100 ok -\n"
        "1 put k b 10 20 ok -\n"
        "2 get k - 50 60 ok a\n"
        "2 get k - 70 80 ok b\n");
    /* Two concurrent writes seen in opposite orders by later reads. */
    BAD("0 put k a 0 50 ok -\n"
        "1 put k b 0 50 ok -\n"
        "2 get k - 60 70 ok a\n"
        "3 get k - 80 90 ok b\n");
    /* Reads during the writes may see either order, once. */
    LIN("0 put k a 0 50 ok -\n"
        "1 put k b 0 50 ok -\n"
        "2 get k - 10 20 ok a\n"
        "3 get k - 30 40 ok b\n");
    BAD("0 put k a 0 50 ok -\n"
        "1 put k b 0 50 ok -\n"
        "2 get k - 10 20 ok a\n"
        "3 get k - 22 28 ok b\n"
        "2 get k - 30 40 ok a\n");
}

Test(classic, many_concurrent_reads_are_cheap) {
    /* 40 reads overlap a write: each sees the old or the new value. The
     * search places reads of the current value at once, so this costs a
     * few hundred states, not 2^40. */
    char *text = malloc(8192);
    size_t len = 0;
    len += (size_t)sprintf(text + len, "0 put k a 0 10 ok -\n1 put k b 20 1000 ok -\n");
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(text + len, "%d get k - %d 900 ok %s\n", 10 + i, 20 + i,
                               i % 2 ? "a" : "b");
    lc_history h = {0};
    char err[128];
    cr_assert_eq(lc_history_parse_str(text, &h, err, sizeof(err)), 0, "%s", err);
    lc_report rep;
    cr_assert_eq(lc_check(&h, NULL, &rep), LC_LINEARIZABLE);
    cr_assert_lt(rep.states, 10000, "%" PRIu64 " states", rep.states);
    lc_report_free(&rep);
    lc_history_free(&h);
    /* One more read of a that starts after one of b ended: impossible. */
    sprintf(text + len, "99 get k - 950 960 ok a\n");
    cr_assert_eq(lc_history_parse_str(text, &h, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(lc_check(&h, NULL, &rep), LC_VIOLATION);
    cr_assert_lt(rep.states, 10000, "%" PRIu64 " states", rep.states);
    lc_report_free(&rep);
    lc_history_free(&h);
    free(text);
}

Test(classic, ties_count_as_concurrent) {
    /* A return and a call at the same instant may be in either order. */
    LIN("0 put k a 0 10 ok -\n"
        "1 get k - 10 20 ok -\n");
}

Test(classic, deleted_then_read) {
    BAD("0 put k a 0 10 ok -\n"
        "0 del k - 20 30 ok found\n"
        "1 get k - 40 50 ok a\n");
    LIN("0 put k a 0 10 ok -\n"
        "0 del k - 20 30 ok found\n"
        "1 get k - 40 50 ok -\n");
    /* A del's own report is checked too. */
    BAD("0 put k a 0 10 ok -\n"
        "1 del k - 20 30 ok absent\n");
    BAD("0 del k - 0 10 ok found\n");
    LIN("0 put k a 0 10 ok -\n"
        "1 del k - 20 30 ok -\n"
        "2 get k - 40 50 ok -\n");
}

Test(classic, keys_are_independent) {
    /* Each key alone is fine. */
    LIN("0 put x a 0 10 ok -\n"
        "1 get y - 20 30 ok -\n"
        "1 get x - 40 50 ok a\n");
    lc_history h = {0};
    char err[128];
    cr_assert_eq(lc_history_parse_str("0 put x a 0 10 ok -\n"
                                      "0 put y b 0 10 ok -\n"
                                      "1 get y - 20 30 ok -\n"
                                      "1 get x - 20 30 ok a\n",
                                      &h, err, sizeof(err)),
                 0);
    lc_report rep;
    cr_assert_eq(lc_check(&h, NULL, &rep), LC_VIOLATION);
    cr_assert_str_eq(rep.bad_key, "y");
    cr_assert_eq(rep.nkeys, 2);
    cr_assert_eq(rep.keys[0].verdict, LC_LINEARIZABLE);
    cr_assert_eq(rep.keys[1].verdict, LC_VIOLATION);
    cr_assert_eq(rep.bad_n, 2);
    lc_report_free(&rep);
    lc_history_free(&h);
}

/* ------------------------------------------------------------------------
 * Unknown and failed outcomes
 * ------------------------------------------------------------------------ */

Test(outcomes, unknown_put_may_appear_later) {
    LIN("0 put k a 0 - unknown -\n"
        "1 get k - 100 110 ok a\n");
    LIN("0 put k a 0 - unknown -\n"
        "1 get k - 100 110 ok -\n"
        "1 get k - 200 210 ok a\n");
}

Test(outcomes, unknown_put_may_never_happen) {
    LIN("0 put k a 0 - unknown -\n"
        "1 get k - 100 110 ok -\n"
        "1 get k - 200 210 ok -\n");
    /* Also when a del that found a value makes it a candidate. */
    LIN("0 put k a 0 - unknown -\n"
        "1 put k b 10 20 ok -\n"
        "1 del k - 30 40 ok found\n"
        "1 get k - 200 210 ok -\n");
}

Test(outcomes, unknown_put_not_before_its_call) {
    BAD("1 get k - 0 10 ok a\n"
        "0 put k a 20 - unknown -\n");
}

Test(outcomes, unknown_put_happens_at_most_once) {
    BAD("0 put k a 0 - unknown -\n"
        "1 put k b 10 20 ok -\n"
        "2 get k - 30 40 ok a\n"
        "2 get k - 50 60 ok b\n");
    LIN("0 put k a 0 - unknown -\n"
        "1 put k b 10 20 ok -\n"
        "2 get k - 30 40 ok a\n"
        "2 get k - 50 60 ok a\n");
    /* Seen, then gone with no write to remove it. */
    BAD("0 put k a 0 - unknown -\n"
        "1 get k - 100 110 ok a\n"
        "1 get k - 120 130 ok -\n");
}

Test(outcomes, unknown_del) {
    LIN("0 put k a 0 10 ok -\n"
        "1 del k - 20 - unknown -\n"
        "2 get k - 30 40 ok a\n"
        "2 get k - 50 60 ok -\n");
    BAD("0 put k a 0 10 ok -\n"
        "1 del k - 20 - unknown -\n"
        "2 get k - 30 40 ok -\n"
        "2 get k - 50 60 ok a\n");
}

Test(outcomes, failed_ops_did_not_happen) {
    BAD("0 put k a 0 10 fail -\n"
        "1 get k - 20 30 ok a\n");
    LIN("0 put k a 0 10 fail -\n"
        "1 get k - 20 30 ok -\n");
    LIN("0 put k a 0 10 ok -\n"
        "1 del k - 15 20 fail -\n"
        "1 get k - 20 30 ok a\n");
}

Test(outcomes, unknown_get_imposes_nothing) {
    LIN("0 put k a 0 10 ok -\n"
        "1 get k - 20 - unknown -\n"
        "1 get k - 30 40 ok a\n");
}

/* ------------------------------------------------------------------------
 * Random histories and corruptions
 * ------------------------------------------------------------------------ */

Test(random, widened_sequential_histories_are_linearizable) {
    for (uint64_t seed = 1; seed <= 200; seed++) {
        lc_history h = {0};
        int nkeys = 1 + (int)(seed % 4), nclients = 2 + (int)(seed % 9);
        gen(&h, seed, 300, nkeys, nclients, seed % 3 ? 5 : 0, seed % 2 ? 5 : 0);
        lc_verdict v = check_h(&h);
        cr_assert_eq(v, LC_LINEARIZABLE, "seed %" PRIu64 ": verdict %d", seed, v);
        lc_history_free(&h);
    }
}

/* Finds two ok puts p1 -> p2 (real time) and an ok get g after p2, all on
 * g's key; returns false if none. */
static bool find_stale(const lc_history *h, size_t *p1, size_t *g) {
    for (size_t i = 0; i < h->n; i++) {
        const lc_op *gi = &h->ops[i];
        if (gi->kind != LC_GET || gi->outcome != LC_OK)
            continue;
        for (size_t j = 0; j < h->n; j++) {
            const lc_op *b = &h->ops[j];
            if (b->kind != LC_PUT || b->outcome != LC_OK || strcmp(b->key, gi->key) ||
                b->return_ns >= gi->call_ns)
                continue;
            for (size_t k = 0; k < h->n; k++) {
                const lc_op *a = &h->ops[k];
                if (a->kind == LC_PUT && a->outcome == LC_OK && !strcmp(a->key, gi->key) &&
                    a->return_ns < b->call_ns) {
                    *p1 = k;
                    *g = i;
                    return true;
                }
            }
        }
    }
    return false;
}

Test(random, corruptions_are_detected) {
    int stale = 0, future = 0, never = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        lc_history h = {0};
        gen(&h, seed, 200, 2, 6, 4, 4);
        cr_assert_eq(check_h(&h), LC_LINEARIZABLE);
        uint64_t s = seed * 7919;
        int kind = (int)(seed % 3);
        /* Stale read: a get after p2 returns the value of p1, which p2
         * overwrote before the get began. */
        size_t p1, g;
        if (kind == 0 && find_stale(&h, &p1, &g)) {
            set_result(&h.ops[g], h.ops[p1].value);
            cr_assert_eq(check_h(&h), LC_VIOLATION, "stale read, seed %" PRIu64, seed);
            stale++;
        } else if (kind == 1) {
            /* Read from the future: a get returns the value of a put that
             * was called after the get returned. */
            bool done = false;
            for (size_t i = 0; i < h.n && !done; i++) {
                if (h.ops[i].kind != LC_GET || h.ops[i].outcome != LC_OK)
                    continue;
                for (size_t j = 0; j < h.n && !done; j++) {
                    const lc_op *p = &h.ops[j];
                    if (p->kind == LC_PUT && p->outcome != LC_FAIL &&
                        !strcmp(p->key, h.ops[i].key) && p->call_ns > h.ops[i].return_ns) {
                        set_result(&h.ops[i], p->value);
                        done = true;
                    }
                }
            }
            cr_assert(done);
            cr_assert_eq(check_h(&h), LC_VIOLATION, "future read, seed %" PRIu64, seed);
            future++;
        } else {
            /* A read of a value nobody wrote. */
            size_t i;
            do
                i = rnd(&s) % h.n;
            while (h.ops[i].kind != LC_GET || h.ops[i].outcome != LC_OK);
            set_result(&h.ops[i], "never-written");
            cr_assert_eq(check_h(&h), LC_VIOLATION, "phantom read, seed %" PRIu64, seed);
            never++;
        }
        lc_history_free(&h);
    }
    cr_assert(stale > 5 && future > 5 && never > 5, "%d %d %d", stale, future, never);
}

Test(random, dropping_a_read_write_breaks_it) {
    /* A lost write: mark as failed an ok put whose value some get read. */
    int done = 0;
    for (uint64_t seed = 100; seed < 130; seed++) {
        lc_history h = {0};
        gen(&h, seed, 200, 2, 6, 0, 0);
        for (size_t i = 0; i < h.n; i++) {
            if (h.ops[i].kind != LC_GET || h.ops[i].result == NULL)
                continue;
            for (size_t j = 0; j < h.n; j++)
                if (h.ops[j].kind == LC_PUT && !strcmp(h.ops[j].value, h.ops[i].result)) {
                    h.ops[j].outcome = LC_FAIL;
                    break;
                }
            break;
        }
        cr_assert_eq(check_h(&h), LC_VIOLATION, "seed %" PRIu64, seed);
        done++;
        lc_history_free(&h);
    }
    cr_assert_eq(done, 30);
}

/* ------------------------------------------------------------------------
 * The parser
 * ------------------------------------------------------------------------ */

static void parse_fails(const char *text, const char *want) {
    lc_history h = {0};
    char err[256] = "";
    int rc = lc_history_parse_str(text, &h, err, sizeof(err));
    cr_assert_eq(rc, BR_EINVAL, "accepted: %s", text);
    cr_assert(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
    lc_history_free(&h);
}

Test(parser, rejects_bad_lines_with_their_number) {
    const char *ok = "0 put k a 0 10 ok -\n";
    (void)ok;
    parse_fails("0 put k a 0 10 ok\n", "line 1: expected 8 fields, found 7");
    parse_fails("0 put k a 0 10 ok - extra\n", "line 1: expected 8 fields");
    parse_fails("0 put k a 0 10 ok -\n# c\n\n1 cas k a 0 10 ok -\n", "line 4: unknown operation");
    parse_fails("x put k a 0 10 ok -\n", "line 1: bad client id");
    parse_fails("0 put k a zero 10 ok -\n", "line 1: bad call time");
    parse_fails("0 put k a 0 ten ok -\n", "line 1: bad return time");
    parse_fails("0 put k a 0 10 maybe -\n", "line 1: unknown outcome");
    parse_fails("0 put k - 0 10 ok -\n", "line 1: put needs a value");
    parse_fails("0 get k a 0 10 ok -\n", "line 1: get takes no value");
    parse_fails("0 put k a 0 - ok -\n", "line 1: an ok operation needs a return time");
    parse_fails("0 put k a 10 5 ok -\n", "line 1: an ok operation needs a return time >=");
    parse_fails("0 del k - 0 10 ok maybe\n", "line 1: del result");
    parse_fails("0 put k a 0 10 ok b\n", "line 1: a put has no result");
    parse_fails("0 put k a\x01 0 10 ok -\n", "line 1: field 4 has a byte outside");
    parse_fails("0 put k\xc3\xa9 a 0 10 ok -\n", "line 1: field 3 has a byte outside");
    parse_fails("0 put k a 99999999999999999999 10 ok -\n", "bad call time");
    parse_fails("0 put k a -5 10 ok -\n", "bad call time");
}

Test(parser, accepts_tabs_crlf_comments_and_round_trips) {
    lc_history h = {0};
    char err[256] = "";
    const char *text = "# a comment\r\n"
                       "\n"
                       "3\tput\tk:1\tv/1\t5\t9\tok\t-\r\n"
                       "4 get k:1 - 6 7 ok v/1\n"
                       "5 get k:1 - 6 - unknown -\n"
                       "6 del k:1 - 8 12 ok found\n"
                       "7 del k:1 - 13 14 fail -\n"
                       "8 put k:1 w 15 77 unknown -"; /* no final newline */
    cr_assert_eq(lc_history_parse_str(text, &h, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(h.n, 6);
    cr_assert_eq(h.ops[0].client, 3);
    cr_assert_eq(h.ops[0].line, 3);
    cr_assert_str_eq(h.ops[0].key, "k:1");
    cr_assert_str_eq(h.ops[1].result, "v/1");
    cr_assert_eq(h.ops[2].return_ns, LC_INF);
    cr_assert_eq(h.ops[3].del_result, LC_DEL_FOUND);
    cr_assert_eq(h.ops[5].return_ns, LC_INF, "an unknown op's return time is ignored");

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (size_t i = 0; i < h.n; i++)
        lc_op_write(f, &h.ops[i]);
    fclose(f);
    lc_history h2 = {0};
    cr_assert_eq(lc_history_parse_str(buf, &h2, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(h2.n, h.n);
    for (size_t i = 0; i < h.n; i++) {
        cr_assert_eq(h2.ops[i].kind, h.ops[i].kind);
        cr_assert_eq(h2.ops[i].call_ns, h.ops[i].call_ns);
        cr_assert_eq(h2.ops[i].return_ns, h.ops[i].return_ns);
        cr_assert_eq(h2.ops[i].outcome, h.ops[i].outcome);
        cr_assert_eq(h2.ops[i].del_result, h.ops[i].del_result);
    }
    free(buf);
    lc_history_free(&h);
    lc_history_free(&h2);
}

Test(parser, file_interface) {
    char *buf = strdup("0 put k a 0 10 ok -\n0 get k - 20 30 ok a\n1 bad\n");
    FILE *f = fmemopen(buf, strlen(buf), "r");
    lc_history h = {0};
    char err[256] = "";
    cr_assert_eq(lc_history_parse(f, &h, err, sizeof(err)), BR_EINVAL);
    cr_assert(strstr(err, "line 3") != NULL, "%s", err);
    cr_assert_eq(h.n, 2, "the lines before the bad one are kept");
    fclose(f);
    free(buf);
    lc_history_free(&h);
}

/* ------------------------------------------------------------------------
 * The shrinker
 * ------------------------------------------------------------------------ */

/* Asserts that ops[out[0..m)] violates on its own and that with any one of
 * them dropped (but a put whose value a kept get read), and every op of
 * all[0..n) not in out taken as unknown, the history is linearizable (the
 * shrinker's 1-minimality). */
static void assert_one_minimal(const lc_op *ops, const size_t *all, size_t n, const size_t *out,
                               size_t m) {
    cr_assert_eq(lc_check_ops(ops, out, m, NULL, NULL), LC_VIOLATION);
    size_t *sub = malloc((n + 1) * sizeof(*sub));
    for (size_t skip = 0; skip < m; skip++) {
        bool read = false; /* a put whose value a kept get read stays */
        for (size_t i = 0; i < m; i++)
            read |= ops[out[skip]].kind == LC_PUT && ops[out[i]].kind == LC_GET &&
                    ops[out[i]].result && !strcmp(ops[out[i]].result, ops[out[skip]].value);
        if (read)
            continue;
        size_t k = 0;
        for (size_t i = 0; i < m; i++)
            if (i != skip)
                sub[k++] = out[i];
        size_t kept = k;
        sub[k++] = out[skip];
        for (size_t i = 0; i < n; i++) {
            bool in = false;
            for (size_t j = 0; j < m; j++)
                in |= all[i] == out[j];
            if (!in)
                sub[k++] = all[i];
        }
        cr_assert_eq(lc_check_mixed(ops, sub, k, kept, NULL, NULL), LC_LINEARIZABLE,
                     "not 1-minimal: op %zu can go", skip);
    }
    free(sub);
}

Test(shrink, stale_read_in_a_long_history) {
    for (uint64_t seed = 1; seed <= 20; seed++) {
        lc_history h = {0};
        gen(&h, seed, 400, 1, 6, 3, 3);
        size_t p1, g;
        if (!find_stale(&h, &p1, &g)) {
            lc_history_free(&h);
            continue;
        }
        set_result(&h.ops[g], h.ops[p1].value);
        lc_report rep;
        cr_assert_eq(lc_check(&h, NULL, &rep), LC_VIOLATION);
        size_t *out = malloc(rep.bad_n * sizeof(*out));
        size_t m = lc_shrink(h.ops, rep.bad_ops, rep.bad_n, NULL, out);
        if (m < 3 || m > 6)
            lc_print_table(stderr, h.ops, out, m);
        cr_assert(m >= 3 && m <= 6, "seed %" PRIu64 ": %zu ops", seed, m);
        assert_one_minimal(h.ops, rep.bad_ops, rep.bad_n, out, m);
        free(out);
        lc_report_free(&rep);
        lc_history_free(&h);
    }
}

Test(shrink, classic_examples_shrink_to_their_core) {
    lc_history h = {0};
    char err[256];
    /* Noise around a stale read: the core is put a, put b, get -> a. */
    cr_assert_eq(lc_history_parse_str("5 get k - 0 5 ok -\n"
                                      "0 put k a 10 20 ok -\n"
                                      "6 get k - 12 40 ok a\n"
                                      "1 put k b 30 40 ok -\n"
                                      "6 get k - 45 46 ok b\n"
                                      "2 get k - 50 60 ok a\n"
                                      "3 put k c 70 80 ok -\n"
                                      "4 get k - 90 95 ok c\n",
                                      &h, err, sizeof(err)),
                 0, "%s", err);
    size_t idx[8], out[8];
    for (size_t i = 0; i < 8; i++)
        idx[i] = i;
    size_t m = lc_shrink(h.ops, idx, 8, NULL, out);
    assert_one_minimal(h.ops, idx, 8, out, m);
    cr_assert_eq(m, 3, "got %zu ops", m);
    cr_assert_eq(out[0], 1);
    cr_assert_eq(out[1], 3);
    cr_assert_eq(out[2], 5);
    /* A linearizable input shrinks to nothing. */
    cr_assert_eq(lc_shrink(h.ops, idx, 5, NULL, out), 0);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    lc_print_table(f, h.ops, out, m);
    fclose(f);
    cr_assert(strstr(buf, "put(k, a)") != NULL, "%s", buf);
    cr_assert(strstr(buf, "get(k) -> a") != NULL, "%s", buf);
    cr_assert(strstr(buf, "0.000") != NULL, "times are relative: %s", buf);
    free(buf);
    lc_history_free(&h);
}

/* ------------------------------------------------------------------------
 * Budget and speed
 * ------------------------------------------------------------------------ */

/* n concurrent puts on one key, then two reads of different values that
 * cannot both be last: the search must try the orders of the puts (2^n
 * sets of them, each with its last value) before it can say no — the
 * exponential worst case. */
static void hard_history(lc_history *h, int n) {
    char err[128];
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        lc_op p = {.client = (uint32_t)i,
                   .kind = LC_PUT,
                   .key = "k",
                   .value = v,
                   .call_ns = 0,
                   .return_ns = 1000,
                   .outcome = LC_OK};
        cr_assert_eq(lc_history_add(h, &p, err, sizeof(err)), 0);
    }
    lc_op bad = {.client = 999,
                 .kind = LC_GET,
                 .key = "k",
                 .result = "v0",
                 .call_ns = 2000,
                 .return_ns = 3000,
                 .outcome = LC_OK};
    lc_op bad2 = {.client = 998,
                  .kind = LC_GET,
                  .key = "k",
                  .result = "v1",
                  .call_ns = 4000,
                  .return_ns = 5000,
                  .outcome = LC_OK};
    cr_assert_eq(lc_history_add(h, &bad, err, sizeof(err)), 0);
    cr_assert_eq(lc_history_add(h, &bad2, err, sizeof(err)), 0);
}

Test(budget, a_tiny_budget_is_inconclusive_not_a_hang) {
    lc_history h = {0};
    hard_history(&h, 22);
    lc_limits lim = {.max_states = 1000};
    lc_report rep;
    cr_assert_eq(lc_check(&h, &lim, &rep), LC_INCONCLUSIVE);
    cr_assert_str_eq(rep.bad_key, "k");
    lc_report_free(&rep);
    lc_limits slow = {.max_seconds = 0.2};
    double t0 = now_s();
    cr_assert_eq(lc_check(&h, &slow, &rep), LC_INCONCLUSIVE);
    cr_assert(now_s() - t0 < 5.0, "the time budget is kept");
    lc_report_free(&rep);
    lc_history_free(&h);
    /* Smaller, it is decided within the default budget. */
    hard_history(&h, 6);
    cr_assert_eq(lc_check(&h, NULL, &rep), LC_VIOLATION);
    lc_report_free(&rep);
    lc_history_free(&h);
}

Test(speed, twenty_thousand_ops_five_keys_sixteen_clients) {
    lc_history h = {0};
    gen(&h, 42, 20000, 5, 16, 1, 1);
    double t0 = now_s();
    lc_report rep;
    lc_verdict v = lc_check(&h, NULL, &rep);
    double dt = now_s() - t0;
    cr_log_info("20000 ops, 5 keys, 16 clients: %.3f s, %" PRIu64 " states", dt, rep.states);
    printf("speed: 20000 ops, 5 keys, 16 clients: %.3f s, %" PRIu64 " states\n", dt, rep.states);
    cr_assert_eq(v, LC_LINEARIZABLE);
    cr_assert(dt < 60, "took %.1f s", dt);
    lc_report_free(&rep);

    /* One corrupted read in it is found, and shrinks to a handful of ops. */
    size_t p1, g;
    cr_assert(find_stale(&h, &p1, &g));
    set_result(&h.ops[g], h.ops[p1].value);
    t0 = now_s();
    cr_assert_eq(lc_check(&h, NULL, &rep), LC_VIOLATION);
    size_t *out = malloc(rep.bad_n * sizeof(*out));
    size_t m = lc_shrink(h.ops, rep.bad_ops, rep.bad_n, NULL, out);
    dt = now_s() - t0;
    printf("speed: found and shrunk a stale read in %.3f s to %zu ops\n", dt, m);
    cr_assert(m >= 3 && m <= 6, "%zu", m);
    cr_assert(dt < 120, "took %.1f s", dt);
    free(out);
    lc_report_free(&rep);
    lc_history_free(&h);
}

Test(speed, one_hot_key) {
    lc_history h = {0};
    gen(&h, 7, 5000, 1, 16, 1, 1);
    double t0 = now_s();
    lc_report rep;
    lc_verdict v = lc_check(&h, NULL, &rep);
    double dt = now_s() - t0;
    printf("speed: 5000 ops, 1 key, 16 clients: %.3f s, %" PRIu64 " states\n", dt, rep.states);
    cr_assert_eq(v, LC_LINEARIZABLE);
    lc_report_free(&rep);
    lc_history_free(&h);
}
