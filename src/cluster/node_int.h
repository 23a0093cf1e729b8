/*
 * node_int.h - br_node internals shared by node*.c. Not a public header.
 *
 * Ownership: fields marked (loop) are touched only by the node thread
 * (and by open/close while that thread does not run); (mu) fields are
 * guarded by n->mu; (status_mu) by n->status_mu.
 */
#ifndef BR_CLUSTER_NODE_INT_H
#define BR_CLUSTER_NODE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <uv.h>

#include "node.h"
#include "raftlog.h"
#include "transport.h"

#define ND_OP_PUT    1
#define ND_OP_DELETE 2

/* Kinds of transport message (the first byte of every payload). See
 * node_snapshot.c for the snapshot envelopes. */
#define ND_MSG_RAFT       1 /* then an encoded raft message (br_raft_encode) */
#define ND_MSG_SNAP_BEGIN 2
#define ND_MSG_SNAP_CHUNK 3
#define ND_MSG_SNAP_DONE  4

/* ---- command codec (node_cmd.c) ---- */
typedef int (*nd_cmd_op_fn)(void *ctx, uint8_t kind, const void *key, size_t klen, const void *val,
                            size_t vlen);
int nd_cmd_from_batch(const br_node_batch *b, uint8_t **out, size_t *outlen);
int nd_cmd_single(uint8_t kind, const void *key, size_t klen, const void *val, size_t vlen,
                  uint8_t **out, size_t *outlen);
/* Validates the whole command, then calls fn per operation in order.
 * BR_ECORRUPT if invalid (fn never called), or fn's negative return. */
int nd_cmd_decode(const uint8_t *c, size_t len, nd_cmd_op_fn fn, void *ctx);
uint32_t nd_cmd_count(const uint8_t *c, size_t len);

/* ---- requests from other threads ---- */
enum { ND_REQ_PROPOSE = 1, ND_REQ_READ = 2, ND_REQ_CAMPAIGN = 3, ND_REQ_CONF = 4 };

struct nd_req {
    struct nd_req *next;
    int kind;
    uint8_t *data; /* PROPOSE: the command (owned) */
    size_t len;
    bool single_delete; /* PROPOSE from br_node_delete(): report BR_ENOTFOUND */
    uint32_t cc_type;   /* CONF: enum br_raft_conf_change_type */
    uint64_t cc_id;     /* CONF: the member; data/len hold the entry's context */
    br_node_done_fn cb;
    void *ctx;
};

/* A proposal in the log, waiting to be applied. */
struct nd_pending {
    uint64_t index, term;
    bool single_delete;
    br_node_done_fn cb;
    void *ctx;
};

/* A read waiting for its read state (index == 0) or for the apply. */
struct nd_read {
    uint64_t id;
    uint64_t index;
    bool have_index;
    bool refused;      /* the leader said this node is not a member */
    uint64_t deadline; /* in ticks */
    uint64_t leader;   /* the leader when it was asked (a follower forwarded it there) */
    br_node_done_fn cb;
    void *ctx;
};

/* A snapshot being streamed to one follower. */
struct nd_snap_send {
    bool active;
    uint64_t stream;
    char dir[PATH_MAX];
    char **names; /* files of the checkpoint, streamed in this order */
    size_t n_names, file;
    int fd;
    uint64_t off, size;
    struct br_raft_msg msg; /* the SNAPSHOT message (no entries) */
    uint64_t bytes;
};

/* The snapshot being received (a follower has at most one). */
struct nd_snap_recv {
    bool active;   /* staging dir in use */
    bool complete; /* DONE received and validated, waiting for the core */
    uint64_t stream, from, index, term;
    int fd;
    char name[64];
    uint64_t off;
    uint32_t files;
    uint64_t bytes;
};

struct nd_member {
    uint64_t id;
    char *host;
    uint16_t raft_port;
    char *client_addr;
    int role;     /* enum br_node_member_role, as of the applied index */
    bool promote; /* a learner to promote once caught up */
};

struct br_node {
    struct br_node_config cfg; /* copy; strings point into the copies below */
    uint64_t id;
    /* Members' addresses. The node thread changes the table (and open/
     * close while it does not run) under members_mu; other threads read it
     * under members_mu; the node thread reads it without. Slots are stable
     * while an id is in the table (snd[], the report masks use them). */
    struct nd_member members[BR_RAFT_MAX_MEMBERS];
    size_t n_members;
    pthread_mutex_t members_mu;
    bool joining;               /* waits to be added: never bootstraps */
    uint64_t promote_next_tick; /* (loop) no promotion proposed before this tick */
    char *dir, *data_dir, *raft_dir, *staging_dir;
    uint32_t tick_ms;
    uint64_t compact_every, compact_tail;
    uint32_t chunk;
    size_t max_cmd;
    br_engine_options eopts;

    /* engine; swapped on snapshot install under engine_lock (write) */
    pthread_rwlock_t engine_lock;
    br_engine *engine;

