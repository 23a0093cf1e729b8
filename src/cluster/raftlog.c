/*
 * raftlog.c - br_raftlog: the Raft log on disk (API and crash model in
 * raftlog.h, summary in docs/RAFTLOG.md).
 *
 * Directory
 * ---------
 *   LOCK                           flock'd by the opener
 *   FFFFFFFFFFFFFFFFFFFF-SSSSSSSSSSSSSSSSSSSS.seg
 *                                  a segment: F = its first index, S = its
 *                                  sequence number (both 20-digit decimal)
 *   *.tmp                          a segment being created; deleted on open
 *
 * Segments are ordered by sequence number; the one with the highest is the
 * newest, the only one ever written to. Older ones are "sealed": synced and
 * truncated to the end of their last record.
 *
 * Segment header (64 bytes, little-endian)
 * ----------------------------------------
 *   +--------+-----------------------------------------------------------+
 *   |      0 | magic "BRRAFTSG" (8 bytes)                                |
 *   |      8 | u32 format version (1)                                    |
 *   |     12 | u32 flags: 0x1 RESET (the log starts over here: every     |
 *   |        |     segment with a lower sequence number is obsolete)     |
 *   |     16 | u64 sequence number (as in the file name, >= 1)           |
 *   |     24 | u64 first index (as in the file name): no entry in this   |
 *   |        |     segment has a lower index                             |
 *   |     32 | u64 prev term: term of entry first-1 when it was created  |
 *   |     40 | u64[2] reserved (0)                                       |
 *   |     56 | u64 checksum: XXH3-64 of bytes 0..55                      |
 *   +--------+-----------------------------------------------------------+
 *
 * followed by records, back to back, no padding:
 *
 *   +--------+-----------------------------------------------------------+
 *   |      0 | u64 checksum: XXH3-64, seeded with the segment's sequence |
 *   |        |     number, of bytes 8 .. end of the payload              |
 *   |      8 | u32 payload length                                        |
 *   |     12 | u8  kind: 1 entry, 2 hard state, 3 configuration,         |
 *   |        |     4 snapshot metadata                                   |
 *   |     13 | u8  entry type (enum br_raft_entry_type); 0 otherwise     |
 *   |     14 | u16 reserved (0)                                          |
 *   |     16 | u64 index (entries; 0 otherwise)                          |
 *   |     24 | u64 term (entries; 0 otherwise)                           |
 *   |     32 | u32 durable mark: the offset up to which this segment was |
 *   |        |     known synced when the record was written (<= its own |
 *   |        |     offset)                                               |
 *   |     36 | u32 reserved (0)                                          |
 *   |     40 | payload                                                   |
 *   +--------+-----------------------------------------------------------+
 *
 * Payloads: an entry's data; hard state = u64 term, u64 vote, u64 commit;
 * configuration = u32 n_voters, u32 n_learners, u64 ids (voters first),
 * at most BR_RAFT_MAX_MEMBERS in all; snapshot metadata = u64 index,
 * u64 term, then a configuration. The seed binds a record to its segment,
 * so a record copied from another segment never passes.
 *
 * A record is valid when its kind is known, reserved bytes are zero, its
 * length fits in the file (and is exact for hard state and configuration),
 * its mark does not exceed its offset and its checksum matches. An
 * all-zero header is the end of the data (segments are preallocated with
 * zeros).
 *
 * Every segment starts with three records: the snapshot metadata, the
 * configuration and the hard state current at its creation. After that,
 * records appear as they were written. Replay, in sequence order:
 *
 *   - the first segment, or a RESET one, starts the log: compaction point
 *     = (first - 1, prev term), no entries;
 *   - another segment must have first <= last + 1 of the log so far; if
 *     first <= last, the entries >= first are dropped (superseded), and
 *     prev term must equal the term of entry first - 1. A gap (first >
 *     last + 1) is allowed only when it lies wholly under the snapshot
 *     (it comes from deleting segments behind the snapshot); the log then
 *     restarts at first - 1;
 *   - an entry record for index i (first <= i <= last + 1, above the
 *     compaction point, term not below that of i - 1) drops every entry
 *     >= i and appends itself: a conflicting append is written as new
 *     records, never by overwriting old ones;
 *   - hard state, configuration, snapshot records replace the current one
 *     (term and snapshot index never decrease).
 *
 * Write order and fsyncs:
 *   - records are pwritten at the end of the newest segment, within its
 *     preallocated size (no size change to commit); br_raftlog_sync()
 *     calls fdatasync once for everything written;
 *   - a new segment is created as NAME.tmp, preallocated, its header and
 *     initial records written and fdatasynced, renamed, and the directory
 *     fsynced; before that, the previous newest segment is sealed
 *     (ftruncate to its data, fsync) so only the newest can be torn;
 *   - obsolete segments are unlinked (then the directory fsynced) only
 *     after whatever replaces them is durable; snapshot metadata is synced
 *     before compaction deletes anything.
 *
 * Open: a record of a sealed segment that is not valid (or data that ends
 * before the file does) is BR_ECORRUPT. In the newest segment, the first
 * record that is not valid ends the log. If a valid record follows it
 * whose durable mark lies beyond the bad offset, the bad bytes had been
 * synced: BR_ECORRUPT. Otherwise the bad bytes were never synced (a torn
 * or reordered write): they and everything after them are cut off - zeroed
 * and synced before anything new is written, so no stale record can ever
 * follow the end of the log.
 */
#include "br_io.h"
#include "raftlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitraft/error.h"

#define SEG_MAGIC   "BRRAFTSG"
#define SEG_VERSION 1u
#define SEG_HDR     64u
#define SEG_F_RESET 0x1u
#define REC_HDR     40u

enum rec_kind { REC_ENTRY = 1, REC_HARD_STATE = 2, REC_CONF = 3, REC_SNAPSHOT = 4 };

#define HS_LEN   24u
#define CONF_MAX (8u + 8u * BR_RAFT_MAX_MEMBERS)
/* Header plus the three initial records, at most. */
#define INIT_MAX (SEG_HDR + 3u * REC_HDR + 16u + 2u * CONF_MAX + HS_LEN)
/* Flush the encode buffer past this many bytes. */
#define BUF_FLUSH (1u << 20)

static int default_fsync(int fd, int datasync) {
    return datasync ? fdatasync(fd) : fsync(fd);
}

int (*br_raftlog_fsync)(int fd, int datasync) = default_fsync;

#define SEG_NAME_LEN 45 /* 20 digits, '-', 20 digits, ".seg" */

