/*
 * raft_int.h - internals of the raft core shared between its files.
 *
 * Internal functions carry the prefix rf_; the public API is br_raft_*.
 * Nothing here is visible outside src/raft.
 */
#ifndef BR_RAFT_INT_H
#define BR_RAFT_INT_H

#include "bitraft/raft.h"

#include <stdarg.h>

/* ---------------------------------------------------------------- arena */

/* Bump allocator for the memory a Ready points to; reset at advance. */
struct rf_arena_chunk;
struct rf_arena {
    struct rf_arena_chunk *head;
};
void *rf_arena_alloc(struct rf_arena *a, size_t n);
void rf_arena_reset(struct rf_arena *a);
void rf_arena_free(struct rf_arena *a);

/* ---------------------------------------------------------------- log */

/*
 * The node's log: a stable part read through the storage and an unstable
 * tail kept here (entries not yet persisted, or a snapshot not yet
 * installed). Unstable entries own their data (one malloc each).
 *
 *   storage:   [snap] first .................. slast
 *   unstable:  [snap?]              offset ............ last
 *
 * Unstable entries from `offset` shadow stored ones at the same indices
 * (a truncated suffix the driver has not yet overwritten).
 */
struct rf_log {
    const struct br_raft_storage *st;
    bool has_snap; /* a snapshot received and not yet installed */
    struct br_raft_snapshot_meta snap;
    uint64_t offset;         /* index of u[0] */
    struct br_raft_entry *u; /* unstable entries */
    size_t n, cap;
    uint64_t committed; /* highest index known committed */
    uint64_t applied;   /* highest index handed out and advanced */
};

int rf_log_init(struct rf_log *l, const struct br_raft_storage *st);
void rf_log_free(struct rf_log *l);
uint64_t rf_log_first_index(const struct rf_log *l);
uint64_t rf_log_last_index(const struct rf_log *l);
/* 0 and *t on success; 1 if the index is compacted or past the end; <0 on
 * a storage error. */
int rf_log_term(const struct rf_log *l, uint64_t i, uint64_t *t);
uint64_t rf_log_term_or0(const struct rf_log *l, uint64_t i);
uint64_t rf_log_last_term(const struct rf_log *l);
bool rf_log_match_term(const struct rf_log *l, uint64_t i, uint64_t t);
bool rf_log_up_to_date(const struct rf_log *l, uint64_t last, uint64_t term);
/* Appends entries (data copied) after truncating anything at or after
 * ents[0].index. BR_ENOMEM leaves the log unchanged. */
int rf_log_append(struct rf_log *l, const struct br_raft_entry *ents, size_t n);
/* Appends one entry taking ownership of data (malloc'd). */
int rf_log_append_owned(struct rf_log *l, uint64_t term, uint32_t type, uint8_t *data, uint32_t len,
                        uint64_t *index);
/* Figure 2 receiver rule 2-4; returns 1 and *lastnew on a match, 0 on a
 * mismatch, <0 on error (BR_EPROTOCOL if it would rewrite committed
 * entries). */
int rf_log_maybe_append(struct rf_log *l, uint64_t prev_i, uint64_t prev_t, uint64_t commit,
                        const struct br_raft_entry *ents, size_t n, uint64_t *lastnew);
/* Largest index <= i whose term is <= t (the fast-backoff hint). */
uint64_t rf_log_find_conflict_by_term(const struct rf_log *l, uint64_t i, uint64_t t,
                                      uint64_t *term_out);
/*
 * Copies entries [lo, hi) into the arena, up to max_bytes of data (at
 * least one). 0 on success; 1 if lo is compacted; <0 on error.
 */
int rf_log_slice(const struct rf_log *l, struct rf_arena *a, uint64_t lo, uint64_t hi,
                 uint64_t max_bytes, struct br_raft_entry **out, size_t *n);
void rf_log_commit_to(struct rf_log *l, uint64_t i);
bool rf_log_maybe_commit(struct rf_log *l, uint64_t i, uint64_t term);
void rf_log_restore(struct rf_log *l, const struct br_raft_snapshot_meta *snap);
/* The driver persisted everything handed out: drop the unstable part. */
void rf_log_stable_all(struct rf_log *l);
int rf_log_snapshot(const struct rf_log *l, struct br_raft_snapshot_meta *meta);

/* ---------------------------------------------------------------- progress */

enum rf_pr_state { RF_PR_PROBE = 0, RF_PR_REPLICATE = 1, RF_PR_SNAPSHOT = 2 };

/* Ring of the last index of each APPEND in flight to one follower. */
struct rf_inflights {
    uint64_t *buf;
    uint32_t start, count, cap;
};

/* What the leader knows of one member (thesis §3.5 nextIndex/matchIndex). */
struct rf_progress {
    uint64_t id;
    bool learner;
    int8_t vote;               /* during an election: 0 unknown, 1 granted, -1 refused */
    bool recent_active;        /* heard from since the last check-quorum round */
    bool probe_sent;           /* probe state: one APPEND out, wait for its answer */
    int state;                 /* enum rf_pr_state */
    uint64_t match;            /* highest index known replicated there */
    uint64_t next;             /* next index to send */
    uint64_t pending_snapshot; /* snapshot state: index of the snapshot sent */
    struct rf_inflights inf;
};

