/*
 * membership.c - single-server membership changes (thesis §4.1), learners
 * (§4.2.1) and the configuration's bookkeeping.
 *
 * From §4.1: "When adding or removing just a single server, any majority
 * of the old cluster overlaps with any majority of the new cluster ...
 * This overlap prevents the cluster from splitting into two independent
 * majorities." Hence one change at a time: a leader refuses a new change
 * while the previous one is not applied.
 *
 * Like etcd-io/raft (and unlike the thesis, where a server uses the latest
 * configuration in its log), a change takes effect on a node when the node
 * applies the entry. Together with the rule that a new leader first applies
 * an entry of its own term before proposing a change, this is safe.
 *
 * From §4.2.1: "the new server joins the cluster as a non-voting member ...
 * until it has caught up". A voter can only be added by promoting a
 * learner whose log has reached the leader's commit index.
 */
#include "raft_int.h"

#include "bitraft/error.h"

#include <string.h>

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int br_raft_conf_change_decode(const struct br_raft_entry *e, struct br_raft_conf_change *cc) {
    if (e->type != BR_RAFT_ENTRY_CONF_CHANGE || e->len < 12 || !e->data)
        return BR_ECORRUPT;
    cc->type = 0;
    cc->node_id = 0;
    for (int i = 0; i < 4; i++)
        cc->type |= (uint32_t)e->data[i] << (8 * i);
    for (int i = 0; i < 8; i++)
        cc->node_id |= (uint64_t)e->data[4 + i] << (8 * i);
    if (cc->type > BR_RAFT_CC_REMOVE || cc->node_id == 0)
        return BR_ECORRUPT;
    return 0;
}

/* Rebuilds the member table from conf, keeping the progress of members
 * that stay. BR_EINVAL (and nothing changed) if conf is malformed. */
int rf_conf_load(br_raft *r, const struct br_raft_conf_state *conf) {
    if (conf->n_voters > BR_RAFT_MAX_MEMBERS || conf->n_learners > BR_RAFT_MAX_MEMBERS ||
        conf->n_voters + conf->n_learners > BR_RAFT_MAX_MEMBERS)
        return BR_EINVAL;
    uint64_t ids[BR_RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < conf->n_voters + conf->n_learners; i++) {
        uint64_t id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];
        if (id == 0)
            return BR_EINVAL;
        for (uint32_t k = 0; k < n; k++)
            if (ids[k] == id)
                return BR_EINVAL;
        ids[n++] = id;
    }
    struct rf_progress old[BR_RAFT_MAX_MEMBERS];
    uint32_t n_old = r->n_prs;
    memcpy(old, r->prs, sizeof(old));
    memset(r->prs, 0, sizeof(r->prs));
    uint64_t last = rf_log_last_index(&r->log);
    /* Reuse the old slots' inflight buffers, free those left over. */
    bool used[BR_RAFT_MAX_MEMBERS] = {false};
    for (uint32_t i = 0; i < n; i++) {
        int found = -1;
        for (uint32_t k = 0; k < n_old; k++)
            if (old[k].id == ids[i])
                found = (int)k;
        if (found >= 0) {
            r->prs[i] = old[found];
            used[found] = true;
        } else {
            r->prs[i].id = ids[i];
            r->prs[i].inf.buf = NULL;
            rf_pr_reset(&r->prs[i], last + 1, r->max_inflight);
            r->prs[i].recent_active = true;
        }
        r->prs[i].learner = i >= conf->n_voters;
    }
    for (uint32_t k = 0; k < n_old; k++)
        if (!used[k])
            rf_inflights_free(&old[k].inf); /* a removed member's buffer */
    r->n_prs = n;
    r->self_voter = false;
    for (uint32_t i = 0; i < conf->n_voters; i++)
        if (conf->voters[i] == r->id)
            r->self_voter = true;
    return 0;
}

void rf_conf_to_state(const br_raft *r, struct br_raft_conf_state *conf) {
    memset(conf, 0, sizeof(*conf));
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].learner)
            conf->learners[conf->n_learners++] = r->prs[i].id;
        else
            conf->voters[conf->n_voters++] = r->prs[i].id;
    }
}

