/*
 * bitraft storage engine: a Bitcask-style log-structured key-value store.
 *
 * Design
 * ------
 * Every write is appended to the active data file of a directory; files are
 * rolled over at a size cap and never modified once closed. The whole key
 * index (the "keydir") lives in memory as an ordered B+tree whose entries say
 * where each key's newest value lies (file, offset, length), so a point read
 * is one index lookup plus one read, and ranges are walks of the tree. Data
 * files are read through read-only memory maps, so a hot read makes no system
 * call. The on-disk layout is specified in src/engine/record.h and
 * docs/FORMAT.md.
 *
 * Crash model
 * -----------
 * With the default sync policy (BR_SYNC_ALWAYS) a write call returns only
 * after its records are on disk (fdatasync); concurrent writers share one
 * write and one fdatasync (group commit). A write is visible to readers only
 * once it is durable under the policy in force. A crash at any point leaves a
 * directory that opens: a record torn at the tail of the newest file is cut
 * off (and logged), a batch is applied whole or not at all, a deleted key
 * stays deleted. A record that fails its checksum anywhere else is reported
 * as BR_ECORRUPT naming the file and offset; it is never skipped silently
 * (see br_engine_options.repair). Open reads a closed file's records only
 * when it has no valid hint file; otherwise damage in it is reported when
 * the record is read (every read checks the checksum), or by an open with
 * `verify` (bitraft check). With BR_SYNC_INTERVAL or BR_SYNC_NEVER a
 * crash of the process loses nothing that was acknowledged (the page cache
 * survives it), but a crash of the machine loses the writes since the last
 * sync.
 *
 * Threads
 * -------
 * All functions on one br_engine may be called from any number of threads at
 * once, except br_engine_close(), which must be the last call. Readers never
 * wait for a disk flush; writers are serialized through group commit.
 *
 * Errors
 * ------
 * Functions return 0 or a negative code from bitraft/error.h. On error
 * nothing is changed unless the function's comment says otherwise.
 */
#ifndef BITRAFT_ENGINE_H
#define BITRAFT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "bitraft/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_engine br_engine;
typedef struct br_batch br_batch;
typedef struct br_iter br_iter;

/* When acknowledged writes reach the disk. */
typedef enum br_sync_policy {
    BR_SYNC_ALWAYS = 0, /* before the write call returns (default) */
    BR_SYNC_INTERVAL,   /* by a background fdatasync every sync_interval_ms */
    BR_SYNC_NEVER,      /* only on br_engine_sync(), rollover and close */
} br_sync_policy;

typedef enum br_log_level {
    BR_LOG_ERROR = 0,
    BR_LOG_WARN,
    BR_LOG_INFO,
    BR_LOG_DEBUG,
} br_log_level;

/* A log sink. msg is valid only during the call. Called from any thread. */
typedef void (*br_log_fn)(void *ctx, br_log_level level, const char *msg);

typedef struct br_engine_options {
    uint64_t max_file_size;       /* roll the active file over past this size (default 128 MiB,
                                     at most 2 GiB) */
    uint32_t max_key_size;        /* longest key accepted (default 64 KiB) */
    uint32_t max_value_size;      /* longest value accepted (default 64 MiB, at most 1 GiB) */
    br_sync_policy sync;          /* default BR_SYNC_ALWAYS */
    uint32_t sync_interval_ms;    /* for BR_SYNC_INTERVAL (default 1000) */
    int repair;                   /* nonzero: on open, cut a newest file at its first bad
                                     record even if valid records follow, and skip bad
                                     records inside closed files, logging every byte range
                                     dropped. Zero (default): such damage fails the open
                                     with BR_ECORRUPT. */
    int read_only;                /* nonzero: open for reading only (offline tools): a shared
                                     lock (BR_ELOCKED while a writer has the store), nothing on
                                     disk is changed (a torn tail is only reported), writes
                                     return BR_EREADONLY */
    int verify;                   /* nonzero: read every record of every file at open, and
                                     compare each hint file with its data file; every problem
                                     is logged at BR_LOG_ERROR (see br_engine_stats.problems) */
    uint32_t range_readers;       /* nonzero (default 16): a range asks the disk for all
                                     the records of a cold page of keys at once; 0: one
                                     record at a time. (The count once sized a thread pool;
                                     the reads are now submitted with madvise.) */
    uint32_t compact_dead_pct;    /* the compaction thread merges closed files whose
                                     reclaimable bytes reach this percentage of the file
                                     (default 50; 0: no background compaction, only
                                     br_engine_compact()) */
    uint64_t compact_rate;        /* compaction I/O (bytes read plus written) per second
                                     (default 64 MiB/s; 0: unlimited) */
    uint32_t compact_interval_ms; /* how often the compaction thread looks for work
                                     (default 1000; a rollover also wakes it) */
    uint64_t (*clock_ms)(void);   /* monotonic clock, milliseconds, the only time source of
                                     the engine: compaction's rate limit and the speed an
                                     open logs (default br_engine_clock_ms; tests may
                                     substitute their own) */
    br_log_fn log;                /* optional; the engine never prints */
    void *log_ctx;
} br_engine_options;

