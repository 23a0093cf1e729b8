/*
 * keydir.h - the in-memory key index: an ordered B+tree from key bytes to the
 * location of the key's newest record.
 *
 * Built for memory: nodes are 4 KiB slotted pages that store key bytes
 * inline, once, behind a prefix shared by all keys of the node (prefix
 * compression), so a key costs its suffix plus 20 bytes (a 6-byte slot, a
 * 2-byte length, the 12-byte location). Keys of KD_OOL_MIN bytes or more
 * are kept out of line in one malloc'd block each. Leaves are linked for
 * ordered scans.
 *
 * Not thread-safe: the engine guards it with a reader-writer lock. Lookups
 * and scans only read the tree (any number at once); put and delete need
 * exclusive access.
 */
#ifndef BR_ENGINE_KEYDIR_H
#define BR_ENGINE_KEYDIR_H

#include <stddef.h>
#include <stdint.h>

/* Where a key's newest record lies. What a read needs, nothing more. */
typedef struct br_loc {
    uint32_t file_id; /* data file id */
    uint32_t offset;  /* offset of the record header in the file */
    uint32_t vlen;    /* value length (the key length is known to the reader) */
} br_loc;

typedef struct br_keydir br_keydir;

/* Returns a new empty index, or NULL when out of memory. */
br_keydir *br_kd_new(void);
void br_kd_free(br_keydir *kd);

/* Looks key up. Returns 1 and fills *loc if present, 0 if absent. */
int br_kd_get(const br_keydir *kd, const void *key, size_t klen, br_loc *loc);

/*
 * Sets key's location. Returns 1 if the key existed (its previous location
 * in *old when old is not NULL), 0 if it was inserted. klen must be >= 1.
 * The index never fails: running out of memory in it aborts the process
 * (keydir.c says why).
 */
int br_kd_put(br_keydir *kd, const void *key, size_t klen, br_loc loc, br_loc *old);

/*
 * Sets key's location only if it is present and currently equals expect
 * (used to move records without losing a newer write). Returns 1 if
 * replaced, 0 otherwise.
 */
int br_kd_replace_if(br_keydir *kd, const void *key, size_t klen, br_loc expect, br_loc loc);

/* Asks the CPU to start loading what a later lookup or put of key will
 * read in its leaf (the slot array), so that the cache misses of several
 * keys overlap. Reads the tree only. */
void br_kd_prefetch(const br_keydir *kd, const void *key, size_t klen);

/* Removes key. Returns 1 (previous location in *old if not NULL) or 0 if absent. */
int br_kd_del(br_keydir *kd, const void *key, size_t klen, br_loc *old);

/*
 * Visits keys k in order with k >= start (k > start when exclusive), and
 * k <= end when end is not NULL; start == NULL starts at the first key. At
 * most max keys (0 = no limit). fn returns nonzero to stop. The key pointer
 * passed to fn is valid only during the call. Returns the number of keys
 * visited.
 */
typedef int (*br_kd_visit_fn)(void *ctx, const uint8_t *key, size_t klen, br_loc loc);
size_t br_kd_scan(const br_keydir *kd, const void *start, size_t slen, int exclusive,
                  const void *end, size_t elen, size_t max, br_kd_visit_fn fn, void *ctx);

size_t br_kd_count(const br_keydir *kd);
/* Bytes of memory held by the index (nodes and out-of-line keys). */
size_t br_kd_mem_bytes(const br_keydir *kd);
/* Sum of the lengths of all keys in the index. */
size_t br_kd_key_bytes(const br_keydir *kd);

/* Checks every structural invariant (order, prefixes, links, counts).
 * Returns 0 or BR_ECORRUPT. For tests; O(n). */
int br_kd_check(const br_keydir *kd);

#endif
