/*
 * node.h - br_node, a replicated store: the Raft core driven on a libuv
 * loop, over a raft log on disk, a peer transport and a storage engine.
 *
 * Design
 * ------
 * A node owns one data directory:
 *
 *   <dir>/data   the engine (br_engine); its last sequence number is the
 *                index of the last Raft entry applied to it
 *   <dir>/raft   the raft log (br_raftlog): entries, hard state, conf,
 *                snapshot metadata; the durable copy of every write
 *
 * and one thread, the node thread, which runs a libuv loop: a timer ticks
 * the Raft core every tick_ms, the transport delivers peer messages, and a
 * uv_async wakes the loop when another thread hands in a proposal or a
 * read request. After every loop iteration the node handles the core's
 * Ready in the order raft.h prescribes: install a received snapshot;
 * append entries and the hard state to the raft log and make them durable
 * with ONE fdatasync; send messages (a leader sends APPEND/HEARTBEAT
 * before its own fsync, thesis §10.2.1); apply committed entries to the
 * engine with br_engine_write_seq(batch, entry index); complete waiting
 * proposals and reads; advance. Every proposal that arrived since the
 * previous iteration is in one Ready, so many client writes share one
 * fsync. docs/NODE.md has the longer story.
 *
 * Durability: a write's callback reports 0 once its entry is committed
 * (on disk on a majority) and applied to the local engine. The engine runs
 * with BR_SYNC_NEVER: the raft log is the durable copy, and it is never
 * compacted past what the engine has synced (br_engine_sync() first).
 *
 * Callbacks (br_node_done_fn) run on the node thread. They may call any
 * function here except br_node_close(), and must not block: they hold up
 * the whole node. A call that returns a negative code has not accepted the
 * request and never calls back; a call that returns 0 calls back exactly
 * once (BR_ECLOSED if the node closes first).
 *
 * Reads: a caller reads the engine directly (br_node_engine_acquire()).
 * For a linearizable read, it first waits for br_node_read_index() to call
 * back with 0; reads without it may be stale (a follower's engine lags).
 *
 * Threads: every function may be called from any thread, except
 * br_node_close(), which must be the last call and not be made from a
 * node callback.
 */
#ifndef BR_CLUSTER_NODE_H
#define BR_CLUSTER_NODE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitraft/engine.h"
#include "bitraft/error.h"
#include "bitraft/raft.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_node br_node;

/*
 * A write's outcome is unknown: this node proposed it as leader, then lost
 * leadership before the entry was applied here. The write may still
 * commit (a new leader may hold the entry) or may be lost; the caller
 * cannot tell. Clients should treat it like a timeout.
 */
#define BR_NODE_ELOST (-ECANCELED)

/* Log levels passed to br_node_config.log_fn: the raft core's three plus
 * an error level for what stops the node. */
enum br_node_log_level {
    BR_NODE_LOG_DEBUG = 0,
    BR_NODE_LOG_INFO = 1,
    BR_NODE_LOG_WARN = 2,
    BR_NODE_LOG_ERROR = 3
};

/* One member of the cluster. */
struct br_node_member {
    uint64_t id;             /* nonzero, unique */
    const char *host;        /* address (or name) peers dial for raft traffic */
    uint16_t raft_port;      /* raft port */
    const char *client_addr; /* optional: "host:port" of its client API, for redirects */
};

