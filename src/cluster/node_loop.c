/*
 * node_loop.c - the node thread: a libuv loop that ticks the Raft core,
 * feeds it peer messages and requests from other threads, and handles its
 * Ready: install snapshot, persist (one fsync), send, apply, complete,
 * advance.
 *
 * When Readys are handled: a uv_check handle runs after every poll phase,
 * i.e. once per loop iteration after all the I/O callbacks of that
 * iteration (peer messages, the async wake-up that drained the request
 * queue). So every proposal and message that arrived together shares one
 * Ready and one fdatasync. The tick timer handles its Ready at once (timers
 * run before the poll, which could otherwise sleep first).
 */
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

/* ------------------------------------------------------------ helpers */

static void pend_push(br_node *n, const struct nd_pending *p) {
    if (n->pend_head + n->pend_n == n->pend_cap) {
        if (n->pend_head > 0) {
            memmove(n->pend, n->pend + n->pend_head, n->pend_n * sizeof(*n->pend));
            n->pend_head = 0;
        }
        if (n->pend_n == n->pend_cap) {
            size_t cap = n->pend_cap ? n->pend_cap * 2 : 64;
            struct nd_pending *np = realloc(n->pend, cap * sizeof(*np));
            if (!np) {
                /* Cannot track it: the entry is in the log, its outcome
                 * unknown to the caller. */
                p->cb(p->ctx, BR_NODE_ELOST);
                return;
            }
            n->pend = np;
            n->pend_cap = cap;
        }
    }
    n->pend[n->pend_head + n->pend_n++] = *p;
}

static void fail_pending(br_node *n, int rc) {
    while (n->pend_n > 0) {
        struct nd_pending p = n->pend[n->pend_head++];
        n->pend_n--;
        p.cb(p.ctx, rc);
    }
    n->pend_head = 0;
}

static void fail_reads(br_node *n, int rc) {
    size_t k = n->n_reads;
    n->n_reads = 0;
    /* Callbacks may add reads (through the queue only): safe. */
    for (size_t i = 0; i < k; i++)
        n->reads[i].cb(n->reads[i].ctx, rc);
}

static void fail_queue(br_node *n, struct nd_req *r, int rc) {
    while (r) {
        struct nd_req *next = r->next;
        if (r->cb)
            r->cb(r->ctx, rc);
        free(r->data);
        free(r);
        r = next;
    }
}

static struct nd_req *take_queue(br_node *n, bool *closing) {
    pthread_mutex_lock(&n->mu);
    struct nd_req *r = n->q_head;
    n->q_head = n->q_tail = NULL;
    *closing = n->closing;
    pthread_mutex_unlock(&n->mu);
    return r;
}

void nd_fatal(br_node *n, int rc, const char *what) {
    if (atomic_load(&n->fatal))
        return;
    nd_log(n, BR_NODE_LOG_ERROR, "FATAL: %s: %s; the node stops serving", what, br_strerror(rc));
    atomic_store(&n->fatal, rc);
    atomic_store(&n->role, BR_RAFT_FOLLOWER);
    fail_pending(n, rc);
    fail_reads(n, rc);
    bool closing;
    fail_queue(n, take_queue(n, &closing), rc);
    for (int i = 0; i < BR_RAFT_MAX_MEMBERS; i++)
        nd_snap_abort_send(n, i, false);
    uv_timer_stop(&n->timer);
    nd_publish_status(n);
}

static bool dead(const br_node *n) {
    return n->stopped || atomic_load(&n->fatal) != 0;
}

/* Reports what could not be reported inside a Ready. */
static void flush_reports(br_node *n) {
    if (n->in_ready || dead(n))
        return;
    for (size_t i = 0; i < n->n_members; i++) {
        uint64_t bit = 1ull << i;
        uint64_t id = n->members[i].id;
        if (n->unreachable_mask & bit)
            br_raft_report_unreachable(n->raft, id);
        if (n->snap_report_fail & bit)
            br_raft_report_snapshot(n->raft, id, false);
        else if (n->snap_report_ok & bit)
            br_raft_report_snapshot(n->raft, id, true);
    }
    n->unreachable_mask = n->snap_report_ok = n->snap_report_fail = 0;
}

