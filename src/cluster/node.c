/*
 * node.c - br_node: open and close, the API other threads call (requests
 * are queued under a mutex and the loop is woken with a uv_async), status.
 * The loop and the Ready handling are in node_loop.c, snapshots and log
 * compaction in node_snapshot.c, the command format in node_cmd.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node_int.h"

/* ------------------------------------------------------------ logging */

void nd_log(br_node *n, int level, const char *fmt, ...) {
    if (!n->cfg.log_fn || level < n->cfg.log_level)
        return;
    char buf[1024];
    int k = snprintf(buf, sizeof buf, "node %llu: ", (unsigned long long)n->id);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + k, sizeof buf - (size_t)k, fmt, ap);
    va_end(ap);
    n->cfg.log_fn(n->cfg.log_ctx, level, buf);
}

/* Sink for the raft core, the raft log and the transport (same levels). */
void nd_sub_log(void *ctx, int level, const char *msg) {
    nd_log(ctx, level, "%s", msg);
}

static void engine_log(void *ctx, br_log_level level, const char *msg) {
    int l = level == BR_LOG_ERROR  ? BR_NODE_LOG_ERROR
            : level == BR_LOG_WARN ? BR_NODE_LOG_WARN
            : level == BR_LOG_INFO ? BR_NODE_LOG_INFO
                                   : BR_NODE_LOG_DEBUG;
    nd_log(ctx, l, "engine: %s", msg);
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int nd_member_slot(const br_node *n, uint64_t id) {
    for (size_t i = 0; i < n->n_members; i++)
        if (n->members[i].id == id)
            return (int)i;
    return -1;
}

/* ------------------------------------------------------------ config */

void br_node_config_init(struct br_node_config *c) {
    memset(c, 0, sizeof(*c));
    c->listen_port = -1;
}

static char *path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (p) {
        memcpy(p, a, la);
        p[la] = '/';
        memcpy(p + la + 1, b, lb + 1);
    }
    return p;
}

static void node_free(br_node *n) {
    for (size_t i = 0; i < n->n_members; i++) {
        free(n->members[i].host);
        free(n->members[i].client_addr);
    }
    free(n->dir);
    free(n->data_dir);
    free(n->raft_dir);
    free(n->staging_dir);
    free(n->pend);
    free(n->reads);
    free(n->sendbuf);
    if (n->batch)
        br_batch_free(n->batch);
    pthread_rwlock_destroy(&n->engine_lock);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->status_mu);
    pthread_mutex_destroy(&n->members_mu);
    free(n);
}

