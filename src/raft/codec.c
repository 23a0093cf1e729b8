/*
 * codec.c - the versioned wire format of raft messages.
 *
 * One message (all integers little-endian):
 *
 *   off  size  field
 *   0    4     magic "BRRM"
 *   4    1     version (1)
 *   5    1     type (enum br_raft_msg_type)
 *   6    2     reserved, 0
 *   8    4     body length B (bytes after this header, before the checksum)
 *   12   B     body
 *   12+B 8     XXH3_64bits of bytes [0, 12+B)
 *
 * Body: flags u32, from, to, term, log_term, index, commit, reject_hint,
 * ctx (u64 each), n_entries u32, then per entry: term u64, index u64,
 * type u32, len u32, data[len]; then, for SNAPSHOT only: index u64,
 * term u64, n_voters u32, n_learners u32, voters u64[], learners u64[].
 *
 * A message is valid when the magic, version, type, reserved bytes and
 * checksum match, every length stays inside the buffer, member counts are
 * within BR_RAFT_MAX_MEMBERS and the body is consumed exactly. Decoding
 * trusts nothing: every length is checked against the bytes that remain
 * before it is used, and the entry count is bounded by what the remaining
 * bytes could hold. Any byte string gives a message or
 * BR_EPROTOCOL/BR_ECORRUPT. The fields' meaning is checked later, by
 * br_raft_step().
 */
#include "bitraft/raft.h"

#include "bitraft/error.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define HDR_LEN   12
#define SUM_LEN   8
#define FIXED_LEN (4 + 8 * 8 + 4)    /* flags, 8 u64 fields, n_entries */
#define ENT_HDR   (8 + 8 + 4 + 4)    /* term, index, type, len */
#define SNAP_HDR  (8 + 8 + 4 + 4)    /* index, term, n_voters, n_learners */
#define MAX_BODY  (UINT32_MAX - 64u) /* body length fits the u32 field */

static const uint8_t magic[4] = {'B', 'R', 'R', 'M'};

static void put32(uint8_t **p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 4;
}

static void put64(uint8_t **p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 8;
}

static uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t body_size(const struct br_raft_msg *m) {
    size_t n = FIXED_LEN;
    for (size_t i = 0; i < m->n_entries; i++)
        n += ENT_HDR + m->entries[i].len;
    if (m->type == BR_RAFT_MSG_SNAPSHOT)
        n += SNAP_HDR + 8 * ((size_t)m->snapshot.conf.n_voters + m->snapshot.conf.n_learners);
    return n;
}

size_t br_raft_encoded_size(const struct br_raft_msg *m) {
    return HDR_LEN + body_size(m) + SUM_LEN;
}

long br_raft_encode(const struct br_raft_msg *m, uint8_t *buf, size_t cap) {
    if (m->type < BR_RAFT_MSG_APPEND || m->type > BR_RAFT_MSG_READ_INDEX_RESP ||
        m->n_entries > UINT32_MAX || m->snapshot.conf.n_voters > BR_RAFT_MAX_MEMBERS ||
        m->snapshot.conf.n_learners > BR_RAFT_MAX_MEMBERS)
        return BR_EINVAL;
    size_t body = body_size(m);
    size_t total = HDR_LEN + body + SUM_LEN;
    if (body > MAX_BODY || total > cap || total > (size_t)LONG_MAX)
        return BR_EINVAL;
    uint8_t *p = buf;
    memcpy(p, magic, 4);
    p += 4;
    *p++ = BR_RAFT_CODEC_VERSION;
    *p++ = (uint8_t)m->type;
    *p++ = 0;
    *p++ = 0;
    put32(&p, (uint32_t)body);
    put32(&p, m->flags);
    put64(&p, m->from);
    put64(&p, m->to);
    put64(&p, m->term);
    put64(&p, m->log_term);
    put64(&p, m->index);
    put64(&p, m->commit);
    put64(&p, m->reject_hint);
    put64(&p, m->ctx);
    put32(&p, (uint32_t)m->n_entries);
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct br_raft_entry *e = &m->entries[i];
        put64(&p, e->term);
        put64(&p, e->index);
        put32(&p, e->type);
        put32(&p, e->len);
        if (e->len) {
            memcpy(p, e->data, e->len);
            p += e->len;
        }
    }
    if (m->type == BR_RAFT_MSG_SNAPSHOT) {
        const struct br_raft_snapshot_meta *s = &m->snapshot;
        put64(&p, s->index);
        put64(&p, s->term);
        put32(&p, s->conf.n_voters);
        put32(&p, s->conf.n_learners);
        for (uint32_t i = 0; i < s->conf.n_voters; i++)
            put64(&p, s->conf.voters[i]);
        for (uint32_t i = 0; i < s->conf.n_learners; i++)
            put64(&p, s->conf.learners[i]);
    }
    put64(&p, XXH3_64bits(buf, HDR_LEN + body));
    return (long)total;
}

