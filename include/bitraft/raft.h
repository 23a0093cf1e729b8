/*
 * raft.h - bitraft's Raft consensus core.
 *
 * Design
 * ------
 * The core is a pure, deterministic state machine in the design of
 * etcd-io/raft: it does no I/O, reads no clock, draws no randomness of its
 * own (a PRNG seeded from the config) and never prints (an optional log
 * callback receives formatted lines). A driver feeds it inputs:
 *
 *   br_raft_step()      a message that arrived from a peer
 *   br_raft_tick()      one unit of logical time passed
 *   br_raft_propose()   append a command (leader only)
 *   br_raft_read_index() ask for a linearizable read point (leader only)
 *   br_raft_transfer_leadership(), br_raft_propose_conf_change(),
 *   br_raft_report_snapshot(), br_raft_report_unreachable()
 *
 * and collects its outputs as a Ready (br_raft_ready()): the hard state and
 * log entries to persist, a snapshot to install, messages to send,
 * committed entries to apply and read states that are ready. The driver
 * handles one Ready in this order:
 *
 *   1. install rd.snapshot (if any) into storage and the state machine,
 *   2. append rd.entries to storage and persist rd.hard_state; fsync,
 *   3. send rd.msgs,
 *   4. apply rd.committed in order,
 *   5. call br_raft_advance().
 *
 * Between br_raft_ready() and br_raft_advance() the driver calls no other
 * function of this API on the same instance (the Ready points into the
 * core's memory). Messages of type APPEND, HEARTBEAT and SNAPSHOT from a
 * leader may be sent before step 2 (thesis §10.2.1: the leader writes its
 * log in parallel with replicating it); every other message must wait for
 * step 2, because it may promise a vote or an entry the disk must hold.
 * The leader counts its own log towards a commit quorum only for the
 * entries it was told were persisted by br_raft_advance().
 *
 * Crash model: whatever the driver persisted (storage + hard state) is what
 * a restarted node knows. A new br_raft built over that storage resumes
 * safely; anything not persisted is lost and the protocol tolerates it.
 * The driver records with its state machine the applied index and the
 * configuration as of that index (br_raft_get_conf() after an advance),
 * and restarts with config.applied = that index and that configuration
 * from storage->initial_state(). Membership changes take effect when
 * applied, so the two must match.
 *
 * Storage: the core keeps entries not yet persisted ("unstable") in memory
 * and reads persisted ones through struct br_raft_storage, which the driver
 * implements over its log files (or uses br_raft_memstorage, the in-memory
 * implementation, as the tests do).
 *
 * Errors: every function returns 0 or a negative code from
 * bitraft/error.h. Bytes from the network reach the core only through
 * br_raft_decode(), which rejects malformed input; br_raft_step() also
 * validates a decoded message's fields and returns BR_EPROTOCOL rather
 * than trusting them.
 */
#ifndef BITRAFT_RAFT_H
#define BITRAFT_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Node ids are nonzero; 0 means "none" (no vote, no known leader). */
#define BR_RAFT_NONE 0

/* Most members (voters + learners) a configuration can hold. */
#define BR_RAFT_MAX_MEMBERS 16

/* ---------------------------------------------------------------- entries */

enum br_raft_entry_type {
    BR_RAFT_ENTRY_NORMAL = 0,     /* an application command (or an empty no-op) */
    BR_RAFT_ENTRY_CONF_CHANGE = 1 /* a membership change, see br_raft_conf_change */
};

/*
 * One log entry. `data` is owned by whoever handed the entry out; the
 * lifetime is stated where entries are returned (Ready, storage).
 */
struct br_raft_entry {
    uint64_t term;  /* term of the leader that created it */
    uint64_t index; /* position in the log, from 1 */
    uint32_t type;  /* enum br_raft_entry_type */
    uint32_t len;   /* bytes at data */
    uint8_t *data;  /* payload; NULL when len == 0 */
};

/* The persistent state every server keeps (Figure 2: currentTerm, votedFor)
 * plus the commit index, so a restart does not re-apply from zero. */
struct br_raft_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

/* A configuration: who votes and who only receives the log. */
struct br_raft_conf_state {
    uint32_t n_voters;
    uint32_t n_learners;
    uint64_t voters[BR_RAFT_MAX_MEMBERS];
    uint64_t learners[BR_RAFT_MAX_MEMBERS];
};

/* What a snapshot covers. The content itself never passes through the core:
 * the driver produces, streams and installs it. */
