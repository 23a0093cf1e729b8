/*
 * engine.c - open, recovery, group commit, reads and close of the storage
 * engine (contract in include/bitraft/engine.h, file format in record.h).
 *
 * Write path. A writer queues itself (br_writer) under wmu. The writer at
 * the head of the queue is the leader: it takes a group of the writers
 * queued behind it, releases wmu, copies all their records into the active
 * file's map, calls fdatasync once (under BR_SYNC_ALWAYS), applies the group
 * to the index under the exclusive lock, then wakes the group and hands
 * leadership to the next writer in the queue. While one leader syncs, new
 * writers pile up, and the next leader writes them all with one sync: the
 * throughput of synced writes grows with the number of writers.
 *
 * Read path. A reader looks the key up under the shared lock, pins the file
 * (refs), drops the lock, checks the record (checksum, key) in the map and
 * copies the value out. A record is in the index only once it is durable,
 * so a reader never sees a write that a crash could take back.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/hint.h"
#include "engine/internal.h"

#define BR_GROUP_MAX_BYTES                                                                         \
    (4u << 20) /* a group takes at most this much, unless one writer is larger */
#define BR_MAX_FILE_CAP                                                                            \
    (2u << 30) /* offsets are 32 bits: file cap + one oversized batch < 4 GiB                      \
                */
#define BR_MAX_VALUE_CAP   (1u << 30)
#define BR_APPLY_AHEAD     8             /* index prefetch distance when applying a batch */
#define BR_SYNCS_IN_FLIGHT 1             /* concurrent fdatasyncs (engine.c: Group commit) */
#define BR_MAX_WRITE_BYTES (1536u << 20) /* one batch's records */

/* ---- Helpers ---------------------------------------------------------------- */

void br_engine_options_init(br_engine_options *o) {
    memset(o, 0, sizeof *o);
    o->max_file_size = 128u << 20;
    o->max_key_size = 64u << 10;
    o->max_value_size = 64u << 20;
    o->sync = BR_SYNC_ALWAYS;
    o->sync_interval_ms = 1000;
}