struct br_node_config {
    uint64_t id; /* this node; must be one of members */
    /* The members. A fresh node (empty raft log) bootstraps with all of
     * them as voters; a node with a log uses the configuration stored in
     * it, and the list only tells the transport where peers are. */
    const struct br_node_member *members;
    size_t n_members;                /* 1 .. BR_RAFT_MAX_MEMBERS */
    const char *listen_host;         /* NULL = this member's host */
    int listen_port;                 /* -1 = this member's raft_port; 0 = any (br_node_raft_port) */
    const char *cluster_token;       /* shared secret of the transport; NULL = none */
    const char *dir;                 /* data directory (created, one level) */
    uint32_t tick_ms;                /* 0 = 10 */
    uint32_t election_ticks;         /* 0 = 15: election timeout in [15, 30) ticks = 150-300 ms */
    uint32_t heartbeat_ticks;        /* 0 = 5 */
    uint64_t compact_every;          /* snapshot + compact the log every this many applied entries;
                                        0 = 10000 */
    uint64_t compact_tail;           /* entries kept behind the snapshot point for slow
                                        followers; 0 = 1000; UINT64_MAX keeps none */
    uint32_t snapshot_chunk;         /* bytes per snapshot chunk on the wire; 0 = 1 MiB */
    uint64_t raftlog_segment;        /* raft log segment size; 0 = the raft log's default */
    const br_engine_options *engine; /* NULL = defaults; sync is forced to BR_SYNC_NEVER
                                        and log to the node's sink */
    /* A fresh node (empty raft log) waits to be added to a running cluster
     * (br_node_add_member on its leader) instead of bootstrapping one. The
     * choice is recorded in <dir>/MEMBERS: a node that was started to join
     * never bootstraps later, with or without this flag. */
    bool join;
    /* Optional log sink (levels from enum br_node_log_level). Called from
     * the node thread and from br_node_open()/br_node_close()'s caller;
     * msg is valid during the call only and is prefixed "node N: ". */
    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;
    int log_level; /* lines below this level are dropped (default 0 = all) */
};

/* Fills *c with the defaults (zeroes, listen_port -1). */
void br_node_config_init(struct br_node_config *c);

/*
 * Opens the node: recovers the data directory (a snapshot swap cut by a
 * crash is finished or undone), opens the engine and the raft log,
 * bootstraps a fresh log with the configured voters, restarts the Raft
 * core at the engine's applied index (nothing already in the engine is
 * applied again), binds the raft port and starts the node thread. On
 * failure *out is NULL, nothing is left open, and err (if not NULL) holds
 * a one-line reason. Errors: BR_EINVAL (bad config), BR_ELOCKED (the
 * directory is in use), BR_ECORRUPT (damaged log, or an engine that lacks
 * data the log was compacted past), -EADDRINUSE, BR_ENOMEM, I/O errors.
 */
int br_node_open(const struct br_node_config *cfg, br_node **out, char *err, size_t errlen);

/*
 * Stops the node: refuses new requests (BR_ECLOSED), fails every pending
 * proposal and read with BR_ECLOSED (on the node thread, before this
 * returns; a failed proposal may still commit elsewhere), stops the loop,
 * closes the transport, the raft log and the engine (which syncs). Returns
 * the first error of closing the log or the engine. NULL is a no-op.
 */
int br_node_close(br_node *n);

/* Completion of a request: rc is 0 or a negative code (see each call). */
typedef void (*br_node_done_fn)(void *ctx, int rc);

/*
 * Proposes a write. Key and value are copied before the call returns.
 *
 * Returns BR_ENOTLEADER at once (no callback) when this node does not
 * believe it is the leader (br_node_leader() says who is), input errors
 * (BR_EEMPTYKEY, BR_EKEYTOOBIG, BR_EVALTOOBIG, BR_ETOOBIG), BR_ECLOSED,
 * BR_ENOMEM or the node's fatal error. Otherwise 0, and cb(ctx, rc) is
 * called on the node thread with:
 *   0              committed and applied to the local engine
 *   BR_ENOTFOUND   br_node_delete() of a key that was absent (the
 *                  delete was committed; nothing changed)
 *   BR_ENOTLEADER  not proposed: leadership moved before it reached the
 *                  log, or its entry was overwritten (never applied)
 *   BR_NODE_ELOST  leadership lost while pending: outcome unknown
 *   BR_ECLOSED     the node closed first (outcome unknown)
 *   another code   the node hit a fatal error (outcome unknown)
 */
int br_node_put(br_node *n, const void *key, size_t klen, const void *val, size_t vlen,
                br_node_done_fn cb, void *ctx);