void nd_publish_status(br_node *n) {
    struct br_node_status s;
    memset(&s, 0, sizeof(s));
    struct br_raft_status rs;
    br_raft_get_status(n->raft, &rs);
    s.id = n->id;
    s.role = rs.role;
    s.term = rs.term;
    s.leader = rs.leader;
    s.commit = rs.commit;
    s.applied = n->applied;
    s.last_index = rs.last_index;
    s.first_index = br_raftlog_first_index(n->log);
    struct br_raft_snapshot_meta sm;
    br_raftlog_snapshot(n->log, &sm);
    s.snapshot_index = sm.index;
    if (rs.role == BR_RAFT_LEADER) {
        for (size_t i = 0; i < n->n_members; i++) {
            struct br_node_peer *p = &s.peers[s.n_peers];
            p->id = n->members[i].id;
            if (br_raft_get_progress(n->raft, p->id, &p->match, &p->next) < 0)
                continue;
            p->connected = p->id == n->id || br_transport_peer_connected(n->tr, p->id);
            p->snapshotting = n->snd[i].active;
            s.n_peers++;
        }
    }
    s.proposals = n->c_proposals;
    s.entries_applied = n->c_applied;
    s.readys = n->c_readys;
    s.syncs = n->c_syncs;
    s.compactions = n->c_compactions;
    s.snapshots_sent = n->c_snap_sent;
    s.snapshots_installed = n->c_snap_installed;
    pthread_mutex_lock(&n->status_mu);
    n->status = s;
    pthread_mutex_unlock(&n->status_mu);
}

/* ------------------------------------------------------------ sending */

int nd_send_bytes(br_node *n, uint64_t to, const struct iovec *iov, size_t niov) {
    int rc = br_transport_sendv(n->tr, to, iov, niov);
    if (rc < 0) {
        int s = nd_member_slot(n, to);
        if (s >= 0)
            n->unreachable_mask |= 1ull << s;
    }
    return rc;
}

/* A leader's APPEND, HEARTBEAT and SNAPSHOT may leave before the Ready is
 * persisted (raft.h); everything else must wait for the fsync. */
static bool may_send_early(const struct br_raft_msg *m) {
    return m->type == BR_RAFT_MSG_APPEND || m->type == BR_RAFT_MSG_HEARTBEAT ||
           m->type == BR_RAFT_MSG_SNAPSHOT;
}

/* Sends all (early < 0), the early ones (> 0) or the others (== 0). */
static void send_msgs(br_node *n, const struct br_raft_ready *rd, int early) {
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const struct br_raft_msg *m = &rd->msgs[i];
        if (early >= 0 && may_send_early(m) != (early > 0))
            continue;
        if (m->type == BR_RAFT_MSG_SNAPSHOT) {
            nd_snap_start(n, m);
            continue;
        }
        size_t need = 1 + br_raft_encoded_size(m);
        if (need > n->sendbuf_cap) {
            uint8_t *b = realloc(n->sendbuf, need);
            if (!b)
                continue; /* lost, like a dropped packet */
            n->sendbuf = b;
            n->sendbuf_cap = need;
        }
        n->sendbuf[0] = ND_MSG_RAFT;
        long len = br_raft_encode(m, n->sendbuf + 1, need - 1);
        if (len < 0) {
            nd_log(n, BR_NODE_LOG_WARN, "cannot encode a %s: %s", br_raft_msg_type_name(m->type),
                   br_strerror((int)len));
            continue;
        }
        struct iovec iov = {n->sendbuf, (size_t)len + 1};
        nd_send_bytes(n, m->to, &iov, 1);
    }
}

/* ------------------------------------------------------------ applying */

struct apply_ctx {
    br_batch *b;
    const void *key; /* the first operation's key */
    size_t klen;
};

static int add_op(void *ctx, uint8_t kind, const void *key, size_t klen, const void *val,
                  size_t vlen) {
    struct apply_ctx *a = ctx;
    if (!a->key) {
        a->key = key;
        a->klen = klen;
    }
    return kind == ND_OP_PUT ? br_batch_put(a->b, key, klen, val, vlen)
                             : br_batch_delete(a->b, key, klen);
}

