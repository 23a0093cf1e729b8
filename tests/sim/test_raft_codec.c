/* test_raft_codec.c - the raft message codec: round trips and hostile input. */
#include "bitraft/error.h"
#include "bitraft/raft.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static void sample(struct br_raft_msg *m, struct br_raft_entry *e, uint8_t *data) {
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < 3; i++) {
        memset(data + 10 * i, 'a' + i, 10);
        e[i] = (struct br_raft_entry){.term = 5,
                                      .index = 11 + (uint64_t)i,
                                      .type = i == 2,
                                      .len = i == 1 ? 0 : 10,
                                      .data = i == 1 ? NULL : data + 10 * i};
    }
    *m = (struct br_raft_msg){.type = BR_RAFT_MSG_APPEND,
                              .flags = 0,
                              .from = 2,
                              .to = 3,
                              .term = 5,
                              .log_term = 4,
                              .index = 10,
                              .commit = 9,
                              .reject_hint = 0,
                              .ctx = 0xdeadbeef,
                              .n_entries = 3,
                              .entries = e};
}

static long enc(const struct br_raft_msg *m, uint8_t **buf) {
    size_t n = br_raft_encoded_size(m);
    *buf = malloc(n);
    long rc = br_raft_encode(m, *buf, n);
    cr_assert_eq(rc, (long)n);
    return rc;
}

Test(codec, append_round_trip) {
    struct br_raft_msg m, d;
    struct br_raft_entry e[3];
    uint8_t data[30];
    sample(&m, e, data);
    uint8_t *buf;
    long n = enc(&m, &buf);
    cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), n);
    cr_assert_eq(d.type, m.type);
    cr_assert_eq(d.from, 2);
    cr_assert_eq(d.to, 3);
    cr_assert_eq(d.term, 5);
    cr_assert_eq(d.log_term, 4);
    cr_assert_eq(d.index, 10);
    cr_assert_eq(d.commit, 9);
    cr_assert_eq(d.ctx, 0xdeadbeef);
    cr_assert_eq(d.n_entries, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(d.entries[i].index, e[i].index);
        cr_assert_eq(d.entries[i].type, e[i].type);
        cr_assert_eq(d.entries[i].len, e[i].len);
        if (e[i].len)
            cr_assert_eq(memcmp(d.entries[i].data, e[i].data, e[i].len), 0);
    }
    br_raft_msg_free(&d);
    free(buf);
}

Test(codec, snapshot_round_trip) {
    struct br_raft_msg m = {.type = BR_RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = 7};
    m.snapshot = (struct br_raft_snapshot_meta){
        .index = 100,
        .term = 6,
        .conf = {.n_voters = 3, .n_learners = 1, .voters = {1, 2, 3}, .learners = {9}}};
    uint8_t *buf;
    long n = enc(&m, &buf);
    struct br_raft_msg d;
    cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), n);
    cr_assert_eq(d.snapshot.index, 100);
    cr_assert_eq(d.snapshot.term, 6);
    cr_assert_eq(d.snapshot.conf.n_voters, 3);
    cr_assert_eq(d.snapshot.conf.voters[2], 3);
    cr_assert_eq(d.snapshot.conf.learners[0], 9);
    br_raft_msg_free(&d);
    free(buf);
}

Test(codec, encode_refuses_small_buffer) {
    struct br_raft_msg m;
    struct br_raft_entry e[3];
    uint8_t data[30], buf[16];
    sample(&m, e, data);
    cr_assert_eq(br_raft_encode(&m, buf, sizeof(buf)), BR_EINVAL);
}

/* Every truncation is a clean protocol error. */
Test(codec, every_truncation_refused) {
    struct br_raft_msg m, d;
    struct br_raft_entry e[3];
    uint8_t data[30];
    sample(&m, e, data);
    uint8_t *buf;
    long n = enc(&m, &buf);
    for (long len = 0; len < n; len++) {
        uint8_t *copy = malloc((size_t)len + 1); /* exact size: ASan sees overreads */
        memcpy(copy, buf, (size_t)len);
        long rc = br_raft_decode(copy, (size_t)len, &d);
        cr_assert(rc == BR_EPROTOCOL || rc == BR_ECORRUPT, "len %ld gave %ld", len, rc);
        free(copy);
    }
    free(buf);
}

/* Every single-bit flip is detected (checksum or structure). */
Test(codec, every_bit_flip_detected) {
    struct br_raft_msg m, d;
    struct br_raft_entry e[3];
    uint8_t data[30];
    sample(&m, e, data);
    uint8_t *buf;
    long n = enc(&m, &buf);
    for (long i = 0; i < n * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        long rc = br_raft_decode(buf, (size_t)n, &d);
        cr_assert(rc == BR_EPROTOCOL || rc == BR_ECORRUPT, "bit %ld gave %ld", i, rc);
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    free(buf);
}

/* A valid checksum over a lying length field is still refused. */
Test(codec, lying_lengths_refused) {
    struct br_raft_msg m, d;
    struct br_raft_entry e[3];
    uint8_t data[30];
    sample(&m, e, data);
    uint8_t *buf;
    long n = enc(&m, &buf);
    /* entry count claims 1000 entries; re-seal the checksum */
    size_t body = (size_t)n - 12 - 8;
    uint8_t *p = buf + 12 + 68;
    p[0] = 0xe8;
    p[1] = 0x03;
    uint64_t h = XXH3_64bits(buf, 12 + body);
    for (int i = 0; i < 8; i++)
        buf[12 + body + (size_t)i] = (uint8_t)(h >> (8 * i));
    cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), BR_EPROTOCOL);
    free(buf);
}

Test(codec, random_garbage_never_crashes) {
    uint64_t s = 1;
    uint8_t buf[512];
    struct br_raft_msg d;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(s % sizeof(buf));
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (uint8_t)(s >> 56);
        }
        if (len >= 4 && iter % 2)
            memcpy(buf, "BRRM", 4);
        long rc = br_raft_decode(buf, len, &d);
        cr_assert(rc < 0);
        br_raft_msg_free(&d);
    }
}

Test(codec, wrong_version_refused) {
    struct br_raft_msg m = {.type = BR_RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 1}, d;
    uint8_t *buf;
    long n = enc(&m, &buf);
    buf[4] = 2;
    cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), BR_EPROTOCOL);
    free(buf);
}

/* The forwarded ReadIndex pair round-trips; a type past the last is refused. */
Test(codec, read_index_messages_round_trip) {
    for (uint32_t t = BR_RAFT_MSG_READ_INDEX; t <= BR_RAFT_MSG_READ_INDEX_RESP; t++) {
        struct br_raft_msg m = {.type = t, .from = 2, .to = 1, .term = 3, .ctx = 77, .index = 9}, d;
        uint8_t *buf;
        long n = enc(&m, &buf);
        cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), n);
        cr_assert_eq(d.type, t);
        cr_assert_eq(d.ctx, 77);
        cr_assert_eq(d.index, 9);
        br_raft_msg_free(&d);
        buf[5] = (uint8_t)(BR_RAFT_MSG_READ_INDEX_RESP + 1);
        cr_assert_eq(br_raft_decode(buf, (size_t)n, &d), BR_EPROTOCOL);
        free(buf);
    }
}