struct br_raft_snapshot_meta {
    uint64_t index; /* last index the snapshot includes */
    uint64_t term;  /* term of that entry */
    struct br_raft_conf_state conf;
};

enum br_raft_conf_change_type {
    BR_RAFT_CC_ADD_VOTER = 0,   /* add a voter, or promote a learner */
    BR_RAFT_CC_ADD_LEARNER = 1, /* add a non-voting member */
    BR_RAFT_CC_REMOVE = 2       /* remove a voter or learner */
};

/*
 * A membership change, carried in an entry of type CONF_CHANGE. The
 * entry's data is 12 bytes: type (u32 LE) then node id (u64 LE), then the
 * opaque context given at proposal (for example the node's address).
 */
struct br_raft_conf_change {
    uint32_t type;
    uint64_t node_id;
};

/* Decodes the change held in a CONF_CHANGE entry. BR_ECORRUPT if short. */
int br_raft_conf_change_decode(const struct br_raft_entry *e, struct br_raft_conf_change *cc);

/* ---------------------------------------------------------------- messages */

enum br_raft_msg_type {
    BR_RAFT_MSG_APPEND = 1,          /* AppendEntries RPC */
    BR_RAFT_MSG_APPEND_RESP = 2,     /* its reply; also the ack of a snapshot */
    BR_RAFT_MSG_VOTE = 3,            /* RequestVote RPC */
    BR_RAFT_MSG_VOTE_RESP = 4,       /* its reply */
    BR_RAFT_MSG_PREVOTE = 5,         /* pre-vote request (thesis §9.6) */
    BR_RAFT_MSG_PREVOTE_RESP = 6,    /* its reply */
    BR_RAFT_MSG_HEARTBEAT = 7,       /* leader's empty AppendEntries */
    BR_RAFT_MSG_HEARTBEAT_RESP = 8,  /* its reply */
    BR_RAFT_MSG_SNAPSHOT = 9,        /* InstallSnapshot (metadata; content streamed by driver) */
    BR_RAFT_MSG_TIMEOUT_NOW = 10,    /* leadership transfer: start an election now */
    BR_RAFT_MSG_READ_INDEX = 11,     /* a follower asks the leader for a read point */
    BR_RAFT_MSG_READ_INDEX_RESP = 12 /* the leader's answer: the read point */
};

/* Flags in br_raft_msg.flags. */
#define BR_RAFT_MSG_F_REJECT   0x1u /* response: the request was refused */
#define BR_RAFT_MSG_F_TRANSFER 0x2u /* vote request: leadership transfer, skip leases */

/*
 * A message between two nodes. Field meaning per type:
 *
 *   APPEND       index/log_term = prevLogIndex/prevLogTerm, entries,
 *                commit = leaderCommit
 *   APPEND_RESP  success: index = last index now matching the leader.
 *                reject:  index = the rejected prevLogIndex, reject_hint =
 *                an index at which to probe next, log_term = its term
 *   VOTE,PREVOTE index/log_term = candidate's lastLogIndex/lastLogTerm;
 *                term = the term of the (pre-)election
 *   *_RESP       REJECT flag when not granted
 *   HEARTBEAT    commit = min(follower's match, leaderCommit), ctx = the
 *                newest pending ReadIndex context (0 = none)
 *   HEARTBEAT_RESP ctx echoed
 *   READ_INDEX   ctx = the follower's read request
 *   READ_INDEX_RESP ctx echoed, index = the read point (leadership was
 *                confirmed after the request arrived); REJECT flag (index
 *                UINT64_MAX) when the asker is not in the leader's
 *                configuration
 *   SNAPSHOT     snapshot = metadata of the snapshot to stream
 */
struct br_raft_msg {
    uint32_t type;  /* enum br_raft_msg_type */
    uint32_t flags; /* BR_RAFT_MSG_F_* */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t log_term;
    uint64_t index;
    uint64_t commit;
    uint64_t reject_hint;
    uint64_t ctx;
    size_t n_entries;
    struct br_raft_entry *entries;
    struct br_raft_snapshot_meta snapshot;
};

/* ---------------------------------------------------------------- codec */

/*
 * Wire format of one message, specified in src/raft/codec.c: a 12-byte
 * header (magic "BRRM", version, type, body length), the body, and an
 * XXH3-64 checksum of header and body; little-endian throughout.
 */
