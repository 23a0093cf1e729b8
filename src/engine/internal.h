/* internal.h - the engine's shared internals (engine.c, batch.c, iter.c). */
#ifndef BR_ENGINE_INTERNAL_H
#define BR_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bitraft/engine.h"
#include "engine/datafile.h"
#include "engine/keydir.h"
#include "engine/readahead.h"
#include "engine/record.h"

/* One put or delete. Key and value are borrowed from the caller. */
typedef struct br_op {
    const uint8_t *key;
    const uint8_t *val;
    uint32_t klen;
    uint32_t vlen;
    bool del;
} br_op;

/* A batch op: offsets into the batch arena (which realloc may move). */
typedef struct br_batch_op {
    size_t koff, voff;
    uint32_t klen, vlen;
    bool del;
} br_batch_op;

struct br_batch {
    br_batch_op *ops;
    size_t n, cap;
    uint8_t *arena; /* keys and values, back to back */
    size_t used, arena_cap;
};

/* A thread waiting in the group-commit queue. */
typedef struct br_writer {
    const br_op *ops;
    size_t nops;
    bool batch;       /* one atomic unit (one sequence number) */
    bool force_sync;  /* br_engine_sync(): fdatasync even under a lazy policy */
    bool roll;        /* br_engine_checkpoint(): close the active file (no ops) */
    uint64_t at_seq;  /* nonzero: the sequence number of every record (cluster mode) */
    uint64_t seq_out; /* roll: the last sequence number in the closed files */
    uint32_t roll_id; /* roll: id of the active file after it */
    bool done;
    int rc;
    bool existed;   /* single delete: whether the key was there */
    uint64_t loc1;  /* offset of the one record of a single op */
    uint64_t *locs; /* offset of each op's record (&loc1, or malloc'd) */
    pthread_cond_t cv;
    struct br_writer *next;
} br_writer;

/* A group of writers whose records were copied together (group commit). */
typedef struct br_group {
    br_writer *first; /* its writers, linked by next, NULL-terminated */
    br_datafile *f;   /* the file they went into */
    uint64_t end;     /* write position in f after them */
    bool need_sync;   /* some writer needs them on disk before completion */
    int rc;           /* error of the write itself */
    struct br_group *next;
} br_group;

struct br_engine {
    br_engine_options o;
    char *dir;
    int dirfd;
    int lockfd;

    /* Index and file table. Readers hold `lock` shared for a lookup; the
     * group-commit leader holds it exclusively to apply a group or to add a
     * file. */
    pthread_rwlock_t lock;
    br_keydir *kd;
    br_datafile **files; /* indexed by file id; NULL where none */
    uint32_t files_cap;
    uint32_t nfiles;
    br_datafile *active; /* changed only by the leader, under `lock` */
    atomic_uint next_id; /* id of the next file created (rollover, merge) */

    /* Group commit (engine.c explains the pipeline). All under wmu. */
    pthread_mutex_t wmu;
    br_writer *qhead, *qtail; /* writers waiting to be written */
    bool writing;             /* a leader is copying its group */
    br_group *ghead, *gtail;  /* written groups not yet applied, in log order */
    bool applying;            /* a thread is applying groups */
    int syncs_running;        /* fdatasync calls in flight */
    pthread_cond_t drain_cv;  /* signalled when no group or sync is in flight */
    uint64_t wpos;            /* where the next record goes in the active file */
    uint32_t synced_file;     /* the log is durable up to (synced_file, */
    uint64_t synced_end;      /*  synced_end) */
    uint64_t seq;             /* last sequence number used */
    uint64_t problems;        /* damage found by open (logged; see verify) */
    int failed;               /* sticky error after a failed write or sync: the
                                 store then refuses writes */

    /* Hint writer thread and its queue of closed file ids. */
    pthread_t hinter;
    bool hinter_running;
    pthread_mutex_t hmu;
    pthread_cond_t hcv;
    uint32_t *hq;
    size_t hq_n, hq_cap;
    bool hstop;

