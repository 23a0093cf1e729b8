/* batch.c - atomic batches of puts and deletes (contract in engine.h). */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

br_batch *br_batch_new(void) {
    return calloc(1, sizeof(br_batch));
}

void br_batch_free(br_batch *b) {
    if (!b)
        return;
    free(b->ops);
    free(b->arena);
    free(b);
}

void br_batch_clear(br_batch *b) {
    b->n = 0;
    b->used = 0;
}

size_t br_batch_count(const br_batch *b) {
    return b->n;
}

static int batch_add(br_batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                     bool del) {
    if (klen == 0)
        return BR_EEMPTYKEY;
    if (klen > UINT32_MAX)
        return BR_EKEYTOOBIG;
    if (vlen > UINT32_MAX)
        return BR_EVALTOOBIG;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        br_batch_op *no = realloc(b->ops, cap * sizeof *no);
        if (!no)
            return BR_ENOMEM;
        b->ops = no;
        b->cap = cap;
    }
    size_t need = b->used + klen + vlen;
    if (need > b->arena_cap) {
        size_t cap = b->arena_cap ? b->arena_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *na = realloc(b->arena, cap);
        if (!na)
            return BR_ENOMEM;
        b->arena = na;
        b->arena_cap = cap;
    }
    br_batch_op *op = &b->ops[b->n++];
    op->koff = b->used;
    memcpy(b->arena + b->used, key, klen);
    b->used += klen;
    op->voff = b->used;
    if (vlen)
        memcpy(b->arena + b->used, val, vlen);
    b->used += vlen;
    op->klen = (uint32_t)klen;
    op->vlen = (uint32_t)vlen;
    op->del = del;
    return 0;
}

int br_batch_put(br_batch *b, const void *key, size_t klen, const void *val, size_t vlen) {
    return batch_add(b, key, klen, val, vlen, false);
}

int br_batch_delete(br_batch *b, const void *key, size_t klen) {
    return batch_add(b, key, klen, NULL, 0, true);
}

/* Writes b as one atomic unit numbered seq (0: the next number). */
static int write_batch(br_engine *e, const br_batch *b, uint64_t seq) {
    if (b->n == 0)
        return 0;
    br_op *ops = malloc(b->n * sizeof *ops);
    if (!ops)
        return BR_ENOMEM;
    uint64_t bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const br_batch_op *bo = &b->ops[i];
        ops[i] = (br_op){b->arena + bo->koff, b->arena + bo->voff, bo->klen, bo->vlen, bo->del};
        rc = br_engine_check_op(e, &ops[i]);
        bytes += br_rec_size(bo->klen, bo->del ? 0 : bo->vlen);
    }
    /* A batch is written into one file in one piece; offsets are 32 bits. */
    if (rc == 0 && bytes > BR_MAX_WRITE_BYTES)
        rc = BR_ETOOBIG;
    if (rc == 0) {
        br_writer w = {.ops = ops, .nops = b->n, .batch = true, .at_seq = seq};
        rc = br_engine_submit_writer(e, &w);
    }
    if (rc == 0)
        atomic_fetch_add_explicit(&e->n_batches, 1, memory_order_relaxed);
    free(ops);
    return rc;
}

int br_engine_write(br_engine *e, const br_batch *b) {
    return write_batch(e, b, 0);
}

int br_engine_write_seq(br_engine *e, const br_batch *b, uint64_t seq) {
    if (seq == 0)
        return BR_EINVAL;
    return write_batch(e, b, seq);
}
