/*
 * node_snapshot.c - snapshots: streaming the engine to a lagging follower,
 * installing one, and compacting the raft log behind the engine.
 *
 * What a snapshot is: the leader's raft log advertises a snapshot point S
 * (br_raftlog_set_snapshot), chosen as the engine's last sequence number
 * after a br_engine_sync(), so the engine durably holds every write up to
 * S before the log forgets them. To send it, the leader takes a
 * br_engine_checkpoint() (hard links, no copy) holding every write up to
 * C >= S, and streams its files; the follower's engine then holds C. The
 * entries S+1..C that follow are replays the engine skips (their sequence
 * numbers are at or below its last one), so C > S is harmless.
 *
 * Wire format: every transport payload starts with a kind byte (node_int.h).
 * Snapshot envelopes, little-endian:
 *
 *   BEGIN  kind=2, stream u64, index u64, term u64
 *   CHUNK  kind=3, stream u64, flags u8 (1 = last chunk of this file),
 *          name_len u8, name, offset u64, data (to the end of the payload)
 *   DONE   kind=4, stream u64, n_files u32, bytes u64, then the encoded
 *          raft SNAPSHOT message (br_raft_encode)
 *
 * Files go one after the other, each in order, chunk by chunk; the sender
 * queues a chunk only while the peer's transport queue holds less than
 * four chunks, so memory stays bounded whatever the store's size. The
 * transport checksums every frame; the receiver checks names (a plain file
 * name: letters, digits, '.', '_', '-'), stream ids, offsets and counts,
 * and drops the stream at the first mismatch (a lost chunk when a
 * connection broke): the leader's core then probes again and sends a new
 * snapshot.
 *
 * Install order on the follower (crash-safe): chunks go to <dir>/snap-in
 * and each file is fsynced when complete; at DONE the directory is fsynced
 * and the SNAPSHOT message is stepped into the core. When the core's Ready
 * says to install it: the engine is closed (readers wait on the node's
 * engine lock), <dir>/data is renamed to <dir>/data.old, snap-in to data,
 * <dir> is fsynced, the new engine opens, and only then does the raft log
 * take the snapshot point (br_raftlog_apply_snapshot). A crash before the
 * second rename leaves data.old alone: open renames it back. A crash after
 * it leaves both: open deletes data.old. A crash before the raft log took
 * the snapshot leaves an engine ahead of the log, which the restart clamps
 * to the commit index (replays are skipped).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node_int.h"

#define SNAP_F_LAST 1u

/* ------------------------------------------------------------ files */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int nd_rmtree(const char *path) {
    if (!path)
        return 0;
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -errno;
}

int nd_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static bool exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

int nd_snap_recover_dirs(br_node *n) {
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s.old", n->data_dir);
    int rc = 0;
    if (exists(old)) {
        if (exists(n->data_dir)) {
            nd_log(n, BR_NODE_LOG_WARN, "finishing an interrupted snapshot install");
            rc = nd_rmtree(old);
        } else {
            nd_log(n, BR_NODE_LOG_WARN, "undoing an interrupted snapshot install");
            rc = rename(old, n->data_dir) == 0 ? nd_fsync_dir(n->dir) : -errno;
        }
        if (rc < 0)
            return rc;
    }
    rc = nd_rmtree(n->staging_dir);
    DIR *d = opendir(n->dir);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "snap-out-", 9) == 0) {
            char p[PATH_MAX];
            if (snprintf(p, sizeof p, "%s/%s", n->dir, de->d_name) < (int)sizeof p)
                nd_rmtree(p);
        }
    }
    closedir(d);
    return rc;
}