void br_engine_log(const br_engine *e, br_log_level lvl, const char *fmt, ...) {
    if (!e->o.log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->o.log(e->o.log_ctx, lvl, buf);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#define STAT_ADD(field, v) atomic_fetch_add_explicit(&e->field, (v), memory_order_relaxed)

int br_engine_check_op(const br_engine *e, const br_op *op) {
    if (op->klen == 0)
        return BR_EEMPTYKEY;
    if (op->klen > e->o.max_key_size)
        return BR_EKEYTOOBIG;
    if (!op->del && op->vlen > e->o.max_value_size)
        return BR_EVALTOOBIG;
    return 0;
}

static int add_file(br_engine *e, br_datafile *f) {
    if (f->id >= e->files_cap) {
        uint32_t cap = e->files_cap ? e->files_cap : 64;
        while (cap <= f->id)
            cap *= 2;
        br_datafile **nf = realloc(e->files, cap * sizeof *nf);
        if (!nf)
            return BR_ENOMEM;
        memset(nf + e->files_cap, 0, (cap - e->files_cap) * sizeof *nf);
        e->files = nf;
        e->files_cap = cap;
    }
    e->files[f->id] = f;
    e->nfiles++;
    return 0;
}

/* Accounts a record of `size` bytes in file_id as no longer live. */
static void mark_dead(br_engine *e, uint32_t file_id, uint64_t size) {
    br_datafile *f = file_id < e->files_cap ? e->files[file_id] : NULL;
    if (f) {
        f->live -= size;
        f->dead += size;
    }
}

/* Applies one record to the index: a put points the key at it, a tombstone
 * removes the key. Keeps the per-file live/dead counters exact. Returns
 * whether the key existed before. Caller holds the exclusive lock. */
static bool apply_record(br_engine *e, br_datafile *f, uint64_t off, const uint8_t *key,
                         uint32_t klen, uint32_t vlen, bool del) {
    uint64_t size = br_rec_size(klen, vlen);
    br_loc old;
    int existed;
    if (del) {
        existed = br_kd_del(e->kd, key, klen, &old);
        f->dead += size; /* a tombstone never holds a live value */
    } else {
        br_loc loc = {f->id, (uint32_t)off, vlen};
        existed = br_kd_put(e->kd, key, klen, loc, &old);
        f->live += size;
    }
    if (existed)
        mark_dead(e, old.file_id, br_rec_size(klen, old.vlen));
    return existed;
}

/* ---- Recovery ----------------------------------------------------------------- */

/*
 * Recovery reads every record of every file first, then builds the index in
 * one pass over the records sorted by key: inserting keys in order appends
 * to the rightmost leaf (hot in cache, nodes filled whole), where inserting
 * them in log order would be a cache miss per record.
 */
typedef struct rec_ent {
    uint64_t head;      /* key bytes [prefix, prefix + 8), big-endian: the sort key */
    const uint8_t *key; /* in the data file's map, or the hint's */
    uint32_t file_id;
    uint32_t offset;
    uint32_t vlen;
    uint32_t klen; /* top bit: tombstone */
} rec_ent;

#define REC_DEL 0x80000000u

typedef struct recov {
    rec_ent *v, *tmp;
    size_t n, cap;
    br_hint *hints; /* hints loaded: their maps hold keys until the build */
    size_t nhints;
} recov;

static int recov_push(recov *rv, uint32_t file_id, uint64_t off, const uint8_t *key, uint32_t klen,
                      uint32_t vlen, bool del) {
    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 4096;
        rec_ent *nv = realloc(rv->v, cap * sizeof *nv);
        if (!nv)
            return BR_ENOMEM;
        rv->v = nv;
        rv->cap = cap;
    }
    rv->v[rv->n++] = (rec_ent){0, key, file_id, (uint32_t)off, vlen, klen | (del ? REC_DEL : 0)};
    return 0;
}

static int recov_push_rec(recov *rv, const br_datafile *f, uint64_t off, const br_rec_hdr *h) {
    return recov_push(rv, f->id, off, f->map + off + BR_REC_HEADER_SIZE, h->klen, h->vlen,
                      h->flags & BR_REC_TOMBSTONE);
}

typedef struct pending_rec {
    uint64_t off;
    br_rec_hdr h;
} pending_rec;

static bool is_zero(const uint8_t *p, size_t n) {
    static const uint8_t zero[4096];
    while (n) {
        size_t m = n < sizeof zero ? n : sizeof zero;
        if (memcmp(p, zero, m) != 0)
            return false;
        p += m;
        n -= m;
    }
    return true;
}

/* Offset of the first valid record at or after from, or 0 if none. */
static uint64_t find_valid_after(const br_datafile *f, uint64_t from, uint64_t end) {
    for (uint64_t off = from; off + BR_REC_HEADER_SIZE <= end; off++) {
        br_rec_hdr h;
        if (br_get32(f->map + off + 4) == 0) /* key length 0: cheap reject */
            continue;
        if (br_rec_decode(f->map + off, end - off, &h) == 0)
            return off;
    }
    return 0;
}

/*
 * In the newest file: whether the records after a bad one at `off` are the
 * store's own, i.e. the damage is in the middle of the data and not a torn
 * write at its end. That is so when, from some offset after off, valid
 * records chain to the end of the data and the first of them carries the
 * next sequence number or the one after it (the bad record used one, unless
 * it was in a batch, whose records share theirs). Requiring the chain and
 * the numbers keeps a value that merely holds record-like bytes (values are
 * arbitrary) from passing for one.
 */
static bool valid_records_follow(const br_datafile *f, uint64_t off, uint64_t end,
                                 uint64_t last_seq) {
    for (uint64_t q = off + 1; (q = find_valid_after(f, q, end)) != 0; q++) {
        br_rec_hdr h;
        br_rec_decode(f->map + q, end - q, &h);
        if (h.seq < last_seq || h.seq > last_seq + 2)
            continue;
        uint64_t at = q;
        int d = 0;
        while (at < end && (d = br_rec_decode(f->map + at, end - at, &h)) == 0)
            at += br_rec_size(h.klen, h.vlen);
        if (at >= end || d == 1)
            return true;
    }
    return false;
}

/*
 * Scans file f (data up to `end`), applying its records to the index.
 * newest: f is the newest file; a bad record with nothing valid after it is
 * a torn tail and is cut off. On return f->size is the end of the valid
 * data. Returns 0 or BR_ECORRUPT (message in err).
 */
static int scan_file(br_engine *e, recov *rv, br_datafile *f, uint64_t end, bool newest, char *err,
                     size_t errlen) {
    char name[48];
    br_df_name(name, sizeof name, f->id);
    int rc = br_file_header_check(f->map, end, f->id);
    if (rc) {
        set_err(err, errlen, "%s: bad file header (%s)", name, br_strerror(rc));
        return rc;
    }
    pending_rec *pend = NULL;
    size_t npend = 0, pcap = 0;
    uint64_t off = BR_FILE_HEADER_SIZE;
    uint64_t last_seq = e->seq; /* of the last whole write before off */
    while (off < end) {
        br_rec_hdr h;
        int d = br_rec_decode(f->map + off, end - off, &h);
        /* End of data. Records are written in order, so nothing follows a
         * zero header in the newest file (recover() zeroes the rest for
         * good measure); a closed file must be zero to its end. */
        if (d == 1 && (newest || is_zero(f->map + off, end - off)))
            break;
        if (d == 0 && npend && (!(h.flags & BR_REC_IN_BATCH) || h.seq != pend[0].h.seq))
            d = BR_ECORRUPT; /* a batch must be contiguous and end with its commit */
        if (d != 0) {
            /* A bad record (or a batch with no commit before it). */
            uint64_t bad = npend ? pend[0].off : off;
            /* A torn write at the end of the newest file is cut off;
             * damage with the store's records after it is corruption. */
            bool follow = newest ? valid_records_follow(f, off, end, last_seq)
                                 : find_valid_after(f, off + 1, end) != 0;
            uint64_t next = follow ? find_valid_after(f, off + 1, end) : 0;
            if (newest && (!follow || e->o.repair)) {
                br_engine_log(e, BR_LOG_WARN,
                              "%s: torn tail at offset %llu cut off (%llu bytes dropped%s)", name,
                              (unsigned long long)bad, (unsigned long long)(end - bad),
                              follow ? ", repair: valid records after it were dropped too" : "");
                off = bad;
                npend = 0;
                break;
            }
            if (!e->o.repair) {
                set_err(err, errlen, "%s: corrupt record at offset %llu%s; open with repair to %s",
                        name, (unsigned long long)bad, newest ? " followed by valid records" : "",
                        newest ? "cut the file there" : "skip the damaged bytes");
                free(pend);
                return BR_ECORRUPT;
            }
            uint64_t resume = next ? next : end;
            br_engine_log(e, BR_LOG_WARN, "%s: repair skipped corrupt bytes [%llu, %llu)", name,
                          (unsigned long long)bad, (unsigned long long)resume);
            npend = 0;
            if (!next)
                break;
            off = next;
            continue;
        }
        uint64_t size = br_rec_size(h.klen, h.vlen);
        if (h.seq > e->seq)
            e->seq = h.seq;
        if (!(h.flags & BR_REC_IN_BATCH) || (h.flags & BR_REC_COMMIT))
            last_seq = h.seq;
        if (h.flags & BR_REC_IN_BATCH) {
            if (npend == pcap) {
                pcap = pcap ? pcap * 2 : 64;
                pending_rec *np = realloc(pend, pcap * sizeof *np);
                if (!np) {
                    free(pend);
                    return BR_ENOMEM;
                }
                pend = np;
            }
            pend[npend++] = (pending_rec){off, h};
            if (h.flags & BR_REC_COMMIT) {
                for (size_t i = 0; i < npend && rc == 0; i++)
                    rc = recov_push_rec(rv, f, pend[i].off, &pend[i].h);
                npend = 0;
            }
        } else {
            rc = recov_push_rec(rv, f, off, &h);
        }
        if (rc) {
            free(pend);
            return rc;
        }
        off += size;
    }
    if (npend) {
        /* A batch whose commit never made it: at the end of the data of the
         * newest file that is a torn write; anywhere else, damage. */
        if (!newest && !e->o.repair) {
            set_err(err, errlen, "%s: batch at offset %llu has no commit record", name,
                    (unsigned long long)pend[0].off);
            free(pend);
            return BR_ECORRUPT;
        }
        br_engine_log(e, BR_LOG_WARN, "%s: incomplete batch at offset %llu rolled back", name,
                      (unsigned long long)pend[0].off);
        off = pend[0].off;
    }
    free(pend);
    f->size = off;
    return 0;
}

/* Stable LSD radix sort of (*v)[0..n) by head, 16 bits a pass, passing
 * the records back and forth between *v and *tmp (which may swap); passes
 * whose digit is the same for every record are skipped. Returns 0 or
 * BR_ENOMEM (nothing sorted). */
static int radix_sort(rec_ent **v, rec_ent **tmp, size_t n) {
    size_t *cnt = malloc(65536 * sizeof *cnt);
    if (!cnt)
        return BR_ENOMEM;
    for (int shift = 0; shift < 64; shift += 16) {
        rec_ent *src = *v, *dst = *tmp;
        memset(cnt, 0, 65536 * sizeof *cnt);
        for (size_t i = 0; i < n; i++)
            cnt[(src[i].head >> shift) & 0xffff]++;
        if (cnt[(src[0].head >> shift) & 0xffff] == n)
            continue;
        size_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            size_t c = cnt[d];
            cnt[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[cnt[(src[i].head >> shift) & 0xffff]++] = src[i];
        *v = dst;
        *tmp = src;
    }
    free(cnt);
    return 0;
}

/* Full order: key bytes, then log order (file, offset). */
static int rec_cmp(const void *a, const void *b) {
    const rec_ent *x = a, *y = b;
    uint32_t xl = x->klen & ~REC_DEL, yl = y->klen & ~REC_DEL;
    size_t m = xl < yl ? xl : yl;
    int c = memcmp(x->key, y->key, m);
    if (c)
        return c;
    if (xl != yl)
        return xl < yl ? -1 : 1;
    if (x->file_id != y->file_id)
        return x->file_id < y->file_id ? -1 : 1;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/*
 * Sorts the records by key (log order among equal keys) and builds the index:
 * of each key's records the newest decides, a tombstone meaning absent.
 * Sets every file's live and dead byte counts.
 */
static int build_index(br_engine *e, recov *rv) {
    size_t n = rv->n;
    if (n == 0)
        return 0;
    /* Heads start after the prefix all keys share (bounded), so they tell
     * keys apart even when all begin alike ("user:", "0000..."). */
    const uint8_t *k0 = rv->v[0].key;
    size_t p = rv->v[0].klen & ~REC_DEL;
    if (p > 64)
        p = 64;
    for (size_t i = 1; i < n && p; i++) {
        const uint8_t *k = rv->v[i].key;
        size_t l = rv->v[i].klen & ~REC_DEL, j = 0;
        size_t m = l < p ? l : p;
        while (j < m && k[j] == k0[j])
            j++;
        p = j;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *k = rv->v[i].key;
        size_t l = rv->v[i].klen & ~REC_DEL;
        uint64_t h = 0;
        for (size_t j = p; j < p + 8; j++)
            h = (h << 8) | (j < l ? k[j] : 0);
        rv->v[i].head = h;
    }
    rv->tmp = malloc(n * sizeof *rv->tmp);
    if (!rv->tmp)
        return BR_ENOMEM;
    if (radix_sort(&rv->v, &rv->tmp, n) != 0)
        return BR_ENOMEM;
    /* Keys with equal heads (longer keys, or a key and its extension with
     * zero bytes) are put in full order here; radix sorting kept log order. */
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && rv->v[j].head == rv->v[i].head)
            j++;
        if (j - i > 1)
            qsort(rv->v + i, j - i, sizeof *rv->v, rec_cmp);
        i = j;
    }
    /* A key no longer than prefix + 8 bytes is the shared prefix plus its
     * head: rebuilt here without touching the file, whose records are in
     * log order, not key order (a cache miss per record otherwise). */
    uint8_t kbuf[64 + 8];
    memcpy(kbuf, k0, p);
    for (size_t i = 0; i < n;) {
        /* [i, j): the records of one key, oldest first. */
        size_t j = i + 1;
        uint32_t kl = rv->v[i].klen & ~REC_DEL;
        const uint8_t *k;
        if (kl <= p + 8) {
            for (size_t b = 0; b < kl - p; b++)
                kbuf[p + b] = (uint8_t)(rv->v[i].head >> (56 - 8 * b));
            k = kbuf;
            while (j < n && rv->v[j].head == rv->v[i].head && (rv->v[j].klen & ~REC_DEL) == kl)
                j++;
        } else {
            if (i + 8 < n)
                __builtin_prefetch(rv->v[i + 8].key);
            k = rv->v[i].key;
            while (j < n && rv->v[j].head == rv->v[i].head && (rv->v[j].klen & ~REC_DEL) == kl &&
                   memcmp(rv->v[j].key, k, kl) == 0)
                j++;
        }
        for (size_t x = i; x < j; x++) {
            const rec_ent *r = &rv->v[x];
            br_datafile *f = e->files[r->file_id];
            uint64_t size = br_rec_size(kl, r->vlen);
            if (x + 1 == j && !(r->klen & REC_DEL)) {
                f->live += size;
                br_kd_put(e->kd, k, kl, (br_loc){r->file_id, r->offset, r->vlen}, NULL);
            } else {
                f->dead += size;
            }
        }
        i = j;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Lists the ids of the data files in the directory (sorted) and removes
 * leftovers of interrupted file creation. */
static int list_files(br_engine *e, uint32_t **ids_out, size_t *n_out) {
    int fd = dup(e->dirfd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned id;
        char tail[16];
        int got = sscanf(de->d_name, "%10u.%15s", &id, tail);
        if (got != 2 || strlen(de->d_name) < 15)
            continue;
        if (strcmp(tail, "data.tmp") == 0 || strcmp(tail, "hint.tmp") == 0) {
            unlinkat(e->dirfd, de->d_name, 0);
            continue;
        }
        if (strcmp(tail, "data") != 0 || strlen(de->d_name) != 15 || id == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint32_t *ni = realloc(ids, cap * sizeof *ni);
            if (!ni) {
                free(ids);
                closedir(d);
                return BR_ENOMEM;
            }
            ids = ni;
        }
        ids[n++] = id;
    }
    closedir(d);
    if (n)
        qsort(ids, n, sizeof *ids, cmp_u32);
    *ids_out = ids;
    *n_out = n;
    return 0;
}

/* Loads the entries of f's hint file, if it has a valid one. Returns 0,
 * -ENOENT, BR_ECORRUPT (unusable hint) or BR_ENOMEM. */
static int load_hint(br_engine *e, recov *rv, br_datafile *f) {
    br_hint h;
    int rc = br_hint_open(e->dirfd, f->id, f->size, &h);
    if (rc)
        return rc;
    br_hint *nh = realloc(rv->hints, (rv->nhints + 1) * sizeof *nh);
    if (!nh) {
        br_hint_close(&h);
        return BR_ENOMEM;
    }
    rv->hints = nh;
    rv->hints[rv->nhints++] = h;
    size_t pos = BR_HINT_HEADER_SIZE;
    br_hint_entry he;
    while (br_hint_next(&h, &pos, &he)) {
        if (he.seq > e->seq)
            e->seq = he.seq;
        if ((rc = recov_push(rv, f->id, he.offset, he.key, he.klen, he.vlen, he.tombstone)) != 0)
            return rc;
    }
    return 0;
}

/* ---- Hint writer ---------------------------------------------------------------- */

/* Queues closed file id for a hint file. Returns 0 or BR_ENOMEM. */
static int hint_queue_push(br_engine *e, uint32_t id) {
    pthread_mutex_lock(&e->hmu);
    int rc = 0;
    if (e->hq_n == e->hq_cap) {
        size_t cap = e->hq_cap ? e->hq_cap * 2 : 16;
        uint32_t *nq = realloc(e->hq, cap * sizeof *nq);
        if (!nq)
            rc = BR_ENOMEM;
        else {
            e->hq = nq;
            e->hq_cap = cap;
        }
    }
    if (rc == 0) {
        e->hq[e->hq_n++] = id;
        pthread_cond_signal(&e->hcv);
    }
    pthread_mutex_unlock(&e->hmu);
    return rc;
}

/* Writes the hint file of every closed data file queued, in the background
 * (rollover queues the file it seals; open queues those without a valid
 * hint; close waits for the queue). A file whose hint cannot be written is
 * scanned at the next open. */
static void *hinter_main(void *arg) {
    br_engine *e = arg;
    pthread_mutex_lock(&e->hmu);
    for (;;) {
        while (!e->hq_n && !e->hstop)
            pthread_cond_wait(&e->hcv, &e->hmu);
        if (!e->hq_n)
            break; /* stopping, and nothing left to write */
        uint32_t id = e->hq[0];
        memmove(e->hq, e->hq + 1, (--e->hq_n) * sizeof *e->hq);
        pthread_mutex_unlock(&e->hmu);
        /* Closed files are immutable and stay mapped while the engine is open. */
        pthread_rwlock_rdlock(&e->lock);
        br_datafile *f = id < e->files_cap ? e->files[id] : NULL;
        pthread_rwlock_unlock(&e->lock);
        int rc = f ? br_hint_write(e->dirfd, f) : 0;
        if (rc)
            br_engine_log(e, BR_LOG_WARN, "%010u.data: cannot write its hint file: %s", id,
                          br_strerror(rc));
        else if (f)
            STAT_ADD(n_hints, 1);
        pthread_mutex_lock(&e->hmu);
    }
    pthread_mutex_unlock(&e->hmu);
    return NULL;
}

static int recover(br_engine *e, char *err, size_t errlen) {
    uint32_t *ids = NULL;
    size_t n = 0;
    int rc = list_files(e, &ids, &n);
    if (rc) {
        set_err(err, errlen, "%s: cannot list directory: %s", e->dir, br_strerror(rc));
        return rc;
    }
    recov rv = {0};
    size_t hinted = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        bool newest = i + 1 == n;
        br_datafile *f;
        char name[48];
        br_df_name(name, sizeof name, ids[i]);
        /* The newest file becomes the active one: map it writable, at the cap. */
        rc = br_df_open(e->dirfd, ids[i], newest ? e->o.max_file_size : 0, &f);
        if (rc) {
            set_err(err, errlen, "%s/%s: cannot open: %s", e->dir, name, br_strerror(rc));
            break;
        }
        if ((rc = add_file(e, f)) != 0) {
            br_df_free(f);
            break;
        }
        uint64_t end = newest ? f->map_len : f->size;
        if (!newest) {
            int hr = load_hint(e, &rv, f);
            if (hr == 0) {
                hinted++;
                continue;
            }
            if (hr != -ENOENT)
                br_engine_log(e, BR_LOG_WARN, "%s: hint file unusable (%s): scanning the data file",
                              name, br_strerror(hr));
            if (hr != BR_ENOMEM && hint_queue_push(e, f->id) != 0)
                hr = BR_ENOMEM;
            if (hr == BR_ENOMEM) {
                rc = hr;
                break;
            }
        }
        rc = scan_file(e, &rv, f, end, newest, err, errlen);
        if (rc == 0 && newest) {
            /* Zero whatever lies past the data, so that the bytes of a torn
             * record, or of records a crash of the machine wrote out of
             * order, can never be read as part of a later one. */
            rc = br_df_zero_tail(f);
            e->active = f;
        }
    }
    if (rc == 0)
        rc = build_index(e, &rv);
    if (rc == BR_ENOMEM)
        set_err(err, errlen, "%s: out of memory while rebuilding the index", e->dir);
    if (rc == 0 && n > 1)
        br_engine_log(e, BR_LOG_INFO, "%s: %zu of %zu closed files loaded from hint files", e->dir,
                      hinted, n - 1);
    for (size_t i = 0; i < rv.nhints; i++)
        br_hint_close(&rv.hints[i]);
    free(rv.hints);
    free(rv.v);
    free(rv.tmp);
    free(ids);
    return rc;
}

/* ---- Open and close ------------------------------------------------------------ */

static void *syncer_main(void *arg);

int br_engine_open(const char *dir, const br_engine_options *opts, br_engine **out, char *err,
                   size_t errlen) {
    *out = NULL;
    br_engine_options o;
    if (opts)
        o = *opts;
    else
        br_engine_options_init(&o);
    if (o.max_file_size < 4096 || o.max_file_size > BR_MAX_FILE_CAP || o.max_key_size == 0 ||
        o.max_key_size > (1u << 30) || o.max_value_size > BR_MAX_VALUE_CAP ||
        (o.sync == BR_SYNC_INTERVAL && o.sync_interval_ms == 0) || o.sync > BR_SYNC_NEVER) {
        set_err(err, errlen, "invalid engine options");
        return BR_EINVAL;
    }
    br_engine *e = calloc(1, sizeof *e);
    if (!e)
        return BR_ENOMEM;
    e->o = o;
    e->dirfd = e->lockfd = -1;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* Readers must not starve the group-commit leader. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&e->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&e->wmu, NULL);
    pthread_cond_init(&e->drain_cv, NULL);
    pthread_mutex_init(&e->smu, NULL);
    pthread_mutex_init(&e->hmu, NULL);
    pthread_cond_init(&e->hcv, NULL);
    pthread_cond_init(&e->scv, NULL);
    int rc = 0;
    e->dir = strdup(dir);
    e->kd = br_kd_new();
    if (!e->dir) {
        rc = BR_ENOMEM;
        goto fail;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot create: %s", dir, br_strerror(rc));
        goto fail;
    }
    e->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (e->dirfd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot open: %s", dir, br_strerror(rc));
        goto fail;
    }
    e->lockfd = openat(e->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (e->lockfd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s/LOCK: %s", dir, br_strerror(rc));
        goto fail;
    }
    if (flock(e->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? BR_ELOCKED : -errno;
        set_err(err, errlen, "%s: %s", dir,
                rc == BR_ELOCKED ? "data directory is in use by another bitraft process"
                                 : br_strerror(rc));
        goto fail;
    }
    if ((rc = recover(e, err, errlen)) != 0)
        goto fail;
    if (!e->active) {
        br_datafile *f;
        if ((rc = br_df_create(e->dirfd, 1, e->o.max_file_size, &f)) != 0) {
            set_err(err, errlen, "%s: cannot create the first data file: %s", dir, br_strerror(rc));
            goto fail;
        }
        if ((rc = add_file(e, f)) != 0) {
            br_df_free(f);
            goto fail;
        }
        e->active = f;
    }
    /* What recovery found is where writing goes on; it counts as synced
     * (the zeroed tail was synced, and a later sync flushes any page of the
     * file a crashed process left dirty). */
    e->wpos = e->active->size;
    e->synced_file = e->active->id;
    e->synced_end = e->active->size;
    if (pthread_create(&e->hinter, NULL, hinter_main, e) != 0) {
        rc = BR_ENOMEM;
        goto fail;
    }
    e->hinter_running = true;
    if (e->o.sync == BR_SYNC_INTERVAL) {
        if (pthread_create(&e->syncer, NULL, syncer_main, e) != 0) {
            rc = BR_ENOMEM;
            goto fail;
        }
        e->syncer_running = true;
    }
    br_engine_log(e, BR_LOG_INFO, "%s: opened, %zu keys in %u files, last seq %llu", dir,
                  br_kd_count(e->kd), e->nfiles, (unsigned long long)e->seq);
    *out = e;
    return 0;
fail:
    if (rc == BR_ENOMEM)
        set_err(err, errlen, "%s: out of memory", dir);
    e->active = NULL; /* br_engine_close must not sync a file it could not open */
    br_engine_close(e);
    return rc;
}

int br_engine_close(br_engine *e) {
    if (!e)
        return 0;
    int rc = 0;
    if (e->syncer_running) {
        pthread_mutex_lock(&e->smu);
        e->stopping = true;
        pthread_cond_signal(&e->scv);
        pthread_mutex_unlock(&e->smu);
        pthread_join(e->syncer, NULL);
    }
    if (e->active) {
        /* Waits for writers in flight: the sync queues behind them. */
        rc = br_engine_sync(e);
    }
    if (e->hinter_running) {
        /* Writes the hints still queued (usually none or one: those of the
         * files rolled over lately), so the next open reads only hints. */
        pthread_mutex_lock(&e->hmu);
        e->hstop = true;
        pthread_cond_signal(&e->hcv);
        pthread_mutex_unlock(&e->hmu);
        pthread_join(e->hinter, NULL);
    }
    for (uint32_t i = 0; i < e->files_cap; i++)
        br_df_free(e->files[i]);
    free(e->files);
    br_kd_free(e->kd);
    if (e->lockfd >= 0)
        close(e->lockfd); /* releases the flock */
    if (e->dirfd >= 0)
        close(e->dirfd);
    pthread_rwlock_destroy(&e->lock);
    pthread_mutex_destroy(&e->wmu);
    pthread_cond_destroy(&e->drain_cv);
    pthread_mutex_destroy(&e->smu);
    pthread_mutex_destroy(&e->hmu);
    pthread_cond_destroy(&e->hcv);
    free(e->hq);
    pthread_cond_destroy(&e->scv);
    free(e->dir);
    free(e);
    return rc;
}

static void *syncer_main(void *arg) {
    br_engine *e = arg;
    pthread_mutex_lock(&e->smu);
    while (!e->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)e->o.sync_interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&e->scv, &e->smu, &ts);
        if (e->stopping)
            break;
        pthread_mutex_unlock(&e->smu);
        int rc = br_engine_sync(e);
        if (rc)
            br_engine_log(e, BR_LOG_ERROR, "%s: background sync failed: %s", e->dir,
                          br_strerror(rc));
        pthread_mutex_lock(&e->smu);
    }
    pthread_mutex_unlock(&e->smu);
    return NULL;
}

/* ---- Group commit ------------------------------------------------------------------ */

/*
 * Writes are pipelined in three stages, so that one group's fdatasync runs
 * while the next group is written and synced (concurrent fdatasync calls
 * overlap on this disk: two threads sync about twice as often as one):
 *
 *  1. write  (one leader at a time, `writing`): the writer at the head of
 *            the queue takes every writer queued behind it as a group,
 *            copies their records into the active file's map, and hands
 *            the queue to the next leader.
 *  2. sync   (any number at once): the group's leader calls fdatasync,
 *            unless a sync that started after its copy already returned.
 *  3. apply  (one thread at a time, `applying`, strictly in write order):
 *            groups whose records are durable are applied to the index and
 *            their writers woken.
 *
 * A record is thus visible only once it is durable, and the index always
 * reflects a prefix of the log. Rollover waits for the pipeline to drain
 * before it seals the old file.
 */

static size_t writer_bytes(const br_writer *w) {
    size_t b = 0;
    for (size_t i = 0; i < w->nops; i++)
        b += br_rec_size(w->ops[i].klen, w->ops[i].del ? 0 : w->ops[i].vlen);
    return b;
}

/* Whether the durable part of the log covers position (file, end). */
static bool covered(const br_engine *e, uint32_t file, uint64_t end) {
    return e->synced_file > file || (e->synced_file == file && e->synced_end >= end);
}

/* Waits (wmu held) until every group is applied and no sync is running. */
static void drain(br_engine *e) {
    while (e->ghead || e->syncs_running)
        pthread_cond_wait(&e->drain_cv, &e->wmu);
}

/* Starts a new active file able to take `need` bytes of records. Called by
 * the write leader with wmu held; drains the pipeline first. */
static int rollover(br_engine *e, size_t need) {
    drain(e);
    uint64_t cap = e->o.max_file_size;
    if (BR_FILE_HEADER_SIZE + need > cap)
        cap = BR_FILE_HEADER_SIZE + need;
    br_datafile *old = e->active, *f;
    pthread_mutex_unlock(&e->wmu);
    int rc = br_df_create(e->dirfd, old->id + 1, cap, &f);
    if (rc == 0) {
        pthread_rwlock_wrlock(&e->lock);
        rc = add_file(e, f);
        if (rc == 0)
            e->active = f;
        pthread_rwlock_unlock(&e->lock);
        if (rc)
            br_df_free(f);
    }
    if (rc) {
        pthread_mutex_lock(&e->wmu);
        return rc; /* still on the old file; nothing written */
    }
    int src = br_df_seal(old); /* syncs what a lazy policy left unsynced */
    STAT_ADD(n_syncs, 1);
    if (src == 0 && hint_queue_push(e, old->id) != 0)
        br_engine_log(e, BR_LOG_WARN, "%010u.data: no memory to queue its hint file", old->id);
    pthread_mutex_lock(&e->wmu);
    e->wpos = BR_FILE_HEADER_SIZE;
    e->synced_file = f->id;
    e->synced_end = BR_FILE_HEADER_SIZE;
    if (src) {
        /* The old file's last records may not be on disk. */
        br_engine_log(e, BR_LOG_ERROR, "%s: sealing %010u.data failed, store is now read-only: %s",
                      e->dir, old->id, br_strerror(src));
        e->failed = src;
    }
    return src;
}

/*
 * Stage 1: copies the records of group g into the active file (rolling
 * over first if they do not fit) and records where each op went. Called by
 * the write leader with wmu held; releases it while copying.
 */
static int write_group(br_engine *e, br_group *g, size_t bytes) {
    if (e->failed)
        return e->failed;
    int rc = 0;
    if (bytes) {
        br_datafile *f = e->active;
        if (e->wpos + bytes > f->map_len ||
            (e->wpos + bytes > e->o.max_file_size && e->wpos > BR_FILE_HEADER_SIZE)) {
            if ((rc = rollover(e, bytes)) != 0)
                return rc;
            f = e->active;
        }
        for (br_writer *w = g->first; w; w = w->next) {
            w->locs = w->nops <= 1 ? &w->loc1 : malloc(w->nops * sizeof *w->locs);
            if (!w->locs)
                return BR_ENOMEM; /* nothing written yet; locs freed by the writers */
        }
        uint64_t off = e->wpos;
        e->wpos += bytes;
        uint64_t seq = e->seq; /* numbers are taken below, in queue order */
        pthread_mutex_unlock(&e->wmu);
        for (br_writer *w = g->first; w; w = w->next) {
            if (w->batch)
                seq++;
            for (size_t i = 0; i < w->nops; i++) {
                const br_op *op = &w->ops[i];
                uint8_t flags = op->del ? BR_REC_TOMBSTONE : 0;
                if (w->batch)
                    flags |= BR_REC_IN_BATCH | (i + 1 == w->nops ? BR_REC_COMMIT : 0);
                else
                    seq++;
                uint32_t vlen = op->del ? 0 : op->vlen;
                br_rec_encode(f->map + off, seq, flags, op->key, op->klen, op->val, vlen);
                w->locs[i] = off;
                off += br_rec_size(op->klen, vlen);
            }
        }
        pthread_mutex_lock(&e->wmu);
        e->seq = seq;
    }
    g->f = e->active;
    g->end = e->wpos;
    return 0;
}

/* Stage 3: applies every durable group at the head of the list, in order,
 * and wakes its writers. Called with wmu held by whoever finds a group
 * completable; one applier at a time. */
static void apply_groups(br_engine *e) {
    if (e->applying)
        return;
    e->applying = true;
    for (;;) {
        br_group *g = e->ghead;
        if (!g || !(g->rc || e->failed || !g->need_sync || covered(e, g->f->id, g->end)))
            break;
        int rc = g->rc ? g->rc : e->failed;
        pthread_mutex_unlock(&e->wmu);
        if (rc == 0 && g->first && g->f) {
            br_datafile *f = g->f;
            pthread_rwlock_wrlock(&e->lock);
            for (br_writer *w = g->first; w; w = w->next)
                for (size_t i = 0; i < w->nops; i++) {
                    const br_op *op = &w->ops[i];
                    /* Batches: start loading the leaf of a key a few ops
                     * ahead, so the index's cache misses overlap. */
                    if (i + BR_APPLY_AHEAD < w->nops)
                        br_kd_prefetch(e->kd, w->ops[i + BR_APPLY_AHEAD].key,
                                       w->ops[i + BR_APPLY_AHEAD].klen);
                    bool existed = apply_record(e, f, w->locs[i], op->key, op->klen,
                                                op->del ? 0 : op->vlen, op->del);
                    if (!w->batch)
                        w->existed = existed;
                }
            if (g->end > f->size)
                f->size = g->end;
            pthread_rwlock_unlock(&e->lock);
        }
        STAT_ADD(n_groups, 1);
        pthread_mutex_lock(&e->wmu);
        e->ghead = g->next;
        if (!e->ghead)
            e->gtail = NULL;
        for (br_writer *w = g->first, *nx; w; w = nx) {
            nx = w->next;
            w->rc = rc;
            w->done = true;
            pthread_cond_signal(&w->cv);
        }
    }
    e->applying = false;
    if (!e->ghead && !e->syncs_running)
        pthread_cond_broadcast(&e->drain_cv);
}

int br_engine_submit(br_engine *e, const br_op *ops, size_t nops, bool batch, bool force_sync,
                     bool *existed) {
    br_writer w = {.ops = ops, .nops = nops, .batch = batch, .force_sync = force_sync};
    /* The group this writer may lead: it must live until the writer is
     * done, since the thread that applies it may be another one. */
    br_group g = {.first = &w};
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&e->wmu);
    if (e->qtail)
        e->qtail->next = &w;
    else
        e->qhead = &w;
    e->qtail = &w;
    /* Lead when first in line, nobody is copying, and fewer than
     * BR_SYNCS_IN_FLIGHT syncs run: waiting for a sync slot is what lets a
     * group gather many writers. */
    while (!w.done && !(e->qhead == &w && !e->writing && e->syncs_running < BR_SYNCS_IN_FLIGHT))
        pthread_cond_wait(&w.cv, &e->wmu);
    if (!w.done) {
        /* Write leader: take a group of the writers queued behind us. */
        e->writing = true;
        size_t bytes = writer_bytes(&w);
        bool sync = w.force_sync || e->o.sync == BR_SYNC_ALWAYS;
        br_writer *last = &w;
        while (last->next) {
            size_t b = writer_bytes(last->next);
            if (bytes + b > BR_GROUP_MAX_BYTES)
                break;
            bytes += b;
            last = last->next;
            sync |= last->force_sync;
        }
        e->qhead = last->next;
        if (!e->qhead)
            e->qtail = NULL;
        last->next = NULL;
        g.need_sync = sync;
        g.rc = write_group(e, &g, bytes);
        if (!g.f)
            g.f = e->active;
        /* Stage 1 done: the next leader may write while we sync. */
        e->writing = false;
        if (e->qhead)
            pthread_cond_signal(&e->qhead->cv);
        if (e->gtail)
            e->gtail->next = &g;
        else
            e->ghead = &g;
        e->gtail = &g;
        if (g.rc == 0 && sync && !covered(e, g.f->id, g.end)) {
            br_datafile *f = g.f;
            e->syncs_running++;
            pthread_mutex_unlock(&e->wmu);
            int rc = br_df_sync(f);
            STAT_ADD(n_syncs, 1);
            pthread_mutex_lock(&e->wmu);
            e->syncs_running--;
            if (e->qhead && !e->writing)
                pthread_cond_signal(&e->qhead->cv);
            if (rc) {
                /* What reached the disk is unknown (a failed fdatasync may
                 * drop dirty pages): refuse further writes rather than
                 * acknowledge on top of a hole. A restart recovers from
                 * what the files hold. */
                if (!e->failed)
                    br_engine_log(e, BR_LOG_ERROR,
                                  "%s: fdatasync failed, store is now read-only: %s", e->dir,
                                  br_strerror(rc));
                e->failed = rc;
            } else if (!covered(e, f->id, g.end)) {
                /* Everything copied before the call is durable now. */
                e->synced_file = f->id;
                e->synced_end = g.end;
            }
        }
        apply_groups(e);
    }
    while (!w.done)
        pthread_cond_wait(&w.cv, &e->wmu);
    pthread_mutex_unlock(&e->wmu);
    pthread_cond_destroy(&w.cv);
    if (w.locs != &w.loc1)
        free(w.locs);
    if (existed)
        *existed = w.existed;
    return w.rc;
}

