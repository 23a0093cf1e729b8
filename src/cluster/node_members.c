/*
 * node_members.c - membership changes at run time and the table of
 * members' addresses.
 *
 * A change is one CONF_CHANGE raft entry (raft.h: 12 bytes of type and id)
 * followed by a context this file defines, so that every member learns the
 * new member's addresses by applying the entry:
 *
 *   offset  size  field
 *   0       1     version (1)
 *   1       1     flags: bit 0 = promote (a learner to make a voter once
 *                 it has caught up)
 *   2       2     raft port, little-endian
 *   4       1     H = host length, 1..255
 *   5       H     host (printable, no spaces)
 *   5+H     1     C = client address length, 0..255
 *   6+H     C     client address ("host:port")
 *
 * A removal carries no context. An entry whose context does not decode
 * still changes the configuration (the core applies it); only the address
 * is missing, and a warning says so.
 *
 * The table is kept in <dir>/MEMBERS, a text file written whole to
 * MEMBERS.tmp, fsynced and renamed over the old one (then the directory
 * fsynced), so it is always one complete version:
 *
 *   bitraft-members 1
 *   joining 0|1
 *   member <id> <host> <raft port> <client address or -> <promote 0|1>
 *   ...
 *
 * The leader also puts it (as MEMBERS) into every snapshot it streams; the
 * receiver takes it out of the data directory after the swap, so a member
 * that catches up by snapshot knows the members added before the snapshot.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "br_io.h"
#include "node_int.h"

#define CTX_VERSION   1
#define CTX_F_PROMOTE 1u
#define MEMBERS_FILE  "MEMBERS"

/* ------------------------------------------------------------ context */

static bool good_addr(const char *s, size_t max, bool may_be_empty) {
    size_t len = s ? strlen(s) : 0;
    if (len == 0)
        return may_be_empty;
    if (len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isgraph((unsigned char)s[i]))
            return false;
    return true;
}

struct cc_ctx {
    bool promote;
    uint16_t raft_port;
    char host[256];
    char client[256];
};

/* Encodes the context; returns its length or BR_EINVAL / BR_ENOMEM. */
static long ctx_encode(const struct br_node_member *m, bool promote, uint8_t **out) {
    const char *client = m->client_addr ? m->client_addr : "";
    if (!good_addr(m->host, 255, false) || !good_addr(client, 255, true))
        return BR_EINVAL;
    size_t h = strlen(m->host), c = strlen(client);
    uint8_t *p = malloc(6 + h + c);
    if (!p)
        return BR_ENOMEM;
    p[0] = CTX_VERSION;
    p[1] = promote ? CTX_F_PROMOTE : 0;
    p[2] = (uint8_t)(m->raft_port & 0xff);
    p[3] = (uint8_t)(m->raft_port >> 8);
    p[4] = (uint8_t)h;
    memcpy(p + 5, m->host, h);
    p[5 + h] = (uint8_t)c;
    memcpy(p + 6 + h, client, c);
    *out = p;
    return (long)(6 + h + c);
}

static int ctx_decode(const uint8_t *p, size_t len, struct cc_ctx *c) {
    if (len < 6 || p[0] != CTX_VERSION || (p[1] & ~CTX_F_PROMOTE))
        return BR_ECORRUPT;
    size_t h = p[4];
    if (h == 0 || len < 6 + h)
        return BR_ECORRUPT;
    size_t cl = p[5 + h];
    if (len != 6 + h + cl)
        return BR_ECORRUPT;
    c->promote = p[1] & CTX_F_PROMOTE;
    c->raft_port = (uint16_t)(p[2] | (p[3] << 8));
    memcpy(c->host, p + 5, h);
    c->host[h] = 0;
    memcpy(c->client, p + 6 + h, cl);
    c->client[cl] = 0;
    if (!good_addr(c->host, 255, false) || !good_addr(c->client, 255, true))
        return BR_ECORRUPT;
    return 0;
}

/* ------------------------------------------------------------ the table */

/* Sets slot's address (strings copied). The caller holds members_mu when
 * the node thread runs. */
static int set_addr(struct nd_member *d, const char *host, uint16_t port, const char *client) {
    char *h = strdup(host), *c = strdup(client ? client : "");
    if (!h || !c) {
        free(h);
        free(c);
        return BR_ENOMEM;
    }
    free(d->host);
    free(d->client_addr);
    d->host = h;
    d->client_addr = c;
    d->raft_port = port;
    return 0;
}