/* Fills *opts with the defaults above. */
void br_engine_options_init(br_engine_options *opts);

/* CLOCK_MONOTONIC in milliseconds: the default br_engine_options.clock_ms. */
uint64_t br_engine_clock_ms(void);

/*
 * Opens (creating if needed) the store in directory dir and rebuilds its
 * index from the data files. opts may be NULL for defaults. Takes an
 * exclusive flock on dir/LOCK: a second opener, in this process or another,
 * gets BR_ELOCKED. On failure *out is NULL and, if err is not NULL, a
 * one-line reason naming the file and offset at fault is written to
 * err[0..errlen).
 */
int br_engine_open(const char *dir, const br_engine_options *opts, br_engine **out, char *err,
                   size_t errlen);

/*
 * Syncs (whatever the policy), closes and frees the engine. Waits for
 * writers in flight. Returns the first error met while syncing; the engine
 * is freed in every case. NULL is a no-op.
 */
int br_engine_close(br_engine *e);

/*
 * Stores value for key. Returns BR_EEMPTYKEY, BR_EKEYTOOBIG, BR_EVALTOOBIG
 * for bad input (nothing written), or an I/O error.
 */
int br_engine_put(br_engine *e, const void *key, size_t klen, const void *val, size_t vlen);

/*
 * Deletes key. Returns BR_ENOTFOUND (nothing written) if key is absent.
 */
int br_engine_delete(br_engine *e, const void *key, size_t klen);

/*
 * Reads the newest value of key. On success *val is a malloc'd copy of the
 * value (the caller frees it; it is non-NULL even for an empty value) and
 * *vlen its length. Returns BR_ENOTFOUND if the key is absent, BR_ECORRUPT
 * if the stored record fails its checksum.
 */
int br_engine_get(br_engine *e, const void *key, size_t klen, void **val, size_t *vlen);

/*
 * Like br_engine_get, but copies the value into buf when it fits. Returns 0
 * with *vlen set; if *vlen > cap the value did not fit and buf holds nothing
 * useful (call again with a larger buffer). buf may be NULL when cap is 0
 * (a size query).
 */
int br_engine_get_into(br_engine *e, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen);

/* ---- Atomic batches ------------------------------------------------------ */

/* A batch of puts and deletes, applied all or nothing by br_engine_write().
 * A batch is owned by its creator and used by one thread at a time. */
br_batch *br_batch_new(void);
void br_batch_free(br_batch *b);
void br_batch_clear(br_batch *b);
/* The batch copies key and value. Returns BR_ENOMEM or BR_EEMPTYKEY. */
int br_batch_put(br_batch *b, const void *key, size_t klen, const void *val, size_t vlen);
int br_batch_delete(br_batch *b, const void *key, size_t klen);
size_t br_batch_count(const br_batch *b);

/*
 * Applies every operation of b atomically, in order (a later operation on
 * the same key wins): after a crash either all are present or none is.
 * Every operation is checked against the limits first; a bad one fails the
 * whole batch with nothing written. Deleting an absent key in a batch is not
 * an error. The batch is left unchanged.
 */
int br_engine_write(br_engine *e, const br_batch *b);

/* ---- Ranges -------------------------------------------------------------- */

/*
 * Opens an iterator over keys k with start <= k <= end (end inclusive) in
 * bytewise order, at most limit keys (0 = no limit). start == NULL means
 * from the first key, end == NULL up to the last. Memory is bounded: the
 * iterator fetches keys a page at a time. Each key returned has its newest
 * value at the moment its page was fetched; a range is not one snapshot of
 * the whole store. The iterator must be freed with br_iter_free() before the
 * engine is closed.
 */
int br_engine_iter(br_engine *e, const void *start, size_t slen, const void *end, size_t elen,
                   size_t limit, br_iter **out);

/*
 * Advances to the next key. Returns 1 with *key and *val pointing into the
 * iterator (valid until the next call or free), 0 at the end, or a negative
 * error (BR_ECORRUPT, ...).
 */
int br_iter_next(br_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen);
void br_iter_free(br_iter *it);

/* Callback form: fn is called per key in order; a nonzero return stops the
 * walk and is returned. Returns 0 at the end, or a negative error. */
typedef int (*br_range_fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen);
int br_engine_range(br_engine *e, const void *start, size_t slen, const void *end, size_t elen,
                    size_t limit, br_range_fn fn, void *ctx);

/* ---- Durability and figures ---------------------------------------------- */

/* Makes every write acknowledged so far durable, whatever the policy. */
int br_engine_sync(br_engine *e);

/* ---- Cluster mode -------------------------------------------------------- */