/* ---- Public write API ------------------------------------------------------------------ */

int br_engine_put(br_engine *e, const void *key, size_t klen, const void *val, size_t vlen) {
    if (klen > UINT32_MAX || vlen > UINT32_MAX)
        return klen > UINT32_MAX ? BR_EKEYTOOBIG : BR_EVALTOOBIG;
    br_op op = {key, val ? val : (const uint8_t *)"", (uint32_t)klen, (uint32_t)vlen, false};
    int rc = br_engine_check_op(e, &op);
    if (rc)
        return rc;
    rc = br_engine_submit(e, &op, 1, false, false, NULL);
    if (rc == 0)
        STAT_ADD(n_puts, 1);
    return rc;
}

int br_engine_delete(br_engine *e, const void *key, size_t klen) {
    if (klen > UINT32_MAX)
        return BR_EKEYTOOBIG;
    br_op op = {key, NULL, (uint32_t)klen, 0, true};
    int rc = br_engine_check_op(e, &op);
    if (rc)
        return rc;
    /* Write no tombstone for a key that is not there. */
    br_loc loc;
    pthread_rwlock_rdlock(&e->lock);
    int present = br_kd_get(e->kd, key, klen, &loc);
    pthread_rwlock_unlock(&e->lock);
    if (!present)
        return BR_ENOTFOUND;
    bool existed = false;
    rc = br_engine_submit(e, &op, 1, false, false, &existed);
    if (rc == 0)
        STAT_ADD(n_dels, 1);
    /* Deleted by a concurrent writer between the check and the write. */
    return rc ? rc : existed ? 0 : BR_ENOTFOUND;
}

