/*
 * datafile.h - one data file: creation, mapping, sealing (format in record.h).
 *
 * Every data file is read through a shared memory map that lives as long as
 * the file is open in the engine. The active file is preallocated to the
 * size cap and mapped writable: records are copied into the map, and
 * fdatasync on its descriptor makes them durable. A sealed (closed) file has
 * no descriptor open and is never written again.
 */
#ifndef BR_ENGINE_DATAFILE_H
#define BR_ENGINE_DATAFILE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct br_datafile {
    uint32_t id;
    int fd;       /* open while active; -1 once sealed */
    uint8_t *map; /* map of map_len bytes from offset 0 */
    size_t map_len;
    uint64_t size;         /* end of the last valid record (header included) */
    uint64_t live;         /* bytes of records holding a live value */
    uint64_t dead;         /* bytes of overwritten records and tombstones */
    uint64_t tomb;         /* of dead: bytes of tombstones */
    int merged;            /* a merge output (its header says so) */
    int sealed;            /* closed and synced: compaction may take it (set under the
                              engine's exclusive lock) */
    uint64_t min_seq;      /* merge outputs: smallest sequence number held (else unused) */
    uint64_t tomb_max_seq; /* merge outputs: largest sequence number of a tombstone */
    atomic_int refs;       /* readers using the map right now */
} br_datafile;

/* The fdatasync every data file sync goes through; tests replace it to
 * inject failures. Not for production use. */
extern int (*br_df_fdatasync)(int fd);

/* Formats the file name of id into buf (at least 32 bytes). */
void br_df_name(char *buf, size_t len, uint32_t id);

/*
 * Creates data file id in directory dirfd, preallocated to cap bytes, its
 * header written and synced, atomically renamed into place, the directory
 * synced; then maps it writable. Returns 0 or a negative errno, leaving no
 * file behind on error.
 */
int br_df_create(int dirfd, uint32_t id, uint64_t cap, br_datafile **out);

/*
 * Opens existing data file id and maps it: read-only when cap is 0, else
 * writable and grown (preallocated) to at least cap bytes. size is set to
 * the file size; the caller's scan sets the real end of data.
 */
int br_df_open(int dirfd, uint32_t id, uint64_t cap, br_datafile **out);

/* Zeroes the active file from size to its end (keeping the space
 * reserved) and syncs it. */
int br_df_zero_tail(br_datafile *f);

/* Makes the file's records durable (fdatasync). */
int br_df_sync(br_datafile *f);

/* Seals the active file: syncs it, truncates it to its data, closes its
 * descriptor. The map stays readable. */
int br_df_seal(br_datafile *f);

/* Unmaps and frees (closing the descriptor if still open). */
void br_df_free(br_datafile *f);

#endif
