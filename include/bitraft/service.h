/*
 * bitraft service: the one interface the front ends (HTTP, the CLI's future
 * binary protocol) call to read and write, whatever the node's mode.
 *
 * Design
 * ------
 * Every operation completes through a callback, so a front end never
 * blocks one of its own threads on the disk or on consensus. Two
 * implementations sit behind one small table of functions
 * (src/service/service_int.h): "standalone" (standalone.c: the engine
 * directly) and "replicated" (replicated.c: a write is proposed to the
 * Raft node and completes when committed and applied; a read waits for a
 * ReadIndex barrier unless it asks for a stale read). A front end never
 * branches on the mode; it asks br_service_reads_inline() whether a read
 * must wait for a callback, and br_service_leader() where to redirect
 * BR_ENOTLEADER.
 *
 * The standalone service runs writes on a small pool of its own threads:
 * the engine's write calls block until the data is durable (fdatasync
 * under the default policy), and concurrent writers share one sync, so the
 * more writes wait at once, the more share one flush. Reads never wait for
 * a flush: the standalone service runs them on the caller's thread and
 * calls the callback before returning (br_service_reads_inline() says so).
 *
 * Callback contract
 * -----------------
 * A call that returns 0 has accepted the operation: its callback is called
 * exactly once, from any thread (possibly the caller's, before the call
 * returns). A call that returns a negative error (BR_ECLOSED when the
 * service is closing, BR_ENOMEM) has not: its callback is never called.
 * The buffers passed to a write (key, value, batch) must stay valid and
 * unchanged until its callback has been called.
 *
 * Threads
 * -------
 * Every function may be called from any number of threads at once, except
 * br_service_close(), which must be the last call.
 */
#ifndef BITRAFT_SERVICE_H
#define BITRAFT_SERVICE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "bitraft/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_service br_service;

/* A write's outcome is unknown: the replicated service proposed it as
 * leader, then lost leadership (or closed) before it was applied. It may
 * still commit under the next leader, or be lost; treat it like a
 * timeout. Same value as the node's BR_NODE_ELOST. */
#define BR_SERVICE_EUNKNOWN (-ECANCELED)

/* Read flags (get, range). */
#define BR_SERVICE_STALE                                                                           \
    1u /* read the local store as it is, without a read barrier: on a                              \
          follower it may lag the leader. Default: linearizable */

/* Completion of a write: rc is 0 or a negative code (BR_ENOTFOUND for a
 * delete of an absent key, the engine's input and I/O errors; replicated:
 * BR_ENOTLEADER when it was not proposed (nothing written; ask
 * br_service_leader), BR_SERVICE_EUNKNOWN or BR_ECLOSED when its outcome
 * is unknown). */
typedef void (*br_service_done_fn)(void *ctx, int rc);

/* Completion of a get: on rc == 0, val is a malloc'd copy of the value
 * (non-NULL even when empty) that the callback now owns; otherwise NULL.
 * Replicated: BR_ENOTLEADER (leadership moved), -ETIMEDOUT (no quorum). */
typedef void (*br_service_get_fn)(void *ctx, int rc, void *val, size_t vlen);

/* An ordered walk over a range (see br_service_range). */
typedef struct br_service_iter br_service_iter;

/* Completion of a range: on rc == 0, it is an open iterator the callback
 * now owns (free it with br_service_iter_free() before br_service_close()). */
typedef void (*br_service_range_fn)(void *ctx, int rc, br_service_iter *it);

/* A batch of puts and deletes for br_service_write, built for one service. */
typedef struct br_service_batch br_service_batch;

/* How the front ends read keys on the wire (a property of the directory). */
typedef enum br_key_mode {
    BR_KEYS_BYTES = 0, /* keys are byte strings, compared bytewise */
    BR_KEYS_INT = 1,   /* keys are decimal numbers 0..2^64-1, stored as 8 bytes
                          big-endian so that ranges are numeric (the original's keys) */
} br_key_mode;

typedef struct br_service_options {
    unsigned write_threads; /* standalone: threads running writes (default 32, 1..1024) */
    int inline_writes;      /* standalone: nonzero runs writes on the caller's thread and
                               calls back before returning, when the engine's sync policy
                               is not BR_SYNC_ALWAYS (a write then never waits for a
                               flush, so a thread hop would only cost). Default 0. */
    int int_keys;           /* integer-key mode for a directory without a KEYS file:
                               0 no; 1 yes, refusing a directory that holds keys
                               (BR_EINVAL); 2 only if the directory is empty (else
                               byte keys). A directory's mode is fixed when it is
                               created and recorded in its KEYS file. */
} br_service_options;