int br_engine_sync(br_engine *e) {
    return br_engine_submit(e, NULL, 0, false, true, NULL);
}

/* ---- Reads ---------------------------------------------------------------------------- */

int br_engine_read_rec(br_engine *e, br_datafile *f, br_loc loc, const void *key, size_t klen,
                       const uint8_t **val) {
    size_t size = br_rec_size((uint32_t)klen, loc.vlen);
    if ((uint64_t)loc.offset + size > f->map_len)
        return BR_ECORRUPT;
    const uint8_t *p = f->map + loc.offset;
    br_rec_hdr h;
    int rc = br_rec_decode(p, size, &h);
    if (rc != 0 || h.klen != klen || h.vlen != loc.vlen ||
        memcmp(p + BR_REC_HEADER_SIZE, key, klen) != 0) {
        br_engine_log(e, BR_LOG_ERROR, "%010u.data: corrupt record at offset %u", f->id,
                      loc.offset);
        return BR_ECORRUPT;
    }
    *val = p + BR_REC_HEADER_SIZE + klen;
    return 0;
}

/*
 * Finds key's newest value: on success *v points at it inside the map of
 * *f, which is pinned (the caller unpins it). Returns BR_ENOTFOUND or
 * BR_ECORRUPT (nothing pinned then).
 */