static bool good_name(const char *s, size_t len) {
    if (len == 0 || len > 63 || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ------------------------------------------------------------ sending */

void nd_snap_abort_send(br_node *n, int slot, bool report) {
    struct nd_snap_send *s = &n->snd[slot];
    if (!s->active)
        return;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i]);
    free(s->names);
    s->names = NULL;
    s->n_names = s->file = 0;
    nd_rmtree(s->dir);
    s->active = false;
    if (report) {
        n->snap_report_fail |= 1ull << slot;
        nd_log(n, BR_NODE_LOG_INFO, "snapshot stream to %llu abandoned",
               (unsigned long long)n->members[slot].id);
    }
}

static int list_files(struct nd_snap_send *s) {
    DIR *d = opendir(s->dir);
    if (!d)
        return -errno;
    int rc = 0;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strcmp(nm, "LOCK") == 0 || !good_name(nm, strlen(nm)))
            continue;
        char p[PATH_MAX + 64];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", s->dir, nm) >= (int)sizeof p || stat(p, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (s->n_names == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(s->names, cap * sizeof(*nn));
            if (!nn) {
                rc = BR_ENOMEM;
                break;
            }
            s->names = nn;
        }
        if (!(s->names[s->n_names] = strdup(nm))) {
            rc = BR_ENOMEM;
            break;
        }
        s->n_names++;
    }
    closedir(d);
    if (rc == 0 && s->n_names > 1)
        qsort(s->names, s->n_names, sizeof(char *), cmp_names);
    return rc;
}

void nd_snap_start(br_node *n, const struct br_raft_msg *m) {
    int slot = nd_member_slot(n, m->to);
    if (slot < 0)
        return;
    struct nd_snap_send *s = &n->snd[slot];
    nd_snap_abort_send(n, slot, false);
    snprintf(s->dir, sizeof s->dir, "%s/snap-out-%llu-%llu", n->dir, (unsigned long long)m->to,
             (unsigned long long)++n->stream_seq);
    nd_rmtree(s->dir);
    uint64_t seq = 0;
    int rc = br_engine_checkpoint(n->engine, s->dir, &seq);
    if (rc < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "checkpoint for a snapshot to %llu: %s",
               (unsigned long long)m->to, br_strerror(rc));
        n->snap_report_fail |= 1ull << slot;
        return;
    }
    s->active = true;
    s->fd = -1;
    s->off = s->size = s->bytes = 0;
    s->msg = *m;
    s->msg.entries = NULL;
    s->msg.n_entries = 0;
    s->stream = (n->id << 40) ^ n->stream_seq ^ ((uint64_t)rand() << 16);
    /* Index 1 is the bootstrap point (nothing to hold); any later snapshot
     * point is an engine sequence number (nd_maybe_compact). */
    if (seq < m->snapshot.index && m->snapshot.index > 1) {
        nd_log(n, BR_NODE_LOG_WARN, "checkpoint at %llu is older than snapshot %llu",
               (unsigned long long)seq, (unsigned long long)m->snapshot.index);
        nd_snap_abort_send(n, slot, true);
        return;
    }
    if ((rc = nd_members_save(n, s->dir)) < 0)
        nd_log(n, BR_NODE_LOG_WARN, "members' addresses left out of the snapshot to %llu: %s",
               (unsigned long long)m->to, br_strerror(rc));
    if ((rc = list_files(s)) < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "listing %s: %s", s->dir, br_strerror(rc));
        nd_snap_abort_send(n, slot, true);
        return;
    }
    uint8_t b[25];
    b[0] = ND_MSG_SNAP_BEGIN;
    put_u64(b + 1, s->stream);
    put_u64(b + 9, m->snapshot.index);
    put_u64(b + 17, m->snapshot.term);
    struct iovec iov = {b, sizeof b};
    if (nd_send_bytes(n, m->to, &iov, 1) < 0) {
        nd_snap_abort_send(n, slot, true);
        return;
    }
    nd_log(n, BR_NODE_LOG_INFO, "streaming snapshot %llu (checkpoint at %llu, %zu files) to %llu",
           (unsigned long long)m->snapshot.index, (unsigned long long)seq, s->n_names,
           (unsigned long long)m->to);
}