    br_raftlog *log;  /* (loop) */
    br_raft *raft;    /* (loop) */
    br_transport *tr; /* (loop) */
    uint16_t raft_port;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t timer;
    uv_check_t check;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    struct nd_req *q_head, *q_tail; /* (mu) */
    bool closing;                   /* (mu) */
    bool stopped;                   /* (loop) shutdown began */
    atomic_int fatal;               /* 0 or the error that stopped the node */
    atomic_int role;                /* published role, for the fast not-leader path */
    _Atomic uint64_t applied_pub;   /* n->applied, published before callbacks run */
    atomic_bool in_conf; /* this node is a voter or learner of its applied configuration */

    /* (loop) */
    struct nd_pending *pend;
    size_t pend_head, pend_n, pend_cap; /* a FIFO in index order */
    struct nd_read *reads;
    size_t n_reads, reads_cap;
    uint64_t next_read_id;
    uint64_t ticks;
    int last_role;
    uint64_t applied;      /* last index applied (or skipped as a no-op) */
    uint64_t compact_mark; /* applied when the log was last compacted */
    /* The engine sync before a log compaction runs on libuv's thread pool
     * (an fdatasync of up to compact_every entries' data would stall the
     * loop); the snapshot point is recorded when it is done. */
    uv_work_t compact_work;
    bool compact_busy;    /* (loop) a sync is in flight */
    uint64_t compact_seq; /* (loop) the engine's last sequence number before it */
    uint64_t engine_gen;  /* (loop) snapshot installs so far: a sync of a
                             replaced engine records nothing */
    uint64_t compact_gen; /* (loop) engine_gen when the sync started */
    int compact_rc;       /* (worker, read after) the sync's result */
    br_batch *batch;      /* reused for applying */
    uint8_t *sendbuf;
    size_t sendbuf_cap;
    bool in_ready;
    uint64_t unreachable_mask;                 /* member slots to report unreachable */
    uint64_t snap_report_ok, snap_report_fail; /* member slots */
    struct nd_snap_send snd[BR_RAFT_MAX_MEMBERS];
    struct nd_snap_recv rcv;
    uint64_t stream_seq;

    /* counters (loop), copied into the status */
    uint64_t c_proposals, c_applied, c_readys, c_syncs, c_compactions, c_snap_sent,
        c_snap_installed;

    pthread_mutex_t status_mu;
    struct br_node_status status; /* (status_mu) */
};

/* ---- node.c ---- */
void nd_log(br_node *n, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void nd_sub_log(void *ctx, int level, const char *msg);
int nd_member_slot(const br_node *n, uint64_t id);
/* Records a fatal error: logs it, stops the node's work, fails pending
 * requests with rc. (loop) */
void nd_fatal(br_node *n, int rc, const char *what);

/* ---- node_loop.c ---- */
int nd_loop_start(br_node *n);
void nd_process(br_node *n);
void nd_publish_status(br_node *n);
/* Sends a transport payload (kind byte included) to `to`. */
int nd_send_bytes(br_node *n, uint64_t to, const struct iovec *iov, size_t niov);

/* Hands a request to the node thread (wakes it). BR_ECLOSED, fatal. */
int nd_enqueue(br_node *n, struct nd_req *r);

/* ---- node_members.c ---- */
/* Merges <dir>/MEMBERS (if any) into the configured table, sets
 * n->joining. At open, before the raft log. */
int nd_members_load(br_node *n, char *err, size_t errlen);
/* Sets every member's role from conf (open, snapshot install). */
void nd_members_set_roles(br_node *n, const struct br_raft_conf_state *conf);
void nd_members_publish_self(br_node *n);
/* Writes the table to <dir>/MEMBERS (atomically) or to dir/MEMBERS. */
int nd_members_save(br_node *n, const char *dir);
/* After a snapshot swap: takes <dir>/data/MEMBERS (sent with the
 * snapshot) as <dir>/MEMBERS and merges it into the table. */
int nd_members_adopt(br_node *n);
/* Proposes a CONF request; *index is its entry. (loop) */
int nd_members_propose(br_node *n, const struct nd_req *r, uint64_t *index);
/* A committed CONF_CHANGE entry is being applied. (loop) */
void nd_members_apply(br_node *n, const struct br_raft_entry *e);
/* Leader: promotes caught-up learners. (loop, every tick) */
void nd_members_tick(br_node *n);

/* ---- node_snapshot.c ---- */
/* Recovers <dir>/data after a crash during a swap; removes staging and
 * outgoing checkpoints. Before the engine opens. */
int nd_snap_recover_dirs(br_node *n);
/* The leader's core asks for a snapshot to go to m->to. (loop, in Ready) */
void nd_snap_start(br_node *n, const struct br_raft_msg *m);
/* Streams more chunks where the transport has room. (loop, not in Ready) */
void nd_snap_pump(br_node *n);
void nd_snap_abort_send(br_node *n, int slot, bool report);
/* A snapshot envelope arrived. */
void nd_snap_on_message(br_node *n, uint64_t from, const uint8_t *p, size_t len);
/* Installs rd->snapshot (step 1 of a Ready). */
int nd_snap_install(br_node *n, const struct br_raft_snapshot_meta *meta);
/* Drops a received snapshot the core did not take. */
void nd_snap_discard_recv(br_node *n);
/* Snapshots the state machine and compacts the log when due. */
void nd_maybe_compact(br_node *n);
int nd_rmtree(const char *path);
int nd_fsync_dir(const char *path);

#endif /* BR_CLUSTER_NODE_INT_H */
