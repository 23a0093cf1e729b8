/*
 * election.c - leader election (§5.2), pre-vote (thesis §9.6), election
 * timers and leadership transfer (thesis §3.10).
 */
#include "raft_int.h"

#include "bitraft/error.h"

/* Is any committed but unapplied entry a configuration change? A node must
 * not campaign on a configuration it has not yet applied. */
bool rf_conf_pending_unapplied(const br_raft *r) {
    uint64_t hi = r->log.committed;
    uint64_t last = rf_log_last_index(&r->log);
    if (hi > last)
        hi = last;
    if (hi <= r->log.applied)
        return false;
    /* Look at unstable entries directly; ask storage for the rest. */
    for (uint64_t i = r->log.applied + 1; i <= hi; i++) {
        if (r->log.n > 0 && i >= r->log.offset) {
            if (r->log.u[i - r->log.offset].type == BR_RAFT_ENTRY_CONF_CHANGE)
                return true;
            continue;
        }
        struct br_raft_entry e;
        size_t n = 0;
        if (r->log.has_snap || r->log.st->entries(r->log.st->ctx, i, i + 1, 0, &e, &n) < 0 ||
            n != 1)
            return true; /* unknown: be conservative */
        if (e.type == BR_RAFT_ENTRY_CONF_CHANGE)
            return true;
    }
    return false;
}

/* Counts votes among voters; returns 1 won, -1 lost, 0 undecided. */
static int tally(const br_raft *r) {
    uint32_t granted = 0, refused = 0, n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].learner)
            continue;
        n++;
        if (r->prs[i].vote > 0)
            granted++;
        else if (r->prs[i].vote < 0)
            refused++;
    }
    uint32_t q = n / 2 + 1;
    if (granted >= q)
        return 1;
    if (refused > n - q)
        return -1;
    return 0;
}

static void campaign(br_raft *r, bool pre, bool transfer) {
    uint64_t vote_term;
    uint32_t type;
    if (pre) {
        rf_become_pre_candidate(r);
        vote_term = r->term + 1;
        type = BR_RAFT_MSG_PREVOTE;
    } else {
        rf_become_candidate(r);
        vote_term = r->term;
        type = BR_RAFT_MSG_VOTE;
    }
    struct rf_progress *self = rf_pr(r, r->id);
    if (self)
        self->vote = 1;
    if (tally(r) > 0) {
        /* A single-voter cluster wins at once. */
        if (pre)
            campaign(r, false, transfer);
        else
            rf_become_leader(r);
        return;
    }
    uint64_t last = rf_log_last_index(&r->log);
    uint64_t last_term = rf_log_last_term(&r->log);
    rf_logf(r, BR_RAFT_LOG_INFO, "starting %s for term %llu", pre ? "pre-vote" : "election",
            (unsigned long long)vote_term);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct rf_progress *p = &r->prs[i];
        if (p->learner || p->id == r->id)
            continue;
        struct br_raft_msg *m = rf_send(r, type, p->id);
        if (!m)
            return;
        m->term = vote_term;
        m->index = last;
        m->log_term = last_term;
        if (transfer)
            m->flags |= BR_RAFT_MSG_F_TRANSFER;
    }
}

/*
 * From Figure 3.1, rules for followers: "If election timeout elapses
 * without receiving AppendEntries RPC from current leader or granting vote
 * to candidate: convert to candidate." Learners never campaign.
 */
void rf_hup(br_raft *r, bool transfer) {
    if (r->role == BR_RAFT_LEADER)
        return;
    if (!r->self_voter && !r->removed_hold) {
        rf_logf(r, BR_RAFT_LOG_DEBUG, "not a voter; not campaigning");
        return;
    }
    if (rf_conf_pending_unapplied(r)) {
        rf_logf(r, BR_RAFT_LOG_INFO, "unapplied configuration change; not campaigning");
        return;
    }
    campaign(r, r->pre_vote && !transfer, transfer);
}

void rf_tick_election(br_raft *r) {
    r->election_elapsed++;
    if (r->timeout_now_ticks > 0)
        r->timeout_now_ticks--;
    if ((r->self_voter || r->removed_hold) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        rf_hup(r, false);
    }
}