static bool same_addr(const struct nd_member *d, const char *host, uint16_t port,
                      const char *client) {
    return d->raft_port == port && strcmp(d->host, host) == 0 &&
           strcmp(d->client_addr, client ? client : "") == 0;
}

/* A free slot: a new one, or one whose member is out of the configuration
 * (not us, no snapshot going to it). -1 if none. (loop) */
static int free_slot(br_node *n) {
    if (n->n_members < BR_RAFT_MAX_MEMBERS)
        return (int)n->n_members;
    for (size_t i = 0; i < n->n_members; i++)
        if (n->members[i].role == BR_NODE_NONE && n->members[i].id != n->id && !n->snd[i].active)
            return (int)i;
    return -1;
}

/* Adds id at slot s (from free_slot), evicting what was there. */
static int take_slot(br_node *n, int s, uint64_t id, const char *host, uint16_t port,
                     const char *client) {
    struct nd_member d = {.id = id, .role = BR_NODE_NONE};
    int rc = set_addr(&d, host, port, client);
    if (rc < 0)
        return rc;
    struct nd_member old = {0};
    if ((size_t)s < n->n_members) {
        old = n->members[s];
        if (n->tr)
            br_transport_remove_peer(n->tr, old.id);
        uint64_t bit = 1ull << s;
        n->unreachable_mask &= ~bit;
        n->snap_report_ok &= ~bit;
        n->snap_report_fail &= ~bit;
    }
    pthread_mutex_lock(&n->members_mu);
    n->members[s] = d;
    if ((size_t)s == n->n_members)
        n->n_members++;
    pthread_mutex_unlock(&n->members_mu);
    free(old.host);
    free(old.client_addr);
    return 0;
}

/* ------------------------------------------------------------ MEMBERS */

int nd_members_save(br_node *n, const char *dir) {
    const char *d = dir ? dir : n->dir;
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (snprintf(path, sizeof path, "%s/%s", d, MEMBERS_FILE) >= (int)sizeof path)
        return -ENAMETOOLONG;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    size_t cap = 64 + n->n_members * 600, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return BR_ENOMEM;
    len += (size_t)snprintf(buf + len, cap - len, "bitraft-members 1\njoining %d\n",
                            n->joining ? 1 : 0);
    for (size_t i = 0; i < n->n_members; i++) {
        const struct nd_member *m = &n->members[i];
        len += (size_t)snprintf(buf + len, cap - len, "member %llu %s %u %s %d\n",
                                (unsigned long long)m->id, m->host, m->raft_port,
                                m->client_addr[0] ? m->client_addr : "-", m->promote ? 1 : 0);
    }
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        rc = -errno;
    if (rc == 0)
        rc = br_write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    free(buf);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0)
        rc = nd_fsync_dir(d);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* What merge() does with an id already in the table. */
enum { KEEP_ADDR, TAKE_ADDR };

/* Puts one member read from a file into the table. */
static int merge(br_node *n, uint64_t id, const char *host, uint16_t port, const char *client,
                 bool promote, int addr_rule) {
    int s = nd_member_slot(n, id);
    if (s < 0) {
        s = free_slot(n);
        if (s < 0) {
            nd_log(n, BR_NODE_LOG_WARN, "no room for the address of member %llu",
                   (unsigned long long)id);
            return 0;
        }
        int rc = take_slot(n, s, id, host, port, client);
        if (rc < 0)
            return rc;
        if (n->tr && id != n->id)
            br_transport_add_peer(n->tr, id, host, port);
    } else if (addr_rule == TAKE_ADDR && !same_addr(&n->members[s], host, port, client)) {
        pthread_mutex_lock(&n->members_mu);
        int rc = set_addr(&n->members[s], host, port, client);
        pthread_mutex_unlock(&n->members_mu);
        if (rc < 0)
            return rc;
        if (n->tr && id != n->id) {
            br_transport_remove_peer(n->tr, id);
            br_transport_add_peer(n->tr, id, host, port);
        }
    }
    n->members[s].promote = promote;
    return 0;
}

