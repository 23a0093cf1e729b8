/*
 * progress.c - the leader's view of each member's log.
 *
 * From Figure 3.1, state on leaders: "nextIndex[] for each server, index of
 * the next log entry to send to that server; matchIndex[] for each server,
 * index of highest log entry known to be replicated on server."
 *
 * Like etcd-io/raft, a follower's progress is in one of three states:
 *   probe      the leader does not know where the logs match; it sends one
 *              APPEND at a time and waits for its answer (or a heartbeat
 *              round) before trying again;
 *   replicate  the logs match at `match`; APPENDs are pipelined, at most
 *              max_inflight in flight (the inflights ring);
 *   snapshot   the follower needs entries the log no longer holds; nothing
 *              is sent until the driver reports the snapshot's fate.
 */
#include "raft_int.h"

#include <stdlib.h>
#include <string.h>

void rf_inflights_free(struct rf_inflights *in) {
    free(in->buf);
    memset(in, 0, sizeof(*in));
}

static void inflights_reset(struct rf_inflights *in) {
    in->start = 0;
    in->count = 0;
}

static bool inflights_full(const struct rf_inflights *in) {
    return in->count >= in->cap;
}

static void inflights_add(struct rf_inflights *in, uint64_t last) {
    if (in->count >= in->cap)
        return; /* callers check is_paused first */
    in->buf[(in->start + in->count) % in->cap] = last;
    in->count++;
}

/* Frees the in-flight messages whose last index is <= idx. */
void rf_inflights_free_le(struct rf_inflights *in, uint64_t idx) {
    while (in->count > 0 && in->buf[in->start] <= idx) {
        in->start = (in->start + 1) % in->cap;
        in->count--;
    }
}

void rf_pr_reset(struct rf_progress *p, uint64_t next, uint32_t max_inflight) {
    if (p->inf.cap != max_inflight) {
        uint64_t *b = realloc(p->inf.buf, max_inflight * sizeof(*b));
        if (b) {
            p->inf.buf = b;
            p->inf.cap = max_inflight;
        }
    }
    inflights_reset(&p->inf);
    p->match = 0;
    p->next = next;
    p->state = RF_PR_PROBE;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    p->recent_active = false;
    p->vote = 0;
}

void rf_pr_become_probe(struct rf_progress *p) {
    /* After a snapshot, continue right after it (thesis §5.3.1 / etcd). */
    if (p->state == RF_PR_SNAPSHOT) {
        uint64_t ps = p->pending_snapshot;
        p->next = (p->match > ps ? p->match : ps) + 1;
    } else {
        p->next = p->match + 1;
    }
    p->state = RF_PR_PROBE;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    inflights_reset(&p->inf);
}

void rf_pr_become_replicate(struct rf_progress *p) {
    p->state = RF_PR_REPLICATE;
    p->next = p->match + 1;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    inflights_reset(&p->inf);
}

void rf_pr_become_snapshot(struct rf_progress *p, uint64_t snap_index) {
    p->state = RF_PR_SNAPSHOT;
    p->pending_snapshot = snap_index;
    p->probe_sent = false;
    inflights_reset(&p->inf);
}

/* A success answer for index n: returns true if it told us something new. */
bool rf_pr_maybe_update(struct rf_progress *p, uint64_t n) {
    bool updated = false;
    if (p->match < n) {
        p->match = n;
        updated = true;
        p->probe_sent = false;
    }
    if (p->next < n + 1)
        p->next = n + 1;
    return updated;
}

/*
 * A rejection of the APPEND whose prevLogIndex was `rejected`; hint is the
 * index the follower suggests probing (fast backoff, thesis §5.3's
 * optimization). Returns false if the rejection is stale.
 */
bool rf_pr_maybe_decr_to(struct rf_progress *p, uint64_t rejected, uint64_t hint) {
    if (p->state == RF_PR_REPLICATE) {
        if (rejected <= p->match)
            return false;
        p->next = p->match + 1;
        return true;
    }
    if (p->next == 0 || p->next - 1 != rejected)
        return false;
    uint64_t n = hint + 1 < rejected ? hint + 1 : rejected;
    if (n < p->match + 1)
        n = p->match + 1;
    if (n < 1)
        n = 1;
    p->next = n;
    p->probe_sent = false;
    return true;
}

bool rf_pr_is_paused(const struct rf_progress *p) {
    switch (p->state) {
    case RF_PR_PROBE:
        return p->probe_sent;
    case RF_PR_REPLICATE:
        return inflights_full(&p->inf);
    default:
        return true;
    }
}

/* An APPEND with n entries ending at `last` was queued. */
void rf_pr_sent(struct rf_progress *p, uint64_t last, size_t n) {
    if (p->state == RF_PR_REPLICATE) {
        if (n > 0) {
            p->next = last + 1;
            inflights_add(&p->inf, last);
        }
    } else if (p->state == RF_PR_PROBE) {
        p->probe_sent = true;
    }
}
