/*
 * sim.c - the simulated cluster and its safety checker (see sim.h).
 *
 * The checker keeps "ghost" state no real node could see:
 *   leader_of[term]      the node that led each term (election safety)
 *   lm (index, term)     -> prefix hash: two logs holding an entry with the
 *                        same index and term hold the same prefix (log
 *                        matching). Each node's shadow log keeps, per index,
 *                        the term and the hash of the whole log up to it.
 *   committed[index]     term and prefix hash of the committed entry, fed
 *                        from every node's persisted commit index; a
 *                        node's log must agree with it up to its commit
 *                        index, and a new leader's log must hold the
 *                        highest committed index (leader completeness).
 *   sm_at[index]         state-machine hash after applying index, from
 *                        every node that applies it or installs a
 *                        snapshot there (state machine safety).
 */
#include "sim.h"

#include "bitraft/error.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---------------------------------------------------------------- helpers */

struct u64v {
    uint64_t *v;
    size_t n;
};

static void v_set(struct u64v *a, size_t i, uint64_t x) {
    if (i >= a->n) {
        size_t n = a->n ? a->n : 64;
        while (n <= i)
            n *= 2;
        uint64_t *v = realloc(a->v, n * sizeof(*v));
        if (!v)
            abort();
        memset(v + a->n, 0, (n - a->n) * sizeof(*v));
        a->v = v;
        a->n = n;
    }
    a->v[i] = x;
}

static uint64_t v_get(const struct u64v *a, size_t i) {
    return i < a->n ? a->v[i] : 0;
}

static void v_free(struct u64v *a) {
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t s = a ^ (b * 0x9e3779b97f4a7c15ULL);
    return splitmix(&s) | 1;
}

#define PREFIX_BOOT 0x5eed0001ULL
#define SM_BOOT     0x5eed0003ULL

/* (index, term) -> prefix hash, open addressing. */
struct lm_slot {
    uint64_t index, term, prefix;
};
struct lm_map {
    struct lm_slot *s;
    size_t cap, n;
};

static size_t lm_pos(const struct lm_map *m, uint64_t index, uint64_t term) {
    uint64_t h = mix(index, term);
    size_t i = (size_t)h & (m->cap - 1);
    while (m->s[i].index != 0 && (m->s[i].index != index || m->s[i].term != term))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void lm_grow(struct lm_map *m) {
    struct lm_map n = {.cap = m->cap ? m->cap * 2 : 1024};
    n.s = calloc(n.cap, sizeof(*n.s));
    if (!n.s)
        abort();
    for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].index) {
            n.s[lm_pos(&n, m->s[i].index, m->s[i].term)] = m->s[i];
            n.n++;
        }
    free(m->s);
    *m = n;
}

/* Returns the recorded prefix, recording `prefix` if none was. */
static uint64_t lm_check(struct lm_map *m, uint64_t index, uint64_t term, uint64_t prefix) {
    if ((m->n + 1) * 2 > m->cap)
        lm_grow(m);
    size_t i = lm_pos(m, index, term);
    if (m->s[i].index == 0) {
        m->s[i] = (struct lm_slot){index, term, prefix};
        m->n++;
    }
    return m->s[i].prefix;
}

/* ---------------------------------------------------------------- stats */

static struct sim_stats g_stats;

void sim_stats_get(struct sim_stats *out) {
    *out = g_stats;
}

/* ---------------------------------------------------------------- state */

struct sim_node {
    int id;
    bool exists, up;
    bool retired; /* its removal was proposed: not to be added again */
    br_raft *r;
    br_raft_memstorage *ms;
    /* state machine, persisted with its applied index and configuration */
    uint64_t sm_applied, sm_hash;
    struct br_raft_conf_state sm_conf;
    /* the snapshot the storage advertises, and its content */
    uint64_t snap_index, snap_hash;
    /* content of the last snapshot received (streamed by the "driver") */
    bool stash;
    uint64_t stash_index, stash_hash;
    /* shadow of the persisted log */
    struct u64v sh_term, sh_prefix;
    uint64_t sh_last;
    uint64_t checked_commit;
    uint64_t led_term; /* last term we saw this node lead */
    /* clock */
    uint32_t period;
    uint64_t next_tick;
    uint64_t restarts;
    /* snapshots the network dropped at send time, reported after advance */
    uint64_t snap_failed[SIM_MAX_NODES];
    int n_snap_failed;
    /* reads released */
    size_t reads_done;
    uint64_t last_read_index;
};

struct sim_msg {
    uint64_t at, seq;
    int from, to;
    uint32_t type;
    bool corrupted;
    uint8_t *buf;
    size_t len;
    uint64_t snap_hash;
};

struct pending_read {
    uint64_t ctx;
    int node;
    uint64_t min_index;
};

struct sim {
    struct sim_config cfg;
    int n; /* nodes 1..n exist */
    struct sim_node nodes[SIM_MAX_NODES + 1];
    uint64_t now, rng, seq;
    struct sim_msg *q;
    size_t nq, capq;
    bool cut[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1];
    /* network faults (random mode) */
    uint32_t drop_pm, dup_pm, corrupt_pm; /* per mille */
    uint32_t delay_min, delay_max;
    uint32_t compact_pm;
    uint32_t crash_mid_pm; /* leader crashes between sending and persisting */
    /* checker */
    struct u64v leader_of;
    struct lm_map lm;
    struct u64v c_term, c_prefix, sm_at;
    uint64_t gmax; /* highest index known committed */
    bool failed;
    char err[512];
    /* workload */
    uint64_t next_prop;
    uint64_t next_ctx;
    struct pending_read *reads;
    size_t n_reads, cap_reads;
    uint64_t delivered[16];
    /* nodes whose removal was applied somewhere: shut down for good */
    int decommission[SIM_MAX_NODES];
    uint64_t decommission_at[SIM_MAX_NODES];
    size_t n_decommission;
    bool membership; /* random schedules change membership */
    bool churn;      /* faults mostly hit the leader */
};