static bool input_error(int rc) {
    return rc == BR_EEMPTYKEY || rc == BR_EKEYTOOBIG || rc == BR_EVALTOOBIG || rc == BR_ETOOBIG;
}

/* Applies one committed entry and completes its proposal. 0, or a fatal
 * error (already recorded). */
static int apply_entry(br_node *n, const struct br_raft_entry *e) {
    int res = 0;
    struct nd_pending *p =
        n->pend_n > 0 && n->pend[n->pend_head].index == e->index ? &n->pend[n->pend_head] : NULL;
    if (e->type == BR_RAFT_ENTRY_NORMAL && e->len > 0) {
        br_batch_clear(n->batch);
        struct apply_ctx a = {n->batch, NULL, 0};
        int rc = nd_cmd_decode(e->data, e->len, add_op, &a);
        if (rc < 0) {
            char what[160];
            snprintf(what, sizeof what,
                     "committed entry %llu (term %llu, %u bytes) is not a valid command",
                     (unsigned long long)e->index, (unsigned long long)e->term, e->len);
            nd_fatal(n, rc, what);
            return rc;
        }
        if (p && p->term == e->term && p->single_delete) {
            size_t vlen;
            if (br_engine_get_into(n->engine, a.key, a.klen, NULL, 0, &vlen) == BR_ENOTFOUND)
                res = BR_ENOTFOUND;
        }
        rc = br_engine_write_seq(n->engine, n->batch, e->index);
        if (rc < 0 && input_error(rc)) {
            /* Deterministic: every member refuses it the same way. */
            nd_log(n, BR_NODE_LOG_WARN, "entry %llu refused by the engine: %s",
                   (unsigned long long)e->index, br_strerror(rc));
            res = rc;
        } else if (rc < 0) {
            char what[96];
            snprintf(what, sizeof what, "applying entry %llu", (unsigned long long)e->index);
            nd_fatal(n, rc, what);
            return rc;
        }
    }
    if (e->type == BR_RAFT_ENTRY_CONF_CHANGE)
        nd_members_apply(n, e);
    n->applied = e->index;
    atomic_store(&n->applied_pub, e->index);
    n->c_applied++;
    while (n->pend_n > 0 && n->pend[n->pend_head].index <= e->index) {
        struct nd_pending q = n->pend[n->pend_head++];
        n->pend_n--;
        if (q.index == e->index && q.term == e->term)
            q.cb(q.ctx, res);
        else
            q.cb(q.ctx, BR_ENOTLEADER); /* overwritten: never applied */
    }
    if (n->pend_n == 0)
        n->pend_head = 0;
    return 0;
}

static void complete_reads(br_node *n) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_reads; i++) {
        struct nd_read r = n->reads[i];
        if (r.have_index && r.index <= n->applied)
            r.cb(r.ctx, 0);
        else
            n->reads[k++] = r;
    }
    n->n_reads = k;
}

/* A read forwarded to a leader that is no longer ours will not be
 * answered: fail it now rather than at its deadline. */
static void drop_orphan_reads(br_node *n) {
    struct br_raft_status st;
    br_raft_get_status(n->raft, &st);
    size_t k = 0;
    for (size_t i = 0; i < n->n_reads; i++) {
        struct nd_read r = n->reads[i];
        /* its leader changed (the answer would never come), or the leader
         * refused this node as a non-member */
        if (!r.have_index && (r.refused || (r.leader != n->id && r.leader != st.leader)))
            r.cb(r.ctx, BR_ENOTLEADER);
        else
            n->reads[k++] = r;
    }
    n->n_reads = k;
}

static void expire_reads(br_node *n) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_reads; i++) {
        struct nd_read r = n->reads[i];
        if (n->ticks >= r.deadline)
            r.cb(r.ctx, -ETIMEDOUT);
        else
            n->reads[k++] = r;
    }
    n->n_reads = k;
}

/* ------------------------------------------------------------ Ready */