/*
 * Applies batch b as the write numbered seq (in cluster mode: the index of
 * the Raft entry that carries it): every record of it gets sequence number
 * seq, so the store's last sequence number (br_engine_stats.last_seq) is
 * the last applied index, found again by a reopen. Calls must come in
 * increasing seq order from one applier, and a store written this way takes
 * no unnumbered writes. A seq at or below the store's last sequence number
 * is a replay of a write the store already holds: nothing is written and 0
 * is returned. An empty batch writes nothing (its index is not recorded; a
 * restart replays it, harmlessly). BR_EINVAL for seq 0; otherwise as
 * br_engine_write. Durability follows the sync policy: a replicated node
 * keeps its Raft log as the durable copy and syncs the store before the log
 * is truncated behind it.
 */
int br_engine_write_seq(br_engine *e, const br_batch *b, uint64_t seq);

/*
 * Checkpoint: closes the active file (so every write so far lies in closed,
 * immutable files) and hard-links the closed data files and their hint
 * files into directory dir, which is created and must not exist; no data
 * is copied. dir then holds a store (with its own empty active file and
 * LOCK) holding every write up to *seq, the store's last sequence number at
 * the moment of the checkpoint, and possibly some later ones (each with its
 * own number). Compaction may run meanwhile: the files linked are the file
 * table of one moment. Returns 0, BR_EREADONLY, -EEXIST, or an I/O error
 * (dir is removed again then). The caller deletes dir when done with it.
 */
int br_engine_checkpoint(br_engine *e, const char *dir, uint64_t *seq);

/* ---- Compaction ---------------------------------------------------------- */

/*
 * Compaction (merge) reclaims the space of overwritten values and of
 * tombstones no longer needed. It picks closed data files whose
 * reclaimable bytes are at least min_dead_pct percent of the file (0: any
 * reclaimable byte), groups them in id order so that each group's live
 * data fits one file, and rewrites each group's live records into one new
 * file (a merge output) plus its hint file. It runs beside readers and
 * writers: an index entry moves to the new file only if it still points at
 * the old place (a write during the merge wins), and an old file is
 * deleted only once no reader uses it. A tombstone is dropped only when no
 * file outside the group can hold an older record of its key, so a deleted
 * key never comes back — after a restart or a crash at any point of a
 * merge (the output is adopted whole when its rename is durable; before,
 * the inputs stand). I/O is paced at compact_rate.
 *
 * br_engine_compact() runs a compaction now, in the calling thread, and
 * returns when it is done (one compaction runs at a time: it waits for the
 * background one). Returns 0, BR_EREADONLY, BR_ECLOSED when the engine is
 * closing, BR_ECORRUPT when an input holds a bad record (that group is left
 * as it was; the error names the file in the log), or an I/O error (e.g.
 * -ENOSPC; the half-written output is removed, nothing else changes).
 */
int br_engine_compact(br_engine *e, uint32_t min_dead_pct);

/*
 * Asks the compaction thread to run br_engine_compact(e, min_dead_pct) and
 * returns at once (an operator's trigger: progress and results show in
 * br_engine_stats). Returns 0, BR_EINVAL, BR_EREADONLY or BR_ECLOSED.
 */
int br_engine_compact_start(br_engine *e, uint32_t min_dead_pct);

typedef struct br_engine_stats {
    uint64_t keys;        /* live keys */
    uint64_t data_files;  /* data files on disk */
    uint64_t disk_bytes;  /* bytes of data in data files (file headers and records) */
    uint64_t live_bytes;  /* bytes of records that hold a live value */
    uint64_t dead_bytes;  /* bytes of overwritten values and tombstones */
    uint64_t index_bytes; /* memory held by the key index */
    uint64_t key_bytes;   /* sum of live key lengths */
    uint64_t last_seq;    /* sequence number of the newest record */
    uint64_t puts, deletes, batches, gets;
    uint64_t syncs;         /* fdatasync calls on data files */
    uint64_t write_groups;  /* group commits (one write + at most one sync each) */
    uint64_t hints_written; /* hint files written since open */
    uint64_t problems;      /* damage found at open (torn tails, bad records or hints) */
    /* Compaction since open. */
    uint64_t compactions;           /* merges done (one output file each) */
    uint64_t compact_files_in;      /* input files they replaced */
    uint64_t compact_bytes_read;    /* bytes of input files read */
    uint64_t compact_bytes_written; /* bytes of output files written */
    uint64_t compact_reclaimed;     /* input bytes minus output bytes */
    uint64_t compact_running;       /* 1 while a compaction runs */
    uint64_t compact_todo_bytes;    /* the running compaction: input bytes in all */
    uint64_t compact_done_bytes;    /*   and read so far */
} br_engine_stats;

void br_engine_stats_get(br_engine *e, br_engine_stats *st);

/* One data file's figures. */
typedef struct br_file_stats {
    uint32_t id;         /* the NNNNNNNNNN of its name */
    uint64_t size;       /* bytes of data (header and records) */
    uint64_t live_bytes; /* records holding a live value */
    uint64_t dead_bytes; /* overwritten records and tombstones */
    int active;          /* the file new writes go to */
    int merged;          /* written by compaction */
} br_file_stats;

/* Calls fn once per data file, in id order (under the engine's shared
 * lock: fn must not call back into the engine). */
void br_engine_file_stats(br_engine *e, void (*fn)(void *ctx, const br_file_stats *fs), void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_ENGINE_H */