void br_raft_msg_free(struct br_raft_msg *m) {
    free(m->entries);
    memset(m, 0, sizeof(*m));
}

long br_raft_decode(const uint8_t *buf, size_t len, struct br_raft_msg *m) {
    memset(m, 0, sizeof(*m));
    if (len < HDR_LEN + SUM_LEN || memcmp(buf, magic, 4) != 0 || buf[4] != BR_RAFT_CODEC_VERSION ||
        buf[6] != 0 || buf[7] != 0)
        return BR_EPROTOCOL;
    uint32_t type = buf[5];
    if (type < BR_RAFT_MSG_APPEND || type > BR_RAFT_MSG_READ_INDEX_RESP)
        return BR_EPROTOCOL;
    size_t body = get32(buf + 8);
    if (body < FIXED_LEN || body > len - HDR_LEN - SUM_LEN)
        return BR_EPROTOCOL;
    if (XXH3_64bits(buf, HDR_LEN + body) != get64(buf + HDR_LEN + body))
        return BR_ECORRUPT;

    const uint8_t *p = buf + HDR_LEN, *end = p + body;
    struct br_raft_msg t;
    memset(&t, 0, sizeof(t));
    t.type = type;
    t.flags = get32(p);
    t.from = get64(p + 4);
    t.to = get64(p + 12);
    t.term = get64(p + 20);
    t.log_term = get64(p + 28);
    t.index = get64(p + 36);
    t.commit = get64(p + 44);
    t.reject_hint = get64(p + 52);
    t.ctx = get64(p + 60);
    uint32_t n = get32(p + 68);
    p += FIXED_LEN;
    if (n > (size_t)(end - p) / ENT_HDR)
        return BR_EPROTOCOL;

    /* First pass: check the entries' lengths and total their data. */
    const uint8_t *q = p;
    size_t data = 0;
    for (uint32_t i = 0; i < n; i++) {
        if ((size_t)(end - q) < ENT_HDR)
            return BR_EPROTOCOL;
        uint32_t el = get32(q + 20);
        q += ENT_HDR;
        if (el > (size_t)(end - q))
            return BR_EPROTOCOL;
        q += el;
        data += el;
    }
    if (type == BR_RAFT_MSG_SNAPSHOT) {
        if ((size_t)(end - q) < SNAP_HDR)
            return BR_EPROTOCOL;
        uint32_t nv = get32(q + 16), nl = get32(q + 20);
        if (nv > BR_RAFT_MAX_MEMBERS || nl > BR_RAFT_MAX_MEMBERS || nv + nl > BR_RAFT_MAX_MEMBERS ||
            (size_t)(end - q) != SNAP_HDR + 8 * (size_t)(nv + nl))
            return BR_EPROTOCOL;
    } else if (q != end) {
        return BR_EPROTOCOL;
    }

    /* Second pass: copy into one block (entries array, then data). */
    if (n > 0) {
        uint8_t *blk = malloc((size_t)n * sizeof(struct br_raft_entry) + data);
        if (!blk)
            return BR_ENOMEM;
        t.entries = (struct br_raft_entry *)blk;
        uint8_t *d = blk + (size_t)n * sizeof(struct br_raft_entry);
        for (uint32_t i = 0; i < n; i++) {
            struct br_raft_entry *e = &t.entries[i];
            e->term = get64(p);
            e->index = get64(p + 8);
            e->type = get32(p + 16);
            e->len = get32(p + 20);
            p += ENT_HDR;
            e->data = e->len ? d : NULL;
            if (e->len) {
                memcpy(d, p, e->len);
                d += e->len;
                p += e->len;
            }
        }
        t.n_entries = n;
    }
    if (type == BR_RAFT_MSG_SNAPSHOT) {
        struct br_raft_snapshot_meta *s = &t.snapshot;
        s->index = get64(p);
        s->term = get64(p + 8);
        s->conf.n_voters = get32(p + 16);
        s->conf.n_learners = get32(p + 20);
        p += SNAP_HDR;
        for (uint32_t i = 0; i < s->conf.n_voters; i++, p += 8)
            s->conf.voters[i] = get64(p);
        for (uint32_t i = 0; i < s->conf.n_learners; i++, p += 8)
            s->conf.learners[i] = get64(p);
    }
    *m = t;
    return (long)(HDR_LEN + body + SUM_LEN);
}
