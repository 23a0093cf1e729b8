/*
 * replication.c - log replication (§5.3), the commit rule (§5.4.2),
 * heartbeats and snapshots (§7).
 */
#include "raft_int.h"

#include "bitraft/error.h"

#include <stdlib.h>
#include <string.h>

/*
 * Appends an entry of the current term to the log, with data d1 then d2
 * copied into one buffer. The leader sends it at the next flush (Ready),
 * so proposals made together travel in one APPEND per follower.
 */
int rf_append_entry(br_raft *r, uint32_t type, const void *d1, size_t l1, const void *d2, size_t l2,
                    uint64_t *index) {
    size_t len = l1 + l2;
    uint8_t *data = NULL;
    if (len > 0) {
        data = malloc(len);
        if (!data)
            return BR_ENOMEM;
        if (l1)
            memcpy(data, d1, l1);
        if (l2)
            memcpy(data + l1, d2, l2);
    }
    int rc = rf_log_append_owned(&r->log, r->term, type, data, (uint32_t)len, index);
    if (rc < 0) {
        free(data);
        return rc;
    }
    r->bcast_pending = true;
    return 0;
}

static bool send_snapshot(br_raft *r, struct rf_progress *p) {
    if (!p->recent_active) {
        /* Do not stream a snapshot to a node that may be down. */
        return false;
    }
    struct br_raft_snapshot_meta meta;
    int rc = rf_log_snapshot(&r->log, &meta);
    if (rc < 0 || meta.index == 0) {
        rf_logf(r, BR_RAFT_LOG_DEBUG, "snapshot for %llu not available", (unsigned long long)p->id);
        return false;
    }
    struct br_raft_msg *m = rf_send(r, BR_RAFT_MSG_SNAPSHOT, p->id);
    if (!m)
        return false;
    m->snapshot = meta;
    rf_logf(r, BR_RAFT_LOG_INFO, "sending snapshot at %llu to %llu", (unsigned long long)meta.index,
            (unsigned long long)p->id);
    rf_pr_become_snapshot(p, meta.index);
    return true;
}

/*
 * Sends p the entries from p->next (at most max_msg_bytes), or a snapshot
 * if they were compacted away. Returns true if a message was queued.
 */
bool rf_send_append(br_raft *r, struct rf_progress *p, bool send_if_empty) {
    if (p->id == r->id || rf_pr_is_paused(p))
        return false;
    uint64_t prev = p->next - 1, prev_t = 0;
    int rc = rf_log_term(&r->log, prev, &prev_t);
    struct br_raft_entry *ents = NULL;
    size_t n = 0;
    int rce = 1;
    if (rc == 0)
        rce = rf_log_slice(&r->log, &r->arena, p->next, UINT64_MAX, r->max_msg_bytes, &ents, &n);
    if (rc < 0 || rce < 0) {
        rf_logf(r, BR_RAFT_LOG_WARN, "cannot read the log for %llu: %d", (unsigned long long)p->id,
                rc < 0 ? rc : rce);
        return false;
    }
    if (rc > 0 || rce > 0)
        return send_snapshot(r, p);
    if (n == 0 && !send_if_empty)
        return false;
    struct br_raft_msg *m = rf_send(r, BR_RAFT_MSG_APPEND, p->id);
    if (!m)
        return false;
    m->index = prev;
    m->log_term = prev_t;
    m->entries = ents;
    m->n_entries = n;
    m->commit = r->log.committed;
    rf_pr_sent(p, n ? ents[n - 1].index : prev, n);
    return true;
}

/* Sends every follower what it lacks (at least an empty APPEND carrying
 * the commit index); a follower in replicate state gets APPENDs until its
 * in-flight window is full. */
void rf_bcast_append(br_raft *r) {
    r->bcast_pending = false;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct rf_progress *p = &r->prs[i];
        if (p->id == r->id)
            continue;
        rf_send_append(r, p, true);
        while (p->state == RF_PR_REPLICATE && rf_send_append(r, p, false)) {
        }
    }
}

/*
 * From §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that
 * carry no log entries) to all followers in order to maintain their
 * authority." A heartbeat's commit is capped by what the follower is known
 * to hold, so it never commits entries the follower lacks.
 */
void rf_bcast_heartbeat(br_raft *r, uint64_t ctx) {
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct rf_progress *p = &r->prs[i];
        if (p->id == r->id)
            continue;
        struct br_raft_msg *m = rf_send(r, BR_RAFT_MSG_HEARTBEAT, p->id);
        if (!m)
            return;
        m->commit = p->match < r->log.committed ? p->match : r->log.committed;
        m->ctx = ctx;
    }
}