/* Sends what fits of slot's stream. 0 to go on later, 1 when done, <0. */
static int pump_one(br_node *n, int slot, uint8_t *buf) {
    struct nd_snap_send *s = &n->snd[slot];
    uint64_t to = n->members[slot].id;
    for (;;) {
        struct br_transport_peer_stats ps;
        if (br_transport_peer_stats(n->tr, to, &ps) < 0 || !ps.connected)
            return BR_ECLOSED;
        if (ps.queued_bytes >= 4ull * n->chunk)
            return 0;
        if (s->file < s->n_names) {
            const char *nm = s->names[s->file];
            if (s->fd < 0) {
                char p[PATH_MAX + 64];
                if (snprintf(p, sizeof p, "%s/%s", s->dir, nm) >= (int)sizeof p)
                    return -ENAMETOOLONG;
                s->fd = open(p, O_RDONLY | O_CLOEXEC);
                struct stat st;
                if (s->fd < 0 || fstat(s->fd, &st) != 0)
                    return -errno;
                s->off = 0;
                s->size = (uint64_t)st.st_size;
            }
            size_t want = s->size - s->off < n->chunk ? (size_t)(s->size - s->off) : n->chunk;
            size_t got = 0;
            while (got < want) {
                ssize_t r = pread(s->fd, buf + got, want - got, (off_t)(s->off + got));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    return r < 0 ? -errno : BR_ECORRUPT; /* file shrank */
                got += (size_t)r;
            }
            bool last = s->off + got == s->size;
            size_t nl = strlen(nm);
            uint8_t h[1 + 8 + 2 + 64 + 8];
            h[0] = ND_MSG_SNAP_CHUNK;
            put_u64(h + 1, s->stream);
            h[9] = last ? SNAP_F_LAST : 0;
            h[10] = (uint8_t)nl;
            memcpy(h + 11, nm, nl);
            put_u64(h + 11 + nl, s->off);
            struct iovec iov[2] = {{h, 19 + nl}, {buf, got}};
            int rc = nd_send_bytes(n, to, iov, got ? 2 : 1);
            if (rc < 0)
                return rc;
            s->off += got;
            s->bytes += got;
            if (last) {
                close(s->fd);
                s->fd = -1;
                s->file++;
            }
            continue;
        }
        size_t rl = br_raft_encoded_size(&s->msg);
        uint8_t *d = malloc(21 + rl);
        if (!d)
            return BR_ENOMEM;
        d[0] = ND_MSG_SNAP_DONE;
        put_u64(d + 1, s->stream);
        uint32_t nf = (uint32_t)s->n_names;
        for (int i = 0; i < 4; i++)
            d[9 + i] = (uint8_t)(nf >> (8 * i));
        put_u64(d + 13, s->bytes);
        long el = br_raft_encode(&s->msg, d + 21, rl);
        int rc = el < 0 ? (int)el : 0;
        if (rc == 0) {
            struct iovec iov = {d, 21 + (size_t)el};
            rc = nd_send_bytes(n, to, &iov, 1);
        }
        free(d);
        return rc < 0 ? rc : 1;
    }
}

void nd_snap_pump(br_node *n) {
    uint8_t *buf = NULL;
    for (size_t i = 0; i < n->n_members; i++) {
        struct nd_snap_send *s = &n->snd[i];
        if (!s->active)
            continue;
        if (!buf && !(buf = malloc(n->chunk)))
            return;
        int rc = pump_one(n, (int)i, buf);
        if (rc < 0) {
            nd_log(n, BR_NODE_LOG_WARN, "snapshot stream to %llu: %s",
                   (unsigned long long)n->members[i].id, br_strerror(rc));
            nd_snap_abort_send(n, (int)i, true);
        } else if (rc == 1) {
            nd_log(n, BR_NODE_LOG_INFO, "snapshot %llu sent to %llu (%zu files, %llu bytes)",
                   (unsigned long long)s->msg.snapshot.index, (unsigned long long)n->members[i].id,
                   s->n_names, (unsigned long long)s->bytes);
            n->c_snap_sent++;
            nd_snap_abort_send(n, (int)i, false); /* cleans up */
            n->snap_report_ok |= 1ull << i;
        }
    }
    free(buf);
}

