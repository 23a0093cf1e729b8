/*
 * raft.c - the node's state, role changes, message dispatch, and the
 * Ready/advance handshake with the driver.
 *
 * From Figure 3.1, rules for all servers: "If RPC request or response
 * contains term T > currentTerm: set currentTerm = T, convert to follower."
 * br_raft_step() applies that rule (with the pre-vote and check-quorum
 * exceptions noted there) before handing a message to the role's handler.
 */
#include "raft_int.h"

#include "bitraft/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- arena */

#define RF_ARENA_CHUNK (64 * 1024)

struct rf_arena_chunk {
    struct rf_arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *rf_arena_alloc(struct rf_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct rf_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > RF_ARENA_CHUNK ? n : RF_ARENA_CHUNK;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

/* Keeps one chunk of the standard size for reuse, frees the rest. */
void rf_arena_reset(struct rf_arena *a) {
    struct rf_arena_chunk *keep = NULL, *c = a->head;
    while (c) {
        struct rf_arena_chunk *next = c->next;
        if (!keep && c->cap == RF_ARENA_CHUNK) {
            keep = c;
            keep->used = 0;
            keep->next = NULL;
        } else {
            free(c);
        }
        c = next;
    }
    a->head = keep;
}

void rf_arena_free(struct rf_arena *a) {
    struct rf_arena_chunk *c = a->head;
    while (c) {
        struct rf_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* ---------------------------------------------------------------- helpers */

void rf_logf(const br_raft *r, int level, const char *fmt, ...) {
    if (!r->log_fn)
        return;
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "raft %llu t%llu %s: ", (unsigned long long)r->id,
                     (unsigned long long)r->term, br_raft_role_name(r->role));
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(buf))
        vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    r->log_fn(r->log_ctx, level, buf);
}

const char *br_raft_role_name(int role) {
    switch (role) {
    case BR_RAFT_FOLLOWER:
        return "follower";
    case BR_RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case BR_RAFT_CANDIDATE:
        return "candidate";
    case BR_RAFT_LEADER:
        return "leader";
    default:
        return "?";
    }
}

const char *br_raft_msg_type_name(uint32_t type) {
    static const char *const names[] = {
        "?",           "APPEND",       "APPEND_RESP",    "VOTE",           "VOTE_RESP",
        "PREVOTE",     "PREVOTE_RESP", "HEARTBEAT",      "HEARTBEAT_RESP", "SNAPSHOT",
        "TIMEOUT_NOW", "READ_INDEX",   "READ_INDEX_RESP"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

/* splitmix64: the node's only source of randomness, seeded by the config. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/*
 * From §5.2: "Raft uses randomized election timeouts to ensure that split
 * votes are rare ... election timeouts are chosen randomly from a fixed
 * interval." Here: [election_tick, 2 * election_tick).
 */
void rf_reset_randomized_timeout(br_raft *r) {
    r->randomized_timeout = r->election_tick + (uint32_t)(rng_next(&r->rng) % r->election_tick);
}

int rf_pr_slot(const br_raft *r, uint64_t id) {
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return (int)i;
    return -1;
}

struct rf_progress *rf_pr(br_raft *r, uint64_t id) {
    int s = rf_pr_slot(r, id);
    return s < 0 ? NULL : &r->prs[s];
}

uint32_t rf_n_voters(const br_raft *r) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        n += !r->prs[i].learner;
    return n;
}

uint32_t rf_quorum(const br_raft *r) {
    return rf_n_voters(r) / 2 + 1;
}

struct br_raft_msg *rf_send(br_raft *r, uint32_t type, uint64_t to) {
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs ? r->cap_msgs * 2 : 16;
        struct br_raft_msg *m = realloc(r->msgs, cap * sizeof(*m));
        if (!m) {
            rf_logf(r, BR_RAFT_LOG_WARN, "out of memory queueing a message");
            return NULL;
        }
        r->msgs = m;
        r->cap_msgs = cap;
    }
    struct br_raft_msg *m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

/* The last index this node's disk is known to hold: entries handed to the
 * driver and advanced, not those still in memory. */
static uint64_t persisted_last(const br_raft *r) {
    if (r->log.has_snap)
        return 0;
    if (r->log.n > 0)
        return r->log.offset - 1;
    return rf_log_last_index(&r->log);
}

/* ---------------------------------------------------------------- roles */

static void reset(br_raft *r, uint64_t term) {
    if (term != r->term) {
        r->term = term;
        r->vote = BR_RAFT_NONE;
    }
    r->lead = BR_RAFT_NONE;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    rf_reset_randomized_timeout(r);
    r->lead_transferee = BR_RAFT_NONE;
    r->bcast_pending = false;
    r->pending_conf = 0;
    r->timeout_now_ticks = 0;
    uint64_t last = rf_log_last_index(&r->log);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        rf_pr_reset(&r->prs[i], last + 1, r->max_inflight);
        if (r->prs[i].id == r->id)
            r->prs[i].match = persisted_last(r);
    }
    rf_read_reset(r);
}

void rf_become_follower(br_raft *r, uint64_t term, uint64_t lead) {
    reset(r, term);
    r->role = BR_RAFT_FOLLOWER;
    r->lead = lead;
}

/* From Figure 3.1, rules for candidates: "On conversion to candidate, start
 * election: increment currentTerm, vote for self, reset election timer,
 * send RequestVote RPCs to all other servers." */
void rf_become_candidate(br_raft *r) {
    reset(r, r->term + 1);
    r->vote = r->id;
    r->role = BR_RAFT_CANDIDATE;
}

/* Thesis §9.6: a pre-candidate asks whether it could win before it
 * increments its term, so a partitioned server cannot disrupt the cluster
 * when it rejoins. The term and vote stay as they are. */
void rf_become_pre_candidate(br_raft *r) {
    r->role = BR_RAFT_PRE_CANDIDATE;
    r->lead = BR_RAFT_NONE;
    for (uint32_t i = 0; i < r->n_prs; i++)
        r->prs[i].vote = 0;
}

/*
 * A new leader appends an empty entry of its term: §8 "a leader must have
 * the latest information on which entries are committed ... Raft handles
 * this by having each leader commit a blank no-op entry into the log at the
 * start of its term." It also refuses membership changes until that entry
 * is applied (pending_conf), which closes the single-server change bug of
 * thesis §4.1 described in Ongaro's 2015 raft-dev post.
 */
void rf_become_leader(br_raft *r) {
    reset(r, r->term);
    r->role = BR_RAFT_LEADER;
    r->lead = r->id;
    struct rf_progress *self = rf_pr(r, r->id);
    if (self) {
        uint64_t m = self->match;
        rf_pr_become_replicate(self);
        self->match = m;
        self->recent_active = true;
    }
    uint64_t idx = 0;
    if (rf_append_entry(r, BR_RAFT_ENTRY_NORMAL, NULL, 0, NULL, 0, &idx) < 0) {
        rf_logf(r, BR_RAFT_LOG_WARN, "out of memory appending the no-op; stepping down");
        rf_become_follower(r, r->term, BR_RAFT_NONE);
        return;
    }
    r->pending_conf = idx;
    r->removed_hold = false;
    rf_logf(r, BR_RAFT_LOG_INFO, "became leader at index %llu", (unsigned long long)idx);
    rf_bcast_append(r);
    if (!r->self_voter)
        rf_handoff(r);
}

/* ---------------------------------------------------------------- new/free */

int br_raft_new(const struct br_raft_config *c, br_raft **out) {
    *out = NULL;
    if (!c || c->id == 0 || !c->storage || c->election_tick < 2 || c->heartbeat_tick == 0 ||
        c->heartbeat_tick >= c->election_tick)
        return BR_EINVAL;
    const struct br_raft_storage *st = c->storage;
    if (!st->initial_state || !st->entries || !st->term || !st->first_index || !st->last_index ||
        !st->snapshot)
        return BR_EINVAL;
    br_raft *r = calloc(1, sizeof(*r));
    if (!r)
        return BR_ENOMEM;
    r->id = c->id;
    r->election_tick = c->election_tick;
    r->heartbeat_tick = c->heartbeat_tick;
    r->rng = c->seed ^ (c->id * 0x2545f4914f6cdd1dULL);
    r->pre_vote = c->pre_vote;
    r->check_quorum = c->check_quorum;
    r->max_msg_bytes = c->max_msg_bytes ? c->max_msg_bytes : (1u << 20);
    r->max_inflight = c->max_inflight ? c->max_inflight : 256;
    r->log_fn = c->log_fn;
    r->log_ctx = c->log_ctx;

    struct br_raft_hard_state hs;
    struct br_raft_conf_state conf;
    memset(&hs, 0, sizeof(hs));
    memset(&conf, 0, sizeof(conf));
    int rc = st->initial_state(st->ctx, &hs, &conf);
    if (rc < 0)
        goto fail;
    rc = rf_log_init(&r->log, st);
    if (rc < 0)
        goto fail;
    uint64_t last = rf_log_last_index(&r->log);
    if (hs.commit > last) {
        rc = BR_ECORRUPT;
        goto fail;
    }
    rc = rf_conf_load(r, &conf);
    if (rc < 0)
        goto fail;
    if (hs.commit > r->log.committed)
        r->log.committed = hs.commit;
    if (c->applied > r->log.applied) {
        if (c->applied > r->log.committed) {
            rc = BR_EINVAL;
            goto fail;
        }
        r->log.applied = c->applied;
    }
    r->term = hs.term;
    r->prev_hs = hs;
    rf_become_follower(r, hs.term, BR_RAFT_NONE);
    r->vote = hs.vote;
    rf_logf(r, BR_RAFT_LOG_INFO, "started: last %llu commit %llu applied %llu",
            (unsigned long long)last, (unsigned long long)r->log.committed,
            (unsigned long long)r->log.applied);
    *out = r;
    return 0;
fail:
    br_raft_free(r);
    return rc;
}

void br_raft_free(br_raft *r) {
    if (!r)
        return;
    rf_log_free(&r->log);
    for (uint32_t i = 0; i < BR_RAFT_MAX_MEMBERS; i++)
        rf_inflights_free(&r->prs[i].inf);
    rf_read_free(r);
    rf_arena_free(&r->arena);
    free(r->msgs);
    free(r->rstates);
    free(r);
}

/* ---------------------------------------------------------------- inputs */

void br_raft_campaign(br_raft *r) {
    rf_hup(r, false);
}

void br_raft_tick(br_raft *r) {
    if (r->role == BR_RAFT_LEADER)
        rf_tick_heartbeat(r);
    else
        rf_tick_election(r);
}

/* Rejects messages whose fields cannot come from a correct peer. */
static int validate(const br_raft *r, const struct br_raft_msg *m) {
    if (m->type < BR_RAFT_MSG_APPEND || m->type > BR_RAFT_MSG_READ_INDEX_RESP)
        return BR_EPROTOCOL;
    if (m->from == BR_RAFT_NONE || m->from == r->id || m->to != r->id)
        return BR_EPROTOCOL;
    if (m->n_entries > 0) {
        if (m->type != BR_RAFT_MSG_APPEND || !m->entries || m->index >= UINT64_MAX - m->n_entries)
            return BR_EPROTOCOL;
        uint64_t prev_t = m->log_term;
        for (size_t i = 0; i < m->n_entries; i++) {
            const struct br_raft_entry *e = &m->entries[i];
            if (e->index != m->index + 1 + i || e->term < prev_t || e->term > m->term ||
                e->type > BR_RAFT_ENTRY_CONF_CHANGE || (e->len > 0 && !e->data))
                return BR_EPROTOCOL;
            prev_t = e->term;
        }
    }
    if (m->type == BR_RAFT_MSG_SNAPSHOT) {
        const struct br_raft_conf_state *c = &m->snapshot.conf;
        if (c->n_voters > BR_RAFT_MAX_MEMBERS || c->n_learners > BR_RAFT_MAX_MEMBERS ||
            c->n_voters + c->n_learners > BR_RAFT_MAX_MEMBERS || m->snapshot.index == 0 ||
            m->snapshot.term > m->term)
            return BR_EPROTOCOL;
    }
    return 0;
}

static void step_leader(br_raft *r, const struct br_raft_msg *m) {
    switch (m->type) {
    case BR_RAFT_MSG_APPEND_RESP:
        rf_handle_append_resp(r, m);
        break;
    case BR_RAFT_MSG_HEARTBEAT_RESP:
        rf_handle_heartbeat_resp(r, m);
        break;
    case BR_RAFT_MSG_READ_INDEX:
        rf_read_forwarded(r, m);
        break;
    default:
        break; /* stale votes, our own kinds of messages from an old term */
    }
}

static void step_candidate(br_raft *r, const struct br_raft_msg *m) {
    switch (m->type) {
    case BR_RAFT_MSG_APPEND:
        rf_become_follower(r, m->term, m->from);
        rf_handle_append(r, m);
        break;
    case BR_RAFT_MSG_HEARTBEAT:
        rf_become_follower(r, m->term, m->from);
        rf_handle_heartbeat(r, m);
        break;
    case BR_RAFT_MSG_SNAPSHOT:
        rf_become_follower(r, m->term, m->from);
        rf_handle_snapshot(r, m);
        break;
    case BR_RAFT_MSG_VOTE_RESP:
    case BR_RAFT_MSG_PREVOTE_RESP:
        rf_step_vote_resp(r, m);
        break;
    default:
        break;
    }
}

static void step_follower(br_raft *r, const struct br_raft_msg *m) {
    switch (m->type) {
    case BR_RAFT_MSG_APPEND:
        r->election_elapsed = 0;
        r->lead = m->from;
        r->removed_hold = false;
        rf_handle_append(r, m);
        break;
    case BR_RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->lead = m->from;
        r->removed_hold = false;
        rf_handle_heartbeat(r, m);
        break;
    case BR_RAFT_MSG_SNAPSHOT:
        r->election_elapsed = 0;
        r->lead = m->from;
        rf_handle_snapshot(r, m);
        break;
    case BR_RAFT_MSG_TIMEOUT_NOW:
        /* Thesis §3.10: the target of a transfer starts an election at
         * once, even though it hears from a leader. */
        rf_logf(r, BR_RAFT_LOG_INFO, "TIMEOUT_NOW from %llu", (unsigned long long)m->from);
        if (rf_conf_pending_unapplied(r)) {
            /* Typically the leader removed itself and told us at once; we
             * learn of the commit with this very message. Campaigning on
             * the old configuration is not allowed, so wait for the
             * apply instead of letting the transfer time out. */
            rf_logf(r, BR_RAFT_LOG_INFO, "campaigning once the configuration change is applied");
            r->timeout_now_ticks = r->election_tick;
        } else {
            rf_hup(r, true);
        }
        break;
    case BR_RAFT_MSG_READ_INDEX_RESP:
        rf_read_answer(r, m);
        break;
    default:
        break;
    }
}

int br_raft_step(br_raft *r, const struct br_raft_msg *m) {
    int rc = validate(r, m);
    if (rc < 0)
        return rc;
    bool is_vote = m->type == BR_RAFT_MSG_VOTE || m->type == BR_RAFT_MSG_PREVOTE;
    if (m->term > r->term) {
        if (is_vote) {
            /*
             * Thesis §4.2.3 / §9.6: a server that heard from a current
             * leader within the minimum election timeout does not grant a
             * vote or update its term, so a removed or partitioned server
             * cannot depose a live leader. A transfer overrides this.
             */
            bool force = (m->flags & BR_RAFT_MSG_F_TRANSFER) != 0;
            bool in_lease = r->check_quorum && r->lead != BR_RAFT_NONE &&
                            r->election_elapsed < r->election_tick;
            if (!force && in_lease)
                return 0;
        }
        if (m->type == BR_RAFT_MSG_PREVOTE) {
            /* Never change the term on a pre-vote request. */
        } else if (m->type == BR_RAFT_MSG_PREVOTE_RESP && !(m->flags & BR_RAFT_MSG_F_REJECT)) {
            /* A granted pre-vote carries the future term; counted below. */
        } else {
            bool from_leader = m->type == BR_RAFT_MSG_APPEND || m->type == BR_RAFT_MSG_HEARTBEAT ||
                               m->type == BR_RAFT_MSG_SNAPSHOT;
            uint32_t elapsed = r->election_elapsed;
            rf_become_follower(r, m->term, from_leader ? m->from : BR_RAFT_NONE);
            /*
             * Figure 3.1 resets the election timer only on hearing from the
             * current leader or granting a vote. A vote request we may
             * refuse must not reset it, or a candidate with a stale log
             * that keeps timing out first could hold off forever the one
             * whose log can win (etcd-io/raft resets it here).
             */
            if (m->type == BR_RAFT_MSG_VOTE)
                r->election_elapsed = elapsed;
        }
    } else if (m->term < r->term) {
        if ((r->check_quorum || r->pre_vote) &&
            (m->type == BR_RAFT_MSG_APPEND || m->type == BR_RAFT_MSG_HEARTBEAT)) {
            /*
             * A leader from an old term (for instance one that was cut off
             * and whose followers moved on under pre-vote or check-quorum
             * leases) would never learn of the new term otherwise: answer
             * so it steps down.
             */
            rf_send(r, BR_RAFT_MSG_APPEND_RESP, m->from);
        } else if (m->type == BR_RAFT_MSG_PREVOTE) {
            struct br_raft_msg *o = rf_send(r, BR_RAFT_MSG_PREVOTE_RESP, m->from);
            if (o)
                o->flags |= BR_RAFT_MSG_F_REJECT;
        }
        return 0;
    }

    if (is_vote)
        return rf_step_vote_request(r, m);
    switch (r->role) {
    case BR_RAFT_LEADER:
        step_leader(r, m);
        break;
    case BR_RAFT_CANDIDATE:
    case BR_RAFT_PRE_CANDIDATE:
        step_candidate(r, m);
        break;
    default:
        step_follower(r, m);
        break;
    }
    return 0;
}

static int not_leader(const br_raft *r, uint64_t *leader) {
    if (leader)
        *leader = r->lead_transferee ? BR_RAFT_NONE : r->lead;
    return BR_ENOTLEADER;
}

int br_raft_propose(br_raft *r, const void *data, size_t len, uint64_t *index, uint64_t *leader) {
    if (r->role != BR_RAFT_LEADER || r->lead_transferee != BR_RAFT_NONE)
        return not_leader(r, leader);
    if (len > UINT32_MAX || (len > 0 && !data))
        return BR_EINVAL;
    int rc = rf_append_entry(r, BR_RAFT_ENTRY_NORMAL, data, len, NULL, 0, index);
    if (rc < 0)
        return rc;
    if (leader)
        *leader = r->id;
    return 0;
}

void br_raft_report_snapshot(br_raft *r, uint64_t to, bool ok) {
    struct rf_progress *p = rf_pr(r, to);
    if (r->role != BR_RAFT_LEADER || !p || p->state != RF_PR_SNAPSHOT)
        return;
    /* On failure, forget the snapshot so the next probe asks for one anew. */
    if (!ok)
        p->pending_snapshot = 0;
    rf_pr_become_probe(p);
    /* Wait for a heartbeat answer before probing, as etcd does. */
    p->probe_sent = true;
}

void br_raft_report_unreachable(br_raft *r, uint64_t to) {
    struct rf_progress *p = rf_pr(r, to);
    if (r->role != BR_RAFT_LEADER || !p)
        return;
    if (p->state == RF_PR_REPLICATE)
        rf_pr_become_probe(p);
}

/* ---------------------------------------------------------------- Ready */

static void flush(br_raft *r) {
    if (r->bcast_pending && r->role == BR_RAFT_LEADER)
        rf_bcast_append(r);
    r->bcast_pending = false;
}

static uint64_t committed_hi(const br_raft *r) {
    uint64_t last = rf_log_last_index(&r->log);
    return r->log.committed < last ? r->log.committed : last;
}

static void hard_state(const br_raft *r, struct br_raft_hard_state *hs) {
    hs->term = r->term;
    hs->vote = r->vote;
    hs->commit = r->log.committed;
}

bool br_raft_has_ready(br_raft *r) {
    flush(r);
    struct br_raft_hard_state hs;
    hard_state(r, &hs);
    return memcmp(&hs, &r->prev_hs, sizeof(hs)) != 0 || r->log.n > 0 || r->log.has_snap ||
           r->n_msgs > 0 || r->n_rstates > 0 || committed_hi(r) > r->log.applied;
}

int br_raft_ready(br_raft *r, struct br_raft_ready *rd) {
    flush(r);
    memset(rd, 0, sizeof(*rd));
    hard_state(r, &rd->hard_state);
    rd->has_hard_state = memcmp(&rd->hard_state, &r->prev_hs, sizeof(rd->hard_state)) != 0;
    rd->has_snapshot = r->log.has_snap;
    if (rd->has_snapshot)
        rd->snapshot = r->log.snap;
    rd->entries = r->log.u;
    rd->n_entries = r->log.n;
    rd->msgs = r->msgs;
    rd->n_msgs = r->n_msgs;
    rd->reads = r->rstates;
    rd->n_reads = r->n_rstates;
    rd->must_sync = rd->n_entries > 0 || rd->hard_state.term != r->prev_hs.term ||
                    rd->hard_state.vote != r->prev_hs.vote;
    if (!r->ready_taken) {
        r->committed = NULL;
        r->n_committed = 0;
        uint64_t hi = committed_hi(r);
        if (hi > r->log.applied) {
            int rc = rf_log_slice(&r->log, &r->arena, r->log.applied + 1, hi + 1, UINT64_MAX,
                                  &r->committed, &r->n_committed);
            if (rc < 0)
                return rc;
            if (rc > 0)
                return BR_ECORRUPT; /* committed entries below the log's start */
        }
    }
    rd->committed = r->committed;
    rd->n_committed = r->n_committed;
    r->ready_taken = true;
    return 0;
}

void br_raft_advance(br_raft *r) {
    if (!r->ready_taken)
        return;
    r->ready_taken = false;
    hard_state(r, &r->prev_hs);

    /* Conf changes take effect once applied; note them before the arena
     * holding the entries is reset. */
    struct br_raft_entry *ccs = NULL;
    size_t n_cc = 0;
    for (size_t i = 0; i < r->n_committed; i++)
        if (r->committed[i].type == BR_RAFT_ENTRY_CONF_CHANGE)
            n_cc++;
    if (n_cc > 0) {
        ccs = malloc(n_cc * sizeof(*ccs) + n_cc * 12);
        uint8_t *buf = (uint8_t *)(ccs + n_cc);
        size_t k = 0;
        for (size_t i = 0; ccs && i < r->n_committed; i++) {
            const struct br_raft_entry *e = &r->committed[i];
            if (e->type != BR_RAFT_ENTRY_CONF_CHANGE)
                continue;
            ccs[k] = *e;
            ccs[k].len = e->len < 12 ? e->len : 12;
            ccs[k].data = buf + 12 * k;
            if (ccs[k].len)
                memcpy(ccs[k].data, e->data, ccs[k].len);
            k++;
        }
    }
    if (r->n_committed > 0)
        r->log.applied = r->committed[r->n_committed - 1].index;
    r->committed = NULL;
    r->n_committed = 0;

    bool had_unstable = r->log.n > 0 || r->log.has_snap;
    rf_log_stable_all(&r->log);
    r->n_msgs = 0;
    r->n_rstates = 0;
    rf_arena_reset(&r->arena);

    if (ccs) {
        for (size_t i = 0; i < n_cc; i++)
            rf_conf_apply_entry(r, &ccs[i]);
        free(ccs);
    } else if (n_cc > 0) {
        rf_logf(r, BR_RAFT_LOG_WARN, "out of memory applying a configuration change");
    }
    if (had_unstable)
        rf_self_persisted(r);
    if (r->timeout_now_ticks > 0 && r->role == BR_RAFT_FOLLOWER && !rf_conf_pending_unapplied(r)) {
        r->timeout_now_ticks = 0;
        rf_hup(r, true);
    }
}

/* ---------------------------------------------------------------- queries */

void br_raft_get_status(const br_raft *r, struct br_raft_status *st) {
    st->id = r->id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->lead;
    st->commit = r->log.committed;
    st->applied = r->log.applied;
    st->last_index = rf_log_last_index(&r->log);
    st->lead_transferee = r->lead_transferee;
}

void br_raft_get_conf(const br_raft *r, struct br_raft_conf_state *conf) {
    rf_conf_to_state(r, conf);
}

int br_raft_get_progress(const br_raft *r, uint64_t id, uint64_t *match, uint64_t *next) {
    if (r->role != BR_RAFT_LEADER)
        return BR_ENOTLEADER;
    int s = rf_pr_slot(r, id);
    if (s < 0)
        return BR_EINVAL;
    if (match)
        *match = r->prs[s].match;
    if (next)
        *next = r->prs[s].next;
    return 0;
}