/* Reads a MEMBERS file into the table. *joining gets its flag. */
static int read_file(br_node *n, const char *path, int addr_rule, bool *joining, char *err,
                     size_t errlen) {
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[1024];
    int rc = 0, lineno = 0;
    bool header = false;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char host[256], client[256];
        unsigned long long id;
        unsigned port;
        int promote, j, end = -1;
        if (!header) {
            if (sscanf(line, "bitraft-members 1%n", &end) == 0 && end > 0 && line[end] == '\n')
                header = true;
            else
                rc = BR_ECORRUPT;
        } else if (sscanf(line, "joining %d%n", &j, &end) == 1 && line[end] == '\n' &&
                   (j == 0 || j == 1)) {
            *joining = j;
        } else if (sscanf(line, "member %llu %255s %u %255s %d%n", &id, host, &port, client,
                          &promote, &end) == 5 &&
                   line[end] == '\n' && id > 0 && port <= 65535 && (promote == 0 || promote == 1)) {
            rc = merge(n, id, host, (uint16_t)port, strcmp(client, "-") == 0 ? "" : client, promote,
                       addr_rule);
        } else {
            rc = BR_ECORRUPT;
        }
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    if (rc == 0 && !header)
        rc = BR_ECORRUPT;
    fclose(f);
    if (rc == BR_ECORRUPT && err && errlen)
        snprintf(err, errlen, "node: %s: line %d is not valid", path, lineno);
    return rc;
}

int nd_members_load(br_node *n, char *err, size_t errlen) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", n->dir, MEMBERS_FILE);
    bool joining = false;
    int rc = read_file(n, path, KEEP_ADDR, &joining, err, errlen);
    if (rc == -ENOENT) {
        rc = 0;
    } else if (rc < 0) {
        if (rc != BR_ECORRUPT && err && errlen)
            snprintf(err, errlen, "node: %s: %s", path, br_strerror(rc));
        return rc;
    }
    n->joining = joining || n->cfg.join;
    /* A snapshot swapped in before a crash may still hold its MEMBERS. */
    snprintf(path, sizeof path, "%s/%s", n->data_dir, MEMBERS_FILE);
    if (access(path, F_OK) == 0 && (rc = nd_members_adopt(n)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "node: %s: %s", path, br_strerror(rc));
        return rc;
    }
    return 0;
}

int nd_members_adopt(br_node *n) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", n->data_dir, MEMBERS_FILE);
    bool joining = false;
    int rc = read_file(n, path, TAKE_ADDR, &joining, NULL, 0);
    if (rc == -ENOENT)
        return 0;
    if (rc == BR_ECORRUPT)
        nd_log(n, BR_NODE_LOG_WARN, "%s sent with the snapshot is not valid; ignored", path);
    else if (rc < 0)
        return rc;
    rc = nd_members_save(n, NULL);
    if (rc == 0 && unlink(path) != 0)
        rc = -errno;
    return rc;
}

/* Publishes whether this node is in its configuration (members_mu held, or
 * the loop thread before other threads see the node). */
void nd_members_publish_self(br_node *n) {
    int s = nd_member_slot(n, n->id);
    atomic_store(&n->in_conf, s >= 0 && n->members[s].role != BR_NODE_NONE);
}

void nd_members_set_roles(br_node *n, const struct br_raft_conf_state *conf) {
    int roles[BR_RAFT_MAX_MEMBERS];
    bool changed = false;
    for (size_t i = 0; i < n->n_members; i++) {
        uint64_t id = n->members[i].id;
        roles[i] = BR_NODE_NONE;
        for (uint32_t k = 0; k < conf->n_voters; k++)
            if (conf->voters[k] == id)
                roles[i] = BR_NODE_VOTER;
        for (uint32_t k = 0; k < conf->n_learners; k++)
            if (conf->learners[k] == id)
                roles[i] = BR_NODE_LEARNER;
        changed |= roles[i] != n->members[i].role;
    }
    if (!changed)
        return;
    pthread_mutex_lock(&n->members_mu);
    for (size_t i = 0; i < n->n_members; i++)
        n->members[i].role = roles[i];
    nd_members_publish_self(n);
    pthread_mutex_unlock(&n->members_mu);
}

/* ------------------------------------------------------------ changes */

static size_t n_in_conf(const br_node *n, int role) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_members; i++)
        k += role ? n->members[i].role == role : n->members[i].role != BR_NODE_NONE;
    return k;
}

