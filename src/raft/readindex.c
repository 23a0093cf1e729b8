/*
 * readindex.c - linearizable reads without writing to the log (thesis
 * §6.4).
 *
 * From §6.4: "1. If the leader has not yet marked an entry from its
 * current term committed, it waits until it has done so. 2. The leader
 * saves its current commit index in a local variable readIndex. 3. The
 * leader needs to make sure it hasn't been superseded by a newer leader of
 * which it is unaware. It issues a new round of heartbeats and waits for
 * their acknowledgments from a majority of the cluster. 4. The leader
 * waits for its state machine to advance at least as far as the readIndex
 * (the driver does this step with the returned read state)."
 *
 * Requests queue in arrival order. Each gets a round id when its
 * heartbeat round starts (increasing, never reused by this node, so a late
 * acknowledgement of an old round cannot confirm a newer request); a round
 * carries the newest request's id, and a majority acknowledging it confirms
 * that request and every earlier one (their read indexes are no larger, and
 * leadership was confirmed after they arrived), so concurrent reads share
 * one round.
 *
 * Followers forward their requests (READ_INDEX, with their own ctx); the
 * leader queues them like its own and answers READ_INDEX_RESP with the
 * read index instead of emitting a read state; the follower emits it.
 */
#include "raft_int.h"

#include "bitraft/error.h"

#include <stdlib.h>

void rf_read_free(br_raft *r) {
    free(r->reads);
    r->reads = NULL;
    r->n_reads = r->cap_reads = 0;
}

void rf_read_reset(br_raft *r) {
    r->n_reads = 0;
}

uint64_t rf_read_last_ctx(const br_raft *r) {
    for (size_t i = r->n_reads; i > 0; i--)
        if (r->reads[i - 1].sent)
            return r->reads[i - 1].round;
    return 0;
}

static int emit(br_raft *r, uint64_t ctx, uint64_t index, bool refused) {
    if (r->n_rstates == r->cap_rstates) {
        size_t cap = r->cap_rstates ? r->cap_rstates * 2 : 16;
        struct br_raft_read_state *s = realloc(r->rstates, cap * sizeof(*s));
        if (!s)
            return BR_ENOMEM;
        r->rstates = s;
        r->cap_rstates = cap;
    }
    r->rstates[r->n_rstates++] =
        (struct br_raft_read_state){.ctx = ctx, .index = index, .refused = refused};
    return 0;
}

static uint32_t self_bit(const br_raft *r) {
    int s = rf_pr_slot(r, r->id);
    return s < 0 ? 0 : 1u << s;
}

static bool acked_by_quorum(const br_raft *r, uint32_t acks) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (!r->prs[i].learner && (acks & (1u << i)))
            n++;
    return n >= rf_quorum(r);
}

/* Releases requests [0, k]: read states for our own, answers for the
 * forwarded ones. */
static void release_through(br_raft *r, size_t k) {
    for (size_t i = 0; i <= k; i++) {
        const struct rf_read_req *q = &r->reads[i];
        if (q->from) {
            struct br_raft_msg *m = rf_send(r, BR_RAFT_MSG_READ_INDEX_RESP, q->from);
            if (m) {
                m->ctx = q->ctx;
                m->index = q->index;
            }
        } else if (emit(r, q->ctx, q->index, false) < 0) {
            rf_logf(r, BR_RAFT_LOG_WARN, "out of memory releasing a read");
        }
    }
    size_t rest = r->n_reads - (k + 1);
    for (size_t i = 0; i < rest; i++)
        r->reads[i] = r->reads[k + 1 + i];
    r->n_reads = rest;
}

/* Starts a heartbeat round for requests not yet covered by one. */
static void start_round(br_raft *r) {
    bool any = false;
    for (size_t i = 0; i < r->n_reads; i++) {
        if (!r->reads[i].sent) {
            r->reads[i].sent = true;
            r->reads[i].round = ++r->read_rounds;
            r->reads[i].index = r->log.committed;
            r->reads[i].acks = self_bit(r);
            any = true;
        }
    }
    if (!any)
        return;
    if (acked_by_quorum(r, self_bit(r))) {
        release_through(r, r->n_reads - 1); /* a single voter needs no round */
        return;
    }
    rf_bcast_heartbeat(r, r->reads[r->n_reads - 1].round);
}