/* Computes the configuration after cc; BR_EINVAL if the change is void. */
static int conf_after(const br_raft *r, const struct br_raft_conf_change *cc,
                      struct br_raft_conf_state *out) {
    struct br_raft_conf_state c;
    rf_conf_to_state(r, &c);
    int slot = rf_pr_slot(r, cc->node_id);
    bool is_learner = slot >= 0 && r->prs[slot].learner;
    bool is_voter = slot >= 0 && !r->prs[slot].learner;
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < c.n_voters; i++)
        if (!(cc->type == BR_RAFT_CC_REMOVE && c.voters[i] == cc->node_id))
            out->voters[out->n_voters++] = c.voters[i];
    for (uint32_t i = 0; i < c.n_learners; i++)
        if (c.learners[i] != cc->node_id)
            out->learners[out->n_learners++] = c.learners[i];
    switch (cc->type) {
    case BR_RAFT_CC_ADD_VOTER:
        if (is_voter)
            return BR_EINVAL;
        if (c.n_voters + c.n_learners + (is_learner ? 0 : 1) > BR_RAFT_MAX_MEMBERS)
            return BR_EINVAL;
        out->voters[out->n_voters++] = cc->node_id;
        return 0;
    case BR_RAFT_CC_ADD_LEARNER:
        if (slot >= 0 || c.n_voters + c.n_learners + 1 > BR_RAFT_MAX_MEMBERS)
            return BR_EINVAL;
        out->learners[out->n_learners++] = cc->node_id;
        return 0;
    case BR_RAFT_CC_REMOVE:
        if (slot < 0 || (is_voter && c.n_voters == 1))
            return BR_EINVAL;
        return 0;
    default:
        return BR_EINVAL;
    }
}

int br_raft_propose_conf_change(br_raft *r, const struct br_raft_conf_change *cc, const void *ctx,
                                size_t ctx_len, uint64_t *index, uint64_t *leader) {
    if (r->role != BR_RAFT_LEADER || r->lead_transferee != BR_RAFT_NONE) {
        if (leader)
            *leader = r->lead_transferee ? BR_RAFT_NONE : r->lead;
        return BR_ENOTLEADER;
    }
    if (leader)
        *leader = r->id;
    if (!cc || cc->node_id == 0 || (ctx_len > 0 && !ctx) || ctx_len > UINT32_MAX - 12)
        return BR_EINVAL;
    if (r->pending_conf > r->log.applied)
        return BR_EINVAL; /* one change at a time */
    struct br_raft_conf_state next;
    int rc = conf_after(r, cc, &next);
    if (rc < 0)
        return rc;
    if (cc->type == BR_RAFT_CC_ADD_VOTER) {
        struct rf_progress *p = rf_pr(r, cc->node_id);
        if (!p || !p->learner || p->match < r->log.committed)
            return BR_EINVAL; /* add it as a learner, let it catch up first */
    }
    uint8_t hdr[12];
    put_u32(hdr, cc->type);
    put_u64(hdr + 4, cc->node_id);
    uint64_t idx = 0;
    rc = rf_append_entry(r, BR_RAFT_ENTRY_CONF_CHANGE, hdr, sizeof(hdr), ctx, ctx_len, &idx);
    if (rc < 0)
        return rc;
    r->pending_conf = idx;
    if (index)
        *index = idx;
    return 0;
}

/* Applies a committed change. Changes that no longer apply (a restart
 * replaying entries the configuration already reflects) do nothing. */
void rf_conf_apply_entry(br_raft *r, const struct br_raft_entry *e) {
    struct br_raft_conf_change cc;
    if (br_raft_conf_change_decode(e, &cc) < 0) {
        rf_logf(r, BR_RAFT_LOG_WARN, "undecodable configuration change at %llu",
                (unsigned long long)e->index);
        return;
    }
    struct br_raft_conf_state next;
    if (conf_after(r, &cc, &next) < 0)
        return;
    if (rf_conf_load(r, &next) < 0)
        return;
    rf_logf(r, BR_RAFT_LOG_INFO, "applied change %u of node %llu at %llu: %u voters %u learners",
            cc.type, (unsigned long long)cc.node_id, (unsigned long long)e->index, next.n_voters,
            next.n_learners);
    if (r->role != BR_RAFT_LEADER)
        return;
    if (r->lead_transferee != BR_RAFT_NONE) {
        struct rf_progress *t = rf_pr(r, r->lead_transferee);
        if (!t || t->learner)
            rf_abort_transfer(r);
    }
    struct rf_progress *self = rf_pr(r, r->id);
    if (self)
        self->recent_active = true;
    rf_read_conf_changed(r);
    rf_maybe_commit(r); /* the quorum may have shrunk */
    r->bcast_pending = true;
    if (!r->self_voter) {
        /*
         * Thesis §4.2.2: a leader removed from the configuration must
         * step down. Stepping down at once can leave the others stuck:
         * they learn that the change committed only from a leader, and
         * until they apply it they need this node's vote, which it
         * refuses if its log is longer. So, like etcd-io/raft, it keeps
         * leading (no longer counting itself) and hands leadership to the
         * most up-to-date voter.
         */
        rf_handoff(r);
    }
}