static void failf(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void failf(struct sim *s, const char *fmt, ...) {
    if (s->failed)
        return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(s->err, sizeof(s->err), "t=%" PRIu64 ": ", s->now);
    if (n > 0 && (size_t)n < sizeof(s->err))
        vsnprintf(s->err + n, sizeof(s->err) - (size_t)n, fmt, ap);
    va_end(ap);
    if (s->cfg.trace)
        fprintf(stderr, "FAIL %s\n", s->err);
}

static void tracef(const struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tracef(const struct sim *s, const char *fmt, ...) {
    if (!s->cfg.trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%6" PRIu64 "] ", s->now);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void log_cb(void *ctx, int level, const char *msg) {
    struct sim *s = ctx;
    (void)level;
    tracef(s, "  %s", msg);
}

static uint64_t rnd(struct sim *s, uint64_t n) {
    return n ? splitmix(&s->rng) % n : 0;
}

static bool chance_pm(struct sim *s, uint32_t pm) {
    return pm > 0 && rnd(s, 1000) < pm;
}

const char *sim_error(const struct sim *s) {
    return s->failed ? s->err : NULL;
}

/* ---------------------------------------------------------------- nodes */

static int node_start(struct sim *s, struct sim_node *nd) {
    struct br_raft_config c = {
        .id = (uint64_t)nd->id,
        .election_tick = s->cfg.election_tick,
        .heartbeat_tick = s->cfg.heartbeat_tick,
        .seed = s->cfg.seed * 1000003u + (uint64_t)nd->id * 7919u + nd->restarts,
        .max_msg_bytes = s->cfg.max_msg_bytes,
        .max_inflight = s->cfg.max_inflight,
        .pre_vote = s->cfg.pre_vote,
        .check_quorum = s->cfg.check_quorum,
        .applied = nd->sm_applied,
        .storage = br_raft_memstorage_storage(nd->ms),
        .log_fn = s->cfg.trace ? log_cb : NULL,
        .log_ctx = s,
    };
    int rc = br_raft_new(&c, &nd->r);
    if (rc < 0) {
        failf(s, "node %d failed to start: %s", nd->id, br_strerror(rc));
        return rc;
    }
    nd->up = true;
    return 0;
}

static void shadow_reset_to(struct sim_node *nd, uint64_t index, uint64_t term, uint64_t prefix) {
    v_set(&nd->sh_term, index, term);
    v_set(&nd->sh_prefix, index, prefix);
    nd->sh_last = index;
}

struct sim *sim_new(const struct sim_config *cfg) {
    if (cfg->n < 1 || cfg->n > SIM_MAX_NODES || cfg->n_learners >= cfg->n)
        return NULL;
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cfg = *cfg;
    if (!s->cfg.election_tick)
        s->cfg.election_tick = 10;
    if (!s->cfg.heartbeat_tick)
        s->cfg.heartbeat_tick = 1;
    s->rng = cfg->seed ^ 0xabcdef12345ULL;
    s->n = cfg->n;
    struct br_raft_conf_state conf;
    memset(&conf, 0, sizeof(conf));
    for (int i = 1; i <= cfg->n; i++) {
        if (i <= cfg->n - cfg->n_learners)
            conf.voters[conf.n_voters++] = (uint64_t)i;
        else
            conf.learners[conf.n_learners++] = (uint64_t)i;
    }
    v_set(&s->c_term, 1, 1);
    v_set(&s->c_prefix, 1, PREFIX_BOOT);
    v_set(&s->sm_at, 1, SM_BOOT);
    s->gmax = 1;
    for (int i = 1; i <= cfg->n; i++) {
        struct sim_node *nd = &s->nodes[i];
        nd->id = i;
        nd->exists = true;
        nd->period = 10;
        if (br_raft_memstorage_new(&nd->ms) < 0 || br_raft_memstorage_bootstrap(nd->ms, &conf) < 0)
            abort();
        nd->sm_applied = 1;
        nd->sm_hash = SM_BOOT;
        nd->sm_conf = conf;
        nd->snap_index = 1;
        nd->snap_hash = SM_BOOT;
        nd->checked_commit = 1;
        shadow_reset_to(nd, 1, 1, PREFIX_BOOT);
        if (node_start(s, nd) < 0) {
            sim_free(s);
            return NULL;
        }
    }
    return s;
}

int sim_add_node(struct sim *s) {
    if (s->n >= SIM_MAX_NODES)
        return -1;
    int id = ++s->n;
    struct sim_node *nd = &s->nodes[id];
    memset(nd, 0, sizeof(*nd));
    nd->id = id;
    nd->exists = true;
    nd->period = 10;
    nd->next_tick = s->now + 1;
    if (br_raft_memstorage_new(&nd->ms) < 0)
        abort();
    if (node_start(s, nd) < 0)
        return -1;
    tracef(s, "node %d added", id);
    return id;
}

void sim_free(struct sim *s) {
    if (!s)
        return;
    for (int i = 1; i <= s->n; i++) {
        struct sim_node *nd = &s->nodes[i];
        br_raft_free(nd->r);
        br_raft_memstorage_free(nd->ms);
        v_free(&nd->sh_term);
        v_free(&nd->sh_prefix);
    }
    for (size_t i = 0; i < s->nq; i++)
        free(s->q[i].buf);
    free(s->q);
    free(s->reads);
    v_free(&s->leader_of);
    v_free(&s->c_term);
    v_free(&s->c_prefix);
    v_free(&s->sm_at);
    free(s->lm.s);
    free(s);
}

br_raft *sim_raft(struct sim *s, int id) {
    if (id < 1 || id > s->n || !s->nodes[id].up)
        return NULL;
    return s->nodes[id].r;
}

void sim_status(struct sim *s, int id, struct br_raft_status *st) {
    memset(st, 0, sizeof(*st));
    br_raft *r = sim_raft(s, id);
    if (r)
        br_raft_get_status(r, st);
}

uint64_t sim_applied(struct sim *s, int id) {
    return s->nodes[id].sm_applied;
}

uint64_t sim_sm_hash(struct sim *s, int id) {
    return s->nodes[id].sm_hash;
}

size_t sim_reads_done(struct sim *s, int id) {
    return s->nodes[id].reads_done;
}

uint64_t sim_last_read_index(struct sim *s, int id) {
    return s->nodes[id].last_read_index;
}

uint64_t sim_delivered(const struct sim *s, uint32_t type) {
    return type < 16 ? s->delivered[type] : 0;
}

/* ---------------------------------------------------------------- checks */

static void check_leaders(struct sim *s) {
    for (int i = 1; i <= s->n; i++) {
        struct sim_node *nd = &s->nodes[i];
        if (!nd->up)
            continue;
        struct br_raft_status st;
        br_raft_get_status(nd->r, &st);
        if (st.role != BR_RAFT_LEADER)
            continue;
        /* Election safety: at most one leader per term. */
        uint64_t prev = v_get(&s->leader_of, st.term);
        if (prev != 0 && prev != (uint64_t)i) {
            failf(s, "election safety: nodes %" PRIu64 " and %d both lead term %" PRIu64, prev, i,
                  st.term);
            return;
        }
        v_set(&s->leader_of, st.term, (uint64_t)i);
        if (nd->led_term != st.term) {
            g_stats.elections++;
            /* Leader completeness, checked when a node starts leading: its
             * log holds the highest committed entry (so, by log matching,
             * every committed entry). */
            nd->led_term = st.term;
            uint64_t g = s->gmax;
            if (nd->sh_last < g || v_get(&nd->sh_prefix, g) != v_get(&s->c_prefix, g)) {
                failf(s,
                      "leader completeness: leader %d of term %" PRIu64
                      " lacks committed index %" PRIu64 " (its last %" PRIu64 ")",
                      i, st.term, g, nd->sh_last);
                return;
            }
        }
    }
}

static void shadow_append(struct sim *s, struct sim_node *nd, const struct br_raft_entry *e) {
    if (e->index == 0 || e->index > nd->sh_last + 1) {
        failf(s, "node %d persisted entry %" PRIu64 " after last %" PRIu64, nd->id, e->index,
              nd->sh_last);
        return;
    }
    uint64_t before = v_get(&nd->sh_prefix, e->index - 1);
    if (before == 0) {
        failf(s, "node %d has no prefix before %" PRIu64, nd->id, e->index);
        return;
    }
    uint64_t h = mix(mix(before, e->term), XXH3_64bits(e->data, e->len) ^ e->type);
    v_set(&nd->sh_term, e->index, e->term);
    v_set(&nd->sh_prefix, e->index, h);
    nd->sh_last = e->index;
    /* Log matching: same index and term => same prefix. */
    if (lm_check(&s->lm, e->index, e->term, h) != h)
        failf(s,
              "log matching: node %d's entry %" PRIu64 " term %" PRIu64
              " has a different history than another node's",
              nd->id, e->index, e->term);
}

static void check_commit(struct sim *s, struct sim_node *nd, uint64_t commit) {
    if (commit > nd->sh_last) {
        failf(s, "node %d commit %" PRIu64 " beyond its persisted log %" PRIu64, nd->id, commit,
              nd->sh_last);
        return;
    }
    for (uint64_t i = nd->checked_commit + 1; i <= commit; i++) {
        uint64_t t = v_get(&nd->sh_term, i), p = v_get(&nd->sh_prefix, i);
        uint64_t ct = v_get(&s->c_term, i);
        if (ct == 0) {
            v_set(&s->c_term, i, t);
            v_set(&s->c_prefix, i, p);
        } else if (ct != t || v_get(&s->c_prefix, i) != p) {
            failf(s,
                  "committed entry %" PRIu64 " differs on node %d (term %" PRIu64 " vs %" PRIu64
                  ")",
                  i, nd->id, t, ct);
            return;
        }
    }
    if (commit > nd->checked_commit)
        nd->checked_commit = commit;
    if (commit > s->gmax)
        s->gmax = commit;
}

static void check_sm(struct sim *s, struct sim_node *nd) {
    uint64_t want = v_get(&s->sm_at, nd->sm_applied);
    if (want == 0)
        v_set(&s->sm_at, nd->sm_applied, nd->sm_hash);
    else if (want != nd->sm_hash)
        failf(s, "state machine safety: node %d applied a different entry at %" PRIu64, nd->id,
              nd->sm_applied);
}

/* ---------------------------------------------------------------- network */

static void enqueue(struct sim *s, int from, const struct br_raft_msg *m, uint64_t delay,
                    bool corrupt, uint64_t snap_hash) {
    size_t len = br_raft_encoded_size(m);
    uint8_t *buf = malloc(len);
    if (!buf)
        abort();
    long rc = br_raft_encode(m, buf, len);
    if (rc != (long)len) {
        failf(s, "encode of %s failed: %ld", br_raft_msg_type_name(m->type), rc);
        free(buf);
        return;
    }
    if (corrupt)
        buf[rnd(s, len)] ^= (uint8_t)(1u << rnd(s, 8));
    if (s->nq == s->capq) {
        s->capq = s->capq ? s->capq * 2 : 64;
        s->q = realloc(s->q, s->capq * sizeof(*s->q));
        if (!s->q)
            abort();
    }
    s->q[s->nq++] = (struct sim_msg){.at = s->now + delay,
                                     .seq = s->seq++,
                                     .from = from,
                                     .to = (int)m->to,
                                     .type = m->type,
                                     .corrupted = corrupt,
                                     .buf = buf,
                                     .len = len,
                                     .snap_hash = snap_hash};
}

/* A leader's APPEND, HEARTBEAT and SNAPSHOT may leave before the Ready is
 * persisted (thesis §10.2.1); everything else must wait. */
static bool may_send_early(const struct br_raft_msg *m) {
    return m->type == BR_RAFT_MSG_APPEND || m->type == BR_RAFT_MSG_HEARTBEAT ||
           m->type == BR_RAFT_MSG_SNAPSHOT;
}

/* Sends the Ready's messages: all (early < 0), only those that may leave
 * early (early > 0), or only the others (early == 0). */
static void send_msgs(struct sim *s, struct sim_node *nd, const struct br_raft_ready *rd,
                      int early) {
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const struct br_raft_msg *m = &rd->msgs[i];
        if (early >= 0 && may_send_early(m) != (early > 0))
            continue;
        uint64_t snap_hash = 0;
        if (m->type == BR_RAFT_MSG_SNAPSHOT) {
            /* The driver streams the snapshot its storage advertises. */
            if (m->snapshot.index != nd->snap_index) {
                failf(s, "node %d sends snapshot %" PRIu64 " but holds %" PRIu64, nd->id,
                      m->snapshot.index, nd->snap_index);
                return;
            }
            snap_hash = nd->snap_hash;
        }
        if (m->to < 1 || m->to > (uint64_t)s->n) {
            failf(s, "node %d sends to unknown node %" PRIu64, nd->id, m->to);
            return;
        }
        if (chance_pm(s, s->drop_pm)) {
            /* reported after advance: no input between ready and advance */
            if (m->type == BR_RAFT_MSG_SNAPSHOT && nd->n_snap_failed < SIM_MAX_NODES)
                nd->snap_failed[nd->n_snap_failed++] = m->to;
            continue;
        }
        int copies = chance_pm(s, s->dup_pm) ? 2 : 1;
        for (int c = 0; c < copies; c++) {
            uint64_t delay = s->delay_min + rnd(s, s->delay_max - s->delay_min + 1);
            enqueue(s, nd->id, m, delay, chance_pm(s, s->corrupt_pm), snap_hash);
        }
    }
}

static void process_ready(struct sim *s, int id);

static void do_compact(struct sim *s, struct sim_node *nd, uint64_t tail) {
    uint64_t idx = nd->sm_applied;
    if (!nd->up || idx <= nd->snap_index)
        return;
    if (br_raft_memstorage_create_snapshot(nd->ms, idx, &nd->sm_conf) < 0) {
        failf(s, "node %d could not snapshot at %" PRIu64, nd->id, idx);
        return;
    }
    nd->snap_index = idx;
    nd->snap_hash = nd->sm_hash;
    uint64_t to = idx > tail ? idx - tail : 0;
    if (br_raft_memstorage_compact(nd->ms, to) < 0)
        failf(s, "node %d could not compact to %" PRIu64, nd->id, to);
    tracef(s, "node %d snapshot at %" PRIu64 ", compacted to %" PRIu64, nd->id, idx, to);
}

void sim_compact(struct sim *s, int id) {
    do_compact(s, &s->nodes[id], 0);
}

static void handle_reads(struct sim *s, struct sim_node *nd, const struct br_raft_ready *rd) {
    for (size_t i = 0; i < rd->n_reads; i++) {
        const struct br_raft_read_state *rs = &rd->reads[i];
        if (!rs->refused) {
            nd->reads_done++;
            nd->last_read_index = rs->index;
        }
        for (size_t k = 0; k < s->n_reads; k++) {
            if (s->reads[k].ctx != rs->ctx)
                continue;
            if (rs->refused) { /* a non-member asked: nothing was read */
                s->reads[k] = s->reads[--s->n_reads];
                g_stats.reads_refused++;
                break;
            }
            /* Linearizability of ReadIndex: the read point covers every
             * entry that was committed when the read was asked. */
            if (rs->index < s->reads[k].min_index)
                failf(s,
                      "read %" PRIu64 " on node %d got index %" PRIu64 " < %" PRIu64
                      " committed before it was asked",
                      rs->ctx, nd->id, rs->index, s->reads[k].min_index);
            s->reads[k] = s->reads[--s->n_reads];
            g_stats.reads++;
            break;
        }
    }
}

void sim_crash(struct sim *s, int id);

static bool self_member(const struct sim_node *nd) {
    for (uint32_t k = 0; k < nd->sm_conf.n_voters; k++)
        if (nd->sm_conf.voters[k] == (uint64_t)nd->id)
            return true;
    for (uint32_t k = 0; k < nd->sm_conf.n_learners; k++)
        if (nd->sm_conf.learners[k] == (uint64_t)nd->id)
            return true;
    return false;
}

/* A removed node is shut down for good, as an operator would, once every
 * other member has applied its removal: a removed server that keeps
 * running can disrupt the cluster (thesis §4.2.3), and one shut down
 * earlier may be needed for the rest to learn that the change committed. */
static void decommission_pending(struct sim *s) {
    for (size_t i = 0; i < s->n_decommission;) {
        int id = s->decommission[i];
        bool all = true;
        for (int k = 1; k <= s->n && all; k++) {
            const struct sim_node *o = &s->nodes[k];
            if (k != id && o->exists && self_member(o) && o->sm_applied < s->decommission_at[i])
                all = false;
        }
        if (!all) {
            i++;
            continue;
        }
        if (id >= 1 && id <= s->n && s->nodes[id].exists) {
            tracef(s, "node %d removed: shut down", id);
            sim_crash(s, id);
            s->nodes[id].exists = false;
        }
        s->decommission[i] = s->decommission[--s->n_decommission];
        s->decommission_at[i] = s->decommission_at[s->n_decommission];
    }
}

static void process_ready(struct sim *s, int id) {
    struct sim_node *nd = &s->nodes[id];
    for (int rounds = 0; nd->up && !s->failed && br_raft_has_ready(nd->r); rounds++) {
        if (rounds > 1000) {
            failf(s, "node %d never runs out of Ready", id);
            return;
        }
        struct br_raft_ready rd;
        int rc = br_raft_ready(nd->r, &rd);
        if (rc < 0) {
            failf(s, "node %d ready: %s", id, br_strerror(rc));
            return;
        }
        struct br_raft_status st;
        br_raft_get_status(nd->r, &st);
        /* Leader append-only: a leader never overwrites or deletes entries
         * in its log; it only appends. */
        if (st.role == BR_RAFT_LEADER &&
            (rd.has_snapshot || (rd.n_entries > 0 && rd.entries[0].index != nd->sh_last + 1))) {
            failf(s, "leader append-only: leader %d rewrites its log at %" PRIu64, id,
                  rd.n_entries ? rd.entries[0].index : 0);
            return;
        }
        /* A leader writes its log in parallel with sending it: send
         * first, and now and then crash before the write is done (what was
         * sent exists elsewhere, the leader's own copy is lost). */
        bool early = st.role == BR_RAFT_LEADER && rnd(s, 2);
        if (early) {
            send_msgs(s, nd, &rd, 1);
            if (chance_pm(s, s->crash_mid_pm)) {
                tracef(s, "node %d crashes before persisting its Ready", id);
                nd->n_snap_failed = 0;
                sim_crash(s, id);
                return;
            }
        }
        /* 1. install the snapshot */
        if (rd.has_snapshot) {
            uint64_t x = rd.snapshot.index;
            if (!nd->stash || nd->stash_index != x) {
                failf(s, "node %d must install snapshot %" PRIu64 " it never received", id, x);
                return;
            }
            if (br_raft_memstorage_apply_snapshot(nd->ms, &rd.snapshot) < 0) {
                failf(s, "node %d could not install snapshot %" PRIu64, id, x);
                return;
            }
            uint64_t cp = v_get(&s->c_prefix, x);
            if (cp == 0 || v_get(&s->c_term, x) != rd.snapshot.term) {
                failf(s, "node %d installs snapshot %" PRIu64 " that is not committed", id, x);
                return;
            }
            shadow_reset_to(nd, x, rd.snapshot.term, cp);
            if (nd->checked_commit < x)
                nd->checked_commit = x;
            nd->sm_applied = x;
            nd->sm_hash = nd->stash_hash;
            nd->sm_conf = rd.snapshot.conf;
            nd->snap_index = x;
            nd->snap_hash = nd->stash_hash;
            nd->stash = false;
            check_sm(s, nd);
            tracef(s, "node %d installed snapshot %" PRIu64, id, x);
        }
        /* 2. persist entries and hard state */
        if (rd.n_entries > 0) {
            if (br_raft_memstorage_append(nd->ms, rd.entries, rd.n_entries) < 0) {
                failf(s, "node %d storage refused entries", id);
                return;
            }
            for (size_t i = 0; i < rd.n_entries && !s->failed; i++)
                shadow_append(s, nd, &rd.entries[i]);
        }
        if (rd.has_hard_state) {
            br_raft_memstorage_set_hard_state(nd->ms, &rd.hard_state);
            check_commit(s, nd, rd.hard_state.commit);
        }
        /* 3. send */
        send_msgs(s, nd, &rd, early ? 0 : -1);
        handle_reads(s, nd, &rd);
        /* 4. apply */
        for (size_t i = 0; i < rd.n_committed && !s->failed; i++) {
            const struct br_raft_entry *e = &rd.committed[i];
            if (e->index != nd->sm_applied + 1) {
                failf(s, "node %d applies %" PRIu64 " after %" PRIu64, id, e->index,
                      nd->sm_applied);
                return;
            }
            if (e->index > nd->checked_commit) {
                failf(s, "node %d applies %" PRIu64 " beyond its commit %" PRIu64, id, e->index,
                      nd->checked_commit);
                return;
            }
            nd->sm_hash = mix(mix(nd->sm_hash, e->term), XXH3_64bits(e->data, e->len));
            nd->sm_applied = e->index;
            check_sm(s, nd);
            g_stats.applied++;
            if (e->type == BR_RAFT_ENTRY_CONF_CHANGE)
                g_stats.conf_changes++;
            struct br_raft_conf_change cc;
            if (e->type == BR_RAFT_ENTRY_CONF_CHANGE && br_raft_conf_change_decode(e, &cc) == 0 &&
                cc.type == BR_RAFT_CC_REMOVE && cc.node_id <= (uint64_t)s->n &&
                s->n_decommission < SIM_MAX_NODES) {
                s->decommission[s->n_decommission] = (int)cc.node_id;
                s->decommission_at[s->n_decommission++] = e->index;
            }
        }
        /* 5. advance */
        br_raft_advance(nd->r);
        for (int k = 0; k < nd->n_snap_failed; k++)
            br_raft_report_snapshot(nd->r, nd->snap_failed[k], false);
        nd->n_snap_failed = 0;
        br_raft_get_conf(nd->r, &nd->sm_conf);
        br_raft_memstorage_set_conf(nd->ms, &nd->sm_conf);
        if (chance_pm(s, s->compact_pm))
            do_compact(s, nd, rnd(s, 4));
        check_leaders(s);
    }
    decommission_pending(s);
}

static void deliver(struct sim *s, size_t qi) {
    struct sim_msg sm = s->q[qi];
    s->q[qi] = s->q[--s->nq];
    struct sim_node *to = &s->nodes[sm.to];
    struct sim_node *from = &s->nodes[sm.from];
    if (s->cut[sm.from][sm.to] || !to->up) {
        if (sm.type == BR_RAFT_MSG_SNAPSHOT && from->up) {
            br_raft_report_snapshot(from->r, (uint64_t)sm.to, false);
            process_ready(s, sm.from);
        }
        free(sm.buf);
        return;
    }
    struct br_raft_msg m;
    long rc = br_raft_decode(sm.buf, sm.len, &m);
    if (rc < 0) {
        if (!sm.corrupted)
            failf(s, "decode of a %s from %d failed: %s", br_raft_msg_type_name(sm.type), sm.from,
                  br_strerror((int)rc));
        free(sm.buf);
        if (sm.type == BR_RAFT_MSG_SNAPSHOT && from->up) {
            br_raft_report_snapshot(from->r, (uint64_t)sm.to, false);
            process_ready(s, sm.from);
        }
        return;
    }
    if (sm.corrupted) {
        failf(s, "a corrupted %s decoded without error", br_raft_msg_type_name(sm.type));
        br_raft_msg_free(&m);
        free(sm.buf);
        return;
    }
    s->delivered[m.type & 15]++;
    g_stats.messages++;
    if (m.type == BR_RAFT_MSG_SNAPSHOT)
        g_stats.snapshots++;
    if (m.type == BR_RAFT_MSG_SNAPSHOT) {
        to->stash = true;
        to->stash_index = m.snapshot.index;
        to->stash_hash = sm.snap_hash;
    }
    tracef(s, "%d -> %d %s t%" PRIu64 " i%" PRIu64 " lt%" PRIu64 " c%" PRIu64 " n%zu%s", sm.from,
           sm.to, br_raft_msg_type_name(m.type), m.term, m.index, m.log_term, m.commit, m.n_entries,
           (m.flags & BR_RAFT_MSG_F_REJECT) ? " REJECT" : "");
    int src = br_raft_step(to->r, &m);
    if (src < 0)
        failf(s, "node %d refused a %s from %d: %s", sm.to, br_raft_msg_type_name(m.type), sm.from,
              br_strerror(src));
    br_raft_msg_free(&m);
    free(sm.buf);
    if (sm.type == BR_RAFT_MSG_SNAPSHOT && from->up) {
        br_raft_report_snapshot(from->r, (uint64_t)sm.to, true);
        process_ready(s, sm.from);
    }
    process_ready(s, sm.to);
}

static size_t next_msg(const struct sim *s) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < s->nq; i++)
        if (best == SIZE_MAX || s->q[i].at < s->q[best].at ||
            (s->q[i].at == s->q[best].at && s->q[i].seq < s->q[best].seq))
            best = i;
    return best;
}