static bool committed_in_term(const br_raft *r) {
    return rf_log_term_or0(&r->log, r->log.committed) == r->term;
}

/* Queues a request (ours: from 0) and starts a round when it may. */
static int enqueue(br_raft *r, uint64_t ctx, uint64_t from) {
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads ? r->cap_reads * 2 : 16;
        struct rf_read_req *q = realloc(r->reads, cap * sizeof(*q));
        if (!q)
            return BR_ENOMEM;
        r->reads = q;
        r->cap_reads = cap;
    }
    r->reads[r->n_reads++] = (struct rf_read_req){.ctx = ctx, .from = from};
    if (committed_in_term(r))
        start_round(r);
    return 0;
}

int br_raft_read_index(br_raft *r, uint64_t ctx, uint64_t *leader) {
    if (ctx == 0)
        return BR_EINVAL;
    if (leader)
        *leader = r->role == BR_RAFT_LEADER ? r->id : r->lead;
    if (r->role == BR_RAFT_FOLLOWER && r->lead != BR_RAFT_NONE) {
        struct br_raft_msg *m = rf_send(r, BR_RAFT_MSG_READ_INDEX, r->lead);
        if (!m)
            return BR_ENOMEM;
        m->ctx = ctx;
        return 0;
    }
    if (r->role != BR_RAFT_LEADER)
        return BR_ENOTLEADER;
    return enqueue(r, ctx, 0);
}

void rf_read_forwarded(br_raft *r, const struct br_raft_msg *m) {
    if (m->ctx == 0)
        return;
    if (rf_pr_slot(r, m->from) < 0) {
        /* not a member (removed, and it has not applied that yet): refuse
         * rather than leave it waiting for its timeout */
        struct br_raft_msg *a = rf_send(r, BR_RAFT_MSG_READ_INDEX_RESP, m->from);
        if (a) {
            a->ctx = m->ctx;
            a->flags |= BR_RAFT_MSG_F_REJECT;
            /* a node that predates the flag reads this as a read point it
             * never reaches (it times out, as before), never as index 0 */
            a->index = UINT64_MAX;
        }
        return;
    }
    if (enqueue(r, m->ctx, m->from) < 0)
        rf_logf(r, BR_RAFT_LOG_WARN, "out of memory queueing a read from %llu",
                (unsigned long long)m->from);
}

void rf_read_answer(br_raft *r, const struct br_raft_msg *m) {
    if (m->from != r->lead || m->ctx == 0)
        return;
    bool refused = (m->flags & BR_RAFT_MSG_F_REJECT) != 0;
    if (emit(r, m->ctx, refused ? 0 : m->index, refused) < 0)
        rf_logf(r, BR_RAFT_LOG_WARN, "out of memory releasing a read");
}

void rf_read_on_commit(br_raft *r) {
    if (r->role == BR_RAFT_LEADER && r->n_reads > 0 && committed_in_term(r))
        start_round(r);
}

void rf_read_on_heartbeat_resp(br_raft *r, int slot, uint64_t ctx) {
    for (size_t i = 0; i < r->n_reads; i++) {
        struct rf_read_req *q = &r->reads[i];
        if (!q->sent || q->round != ctx)
            continue;
        q->acks |= 1u << slot;
        if (acked_by_quorum(r, q->acks))
            release_through(r, i);
        return;
    }
}

/* Membership changed: slots moved, so pending rounds start over. */
void rf_read_conf_changed(br_raft *r) {
    for (size_t i = 0; i < r->n_reads; i++)
        r->reads[i].sent = false;
    if (r->role == BR_RAFT_LEADER && committed_in_term(r))
        start_round(r);
}