static void role_changed(br_node *n) {
    struct br_raft_status st;
    br_raft_get_status(n->raft, &st);
    if (st.role == n->last_role)
        return;
    if (n->last_role == BR_RAFT_LEADER) {
        nd_log(n, BR_NODE_LOG_INFO, "lost leadership (term %llu): %zu writes in doubt",
               (unsigned long long)st.term, n->pend_n);
        fail_pending(n, BR_NODE_ELOST);
        fail_reads(n, BR_ENOTLEADER);
        for (int i = 0; i < BR_RAFT_MAX_MEMBERS; i++)
            nd_snap_abort_send(n, i, false);
    }
    if (st.role == BR_RAFT_LEADER)
        nd_log(n, BR_NODE_LOG_INFO, "leader of term %llu", (unsigned long long)st.term);
    n->last_role = st.role;
    atomic_store(&n->role, st.role);
}

void nd_process(br_node *n) {
    if (dead(n))
        return;
    flush_reports(n);
    for (int round = 0; round < 64 && !dead(n) && br_raft_has_ready(n->raft); round++) {
        struct br_raft_ready rd;
        int rc = br_raft_ready(n->raft, &rd);
        if (rc == BR_ENOMEM)
            break; /* nothing lost; the next tick retries */
        if (rc < 0) {
            nd_fatal(n, rc, "reading the Ready");
            return;
        }
        n->in_ready = true;
        struct br_raft_status st;
        br_raft_get_status(n->raft, &st);
        bool leader = st.role == BR_RAFT_LEADER;
        /* 1. install a received snapshot */
        if (rd.has_snapshot) {
            rc = nd_snap_install(n, &rd.snapshot);
            if (rc < 0) {
                nd_fatal(n, rc, "installing a snapshot");
                return;
            }
        }
        /* 2. persist: entries and hard state, one fsync (a leader sends
         *    its APPENDs first) */
        if (leader)
            send_msgs(n, &rd, 1);
        if (rd.n_entries > 0 && (rc = br_raftlog_append(n->log, rd.entries, rd.n_entries)) < 0) {
            nd_fatal(n, rc, "appending to the raft log");
            return;
        }
        if (rd.has_hard_state && (rc = br_raftlog_set_hard_state(n->log, &rd.hard_state)) < 0) {
            nd_fatal(n, rc, "writing the hard state");
            return;
        }
        if (rd.must_sync) {
            rc = br_raftlog_sync(n->log, NULL);
            if (rc < 0) {
                nd_fatal(n, rc, "syncing the raft log");
                return;
            }
            n->c_syncs++;
        }
        /* 3. send */
        send_msgs(n, &rd, leader ? 0 : -1);
        for (size_t i = 0; i < rd.n_reads; i++)
            for (size_t k = 0; k < n->n_reads; k++)
                if (n->reads[k].id == rd.reads[i].ctx) {
                    n->reads[k].have_index = !rd.reads[i].refused;
                    n->reads[k].refused = rd.reads[i].refused;
                    n->reads[k].index = rd.reads[i].index;
                }
        /* 4. apply */
        for (size_t i = 0; i < rd.n_committed; i++)
            if (apply_entry(n, &rd.committed[i]) < 0)
                return;
        /* 5. advance */
        br_raft_advance(n->raft);
        n->in_ready = false;
        n->c_readys++;
        struct br_raft_conf_state conf;
        br_raft_get_conf(n->raft, &conf);
        if ((rc = br_raftlog_set_conf(n->log, &conf)) < 0) {
            nd_fatal(n, rc, "writing the configuration");
            return;
        }
        nd_members_set_roles(n, &conf);
        if (n->rcv.complete)
            nd_snap_discard_recv(n); /* the core did not take it */
        role_changed(n);
        if (n->n_reads > 0)
            drop_orphan_reads(n);
        complete_reads(n);
        flush_reports(n);
        nd_maybe_compact(n);
    }
    n->in_ready = false;
    if (!dead(n))
        nd_snap_pump(n);
    nd_publish_status(n);
}

/* ------------------------------------------------------------ callbacks */

