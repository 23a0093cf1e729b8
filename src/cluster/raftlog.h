/*
 * raftlog.h - br_raftlog, the Raft log on disk (the "raft storage" layer).
 *
 * Design
 * ------
 * One directory (e.g. <data-dir>/raft) holds a LOCK file and segment files
 * named by their first index and a sequence number. A segment is
 * preallocated (fallocate, segment_size bytes) and holds a stream of
 * checksummed records: log entries, hard states (term, vote, commit),
 * configurations and snapshot metadata. Every segment starts with the
 * snapshot metadata, configuration and hard state current when it was
 * created, so the newest segment always holds the newest of each, and
 * deleting older segments never loses them. The byte layout is specified
 * at the top of raftlog.c; docs/RAFTLOG.md summarizes it.
 *
 * Everything the raft core asks to persist for one Ready (entries, hard
 * state, configuration) is appended to the same file, so ONE fdatasync
 * makes the whole Ready durable, atomically in the sense that matters:
 * a record is only trusted when it and everything before it is intact.
 *
 * Replacing a suffix (a conflicting append) never overwrites anything: the
 * new entries are appended and supersede the old ones on replay (a record
 * for index i drops every entry >= i read before it). When the conflict
 * reaches below the newest segment, a new segment starting at the
 * conflict point is created and the segments it makes obsolete are
 * deleted. So no stale byte ever lies after the end of the log, except
 * after a crash, and open zeroes (and syncs) whatever follows the last
 * valid record of the newest segment before anything is appended.
 *
 * Crash model: what br_raftlog_sync() (or a call documented as durable)
 * reported durable survives a crash (kill -9, power loss) and is found by
 * the next br_raftlog_open(). Anything written after the last sync may be
 * lost, wholly or as a prefix in log order; it is never half-read: a torn
 * record at the end of the newest segment is cut off (and logged). A bad
 * record in data that was already durable (an older segment, or a record
 * followed by records written after it was synced) is an error,
 * BR_ECORRUPT, with the file and offset in the error text; so is a gap in
 * the indexes. Term and vote never go backwards across a crash once a
 * sync reported them durable.
 *
 * Thread safety
 * -------------
 * A log has one owning thread at a time: every function here and every
 * br_raft_storage callback is called by it, except
 *
 *   br_raftlog_sync()     and
 *   br_raftlog_durable()
 *
 * which may be called from any thread while the owner keeps appending and
 * reading (syncs from several threads are serialized). Neither may run
 * during br_raftlog_open() or br_raftlog_close(). The group-commit pattern
 * is: the owner appends many Readys (cheap: a pwrite into the preallocated
 * file), a worker calls br_raftlog_sync() once for all of them and reports
 * what became durable.
 *
 * Errors: 0 or a negative code from bitraft/error.h; errno values pass
 * through negated. After a failed write or fdatasync the log is broken
 * (the kernel may have dropped the dirty pages): every later write or sync
 * returns the same error, and the owner must close and reopen it.
 */
#ifndef BR_CLUSTER_RAFTLOG_H
#define BR_CLUSTER_RAFTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitraft/raft.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_raftlog br_raftlog;

#define BR_RAFTLOG_DEFAULT_SEGMENT (64u << 20) /* 64 MiB */
#define BR_RAFTLOG_MIN_SEGMENT     4096u
#define BR_RAFTLOG_MAX_SEGMENT     (1u << 30) /* offsets in records are 32-bit */

struct br_raftlog_options {
    uint64_t segment_size; /* bytes preallocated per segment (default 64 MiB, 4 KiB .. 1 GiB);
                              an entry must fit in one segment */
    /* Optional log sink (same signature as br_raft_config.log_fn, levels
     * from enum br_raft_log_level); msg is valid during the call only.
     * Called from the owning thread, and from br_raftlog_sync()'s thread
     * for sync failures. The library never prints. */
    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;
};

/* Fills *o with the defaults. */
void br_raftlog_options_init(struct br_raftlog_options *o);

