/*
 * iter.c - ordered range reads (contract in engine.h).
 *
 * An iterator fetches keys a page at a time: under the shared lock it walks
 * the index from just after the last key it returned, copies up to a page of
 * keys with their locations and pins their files; then, without the lock,
 * it checks and returns the records one by one, values pointing into the
 * file maps. Memory stays bounded by one page whatever the range.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define ITER_PAGE 256

typedef struct it_ent {
    size_t koff;
    uint32_t klen;
    br_loc loc;
    br_datafile *f;
} it_ent;

struct br_iter {
    br_engine *e;
    uint8_t *end;
    size_t elen;
    bool has_end;
    size_t remaining; /* keys still allowed by the limit */
    it_ent ent[ITER_PAGE];
    size_t n, pos;
    uint8_t *keys; /* this page's keys */
    size_t kused, kcap;
    uint8_t *from; /* where the next page starts */
    size_t fromlen, fromcap;
    bool from_set, exclusive, eof, oom;
};

static void release_page(br_iter *it) {
    for (size_t i = 0; i < it->n; i++)
        atomic_fetch_sub_explicit(&it->ent[i].f->refs, 1, memory_order_release);
    it->n = it->pos = 0;
    it->kused = 0;
}

/* Collects one key into the page. Runs under the shared lock. */
static int collect(void *ctx, const uint8_t *key, size_t klen, br_loc loc) {
    br_iter *it = ctx;
    if (it->kused + klen > it->kcap) {
        size_t cap = it->kcap ? it->kcap : 4096;
        while (cap < it->kused + klen)
            cap *= 2;
        uint8_t *nk = realloc(it->keys, cap);
        if (!nk) {
            it->oom = true;
            return 1;
        }
        it->keys = nk;
        it->kcap = cap;
    }
    it_ent *en = &it->ent[it->n++];
    en->koff = it->kused;
    en->klen = (uint32_t)klen;
    en->loc = loc;
    en->f = it->e->files[loc.file_id];
    atomic_fetch_add_explicit(&en->f->refs, 1, memory_order_acquire);
    memcpy(it->keys + it->kused, key, klen);
    it->kused += klen;
    return it->n == ITER_PAGE;
}

static int set_from(br_iter *it, const uint8_t *key, size_t klen) {
    if (klen > it->fromcap) {
        uint8_t *nf = realloc(it->from, klen);
        if (!nf)
            return BR_ENOMEM;
        it->from = nf;
        it->fromcap = klen;
    }
    memcpy(it->from, key, klen);
    it->fromlen = klen;
    it->from_set = true;
    return 0;
}

/*
 * The values of consecutive keys lie scattered over the files. Hot: ask the
 * CPU for all of this page's records at once, so their cache misses
 * overlap. Cold (the second record's page is not in memory; the first may
 * be the end of the previous range): ask the disk for all of them at once
 * (readahead.h).
 */
static void prefetch_page(br_iter *it) {
    if (it->e->o.range_readers && it->n > 1 &&
        !br_ra_resident(it->ent[1].f, it->ent[1].loc.offset)) {
        for (size_t i = 0; i < it->n; i++) {
            const it_ent *en = &it->ent[i];
            br_ra_willneed(en->f, en->loc.offset, br_rec_size(en->klen, en->loc.vlen));
        }
        return;
    }
    for (size_t i = 0; i < it->n; i++) {
        const uint8_t *r = it->ent[i].f->map + it->ent[i].loc.offset;
        size_t len = br_rec_size(it->ent[i].klen, it->ent[i].loc.vlen);
        for (size_t o = 0; o < len && o < 512; o += 64)
            __builtin_prefetch(r + o);
    }
}

static int fetch_page(br_iter *it) {
    release_page(it);
    if (it->eof || it->remaining == 0)
        return 0;
    size_t max = it->remaining < ITER_PAGE ? it->remaining : ITER_PAGE;
    br_engine *e = it->e;
    pthread_rwlock_rdlock(&e->lock);
    br_kd_scan(e->kd, it->from_set ? it->from : NULL, it->fromlen, it->exclusive,
               it->has_end ? it->end : NULL, it->elen, max, collect, it);
    pthread_rwlock_unlock(&e->lock);
    if (it->oom)
        return BR_ENOMEM;
    if (it->n < max)
        it->eof = true;
    prefetch_page(it);
    it->remaining -= it->n;
    if (it->n) {
        const it_ent *last = &it->ent[it->n - 1];
        int rc = set_from(it, it->keys + last->koff, last->klen);
        if (rc)
            return rc;
        it->exclusive = true;
    }
    return 0;
}

int br_engine_iter(br_engine *e, const void *start, size_t slen, const void *end, size_t elen,
                   size_t limit, br_iter **out) {
    *out = NULL;
    br_iter *it = calloc(1, sizeof *it);
    if (!it)
        return BR_ENOMEM;
    it->e = e;
    it->remaining = limit ? limit : SIZE_MAX;
    int rc = 0;
    if (start && set_from(it, start, slen) != 0)
        rc = BR_ENOMEM;
    if (rc == 0 && end) {
        it->end = malloc(elen ? elen : 1);
        if (!it->end)
            rc = BR_ENOMEM;
        else
            memcpy(it->end, end, elen);
        it->elen = elen;
        it->has_end = true;
    }
    if (rc) {
        br_iter_free(it);
        return rc;
    }
    *out = it;
    return 0;
}

int br_iter_next(br_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen) {
    if (it->pos == it->n) {
        int rc = fetch_page(it);
        if (rc)
            return rc;
        if (it->n == 0)
            return 0;
    }
    it_ent *en = &it->ent[it->pos++];
    const uint8_t *k = it->keys + en->koff, *v;
    int rc = br_engine_read_rec(it->e, en->f, en->loc, k, en->klen, &v);
    if (rc)
        return rc;
    *key = k;
    *klen = en->klen;
    *val = v;
    *vlen = en->loc.vlen;
    return 1;
}

void br_iter_free(br_iter *it) {
    if (!it)
        return;
    release_page(it);
    free(it->keys);
    free(it->from);
    free(it->end);
    free(it);
}

int br_engine_range(br_engine *e, const void *start, size_t slen, const void *end, size_t elen,
                    size_t limit, br_range_fn fn, void *ctx) {
    br_iter *it;
    int rc = br_engine_iter(e, start, slen, end, elen, limit, &it);
    if (rc)
        return rc;
    const void *k, *v;
    size_t kl, vl;
    while ((rc = br_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        rc = fn(ctx, k, kl, v, vl);
        if (rc)
            break;
    }
    br_iter_free(it);
    return rc;
}