static int read_value(br_engine *e, const void *key, size_t klen, const uint8_t **v, br_loc *loc,
                      br_datafile **f) {
    STAT_ADD(n_gets, 1);
    if (klen == 0 || klen > e->o.max_key_size)
        return BR_ENOTFOUND;
    pthread_rwlock_rdlock(&e->lock);
    int found = br_kd_get(e->kd, key, klen, loc);
    if (found) {
        *f = e->files[loc->file_id];
        atomic_fetch_add_explicit(&(*f)->refs, 1, memory_order_acquire);
    }
    pthread_rwlock_unlock(&e->lock);
    if (!found)
        return BR_ENOTFOUND;
    int rc = br_engine_read_rec(e, *f, *loc, key, klen, v);
    if (rc)
        atomic_fetch_sub_explicit(&(*f)->refs, 1, memory_order_release);
    return rc;
}

int br_engine_get(br_engine *e, const void *key, size_t klen, void **val, size_t *vlen) {
    const uint8_t *v;
    br_loc loc;
    br_datafile *f;
    int rc = read_value(e, key, klen, &v, &loc, &f);
    if (rc)
        return rc;
    void *copy = malloc(loc.vlen ? loc.vlen : 1);
    if (copy) {
        memcpy(copy, v, loc.vlen);
        *val = copy;
        *vlen = loc.vlen;
    } else {
        rc = BR_ENOMEM;
    }
    atomic_fetch_sub_explicit(&f->refs, 1, memory_order_release);
    return rc;
}