int br_node_delete(br_node *n, const void *key, size_t klen, br_node_done_fn cb, void *ctx);

/*
 * An atomic batch of puts and deletes, built by the caller and proposed
 * as ONE raft entry (applied all or nothing). The engine's br_batch cannot
 * be read back, so the node has its own builder. A batch is used by one
 * thread at a time; br_node_write() copies it.
 */
typedef struct br_node_batch br_node_batch;
br_node_batch *br_node_batch_new(void);
void br_node_batch_free(br_node_batch *b);
void br_node_batch_clear(br_node_batch *b);
/* BR_EEMPTYKEY, BR_ETOOBIG (lengths beyond 32 bits), BR_ENOMEM. */
int br_node_batch_put(br_node_batch *b, const void *key, size_t klen, const void *val, size_t vlen);
int br_node_batch_delete(br_node_batch *b, const void *key, size_t klen);
size_t br_node_batch_count(const br_node_batch *b);

/* Proposes b (at least one operation; BR_EINVAL if empty) as br_node_put()
 * does; a delete of an absent key is not an error in a batch. */
int br_node_write(br_node *n, const br_node_batch *b, br_node_done_fn cb, void *ctx);

/*
 * Linearizable read barrier (ReadIndex, thesis §6.4), on any member: a
 * follower asks the leader for the read index. Returns BR_ENOTLEADER at
 * once (no callback) on a node that knows no leader or is not in its
 * applied configuration (removed, or not yet added); a removed node that
 * has not applied its removal is refused by the leader (BR_ENOTLEADER by
 * callback). Otherwise 0, and
 * cb(ctx, rc) runs on the node thread with 0 once the leader confirmed its
 * leadership by a heartbeat round (after the request reached it) and the
 * local engine has applied every entry committed before: a read of the
 * engine made after that sees every write completed before the call.
 * Failures: BR_ENOTLEADER (leadership lost, or a follower's leader
 * changed, meanwhile), -ETIMEDOUT (no answer within a few election
 * timeouts: no quorum, or the request was lost), BR_ECLOSED. Concurrent
 * requests share one heartbeat round.
 */
int br_node_read_index(br_node *n, br_node_done_fn cb, void *ctx);

/*
 * The engine, for reads. Holds a shared lock that keeps the engine from
 * being swapped (a snapshot install replaces it); release it with
 * br_node_engine_release() soon, and free iterators before that: the node
 * thread waits for it to install a snapshot. Returns NULL (no lock held)
 * when the node has no engine (a fatal error). Never write to it.
 */
br_engine *br_node_engine_acquire(br_node *n);
void br_node_engine_release(br_node *n);

/* What a leader knows of a member. */
struct br_node_peer {
    uint64_t id;
    uint64_t match;    /* highest index known to be replicated there */
    uint64_t next;     /* next index to send */
    bool connected;    /* our transport connection to it is up */
    bool snapshotting; /* a snapshot is being streamed to it */
};

struct br_node_status {
    uint64_t id;
    int role; /* enum br_raft_role */
    uint64_t term;
    uint64_t leader;  /* 0 if unknown */
    uint64_t commit;  /* commit index */
    uint64_t applied; /* last index applied to the engine */
    uint64_t last_index;
    uint64_t first_index;    /* of the raft log (after compaction) */
    uint64_t snapshot_index; /* the raft log's snapshot point */
    int fatal;               /* 0, or the error that stopped the node */
    size_t n_peers;          /* filled on the leader only */
    struct br_node_peer peers[BR_RAFT_MAX_MEMBERS];
    /* Counters since open. */
    uint64_t proposals;       /* entries proposed */
    uint64_t entries_applied; /* committed entries applied (no-ops included) */
    uint64_t readys;          /* Readys handled */
    uint64_t syncs;           /* raft log fsyncs */
    uint64_t compactions;     /* raft log compactions */
    uint64_t snapshots_sent;  /* snapshot streams completed to followers */
    uint64_t snapshots_installed;
};

/* A consistent copy of the status, as of the node thread's last Ready.
 * Any thread. */
