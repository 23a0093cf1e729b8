/* test_keydir.c - the B+tree key index against a simple model. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/error.h"
#include "engine/keydir.h"

static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Model: key space of `n` keys, key j built deterministically. */
typedef struct mkey {
    uint8_t *k;
    size_t len;
    int present;
    br_loc loc;
} mkey;

static int mkey_cmp(const void *a, const void *b) {
    const mkey *x = a, *y = b;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, m);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Builds n distinct keys of mixed shapes: shared prefixes, short keys,
 * binary bytes, long (out-of-line) keys. Sorted bytewise. */
static int wide_keys; /* nonzero: every key 100-180 random bytes (tall trees) */

static mkey *make_keys(size_t n) {
    mkey *ks = calloc(n, sizeof *ks);
    for (size_t j = 0; j < n; j++) {
        uint8_t buf[700];
        size_t len;
        switch (wide_keys ? 5 : j % 5) {
        case 5:
            len = 100 + rnd() % 81;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rnd();
            memcpy(buf, &j, sizeof j); /* distinct */
            break;
        case 0:
            len = (size_t)snprintf((char *)buf, sizeof buf, "%016zu", j);
            break;
        case 1:
            len = (size_t)snprintf((char *)buf, sizeof buf, "user:%zu", j * 7919);
            break;
        case 2:
            len = 1 + j % 13;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)((j >> (i % 8)) * 31 + i);
            buf[0] = (uint8_t)(j % 256);
            memcpy(buf + len, &j, sizeof j);
            len += sizeof j;
            break;
        case 3:
            len = 190 + j % 400; /* around and beyond the out-of-line threshold */
            memset(buf, 'L', len);
            memcpy(buf + len - sizeof j, &j, sizeof j);
            break;
        default:
            len = (size_t)snprintf((char *)buf, sizeof buf, "k%zu", j);
            break;
        }
        ks[j].k = malloc(len);
        memcpy(ks[j].k, buf, len);
        ks[j].len = len;
    }
    qsort(ks, n, sizeof *ks, mkey_cmp);
    return ks;
}

static void free_keys(mkey *ks, size_t n) {
    for (size_t j = 0; j < n; j++)
        free(ks[j].k);
    free(ks);
}

typedef struct scan_ctx {
    mkey *ks;
    size_t n, pos, seen;
} scan_ctx;

static int scan_cb(void *ctx, const uint8_t *key, size_t klen, br_loc loc) {
    scan_ctx *c = ctx;
    while (c->pos < c->n && !c->ks[c->pos].present)
        c->pos++;
    cr_assert(c->pos < c->n, "scan returned more keys than the model has");
    mkey *m = &c->ks[c->pos++];
    cr_assert(klen == m->len && memcmp(key, m->k, klen) == 0, "scan order differs from model");
    cr_assert(loc.file_id == m->loc.file_id && loc.offset == m->loc.offset);
    c->seen++;
    return 0;
}

static void check_all(br_keydir *kd, mkey *ks, size_t n) {
    cr_assert_eq(br_kd_check(kd), 0, "tree invariants broken");
    size_t live = 0;
    for (size_t j = 0; j < n; j++) {
        br_loc loc;
        int r = br_kd_get(kd, ks[j].k, ks[j].len, &loc);
        cr_assert_eq(r, ks[j].present, "key %zu presence", j);
        if (r)
            cr_assert(loc.file_id == ks[j].loc.file_id && loc.offset == ks[j].loc.offset &&
                      loc.vlen == ks[j].loc.vlen);
        live += ks[j].present;
    }
    cr_assert_eq(br_kd_count(kd), live);
    scan_ctx c = {ks, n, 0, 0};
    br_kd_scan(kd, NULL, 0, 0, NULL, 0, 0, scan_cb, &c);
    cr_assert_eq(c.seen, live);
}

static void random_ops(uint64_t seed, size_t n, size_t ops, int del_pct) {
    rng_state = seed;
    mkey *ks = make_keys(n);
    br_keydir *kd = br_kd_new();
    for (size_t op = 0; op < ops; op++) {
        size_t j = rnd() % n;
        if ((int)(rnd() % 100) < del_pct) {
            br_loc old;
            int r = br_kd_del(kd, ks[j].k, ks[j].len, &old);
            cr_assert_eq(r, ks[j].present, "del result, seed %llu op %zu", (unsigned long long)seed,
                         op);
            if (r)
                cr_assert_eq(old.offset, ks[j].loc.offset);
            ks[j].present = 0;
        } else {
            br_loc loc = {(uint32_t)(rnd() % 1000 + 1), (uint32_t)rnd(), (uint32_t)(rnd() % 100)};
            br_loc old;
            int r = br_kd_put(kd, ks[j].k, ks[j].len, loc, &old);
            cr_assert_eq(r, ks[j].present, "put result");
            if (r)
                cr_assert_eq(old.offset, ks[j].loc.offset);
            ks[j].present = 1;
            ks[j].loc = loc;
        }
        if (op % 5000 == 4999)
            check_all(kd, ks, n);
    }
    check_all(kd, ks, n);
    /* Delete everything: the tree must shrink back to one empty leaf. */
    for (size_t j = 0; j < n; j++) {
        br_kd_del(kd, ks[j].k, ks[j].len, NULL);
        ks[j].present = 0;
    }
    check_all(kd, ks, n);
    cr_assert_eq(br_kd_count(kd), 0);
    cr_assert_leq(br_kd_mem_bytes(kd), 4096);
    br_kd_free(kd);
    free_keys(ks, n);
}