/* Copies and checks the configuration. */
static int node_configure(br_node *n, const struct br_node_config *c, char *err, size_t errlen) {
    if (!c->dir || !*c->dir || c->id == 0 || !c->members || c->n_members == 0 ||
        c->n_members > BR_RAFT_MAX_MEMBERS) {
        seterr(err, errlen, "node: bad configuration (id, dir or members)");
        return BR_EINVAL;
    }
    n->cfg = *c;
    n->id = c->id;
    for (size_t i = 0; i < c->n_members; i++) {
        const struct br_node_member *m = &c->members[i];
        if (m->id == 0 || !m->host || nd_member_slot(n, m->id) >= 0) {
            seterr(err, errlen, "node: bad member %zu (zero or duplicate id, no host)", i);
            return BR_EINVAL;
        }
        struct nd_member *d = &n->members[n->n_members++];
        d->id = m->id;
        d->raft_port = m->raft_port;
        d->host = strdup(m->host);
        d->client_addr = strdup(m->client_addr ? m->client_addr : "");
        if (!d->host || !d->client_addr)
            return BR_ENOMEM;
    }
    int self = nd_member_slot(n, n->id);
    if (self < 0) {
        seterr(err, errlen, "node: id %llu is not among the members", (unsigned long long)n->id);
        return BR_EINVAL;
    }
    n->cfg.members = NULL;
    n->cfg.cluster_token = NULL;
    n->cfg.listen_host = NULL;
    n->cfg.dir = NULL;
    n->cfg.engine = NULL;
    n->tick_ms = c->tick_ms ? c->tick_ms : 10;
    if (!c->election_ticks)
        n->cfg.election_ticks = 15;
    if (!c->heartbeat_ticks)
        n->cfg.heartbeat_ticks = 5;
    if (n->cfg.heartbeat_ticks >= n->cfg.election_ticks || n->cfg.election_ticks < 2) {
        seterr(err, errlen, "node: heartbeat_ticks must be below election_ticks");
        return BR_EINVAL;
    }
    n->compact_every = c->compact_every ? c->compact_every : 10000;
    n->compact_tail = c->compact_tail == UINT64_MAX ? 0 : c->compact_tail ? c->compact_tail : 1000;
    n->chunk = c->snapshot_chunk ? c->snapshot_chunk : (1u << 20);
    if (n->chunk > (16u << 20))
        n->chunk = 16u << 20;
    uint64_t seg = c->raftlog_segment ? c->raftlog_segment : BR_RAFTLOG_DEFAULT_SEGMENT;
    n->max_cmd = (size_t)(seg / 2 < (32u << 20) ? seg / 2 : (32u << 20));
    if (c->engine)
        n->eopts = *c->engine;
    else
        br_engine_options_init(&n->eopts);
    n->eopts.sync = BR_SYNC_NEVER;
    n->eopts.read_only = 0;
    n->eopts.log = engine_log;
    n->eopts.log_ctx = n;
    n->dir = strdup(c->dir);
    n->data_dir = path_join(c->dir, "data");
    n->raft_dir = path_join(c->dir, "raft");
    n->staging_dir = path_join(c->dir, "snap-in");
    if (!n->dir || !n->data_dir || !n->raft_dir || !n->staging_dir)
        return BR_ENOMEM;
    return 0;
}

/* ------------------------------------------------------------ open */

/* The applied index to restart the core with: what the engine holds,
 * clamped to the durable commit index (the engine may hold entries the
 * log lost the commit record of; they are replays, skipped on apply). */
static int restart_applied(br_node *n, uint64_t *applied, char *err, size_t errlen) {
    br_engine_stats es;
    br_engine_stats_get(n->engine, &es);
    struct br_raft_hard_state hs;
    br_raftlog_hard_state(n->log, &hs);
    struct br_raft_snapshot_meta sm;
    br_raftlog_snapshot(n->log, &sm);
    if (sm.index > 1 && es.last_seq < sm.index) {
        seterr(err, errlen,
               "node: the engine holds writes up to %llu but the raft log was compacted past "
               "%llu: data is missing",
               (unsigned long long)es.last_seq, (unsigned long long)sm.index);
        return BR_ECORRUPT;
    }
    uint64_t a = es.last_seq < hs.commit ? es.last_seq : hs.commit;
    *applied = a;
    nd_log(n, BR_NODE_LOG_INFO,
           "engine at %llu, raft log %llu..%llu (snapshot %llu, commit %llu): restarting at %llu",
           (unsigned long long)es.last_seq, (unsigned long long)br_raftlog_first_index(n->log),
           (unsigned long long)br_raftlog_last_index(n->log), (unsigned long long)sm.index,
           (unsigned long long)hs.commit, (unsigned long long)a);
    return 0;
}