int br_engine_get_into(br_engine *e, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen) {
    const uint8_t *v;
    br_loc loc;
    br_datafile *f;
    int rc = read_value(e, key, klen, &v, &loc, &f);
    if (rc)
        return rc;
    *vlen = loc.vlen;
    if (loc.vlen && loc.vlen <= cap)
        memcpy(buf, v, loc.vlen);
    atomic_fetch_sub_explicit(&f->refs, 1, memory_order_release);
    return 0;
}

/* ---- Figures ---------------------------------------------------------------------------- */

#define STAT_GET(field) atomic_load_explicit(&e->field, memory_order_relaxed)

void br_engine_stats_get(br_engine *e, br_engine_stats *st) {
    memset(st, 0, sizeof *st);
    pthread_rwlock_rdlock(&e->lock);
    st->keys = br_kd_count(e->kd);
    st->index_bytes = br_kd_mem_bytes(e->kd);
    st->key_bytes = br_kd_key_bytes(e->kd);
    for (uint32_t i = 0; i < e->files_cap; i++) {
        br_datafile *f = e->files[i];
        if (!f)
            continue;
        st->data_files++;
        st->disk_bytes += f->size;
        st->live_bytes += f->live;
        st->dead_bytes += f->dead;
    }
    pthread_rwlock_unlock(&e->lock);
    pthread_mutex_lock(&e->wmu);
    st->last_seq = e->seq;
    pthread_mutex_unlock(&e->wmu);
    st->puts = STAT_GET(n_puts);
    st->deletes = STAT_GET(n_dels);
    st->batches = STAT_GET(n_batches);
    st->gets = STAT_GET(n_gets);
    st->syncs = STAT_GET(n_syncs);
    st->write_groups = STAT_GET(n_groups);
    st->hints_written = STAT_GET(n_hints);
}