#define BR_RAFT_CODEC_VERSION 1

/* Bytes br_raft_encode() needs for m. */
size_t br_raft_encoded_size(const struct br_raft_msg *m);

/*
 * Encodes m into buf (cap bytes). Returns the number of bytes written
 * (> 0), or BR_EINVAL if cap is too small or m is not encodable.
 */
long br_raft_encode(const struct br_raft_msg *m, uint8_t *buf, size_t cap);

/*
 * Decodes one message from buf[0, len). On success fills *m and returns the
 * number of bytes consumed; the entries array and their data are allocated
 * in one malloc'd block owned by the caller, freed by br_raft_msg_free().
 * On error returns BR_EPROTOCOL (not a message of this version / truncated
 * / bad lengths), BR_ECORRUPT (checksum mismatch) or BR_ENOMEM, and *m is
 * left empty (safe to pass to br_raft_msg_free()).
 */
long br_raft_decode(const uint8_t *buf, size_t len, struct br_raft_msg *m);

/* Frees what br_raft_decode() allocated in m and zeroes m. */
void br_raft_msg_free(struct br_raft_msg *m);

/* ---------------------------------------------------------------- storage */

/*
 * The stable part of the log, implemented by the driver.
 *
 * The storage holds a snapshot point (index S, term T) and entries
 * S+1 .. last. first_index() is S+1; term(S) must answer T. The core never
 * asks for an index below S or above last. Entries handed out through
 * entries() stay valid until the storage is next modified (the core copies
 * what it keeps). A callback returns 0 or a negative code; the core treats
 * an error as "not available now" and retries later.
 */
struct br_raft_storage {
    void *ctx;
    /* The hard state and configuration persisted last. */
    int (*initial_state)(void *ctx, struct br_raft_hard_state *hs, struct br_raft_conf_state *conf);
    /* Entries [lo, hi): fills out[0..*n) (room for hi - lo), stopping once
     * their data exceeds max_bytes but always returning at least one. */
    int (*entries)(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                   struct br_raft_entry *out, size_t *n);
    int (*term)(void *ctx, uint64_t index, uint64_t *term);
    int (*first_index)(void *ctx, uint64_t *index);
    int (*last_index)(void *ctx, uint64_t *index);
    /* The newest snapshot's metadata (the one a lagging follower gets). */
    int (*snapshot)(void *ctx, struct br_raft_snapshot_meta *meta);
};

/*
 * br_raft_memstorage: an in-memory br_raft_storage, like etcd's
 * MemoryStorage. The driver fills it from the Ready; the core reads it.
 * It is not thread-safe.
 */
typedef struct br_raft_memstorage br_raft_memstorage;

/* Creates an empty storage (snapshot point 0/0, empty configuration). */
int br_raft_memstorage_new(br_raft_memstorage **out);
void br_raft_memstorage_free(br_raft_memstorage *ms);
/* The br_raft_storage view of ms; valid while ms lives. */
const struct br_raft_storage *br_raft_memstorage_storage(br_raft_memstorage *ms);
/*
 * Bootstraps a new cluster member: the log starts after a snapshot point
 * at index 1, term 1 holding `conf`, and the hard state is {1, 0, 1}.
 * A node that joins later starts empty and receives a snapshot.
 */
int br_raft_memstorage_bootstrap(br_raft_memstorage *ms, const struct br_raft_conf_state *conf);
/* Persists a hard state. */
void br_raft_memstorage_set_hard_state(br_raft_memstorage *ms, const struct br_raft_hard_state *hs);
/* Persists the configuration the node should restart with. */
void br_raft_memstorage_set_conf(br_raft_memstorage *ms, const struct br_raft_conf_state *conf);
/* Appends entries (copied), replacing any existing suffix they overlap.
 * BR_EINVAL if they would leave a gap, BR_ENOMEM; nothing changes then. */
int br_raft_memstorage_append(br_raft_memstorage *ms, const struct br_raft_entry *ents, size_t n);
/* Replaces the whole log by a snapshot point (from a Ready). */
int br_raft_memstorage_apply_snapshot(br_raft_memstorage *ms,
                                      const struct br_raft_snapshot_meta *meta);
/* Records that a snapshot exists at `index` (<= last index) with conf.
 * BR_EINVAL if index is below the current snapshot or past the log. */
int br_raft_memstorage_create_snapshot(br_raft_memstorage *ms, uint64_t index,
                                       const struct br_raft_conf_state *conf);
