/*
 * node_cmd.c - the command a NORMAL raft entry carries: an atomic batch of
 * puts and deletes, and br_node_batch, the builder front ends fill.
 *
 * Format (version 1), little-endian:
 *
 *   offset  size  field
 *   0       1     version (1)
 *   1       1     reserved, 0
 *   2       2     reserved, 0
 *   4       4     n_ops, >= 1
 *   8       ...   n_ops operations, each:
 *                   1  kind: 1 put, 2 delete
 *                   4  klen, >= 1
 *                   4  vlen (0 for a delete)
 *                   klen bytes of key, vlen bytes of value
 *   len-8   8     XXH3-64 of bytes [0, len-8)
 *
 * Validity: an entry is a command only if its checksum matches, its
 * version is known, every operation lies inside the entry, the operations
 * end exactly at the checksum and their count is n_ops. Anything else is
 * BR_ECORRUPT; the node stops rather than apply it (the raft log and the
 * transport checksum their bytes too, so this means a bug or a foreign
 * writer, never a torn write). An entry of length 0 is the leader's no-op
 * and is not a command.
 */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "node_int.h"

#define CMD_VERSION 1
#define CMD_HDR     8
#define CMD_SUM     8
#define OP_HDR      9

struct br_node_batch {
    uint8_t *buf; /* the operations, encoded as in an entry */
    size_t len, cap;
    uint32_t n;
};

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

br_node_batch *br_node_batch_new(void) {
    return calloc(1, sizeof(br_node_batch));
}

void br_node_batch_free(br_node_batch *b) {
    if (!b)
        return;
    free(b->buf);
    free(b);
}

void br_node_batch_clear(br_node_batch *b) {
    b->len = 0;
    b->n = 0;
}

size_t br_node_batch_count(const br_node_batch *b) {
    return b->n;
}

static int batch_add(br_node_batch *b, uint8_t kind, const void *key, size_t klen, const void *val,
                     size_t vlen) {
    if (klen == 0)
        return BR_EEMPTYKEY;
    if (klen > UINT32_MAX || vlen > UINT32_MAX || b->n == UINT32_MAX)
        return BR_ETOOBIG;
    size_t need = b->len + OP_HDR + klen + vlen;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        uint8_t *nb = realloc(b->buf, cap);
        if (!nb)
            return BR_ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
    uint8_t *p = b->buf + b->len;
    p[0] = kind;
    put_u32(p + 1, (uint32_t)klen);
    put_u32(p + 5, (uint32_t)vlen);
    memcpy(p + OP_HDR, key, klen);
    if (vlen)
        memcpy(p + OP_HDR + klen, val, vlen);
    b->len = need;
    b->n++;
    return 0;
}

int br_node_batch_put(br_node_batch *b, const void *key, size_t klen, const void *val,
                      size_t vlen) {
    return batch_add(b, ND_OP_PUT, key, klen, val, vlen);
}

int br_node_batch_delete(br_node_batch *b, const void *key, size_t klen) {
    return batch_add(b, ND_OP_DELETE, key, klen, NULL, 0);
}

/* Wraps ops[0, len) (n operations) into a command in a new malloc'd buffer. */
static int cmd_wrap(const uint8_t *ops, size_t len, uint32_t n, uint8_t **out, size_t *outlen) {
    size_t total = CMD_HDR + len + CMD_SUM;
    uint8_t *c = malloc(total);
    if (!c)
        return BR_ENOMEM;
    c[0] = CMD_VERSION;
    c[1] = 0;
    c[2] = 0;
    c[3] = 0;
    put_u32(c + 4, n);
    memcpy(c + CMD_HDR, ops, len);
    put_u64(c + total - CMD_SUM, XXH3_64bits(c, total - CMD_SUM));
    *out = c;
    *outlen = total;
    return 0;
}

int nd_cmd_from_batch(const br_node_batch *b, uint8_t **out, size_t *outlen) {
    if (b->n == 0)
        return BR_EINVAL;
    return cmd_wrap(b->buf, b->len, b->n, out, outlen);
}

int nd_cmd_single(uint8_t kind, const void *key, size_t klen, const void *val, size_t vlen,
                  uint8_t **out, size_t *outlen) {
    br_node_batch b = {0};
    int rc = batch_add(&b, kind, key, klen, val, vlen);
    if (rc == 0)
        rc = cmd_wrap(b.buf, b.len, 1, out, outlen);
    free(b.buf);
    return rc;
}

/* Checks everything the format promises; 0 or BR_ECORRUPT. */
static int cmd_validate(const uint8_t *c, size_t len) {
    if (len < CMD_HDR + CMD_SUM)
        return BR_ECORRUPT;
    if (get_u64(c + len - CMD_SUM) != XXH3_64bits(c, len - CMD_SUM))
        return BR_ECORRUPT;
    if (c[0] != CMD_VERSION || c[1] || c[2] || c[3])
        return BR_ECORRUPT;
    uint32_t n = get_u32(c + 4);
    if (n == 0)
        return BR_ECORRUPT;
    size_t off = CMD_HDR, end = len - CMD_SUM;
    for (uint32_t i = 0; i < n; i++) {
        if (end - off < OP_HDR)
            return BR_ECORRUPT;
        uint8_t kind = c[off];
        uint64_t klen = get_u32(c + off + 1), vlen = get_u32(c + off + 5);
        if ((kind != ND_OP_PUT && kind != ND_OP_DELETE) || klen == 0 ||
            (kind == ND_OP_DELETE && vlen != 0))
            return BR_ECORRUPT;
        off += OP_HDR;
        if (klen + vlen > end - off)
            return BR_ECORRUPT;
        off += (size_t)(klen + vlen);
    }
    return off == end ? 0 : BR_ECORRUPT;
}

int nd_cmd_decode(const uint8_t *c, size_t len, nd_cmd_op_fn fn, void *ctx) {
    int rc = cmd_validate(c, len);
    if (rc < 0)
        return rc;
    uint32_t n = get_u32(c + 4);
    size_t off = CMD_HDR;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t kind = c[off];
        size_t klen = get_u32(c + off + 1), vlen = get_u32(c + off + 5);
        off += OP_HDR;
        rc = fn(ctx, kind, c + off, klen, c + off + klen, vlen);
        if (rc < 0)
            return rc;
        off += klen + vlen;
    }
    return 0;
}

uint32_t nd_cmd_count(const uint8_t *c, size_t len) {
    return len >= CMD_HDR ? get_u32(c + 4) : 0;
}
