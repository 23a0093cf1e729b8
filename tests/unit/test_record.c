/* test_record.c - record and file header coding. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/error.h"
#include "engine/record.h"

Test(record, roundtrip) {
    uint8_t buf[256];
    br_rec_encode(buf, 42, BR_REC_IN_BATCH | BR_REC_COMMIT, "key", 3, "value", 5);
    br_rec_hdr h;
    cr_assert_eq(br_rec_decode(buf, br_rec_size(3, 5), &h), 0);
    cr_assert_eq(h.klen, 3);
    cr_assert_eq(h.vlen, 5);
    cr_assert_eq(h.seq, 42);
    cr_assert_eq(h.flags, BR_REC_IN_BATCH | BR_REC_COMMIT);
    cr_assert_eq(memcmp(buf + BR_REC_HEADER_SIZE, "keyvalue", 8), 0);
}

Test(record, layout_is_little_endian_and_fixed) {
    uint8_t buf[64];
    br_rec_encode(buf, 0x0102030405060708ULL, BR_REC_TOMBSTONE, "k", 1, NULL, 0);
    cr_assert_eq(buf[4], 1, "key length at offset 4");
    cr_assert_eq(buf[8], 0, "value length at offset 8");
    cr_assert_eq(buf[12], BR_REC_TOMBSTONE, "flags at offset 12");
    cr_assert_eq(buf[16], 0x08, "sequence at offset 16, little-endian");
    cr_assert_eq(buf[23], 0x01);
    cr_assert_eq(buf[24], 'k');
}

Test(record, every_single_bit_flip_is_detected) {
    uint8_t buf[128], copy[128];
    size_t n = br_rec_size(5, 20);
    br_rec_encode(buf, 7, 0, "hello", 5, "01234567890123456789", 20);
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            memcpy(copy, buf, n);
            copy[i] ^= (uint8_t)(1u << b);
            br_rec_hdr h;
            int rc = br_rec_decode(copy, n, &h);
            cr_assert_neq(rc, 0, "flip of bit %d of byte %zu not detected", b, i);
        }
    }
}

Test(record, truncated_record_is_corrupt_not_read_past) {
    uint8_t buf[128];
    size_t n = br_rec_size(5, 20);
    br_rec_encode(buf, 7, 0, "hello", 5, "01234567890123456789", 20);
    for (size_t cut = 1; cut < n; cut++) {
        br_rec_hdr h;
        cr_assert_eq(br_rec_decode(buf, cut, &h), BR_ECORRUPT, "cut at %zu", cut);
    }
}

Test(record, zero_header_is_end_of_data) {
    uint8_t buf[64] = {0};
    br_rec_hdr h;
    cr_assert_eq(br_rec_decode(buf, sizeof buf, &h), 1);
    cr_assert_eq(br_rec_decode(buf, 10, &h), 1, "a short zero tail is the end too");
    buf[30] = 1;
    cr_assert_eq(br_rec_decode(buf, sizeof buf, &h), 1, "decode looks at the header only");
}

Test(record, bad_flags_and_reserved_are_corrupt) {
    uint8_t buf[64];
    br_rec_hdr h;
    br_rec_encode(buf, 1, 0x08, "k", 1, "v", 1); /* unknown flag */
    cr_assert_eq(br_rec_decode(buf, sizeof buf, &h), BR_ECORRUPT);
    br_rec_encode(buf, 1, BR_REC_COMMIT, "k", 1, "v", 1); /* commit outside a batch */
    cr_assert_eq(br_rec_decode(buf, sizeof buf, &h), BR_ECORRUPT);
    br_rec_encode(buf, 0, 0, "k", 1, "v", 1); /* sequence 0 */
    cr_assert_eq(br_rec_decode(buf, sizeof buf, &h), BR_ECORRUPT);
}

Test(record, file_header) {
    uint8_t hdr[BR_FILE_HEADER_SIZE];
    br_file_header_encode(hdr, 12, 0, 0);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 12, NULL, NULL), 0);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 13, NULL, NULL), BR_ECORRUPT, "id mismatch");
    cr_assert_eq(br_file_header_check(hdr, 10, 12, NULL, NULL), BR_ECORRUPT, "short");
    hdr[20] ^= 1;
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 12, NULL, NULL), BR_ECORRUPT, "checksum");

    /* A merge output names where its input list starts; other files have
     * no list, and no flag but the merge one is valid. */
    uint32_t flags;
    uint64_t list_off;
    br_file_header_encode(hdr, 9, BR_FILE_MERGED, 4096);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 9, &flags, &list_off), 0);
    cr_assert_eq(flags, BR_FILE_MERGED);
    cr_assert_eq(list_off, 4096);
    br_file_header_encode(hdr, 9, BR_FILE_MERGED, 8);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 9, NULL, NULL), BR_ECORRUPT,
                 "list in header");
    br_file_header_encode(hdr, 9, 0, 4096);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 9, NULL, NULL), BR_ECORRUPT, "stray list");
    br_file_header_encode(hdr, 9, 0x2, 0);
    cr_assert_eq(br_file_header_check(hdr, sizeof hdr, 9, NULL, NULL), BR_ECORRUPT, "unknown flag");
}

Test(error, messages_and_names) {
    cr_assert_str_eq(br_strerror(BR_ENOTFOUND), "key not found");
    cr_assert_str_eq(br_errname(BR_ECORRUPT), "BR_ECORRUPT");
    cr_assert_str_eq(br_errname(-5), "EIO");
    cr_assert_str_eq(br_strerror(0), "success");
    cr_assert(strlen(br_strerror(-12345678)) > 0);
}