/* ------------------------------------------------------------ receiving */

void nd_snap_discard_recv(br_node *n) {
    struct nd_snap_recv *r = &n->rcv;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (r->active)
        nd_rmtree(n->staging_dir);
    r->active = r->complete = false;
}

static void recv_fail(br_node *n, const char *why, int rc) {
    nd_log(n, BR_NODE_LOG_WARN, "snapshot from %llu dropped: %s%s%s",
           (unsigned long long)n->rcv.from, why, rc ? ": " : "", rc ? br_strerror(rc) : "");
    nd_snap_discard_recv(n);
}

static void on_begin(br_node *n, uint64_t from, const uint8_t *p, size_t len) {
    if (len != 25)
        return;
    nd_snap_discard_recv(n);
    nd_rmtree(n->staging_dir);
    struct nd_snap_recv *r = &n->rcv;
    if (mkdir(n->staging_dir, 0755) != 0) {
        nd_log(n, BR_NODE_LOG_WARN, "%s: %s", n->staging_dir, strerror(errno));
        return;
    }
    r->active = true;
    r->complete = false;
    r->stream = get_u64(p + 1);
    r->index = get_u64(p + 9);
    r->term = get_u64(p + 17);
    r->from = from;
    r->fd = -1;
    r->off = 0;
    r->files = 0;
    r->bytes = 0;
    nd_log(n, BR_NODE_LOG_INFO, "receiving snapshot %llu from %llu", (unsigned long long)r->index,
           (unsigned long long)from);
}

static void on_chunk(br_node *n, uint64_t from, const uint8_t *p, size_t len) {
    struct nd_snap_recv *r = &n->rcv;
    if (!r->active || r->complete || from != r->from || len < 11 || get_u64(p + 1) != r->stream)
        return;
    uint8_t flags = p[9];
    size_t nl = p[10];
    if (len < 19 + nl || !good_name((const char *)p + 11, nl) || (flags & ~SNAP_F_LAST)) {
        recv_fail(n, "malformed chunk", 0);
        return;
    }
    uint64_t off = get_u64(p + 11 + nl);
    const uint8_t *data = p + 19 + nl;
    size_t dl = len - 19 - nl;
    if (r->fd < 0) {
        if (off != 0) {
            recv_fail(n, "chunk out of order", 0);
            return;
        }
        memcpy(r->name, p + 11, nl);
        r->name[nl] = 0;
        char path[PATH_MAX + 64];
        if (snprintf(path, sizeof path, "%s/%s", n->staging_dir, r->name) >= (int)sizeof path) {
            recv_fail(n, r->name, -ENAMETOOLONG);
            return;
        }
        r->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (r->fd < 0) {
            recv_fail(n, r->name, -errno);
            return;
        }
        r->off = 0;
    } else if (strlen(r->name) != nl || memcmp(r->name, p + 11, nl) != 0 || off != r->off) {
        recv_fail(n, "chunk out of order", 0);
        return;
    }
    size_t done = 0;
    while (done < dl) {
        ssize_t w = pwrite(r->fd, data + done, dl - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            recv_fail(n, r->name, w < 0 ? -errno : -EIO);
            return;
        }
        done += (size_t)w;
    }
    r->off += dl;
    r->bytes += dl;
    if (flags & SNAP_F_LAST) {
        int rc = fdatasync(r->fd) == 0 ? 0 : -errno;
        close(r->fd);
        r->fd = -1;
        if (rc < 0) {
            recv_fail(n, r->name, rc);
            return;
        }
        r->files++;
    }
}

