/*
 * replicated.c - the service over a br_node (src/cluster/node.h): every
 * write is a Raft proposal, every read by default a linearizable read.
 *
 * Writes: br_node_put/delete/write; the callback comes on the node thread
 * once the entry is committed and applied here (or failed: BR_ENOTLEADER
 * if it never reached the log, BR_SERVICE_EUNKNOWN if leadership was lost
 * while it was pending). A node that is not the leader refuses at once
 * with BR_ENOTLEADER; the front end redirects (br_service_leader).
 *
 * Reads: a linearizable get or range first waits for br_node_read_index
 * (one heartbeat round, shared by the reads waiting at the same time);
 * its callback, on the node thread, then reads the engine (one index
 * lookup and one pread for a get; a range only makes its iterator).
 * br_service_read_barrier hands the read index callback to the caller
 * instead, which then reads with BR_SERVICE_STALE on its own thread (the
 * HTTP server's gets do: the node thread only wakes the connection). On a
 * follower the node asks the leader for the read index and the read is
 * served from the follower's engine once it has applied that far; a node
 * that knows no leader refuses with BR_ENOTLEADER (the front end answers
 * 503). A stale read reads the local engine on the caller's thread at
 * once.
 *
 * The engine can be swapped under us (a snapshot install), so every read
 * holds br_node_engine_acquire() only for the moment it touches the
 * engine: a range iterator fetches a chunk of entries under the lock,
 * releases it, and resumes after the last key it returned. A slow HTTP
 * client therefore never holds up the node thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "node.h"
#include "service_int.h"

_Static_assert(BR_RAFT_MAX_MEMBERS <= 16, "br_service_raft_stats.peers is too small");
_Static_assert(BR_SERVICE_EUNKNOWN == BR_NODE_ELOST, "one code for an unknown outcome");

typedef struct repl {
    br_service base; /* first: the table and the key mode */
    br_node *node;
    uint64_t id;
    pthread_rwlock_t gate;  /* read-held around calls into the node; close write-holds it */
    int closing;            /* under gate: new operations get BR_ECLOSED */
    atomic_ullong inflight; /* writes accepted, callback not yet returned */
    br_log_fn log;
    void *log_ctx;
} repl;

static const br_service_ops repl_ops;

/* One operation waiting for the node. */
typedef struct op {
    repl *r;
    int is_write;
    br_service_done_fn done;
    br_service_get_fn got;
    br_service_range_fn ranged;
    void *ctx;
    char *key; /* a get's key, or a range's start */
    size_t klen;
    int has_start;
    char *end; /* a range's end */
    size_t elen;
    int has_end;
    size_t limit;
} op;

static void op_free(op *o) {
    free(o->key);
    free(o->end);
    free(o);
}