void br_node_status_get(br_node *n, struct br_node_status *st);

/*
 * The leader as this node knows it: *id = 0 if unknown. If the leader is
 * a configured member, copies its host, raft port and client address
 * ("" if none) into the buffers (each may be NULL). Any thread.
 */
void br_node_leader(br_node *n, uint64_t *id, char *host, size_t hostlen, uint16_t *raft_port,
                    char *client_addr, size_t addrlen);

/* The raft port the node listens on. */
uint16_t br_node_raft_port(const br_node *n);

/*
 * Membership (single-server changes, thesis §4.1). The node keeps a table
 * of members' addresses: the configured members, plus what membership
 * changes carried (every change entry holds the member's addresses), kept
 * in <dir>/MEMBERS (written atomically on every change, and sent with
 * snapshots) so that a restart knows members that are not on its command
 * line. At open, an address given in the config wins over the recorded
 * one for the same id.
 */
enum br_node_member_role {
    BR_NODE_NONE = 0,    /* not in the configuration: an address only (a
                            removed member, or one of the config's members a
                            joining node has not heard of yet) */
    BR_NODE_VOTER = 1,   /* votes and counts for commits */
    BR_NODE_LEARNER = 2, /* receives the log; no vote */
};

struct br_node_member_info {
    uint64_t id;
    int role;     /* enum br_node_member_role, as of the applied index */
    bool promote; /* a learner the leader makes a voter once it caught up */
    char host[256];
    uint16_t raft_port;
    char client_addr[256];
};

/* Copies up to cap members (ordered by id) into out; returns how many
 * there are. Any thread. */
size_t br_node_members(br_node *n, struct br_node_member_info *out, size_t cap);

/* br_node_add_member() flags. */
#define BR_NODE_ADD_LEARNER 1u /* the new member stays a learner */

/*
 * Adds member m (its id, raft host and port, client address) on the
 * leader. The member joins as a learner; unless BR_NODE_ADD_LEARNER, the
 * leader (this one or any later one) promotes it to voter as soon as its
 * log has caught up with the commit index (thesis §4.2.1: a new server
 * does not count for commits before it holds the log). Adding an existing
 * learner without the flag promotes it (refused while it is behind).
 * Start the new node with config.join (any order: the leader keeps trying
 * to reach it).
 *
 * Returns at once (no callback) BR_ENOTLEADER, BR_EINVAL (id 0, no host,
 * an address over 255 bytes), BR_ECLOSED, BR_ENOMEM. Otherwise 0 and
 * cb(ctx, rc) on the node thread once the change is applied here:
 *   0              the member is in the configuration (as a learner; the
 *                  promotion follows on its own)
 *   -EEXIST        already a member (a voter, or a learner with the flag)
 *   -EBUSY         another membership change is still being applied
 *   -ENOSPC        BR_RAFT_MAX_MEMBERS members already
 *   BR_EINVAL      promoting a learner that is behind
 *   and the codes of br_node_put() (BR_ENOTLEADER, BR_NODE_ELOST, ...).
 */
int br_node_add_member(br_node *n, const struct br_node_member *m, unsigned flags,
                       br_node_done_fn cb, void *ctx);

/*
 * Removes member id (voter or learner) on the leader; a leader may remove
 * itself (it hands leadership to the most up-to-date voter once the
 * change is applied). Returns as br_node_add_member(); the callback gets
 * 0 once applied, BR_ENOTFOUND if id is not a member, -EBUSY, BR_EINVAL
 * for the last voter, or the codes of br_node_put(). A removed node keeps
 * running but takes no part (br_node_members() shows it as BR_NODE_NONE).
 */
int br_node_remove_member(br_node *n, uint64_t id, br_node_done_fn cb, void *ctx);

/* Asks the node to start an election now (tests, operators). 0 or
 * BR_ECLOSED; the election may fail. */
int br_node_campaign(br_node *n);

#ifdef __cplusplus
}
#endif

#endif /* BR_CLUSTER_NODE_H */