static void on_done(br_node *n, uint64_t from, const uint8_t *p, size_t len) {
    struct nd_snap_recv *r = &n->rcv;
    if (!r->active || r->complete || from != r->from || len < 21 || get_u64(p + 1) != r->stream)
        return;
    uint32_t nf =
        (uint32_t)p[9] | (uint32_t)p[10] << 8 | (uint32_t)p[11] << 16 | (uint32_t)p[12] << 24;
    uint64_t bytes = get_u64(p + 13);
    if (r->fd >= 0 || nf != r->files || bytes != r->bytes) {
        recv_fail(n, "incomplete stream", 0);
        return;
    }
    struct br_raft_msg m;
    long rc = br_raft_decode(p + 21, len - 21, &m);
    if (rc < 0) {
        recv_fail(n, "bad SNAPSHOT message", (int)rc);
        return;
    }
    if (m.type != BR_RAFT_MSG_SNAPSHOT || m.from != from || m.to != n->id ||
        m.snapshot.index != r->index || m.snapshot.term != r->term) {
        br_raft_msg_free(&m);
        recv_fail(n, "SNAPSHOT message does not match the stream", 0);
        return;
    }
    int frc = nd_fsync_dir(n->staging_dir);
    if (frc < 0) {
        br_raft_msg_free(&m);
        recv_fail(n, "fsync", frc);
        return;
    }
    r->complete = true;
    nd_log(n, BR_NODE_LOG_INFO, "snapshot %llu received (%u files, %llu bytes)",
           (unsigned long long)r->index, r->files, (unsigned long long)r->bytes);
    rc = br_raft_step(n->raft, &m);
    br_raft_msg_free(&m);
    if (rc < 0)
        nd_log(n, BR_NODE_LOG_WARN, "core refused the snapshot: %s", br_strerror((int)rc));
    /* Install now, before another stream could reuse the staging dir. */
    nd_process(n);
    if (r->complete)
        nd_snap_discard_recv(n);
}

void nd_snap_on_message(br_node *n, uint64_t from, const uint8_t *p, size_t len) {
    switch (p[0]) {
    case ND_MSG_SNAP_BEGIN:
        on_begin(n, from, p, len);
        break;
    case ND_MSG_SNAP_CHUNK:
        on_chunk(n, from, p, len);
        break;
    case ND_MSG_SNAP_DONE:
        on_done(n, from, p, len);
        break;
    default:
        nd_log(n, BR_NODE_LOG_WARN, "unknown message kind %u from %llu", p[0],
               (unsigned long long)from);
    }
}

int nd_snap_install(br_node *n, const struct br_raft_snapshot_meta *meta) {
    struct nd_snap_recv *r = &n->rcv;
    if (!r->complete || r->index != meta->index) {
        nd_log(n, BR_NODE_LOG_ERROR, "asked to install snapshot %llu, which was not received",
               (unsigned long long)meta->index);
        return BR_EPROTOCOL;
    }
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s.old", n->data_dir);
    pthread_rwlock_wrlock(&n->engine_lock);
    int rc = br_engine_close(n->engine);
    n->engine = NULL;
    if (rc < 0)
        nd_log(n, BR_NODE_LOG_WARN, "closing the engine for a snapshot: %s", br_strerror(rc));
    nd_rmtree(old);
    rc = 0;
    if (rename(n->data_dir, old) != 0 || rename(n->staging_dir, n->data_dir) != 0)
        rc = -errno;
    if (rc == 0)
        rc = nd_fsync_dir(n->dir);
    int mrc = rc == 0 ? nd_members_adopt(n) : 0;
    if (mrc < 0) /* addresses only: the install goes on */
        nd_log(n, BR_NODE_LOG_WARN, "members' addresses sent with snapshot %llu: %s",
               (unsigned long long)meta->index, br_strerror(mrc));
    char err[256] = "";
    if (rc == 0)
        rc = br_engine_open(n->data_dir, &n->eopts, &n->engine, err, sizeof err);
    pthread_rwlock_unlock(&n->engine_lock);
    r->active = r->complete = false;
    if (rc < 0) {
        nd_log(n, BR_NODE_LOG_ERROR, "swapping in snapshot %llu: %s %s",
               (unsigned long long)meta->index, br_strerror(rc), err);
        return rc;
    }
    nd_rmtree(old);
    rc = br_raftlog_apply_snapshot(n->log, meta);
    if (rc < 0)
        return rc;
    br_engine_stats es;
    br_engine_stats_get(n->engine, &es);
    n->applied = meta->index;
    atomic_store(&n->applied_pub, meta->index);
    n->compact_mark = meta->index;
    n->engine_gen++;
    n->c_snap_installed++;
    nd_log(n, BR_NODE_LOG_INFO, "installed snapshot %llu (term %llu): engine at %llu, %llu keys",
           (unsigned long long)meta->index, (unsigned long long)meta->term,
           (unsigned long long)es.last_seq, (unsigned long long)es.keys);
    return 0;
}

