/*
 * fuzz_codec.c - libFuzzer target for br_raft_decode(): any byte string
 * must decode to a message or a clean error, and a decoded message must
 * re-encode to the same bytes.
 *
 *   cmake -DCMAKE_C_COMPILER=clang -DBR_FUZZ=ON ... && ./fuzz_codec -max_total_time=60
 */
#include "bitraft/raft.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size) {
    struct br_raft_msg m;
    long n = br_raft_decode(data, size, &m);
    if (n > 0) {
        size_t need = br_raft_encoded_size(&m);
        uint8_t *buf = malloc(need);
        if (buf) {
            long e = br_raft_encode(&m, buf, need);
            if (e != n || memcmp(buf, data, (size_t)n) != 0)
                abort();
            free(buf);
        }
    }
    br_raft_msg_free(&m);
}

/* Each input is tried as is, and re-sealed: with the header's body length
 * and the trailing checksum made consistent, so the fuzzer explores the
 * body parser instead of stopping at the checksum. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    if (size >= 20 && size < (1u << 20)) {
        uint8_t *c = malloc(size);
        if (!c)
            return 0;
        memcpy(c, data, size);
        memcpy(c, "BRRM", 4);
        c[4] = BR_RAFT_CODEC_VERSION;
        uint32_t body = (uint32_t)(size - 20);
        for (int i = 0; i < 4; i++)
            c[8 + i] = (uint8_t)(body >> (8 * i));
        uint64_t h = XXH3_64bits(c, size - 8);
        for (int i = 0; i < 8; i++)
            c[size - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
        check(c, size);
        free(c);
    }
    return 0;
}