/* ------------------------------------------------------------ encoding */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) {
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static bool conf_valid(const struct br_raft_conf_state *c) {
    return c->n_voters <= BR_RAFT_MAX_MEMBERS && c->n_learners <= BR_RAFT_MAX_MEMBERS &&
           c->n_voters + c->n_learners <= BR_RAFT_MAX_MEMBERS;
}

/* A copy of c with unused slots zeroed (so stored configurations compare
 * and print cleanly). c must be valid. */
static struct br_raft_conf_state conf_norm(const struct br_raft_conf_state *c) {
    struct br_raft_conf_state n = {.n_voters = c->n_voters, .n_learners = c->n_learners};
    memcpy(n.voters, c->voters, c->n_voters * sizeof(uint64_t));
    memcpy(n.learners, c->learners, c->n_learners * sizeof(uint64_t));
    return n;
}

static size_t conf_encode(uint8_t *p, const struct br_raft_conf_state *c) {
    put32(p, c->n_voters);
    put32(p + 4, c->n_learners);
    size_t at = 8;
    for (uint32_t i = 0; i < c->n_voters; i++, at += 8)
        put64(p + at, c->voters[i]);
    for (uint32_t i = 0; i < c->n_learners; i++, at += 8)
        put64(p + at, c->learners[i]);
    return at;
}

/* Decodes a configuration of exactly len bytes. 0, or -1 if malformed. */
static int conf_decode(const uint8_t *p, size_t len, struct br_raft_conf_state *c) {
    if (len < 8)
        return -1;
    uint32_t nv = get32(p), nl = get32(p + 4);
    if (nv > BR_RAFT_MAX_MEMBERS || nl > BR_RAFT_MAX_MEMBERS || nv + nl > BR_RAFT_MAX_MEMBERS ||
        len != 8 + 8 * (size_t)(nv + nl))
        return -1;
    memset(c, 0, sizeof(*c));
    c->n_voters = nv;
    c->n_learners = nl;
    for (uint32_t i = 0; i < nv; i++)
        c->voters[i] = get64(p + 8 + 8 * i);
    for (uint32_t i = 0; i < nl; i++)
        c->learners[i] = get64(p + 8 + 8 * (nv + i));
    return 0;
}

/* A decoded record header. */
struct rec {
    uint32_t len;
    uint8_t kind, etype;
    uint64_t index, term;
    uint32_t mark;
};

/*
 * Fills in the header of the record at p whose payload (len bytes) is
 * already at p + REC_HDR, checksum last.
 */
static void rec_seal(uint8_t *p, uint64_t seed, const struct rec *h) {
    put32(p + 8, h->len);
    p[12] = h->kind;
    p[13] = h->etype;
    put16(p + 14, 0);
    put64(p + 16, h->index);
    put64(p + 24, h->term);
    put32(p + 32, h->mark);
    put32(p + 36, 0);
    put64(p, XXH3_64bits_withSeed(p + 8, REC_HDR - 8 + h->len, seed));
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/*
 * Decodes the record at offset off of a segment (p points at it, avail
 * bytes readable). Returns 1 and fills *h when it is valid (see the top of
 * this file); 0 when its header is all zeros (end of data); -1 otherwise.
 * Payload contents beyond their lengths are checked by the caller.
 */
static int rec_decode(const uint8_t *p, uint64_t avail, uint64_t seed, uint64_t off,
                      struct rec *h) {
    if (avail < REC_HDR)
        return all_zero(p, (size_t)avail) ? 0 : -1;
    if (all_zero(p, REC_HDR))
        return 0;
    h->len = get32(p + 8);
    h->kind = p[12];
    h->etype = p[13];
    h->index = get64(p + 16);
    h->term = get64(p + 24);
    h->mark = get32(p + 32);
    if (h->kind < REC_ENTRY || h->kind > REC_SNAPSHOT || get16(p + 14) != 0 || get32(p + 36) != 0 ||
        h->mark > off || h->len > avail - REC_HDR)
        return -1;
    if (h->kind != REC_ENTRY && (h->etype != 0 || h->index != 0 || h->term != 0))
        return -1;
    if (h->kind == REC_HARD_STATE && h->len != HS_LEN)
        return -1;
    if (get64(p) != XXH3_64bits_withSeed(p + 8, REC_HDR - 8 + h->len, seed))
        return -1;
    return 1;
}

static void seg_header_encode(uint8_t *p, uint64_t seq, uint64_t first, uint64_t prev_term,
                              uint32_t flags) {
    memset(p, 0, SEG_HDR);
    memcpy(p, SEG_MAGIC, 8);
    put32(p + 8, SEG_VERSION);
    put32(p + 12, flags);
    put64(p + 16, seq);
    put64(p + 24, first);
    put64(p + 32, prev_term);
    put64(p + 56, XXH3_64bits(p, 56));
}

/* ------------------------------------------------------------ the log */

/* One segment file. */
struct seg {
    uint64_t seq;       /* sequence number (file name, header) */
    uint64_t first;     /* first index (file name, header) */
    uint64_t prev_term; /* term of first - 1 (header) */
    uint32_t flags;     /* SEG_F_* */
    int fd;             /* open (read-write) while newest; -1 once sealed */
    uint8_t *map;       /* read-only shared map of map_len bytes */
    size_t map_len;
    uint64_t size;            /* end of the valid data: the newest's write offset */
    _Atomic uint64_t durable; /* newest: offset up to which it is known synced */
    char name[SEG_NAME_LEN + 1];
};

/* One entry of the in-memory index: exactly what a read needs. */
struct ent {
    uint64_t term;
    const uint8_t *rec; /* the record in its segment's map; payload at rec + REC_HDR */
    uint32_t len;
    uint32_t type;
};

struct br_raftlog {
    struct br_raft_storage st;
    struct br_raftlog_options o;
    int dirfd, lockfd;
    char *dir;

    /* Segments in sequence order; the last is the newest (written). */
    struct seg **segs;
    size_t nsegs, segcap;
    uint64_t next_seq;

    /* The log: compaction point and entries p_index+1 .. p_index+n. */
    uint64_t p_index, p_term;
    struct ent *ents;
    size_t n, cap;
    struct br_raft_hard_state hs;
    struct br_raft_conf_state conf;
    struct br_raft_snapshot_meta snap;

    /* Records encoded and not yet pwritten (they go at newest->size). */
    uint8_t *buf;
    size_t buflen, bufcap;

    /* Nonzero once a write or sync failed: returned by every write. */
    _Atomic int broken;

    uint64_t bytes_written, rollovers, torn_cut;

    /*
     * Shared with br_raftlog_sync(), under mu: what a sync would cover
     * (published by the owner after each write), truncations made while
     * a sync runs, and the last coverage reported. sync_mu serializes
     * syncs.
     */
    pthread_mutex_t mu, sync_mu;
    struct {
        struct seg *seg; /* newest segment; valid while pub.seq is its seq */
        int fd;
        uint64_t seq, size;
        uint64_t last, last_term;
        struct br_raft_hard_state hs;
        struct br_raft_conf_state conf;
    } pub;
    bool tracking; /* a sync is running: note truncations */
    uint64_t trunc_low, trunc_low_term;
    uint64_t ticket_next, ticket_done; /* orders coverage reports */
    struct br_raftlog_durable durable;
    uint64_t syncs;
};

__attribute__((format(printf, 3, 4))) static void rl_log(const br_raftlog *log, int level,
                                                         const char *fmt, ...) {
    if (!log->o.log_fn)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log->o.log_fn(log->o.log_ctx, level, msg);
}

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
                                                         ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static struct seg *newest(const br_raftlog *log) {
    return log->segs[log->nsegs - 1];
}

static uint64_t last_index(const br_raftlog *log) {
    return log->p_index + log->n;
}

/* Term of i, for p_index <= i <= last_index. */
static uint64_t term_at(const br_raftlog *log, uint64_t i) {
    return i == log->p_index ? log->p_term : log->ents[i - log->p_index - 1].term;
}

static void seg_name(char *buf, size_t len, uint64_t first, uint64_t seq) {
    snprintf(buf, len, "%020" PRIu64 "-%020" PRIu64 ".seg", first, seq);
}

/* Parses a segment file name. 0, or -1 if name is not one. */
static int seg_name_parse(const char *name, uint64_t *first, uint64_t *seq) {
    if (strlen(name) != SEG_NAME_LEN || name[20] != '-' || strcmp(name + 41, ".seg") != 0)
        return -1;
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const char *p = name + 21 * k;
        for (int i = 0; i < 20; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -1;
            uint64_t d = (uint64_t)(p[i] - '0');
            if (v[k] > (UINT64_MAX - d) / 10)
                return -1;
            v[k] = v[k] * 10 + d;
        }
    }
    *first = v[0];
    *seq = v[1];
    return 0;
}

static void seg_free(struct seg *s) {
    if (!s)
        return;
    if (s->map)
        munmap(s->map, s->map_len);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* Reserves the blocks of [0, len): later pwrites within them change no
 * file size, so an fdatasync after them commits data only. Falls back to a
 * size change where the file system cannot preallocate. */
static int preallocate(int fd, uint64_t len) {
    if (fallocate(fd, 0, 0, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    return ftruncate(fd, (off_t)len) == 0 ? 0 : -errno;
}

/* Zeroes [off, off + len) of fd (keeping the space reserved). */
static int zero_range(int fd, uint64_t off, uint64_t len) {
    if (len == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    static const uint8_t zeros[4096];
    while (len > 0) {
        size_t k = len < sizeof zeros ? (size_t)len : sizeof zeros;
        int rc = br_pwrite_all(fd, zeros, k, off);
        if (rc)
            return rc;
        off += k;
        len -= k;
    }
    return 0;
}

/* rename(2) that fails with EEXIST rather than replace `to`, where the
 * file system supports it. */
static int rename_noreplace(int dirfd, const char *from, const char *to) {
    if (renameat2(dirfd, from, dirfd, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (faccessat(dirfd, to, F_OK, 0) == 0) {
        errno = EEXIST;
        return -1;
    }
    return renameat(dirfd, from, dirfd, to);
}

static int sync_dir(br_raftlog *log) {
    return br_raftlog_fsync(log->dirfd, 0) == 0 ? 0 : -errno;
}

/* Marks the log broken by rc (the first error sticks) and returns rc. */
static int set_broken(br_raftlog *log, int rc) {
    int zero = 0;
    atomic_compare_exchange_strong(&log->broken, &zero, rc);
    return rc;
}

/* ------------------------------------------------------------ coverage */

/* Copies the owner's state into pub (mu held). */
static void publish_locked(br_raftlog *log) {
    struct seg *s = newest(log);
    log->pub.seg = s;
    log->pub.fd = s->fd;
    log->pub.seq = s->seq;
    log->pub.size = s->size;
    log->pub.last = last_index(log);
    log->pub.last_term = term_at(log, log->pub.last);
    log->pub.hs = log->hs;
    log->pub.conf = log->conf;
}

static void publish(br_raftlog *log) {
    pthread_mutex_lock(&log->mu);
    publish_locked(log);
    pthread_mutex_unlock(&log->mu);
}

/* Everything written so far is durable (the owner just synced it all):
 * publish and record the coverage (mu held). */
static void all_durable_locked(br_raftlog *log) {
    publish_locked(log);
    struct seg *s = newest(log);
    atomic_store(&s->durable, s->size);
    log->ticket_done = ++log->ticket_next;
    log->durable = (struct br_raftlog_durable){.last_index = log->pub.last,
                                               .last_term = log->pub.last_term,
                                               .hs = log->hs,
                                               .conf = log->conf};
}

/* The owner replaces entries >= i (mu held): a running sync must not
 * report them. */
static void note_truncation_locked(br_raftlog *log, uint64_t i, uint64_t prev_term) {
    if (log->tracking && i < log->trunc_low) {
        log->trunc_low = i;
        log->trunc_low_term = prev_term;
    }
}

int br_raftlog_sync(br_raftlog *log, struct br_raftlog_durable *d) {
    pthread_mutex_lock(&log->sync_mu);
    pthread_mutex_lock(&log->mu);
    int rc = atomic_load(&log->broken);
    if (rc) {
        pthread_mutex_unlock(&log->mu);
        pthread_mutex_unlock(&log->sync_mu);
        return rc;
    }
    /* Everything published was pwritten to pub.fd (older segments were
     * synced when sealed). The owner may close that descriptor as soon as
     * mu is released (a rollover), so sync a duplicate. */
    uint64_t seq = log->pub.seq, size = log->pub.size, ticket = ++log->ticket_next;
    struct br_raftlog_durable cov = {.last_index = log->pub.last,
                                     .last_term = log->pub.last_term,
                                     .hs = log->pub.hs,
                                     .conf = log->pub.conf};
    int fd = fcntl(log->pub.fd, F_DUPFD_CLOEXEC, 0);
    log->tracking = true;
    log->trunc_low = UINT64_MAX;
    pthread_mutex_unlock(&log->mu);

    bool io_failed = false;
    if (fd < 0) {
        rc = -errno;
    } else {
        if (br_raftlog_fsync(fd, 1) != 0) {
            rc = errno ? -errno : -EIO;
            io_failed = true;
        }
        close(fd);
    }

    pthread_mutex_lock(&log->mu);
    log->tracking = false;
    if (rc == 0) {
        if (log->trunc_low <= cov.last_index) {
            cov.last_index = log->trunc_low - 1;
            cov.last_term = log->trunc_low_term;
        }
        if (log->pub.seq == seq && atomic_load(&log->pub.seg->durable) < size)
            atomic_store(&log->pub.seg->durable, size);
        if (ticket > log->ticket_done) {
            log->ticket_done = ticket;
            log->durable = cov;
        }
        log->syncs++;
    } else if (io_failed) {
        set_broken(log, rc);
    }
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->sync_mu);
    if (rc) {
        rl_log(log, BR_RAFT_LOG_WARN, "%s: sync failed: %s%s", log->dir, br_strerror(rc),
               io_failed ? " (the log is broken until reopened)" : "");
        return rc;
    }
    if (d)
        *d = cov;
    return 0;
}

void br_raftlog_durable(br_raftlog *log, struct br_raftlog_durable *d) {
    pthread_mutex_lock(&log->mu);
    *d = log->durable;
    pthread_mutex_unlock(&log->mu);
}

/* ------------------------------------------------------------ segments */

/* Encodes the three records every segment starts with into p (at segment
 * offset SEG_HDR); returns their size. */
static size_t init_records(uint8_t *p, uint64_t seq, const struct br_raft_snapshot_meta *snap,
                           const struct br_raft_conf_state *conf,
                           const struct br_raft_hard_state *hs) {
    size_t at = 0;
    struct rec h = {.kind = REC_SNAPSHOT};
    put64(p + at + REC_HDR, snap->index);
    put64(p + at + REC_HDR + 8, snap->term);
    h.len = (uint32_t)(16 + conf_encode(p + at + REC_HDR + 16, &snap->conf));
    rec_seal(p + at, seq, &h);
    at += REC_HDR + h.len;
    h = (struct rec){.kind = REC_CONF};
    h.len = (uint32_t)conf_encode(p + at + REC_HDR, conf);
    rec_seal(p + at, seq, &h);
    at += REC_HDR + h.len;
    h = (struct rec){.kind = REC_HARD_STATE, .len = HS_LEN};
    put64(p + at + REC_HDR, hs->term);
    put64(p + at + REC_HDR + 8, hs->vote);
    put64(p + at + REC_HDR + 16, hs->commit);
    rec_seal(p + at, seq, &h);
    return at + REC_HDR + h.len;
}

/*
 * Creates segment (first, next sequence number) durably: written as a
 * .tmp, preallocated to at least segment_size and room for `need` more
 * bytes, header and initial records (snap, conf, hs) written and synced,
 * renamed, directory synced; then mapped. On success *out is the segment
 * (not yet in the list) and *renamed is unused. On error nothing is left
 * on disk unless *renamed is set (the file exists under its name: the
 * caller must treat the log as broken).
 */
static int seg_create(br_raftlog *log, uint64_t first, uint64_t prev_term, uint32_t flags,
                      const struct br_raft_snapshot_meta *snap,
                      const struct br_raft_conf_state *conf, const struct br_raft_hard_state *hs,
                      size_t need, struct seg **out, bool *renamed) {
    *renamed = false;
    struct seg *s = calloc(1, sizeof(*s));
    if (!s)
        return BR_ENOMEM;
    s->fd = -1;
    s->seq = log->next_seq;
    s->first = first;
    s->prev_term = prev_term;
    s->flags = flags;
    seg_name(s->name, sizeof s->name, first, s->seq);
    char tmp[SEG_NAME_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->name);

    uint64_t cap = log->o.segment_size;
    if (cap < INIT_MAX + need)
        cap = (INIT_MAX + need + 4095) & ~(uint64_t)4095;
    uint8_t init[INIT_MAX];
    seg_header_encode(init, s->seq, first, prev_term, flags);
    size_t len = SEG_HDR + init_records(init + SEG_HDR, s->seq, snap, conf, hs);

    int rc = 0;
    s->fd = openat(log->dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = preallocate(s->fd, cap)) != 0 || (rc = br_pwrite_all(s->fd, init, len, 0)) != 0)
        goto fail;
    /* Never replace an existing segment, whatever happens. */
    if (br_raftlog_fsync(s->fd, 1) != 0 || rename_noreplace(log->dirfd, tmp, s->name) != 0) {
        rc = -errno;
        goto fail;
    }
    *renamed = true;
    if ((rc = sync_dir(log)) != 0)
        goto fail;
    s->map_len = (size_t)cap;
    void *m = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    s->map = m;
    s->size = len;
    atomic_init(&s->durable, len);
    log->next_seq++;
    *out = s;
    return 0;
fail:
    if (!*renamed)
        unlinkat(log->dirfd, tmp, 0);
    seg_free(s);
    return rc;
}

static int segs_reserve(br_raftlog *log, size_t n) {
    if (n <= log->segcap)
        return 0;
    size_t cap = log->segcap ? log->segcap * 2 : 8;
    while (cap < n)
        cap *= 2;
    struct seg **v = realloc(log->segs, cap * sizeof(*v));
    if (!v)
        return BR_ENOMEM;
    log->segs = v;
    log->segcap = cap;
    return 0;
}

/* Unlinks and frees segs[k] (not the newest), keeping the order. The
 * caller syncs the directory. */
static int seg_delete(br_raftlog *log, size_t k) {
    struct seg *s = log->segs[k];
    if (unlinkat(log->dirfd, s->name, 0) != 0 && errno != ENOENT)
        return -errno;
    seg_free(s);
    memmove(log->segs + k, log->segs + k + 1, (log->nsegs - k - 1) * sizeof(*log->segs));
    log->nsegs--;
    return 0;
}

/* Writes the encode buffer at the end of the newest segment. */
static int flush(br_raftlog *log) {
    if (log->buflen == 0)
        return 0;
    struct seg *s = newest(log);
    int rc = br_pwrite_all(s->fd, log->buf, log->buflen, s->size);
    if (rc)
        return set_broken(log, rc);
    s->size += log->buflen;
    log->bytes_written += log->buflen;
    log->buflen = 0;
    return 0;
}

/*
 * Starts a new newest segment at `first` (whose previous entry has term
 * prev_term) with room for a record of `need` bytes: the current newest is
 * sealed first (truncated to its data and synced), so that only the newest
 * segment can ever hold a torn record. Everything written is durable
 * afterwards. An error breaks the log.
 */
static int roll(br_raftlog *log, uint64_t first, uint64_t prev_term, size_t need) {
    int rc = flush(log);
    if (rc)
        return rc;
    if ((rc = segs_reserve(log, log->nsegs + 1)) != 0)
        return rc;
    struct seg *old = newest(log);
    /* fsync, not fdatasync: the size change is what seals it. */
    if (ftruncate(old->fd, (off_t)old->size) != 0 || br_raftlog_fsync(old->fd, 0) != 0)
        return set_broken(log, errno ? -errno : -EIO);
    struct seg *s;
    bool renamed;
    rc = seg_create(log, first, prev_term, 0, &log->snap, &log->conf, &log->hs, need, &s, &renamed);
    if (rc)
        return set_broken(log, rc);
    pthread_mutex_lock(&log->mu);
    log->segs[log->nsegs++] = s;
    all_durable_locked(log);
    pthread_mutex_unlock(&log->mu);
    /* A sync that duplicated old->fd before the swap still holds its own. */
    close(old->fd);
    old->fd = -1;
    log->rollovers++;
    return 0;
}

static int buf_reserve(br_raftlog *log, size_t more) {
    if (log->buflen + more <= log->bufcap)
        return 0;
    size_t cap = log->bufcap ? log->bufcap : 64 << 10;
    while (cap < log->buflen + more)
        cap *= 2;
    uint8_t *b = realloc(log->buf, cap);
    if (!b)
        return BR_ENOMEM;
    log->buf = b;
    log->bufcap = cap;
    return 0;
}

/*
 * Makes room for a record of `need` bytes in the encode buffer, rolling
 * over to a new segment when the newest cannot hold it. Returns 0 and the
 * record's segment offset in *off and its bytes in *p.
 */
static int rec_reserve(br_raftlog *log, size_t need, uint64_t *off, uint8_t **p) {
    struct seg *s = newest(log);
    int rc;
    if (s->size + log->buflen + need > s->map_len) {
        uint64_t last = last_index(log);
        if ((rc = roll(log, last + 1, term_at(log, last), need)) != 0)
            return rc;
        s = newest(log);
    } else if (log->buflen >= BUF_FLUSH && (rc = flush(log)) != 0) {
        return rc;
    }
    if ((rc = buf_reserve(log, need)) != 0)
        return rc;
    *off = s->size + log->buflen;
    *p = log->buf + log->buflen;
    log->buflen += need;
    return 0;
}

/* Appends a hard state, configuration or snapshot record (payload at pl). */
static int put_state(br_raftlog *log, uint8_t kind, const uint8_t *pl, size_t len) {
    uint64_t off;
    uint8_t *p;
    int rc = rec_reserve(log, REC_HDR + len, &off, &p);
    if (rc)
        return rc;
    memcpy(p + REC_HDR, pl, len);
    struct seg *s = newest(log);
    struct rec h = {.len = (uint32_t)len, .kind = kind, .mark = (uint32_t)atomic_load(&s->durable)};
    rec_seal(p, s->seq, &h);
    return 0;
}

/* ------------------------------------------------------------ open */

/* Replay state across segments (see the top of this file). */
struct replay {
    bool started;
    uint64_t gap_index; /* highest first-1 of a segment after a gap */
    const char *gap_name;
};

static int ents_reserve(br_raftlog *log, size_t n) {
    if (n <= log->cap)
        return 0;
    size_t cap = log->cap ? log->cap * 2 : 1024;
    while (cap < n)
        cap *= 2;
    struct ent *v = realloc(log->ents, cap * sizeof(*v));
    if (!v)
        return BR_ENOMEM;
    log->ents = v;
    log->cap = cap;
    return 0;
}

/* Applies the start of segment s to the replay. */
static int replay_seg(br_raftlog *log, const struct seg *s, struct replay *rp, char *err,
                      size_t errlen) {
    uint64_t last = last_index(log);
    if (!rp->started || (s->flags & SEG_F_RESET) || s->first > last + 1) {
        if (rp->started && !(s->flags & SEG_F_RESET) && s->first - 1 > rp->gap_index) {
            rp->gap_index = s->first - 1;
            rp->gap_name = s->name;
        }
        if (s->first == 0) {
            seterr(err, errlen, "%s: first index 0", s->name);
            return BR_ECORRUPT;
        }
        rp->started = true;
        log->p_index = s->first - 1;
        log->p_term = s->prev_term;
        log->n = 0;
        return 0;
    }
    if (s->first <= log->p_index) {
        seterr(err, errlen, "%s: starts at index %" PRIu64 ", below the log's start %" PRIu64,
               s->name, s->first, log->p_index + 1);
        return BR_ECORRUPT;
    }
    if (term_at(log, s->first - 1) != s->prev_term) {
        seterr(err, errlen,
               "%s: previous term %" PRIu64 " does not match term %" PRIu64 " of entry %" PRIu64,
               s->name, s->prev_term, term_at(log, s->first - 1), s->first - 1);
        return BR_ECORRUPT;
    }
    log->n = s->first - 1 - log->p_index;
    return 0;
}

/* Applies one valid record (at offset off of s) to the replay. */
static int replay_rec(br_raftlog *log, const struct seg *s, uint64_t off, const struct rec *h,
                      char *err, size_t errlen) {
    const uint8_t *pl = s->map + off + REC_HDR;
    switch (h->kind) {
    case REC_ENTRY: {
        uint64_t i = h->index, last = last_index(log);
        if (i < s->first || i <= log->p_index || i > last + 1) {
            seterr(err, errlen,
                   "%s: entry %" PRIu64 " at offset %" PRIu64 " does not continue the log (%" PRIu64
                   "..%" PRIu64 ")",
                   s->name, i, off, log->p_index + 1, last);
            return BR_ECORRUPT;
        }
        if (h->term < term_at(log, i - 1)) {
            seterr(err, errlen,
                   "%s: entry %" PRIu64 " at offset %" PRIu64 " has term %" PRIu64
                   " below its predecessor's %" PRIu64,
                   s->name, i, off, h->term, term_at(log, i - 1));
            return BR_ECORRUPT;
        }
        log->n = i - 1 - log->p_index;
        if (ents_reserve(log, log->n + 1) != 0)
            return BR_ENOMEM;
        log->ents[log->n++] = (struct ent){h->term, s->map + off, h->len, h->etype};
        return 0;
    }
    case REC_HARD_STATE: {
        struct br_raft_hard_state hs = {get64(pl), get64(pl + 8), get64(pl + 16)};
        if (hs.term < log->hs.term) {
            seterr(err, errlen,
                   "%s: hard state at offset %" PRIu64 " goes back to term %" PRIu64
                   " from %" PRIu64,
                   s->name, off, hs.term, log->hs.term);
            return BR_ECORRUPT;
        }
        log->hs = hs;
        return 0;
    }
    case REC_CONF:
        if (conf_decode(pl, h->len, &log->conf) != 0)
            break;
        return 0;
    case REC_SNAPSHOT: {
        struct br_raft_snapshot_meta m;
        if (h->len < 16 || conf_decode(pl + 16, h->len - 16, &m.conf) != 0)
            break;
        m.index = get64(pl);
        m.term = get64(pl + 8);
        if (m.index < log->snap.index) {
            seterr(err, errlen, "%s: snapshot at offset %" PRIu64 " goes back to index %" PRIu64,
                   s->name, off, m.index);
            return BR_ECORRUPT;
        }
        log->snap = m;
        return 0;
    }
    }
    seterr(err, errlen, "%s: malformed record at offset %" PRIu64, s->name, off);
    return BR_ECORRUPT;
}

/* Offset of the first valid record starting after `off` and before `end`
 * whose durable mark lies beyond off, or 0. Records are not aligned: every
 * offset is tried, with a cheap filter before the checksum. */
static uint64_t find_durable_after(const struct seg *s, uint64_t off, uint64_t end) {
    for (uint64_t q = off + 1; q < end && q + REC_HDR <= s->map_len; q++) {
        const uint8_t *p = s->map + q;
        if (p[12] < REC_ENTRY || p[12] > REC_SNAPSHOT || p[14] || p[15] || get32(p + 32) <= off)
            continue;
        struct rec h;
        if (rec_decode(p, s->map_len - q, s->seq, q, &h) == 1)
            return q;
    }
    return 0;
}

/* End of the last nonzero byte in [from, len) of map, or from if none. */
static uint64_t data_end(const uint8_t *map, uint64_t from, uint64_t len) {
    uint64_t e = len;
    while (e > from && (e & 7))
        if (map[--e])
            return e + 1;
    while (e >= from + 8) {
        uint64_t w;
        memcpy(&w, map + e - 8, 8);
        if (w)
            break;
        e -= 8;
    }
    while (e > from && !map[e - 1])
        e--;
    return e;
}

/*
 * Scans the records of s into the replay. A sealed segment must be valid
 * to its last byte. The newest ends at its first invalid record; a torn
 * tail is cut off (zeroed and synced), durable damage is BR_ECORRUPT.
 */
static int scan_seg(br_raftlog *log, struct seg *s, bool is_newest, char *err, size_t errlen) {
    uint64_t end = s->map_len, off = SEG_HDR;
    int rc;
    while (off < end) {
        struct rec h;
        if (rec_decode(s->map + off, end - off, s->seq, off, &h) != 1)
            break;
        if ((rc = replay_rec(log, s, off, &h, err, errlen)) != 0)
            return rc;
        off += REC_HDR + h.len;
    }
    s->size = off;
    if (!is_newest) {
        if (off != end) {
            seterr(err, errlen, "%s: corrupt record at offset %" PRIu64 " (of %" PRIu64 " bytes)",
                   s->name, off, end);
            return BR_ECORRUPT;
        }
        return 0;
    }
    uint64_t dend = data_end(s->map, off, end);
    atomic_init(&s->durable, off);
    if (dend == off)
        return 0; /* a clean end: zeros from here on */
    uint64_t q = find_durable_after(s, off, dend);
    if (q) {
        seterr(err, errlen,
               "%s: corrupt record at offset %" PRIu64 ", followed by a record at offset %" PRIu64
               " written after it was synced",
               s->name, off, q);
        return BR_ECORRUPT;
    }
    rl_log(log, BR_RAFT_LOG_WARN,
           "%s/%s: torn tail at offset %" PRIu64 " cut off (%" PRIu64 " bytes were never synced)",
           log->dir, s->name, off, dend - off);
    log->torn_cut += dend - off;
    if ((rc = zero_range(s->fd, off, dend - off)) != 0 || br_raftlog_fsync(s->fd, 1) != 0) {
        rc = rc ? rc : -errno;
        seterr(err, errlen, "%s: cannot cut the torn tail: %s", s->name, br_strerror(rc));
        return rc;
    }
    return 0;
}

/* Reads and checks the header of the segment file whose name gave
 * (first, seq); fills s. */
static int seg_load_header(br_raftlog *log, struct seg *s, char *err, size_t errlen) {
    uint8_t h[SEG_HDR];
    int fd = openat(log->dirfd, s->name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        seterr(err, errlen, "%s: cannot open: %s", s->name, br_strerror(rc));
        return rc;
    }
    ssize_t r = pread(fd, h, SEG_HDR, 0);
    close(fd);
    if (r != SEG_HDR || memcmp(h, SEG_MAGIC, 8) != 0 || get64(h + 56) != XXH3_64bits(h, 56)) {
        seterr(err, errlen, "%s: bad segment header at offset 0", s->name);
        return BR_ECORRUPT;
    }
    if (get32(h + 8) != SEG_VERSION) {
        seterr(err, errlen, "%s: unsupported format version %" PRIu32, s->name, get32(h + 8));
        return BR_EFORMAT;
    }
    s->flags = get32(h + 12);
    s->prev_term = get64(h + 32);
    if (get64(h + 16) != s->seq || get64(h + 24) != s->first || (s->flags & ~SEG_F_RESET) ||
        get64(h + 40) || get64(h + 48)) {
        seterr(err, errlen, "%s: segment header does not match its name", s->name);
        return BR_ECORRUPT;
    }
    return 0;
}

/* Opens and maps s: the newest read-write, preallocated to segment_size. */
static int seg_map(br_raftlog *log, struct seg *s, bool is_newest, char *err, size_t errlen) {
    int rc = 0;
    s->fd = openat(log->dirfd, s->name, (is_newest ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    uint64_t len = (uint64_t)st.st_size;
    if (is_newest && len < log->o.segment_size) {
        if ((rc = preallocate(s->fd, log->o.segment_size)) != 0)
            goto fail;
        len = log->o.segment_size;
    }
    if (len < SEG_HDR || len > SIZE_MAX) {
        seterr(err, errlen, "%s: file too short (%" PRIu64 " bytes)", s->name, len);
        return BR_ECORRUPT;
    }
    s->map_len = (size_t)len;
    void *m = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    s->map = m;
    if (!is_newest) {
        close(s->fd);
        s->fd = -1;
    }
    return 0;
fail:
    seterr(err, errlen, "%s: cannot open: %s", s->name, br_strerror(rc));
    return rc;
}

static int seq_cmp(const void *a, const void *b) {
    const struct seg *x = *(struct seg *const *)a, *y = *(struct seg *const *)b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Lists the segment files of the directory into log->segs (sorted by
 * sequence number) and deletes leftover .tmp files. */
static int list_segments(br_raftlog *log, char *err, size_t errlen) {
    int fd = dup(log->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        seterr(err, errlen, "%s: cannot list: %s", log->dir, br_strerror(rc));
        return rc;
    }
    int rc = 0;
    struct dirent *de;
    bool removed = false;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl > 8 && strcmp(de->d_name + nl - 8, ".seg.tmp") == 0) {
            /* An interrupted creation: never renamed, never part of the log. */
            unlinkat(log->dirfd, de->d_name, 0);
            removed = true;
            continue;
        }
        uint64_t first, seq;
        if (seg_name_parse(de->d_name, &first, &seq) != 0)
            continue;
        struct seg *s = calloc(1, sizeof(*s));
        if (!s || segs_reserve(log, log->nsegs + 1) != 0) {
            free(s);
            rc = BR_ENOMEM;
            break;
        }
        s->fd = -1;
        s->first = first;
        s->seq = seq;
        memcpy(s->name, de->d_name, SEG_NAME_LEN + 1);
        log->segs[log->nsegs++] = s;
    }
    closedir(d);
    if (rc)
        return rc;
    if (log->nsegs > 1)
        qsort(log->segs, log->nsegs, sizeof(*log->segs), seq_cmp);
    for (size_t i = 1; i < log->nsegs; i++)
        if (log->segs[i]->seq == log->segs[i - 1]->seq) {
            seterr(err, errlen, "%s and %s: same sequence number", log->segs[i - 1]->name,
                   log->segs[i]->name);
            return BR_ECORRUPT;
        }
    if (removed && (rc = sync_dir(log)) != 0)
        seterr(err, errlen, "%s: cannot sync: %s", log->dir, br_strerror(rc));
    return rc;
}

/* Reads the whole log back from the listed segments. */
static int load(br_raftlog *log, char *err, size_t errlen) {
    int rc;
    size_t reset = 0;
    for (size_t i = 0; i < log->nsegs; i++) {
        if ((rc = seg_load_header(log, log->segs[i], err, errlen)) != 0)
            return rc;
        if (log->segs[i]->flags & SEG_F_RESET)
            reset = i;
    }
    log->next_seq = log->segs[log->nsegs - 1]->seq + 1;
    /* Segments older than the newest RESET one are what an interrupted
     * snapshot install left behind. */
    bool deleted = false;
    while (reset > 0) {
        rl_log(log, BR_RAFT_LOG_INFO, "%s/%s: obsolete (a snapshot was installed), deleted",
               log->dir, log->segs[0]->name);
        if ((rc = seg_delete(log, 0)) != 0) {
            seterr(err, errlen, "%s: cannot delete: %s", log->segs[0]->name, br_strerror(rc));
            return rc;
        }
        reset--;
        deleted = true;
    }
    struct replay rp = {0};
    for (size_t i = 0; i < log->nsegs; i++) {
        struct seg *s = log->segs[i];
        bool is_newest = i + 1 == log->nsegs;
        if ((rc = seg_map(log, s, is_newest, err, errlen)) != 0 ||
            (rc = replay_seg(log, s, &rp, err, errlen)) != 0 ||
            (rc = scan_seg(log, s, is_newest, err, errlen)) != 0)
            return rc;
    }
    if (rp.gap_name && rp.gap_index > log->snap.index) {
        seterr(err, errlen,
               "%s: entries before index %" PRIu64 " are missing and not covered by the "
               "snapshot at %" PRIu64,
               rp.gap_name, rp.gap_index + 1, log->snap.index);
        return BR_ECORRUPT;
    }
    if (log->p_index > log->snap.index) {
        seterr(err, errlen,
               "%s: the log starts at index %" PRIu64 " but the snapshot covers only up to %" PRIu64
               " (a segment is missing)",
               log->segs[0]->name, log->p_index + 1, log->snap.index);
        return BR_ECORRUPT;
    }
    /* A segment whose whole range a newer one replaced: leftover of a
     * conflict that reached below the newest segment. */
    for (size_t i = 0; i + 1 < log->nsegs;) {
        bool superseded = false;
        for (size_t k = i + 1; k < log->nsegs; k++)
            superseded |= log->segs[k]->first <= log->segs[i]->first;
        if (!superseded) {
            i++;
            continue;
        }
        rl_log(log, BR_RAFT_LOG_INFO, "%s/%s: superseded by a newer segment, deleted", log->dir,
               log->segs[i]->name);
        if ((rc = seg_delete(log, i)) != 0) {
            seterr(err, errlen, "%s: cannot delete: %s", log->segs[i]->name, br_strerror(rc));
            return rc;
        }
        deleted = true;
    }
    if (deleted && (rc = sync_dir(log)) != 0) {
        seterr(err, errlen, "%s: cannot sync: %s", log->dir, br_strerror(rc));
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ storage view */

static int cb_initial_state(void *ctx, struct br_raft_hard_state *hs,
                            struct br_raft_conf_state *conf) {
    br_raftlog *log = ctx;
    *hs = log->hs;
    *conf = log->conf;
    return 0;
}

static int cb_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                      struct br_raft_entry *out, size_t *n) {
    br_raftlog *log = ctx;
    *n = 0;
    if (lo <= log->p_index || hi > last_index(log) + 1 || lo >= hi)
        return BR_EINVAL;
    uint64_t bytes = 0;
    size_t k = 0;
    const struct ent *e = log->ents + (lo - log->p_index - 1);
    for (uint64_t i = lo; i < hi; i++, k++, e++) {
        if (k > 0 && bytes + e->len > max_bytes)
            break;
        bytes += e->len;
        out[k] = (struct br_raft_entry){.term = e->term,
                                        .index = i,
                                        .type = e->type,
                                        .len = e->len,
                                        .data = e->len ? (uint8_t *)(uintptr_t)(e->rec + REC_HDR)
                                                       : NULL};
    }
    *n = k;
    return 0;
}

static int cb_term(void *ctx, uint64_t index, uint64_t *term) {
    return br_raftlog_term(ctx, index, term);
}

static int cb_first_index(void *ctx, uint64_t *index) {
    *index = br_raftlog_first_index(ctx);
    return 0;
}

static int cb_last_index(void *ctx, uint64_t *index) {
    *index = br_raftlog_last_index(ctx);
    return 0;
}

static int cb_snapshot(void *ctx, struct br_raft_snapshot_meta *meta) {
    br_raftlog_snapshot(ctx, meta);
    return 0;
}

/* ------------------------------------------------------------ API */

void br_raftlog_options_init(struct br_raftlog_options *o) {
    memset(o, 0, sizeof(*o));
    o->segment_size = BR_RAFTLOG_DEFAULT_SEGMENT;
}

static void log_free(br_raftlog *log) {
    for (size_t i = 0; i < log->nsegs; i++)
        seg_free(log->segs[i]);
    free(log->segs);
    free(log->ents);
    free(log->buf);
    if (log->dirfd >= 0)
        close(log->dirfd);
    if (log->lockfd >= 0)
        close(log->lockfd); /* releases the flock */
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->sync_mu);
    free(log->dir);
    free(log);
}

int br_raftlog_open(const char *dir, const struct br_raftlog_options *opts, br_raftlog **out,
                    char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    struct br_raftlog_options o;
    br_raftlog_options_init(&o);
    if (opts)
        o = *opts;
    if (!o.segment_size)
        o.segment_size = BR_RAFTLOG_DEFAULT_SEGMENT;
    if (o.segment_size < BR_RAFTLOG_MIN_SEGMENT || o.segment_size > BR_RAFTLOG_MAX_SEGMENT) {
        seterr(err, errlen, "segment size %" PRIu64 " out of range", o.segment_size);
        return BR_EINVAL;
    }
    br_raftlog *log = calloc(1, sizeof(*log));
    if (!log || !(log->dir = strdup(dir))) {
        free(log);
        seterr(err, errlen, "%s: out of memory", dir);
        return BR_ENOMEM;
    }
    log->o = o;
    log->dirfd = log->lockfd = -1;
    pthread_mutex_init(&log->mu, NULL);
    pthread_mutex_init(&log->sync_mu, NULL);
    atomic_init(&log->broken, 0);
    log->st = (struct br_raft_storage){.ctx = log,
                                       .initial_state = cb_initial_state,
                                       .entries = cb_entries,
                                       .term = cb_term,
                                       .first_index = cb_first_index,
                                       .last_index = cb_last_index,
                                       .snapshot = cb_snapshot};
    int rc = 0;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        seterr(err, errlen, "%s: cannot create: %s", dir, br_strerror(rc));
        goto fail;
    }
    log->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dirfd < 0) {
        rc = -errno;
        seterr(err, errlen, "%s: cannot open: %s", dir, br_strerror(rc));
        goto fail;
    }
    log->lockfd = openat(log->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (log->lockfd < 0 || flock(log->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? BR_ELOCKED : -errno;
        seterr(err, errlen, "%s/LOCK: %s", dir, br_strerror(rc));
        goto fail;
    }
    if ((rc = list_segments(log, err, errlen)) != 0)
        goto fail;
    if (log->nsegs == 0) {
        /* A new log: snapshot point 0/0, nothing else. */
        log->next_seq = 1;
        struct seg *s;
        bool renamed;
        if ((rc = segs_reserve(log, 1)) != 0 ||
            (rc = seg_create(log, 1, 0, SEG_F_RESET, &log->snap, &log->conf, &log->hs, 0, &s,
                             &renamed)) != 0) {
            seterr(err, errlen, "%s: cannot create the first segment: %s", dir, br_strerror(rc));
            goto fail;
        }
        log->segs[log->nsegs++] = s;
    } else if ((rc = load(log, err, errlen)) != 0) {
        goto fail;
    }
    pthread_mutex_lock(&log->mu);
    all_durable_locked(log); /* open synced whatever it changed */
    pthread_mutex_unlock(&log->mu);
    *out = log;
    return 0;
fail:
    log_free(log);
    return rc;
}

int br_raftlog_close(br_raftlog *log) {
    if (!log)
        return 0;
    int rc = atomic_load(&log->broken);
    if (rc == 0)
        rc = br_raftlog_sync(log, NULL);
    log_free(log);
    return rc;
}

const struct br_raft_storage *br_raftlog_storage(br_raftlog *log) {
    return &log->st;
}

int br_raftlog_append(br_raftlog *log, const struct br_raft_entry *ents, size_t n) {
    int rc = atomic_load(&log->broken);
    if (rc)
        return rc;
    while (n > 0 && ents[0].index <= log->p_index) {
        ents++;
        n--;
    }
    if (n == 0)
        return 0;
    uint64_t first = ents[0].index, last = last_index(log);
    if (first > last + 1)
        return BR_EINVAL;
    uint64_t prev = term_at(log, first - 1);
    size_t max_len = log->o.segment_size - INIT_MAX - REC_HDR;
    for (size_t i = 0; i < n; i++) {
        const struct br_raft_entry *e = &ents[i];
        if (e->index != first + i || e->term < prev || e->type > 0xff || (e->len && !e->data))
            return BR_EINVAL;
        if (e->len > max_len)
            return BR_ETOOBIG;
        prev = e->term;
    }
    if ((rc = ents_reserve(log, (size_t)(first - 1 - log->p_index) + n)) != 0)
        return rc;
    if (first <= last) {
        /* A conflict: entries >= first are replaced. */
        pthread_mutex_lock(&log->mu);
        log->n = first - 1 - log->p_index;
        note_truncation_locked(log, first, term_at(log, first - 1));
        publish_locked(log);
        pthread_mutex_unlock(&log->mu);
        if (first < newest(log)->first) {
            /* It reaches below the newest segment, whose records could
             * not supersede entries before its first index: start a
             * segment at `first`, then delete those it replaces whole. */
            if ((rc = roll(log, first, term_at(log, first - 1), 0)) != 0)
                return rc;
            bool deleted = false;
            for (size_t k = 0; k + 1 < log->nsegs;) {
                if (log->segs[k]->first < first) {
                    k++;
                    continue;
                }
                if ((rc = seg_delete(log, k)) != 0)
                    return rc;
                deleted = true;
            }
            if (deleted && (rc = sync_dir(log)) != 0)
                return rc;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct br_raft_entry *e = &ents[i];
        uint64_t off;
        uint8_t *p;
        if ((rc = rec_reserve(log, REC_HDR + e->len, &off, &p)) != 0)
            return rc;
        struct seg *s = newest(log);
        if (e->len)
            memcpy(p + REC_HDR, e->data, e->len);
        struct rec h = {.len = e->len,
                        .kind = REC_ENTRY,
                        .etype = (uint8_t)e->type,
                        .index = e->index,
                        .term = e->term,
                        .mark = (uint32_t)atomic_load(&s->durable)};
        rec_seal(p, s->seq, &h);
        log->ents[log->n++] = (struct ent){e->term, s->map + off, e->len, e->type};
    }
    rc = flush(log);
    publish(log);
    return rc;
}

int br_raftlog_set_hard_state(br_raftlog *log, const struct br_raft_hard_state *hs) {
    int rc = atomic_load(&log->broken);
    if (rc)
        return rc;
    if (hs->term == log->hs.term && hs->vote == log->hs.vote && hs->commit == log->hs.commit)
        return 0;
    if (hs->term < log->hs.term)
        return BR_EINVAL;
    log->hs = *hs;
    uint8_t pl[HS_LEN];
    put64(pl, hs->term);
    put64(pl + 8, hs->vote);
    put64(pl + 16, hs->commit);
    if ((rc = put_state(log, REC_HARD_STATE, pl, sizeof pl)) == 0)
        rc = flush(log);
    publish(log);
    return rc;
}

static bool conf_equal(const struct br_raft_conf_state *a, const struct br_raft_conf_state *b) {
    return a->n_voters == b->n_voters && a->n_learners == b->n_learners &&
           memcmp(a->voters, b->voters, a->n_voters * sizeof(uint64_t)) == 0 &&
           memcmp(a->learners, b->learners, a->n_learners * sizeof(uint64_t)) == 0;
}

int br_raftlog_set_conf(br_raftlog *log, const struct br_raft_conf_state *conf) {
    int rc = atomic_load(&log->broken);
    if (rc)
        return rc;
    if (!conf_valid(conf))
        return BR_EINVAL;
    if (conf_equal(conf, &log->conf))
        return 0;
    log->conf = conf_norm(conf);
    uint8_t pl[CONF_MAX];
    size_t len = conf_encode(pl, conf);
    if ((rc = put_state(log, REC_CONF, pl, len)) == 0)
        rc = flush(log);
    publish(log);
    return rc;
}

int br_raftlog_set_snapshot(br_raftlog *log, uint64_t index,
                            const struct br_raft_conf_state *conf) {
    int rc = atomic_load(&log->broken);
    if (rc)
        return rc;
    if (index < log->snap.index || index < log->p_index || index > last_index(log) ||
        !conf_valid(conf))
        return BR_EINVAL;
    log->snap = (struct br_raft_snapshot_meta){
        .index = index, .term = term_at(log, index), .conf = conf_norm(conf)};
    uint8_t pl[16 + CONF_MAX];
    put64(pl, log->snap.index);
    put64(pl + 8, log->snap.term);
    size_t len = 16 + conf_encode(pl + 16, conf);
    if ((rc = put_state(log, REC_SNAPSHOT, pl, len)) == 0)
        rc = flush(log);
    publish(log);
    return rc ? rc : br_raftlog_sync(log, NULL);
}

int br_raftlog_compact(br_raftlog *log, uint64_t index) {
    if (index <= log->p_index)
        return 0;
    if (index > log->snap.index || index > last_index(log))
        return BR_EINVAL;
    size_t k = (size_t)(index - log->p_index);
    log->p_term = term_at(log, index);
    memmove(log->ents, log->ents + k, (log->n - k) * sizeof(*log->ents));
    log->n -= k;
    log->p_index = index;
    /* Entries only move forward through the segments (a newer segment
     * replaces everything from its first index on), so the segments before
     * the one holding entry index+1 hold nothing the log still needs. */
    size_t keep = log->nsegs - 1;
    if (log->n > 0)
        for (size_t j = 0; j < log->nsegs; j++) {
            const struct seg *s = log->segs[j];
            if (log->ents[0].rec >= s->map && log->ents[0].rec < s->map + s->map_len) {
                keep = j;
                break;
            }
        }
    int rc = 0;
    size_t deleted = 0;
    for (; deleted < keep; deleted++)
        if ((rc = seg_delete(log, 0)) != 0)
            break;
    if (deleted) {
        int rc2 = sync_dir(log);
        rc = rc ? rc : rc2;
    }
    return rc;
}

int br_raftlog_apply_snapshot(br_raftlog *log, const struct br_raft_snapshot_meta *meta) {
    int rc = atomic_load(&log->broken);
    if (rc)
        return rc;
    if (meta->index < log->snap.index || !conf_valid(&meta->conf))
        return BR_EINVAL;
    if ((rc = flush(log)) != 0 || (rc = segs_reserve(log, log->nsegs + 1)) != 0)
        return rc;
    struct br_raft_snapshot_meta m = *meta;
    m.conf = conf_norm(&meta->conf);
    struct seg *s;
    bool renamed;
    rc = seg_create(log, m.index + 1, m.term, SEG_F_RESET, &m, &m.conf, &log->hs, 0, &s, &renamed);
    if (rc)
        return renamed ? set_broken(log, rc) : rc;
    /* Durable from here on: the new segment supersedes all others. */
    size_t nold = log->nsegs;
    pthread_mutex_lock(&log->mu);
    note_truncation_locked(log, m.index + 1, m.term);
    log->segs[log->nsegs++] = s;
    log->p_index = m.index;
    log->p_term = m.term;
    log->n = 0;
    log->snap = m;
    log->conf = m.conf;
    all_durable_locked(log);
    pthread_mutex_unlock(&log->mu);
    for (size_t i = 0; i < nold && rc == 0; i++)
        rc = seg_delete(log, 0);
    int rc2 = sync_dir(log);
    return rc ? rc : rc2;
}

int br_raftlog_bootstrap(br_raftlog *log, const struct br_raft_conf_state *conf) {
    if (conf->n_voters == 0 || !conf_valid(conf) || last_index(log) > 0 || log->snap.index > 0 ||
        log->hs.term > 0)
        return BR_EINVAL;
    struct br_raft_hard_state old = log->hs;
    log->hs = (struct br_raft_hard_state){.term = 1, .vote = 0, .commit = 1};
    struct br_raft_snapshot_meta m = {.index = 1, .term = 1, .conf = *conf};
    int rc = br_raftlog_apply_snapshot(log, &m);
    if (rc && !atomic_load(&log->broken))
        log->hs = old;
    return rc;
}

uint64_t br_raftlog_first_index(const br_raftlog *log) {
    return log->p_index + 1;
}

uint64_t br_raftlog_last_index(const br_raftlog *log) {
    return last_index(log);
}

int br_raftlog_term(const br_raftlog *log, uint64_t index, uint64_t *term) {
    if (index < log->p_index || index > last_index(log))
        return BR_EINVAL;
    *term = term_at(log, index);
    return 0;
}

void br_raftlog_hard_state(const br_raftlog *log, struct br_raft_hard_state *hs) {
    *hs = log->hs;
}

void br_raftlog_conf(const br_raftlog *log, struct br_raft_conf_state *conf) {
    *conf = log->conf;
}

void br_raftlog_snapshot(const br_raftlog *log, struct br_raft_snapshot_meta *meta) {
    *meta = log->snap;
}

void br_raftlog_stats(br_raftlog *log, struct br_raftlog_stats *st) {
    memset(st, 0, sizeof(*st));
    struct seg *s = newest(log);
    st->segments = log->nsegs;
    pthread_mutex_lock(&log->mu);
    st->syncs = log->syncs;
    pthread_mutex_unlock(&log->mu);
    st->bytes_written = log->bytes_written;
    st->rollovers = log->rollovers;
    snprintf(st->active_name, sizeof st->active_name, "%s", s->name);
    st->active_size = s->size;
    st->active_durable = atomic_load(&s->durable);
    st->torn_bytes_cut = log->torn_cut;
}