Test(keydir, empty) {
    br_keydir *kd = br_kd_new();
    br_loc loc;
    cr_assert_eq(br_kd_get(kd, "a", 1, &loc), 0);
    cr_assert_eq(br_kd_del(kd, "a", 1, NULL), 0);
    cr_assert_eq(br_kd_count(kd), 0);
    cr_assert_eq(br_kd_check(kd), 0);
    br_kd_free(kd);
}

Test(keydir, put_get_overwrite) {
    br_keydir *kd = br_kd_new();
    br_loc a = {1, 100, 5}, b = {2, 200, 6}, got, old;
    cr_assert_eq(br_kd_put(kd, "key", 3, a, NULL), 0);
    cr_assert_eq(br_kd_put(kd, "key", 3, b, &old), 1);
    cr_assert_eq(old.offset, 100);
    cr_assert_eq(br_kd_get(kd, "key", 3, &got), 1);
    cr_assert_eq(got.offset, 200);
    cr_assert_eq(got.vlen, 6);
    cr_assert_eq(br_kd_count(kd), 1);
    cr_assert_eq(br_kd_key_bytes(kd), 3);
    br_kd_free(kd);
}

Test(keydir, prefix_keys_are_distinct) {
    /* A key that is a prefix of another, and the empty-suffix case. */
    br_keydir *kd = br_kd_new();
    const char *keys[] = {"abc", "ab", "abcd", "a", "abd", "b", "abc\0", "\xff", "\x00"};
    size_t lens[] = {3, 2, 4, 1, 3, 1, 4, 1, 1};
    for (uint32_t i = 0; i < 9; i++)
        cr_assert_eq(br_kd_put(kd, keys[i], lens[i], (br_loc){i + 1, i, i}, NULL), 0);
    for (uint32_t i = 0; i < 9; i++) {
        br_loc got;
        cr_assert_eq(br_kd_get(kd, keys[i], lens[i], &got), 1);
        cr_assert_eq(got.file_id, i + 1);
    }
    cr_assert_eq(br_kd_check(kd), 0);
    br_kd_free(kd);
}

Test(keydir, replace_if_only_when_unchanged) {
    br_keydir *kd = br_kd_new();
    br_loc a = {1, 100, 5}, b = {2, 200, 6}, c = {3, 300, 7}, got;
    br_kd_put(kd, "k", 1, a, NULL);
    cr_assert_eq(br_kd_replace_if(kd, "k", 1, b, c), 0, "must not replace a newer location");
    cr_assert_eq(br_kd_replace_if(kd, "k", 1, a, c), 1);
    br_kd_get(kd, "k", 1, &got);
    cr_assert_eq(got.offset, 300);
    cr_assert_eq(br_kd_replace_if(kd, "absent", 6, a, c), 0);
    br_kd_free(kd);
}

Test(keydir, random_inserts_and_deletes, .timeout = 120) {
    random_ops(1, 3000, 60000, 30);
    random_ops(2, 20000, 80000, 10);
    random_ops(3, 500, 40000, 50);
}

Test(keydir, tall_tree_random_ops, .timeout = 120) {
    /* Keys of 100-180 incompressible bytes: ~25 per node, so 20,000 keys
     * make a tree of height 3 and exercise internal splits and removals. */
    wide_keys = 1;
    random_ops(4, 20000, 60000, 35);
}

static int count_cb(void *ctx, const uint8_t *key, size_t klen, br_loc loc) {
    (void)key, (void)klen, (void)loc;
    (*(size_t *)ctx)++;
    return 0;
}