/*
 * Opens the log in directory dir (created if missing, one level), taking
 * an exclusive flock on dir/LOCK (BR_ELOCKED if another opener holds it).
 * An empty directory gets an empty log: snapshot point 0/0, hard state
 * {0,0,0}, empty configuration. An existing log is read back: every
 * segment is scanned and checksummed, a torn tail of the newest segment is
 * cut off (logged at WARN), leftovers of interrupted operations are
 * removed. opts may be NULL for defaults.
 *
 * On failure *out is NULL, nothing on disk was lost, and if err is not
 * NULL a one-line reason naming the file and offset at fault is written
 * to err[0..errlen). BR_ECORRUPT for damaged durable data or a gap in the
 * indexes, BR_EFORMAT for an unknown format version, BR_EINVAL for bad
 * options, or an errno.
 */
int br_raftlog_open(const char *dir, const struct br_raftlog_options *opts, br_raftlog **out,
                    char *err, size_t errlen);

/*
 * Syncs what was written (unless the log is broken), unmaps, closes and
 * frees the log. Returns the first error met; the log is freed in every
 * case. NULL is a no-op. No br_raftlog_sync() may be running.
 */
int br_raftlog_close(br_raftlog *log);

/*
 * The br_raft_storage view of log, for br_raft_config.storage; valid while
 * log is open. Its callbacks run on the owning thread. Entries returned by
 * entries() point into the segment's read-only memory map: their data is
 * valid until the log is next modified (append that truncates, compact,
 * apply_snapshot, close); plain appends and syncs keep it valid. The core
 * copies what it keeps, and must never write through those pointers.
 */
const struct br_raft_storage *br_raftlog_storage(br_raftlog *log);

/*
 * Bootstraps a new cluster member, like br_raft_memstorage_bootstrap():
 * the log starts after a snapshot point at index 1, term 1 holding conf,
 * and the hard state is {1, 0, 1}. Durable when it returns. BR_EINVAL if
 * conf is empty or too large, or if the log is not empty (it has entries,
 * a snapshot or a nonzero term).
 */
int br_raftlog_bootstrap(br_raftlog *log, const struct br_raft_conf_state *conf);

/*
 * Appends entries ents[0..n) (index-consecutive, data copied into the
 * file). Entries at or below the compaction point are skipped, as
 * br_raft_memstorage_append() does. If the first remaining entry's index
 * is <= the last index, the entries from there on are replaced (a
 * conflict). Not durable until the next br_raftlog_sync().
 *
 * Cost: a pwrite into the page cache; a segment rollover (every
 * segment_size bytes) or a conflict reaching below the newest segment
 * costs a few fdatasyncs on this thread.
 *
 * BR_EINVAL (nothing written) if the entries leave a gap, are not
 * consecutive, their terms decrease (along the batch or against the entry
 * before it), or a type does not fit in 8 bits; BR_ETOOBIG if one does not
 * fit in a segment; an I/O error breaks the log.
 */
int br_raftlog_append(br_raftlog *log, const struct br_raft_entry *ents, size_t n);

/*
 * Writes a hard state (not durable until the next sync). Writing the one
 * already stored is a no-op. BR_EINVAL if hs->term is below the stored
 * term (terms never go backwards).
 */
int br_raftlog_set_hard_state(br_raftlog *log, const struct br_raft_hard_state *hs);

/*
 * Writes the configuration the node restarts with (see raft.h's crash
 * model; not durable until the next sync). Writing the stored one is a
 * no-op. BR_EINVAL if it has more than BR_RAFT_MAX_MEMBERS members.
 */
int br_raftlog_set_conf(br_raftlog *log, const struct br_raft_conf_state *conf);

/* What one sync made durable. */
struct br_raftlog_durable {
    uint64_t last_index; /* entries up to here are on disk as the owner wrote them */
    uint64_t last_term;  /* term of last_index (the snapshot or compaction point's if none) */
    struct br_raft_hard_state hs; /* the hard state on disk */
    struct br_raft_conf_state conf;
};