/* ------------------------------------------------------------ compaction */

/* On a pool thread. Holds the engine lock shared, so a snapshot install
 * (which takes it exclusively to close the engine) waits for the sync. */
static void compact_sync(uv_work_t *w) {
    br_node *n = w->data;
    pthread_rwlock_rdlock(&n->engine_lock);
    n->compact_rc = n->engine ? br_engine_sync(n->engine) : BR_ECLOSED;
    pthread_rwlock_unlock(&n->engine_lock);
}

static void compact_synced(uv_work_t *w, int status) {
    br_node *n = w->data;
    n->compact_busy = false;
    if (status < 0 || n->stopped || atomic_load(&n->fatal) || n->compact_gen != n->engine_gen)
        return;
    int rc = n->compact_rc;
    if (rc < 0) {
        nd_fatal(n, rc, "syncing the engine before compacting the raft log");
        return;
    }
    uint64_t s = n->compact_seq; /* on disk now: the sync began after it */
    struct br_raft_snapshot_meta cur;
    br_raftlog_snapshot(n->log, &cur);
    if (s <= cur.index || s > br_raftlog_last_index(n->log) ||
        s + 1 < br_raftlog_first_index(n->log))
        return;
    struct br_raft_conf_state conf;
    br_raft_get_conf(n->raft, &conf);
    rc = br_raftlog_set_snapshot(n->log, s, &conf);
    if (rc < 0) {
        nd_log(n, BR_NODE_LOG_WARN, "snapshot point %llu: %s", (unsigned long long)s,
               br_strerror(rc));
        return;
    }
    uint64_t to = s > n->compact_tail ? s - n->compact_tail : 0;
    if (to + 1 > br_raftlog_first_index(n->log)) {
        rc = br_raftlog_compact(n->log, to);
        if (rc < 0) {
            nd_log(n, BR_NODE_LOG_WARN, "compacting to %llu: %s", (unsigned long long)to,
                   br_strerror(rc));
            return;
        }
    }
    n->c_compactions++;
    nd_log(n, BR_NODE_LOG_DEBUG, "snapshot point %llu, log compacted to %llu",
           (unsigned long long)s, (unsigned long long)to);
}

void nd_maybe_compact(br_node *n) {
    if (n->compact_busy || n->applied < n->compact_mark + n->compact_every)
        return;
    n->compact_mark = n->applied;
    /* The log may forget an entry only once the engine has it on disk: sync
     * it off the loop, then record what it held before the sync began. */
    br_engine_stats es;
    br_engine_stats_get(n->engine, &es);
    n->compact_seq = es.last_seq;
    n->compact_gen = n->engine_gen;
    n->compact_work.data = n;
    int rc = uv_queue_work(&n->loop, &n->compact_work, compact_sync, compact_synced);
    if (rc < 0)
        nd_log(n, BR_NODE_LOG_WARN, "cannot start the engine sync: %s", uv_strerror(rc));
    else
        n->compact_busy = true;
}