size_t sim_pending(const struct sim *s) {
    return s->nq;
}

size_t sim_deliver_all(struct sim *s, size_t max) {
    size_t n = 0;
    while (s->nq > 0 && n < max && !s->failed) {
        deliver(s, next_msg(s));
        n++;
    }
    return n;
}

size_t sim_drop_if(struct sim *s, bool (*filter)(const struct br_raft_msg *m, void *arg),
                   void *arg) {
    size_t dropped = 0;
    for (size_t i = 0; i < s->nq;) {
        struct br_raft_msg m;
        bool drop = false;
        if (br_raft_decode(s->q[i].buf, s->q[i].len, &m) >= 0) {
            drop = filter(&m, arg);
            br_raft_msg_free(&m);
        }
        if (drop) {
            free(s->q[i].buf);
            s->q[i] = s->q[--s->nq];
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

void sim_cut(struct sim *s, int from, int to) {
    s->cut[from][to] = true;
}

void sim_isolate(struct sim *s, int id) {
    for (int i = 1; i <= SIM_MAX_NODES; i++) {
        if (i != id) {
            s->cut[id][i] = true;
            s->cut[i][id] = true;
        }
    }
}

void sim_heal(struct sim *s) {
    memset(s->cut, 0, sizeof(s->cut));
}

void sim_crash(struct sim *s, int id) {
    struct sim_node *nd = &s->nodes[id];
    if (!nd->up)
        return;
    g_stats.crashes++;
    tracef(s, "node %d crashes", id);
    br_raft_free(nd->r);
    nd->r = NULL;
    nd->up = false;
    nd->stash = false;
    nd->led_term = 0;
}

void sim_restart(struct sim *s, int id) {
    struct sim_node *nd = &s->nodes[id];
    if (nd->up || !nd->exists)
        return;
    nd->restarts++;
    if (nd->next_tick < s->now)
        nd->next_tick = s->now + 1 + rnd(s, nd->period);
    tracef(s, "node %d restarts (applied %" PRIu64 ")", id, nd->sm_applied);
    if (node_start(s, nd) == 0)
        process_ready(s, id);
}

/* ---------------------------------------------------------------- inputs */

void sim_tick(struct sim *s, int id) {
    if (!sim_raft(s, id))
        return;
    br_raft_tick(s->nodes[id].r);
    process_ready(s, id);
}

void sim_tick_all(struct sim *s, int times) {
    for (int t = 0; t < times && !s->failed; t++) {
        for (int i = 1; i <= s->n; i++)
            sim_tick(s, i);
        sim_deliver_all(s, 100000);
    }
}

void sim_campaign(struct sim *s, int id) {
    if (!sim_raft(s, id))
        return;
    br_raft_campaign(s->nodes[id].r);
    process_ready(s, id);
}

int sim_propose(struct sim *s, int id, uint64_t *index) {
    br_raft *r = sim_raft(s, id);
    if (!r)
        return BR_EINVAL;
    uint8_t buf[48];
    uint64_t pid = ++s->next_prop;
    memcpy(buf, &pid, 8);
    size_t len = 8 + (size_t)rnd(s, 40);
    for (size_t i = 8; i < len; i++)
        buf[i] = (uint8_t)rnd(s, 256);
    uint64_t idx = 0;
    int rc = br_raft_propose(r, buf, len, &idx, NULL);
    tracef(s, "propose %" PRIu64 " at node %d: %s index %" PRIu64, pid, id, br_errname(rc), idx);
    if (rc == 0) {
        if (index)
            *index = idx;
        process_ready(s, id);
    }
    return rc;
}

int sim_leader(struct sim *s) {
    int best = 0;
    uint64_t term = 0;
    for (int i = 1; i <= s->n; i++) {
        struct br_raft_status st;
        sim_status(s, i, &st);
        if (s->nodes[i].up && st.role == BR_RAFT_LEADER && st.term >= term) {
            best = i;
            term = st.term;
        }
    }
    return best;
}

static void sim_read(struct sim *s, int id) {
    br_raft *r = sim_raft(s, id);
    if (!r)
        return;
    uint64_t ctx = ++s->next_ctx;
    if (br_raft_read_index(r, ctx, NULL) != 0)
        return;
    if (s->n_reads == s->cap_reads) {
        s->cap_reads = s->cap_reads ? s->cap_reads * 2 : 16;
        s->reads = realloc(s->reads, s->cap_reads * sizeof(*s->reads));
        if (!s->reads)
            abort();
    }
    s->reads[s->n_reads++] = (struct pending_read){.ctx = ctx, .node = id, .min_index = s->gmax};
    process_ready(s, id);
}

/* ---------------------------------------------------------------- random schedules */

static int pick_up(struct sim *s) {
    int c[SIM_MAX_NODES], n = 0;
    for (int i = 1; i <= s->n; i++)
        if (s->nodes[i].up)
            c[n++] = i;
    return n ? c[rnd(s, (uint64_t)n)] : 0;
}

/* Proposes a random single-server change on the leader: add a new node
 * as a learner, promote a learner, or remove a member. */
static void random_conf_change(struct sim *s) {
    int l = sim_leader(s);
    if (!l)
        return;
    br_raft *r = s->nodes[l].r;
    struct br_raft_conf_state conf;
    br_raft_get_conf(r, &conf);
    struct br_raft_conf_change cc = {0};
    uint64_t what = rnd(s, 3);
    if (what == 0) {
        /* reuse a node that exists but is in no configuration, else add one */
        int idle = 0;
        for (int i = 1; i <= s->n && !idle; i++) {
            bool member = false;
            for (uint32_t k = 0; k < conf.n_voters; k++)
                member |= conf.voters[k] == (uint64_t)i;
            for (uint32_t k = 0; k < conf.n_learners; k++)
                member |= conf.learners[k] == (uint64_t)i;
            if (!member && s->nodes[i].exists && !s->nodes[i].retired)
                idle = i;
        }
        if (!idle)
            idle = sim_add_node(s);
        if (idle <= 0)
            return;
        cc = (struct br_raft_conf_change){BR_RAFT_CC_ADD_LEARNER, (uint64_t)idle};
    } else if (what == 1) {
        if (conf.n_learners == 0)
            return;
        cc = (struct br_raft_conf_change){BR_RAFT_CC_ADD_VOTER,
                                          conf.learners[rnd(s, conf.n_learners)]};
    } else {
        uint32_t n = conf.n_voters + conf.n_learners;
        uint64_t k = rnd(s, n);
        uint64_t id = k < conf.n_voters ? conf.voters[k] : conf.learners[k - conf.n_voters];
        cc = (struct br_raft_conf_change){BR_RAFT_CC_REMOVE, id};
    }
    int rc = br_raft_propose_conf_change(r, &cc, NULL, 0, NULL, NULL);
    tracef(s, "conf change %u of %" PRIu64 " at leader %d: %s", cc.type, cc.node_id, l,
           br_errname(rc));
    if (rc == 0 && cc.type == BR_RAFT_CC_REMOVE && cc.node_id <= (uint64_t)s->n)
        s->nodes[cc.node_id].retired = true; /* never re-added */
    if (rc == 0)
        process_ready(s, l);
}

static void random_fault(struct sim *s) {
    if (s->churn && rnd(s, 2)) {
        int l = sim_leader(s);
        if (l && rnd(s, 2)) {
            sim_crash(s, l);
        } else if (l) {
            sim_heal(s);
            sim_isolate(s, l);
            tracef(s, "isolate leader %d", l);
        } else {
            for (int i = 1; i <= s->n; i++)
                if (!s->nodes[i].up && s->nodes[i].exists) {
                    sim_restart(s, i);
                    break;
                }
        }
        return;
    }
    switch (rnd(s, s->membership ? 14 : 12)) {
    case 12:
    case 13:
        random_conf_change(s);
        break;
    case 10:
    case 11: { /* crash the leader, the fault that matters most */
        int l = sim_leader(s);
        if (l)
            sim_crash(s, l);
        break;
    }
    case 0: { /* full partition into two sides */
        sim_heal(s);
        uint64_t side = rnd(s, 1u << s->n);
        for (int a = 1; a <= s->n; a++)
            for (int b = 1; b <= s->n; b++)
                if (((side >> (a - 1)) & 1) != ((side >> (b - 1)) & 1))
                    s->cut[a][b] = true;
        tracef(s, "partition %#" PRIx64, side);
        break;
    }
    case 1: { /* asymmetric cut */
        int a = 1 + (int)rnd(s, (uint64_t)s->n), b = 1 + (int)rnd(s, (uint64_t)s->n);
        s->cut[a][b] = true;
        tracef(s, "cut %d -> %d", a, b);
        break;
    }
    case 2: { /* isolate the leader */
        int l = sim_leader(s);
        if (l) {
            sim_isolate(s, l);
            tracef(s, "isolate leader %d", l);
        }
        break;
    }
    case 3:
    case 4:
        sim_heal(s);
        tracef(s, "heal");
        break;
    case 5: {
        int v = pick_up(s);
        if (v)
            sim_crash(s, v);
        break;
    }
    case 6:
    case 7:
        for (int i = 1; i <= s->n; i++)
            if (!s->nodes[i].up && s->nodes[i].exists) {
                sim_restart(s, i);
                break;
            }
        break;
    case 8:
        s->drop_pm = (uint32_t)rnd(s, 300);
        s->dup_pm = (uint32_t)rnd(s, 100);
        tracef(s, "drop %u/1000 dup %u/1000", s->drop_pm, s->dup_pm);
        break;
    default: { /* leadership transfer */
        int l = sim_leader(s);
        if (l) {
            int to = 1 + (int)rnd(s, (uint64_t)s->n);
            if (br_raft_transfer_leadership(s->nodes[l].r, (uint64_t)to) == 0) {
                tracef(s, "transfer %d -> %d", l, to);
                process_ready(s, l);
            }
        }
        break;
    }
    }
}

/* Runs the event loop until `until` (or failure). */
static void run_until(struct sim *s, uint64_t until, bool faults, uint32_t ev_period) {
    uint64_t next_ev = ev_period ? s->now + 1 + rnd(s, ev_period) : UINT64_MAX;
    while (!s->failed) {
        uint64_t t = next_ev;
        int tick_node = 0;
        for (int i = 1; i <= s->n; i++)
            if (s->nodes[i].up && s->nodes[i].next_tick < t) {
                t = s->nodes[i].next_tick;
                tick_node = i;
            }
        size_t mi = next_msg(s);
        if (mi != SIZE_MAX && s->q[mi].at < t) {
            t = s->q[mi].at;
            tick_node = -1;
        }
        if (t > until) {
            s->now = until;
            return;
        }
        s->now = t;
        if (tick_node > 0) {
            struct sim_node *nd = &s->nodes[tick_node];
            nd->next_tick += nd->period;
            sim_tick(s, tick_node);
        } else if (tick_node < 0) {
            deliver(s, mi);
        } else {
            next_ev = ev_period ? s->now + 1 + rnd(s, ev_period) : UINT64_MAX;
            uint64_t what = rnd(s, 100);
            int v = pick_up(s);
            if (what < 55) {
                int l = sim_leader(s);
                if (l && rnd(s, 4))
                    v = l;
                if (v)
                    sim_propose(s, v, NULL);
            } else if (what < 70) {
                /* on the leader, or forwarded by any node (followers,
                 * learners, deposed leaders: what they get is checked) */
                int l = sim_leader(s);
                if (l && rnd(s, 2))
                    v = l;
                if (v)
                    sim_read(s, v);
            } else if (faults) {
                random_fault(s);
            }
        }
    }
}

/* The members (voters and learners) of the leader's configuration. */
static int members(struct sim *s, int leader, int *ids) {
    struct br_raft_conf_state conf;
    br_raft_get_conf(s->nodes[leader].r, &conf);
    int n = 0;
    for (uint32_t k = 0; k < conf.n_voters; k++)
        ids[n++] = (int)conf.voters[k];
    for (uint32_t k = 0; k < conf.n_learners; k++)
        ids[n++] = (int)conf.learners[k];
    return n;
}

/*
 * Without pre-vote and check-quorum leases nothing stops a removed server
 * that keeps running from deposing leaders with its elections forever
 * (thesis §4.2.3: that is what the leases are for). An operator stops
 * removed servers; in such schedules so does the quiet phase, for a node
 * the leader's configuration does not have that still counts itself a
 * voter (it never applied its removal, so it will campaign).
 */
static void stop_removed_candidates(struct sim *s) {
    if (s->cfg.pre_vote || s->cfg.check_quorum)
        return;
    int l = sim_leader(s);
    if (!l)
        return;
    int ids[BR_RAFT_MAX_MEMBERS], n_ids = members(s, l, ids);
    for (int i = 1; i <= s->n; i++) {
        if (!s->nodes[i].up)
            continue;
        bool member = false, thinks_voter = false;
        for (int k = 0; k < n_ids; k++)
            member |= ids[k] == i;
        struct br_raft_conf_state own;
        br_raft_get_conf(s->nodes[i].r, &own);
        for (uint32_t k = 0; k < own.n_voters; k++)
            thinks_voter |= own.voters[k] == (uint64_t)i;
        if (!member && thinks_voter) {
            tracef(s, "node %d was removed but would campaign: stopped", i);
            sim_crash(s, i);
        }
    }
}

/* All members agree on one leader that is up and not transferring. */
static int stable_leader(struct sim *s) {
    int l = sim_leader(s);
    if (!l)
        return 0;
    struct br_raft_status ls;
    sim_status(s, l, &ls);
    /* It has heard from a quorum in its term (its no-op committed), and
     * everyone agrees on the commit index. */
    if (ls.lead_transferee || ls.commit < ls.last_index)
        return 0;
    int ids[BR_RAFT_MAX_MEMBERS];
    int n = members(s, l, ids);
    for (int k = 0; k < n; k++) {
        int i = ids[k];
        struct br_raft_status st;
        if (i < 1 || i > s->n || !s->nodes[i].up)
            return 0;
        sim_status(s, i, &st);
        if (st.term != ls.term || st.leader != (uint64_t)l || st.commit != ls.commit)
            return 0;
    }
    return l;
}

int sim_run_schedule(uint64_t seed, bool trace, char *err, size_t errlen) {
    uint64_t r = seed;
    static const int sizes[] = {1, 2, 3, 3, 3, 4, 5, 5, 6, 7};
    struct sim_config cfg = {
        .n = sizes[splitmix(&r) % 10],
        .pre_vote = splitmix(&r) & 1,
        .check_quorum = splitmix(&r) & 1,
        .election_tick = 10,
        .heartbeat_tick = 1 + (uint32_t)(splitmix(&r) % 3),
        .max_inflight = 1 + (uint32_t)(splitmix(&r) % 8),
        .max_msg_bytes = 16 + splitmix(&r) % 400,
        .seed = seed,
        .trace = trace,
    };
    if (cfg.n >= 3 && splitmix(&r) % 4 == 0)
        cfg.n_learners = 1;
    bool membership = splitmix(&r) % 2 == 0;
    /* "Churn" schedules: one entry per APPEND, one APPEND in flight, and
     * faults twice as often, mostly at the leader, so that leaders often
     * die with old-term entries half replicated (Figure 3.7's setting). */
    bool churn = splitmix(&r) % 4 == 0;
    if (churn) {
        cfg.max_msg_bytes = 1;
        cfg.max_inflight = 1;
        membership = false;
    }
    struct sim *s = sim_new(&cfg);
    if (s) {
        s->membership = membership;
        s->churn = churn;
    }
    if (!s) {
        snprintf(err, errlen, "seed %" PRIu64 ": cannot create the cluster", seed);
        return -1;
    }
    uint32_t skew = (uint32_t)rnd(s, 3); /* clock skew: tick periods 10 +- skew */
    for (int i = 1; i <= s->n; i++) {
        s->nodes[i].period = 10 - skew + (uint32_t)rnd(s, 2 * skew + 1);
        s->nodes[i].next_tick = rnd(s, 10);
    }
    s->delay_min = 1;
    s->delay_max = 5 + (uint32_t)rnd(s, 25);
    s->drop_pm = (uint32_t)rnd(s, 150);
    s->dup_pm = (uint32_t)rnd(s, 60);
    s->corrupt_pm = (uint32_t)rnd(s, 10);
    s->compact_pm = (uint32_t)rnd(s, 40);
    s->crash_mid_pm = (uint32_t)rnd(s, 20);
    tracef(s,
           "seed %" PRIu64 ": %d nodes (%d learners) pre_vote=%d check_quorum=%d hb=%u "
           "inflight=%u msg=%" PRIu64 " skew=%u membership=%d churn=%d",
           seed, cfg.n, cfg.n_learners, cfg.pre_vote, cfg.check_quorum, cfg.heartbeat_tick,
           cfg.max_inflight, cfg.max_msg_bytes, skew, membership, churn);

    /* Phase 1: faults. */
    uint64_t fault_ticks = 200 + rnd(s, 600);
    run_until(s, s->now + fault_ticks * 10, true, s->churn ? 20 : 40);

    /* Phase 2: faults stop. */
    sim_heal(s);
    for (int i = 1; i <= s->n; i++)
        sim_restart(s, i);
    s->drop_pm = s->dup_pm = s->corrupt_pm = s->crash_mid_pm = 0;
    s->delay_max = 3;
    tracef(s, "faults stop");
    /* Let leaders that were cut off meet the others' terms first. */
    run_until(s, s->now + 2ull * 10 * cfg.election_tick, false, 0);
    uint64_t deadline = s->now + 20ull * 10 * cfg.election_tick; /* 20 election timeouts */
    int leader = 0;
    while (!s->failed && s->now < deadline && !(leader = stable_leader(s))) {
        run_until(s, s->now + 10, false, 0);
        stop_removed_candidates(s);
    }
    if (!s->failed && !leader) {
        char buf[256] = "";
        size_t off = 0;
        for (int i = 1; i <= s->n && off < sizeof(buf); i++) {
            struct br_raft_status st;
            sim_status(s, i, &st);
            int w = snprintf(buf + off, sizeof(buf) - off,
                             " [%d: %s t%" PRIu64 " lead %" PRIu64 " last %" PRIu64 "]", i,
                             s->nodes[i].up ? br_raft_role_name(st.role) : "down", st.term,
                             st.leader, st.last_index);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        failf(s, "liveness: no stable leader within 20 election timeouts after faults stopped:%s",
              buf);
    }

    stop_removed_candidates(s);
    /* Every proposal made now commits and is applied everywhere. */
    uint64_t want[5];
    uint64_t want_term = 0;
    struct br_raft_status ls;
    sim_status(s, leader, &ls);
    want_term = ls.term;
    for (int i = 0; i < 5 && !s->failed; i++) {
        int rc = sim_propose(s, leader, &want[i]);
        if (rc != 0)
            failf(s, "liveness: stable leader %d refused a proposal: %s", leader, br_strerror(rc));
    }
    deadline = s->now + 5ull * 10 * cfg.election_tick;
    bool done = false;
    int ids[BR_RAFT_MAX_MEMBERS], n_ids = 0;
    while (!s->failed && !done && s->now < deadline) {
        run_until(s, s->now + 10, false, 0);
        stop_removed_candidates(s);
        done = true;
        n_ids = leader ? members(s, leader, ids) : 0;
        for (int k = 0; k < n_ids; k++)
            if (sim_applied(s, ids[k]) < want[4])
                done = false;
    }
    if (!s->failed && !done)
        failf(s, "liveness: proposals up to %" PRIu64 " not applied everywhere in time", want[4]);
    for (int i = 0; i < 5 && !s->failed; i++)
        if (v_get(&s->c_term, want[i]) != want_term)
            failf(s, "liveness: proposal at %" PRIu64 " was replaced", want[i]);
    for (int k = 1; k < n_ids && !s->failed; k++)
        if (sim_applied(s, ids[k]) == sim_applied(s, ids[0]) &&
            sim_sm_hash(s, ids[k]) != sim_sm_hash(s, ids[0]))
            failf(s, "state machines of nodes %d and %d differ", ids[0], ids[k]);

    int rc = 0;
    if (s->failed) {
        snprintf(err, errlen, "seed %" PRIu64 " (%d nodes, pre_vote=%d, check_quorum=%d): %s", seed,
                 cfg.n, cfg.pre_vote, cfg.check_quorum, s->err);
        rc = -1;
    }
    sim_free(s);
    return rc;
}