static void shutdown_loop(br_node *n) {
    if (n->stopped)
        return;
    n->stopped = true;
    bool closing;
    fail_queue(n, take_queue(n, &closing), BR_ECLOSED);
    fail_pending(n, BR_ECLOSED);
    fail_reads(n, BR_ECLOSED);
    for (int i = 0; i < BR_RAFT_MAX_MEMBERS; i++)
        nd_snap_abort_send(n, i, false);
    nd_snap_discard_recv(n);
    uv_close((uv_handle_t *)&n->async, NULL);
    uv_close((uv_handle_t *)&n->timer, NULL);
    uv_close((uv_handle_t *)&n->check, NULL);
    br_transport_close(n->tr, NULL, NULL);
    n->tr = NULL;
}

/* The reads one drain of the queue adds share one ReadIndex request (one
 * heartbeat round): `first` is the first of them in n->reads, `id` their
 * shared id (0: none yet). */
struct read_batch {
    size_t first;
    uint64_t id;
};

/* Asks the core for the batch's read index; fails its reads if it cannot. */
static void submit_reads(br_node *n, struct read_batch *b) {
    uint64_t id = b->id;
    b->id = 0;
    if (id == 0 || b->first >= n->n_reads)
        return;
    uint64_t leader = 0;
    int rc = br_raft_read_index(n->raft, id, &leader);
    if (rc == 0) {
        /* a follower forwarded it to `leader`: the answer comes from there */
        for (size_t i = b->first; i < n->n_reads; i++)
            n->reads[i].leader = leader;
        return;
    }
    size_t end = n->n_reads;
    n->n_reads = b->first;
    /* Callbacks may add reads (through the queue only): safe. */
    for (size_t i = b->first; i < end; i++)
        n->reads[i].cb(n->reads[i].ctx, rc);
}

static void handle_req(br_node *n, struct nd_req *r, struct read_batch *rb) {
    int fatal = atomic_load(&n->fatal);
    if (fatal) {
        if (r->cb)
            r->cb(r->ctx, fatal);
        return;
    }
    if (r->kind == ND_REQ_CAMPAIGN) {
        br_raft_campaign(n->raft);
    } else if (r->kind == ND_REQ_PROPOSE || r->kind == ND_REQ_CONF) {
        uint64_t index = 0;
        int rc = r->kind == ND_REQ_CONF ? nd_members_propose(n, r, &index)
                                        : br_raft_propose(n->raft, r->data, r->len, &index, NULL);
        if (rc < 0) {
            r->cb(r->ctx, rc);
            return;
        }
        struct br_raft_status st;
        br_raft_get_status(n->raft, &st);
        n->c_proposals++;
        struct nd_pending p = {index, st.term, r->single_delete, r->cb, r->ctx};
        pend_push(n, &p);
    } else if (r->kind == ND_REQ_READ) {
        if (n->n_reads == n->reads_cap) {
            size_t cap = n->reads_cap ? n->reads_cap * 2 : 16;
            struct nd_read *nr = realloc(n->reads, cap * sizeof(*nr));
            if (!nr) {
                r->cb(r->ctx, BR_ENOMEM);
                return;
            }
            n->reads = nr;
            n->reads_cap = cap;
        }
        if (rb->id == 0) {
            rb->id = ++n->next_read_id;
            rb->first = n->n_reads;
        }
        n->reads[n->n_reads++] = (struct nd_read){
            .id = rb->id,
            .deadline = n->ticks + 4u * n->cfg.election_ticks + 10,
            .cb = r->cb,
            .ctx = r->ctx,
        };
    }
}

static void on_async(uv_async_t *h) {
    br_node *n = h->data;
    if (n->stopped)
        return;
    bool closing;
    struct nd_req *r = take_queue(n, &closing);
    struct read_batch rb = {0, 0};
    while (r) {
        struct nd_req *next = r->next;
        if (r->kind == ND_REQ_CAMPAIGN)
            submit_reads(n, &rb); /* in order: the reads before it first */
        handle_req(n, r, &rb);
        free(r->data);
        free(r);
        r = next;
    }
    submit_reads(n, &rb);
    if (closing)
        shutdown_loop(n);
    /* the Ready is handled by the check handle after this poll phase */
}

static void on_check(uv_check_t *h) {
    br_node *n = h->data;
    nd_process(n);
}