/* Discards entries up to and including `index` (which must be covered by a
 * snapshot: index <= snapshot index). BR_EINVAL otherwise. */
int br_raft_memstorage_compact(br_raft_memstorage *ms, uint64_t index);
uint64_t br_raft_memstorage_first_index(const br_raft_memstorage *ms);
uint64_t br_raft_memstorage_last_index(const br_raft_memstorage *ms);

/* ---------------------------------------------------------------- config */

enum br_raft_log_level { BR_RAFT_LOG_DEBUG = 0, BR_RAFT_LOG_INFO = 1, BR_RAFT_LOG_WARN = 2 };

struct br_raft_config {
    uint64_t id;             /* this node, nonzero */
    uint32_t election_tick;  /* election timeout is random in [election_tick, 2*election_tick) */
    uint32_t heartbeat_tick; /* leader heartbeat period, < election_tick */
    uint64_t seed;           /* seeds the node's PRNG (election timeouts) */
    uint64_t max_msg_bytes;  /* entry bytes per APPEND (at least one entry); 0 = 1 MiB */
    uint32_t max_inflight;   /* APPENDs in flight per follower in replicate state; 0 = 256 */
    bool pre_vote;           /* run a pre-vote before disrupting a term (thesis §9.6) */
    bool check_quorum;       /* leader steps down without a live majority (thesis §6.2) */
    uint64_t applied;        /* last index the state machine holds on restart (0 = snapshot) */
    const struct br_raft_storage *storage; /* required; must outlive the instance */
    /* Optional log sink; msg is valid during the call only. */
    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;
};

/* ---------------------------------------------------------------- instance */

typedef struct br_raft br_raft;

enum br_raft_role {
    BR_RAFT_FOLLOWER = 0,
    BR_RAFT_PRE_CANDIDATE = 1,
    BR_RAFT_CANDIDATE = 2,
    BR_RAFT_LEADER = 3
};

/*
 * Creates a node from its config and the state in config->storage.
 * BR_EINVAL on a bad config, BR_ENOMEM, or a storage error passed through.
 */
int br_raft_new(const struct br_raft_config *config, br_raft **out);
void br_raft_free(br_raft *r);

/* Starts an election now, as if the election timeout had elapsed (a
 * pre-vote first when configured). Does nothing on a leader or a node that
 * is not a voter. */
void br_raft_campaign(br_raft *r);

/* One unit of logical time. Followers and candidates start an election when
 * their randomized timeout elapses; a leader sends heartbeats. */
void br_raft_tick(br_raft *r);

/*
 * Feeds a message from a peer (the message and its entries are copied as
 * needed; the caller keeps ownership of m). Returns 0, or BR_EPROTOCOL if
 * the message is malformed (unknown type, entries out of order, ...), in
 * which case the state is unchanged.
 */
int br_raft_step(br_raft *r, const struct br_raft_msg *m);

/*
 * Appends a command to the leader's log (data is copied). On success
 * *index (if non-NULL) is the entry's index: the command is applied when an
 * entry with that index and the current term commits. BR_ENOTLEADER on a
 * follower or candidate, or while a leadership transfer is under way; then
 * *leader (if non-NULL) is the known leader (0 if none). Proposals made
 * between two Readys leave in one APPEND per follower.
 */
int br_raft_propose(br_raft *r, const void *data, size_t len, uint64_t *index, uint64_t *leader);

/*
 * Proposes a single-server membership change (thesis §4.1). Only one change
 * may be pending (proposed and not yet applied): BR_EINVAL then, and also
 * when the change is void (adding a voter that is one, removing a
 * non-member, removing the last voter, exceeding BR_RAFT_MAX_MEMBERS).
 * ctx (may be NULL) is copied into the entry after the change. A change takes
 * effect when the entry is applied (br_raft_advance() after it was handed
 * out as committed). BR_ENOTLEADER as for br_raft_propose().
 */
int br_raft_propose_conf_change(br_raft *r, const struct br_raft_conf_change *cc, const void *ctx,
                                size_t ctx_len, uint64_t *index, uint64_t *leader);