static int open_storage(br_node *n, char *err, size_t errlen) {
    if (mkdir(n->dir, 0755) != 0 && errno != EEXIST) {
        int rc = -errno;
        seterr(err, errlen, "%s: %s", n->dir, br_strerror(rc));
        return rc;
    }
    int rc = nd_snap_recover_dirs(n);
    if (rc < 0) {
        seterr(err, errlen, "%s: recovering a snapshot swap: %s", n->dir, br_strerror(rc));
        return rc;
    }
    size_t n_configured = n->n_members; /* the config's members come first */
    if ((rc = nd_members_load(n, err, errlen)) < 0)
        return rc;
    rc = br_engine_open(n->data_dir, &n->eopts, &n->engine, err, errlen);
    if (rc < 0)
        return rc;
    struct br_raftlog_options lo;
    br_raftlog_options_init(&lo);
    if (n->cfg.raftlog_segment)
        lo.segment_size = n->cfg.raftlog_segment;
    lo.log_fn = nd_sub_log;
    lo.log_ctx = n;
    rc = br_raftlog_open(n->raft_dir, &lo, &n->log, err, errlen);
    if (rc < 0)
        return rc;
    struct br_raft_hard_state hs;
    br_raftlog_hard_state(n->log, &hs);
    struct br_raft_snapshot_meta sm;
    br_raftlog_snapshot(n->log, &sm);
    if (hs.term == 0 && sm.index == 0 && br_raftlog_last_index(n->log) == 0) {
        br_engine_stats es;
        br_engine_stats_get(n->engine, &es);
        if (es.last_seq > 0 || es.keys > 0) {
            seterr(err, errlen, "node: %s holds data but the raft log %s is empty", n->data_dir,
                   n->raft_dir);
            return BR_ECORRUPT;
        }
        if (n->joining) {
            nd_log(n, BR_NODE_LOG_INFO, "empty log: waiting to be added to a cluster");
        } else {
            struct br_raft_conf_state conf;
            memset(&conf, 0, sizeof(conf));
            for (size_t i = 0; i < n_configured; i++)
                conf.voters[conf.n_voters++] = n->members[i].id;
            rc = br_raftlog_bootstrap(n->log, &conf);
            if (rc < 0) {
                seterr(err, errlen, "node: bootstrap of %s: %s", n->raft_dir, br_strerror(rc));
                return rc;
            }
            nd_log(n, BR_NODE_LOG_INFO, "bootstrapped a new member with %u voters", conf.n_voters);
        }
    }
    uint64_t applied = 0;
    rc = restart_applied(n, &applied, err, errlen);
    if (rc < 0)
        return rc;
    struct br_raft_config rc_cfg = {
        .id = n->id,
        .election_tick = n->cfg.election_ticks,
        .heartbeat_tick = n->cfg.heartbeat_ticks,
        .pre_vote = true,
        .check_quorum = true,
        .applied = applied,
        .storage = br_raftlog_storage(n->log),
        .log_fn = nd_sub_log,
        .log_ctx = n,
    };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc_cfg.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    rc = br_raft_new(&rc_cfg, &n->raft);
    if (rc < 0) {
        seterr(err, errlen, "node: raft core: %s", br_strerror(rc));
        return rc;
    }
    struct br_raft_status st;
    br_raft_get_status(n->raft, &st);
    n->applied = st.applied;
    atomic_store(&n->applied_pub, st.applied);
    n->compact_mark = st.applied;
    n->last_role = st.role;
    struct br_raft_conf_state conf;
    br_raft_get_conf(n->raft, &conf);
    nd_members_set_roles(n, &conf);
    nd_members_publish_self(n); /* whether or not the roles changed */
    if ((rc = nd_members_save(n, NULL)) < 0) {
        seterr(err, errlen, "node: writing %s/MEMBERS: %s", n->dir, br_strerror(rc));
        return rc;
    }
    return 0;
}