static void on_tick(uv_timer_t *h) {
    br_node *n = h->data;
    if (dead(n))
        return;
    n->ticks++;
    br_raft_tick(n->raft);
    expire_reads(n);
    nd_members_tick(n);
    flush_reports(n);
    nd_snap_pump(n);
    nd_process(n);
}

static void on_message(void *ctx, uint64_t from, const uint8_t *bytes, size_t len) {
    br_node *n = ctx;
    if (dead(n) || len < 1)
        return;
    if (bytes[0] != ND_MSG_RAFT) {
        nd_snap_on_message(n, from, bytes, len);
        return;
    }
    struct br_raft_msg m;
    long rc = br_raft_decode(bytes + 1, len - 1, &m);
    if (rc < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "bad raft message from %llu: %s", (unsigned long long)from,
               br_strerror((int)rc));
        return;
    }
    if (m.from != from || m.to != n->id || m.type == BR_RAFT_MSG_SNAPSHOT) {
        /* a SNAPSHOT only counts inside a complete snapshot stream */
        nd_log(n, BR_NODE_LOG_WARN, "dropped a %s from %llu (claims %llu -> %llu)",
               br_raft_msg_type_name(m.type), (unsigned long long)from, (unsigned long long)m.from,
               (unsigned long long)m.to);
    } else if ((rc = br_raft_step(n->raft, &m)) < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "refused a %s from %llu: %s", br_raft_msg_type_name(m.type),
               (unsigned long long)from, br_strerror((int)rc));
    }
    br_raft_msg_free(&m);
}

static void on_peer_state(void *ctx, uint64_t peer, bool connected) {
    br_node *n = ctx;
    if (dead(n) || connected)
        return;
    int s = nd_member_slot(n, peer);
    if (s < 0)
        return;
    n->unreachable_mask |= 1ull << s;
    /* A snapshot stream to it is abandoned by the next pump, which checks
     * the connection (not here: this may run inside a send of the pump). */
}

static void *thread_main(void *arg) {
    br_node *n = arg;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

int nd_loop_start(br_node *n) {
    int rc = uv_loop_init(&n->loop);
    if (rc < 0)
        return rc;
    n->async.data = n->timer.data = n->check.data = n;
    uv_async_init(&n->loop, &n->async, on_async);
    uv_timer_init(&n->loop, &n->timer);
    uv_check_init(&n->loop, &n->check);
    int self = nd_member_slot(n, n->id);
    struct br_transport_config tc = {
        .self_id = n->id,
        .listen_host = n->cfg.listen_host ? n->cfg.listen_host : n->members[self].host,
        .listen_port =
            (uint16_t)(n->cfg.listen_port >= 0 ? n->cfg.listen_port : n->members[self].raft_port),
        .cluster_token = n->cfg.cluster_token,
        .on_message = on_message,
        .on_peer_state = on_peer_state,
        .ctx = n,
        .log_fn = nd_sub_log,
        .log_ctx = n,
    };
    rc = br_transport_create(&n->loop, &tc, &n->tr);
    for (size_t i = 0; rc == 0 && i < n->n_members; i++) {
        const struct nd_member *m = &n->members[i];
        if (m->id != n->id)
            rc = br_transport_add_peer(n->tr, m->id, m->host, m->raft_port);
    }
    if (rc == 0) {
        n->raft_port = br_transport_port(n->tr);
        uv_timer_start(&n->timer, on_tick, n->tick_ms, n->tick_ms);
        uv_check_start(&n->check, on_check);
        nd_publish_status(n);
        atomic_store(&n->role, n->last_role);
        rc = -pthread_create(&n->thread, NULL, thread_main, n);
        if (rc == 0) {
            n->thread_started = true;
            nd_log(n, BR_NODE_LOG_INFO, "started on raft port %u", n->raft_port);
            return 0;
        }
    }
    uv_close((uv_handle_t *)&n->async, NULL);
    uv_close((uv_handle_t *)&n->timer, NULL);
    uv_close((uv_handle_t *)&n->check, NULL);
    if (n->tr)
        br_transport_close(n->tr, NULL, NULL);
    n->tr = NULL;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    uv_loop_close(&n->loop);
    return rc;
}