int nd_members_propose(br_node *n, const struct nd_req *r, uint64_t *index) {
    int s = nd_member_slot(n, r->cc_id);
    int role = s >= 0 ? n->members[s].role : BR_NODE_NONE;
    struct br_raft_conf_change cc = {.type = r->cc_type, .node_id = r->cc_id};
    const void *ctx = r->data;
    size_t ctx_len = r->len;
    uint8_t *promotion = NULL;
    if (r->cc_type == BR_RAFT_CC_REMOVE) {
        if (role == BR_NODE_NONE)
            return BR_ENOTFOUND;
        if (role == BR_NODE_VOTER && n_in_conf(n, BR_NODE_VOTER) == 1)
            return BR_EINVAL;
    } else {
        struct cc_ctx c;
        if (ctx_decode(r->data, r->len, &c) < 0)
            return BR_EINVAL;
        if (role == BR_NODE_VOTER || (role == BR_NODE_LEARNER && !c.promote))
            return -EEXIST;
        if (role == BR_NODE_LEARNER) {
            /* promote now: refused while it is behind */
            struct br_raft_status st;
            br_raft_get_status(n->raft, &st);
            uint64_t match = 0, next = 0;
            if (br_raft_get_progress(n->raft, r->cc_id, &match, &next) < 0 || match < st.commit)
                return BR_EINVAL;
            struct br_node_member m = {
                .id = r->cc_id, .host = c.host, .raft_port = c.raft_port, .client_addr = c.client};
            long len = ctx_encode(&m, false, &promotion);
            if (len < 0)
                return (int)len;
            cc.type = BR_RAFT_CC_ADD_VOTER;
            ctx = promotion;
            ctx_len = (size_t)len;
        } else if (n_in_conf(n, 0) >= BR_RAFT_MAX_MEMBERS) {
            return -ENOSPC;
        }
    }
    int rc = br_raft_propose_conf_change(n->raft, &cc, ctx, ctx_len, index, NULL);
    free(promotion);
    if (rc == BR_EINVAL)
        rc = -EBUSY; /* the checks above leave only a change in flight */
    if (rc == 0)
        nd_log(n, BR_NODE_LOG_INFO, "proposed %s %llu at index %llu",
               cc.type == BR_RAFT_CC_REMOVE      ? "removing member"
               : cc.type == BR_RAFT_CC_ADD_VOTER ? "promoting learner"
                                                 : "adding learner",
               (unsigned long long)cc.node_id, (unsigned long long)*index);
    return rc;
}

void nd_members_apply(br_node *n, const struct br_raft_entry *e) {
    struct br_raft_conf_change cc;
    if (br_raft_conf_change_decode(e, &cc) < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "membership entry %llu does not decode",
               (unsigned long long)e->index);
        return;
    }
    struct cc_ctx c;
    bool have = cc.type != BR_RAFT_CC_REMOVE && e->len > 12 &&
                ctx_decode(e->data + 12, e->len - 12, &c) == 0;
    if (cc.type != BR_RAFT_CC_REMOVE && !have)
        nd_log(n, BR_NODE_LOG_WARN, "membership entry %llu carries no address for %llu",
               (unsigned long long)e->index, (unsigned long long)cc.node_id);
    int s = nd_member_slot(n, cc.node_id);
    if (have) {
        int rc = merge(n, cc.node_id, c.host, c.raft_port, c.client, false, TAKE_ADDR);
        if (rc < 0)
            nd_log(n, BR_NODE_LOG_WARN, "recording the address of %llu: %s",
                   (unsigned long long)cc.node_id, br_strerror(rc));
        s = nd_member_slot(n, cc.node_id);
    }
    int role = cc.type == BR_RAFT_CC_ADD_VOTER     ? BR_NODE_VOTER
               : cc.type == BR_RAFT_CC_ADD_LEARNER ? BR_NODE_LEARNER
                                                   : BR_NODE_NONE;
    if (s >= 0) {
        pthread_mutex_lock(&n->members_mu);
        n->members[s].role = role;
        n->members[s].promote = cc.type == BR_RAFT_CC_ADD_LEARNER && have && c.promote;
        nd_members_publish_self(n);
        pthread_mutex_unlock(&n->members_mu);
        if (role == BR_NODE_NONE && cc.node_id != n->id)
            nd_snap_abort_send(n, s, false);
    }
    nd_log(n, BR_NODE_LOG_INFO, "membership (entry %llu): %llu %s%s", (unsigned long long)e->index,
           (unsigned long long)cc.node_id,
           role == BR_NODE_VOTER     ? "is a voter"
           : role == BR_NODE_LEARNER ? "is a learner"
                                     : "removed",
           cc.node_id == n->id ? " (this node)" : "");
    int rc = nd_members_save(n, NULL);
    if (rc < 0)
        nd_log(n, BR_NODE_LOG_WARN, "writing %s/%s: %s", n->dir, MEMBERS_FILE, br_strerror(rc));
}