    /* Compaction (compact.c): one at a time (cmu); the background thread
     * waits on ccv (under cwmu) for the interval, a rollover or close. */
    pthread_mutex_t cmu;
    pthread_t compactor;
    bool compactor_running;
    pthread_mutex_t cwmu;
    pthread_cond_t ccv;
    bool cwake;
    int creq; /* a compaction asked for by br_engine_compact_start (its
                 min_dead_pct), or -1; under cwmu */
    atomic_bool cstop;
    /* Replaced files still pinned by readers, deleted once unpinned (cmu). */
    br_datafile **grave;
    size_t ngrave, grave_cap;

    /* Interval sync thread. */
    pthread_t syncer;
    bool syncer_running;
    pthread_mutex_t smu;
    pthread_cond_t scv;
    bool stopping;

    /* Counters (relaxed atomics). */
    atomic_uint_fast64_t n_puts, n_dels, n_batches, n_gets, n_syncs, n_groups, n_hints;
    atomic_uint_fast64_t n_compactions, n_compact_in, n_compact_read, n_compact_written,
        n_compact_reclaimed, compact_running, compact_todo, compact_done;
};

/* Reads the record at loc in f (pinned by the caller) after checking it:
 * whole, checksum valid, key equal to key. On success *val points at the
 * value inside the map. */
int br_engine_read_rec(br_engine *e, br_datafile *f, br_loc loc, const void *key, size_t klen,
                       const uint8_t **val);

/* Checks an op against the engine's limits. */
int br_engine_check_op(const br_engine *e, const br_op *op);

/* Queues ops as one writer and waits until they are durable and applied. */
int br_engine_submit(br_engine *e, const br_op *ops, size_t nops, bool batch, bool force_sync,
                     bool *existed);

/* The general form: w's ops, batch, force_sync, roll and at_seq set by the
 * caller; the rest is filled in. */
int br_engine_submit_writer(br_engine *e, br_writer *w);

/* Largest batch, in bytes of records (written into one file in one piece). */
#define BR_MAX_WRITE_BYTES (1536u << 20)

#define STAT_ADD(field, v) atomic_fetch_add_explicit(&e->field, (v), memory_order_relaxed)

/* Rebuilds the index from the directory's files (recover.c). On error a
 * reason naming file and offset is in err. */
int br_engine_recover(br_engine *e, char *err, size_t errlen);

/* Adds f to the file table (caller holds the exclusive lock or is opening).
 * Returns 0 or BR_ENOMEM. */
int br_engine_add_file(br_engine *e, br_datafile *f);

/* Queues closed file id for the hint writer. Returns 0 or BR_ENOMEM. */
int br_engine_queue_hint(br_engine *e, uint32_t id);

/* Starts the compaction thread (compact.c); returns 0 or BR_ENOMEM. */
int br_compact_start(br_engine *e);
/* Stops it; an unfinished merge is abandoned, its output removed. */
void br_compact_stop(br_engine *e);
/* Deletes and frees the replaced files still waiting (close, after every
 * reader and the range reader pool are gone). */
void br_compact_release(br_engine *e);
/* Wakes the compaction thread (after a rollover). */
void br_compact_wake(br_engine *e);

/* Tests: called at each step of a merge (a crash test exits there). */
enum {
    BR_COMPACT_STEP_COPIED = 1,  /* records copied, output not yet committed */
    BR_COMPACT_STEP_SYNCED,      /* output synced, not yet renamed */
    BR_COMPACT_STEP_RENAMED,     /* output renamed into place (committed) */
    BR_COMPACT_STEP_ADOPTED,     /* index moved, inputs not yet deleted */
    BR_COMPACT_STEP_DELETED_ONE, /* one input deleted */
};
extern void (*br_compact_test_hook)(int step);

/* Removes file f from the table (exclusive lock held). */
void br_engine_remove_file(br_engine *e, br_datafile *f);

/* Writes a one-line reason into err[0..errlen) when err is not NULL. */
void br_engine_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs through the engine's sink, if any (printf-style). */
void br_engine_log(const br_engine *e, br_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