/*
 * From Figure 3.1, rules for leaders: "If there exists an N such that N >
 * commitIndex, a majority of matchIndex[i] >= N, and log[N].term ==
 * currentTerm: set commitIndex = N." The leader's own matchIndex counts
 * only what its disk holds (thesis §10.2.1).
 */
bool rf_maybe_commit(br_raft *r) {
    uint64_t m[BR_RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (!r->prs[i].learner)
            m[n++] = r->prs[i].match;
    if (n == 0)
        return false;
    /* insertion sort, descending; n <= 16 */
    for (uint32_t i = 1; i < n; i++) {
        uint64_t v = m[i];
        uint32_t j = i;
        while (j > 0 && m[j - 1] < v) {
            m[j] = m[j - 1];
            j--;
        }
        m[j] = v;
    }
    uint64_t mci = m[n / 2]; /* the (n/2+1)-th largest: held by a majority */
    if (!rf_log_maybe_commit(&r->log, mci, r->term))
        return false;
    rf_read_on_commit(r);
    r->bcast_pending = true; /* tell followers the new commit index */
    return true;
}

void rf_self_persisted(br_raft *r) {
    if (r->role != BR_RAFT_LEADER)
        return;
    struct rf_progress *self = rf_pr(r, r->id);
    if (!self)
        return;
    rf_pr_maybe_update(self, rf_log_last_index(&r->log));
    rf_maybe_commit(r);
}

static void respond_append(br_raft *r, uint64_t to, uint64_t index) {
    struct br_raft_msg *o = rf_send(r, BR_RAFT_MSG_APPEND_RESP, to);
    if (o)
        o->index = index;
}

void rf_handle_append(br_raft *r, const struct br_raft_msg *m) {
    if (m->index < r->log.committed) {
        respond_append(r, m->from, r->log.committed);
        return;
    }
    uint64_t lastnew = 0;
    int rc = rf_log_maybe_append(&r->log, m->index, m->log_term, m->commit, m->entries,
                                 m->n_entries, &lastnew);
    if (rc > 0) {
        respond_append(r, m->from, lastnew);
        return;
    }
    if (rc < 0) {
        rf_logf(r, BR_RAFT_LOG_WARN, "APPEND from %llu at %llu refused: %d",
                (unsigned long long)m->from, (unsigned long long)m->index, rc);
        return;
    }
    /*
     * Fast backoff (§5.3: "the follower can include the term of the
     * conflicting entry and the first index it stores for that term"):
     * hint the largest index whose term is <= the leader's prevLogTerm, so
     * the leader can skip a whole term of mismatching entries at once.
     */
    uint64_t last = rf_log_last_index(&r->log);
    uint64_t hint_t = 0;
    uint64_t hint = rf_log_find_conflict_by_term(&r->log, m->index < last ? m->index : last,
                                                 m->log_term, &hint_t);
    struct br_raft_msg *o = rf_send(r, BR_RAFT_MSG_APPEND_RESP, m->from);
    if (!o)
        return;
    o->flags |= BR_RAFT_MSG_F_REJECT;
    o->index = m->index;
    o->reject_hint = hint;
    o->log_term = hint_t;
}

void rf_handle_heartbeat(br_raft *r, const struct br_raft_msg *m) {
    uint64_t last = rf_log_last_index(&r->log);
    rf_log_commit_to(&r->log, m->commit < last ? m->commit : last);
    struct br_raft_msg *o = rf_send(r, BR_RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (o)
        o->ctx = m->ctx;
}

/*
 * From Figure 5.3 (InstallSnapshot receiver): "If existing log entry has
 * same index and term as snapshot's last included entry, retain log
 * entries following it and reply. Discard the entire log. Reset state
 * machine using snapshot contents."
 */
static bool restore(br_raft *r, const struct br_raft_snapshot_meta *s) {
    if (s->index <= r->log.committed)
        return false;
    if (rf_log_match_term(&r->log, s->index, s->term)) {
        rf_log_commit_to(&r->log, s->index);
        return false;
    }
    rf_log_restore(&r->log, s);
    if (rf_conf_load(r, &s->conf) < 0)
        rf_logf(r, BR_RAFT_LOG_WARN, "snapshot holds an invalid configuration");
    rf_logf(r, BR_RAFT_LOG_INFO, "restored snapshot at %llu term %llu",
            (unsigned long long)s->index, (unsigned long long)s->term);
    return true;
}

void rf_handle_snapshot(br_raft *r, const struct br_raft_msg *m) {
    if (restore(r, &m->snapshot))
        respond_append(r, m->from, rf_log_last_index(&r->log));
    else
        respond_append(r, m->from, r->log.committed);
}

void rf_handle_append_resp(br_raft *r, const struct br_raft_msg *m) {
    struct rf_progress *p = rf_pr(r, m->from);
    if (!p)
        return;
    p->recent_active = true;
    uint64_t last = rf_log_last_index(&r->log);
    if (m->flags & BR_RAFT_MSG_F_REJECT) {
        uint64_t next_probe = m->reject_hint;
        if (m->log_term > 0) {
            uint64_t t;
            next_probe = rf_log_find_conflict_by_term(&r->log, m->reject_hint, m->log_term, &t);
        }
        if (rf_pr_maybe_decr_to(p, m->index, next_probe)) {
            if (p->state == RF_PR_REPLICATE)
                rf_pr_become_probe(p);
            rf_send_append(r, p, true);
        }
        return;
    }
    if (m->index > last) {
        rf_logf(r, BR_RAFT_LOG_WARN, "APPEND_RESP from %llu beyond our log",
                (unsigned long long)m->from);
        return;
    }
    if (!rf_pr_maybe_update(p, m->index))
        return;
    if (p->state == RF_PR_PROBE) {
        rf_pr_become_replicate(p);
    } else if (p->state == RF_PR_SNAPSHOT) {
        if (p->match >= p->pending_snapshot || p->match + 1 >= rf_log_first_index(&r->log)) {
            rf_pr_become_probe(p);
            rf_pr_become_replicate(p);
        }
    } else {
        rf_inflights_free_le(&p->inf, m->index);
    }
    rf_maybe_commit(r);
    /* keep the pipeline full */
    while (rf_send_append(r, p, false)) {
    }
    if (m->from == r->lead_transferee && p->match == last) {
        rf_logf(r, BR_RAFT_LOG_INFO, "%llu caught up; sending TIMEOUT_NOW",
                (unsigned long long)m->from);
        rf_send(r, BR_RAFT_MSG_TIMEOUT_NOW, m->from);
    }
}

void rf_handle_heartbeat_resp(br_raft *r, const struct br_raft_msg *m) {
    int slot = rf_pr_slot(r, m->from);
    if (slot < 0)
        return;
    struct rf_progress *p = &r->prs[slot];
    p->recent_active = true;
    p->probe_sent = false;
    if (p->state == RF_PR_REPLICATE && p->inf.count >= p->inf.cap && p->inf.count > 0) {
        /* An APPEND may have been lost: let one more go out so a rejection
         * can bring the follower back to probing. */
        p->inf.start = (p->inf.start + 1) % p->inf.cap;
        p->inf.count--;
    }
    if (p->match < rf_log_last_index(&r->log))
        rf_send_append(r, p, true);
    if (m->ctx != 0)
        rf_read_on_heartbeat_resp(r, slot, m->ctx);
}

/*
 * The leader's clock: heartbeats every heartbeat_tick, and every
 * election_tick the check-quorum round (thesis §6.2: "a leader steps down
 * if an election timeout elapses without a successful round of heartbeats
 * to a majority of its cluster") and the end of a stalled transfer.
 */
void rf_tick_heartbeat(br_raft *r) {
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->election_tick) {
        r->election_elapsed = 0;
        if (r->check_quorum) {
            uint32_t active = 0;
            for (uint32_t i = 0; i < r->n_prs; i++) {
                struct rf_progress *p = &r->prs[i];
                if (!p->learner && (p->id == r->id || p->recent_active))
                    active++;
                p->recent_active = p->id == r->id;
            }
            if (active < rf_quorum(r)) {
                rf_logf(r, BR_RAFT_LOG_INFO, "lost contact with a quorum; stepping down");
                rf_become_follower(r, r->term, BR_RAFT_NONE);
                return;
            }
        }
        if (r->lead_transferee != BR_RAFT_NONE) {
            rf_logf(r, BR_RAFT_LOG_INFO, "leadership transfer to %llu timed out",
                    (unsigned long long)r->lead_transferee);
            rf_abort_transfer(r);
            if (!r->self_voter)
                rf_handoff(r); /* removed: try again, maybe another voter */
        }
    }
    if (r->heartbeat_elapsed >= r->heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        rf_bcast_heartbeat(r, rf_read_last_ctx(r));
    }
}