/* One member of a cluster (replicated service). */
typedef struct br_service_member {
    uint64_t id;             /* nonzero, unique */
    const char *host;        /* where peers dial its raft port */
    uint16_t raft_port;      /* its raft port */
    const char *client_addr; /* "host:port" of its HTTP API, for redirects */
} br_service_member;

/* What the replicated service needs beyond br_service_options. */
typedef struct br_service_cluster_options {
    uint64_t id; /* this node: one of members */
    const br_service_member *members;
    size_t n_members;         /* 1 .. BR_RAFT_MAX_MEMBERS */
    const char *listen_host;  /* raft listen address; NULL = this member's host */
    int listen_port;          /* raft listen port; -1 = this member's raft_port */
    const char *token;        /* cluster token checked on peer connect; NULL = none */
    uint32_t tick_ms;         /* 0 = 10 */
    uint32_t election_ticks;  /* 0 = 15: timeouts random in [E, 2E) ticks */
    uint32_t heartbeat_ticks; /* 0 = 5 */
    uint64_t snapshot_every;  /* snapshot and truncate the raft log every this many applied
                                 entries; 0 = the node's default (10,000) */
    uint64_t snapshot_keep;   /* entries kept behind the snapshot for slow followers;
                                 0 = the node's default (1,000) */
    br_log_fn log;            /* the node's log lines (optional) */
    void *log_ctx;
    br_log_level log_level; /* lines above this level are dropped */
    int join;               /* a fresh node waits to be added to a running cluster
                               (br_service_add_member on its leader) instead of
                               bootstrapping one with members as voters */
} br_service_cluster_options;

/* What a leader knows of a peer. */
typedef struct br_service_peer {
    uint64_t id;
    uint64_t match;   /* highest index known replicated there */
    uint64_t next;    /* next index to send it */
    int connected;    /* the transport connection is up */
    int snapshotting; /* a snapshot is being streamed to it */
} br_service_peer;

/* The replicated node's figures (zero in standalone mode). */
typedef struct br_service_raft_stats {
    uint64_t id;
    const char *role;       /* "follower", "pre-candidate", "candidate", "leader"; static */
    const char *membership; /* this node in the configuration: "voter", "learner" or
                               "none" (removed, or waiting to be added); static */
    int is_leader;
    uint64_t term;
    uint64_t leader;       /* 0 if unknown */
    char leader_addr[256]; /* the leader's client address, "" if unknown */
    uint64_t commit, applied, last_index, first_index, snapshot_index;
    int fatal;      /* 0 or the error that stopped the node */
    size_t n_peers; /* filled on the leader only */
    br_service_peer peers[16];
    uint64_t proposals, syncs, snapshots_sent, snapshots_installed;
} br_service_raft_stats;

/* A member of the cluster as this node knows it. */
typedef struct br_service_member_info {
    uint64_t id;
    const char *role; /* "voter", "learner" or "none" (not in the configuration: a
                         removed member, or an address this node was given); static */
    int promote;      /* a learner the leader promotes once it has caught up */
    char host[256];   /* raft address */
    uint16_t raft_port;
    char client_addr[256]; /* "" if unknown */
} br_service_member_info;

/* Figures for /status and /metrics. */
typedef struct br_service_stats {
    const char *mode; /* "standalone" or "cluster"; static */
    br_key_mode key_mode;
    br_engine_stats engine;   /* the local engine's figures */
    uint64_t writes_queued;   /* writes waiting for a pool thread now */
    uint64_t writes_inflight; /* writes accepted and not yet completed */
    int cluster;              /* nonzero in cluster mode: raft is filled */
    br_service_raft_stats raft;
} br_service_stats;

void br_service_options_init(br_service_options *o);
void br_service_cluster_options_init(br_service_cluster_options *o);

/*
 * Opens the engine on dir (eo may be NULL for the engine's defaults) and
 * starts the write pool. On failure *out is NULL, the engine is closed, and
 * err (if not NULL) holds a one-line reason; BR_ELOCKED means another
 * process holds the directory.
 */
int br_service_open_standalone(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, br_service **out, char *err,
                               size_t errlen);

/*
 * Opens a replicated node on dir (<dir>/data the engine, <dir>/raft the
 * raft log, <dir>/KEYS the key mode) and starts it: writes are proposed to
 * Raft and complete once committed on a majority and applied here; reads
 * are linearizable (ReadIndex on the leader) unless BR_SERVICE_STALE. On a
 * node that is not the leader, writes and linearizable reads return
 * BR_ENOTLEADER at once (no callback): br_service_leader() says where to
 * go. The engine's sync policy is ignored (the raft log is the durable
 * copy). On failure *out is NULL and err holds a one-line reason.
 */
int br_service_open_replicated(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, const br_service_cluster_options *co,
                               br_service **out, char *err, size_t errlen);

/* The directory's key mode. */
br_key_mode br_service_key_mode(const br_service *s);