int br_node_open(const struct br_node_config *cfg, br_node **out, char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!cfg)
        return BR_EINVAL;
    br_node *n = calloc(1, sizeof(*n));
    if (!n)
        return BR_ENOMEM;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&n->engine_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->status_mu, NULL);
    pthread_mutex_init(&n->members_mu, NULL);
    for (int i = 0; i < BR_RAFT_MAX_MEMBERS; i++)
        n->snd[i].fd = -1;
    n->rcv.fd = -1;
    int rc = node_configure(n, cfg, err, errlen);
    if (rc == 0) {
        n->batch = br_batch_new();
        if (!n->batch)
            rc = BR_ENOMEM;
    }
    if (rc == 0)
        rc = open_storage(n, err, errlen);
    if (rc == 0) {
        rc = nd_loop_start(n);
        if (rc < 0)
            seterr(err, errlen, "node: cannot start (raft port %d): %s", cfg->listen_port,
                   br_strerror(rc));
    }
    if (rc < 0) {
        if (n->raft)
            br_raft_free(n->raft);
        br_raftlog_close(n->log);
        br_engine_close(n->engine);
        node_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* ------------------------------------------------------------ close */

int br_node_close(br_node *n) {
    if (!n)
        return 0;
    pthread_mutex_lock(&n->mu);
    n->closing = true;
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
    if (n->thread_started)
        pthread_join(n->thread, NULL);
    int rc = uv_loop_close(&n->loop);
    if (rc < 0)
        nd_log(n, BR_NODE_LOG_WARN, "loop closed with handles open: %s", uv_strerror(rc));
    br_raft_free(n->raft);
    int r1 = br_raftlog_close(n->log);
    int r2 = br_engine_close(n->engine);
    nd_rmtree(n->staging_dir);
    nd_log(n, BR_NODE_LOG_INFO, "closed");
    node_free(n);
    return r1 < 0 ? r1 : r2;
}

/* ------------------------------------------------------------ requests */

static int enqueue(br_node *n, struct nd_req *r) {
    int fatal = atomic_load(&n->fatal);
    if (fatal)
        return fatal;
    pthread_mutex_lock(&n->mu);
    if (n->closing) {
        pthread_mutex_unlock(&n->mu);
        return BR_ECLOSED;
    }
    if (n->q_tail)
        n->q_tail->next = r;
    else
        n->q_head = r;
    n->q_tail = r;
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
    return 0;
}

int nd_enqueue(br_node *n, struct nd_req *r) {
    return enqueue(n, r);
}

static int propose(br_node *n, uint8_t *cmd, size_t len, bool single_delete, br_node_done_fn cb,
                   void *ctx) {
    int rc = 0;
    if (atomic_load(&n->role) != BR_RAFT_LEADER)
        rc = BR_ENOTLEADER;
    else if (len > n->max_cmd)
        rc = BR_ETOOBIG;
    struct nd_req *r = NULL;
    if (rc == 0) {
        r = calloc(1, sizeof(*r));
        if (!r)
            rc = BR_ENOMEM;
    }
    if (rc == 0) {
        r->kind = ND_REQ_PROPOSE;
        r->data = cmd;
        r->len = len;
        r->single_delete = single_delete;
        r->cb = cb;
        r->ctx = ctx;
        rc = enqueue(n, r);
    }
    if (rc < 0) {
        free(cmd);
        free(r);
    }
    return rc;
}

static int check_sizes(br_node *n, size_t klen, size_t vlen) {
    if (klen == 0)
        return BR_EEMPTYKEY;
    if (klen > n->eopts.max_key_size)
        return BR_EKEYTOOBIG;
    if (vlen > n->eopts.max_value_size)
        return BR_EVALTOOBIG;
    return 0;
}

int br_node_put(br_node *n, const void *key, size_t klen, const void *val, size_t vlen,
                br_node_done_fn cb, void *ctx) {
    int rc = check_sizes(n, klen, vlen);
    if (rc < 0)
        return rc;
    if (atomic_load(&n->role) != BR_RAFT_LEADER)
        return BR_ENOTLEADER;
    uint8_t *cmd;
    size_t len;
    rc = nd_cmd_single(ND_OP_PUT, key, klen, val, vlen, &cmd, &len);
    if (rc < 0)
        return rc;
    return propose(n, cmd, len, false, cb, ctx);
}

int br_node_delete(br_node *n, const void *key, size_t klen, br_node_done_fn cb, void *ctx) {
    int rc = check_sizes(n, klen, 0);
    if (rc < 0)
        return rc;
    if (atomic_load(&n->role) != BR_RAFT_LEADER)
        return BR_ENOTLEADER;
    uint8_t *cmd;
    size_t len;
    rc = nd_cmd_single(ND_OP_DELETE, key, klen, NULL, 0, &cmd, &len);
    if (rc < 0)
        return rc;
    return propose(n, cmd, len, true, cb, ctx);
}

static int check_op(void *ctx, uint8_t kind, const void *key, size_t klen, const void *val,
                    size_t vlen) {
    return check_sizes(ctx, klen, vlen);
}

int br_node_write(br_node *n, const br_node_batch *b, br_node_done_fn cb, void *ctx) {
    if (atomic_load(&n->role) != BR_RAFT_LEADER)
        return BR_ENOTLEADER;
    uint8_t *cmd;
    size_t len;
    int rc = nd_cmd_from_batch(b, &cmd, &len);
    if (rc < 0)
        return rc;
    rc = nd_cmd_decode(cmd, len, check_op, n);
    if (rc < 0) {
        free(cmd);
        return rc;
    }
    return propose(n, cmd, len, false, cb, ctx);
}

int br_node_read_index(br_node *n, br_node_done_fn cb, void *ctx) {
    /* A node outside its configuration (removed, or not yet added) would be
     * refused by the leader: refuse now, without the round trip. */
    if (!atomic_load(&n->in_conf))
        return BR_ENOTLEADER;
    if (atomic_load(&n->role) != BR_RAFT_LEADER) {
        /* a follower forwards the request, if it knows a leader */
        pthread_mutex_lock(&n->status_mu);
        uint64_t leader = n->status.leader;
        pthread_mutex_unlock(&n->status_mu);
        if (leader == 0 || leader == n->id)
            return BR_ENOTLEADER;
    }
    struct nd_req *r = calloc(1, sizeof(*r));
    if (!r)
        return BR_ENOMEM;
    r->kind = ND_REQ_READ;
    r->cb = cb;
    r->ctx = ctx;
    int rc = enqueue(n, r);
    if (rc < 0)
        free(r);
    return rc;
}

int br_node_campaign(br_node *n) {
    struct nd_req *r = calloc(1, sizeof(*r));
    if (!r)
        return BR_ENOMEM;
    r->kind = ND_REQ_CAMPAIGN;
    int rc = enqueue(n, r);
    if (rc < 0)
        free(r);
    return rc;
}

/* ------------------------------------------------------------ reads, status */

br_engine *br_node_engine_acquire(br_node *n) {
    pthread_rwlock_rdlock(&n->engine_lock);
    if (!n->engine) {
        pthread_rwlock_unlock(&n->engine_lock);
        return NULL;
    }
    return n->engine;
}

void br_node_engine_release(br_node *n) {
    pthread_rwlock_unlock(&n->engine_lock);
}

void br_node_status_get(br_node *n, struct br_node_status *st) {
    pthread_mutex_lock(&n->status_mu);
    *st = n->status;
    pthread_mutex_unlock(&n->status_mu);
    st->fatal = atomic_load(&n->fatal);
    uint64_t a = atomic_load(&n->applied_pub);
    if (a > st->applied)
        st->applied = a;
}

void br_node_leader(br_node *n, uint64_t *id, char *host, size_t hostlen, uint16_t *raft_port,
                    char *client_addr, size_t addrlen) {
    pthread_mutex_lock(&n->status_mu);
    uint64_t l = n->status.leader;
    pthread_mutex_unlock(&n->status_mu);
    if (id)
        *id = l;
    pthread_mutex_lock(&n->members_mu);
    int s = l ? nd_member_slot(n, l) : -1;
    if (host && hostlen)
        snprintf(host, hostlen, "%s", s >= 0 ? n->members[s].host : "");
    if (raft_port)
        *raft_port = s >= 0 ? n->members[s].raft_port : 0;
    if (client_addr && addrlen)
        snprintf(client_addr, addrlen, "%s", s >= 0 ? n->members[s].client_addr : "");
    pthread_mutex_unlock(&n->members_mu);
}

uint16_t br_node_raft_port(const br_node *n) {
    return n->raft_port;
}