/*
 * From Figure 3.1, RequestVote receiver: "1. Reply false if term <
 * currentTerm. 2. If votedFor is null or candidateId, and candidate's log
 * is at least as up-to-date as receiver's log, grant vote."
 * A pre-vote is granted on the same log rule when the candidate's future
 * term is above ours; it changes nothing here.
 */
int rf_step_vote_request(br_raft *r, const struct br_raft_msg *m) {
    bool pre = m->type == BR_RAFT_MSG_PREVOTE;
    bool can_vote = r->vote == m->from || (r->vote == BR_RAFT_NONE && r->lead == BR_RAFT_NONE) ||
                    (pre && m->term > r->term);
    uint32_t resp = pre ? BR_RAFT_MSG_PREVOTE_RESP : BR_RAFT_MSG_VOTE_RESP;
    if (can_vote && rf_log_up_to_date(&r->log, m->index, m->log_term)) {
        struct br_raft_msg *o = rf_send(r, resp, m->from);
        if (!o)
            return BR_ENOMEM;
        o->term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
    } else {
        struct br_raft_msg *o = rf_send(r, resp, m->from);
        if (!o)
            return BR_ENOMEM;
        o->flags |= BR_RAFT_MSG_F_REJECT;
        /*
         * A node that applied its own removal refuses a candidate whose log
         * is behind its own; that candidate may need this very vote (it has
         * not applied the change yet). Such a node may then campaign among
         * the voters of its configuration: single-server changes make any
         * majority of the old and of the new configuration overlap, so
         * this is as safe as any election, and its longer log can win.
         */
        if (can_vote && !r->self_voter && rf_pr_slot(r, r->id) < 0 && rf_n_voters(r) > 0)
            r->removed_hold = true;
    }
    return 0;
}

void rf_step_vote_resp(br_raft *r, const struct br_raft_msg *m) {
    bool pre = m->type == BR_RAFT_MSG_PREVOTE_RESP;
    if (pre != (r->role == BR_RAFT_PRE_CANDIDATE))
        return; /* an answer to a (pre-)election we are no longer running */
    struct rf_progress *p = rf_pr(r, m->from);
    if (!p || p->learner)
        return;
    if (p->vote == 0)
        p->vote = (m->flags & BR_RAFT_MSG_F_REJECT) ? -1 : 1;
    int res = tally(r);
    if (res > 0) {
        if (pre)
            campaign(r, false, false);
        else
            rf_become_leader(r);
    } else if (res < 0) {
        rf_become_follower(r, r->term, BR_RAFT_NONE);
    }
}

/* A leader that is not a voter (it applied its own removal) transfers
 * leadership to the voter with the longest log; it retries every election
 * timeout until a voter takes over. */
void rf_handoff(br_raft *r) {
    struct rf_progress *best = NULL;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct rf_progress *p = &r->prs[i];
        if (!p->learner && p->id != r->id && (!best || p->match > best->match))
            best = p;
    }
    if (!best) {
        rf_become_follower(r, r->term, BR_RAFT_NONE);
        return;
    }
    rf_logf(r, BR_RAFT_LOG_INFO, "removed from the configuration; handing over to %llu",
            (unsigned long long)best->id);
    r->lead_transferee = best->id;
    r->election_elapsed = 0;
    if (best->match == rf_log_last_index(&r->log))
        rf_send(r, BR_RAFT_MSG_TIMEOUT_NOW, best->id);
    else
        rf_send_append(r, best, true);
}

void rf_abort_transfer(br_raft *r) {
    r->lead_transferee = BR_RAFT_NONE;
}

int br_raft_transfer_leadership(br_raft *r, uint64_t to) {
    if (r->role != BR_RAFT_LEADER) {
        return BR_ENOTLEADER;
    }
    struct rf_progress *p = rf_pr(r, to);
    if (!p || p->learner || to == r->id)
        return BR_EINVAL;
    if (r->lead_transferee == to)
        return 0;
    r->lead_transferee = to;
    /* The attempt must finish within one election timeout. */
    r->election_elapsed = 0;
    rf_logf(r, BR_RAFT_LOG_INFO, "transferring leadership to %llu", (unsigned long long)to);
    if (p->match == rf_log_last_index(&r->log))
        rf_send(r, BR_RAFT_MSG_TIMEOUT_NOW, to);
    else
        rf_send_append(r, p, true);
    return 0;
}
