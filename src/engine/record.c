/* record.c - encoding and validation of data file records (layout in record.h). */
#include "engine/record.h"

#include <xxhash.h>

#include "bitraft/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitraft's on-disk formats are little-endian; big-endian hosts need byte swaps here"
#endif

uint32_t br_checksum(const void *p, size_t len) {
    return (uint32_t)XXH3_64bits(p, len);
}

void br_rec_encode(uint8_t *out, uint64_t seq, uint8_t flags, const void *key, uint32_t klen,
                   const void *val, uint32_t vlen) {
    br_put32(out + 4, klen);
    br_put32(out + 8, vlen);
    out[12] = flags;
    out[13] = out[14] = out[15] = 0;
    br_put64(out + 16, seq);
    memcpy(out + BR_REC_HEADER_SIZE, key, klen);
    if (vlen)
        memcpy(out + BR_REC_HEADER_SIZE + klen, val, vlen);
    br_put32(out, br_checksum(out + 4, br_rec_size(klen, vlen) - 4));
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int br_rec_decode(const uint8_t *p, size_t avail, br_rec_hdr *h) {
    if (avail < BR_REC_HEADER_SIZE)
        return all_zero(p, avail) ? 1 : BR_ECORRUPT;
    h->checksum = br_get32(p);
    h->klen = br_get32(p + 4);
    h->vlen = br_get32(p + 8);
    h->flags = p[12];
    h->seq = br_get64(p + 16);
    if (h->klen == 0)
        return all_zero(p, BR_REC_HEADER_SIZE) ? 1 : BR_ECORRUPT;
    if (h->klen > BR_REC_MAX_KEY || (h->flags & ~BR_REC_FLAGS_ALL) || p[13] || p[14] || p[15] ||
        h->seq == 0)
        return BR_ECORRUPT;
    if ((h->flags & BR_REC_COMMIT) && !(h->flags & BR_REC_IN_BATCH))
        return BR_ECORRUPT;
    if ((h->flags & BR_REC_TOMBSTONE) && h->vlen)
        return BR_ECORRUPT;
    if ((uint64_t)h->klen + h->vlen > avail - BR_REC_HEADER_SIZE)
        return BR_ECORRUPT;
    return br_rec_verify(p, h);
}

int br_rec_verify(const uint8_t *p, const br_rec_hdr *h) {
    size_t len = br_rec_size(h->klen, h->vlen);
    return br_checksum(p + 4, len - 4) == h->checksum ? 0 : BR_ECORRUPT;
}

void br_file_header_encode(uint8_t out[BR_FILE_HEADER_SIZE], uint32_t file_id, uint32_t flags,
                           uint64_t list_off) {
    memset(out, 0, BR_FILE_HEADER_SIZE);
    memcpy(out, BR_FILE_MAGIC, 8);
    br_put32(out + 8, BR_FILE_VERSION);
    br_put32(out + 12, file_id);
    br_put64(out + 16, list_off);
    br_put32(out + 24, flags);
    br_put32(out + 28, br_checksum(out, 28));
}

int br_file_header_check(const uint8_t *p, size_t avail, uint32_t file_id, uint32_t *flags,
                         uint64_t *list_off) {
    if (avail < BR_FILE_HEADER_SIZE || memcmp(p, BR_FILE_MAGIC, 8) != 0)
        return BR_ECORRUPT;
    if (br_get32(p + 28) != br_checksum(p, 28))
        return BR_ECORRUPT;
    if (br_get32(p + 8) != BR_FILE_VERSION)
        return BR_EFORMAT;
    if (br_get32(p + 12) != file_id)
        return BR_ECORRUPT;
    uint32_t fl = br_get32(p + 24);
    uint64_t lo = br_get64(p + 16);
    /* Only a merge output has a list, and it lies after the header. */
    if ((fl & ~BR_FILE_MERGED) || ((fl & BR_FILE_MERGED) ? lo < BR_FILE_HEADER_SIZE : lo != 0))
        return BR_ECORRUPT;
    if (flags)
        *flags = fl;
    if (list_off)
        *list_off = lo;
    return 0;
}
