/*
 * record.h - the data file format: file header and records.
 *
 * Data file `NNNNNNNNNN.data` (10-digit decimal file id, from 1 upwards):
 *
 *   +--------+---------------------------------------------------------+
 *   | offset | file header (32 bytes, little-endian)                   |
 *   +--------+---------------------------------------------------------+
 *   |      0 | magic "BRDATA\r\n" (8 bytes)                            |
 *   |      8 | u32 format version (1)                                  |
 *   |     12 | u32 file id (equals the id in the file name)            |
 *   |     16 | u64 merge outputs: offset of the input list; else 0     |
 *   |     24 | u32 flags: 0x01 merge output; no other bit is valid     |
 *   |     28 | u32 checksum: low 32 bits of XXH3-64 of bytes 0..27     |
 *   +--------+---------------------------------------------------------+
 *
 * followed by records, back to back, no padding:
 *
 *   +--------+---------------------------------------------------------+
 *   | offset | record header (24 bytes, little-endian)                 |
 *   +--------+---------------------------------------------------------+
 *   |      0 | u32 checksum: low 32 bits of XXH3-64 of bytes 4..end    |
 *   |        |     of the record (rest of header, key, value)          |
 *   |      4 | u32 key length (1 .. 2^31)                              |
 *   |      8 | u32 value length (0 for a tombstone)                    |
 *   |     12 | u8  flags: 0x01 tombstone, 0x02 in-batch, 0x04 commit   |
 *   |     13 | u8[3] reserved (0)                                      |
 *   |     16 | u64 sequence number (>= 1, never decreasing in a file)  |
 *   |     24 | key bytes, then value bytes                             |
 *   +--------+---------------------------------------------------------+
 *
 * A record is valid when its key length is nonzero, its lengths fit in the
 * file, its flags and reserved bytes hold no unknown bits, and its checksum
 * matches. An all-zero header (key length 0) marks the end of the data: the
 * newest file is preallocated with zeros, older files are truncated to their
 * last record.
 *
 * Batches: the records of an atomic batch are written back to back in one
 * file and all carry the batch's one sequence number. All but the last have
 * flag in-batch; the last has in-batch|commit. A single put or delete has
 * neither flag. Recovery applies a batch only when it has read its commit
 * record; records of a batch with no commit at the tail of the newest file
 * are cut off with the torn tail.
 *
 * Merge outputs (written by compaction, see compact.c) hold the live
 * records of the files they replace, without batch framing, each with its
 * original sequence number, followed at the offset in the header by the
 * list of the files they replace (the inputs, and files replaced earlier
 * that are still on disk, pinned by readers):
 *
 *   +--------+---------------------------------------------------------+
 *   |      0 | u32 number of input files n                             |
 *   |      4 | u32 input file id, n times                              |
 *   |  4+4n  | u32 checksum: low 32 bits of XXH3-64 of bytes 0..4+4n-1 |
 *   +--------+---------------------------------------------------------+
 *
 * which ends the file. A merge output is created as `.tmp` and renamed
 * into place only when whole and synced; from then on its inputs count as
 * deleted, whether or not their files are still there.
 *
 * Write order: records are copied into the file (through a shared memory
 * map of the preallocated file) by the one group-commit leader; under
 * BR_SYNC_ALWAYS it then calls fdatasync before any of them is visible or
 * acknowledged. A new file is created as NNNNNNNNNN.data.tmp, preallocated,
 * its header written and synced, then renamed and the directory synced,
 * before any record is written into it.
 */
#ifndef BR_ENGINE_RECORD_H
#define BR_ENGINE_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BR_FILE_MAGIC       "BRDATA\r\n"
#define BR_FILE_VERSION     1u
#define BR_FILE_HEADER_SIZE 32u
#define BR_REC_HEADER_SIZE  24u

#define BR_REC_TOMBSTONE 0x01u
#define BR_REC_IN_BATCH  0x02u
#define BR_REC_COMMIT    0x04u
#define BR_REC_FLAGS_ALL (BR_REC_TOMBSTONE | BR_REC_IN_BATCH | BR_REC_COMMIT)

/* Largest key length the format can hold (the engine's limit is lower). */
#define BR_REC_MAX_KEY (1u << 31)

/* A decoded record header. */
typedef struct br_rec_hdr {
    uint32_t checksum;
    uint32_t klen;
    uint32_t vlen;
    uint8_t flags;
    uint64_t seq;
} br_rec_hdr;

static inline size_t br_rec_size(uint32_t klen, uint32_t vlen) {
    return (size_t)BR_REC_HEADER_SIZE + klen + vlen;
}

static inline void br_put32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4); /* little-endian hosts only; checked in record.c */
}
static inline void br_put64(uint8_t *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static inline uint32_t br_get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t br_get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Checksum of len bytes (low 32 bits of XXH3-64). */
uint32_t br_checksum(const void *p, size_t len);

/*
 * Encodes a whole record into out (br_rec_size(klen, vlen) bytes).
 */
void br_rec_encode(uint8_t *out, uint64_t seq, uint8_t flags, const void *key, uint32_t klen,
                   const void *val, uint32_t vlen);

/*
 * Decodes and validates the record at p, with avail bytes readable from p.
 * Returns 0 and fills *h when the record is whole and valid; 1 when the
 * header is all zeros (end of data); BR_ECORRUPT otherwise (bad header,
 * lengths beyond avail, bad checksum).
 */
int br_rec_decode(const uint8_t *p, size_t avail, br_rec_hdr *h);

/* Verifies the checksum of a record whose header h was read from p. */
int br_rec_verify(const uint8_t *p, const br_rec_hdr *h);

#define BR_FILE_MERGED 0x01u /* file header flag: a merge output */

/* Encodes a file header; a merge output passes BR_FILE_MERGED and the
 * offset of its input list (else 0, 0). */
void br_file_header_encode(uint8_t out[BR_FILE_HEADER_SIZE], uint32_t file_id, uint32_t flags,
                           uint64_t list_off);
/* Checks a file header. Returns 0 (with *flags and *list_off set when not
 * NULL), BR_EFORMAT (other version) or BR_ECORRUPT. */
int br_file_header_check(const uint8_t *p, size_t avail, uint32_t file_id, uint32_t *flags,
                         uint64_t *list_off);

#endif