void nd_members_tick(br_node *n) {
    if (n->last_role != BR_RAFT_LEADER || n->ticks < n->promote_next_tick)
        return;
    struct br_raft_status st;
    bool have_st = false;
    for (size_t i = 0; i < n->n_members; i++) {
        const struct nd_member *m = &n->members[i];
        if (m->role != BR_NODE_LEARNER || !m->promote)
            continue;
        if (!have_st) {
            br_raft_get_status(n->raft, &st);
            have_st = true;
        }
        uint64_t match = 0, next = 0;
        if (br_raft_get_progress(n->raft, m->id, &match, &next) < 0 || match < st.commit)
            continue;
        struct br_node_member bm = {
            .id = m->id, .host = m->host, .raft_port = m->raft_port, .client_addr = m->client_addr};
        uint8_t *ctx = NULL;
        long len = ctx_encode(&bm, false, &ctx);
        if (len < 0)
            continue;
        struct br_raft_conf_change cc = {.type = BR_RAFT_CC_ADD_VOTER, .node_id = m->id};
        uint64_t index = 0;
        int rc = br_raft_propose_conf_change(n->raft, &cc, ctx, (size_t)len, &index, NULL);
        free(ctx);
        if (rc == 0)
            nd_log(n, BR_NODE_LOG_INFO, "learner %llu caught up (match %llu): promoting at %llu",
                   (unsigned long long)m->id, (unsigned long long)match, (unsigned long long)index);
        /* One at a time; give the change (or the reason it failed) time. */
        n->promote_next_tick = n->ticks + n->cfg.election_ticks;
        break;
    }
}

/* ------------------------------------------------------------ API */

static int cmp_info(const void *a, const void *b) {
    const struct br_node_member_info *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t br_node_members(br_node *n, struct br_node_member_info *out, size_t cap) {
    struct br_node_member_info all[BR_RAFT_MAX_MEMBERS];
    pthread_mutex_lock(&n->members_mu);
    size_t k = n->n_members;
    for (size_t i = 0; i < k; i++) {
        const struct nd_member *m = &n->members[i];
        all[i] = (struct br_node_member_info){
            .id = m->id, .role = m->role, .promote = m->promote, .raft_port = m->raft_port};
        snprintf(all[i].host, sizeof all[i].host, "%s", m->host);
        snprintf(all[i].client_addr, sizeof all[i].client_addr, "%s", m->client_addr);
    }
    pthread_mutex_unlock(&n->members_mu);
    qsort(all, k, sizeof all[0], cmp_info);
    for (size_t i = 0; i < k && i < cap; i++)
        out[i] = all[i];
    return k;
}

static int conf_request(br_node *n, uint32_t type, uint64_t id, uint8_t *ctx, size_t len,
                        br_node_done_fn cb, void *cbctx) {
    if (atomic_load(&n->role) != BR_RAFT_LEADER) {
        free(ctx);
        return BR_ENOTLEADER;
    }
    struct nd_req *r = calloc(1, sizeof(*r));
    if (!r) {
        free(ctx);
        return BR_ENOMEM;
    }
    r->kind = ND_REQ_CONF;
    r->cc_type = type;
    r->cc_id = id;
    r->data = ctx;
    r->len = len;
    r->cb = cb;
    r->ctx = cbctx;
    int rc = nd_enqueue(n, r);
    if (rc < 0) {
        free(ctx);
        free(r);
    }
    return rc;
}

int br_node_add_member(br_node *n, const struct br_node_member *m, unsigned flags,
                       br_node_done_fn cb, void *ctx) {
    if (!m || m->id == 0 || (flags & ~BR_NODE_ADD_LEARNER) || !cb)
        return BR_EINVAL;
    uint8_t *c = NULL;
    long len = ctx_encode(m, !(flags & BR_NODE_ADD_LEARNER), &c);
    if (len < 0)
        return (int)len;
    return conf_request(n, BR_RAFT_CC_ADD_LEARNER, m->id, c, (size_t)len, cb, ctx);
}

int br_node_remove_member(br_node *n, uint64_t id, br_node_done_fn cb, void *ctx) {
    if (id == 0 || !cb)
        return BR_EINVAL;
    return conf_request(n, BR_RAFT_CC_REMOVE, id, NULL, 0, cb, ctx);
}
