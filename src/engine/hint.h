/*
 * hint.h - hint files: the index entries of one closed data file, so that a
 * restart reads them instead of the whole data file.
 *
 * File `NNNNNNNNNN.hint` (same id as its data file), little-endian:
 *
 *   +--------+---------------------------------------------------------+
 *   | offset | header (48 bytes)                                       |
 *   +--------+---------------------------------------------------------+
 *   |      0 | magic "BRHINT\r\n" (8 bytes)                            |
 *   |      8 | u32 format version (2)                                  |
 *   |     12 | u32 data file id                                        |
 *   |     16 | u64 size on disk of the data file it describes          |
 *   |     24 | u64 number of entries                                   |
 *   |     32 | u64 largest sequence number of the entries (0: none)    |
 *   |     40 | u32 checksum: low 32 bits of XXH3-64 of the entries     |
 *   |     44 | u32 checksum: low 32 bits of XXH3-64 of bytes 0..43     |
 *   +--------+---------------------------------------------------------+
 *
 * then one entry per record of the data file, sorted by key (bytewise,
 * a shorter key before its extensions), records of one key by offset:
 *
 *   +--------+---------------------------------------------------------+
 *   |      0 | u32 key length; top bit set for a tombstone             |
 *   |      4 | u32 value length                                        |
 *   |      8 | u32 offset of the record in the data file               |
 *   |     12 | u64 sequence number                                     |
 *   |     20 | key bytes                                               |
 *   +--------+---------------------------------------------------------+
 *
 * A hint is used only when its header checksum, its entries' checksum, its
 * data file id and the data file's size all match, every entry lies inside
 * the data file's records and the entries are in order; otherwise the data
 * file is scanned as if there were no hint. Sorted entries let open build
 * the index by merging the hints of all files (recover.c), with no sort
 * and no array of every record. Version 1 hints (in file order) are
 * treated as missing and rewritten. A hint is written as `.hint.tmp`, synced, renamed into place
 * and the directory synced, so a crash leaves either no hint or a whole one. Closed data files
 * contain only whole batches, so a hint lists records without batch framing.
 */
#ifndef BR_ENGINE_HINT_H
#define BR_ENGINE_HINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/datafile.h"

#define BR_HINT_MAGIC       "BRHINT\r\n"
#define BR_HINT_VERSION     2u
#define BR_HINT_HEADER_SIZE 48u
#define BR_HINT_ENTRY_SIZE  20u
#define BR_HINT_TOMBSTONE   0x80000000u

/* A loaded hint file: a read-only map of it. */
typedef struct br_hint {
    const uint8_t *map;
    size_t len;
    uint64_t n;              /* entries */
    uint64_t max_seq;        /* largest sequence number in them */
    const uint8_t *last_key; /* the last (largest) entry's key, NULL when none */
    uint32_t last_klen;
} br_hint;

/* One entry, decoded. key points into the hint's map. */
typedef struct br_hint_entry {
    const uint8_t *key;
    uint32_t klen;
    uint32_t vlen;
    uint32_t offset;
    uint64_t seq;
    bool tombstone;
} br_hint_entry;

/* Formats the hint file name of data file id into buf (>= 32 bytes). */
void br_hint_name(char *buf, size_t len, uint32_t id);

/*
 * Writes the hint of closed data file f (records up to f->size, each
 * checked). Returns 0, BR_ECORRUPT if a record is bad (no hint is written:
 * that file will keep being scanned), or a negative errno.
 */
int br_hint_write(int dirfd, const br_datafile *f);

/*
 * Maps and validates the hint of data file id whose size on disk is
 * data_size and whose records end at rec_end (data_size, except for a
 * merge output, whose input list follows them). Returns 0 (h filled;
 * release with br_hint_close), -ENOENT when there is none, BR_ECORRUPT
 * when it does not pass the checks above.
 */
int br_hint_open(int dirfd, uint32_t id, uint64_t data_size, uint64_t rec_end, br_hint *h);

/* Orders two keys as the index does: bytewise, a prefix first. */
static inline int br_hint_keycmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}
void br_hint_close(br_hint *h);

/*
 * Walks the entries of an open hint from byte offset *pos (start with
 * BR_HINT_HEADER_SIZE). Returns 1 with *e filled and *pos advanced, 0 at
 * the end. br_hint_open checked every entry, so this cannot fail.
 */
int br_hint_next(const br_hint *h, size_t *pos, br_hint_entry *e);

#endif