void rf_pr_reset(struct rf_progress *p, uint64_t next, uint32_t max_inflight);
void rf_pr_become_probe(struct rf_progress *p);
void rf_pr_become_replicate(struct rf_progress *p);
void rf_pr_become_snapshot(struct rf_progress *p, uint64_t snap_index);
bool rf_pr_maybe_update(struct rf_progress *p, uint64_t n);
bool rf_pr_maybe_decr_to(struct rf_progress *p, uint64_t rejected, uint64_t hint);
bool rf_pr_is_paused(const struct rf_progress *p);
void rf_pr_sent(struct rf_progress *p, uint64_t last, size_t n);
void rf_inflights_free_le(struct rf_inflights *in, uint64_t idx);
void rf_inflights_free(struct rf_inflights *in);

/* ---------------------------------------------------------------- read index */

struct rf_read_req {
    uint64_t ctx;   /* the requester's */
    uint64_t from;  /* the follower that forwarded it; 0 = this node's own */
    uint64_t round; /* the heartbeat round's id (unique per leader) */
    uint64_t index; /* commit index when it was received */
    uint32_t acks;  /* bitmask over progress slots */
    bool sent;      /* heartbeat round started */
};

/* ---------------------------------------------------------------- the node */

struct br_raft {
    uint64_t id;
    int role;
    uint64_t term;
    uint64_t vote;
    uint64_t lead;
    struct rf_log log;

    /* members: one slot per voter or learner of the applied configuration */
    struct rf_progress prs[BR_RAFT_MAX_MEMBERS];
    uint32_t n_prs;
    bool self_voter;       /* this node is a voter of the configuration */
    bool removed_hold;     /* removed, but holds a log a candidate needs: may campaign */
    uint64_t pending_conf; /* index of the last conf change proposed (leader) */

    /* time, in ticks */
    uint32_t election_tick, heartbeat_tick;
    uint32_t election_elapsed, heartbeat_elapsed, randomized_timeout;
    uint64_t rng;

    bool pre_vote, check_quorum;
    uint64_t max_msg_bytes;
    uint32_t max_inflight;
    uint64_t lead_transferee;
    bool bcast_pending; /* proposals appended, APPENDs not yet sent */

    /* ReadIndex requests waiting for confirmation, FIFO */
    struct rf_read_req *reads;
    size_t n_reads, cap_reads;
    uint64_t read_rounds; /* the last round id handed out */
    /* A TIMEOUT_NOW that came while a committed configuration change was
     * not applied yet: campaign once it is (within this many ticks). */
    uint32_t timeout_now_ticks;

    /* output gathered for the next Ready */
    struct rf_arena arena;
    struct br_raft_msg *msgs;
    size_t n_msgs, cap_msgs;
    struct br_raft_read_state *rstates;
    size_t n_rstates, cap_rstates;
    struct br_raft_hard_state prev_hs; /* last hard state handed out */
    struct br_raft_entry *committed;   /* last Ready's committed entries (arena) */
    size_t n_committed;
    bool ready_taken;

    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;
};

/* raft.c */
void rf_logf(const br_raft *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Queues a message; fills from and (if 0) term. NULL on ENOMEM. */
struct br_raft_msg *rf_send(br_raft *r, uint32_t type, uint64_t to);
void rf_become_follower(br_raft *r, uint64_t term, uint64_t lead);
void rf_become_candidate(br_raft *r);
void rf_become_pre_candidate(br_raft *r);
void rf_become_leader(br_raft *r);
struct rf_progress *rf_pr(br_raft *r, uint64_t id);
int rf_pr_slot(const br_raft *r, uint64_t id);
uint32_t rf_quorum(const br_raft *r);
uint32_t rf_n_voters(const br_raft *r);
void rf_reset_randomized_timeout(br_raft *r);

/* election.c */
void rf_hup(br_raft *r, bool transfer);
int rf_step_vote_request(br_raft *r, const struct br_raft_msg *m);
void rf_step_vote_resp(br_raft *r, const struct br_raft_msg *m);
void rf_tick_election(br_raft *r);
void rf_abort_transfer(br_raft *r);
void rf_handoff(br_raft *r);

/* replication.c */
bool rf_send_append(br_raft *r, struct rf_progress *p, bool send_if_empty);
void rf_bcast_append(br_raft *r);
void rf_bcast_heartbeat(br_raft *r, uint64_t ctx);
void rf_handle_append(br_raft *r, const struct br_raft_msg *m);
void rf_handle_heartbeat(br_raft *r, const struct br_raft_msg *m);
void rf_handle_snapshot(br_raft *r, const struct br_raft_msg *m);
void rf_handle_append_resp(br_raft *r, const struct br_raft_msg *m);
void rf_handle_heartbeat_resp(br_raft *r, const struct br_raft_msg *m);
bool rf_maybe_commit(br_raft *r);
void rf_tick_heartbeat(br_raft *r);
int rf_append_entry(br_raft *r, uint32_t type, const void *d1, size_t l1, const void *d2, size_t l2,
                    uint64_t *index);
void rf_self_persisted(br_raft *r);

/* readindex.c */
void rf_read_on_heartbeat_resp(br_raft *r, int slot, uint64_t ctx);
void rf_read_on_commit(br_raft *r);
void rf_read_reset(br_raft *r);
uint64_t rf_read_last_ctx(const br_raft *r);
void rf_read_free(br_raft *r);
void rf_read_conf_changed(br_raft *r);
/* READ_INDEX from a follower (leader) / READ_INDEX_RESP (follower). */
void rf_read_forwarded(br_raft *r, const struct br_raft_msg *m);
void rf_read_answer(br_raft *r, const struct br_raft_msg *m);

/* membership.c */
int rf_conf_load(br_raft *r, const struct br_raft_conf_state *conf);
void rf_conf_apply_entry(br_raft *r, const struct br_raft_entry *e);
void rf_conf_to_state(const br_raft *r, struct br_raft_conf_state *conf);
bool rf_conf_pending_unapplied(const br_raft *r);

#endif