/*
 * Requests a linearizable read point (thesis §6.4). ctx identifies the
 * request and must be nonzero and unique among this node's pending ones.
 * Once the leader has committed an entry of its term and a majority has
 * confirmed its leadership by a heartbeat round that started after the
 * request arrived, a br_raft_read_state {ctx, index} appears in a Ready:
 * the read may be served once the state machine has applied `index`.
 * Requests made together share one heartbeat round.
 *
 * A follower (or learner) that knows a leader forwards the request to it
 * (READ_INDEX) and gets the read point back (READ_INDEX_RESP; thesis §6.4:
 * "followers ... issue a request to the leader to learn the current
 * readIndex"); the read state then appears in one of the follower's
 * Readys. A leader refuses a node that is not in its configuration (a
 * removed node that has not applied its removal): the read state comes
 * back with `refused` set. A request is dropped silently when the leader
 * stops leading, the message is lost or the follower's leader changes: the
 * driver times it out. BR_ENOTLEADER (with *leader, 0 if unknown) on a
 * candidate or a node that knows no leader; BR_EINVAL for ctx 0.
 */
int br_raft_read_index(br_raft *r, uint64_t ctx, uint64_t *leader);

/*
 * Starts handing leadership to voter `to` (thesis §3.10): the leader stops
 * taking proposals, brings `to` up to date and tells it to campaign at
 * once. The attempt is abandoned after an election timeout. BR_ENOTLEADER
 * when not leader, BR_EINVAL when `to` is not a voter or is this node.
 */
int br_raft_transfer_leadership(br_raft *r, uint64_t to);

/* The driver finished (ok) or gave up (!ok) streaming a snapshot to `to`. */
void br_raft_report_snapshot(br_raft *r, uint64_t to, bool ok);

/* The driver could not deliver to `to`: stop pipelining, probe again. */
void br_raft_report_unreachable(br_raft *r, uint64_t to);

/* ---------------------------------------------------------------- Ready */

/* A linearizable read point: serve the read for ctx once applied >= index.
 * refused: the leader answered that this node is not a member of its
 * configuration (index is 0): serve nothing, fail the read. */
struct br_raft_read_state {
    uint64_t ctx;
    uint64_t index;
    bool refused;
};

/*
 * Everything the driver must do, in the order listed at the top of this
 * file. All pointers are owned by the core and valid until the matching
 * br_raft_advance() or br_raft_free().
 */
struct br_raft_ready {
    bool has_hard_state;                   /* persist hard_state */
    struct br_raft_hard_state hard_state;  /* term, vote, commit */
    bool has_snapshot;                     /* install snapshot before anything else */
    struct br_raft_snapshot_meta snapshot; /* the leader's metadata; content from the driver */
    const struct br_raft_entry *entries;   /* append; may replace a suffix of the stored log */
    size_t n_entries;
    const struct br_raft_msg *msgs; /* send */
    size_t n_msgs;
    const struct br_raft_entry *committed; /* apply in order */
    size_t n_committed;
    const struct br_raft_read_state *reads;
    size_t n_reads;
    bool must_sync; /* entries or term/vote changed: fsync before sending */
};

/* True if br_raft_ready() would return anything. */
bool br_raft_has_ready(br_raft *r);

/*
 * Fills *rd with the pending work. Calling it again before advance returns
 * the same work. BR_ENOMEM (nothing is lost; retry later) or a storage
 * error while reading committed entries.
 */
int br_raft_ready(br_raft *r, struct br_raft_ready *rd);

/*
 * Tells the core the driver has done everything in the last Ready: entries
 * and hard state persisted, snapshot installed, messages handed to the
 * transport, committed entries applied. Frees the Ready's memory.
 */
void br_raft_advance(br_raft *r);

/* ---------------------------------------------------------------- queries */

struct br_raft_status {
    uint64_t id;
    int role; /* enum br_raft_role */
    uint64_t term;
    uint64_t vote;
    uint64_t leader; /* 0 if unknown */
    uint64_t commit;
    uint64_t applied;
    uint64_t last_index;
    uint64_t lead_transferee; /* 0 unless a transfer is under way */
};

void br_raft_get_status(const br_raft *r, struct br_raft_status *st);

/* The configuration as of the applied index (what a snapshot taken at
 * applied must record). */
void br_raft_get_conf(const br_raft *r, struct br_raft_conf_state *conf);

/* Leader only: what it knows of a member's log. BR_ENOTLEADER / BR_EINVAL. */
int br_raft_get_progress(const br_raft *r, uint64_t id, uint64_t *match, uint64_t *next);

/* Name of a role / message type, for logs. */
const char *br_raft_role_name(int role);
const char *br_raft_msg_type_name(uint32_t type);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_RAFT_H */