/* Nonzero when get and range with these flags always call back before
 * returning. */
int br_service_reads_inline(const br_service *s, unsigned flags);

/* Nonzero when put, delete and write always call back before returning
 * (see br_service_options.inline_writes). */
int br_service_writes_inline(const br_service *s);

/* This node's id (0 standalone) and the leader it knows (*leader 0 if
 * none or standalone), with the leader's client address ("" if unknown). */
void br_service_leader(br_service *s, uint64_t *self, uint64_t *leader, char *addr, size_t addrlen);

int br_service_get(br_service *s, const void *key, size_t klen, unsigned flags,
                   br_service_get_fn cb, void *ctx);

/*
 * A read barrier: cb(ctx, 0) once a read of this node's store started from
 * then on, with BR_SERVICE_STALE, is linearizable (it sees every write
 * acknowledged before this call; replicated: a ReadIndex round on the
 * leader, asked for by this node if it follows, then the local store has
 * applied the read index). Errors as for
 * a linearizable get (BR_ENOTLEADER, -ETIMEDOUT, BR_ECLOSED). Lets a front
 * end wait for consensus on one thread and read the store on its own
 * (br_service_get(..., BR_SERVICE_STALE, ...) after cb(ctx, 0) is what a
 * linearizable get does, without the store read on the node's thread).
 * Standalone: calls back 0 before returning.
 */
int br_service_read_barrier(br_service *s, br_service_done_fn cb, void *ctx);

int br_service_put(br_service *s, const void *key, size_t klen, const void *val, size_t vlen,
                   br_service_done_fn cb, void *ctx);

int br_service_delete(br_service *s, const void *key, size_t klen, br_service_done_fn cb,
                      void *ctx);

/* A new empty batch for s (NULL when out of memory); free it with
 * br_service_batch_free(). Put and delete copy their arguments and return
 * 0, BR_EEMPTYKEY, BR_ETOOBIG or BR_ENOMEM. */
br_service_batch *br_service_batch_new(br_service *s);
int br_service_batch_put(br_service_batch *b, const void *key, size_t klen, const void *val,
                         size_t vlen);
int br_service_batch_delete(br_service_batch *b, const void *key, size_t klen);
void br_service_batch_free(br_service_batch *b);

/* Applies b atomically (see br_engine_write). b stays the caller's and
 * must stay unchanged until the callback. */
int br_service_write(br_service *s, const br_service_batch *b, br_service_done_fn cb, void *ctx);

/* Keys start <= k <= end, at most limit (0 = all); NULL bounds are open.
 * The iterator returns each key with its newest value when it is read; a
 * range is not one snapshot of the store. */
int br_service_range(br_service *s, const void *start, size_t slen, const void *end, size_t elen,
                     size_t limit, unsigned flags, br_service_range_fn cb, void *ctx);

/* Advances: 1 with *key and *val pointing into the iterator (valid until
 * the next call or free), 0 at the end, or a negative error. */
int br_service_iter_next(br_service_iter *it, const void **key, size_t *klen, const void **val,
                         size_t *vlen);
void br_service_iter_free(br_service_iter *it);

void br_service_stats_get(br_service *s, br_service_stats *st);

/*
 * Membership (cluster mode). br_service_members copies up to cap members
 * (by id) into out and returns how many there are (0 standalone).
 * br_service_add_member adds m as a learner that the leader promotes to
 * voter once its log has caught up (learner != 0: it stays a learner);
 * br_service_remove_member removes a voter or learner. Both run on the
 * leader only (BR_ENOTLEADER at once otherwise, as writes) and call back
 * once the change is applied here: 0, -EEXIST (already a member), -EBUSY
 * (another change is being applied), -ENOSPC (full), BR_ENOTFOUND
 * (removing a non-member), BR_EINVAL (the last voter; promoting a learner
 * that is behind), or a write's failure codes. Standalone: -EOPNOTSUPP.
 */
size_t br_service_members(br_service *s, br_service_member_info *out, size_t cap);
int br_service_add_member(br_service *s, const br_service_member *m, int learner,
                          br_service_done_fn cb, void *ctx);
int br_service_remove_member(br_service *s, uint64_t id, br_service_done_fn cb, void *ctx);

/* Starts a compaction of the local store in the background (see
 * br_engine_compact_start); its progress shows in the stats. */
int br_service_compact(br_service *s, uint32_t min_dead_pct);

/*
 * Refuses new operations (BR_ECLOSED), waits for every accepted write to
 * complete (callbacks included; replicated: pending writes complete with
 * BR_ECLOSED, outcome unknown), closes the engine (which syncs). Returns
 * the engine's close result; s is freed in every case. NULL is a no-op.
 */
int br_service_close(br_service *s);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_SERVICE_H */