static char *dup_bytes(const void *p, size_t n) {
    char *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

/* Takes the gate for a call into the node; BR_ECLOSED when closing. */
static int enter(repl *r) {
    pthread_rwlock_rdlock(&r->gate);
    if (r->closing) {
        pthread_rwlock_unlock(&r->gate);
        return BR_ECLOSED;
    }
    return 0;
}

static void leave(repl *r) {
    pthread_rwlock_unlock(&r->gate);
}

/* The code a read reports when the node has no engine. */
static int no_engine(repl *r) {
    struct br_node_status st;
    br_node_status_get(r->node, &st);
    return st.fatal ? st.fatal : BR_ECLOSED;
}

/* ---- Writes -------------------------------------------------------------- */

static void write_done(void *ctx, int rc) {
    op *o = ctx;
    repl *r = o->r;
    o->done(o->ctx, rc);
    op_free(o);
    atomic_fetch_sub(&r->inflight, 1);
}

/* Starts a write: a new op, the gate held and the write counted in
 * flight (write_done uncounts it). 0 with *out set, or BR_ENOMEM /
 * BR_ECLOSED with nothing held. */
static int begin_write(repl *r, br_service_done_fn cb, void *ctx, op **out) {
    op *o = calloc(1, sizeof *o);
    if (!o)
        return BR_ENOMEM;
    o->r = r;
    o->is_write = 1;
    o->done = cb;
    o->ctx = ctx;
    int rc = enter(r);
    if (rc) {
        op_free(o);
        return rc;
    }
    atomic_fetch_add(&r->inflight, 1);
    *out = o;
    return 0;
}

/* Ends begin_write with the node's answer: 0 (the callback will come) or
 * a refusal (the op is uncounted and freed). Returns rc. */
static int end_write(repl *r, op *o, int rc) {
    if (rc) {
        atomic_fetch_sub(&r->inflight, 1);
        op_free(o);
    }
    leave(r);
    return rc;
}

static int rp_put(br_service *bs, const void *key, size_t klen, const void *val, size_t vlen,
                  br_service_done_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    op *o;
    int rc = begin_write(r, cb, ctx, &o);
    return rc ? rc : end_write(r, o, br_node_put(r->node, key, klen, val, vlen, write_done, o));
}

static int rp_delete(br_service *bs, const void *key, size_t klen, br_service_done_fn cb,
                     void *ctx) {
    repl *r = (repl *)bs;
    op *o;
    int rc = begin_write(r, cb, ctx, &o);
    return rc ? rc : end_write(r, o, br_node_delete(r->node, key, klen, write_done, o));
}

static void *rp_batch_new(br_service *s) {
    (void)s;
    return br_node_batch_new();
}

static int rp_batch_put(void *b, const void *key, size_t klen, const void *val, size_t vlen) {
    return br_node_batch_put(b, key, klen, val, vlen);
}

static int rp_batch_delete(void *b, const void *key, size_t klen) {
    return br_node_batch_delete(b, key, klen);
}

static void rp_batch_free(void *b) {
    br_node_batch_free(b);
}

static int rp_write(br_service *bs, void *b, br_service_done_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    op *o;
    int rc = begin_write(r, cb, ctx, &o);
    return rc ? rc : end_write(r, o, br_node_write(r->node, b, write_done, o));
}

/* ---- Gets ---------------------------------------------------------------- */

/* Reads key from the engine now (the caller holds whatever barrier it
 * needs) and completes the get. */
static void get_now(repl *r, const void *key, size_t klen, br_service_get_fn cb, void *ctx) {
    void *val = NULL;
    size_t vlen = 0;
    int rc;
    br_engine *e = br_node_engine_acquire(r->node);
    if (!e) {
        rc = no_engine(r);
    } else {
        rc = br_engine_get(e, key, klen, &val, &vlen);
        br_node_engine_release(r->node);
    }
    cb(ctx, rc, rc ? NULL : val, rc ? 0 : vlen);
}

static void get_barrier_done(void *ctx, int rc) {
    op *o = ctx;
    if (rc == 0)
        get_now(o->r, o->key, o->klen, o->got, o->ctx);
    else
        o->got(o->ctx, rc, NULL, 0);
    op_free(o);
}

static int rp_get(br_service *bs, const void *key, size_t klen, unsigned flags,
                  br_service_get_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    if (flags & BR_SERVICE_STALE) {
        get_now(r, key, klen, cb, ctx);
        return 0;
    }
    op *o = calloc(1, sizeof *o);
    if (!o || !(o->key = dup_bytes(key, klen))) {
        free(o);
        return BR_ENOMEM;
    }
    o->r = r;
    o->klen = klen;
    o->got = cb;
    o->ctx = ctx;
    int rc = enter(r);
    if (rc == 0) {
        rc = br_node_read_index(r->node, get_barrier_done, o);
        leave(r);
    }
    if (rc)
        op_free(o);
    return rc;
}

/* The node's read index callback goes straight to the caller's: no state
 * of our own, and the caller reads the store on its own thread. */
static int rp_read_barrier(br_service *bs, br_service_done_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    int rc = enter(r);
    if (rc == 0) {
        rc = br_node_read_index(r->node, cb, ctx);
        leave(r);
    }
    return rc;
}

/* ---- Ranges -------------------------------------------------------------- */

/* Entries fetched per visit to the engine: small enough to hold the engine
 * lock for a moment, large enough that the lock is rarely taken. */
#define CHUNK_ENTRIES 256
#define CHUNK_BYTES   (1u << 20)

typedef struct rp_iter {
    br_service_iter base;
    repl *r;
    char *start; /* where the next fetch starts (the last key returned) */
    size_t slen;
    int has_start;
    int skip_start; /* the next fetch skips start itself (already returned) */
    char *end;
    size_t elen;
    int has_end;
    size_t left; /* entries still allowed by the limit */
    int limited;
    int eof; /* the engine has no more */
    /* The fetched chunk: per entry u64 klen, u64 vlen, key, value. */
    char *buf;
    size_t len, cap, pos;
} rp_iter;

static int buf_add(rp_iter *it, const void *p, size_t n) {
    if (it->cap - it->len < n) {
        size_t c = it->cap ? it->cap : 4096;
        while (c - it->len < n)
            c *= 2;
        char *nb = realloc(it->buf, c);
        if (!nb)
            return BR_ENOMEM;
        it->buf = nb;
        it->cap = c;
    }
    memcpy(it->buf + it->len, p, n);
    it->len += n;
    return 0;
}

/* Fetches the next chunk under the engine lock. */
static int fetch(rp_iter *it) {
    it->len = it->pos = 0;
    size_t want = CHUNK_ENTRIES;
    if (it->limited && it->left < want)
        want = it->left;
    if (want == 0) {
        it->eof = 1;
        return 0;
    }
    br_engine *e = br_node_engine_acquire(it->r->node);
    if (!e)
        return no_engine(it->r);
    /* The engine iterator's limit is want plus the start key when it is to
     * be skipped, so it ends early (n == 0 before want entries) only at
     * the true end of the range. */
    br_iter *ei = NULL;
    int rc =
        br_engine_iter(e, it->has_start ? it->start : NULL, it->slen, it->has_end ? it->end : NULL,
                       it->elen, want + (it->skip_start != 0), &ei);
    size_t got = 0;
    const void *k, *v;
    size_t kl, vl;
    char *last = NULL;
    size_t lastlen = 0;
    while (rc == 0) {
        int n = br_iter_next(ei, &k, &kl, &v, &vl);
        if (n < 0) {
            rc = n;
            break;
        }
        if (n == 0) {
            it->eof = 1;
            break;
        }
        if (it->skip_start && kl == it->slen && memcmp(k, it->start, kl) == 0)
            continue;
        uint64_t hdr[2] = {kl, vl};
        if (buf_add(it, hdr, sizeof hdr) || buf_add(it, k, kl) || buf_add(it, v, vl)) {
            rc = BR_ENOMEM;
            break;
        }
        last = it->buf + it->len - vl - kl;
        lastlen = kl;
        if (++got == want || it->len >= CHUNK_BYTES)
            break;
    }
    br_iter_free(ei);
    br_node_engine_release(it->r->node);
    if (rc)
        return rc;
    if (last) {
        char *ns = dup_bytes(last, lastlen);
        if (!ns)
            return BR_ENOMEM;
        free(it->start);
        it->start = ns;
        it->slen = lastlen;
        it->has_start = 1;
        it->skip_start = 1;
    }
    if (it->limited)
        it->left -= got;
    return 0;
}

static int rp_iter_next(br_service_iter *bi, const void **key, size_t *klen, const void **val,
                        size_t *vlen) {
    rp_iter *it = (rp_iter *)bi;
    if (it->pos >= it->len) {
        if (it->eof)
            return 0;
        int rc = fetch(it);
        if (rc)
            return rc;
        if (it->pos >= it->len)
            return 0;
    }
    uint64_t hdr[2];
    memcpy(hdr, it->buf + it->pos, sizeof hdr);
    it->pos += sizeof hdr;
    *key = it->buf + it->pos;
    *klen = (size_t)hdr[0];
    it->pos += (size_t)hdr[0];
    *val = it->buf + it->pos;
    *vlen = (size_t)hdr[1];
    it->pos += (size_t)hdr[1];
    return 1;
}

static void rp_iter_free(br_service_iter *bi) {
    rp_iter *it = (rp_iter *)bi;
    free(it->start);
    free(it->end);
    free(it->buf);
    free(it);
}

static const br_service_iter_ops rp_iter_ops = {rp_iter_next, rp_iter_free};

static void range_now(repl *r, op *o) {
    rp_iter *it = calloc(1, sizeof *it);
    if (!it) {
        o->ranged(o->ctx, BR_ENOMEM, NULL);
        return;
    }
    it->base.ops = &rp_iter_ops;
    it->r = r;
    it->start = o->key, o->key = NULL;
    it->slen = o->klen;
    it->has_start = o->has_start;
    it->end = o->end, o->end = NULL;
    it->elen = o->elen;
    it->has_end = o->has_end;
    it->left = o->limit;
    it->limited = o->limit != 0;
    o->ranged(o->ctx, 0, &it->base);
}

static void range_barrier_done(void *ctx, int rc) {
    op *o = ctx;
    if (rc == 0)
        range_now(o->r, o);
    else
        o->ranged(o->ctx, rc, NULL);
    op_free(o);
}

static int rp_range(br_service *bs, const void *start, size_t slen, const void *end, size_t elen,
                    size_t limit, unsigned flags, br_service_range_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    op *o = calloc(1, sizeof *o);
    if (!o)
        return BR_ENOMEM;
    o->r = r;
    o->ranged = cb;
    o->ctx = ctx;
    o->limit = limit;
    o->has_start = start != NULL;
    o->has_end = end != NULL;
    if ((start && !(o->key = dup_bytes(start, slen))) ||
        (end && !(o->end = dup_bytes(end, elen)))) {
        op_free(o);
        return BR_ENOMEM;
    }
    o->klen = start ? slen : 0;
    o->elen = end ? elen : 0;
    if (flags & BR_SERVICE_STALE) {
        range_now(r, o);
        op_free(o);
        return 0;
    }
    int rc = enter(r);
    if (rc == 0) {
        rc = br_node_read_index(r->node, range_barrier_done, o);
        leave(r);
    }
    if (rc)
        op_free(o);
    return rc;
}

/* ---- Status, life cycle -------------------------------------------------- */

static int rp_reads_inline(const br_service *s, unsigned flags) {
    (void)s;
    return (flags & BR_SERVICE_STALE) != 0;
}

static int rp_writes_inline(const br_service *s) {
    (void)s;
    return 0;
}

static void rp_leader(br_service *bs, uint64_t *self, uint64_t *leader, char *addr,
                      size_t addrlen) {
    repl *r = (repl *)bs;
    if (self)
        *self = r->id;
    uint64_t l = 0;
    br_node_leader(r->node, &l, NULL, 0, NULL, addr, addrlen);
    if (leader)
        *leader = l;
}

static const char *role_name(int role) {
    switch (role) {
    case BR_RAFT_LEADER:
        return "leader";
    case BR_RAFT_CANDIDATE:
        return "candidate";
    case BR_RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    default:
        return "follower";
    }
}

static size_t rp_members(br_service *bs, br_service_member_info *out, size_t cap);

static void rp_stats(br_service *bs, br_service_stats *st) {
    repl *r = (repl *)bs;
    memset(st, 0, sizeof *st);
    st->mode = "cluster";
    st->key_mode = r->base.key_mode;
    st->cluster = 1;
    br_engine *e = br_node_engine_acquire(r->node);
    if (e) {
        br_engine_stats_get(e, &st->engine);
        br_node_engine_release(r->node);
    }
    st->writes_inflight = atomic_load(&r->inflight);
    struct br_node_status ns;
    br_node_status_get(r->node, &ns);
    br_service_raft_stats *rs = &st->raft;
    rs->id = ns.id;
    rs->role = role_name(ns.role);
    rs->is_leader = ns.role == BR_RAFT_LEADER;
    rs->term = ns.term;
    rs->leader = ns.leader;
    br_node_leader(r->node, NULL, NULL, 0, NULL, rs->leader_addr, sizeof rs->leader_addr);
    rs->commit = ns.commit;
    rs->applied = ns.applied;
    rs->last_index = ns.last_index;
    rs->first_index = ns.first_index;
    rs->snapshot_index = ns.snapshot_index;
    rs->fatal = ns.fatal;
    rs->n_peers = ns.n_peers;
    for (size_t i = 0; i < ns.n_peers && i < 16; i++) {
        rs->peers[i].id = ns.peers[i].id;
        rs->peers[i].match = ns.peers[i].match;
        rs->peers[i].next = ns.peers[i].next;
        rs->peers[i].connected = ns.peers[i].connected;
        rs->peers[i].snapshotting = ns.peers[i].snapshotting;
    }
    br_service_member_info ms[BR_RAFT_MAX_MEMBERS];
    size_t nm = rp_members(bs, ms, BR_RAFT_MAX_MEMBERS);
    rs->membership = "none";
    for (size_t i = 0; i < nm && i < BR_RAFT_MAX_MEMBERS; i++)
        if (ms[i].id == ns.id)
            rs->membership = ms[i].role;
    rs->proposals = ns.proposals;
    rs->syncs = ns.syncs;
    rs->snapshots_sent = ns.snapshots_sent;
    rs->snapshots_installed = ns.snapshots_installed;
}

static int rp_compact(br_service *bs, uint32_t min_dead_pct) {
    repl *r = (repl *)bs;
    br_engine *e = br_node_engine_acquire(r->node);
    if (!e)
        return no_engine(r);
    int rc = br_engine_compact_start(e, min_dead_pct);
    br_node_engine_release(r->node);
    return rc;
}

/* ---- Membership ------------------------------------------------------------ */

static size_t rp_members(br_service *bs, br_service_member_info *out, size_t cap) {
    repl *r = (repl *)bs;
    struct br_node_member_info m[BR_RAFT_MAX_MEMBERS];
    size_t k = br_node_members(r->node, m, BR_RAFT_MAX_MEMBERS);
    for (size_t i = 0; i < k && i < cap; i++) {
        out[i] = (br_service_member_info){
            .id = m[i].id,
            .role = m[i].role == BR_NODE_VOTER     ? "voter"
                    : m[i].role == BR_NODE_LEARNER ? "learner"
                                                   : "none",
            .promote = m[i].promote,
            .raft_port = m[i].raft_port,
        };
        memcpy(out[i].host, m[i].host, sizeof out[i].host);
        memcpy(out[i].client_addr, m[i].client_addr, sizeof out[i].client_addr);
    }
    return k;
}

static int rp_add_member(br_service *bs, const br_service_member *m, int learner,
                         br_service_done_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    struct br_node_member nm = {
        .id = m->id, .host = m->host, .raft_port = m->raft_port, .client_addr = m->client_addr};
    op *o;
    int rc = begin_write(r, cb, ctx, &o);
    return rc ? rc
              : end_write(r, o,
                          br_node_add_member(r->node, &nm, learner ? BR_NODE_ADD_LEARNER : 0,
                                             write_done, o));
}

static int rp_remove_member(br_service *bs, uint64_t id, br_service_done_fn cb, void *ctx) {
    repl *r = (repl *)bs;
    op *o;
    int rc = begin_write(r, cb, ctx, &o);
    return rc ? rc : end_write(r, o, br_node_remove_member(r->node, id, write_done, o));
}

static int rp_close(br_service *bs) {
    repl *r = (repl *)bs;
    pthread_rwlock_wrlock(&r->gate);
    r->closing = 1;
    pthread_rwlock_unlock(&r->gate);
    /* Fails every pending proposal and read (BR_ECLOSED) on the node
     * thread before it returns, so no callback runs after this. */
    int rc = br_node_close(r->node);
    pthread_rwlock_destroy(&r->gate);
    free(r);
    return rc;
}

/* The node's log levels (debug 0 .. error 3) to the service's. */
static void node_log(void *ctx, int level, const char *msg) {
    repl *r = ctx;
    br_log_level l = level >= BR_NODE_LOG_ERROR  ? BR_LOG_ERROR
                     : level == BR_NODE_LOG_WARN ? BR_LOG_WARN
                     : level == BR_NODE_LOG_INFO ? BR_LOG_INFO
                                                 : BR_LOG_DEBUG;
    r->log(r->log_ctx, l, msg);
}

static int exists(const char *dir, const char *name) {
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

int br_service_open_replicated(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, const br_service_cluster_options *co,
                               br_service **out, char *err, size_t errlen) {
    *out = NULL;
    br_service_options dflt;
    if (!so) {
        br_service_options_init(&dflt);
        so = &dflt;
    }
    if (!co || !co->members || co->n_members == 0 || co->n_members > BR_RAFT_MAX_MEMBERS) {
        if (err && errlen)
            snprintf(err, errlen, "a cluster needs 1..%d members", BR_RAFT_MAX_MEMBERS);
        return BR_EINVAL;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        int rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", dir, br_strerror(rc));
        return rc;
    }
    repl *r = calloc(1, sizeof *r);
    struct br_node_member *m = calloc(co->n_members, sizeof *m);
    if (!r || !m) {
        free(r);
        free(m);
        return BR_ENOMEM;
    }
    r->base.ops = &repl_ops;
    r->id = co->id;
    r->log = co->log;
    r->log_ctx = co->log_ctx;
    pthread_rwlock_init(&r->gate, NULL);
    /* The key mode is decided before the node creates anything: a
     * directory with neither a raft log nor an engine is new. */
    int has_data = exists(dir, "raft") || exists(dir, "data");
    int rc = br_service_key_mode_load(dir, so->int_keys, has_data, &r->base.key_mode, err, errlen);
    if (rc)
        goto fail;
    for (size_t i = 0; i < co->n_members; i++) {
        m[i].id = co->members[i].id;
        m[i].host = co->members[i].host;
        m[i].raft_port = co->members[i].raft_port;
        m[i].client_addr = co->members[i].client_addr;
    }
    struct br_node_config nc;
    br_node_config_init(&nc);
    nc.id = co->id;
    nc.members = m;
    nc.n_members = co->n_members;
    nc.listen_host = co->listen_host;
    nc.listen_port = co->listen_port;
    nc.cluster_token = co->token;
    nc.dir = dir;
    nc.tick_ms = co->tick_ms;
    nc.election_ticks = co->election_ticks;
    nc.heartbeat_ticks = co->heartbeat_ticks;
    nc.compact_every = co->snapshot_every;
    nc.compact_tail = co->snapshot_keep;
    nc.join = co->join != 0;
    nc.engine = eo;
    if (co->log) {
        nc.log_fn = node_log;
        nc.log_ctx = r;
        nc.log_level = co->log_level >= BR_LOG_DEBUG  ? BR_NODE_LOG_DEBUG
                       : co->log_level == BR_LOG_INFO ? BR_NODE_LOG_INFO
                       : co->log_level == BR_LOG_WARN ? BR_NODE_LOG_WARN
                                                      : BR_NODE_LOG_ERROR;
    }
    rc = br_node_open(&nc, &r->node, err, errlen);
    if (rc)
        goto fail;
    free(m);
    *out = &r->base;
    return 0;
fail:
    free(m);
    pthread_rwlock_destroy(&r->gate);
    free(r);
    return rc;
}

static const br_service_ops repl_ops = {
    .mode = "cluster",
    .reads_inline = rp_reads_inline,
    .writes_inline = rp_writes_inline,
    .leader = rp_leader,
    .get = rp_get,
    .read_barrier = rp_read_barrier,
    .put = rp_put,
    .del = rp_delete,
    .batch_new = rp_batch_new,
    .batch_put = rp_batch_put,
    .batch_delete = rp_batch_delete,
    .batch_free = rp_batch_free,
    .write = rp_write,
    .range = rp_range,
    .stats = rp_stats,
    .compact = rp_compact,
    .members = rp_members,
    .add_member = rp_add_member,
    .remove_member = rp_remove_member,
    .close = rp_close,
};