/*
 * Group commit: makes everything written before the call durable with one
 * fdatasync of the newest segment (older segments were synced when they
 * were closed). Any thread, concurrently with the owner (see the top of
 * this file). On success fills *d (if not NULL) with what it covered:
 * the owner's log and hard state as of the start of the call, except that
 * if the owner replaced entries during the sync (a conflicting append or a
 * snapshot install), last_index is lowered below the replaced ones.
 * A failure breaks the log and is logged.
 */
int br_raftlog_sync(br_raftlog *log, struct br_raftlog_durable *d);

/* The coverage reported by the last successful sync (or durable step:
 * open, bootstrap, a segment rollover, set_snapshot). Any thread. */
void br_raftlog_durable(br_raftlog *log, struct br_raftlog_durable *d);

/*
 * Records that a snapshot of the state machine exists at `index` (between
 * the compaction point and the last index, not below the current
 * snapshot) with configuration conf, like
 * br_raft_memstorage_create_snapshot(). Durable when it returns (it syncs:
 * compaction relies on it). BR_EINVAL for an index out of range.
 */
int br_raftlog_set_snapshot(br_raftlog *log, uint64_t index, const struct br_raft_conf_state *conf);

/*
 * Discards entries up to and including index (which must be <= the
 * snapshot index and <= the last index; BR_EINVAL otherwise; below the
 * compaction point it is a no-op): first_index becomes index + 1, and the
 * segment files holding only such entries are deleted (durably). A
 * reopened log may start earlier (at a segment boundary): the entries
 * between are still valid, only their files were not deletable yet.
 */
int br_raftlog_compact(br_raftlog *log, uint64_t index);

/*
 * Installs a snapshot received from a leader: replaces the whole log by
 * the snapshot point meta (index, term, conf), like
 * br_raft_memstorage_apply_snapshot(); the configuration becomes
 * meta->conf and the hard state is kept. Crash-safe and durable when it
 * returns: a new segment holding the snapshot point is created and synced
 * before the old segments are deleted. BR_EINVAL if meta->index is below
 * the current snapshot.
 */
int br_raftlog_apply_snapshot(br_raftlog *log, const struct br_raft_snapshot_meta *meta);

/* Queries (owning thread). */
uint64_t br_raftlog_first_index(const br_raftlog *log);
uint64_t br_raftlog_last_index(const br_raftlog *log);
/* Term of index (compaction point .. last index); BR_EINVAL outside. */
int br_raftlog_term(const br_raftlog *log, uint64_t index, uint64_t *term);
void br_raftlog_hard_state(const br_raftlog *log, struct br_raft_hard_state *hs);
void br_raftlog_conf(const br_raftlog *log, struct br_raft_conf_state *conf);
void br_raftlog_snapshot(const br_raftlog *log, struct br_raft_snapshot_meta *meta);

struct br_raftlog_stats {
    uint64_t segments;       /* segment files */
    uint64_t syncs;          /* fdatasyncs done by br_raftlog_sync() */
    uint64_t bytes_written;  /* record bytes appended since open */
    uint64_t rollovers;      /* new segments created since open */
    char active_name[64];    /* file name of the newest segment */
    uint64_t active_size;    /* bytes of records (and header) in it */
    uint64_t active_durable; /* of which known synced */
    uint64_t torn_bytes_cut; /* cut off at open */
};

/* Fills *s (owning thread). */
void br_raftlog_stats(br_raftlog *log, struct br_raftlog_stats *s);

/* Every fsync (datasync 0) and fdatasync (datasync 1) the log makes, of
 * segments and of the directory, goes through this; tests replace it to
 * inject failures or to skip the wait. Not for production use. Returns 0
 * or -1 with errno set. */
extern int (*br_raftlog_fsync)(int fd, int datasync);

#ifdef __cplusplus
}
#endif

#endif /* BR_CLUSTER_RAFTLOG_H */