Test(keydir, scan_bounds_and_limits) {
    br_keydir *kd = br_kd_new();
    char k[32];
    for (uint32_t i = 0; i < 10000; i += 2) {
        snprintf(k, sizeof k, "%08u", i);
        br_kd_put(kd, k, 8, (br_loc){1, i, 0}, NULL);
    }
    size_t c = 0;
    cr_assert_eq(br_kd_scan(kd, "00000101", 8, 0, "00000200", 8, 0, count_cb, &c), 50);
    c = 0;
    cr_assert_eq(br_kd_scan(kd, "00000100", 8, 1, "00000200", 8, 0, count_cb, &c), 50,
                 "exclusive start skips the start key");
    c = 0;
    cr_assert_eq(br_kd_scan(kd, "00000100", 8, 0, "00000200", 8, 0, count_cb, &c), 51,
                 "both ends inclusive");
    c = 0;
    cr_assert_eq(br_kd_scan(kd, NULL, 0, 0, NULL, 0, 7, count_cb, &c), 7, "limit");
    c = 0;
    cr_assert_eq(br_kd_scan(kd, "00000300", 8, 0, "00000200", 8, 0, count_cb, &c), 0,
                 "end before start");
    c = 0;
    cr_assert_eq(br_kd_scan(kd, "00009999", 8, 0, NULL, 0, 0, count_cb, &c), 0, "past the end");
    c = 0;
    cr_assert_eq(br_kd_scan(kd, NULL, 0, 0, NULL, 0, 0, count_cb, &c), 5000);
    br_kd_free(kd);
}

Test(keydir, memory_per_key_with_dense_numeric_keys) {
    /* The benchmark's key shape: 16-digit decimal, random order. The index
     * must stay within 32 bytes per key beyond the key itself. */
    br_keydir *kd = br_kd_new();
    rng_state = 7;
    size_t n = 200000;
    uint32_t *perm = malloc(n * sizeof *perm);
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd() % i;
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    char k[17];
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%016u", perm[i]);
        br_kd_put(kd, k, 16, (br_loc){1, (uint32_t)i, 100}, NULL);
    }
    double per_key = (double)br_kd_mem_bytes(kd) / (double)n - 16.0;
    cr_log_info("index bytes per key beyond the key: %.1f", per_key);
    cr_assert_lt(per_key, 32.0);
    cr_assert_eq(br_kd_check(kd), 0);
    free(perm);
    br_kd_free(kd);
}

Test(keydir, keys_in_order_fill_their_nodes) {
    /* Appending past the last key keeps nodes full (bulk loads, counters):
     * in-order inserts must take clearly less memory than random ones, and
     * the tree must stay sound for random work afterwards. */
    br_keydir *kd = br_kd_new();
    size_t n = 100000;
    char k[17];
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%016zu", i * 3);
        br_kd_put(kd, k, 16, (br_loc){1, (uint32_t)i, 100}, NULL);
    }
    double per_key = (double)br_kd_mem_bytes(kd) / (double)n - 16.0;
    cr_log_info("in-order inserts: %.1f index bytes per key beyond the key", per_key);
    cr_assert_lt(per_key, 10.0);
    cr_assert_eq(br_kd_check(kd), 0);
    rng_state = 11;
    for (size_t i = 0; i < 50000; i++) {
        size_t x = rnd() % (3 * n);
        snprintf(k, sizeof k, "%016zu", x);
        if (rnd() % 3 == 0)
            br_kd_del(kd, k, 16, NULL);
        else
            br_kd_put(kd, k, 16, (br_loc){2, (uint32_t)x, 1}, NULL);
    }
    cr_assert_eq(br_kd_check(kd), 0);
    br_kd_free(kd);
}

Test(keydir, in_order_inserts_of_every_key_shape) {
    /* The rightmost-leaf fast path and the append split with long
     * (out-of-line) keys, keys that extend each other, and prefix changes
     * at every node boundary; then random work on top. */
    rng_state = 21;
    mkey *ks = make_keys(6000); /* sorted, mixed shapes */
    br_keydir *kd = br_kd_new();
    for (size_t j = 0; j < 6000; j++) {
        ks[j].loc = (br_loc){(uint32_t)(j % 9 + 1), (uint32_t)j, (uint32_t)(j % 50)};
        cr_assert_eq(br_kd_put(kd, ks[j].k, ks[j].len, ks[j].loc, NULL), 0);
        ks[j].present = 1;
    }
    check_all(kd, ks, 6000);
    for (size_t op = 0; op < 20000; op++) {
        size_t j = rnd() % 6000;
        if (rnd() % 3 == 0) {
            br_kd_del(kd, ks[j].k, ks[j].len, NULL);
            ks[j].present = 0;
        } else {
            ks[j].loc.offset = (uint32_t)op;
            br_kd_put(kd, ks[j].k, ks[j].len, ks[j].loc, NULL);
            ks[j].present = 1;
        }
    }
    check_all(kd, ks, 6000);
    /* And appends again after the random work (the tail pointer may have
     * been freed or moved). */
    for (size_t j = 0; j < 6000; j++)
        if (!ks[j].present) {
            br_kd_put(kd, ks[j].k, ks[j].len, ks[j].loc, NULL);
            ks[j].present = 1;
        }
    check_all(kd, ks, 6000);
    br_kd_free(kd);
    free_keys(ks, 6000);
}
