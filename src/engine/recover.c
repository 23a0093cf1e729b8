/*
 * recover.c - rebuilding the index when a store opens (the rules are in
 * docs/FORMAT.md, "Recovery").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/hint.h"
#include "engine/internal.h"
#include "engine/keysort.h"

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
    uint64_t seq;       /* decides which of a key's records is the newest */
    uint32_t file_id;
    uint32_t offset;
    uint32_t vlen;
    uint32_t klen; /* top bit: tombstone */
} rec_ent;

#define REC_DEL 0x80000000u

typedef struct recov {
    rec_ent *v;
    size_t n, cap;
    br_hint *hints;     /* hints loaded: merged into the index by the build */
    uint32_t *hint_ids; /* the data file of each */
    size_t nhints;
} recov;

static int recov_push(recov *rv, uint32_t file_id, uint64_t off, const uint8_t *key, uint32_t klen,
                      uint32_t vlen, bool del, uint64_t seq) {
    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 4096;
        rec_ent *nv = realloc(rv->v, cap * sizeof *nv);
        if (!nv)
            return BR_ENOMEM;
        rv->v = nv;
        rv->cap = cap;
    }
    rv->v[rv->n++] =
        (rec_ent){0, key, seq, file_id, (uint32_t)off, vlen, klen | (del ? REC_DEL : 0)};
    return 0;
}

static int recov_push_rec(recov *rv, const br_datafile *f, uint64_t off, const br_rec_hdr *h) {
    return recov_push(rv, f->id, off, f->map + off + BR_REC_HEADER_SIZE, h->klen, h->vlen,
                      h->flags & BR_REC_TOMBSTONE, h->seq);
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
 * records chain to the end of the data, their sequence numbers never go
 * down, and the first of them either carries the next number or the one
 * after it (the bad record used one, unless it was in a batch, whose
 * records share theirs), or is a later number followed by at least one
 * more record (numbered writes in cluster mode skip numbers: Raft entries
 * that write nothing). Requiring the chain and the numbers keeps a value
 * that merely holds record-like bytes (values are arbitrary) from passing
 * for one: one checksummed record could be an accident, two chained ones
 * are not.
 */
static bool valid_records_follow(const br_datafile *f, uint64_t off, uint64_t end,
                                 uint64_t last_seq) {
    for (uint64_t q = off + 1; (q = find_valid_after(f, q, end)) != 0; q++) {
        br_rec_hdr h;
        br_rec_decode(f->map + q, end - q, &h);
        if (h.seq < last_seq)
            continue;
        bool next = h.seq <= last_seq + 2;
        uint64_t at = q, prev = h.seq;
        size_t chain = 0;
        bool ordered = true;
        int d = 0;
        while (at < end && (d = br_rec_decode(f->map + at, end - at, &h)) == 0) {
            ordered &= h.seq >= prev;
            prev = h.seq;
            at += br_rec_size(h.klen, h.vlen);
            chain++;
        }
        if ((at >= end || d == 1) && ordered && (next || chain >= 2))
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
    int rc = br_file_header_check(f->map, end, f->id, NULL, NULL);
    if (rc) {
        br_engine_seterr(err, errlen, "%s: bad file header (%s)", name, br_strerror(rc));
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
                e->problems++;
                br_engine_log(e, BR_LOG_WARN, "%s: torn tail at offset %llu %s (%llu bytes%s)",
                              name, (unsigned long long)bad,
                              e->o.read_only ? "ignored (read-only: left on disk)" : "cut off",
                              (unsigned long long)(end - bad),
                              follow ? ", repair: valid records after it dropped too" : "");
                off = bad;
                npend = 0;
                break;
            }
            if (!e->o.repair) {
                br_engine_seterr(
                    err, errlen, "%s: corrupt record at offset %llu%s; open with repair to %s",
                    name, (unsigned long long)bad, newest ? " followed by valid records" : "",
                    newest ? "cut the file there" : "skip the damaged bytes");
                free(pend);
                return BR_ECORRUPT;
            }
            uint64_t resume = next ? next : end;
            e->problems++;
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
            br_engine_seterr(err, errlen, "%s: batch at offset %llu has no commit record", name,
                             (unsigned long long)pend[0].off);
            free(pend);
            return BR_ECORRUPT;
        }
        e->problems++;
        br_engine_log(e, BR_LOG_WARN, "%s: incomplete batch at offset %llu rolled back", name,
                      (unsigned long long)pend[0].off);
        off = pend[0].off;
    }
    free(pend);
    f->size = off;
    return 0;
}

/* Full order: key bytes, then file and offset (which record of a key is
 * the newest is decided by sequence number). */
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

#define REC_KEY(x)  ((x).key)
#define REC_KLEN(x) ((x).klen & ~REC_DEL)
BR_KEYSORT_DEFINE(sort_recs, rec_ent, REC_KEY, REC_KLEN, rec_cmp)

/*
 * Sorts the records that were scanned (files without a valid hint, and the
 * newest file) by key, keeping log order among equal keys. Returns 0 or
 * BR_ENOMEM.
 */
static int sort_scanned(recov *rv) {
    return sort_recs(&rv->v, rv->n);
}

/* Key bytes [p, p + 8) as a big-endian number (zeros past the key). */
static inline uint64_t key_head(const uint8_t *k, uint32_t klen, size_t p) {
    if (klen >= p + 8) {
        uint64_t v;
        memcpy(&v, k + p, 8);
        return __builtin_bswap64(v);
    }
    uint64_t h = 0;
    for (size_t j = p; j < p + 8; j++)
        h = (h << 8) | (j < klen ? k[j] : 0);
    return h;
}

/* A sorted run of records: one file's hint, or the scanned records. */
typedef struct run {
    const br_hint *h; /* hint run, or NULL for the scanned array */
    size_t pos;       /* hint: byte offset of the next entry */
    const rec_ent *a; /* array run */
    size_t i, n;
    uint32_t hint_file;
    /* The current record; head: its key bytes [prefix, prefix + 8) big-endian,
     * which orders most pairs of keys without a memcmp. */
    uint64_t head;
    size_t prefix; /* bytes every key of every run shares */
    const uint8_t *key;
    uint32_t klen, vlen, offset, file_id;
    uint64_t seq;
    bool del;
} run;

/* Moves r to its next record; false at its end. */
static bool run_next(run *r) {
    if (r->h) {
        br_hint_entry he;
        if (!br_hint_next(r->h, &r->pos, &he))
            return false;
        r->key = he.key;
        r->klen = he.klen;
        r->vlen = he.vlen;
        r->offset = he.offset;
        r->file_id = r->hint_file;
        r->seq = he.seq;
        r->del = he.tombstone;
        r->head = key_head(r->key, r->klen, r->prefix);
        return true;
    }
    if (r->i >= r->n)
        return false;
    const rec_ent *x = &r->a[r->i++];
    r->key = x->key;
    r->klen = x->klen & ~REC_DEL;
    r->vlen = x->vlen;
    r->offset = x->offset;
    r->file_id = x->file_id;
    r->seq = x->seq;
    r->del = (x->klen & REC_DEL) != 0;
    r->head = key_head(r->key, r->klen, r->prefix);
    return true;
}

static int run_cmp(const run *a, const run *b) {
    if (a->head != b->head)
        return a->head < b->head ? -1 : 1;
    return br_hint_keycmp(a->key, a->klen, b->key, b->klen);
}

/* Length of the prefix two keys share. */
static size_t lcp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    size_t n = al < bl ? al : bl, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Min-heap of runs by current key. */
static void heap_down(run **h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && run_cmp(h[l], h[m]) < 0)
            m = l;
        if (l + 1 < n && run_cmp(h[l + 1], h[m]) < 0)
            m = l + 1;
        if (m == i)
            return;
        run *t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* One record of the key being resolved. */
typedef struct cand {
    uint32_t file_id, offset, vlen;
    uint64_t seq;
    bool del;
} cand;

/*
 * Builds the index by merging sorted runs — every valid hint (sorted by
 * key when written) and the scanned records (sorted here) — so keys arrive
 * in order and the tree is built by appending, with no array of every
 * record and no sort of it. Of each key's records the one with the highest
 * sequence number decides (merge outputs hold old records under new file
 * ids, so file order is not log order), a tombstone meaning absent;
 * records that share a number are one batch's, in one file: the later one
 * wins. Sets every file's live, dead and tombstone byte counts, its
 * smallest sequence number and the store's last one.
 */
static int build_index(br_engine *e, recov *rv) {
    if (sort_scanned(rv) != 0)
        return BR_ENOMEM;
    size_t nruns = rv->nhints + 1;
    run *runs = calloc(nruns, sizeof *runs);
    run **heap = calloc(nruns, sizeof *heap);
    size_t ccap = 16, nh = 0;
    cand *c = malloc(ccap * sizeof *c);
    int rc = 0;
    if (!runs || !heap || !c) {
        rc = BR_ENOMEM;
        goto out;
    }
    /* The prefix all keys share: within a sorted run, that of its first
     * and last key; across runs, that of the first keys too. */
    const uint8_t *k0 = NULL;
    size_t p = SIZE_MAX;
    uint32_t k0len = 0;
    for (size_t i = 0; i < nruns; i++) {
        const uint8_t *first, *last;
        uint32_t fl, ll;
        if (i < rv->nhints) {
            const br_hint *h = &rv->hints[i];
            if (!h->n)
                continue;
            first = h->map + BR_HINT_HEADER_SIZE + BR_HINT_ENTRY_SIZE;
            fl = br_get32(h->map + BR_HINT_HEADER_SIZE) & ~BR_HINT_TOMBSTONE;
            last = h->last_key;
            ll = h->last_klen;
        } else {
            if (!rv->n)
                continue;
            first = rv->v[0].key;
            fl = rv->v[0].klen & ~REC_DEL;
            last = rv->v[rv->n - 1].key;
            ll = rv->v[rv->n - 1].klen & ~REC_DEL;
        }
        size_t q = lcp(first, fl, last, ll);
        if (k0) {
            size_t q2 = lcp(k0, k0len, first, fl);
            q = q2 < q ? q2 : q;
        } else {
            k0 = first;
            k0len = fl;
        }
        if (q < p)
            p = q;
    }
    if (p == SIZE_MAX)
        p = 0;
    for (size_t i = 0; i < rv->nhints; i++)
        runs[i] = (run){.h = &rv->hints[i],
                        .pos = BR_HINT_HEADER_SIZE,
                        .hint_file = rv->hint_ids[i],
                        .prefix = p};
    runs[rv->nhints] = (run){.a = rv->v, .n = rv->n, .prefix = p};
    for (size_t i = 0; i < nruns; i++)
        if (run_next(&runs[i]))
            heap[nh++] = &runs[i];
    for (size_t i = nh / 2; i-- > 0;)
        heap_down(heap, nh, i);
    while (nh) {
        /* Every record of the smallest key, from every run holding it. */
        const uint8_t *k = heap[0]->key;
        uint32_t kl = heap[0]->klen;
        size_t nc = 0, win = 0;
        uint64_t kh = heap[0]->head;
        while (nh && heap[0]->head == kh &&
               br_hint_keycmp(heap[0]->key, heap[0]->klen, k, kl) == 0) {
            run *r = heap[0];
            bool more;
            do {
                if (nc == ccap) {
                    cand *nc2 = realloc(c, 2 * ccap * sizeof *c);
                    if (!nc2) {
                        rc = BR_ENOMEM;
                        goto out;
                    }
                    c = nc2;
                    ccap *= 2;
                }
                c[nc] = (cand){r->file_id, r->offset, r->vlen, r->seq, r->del};
                const cand *w = &c[win], *x = &c[nc];
                if (x->seq > w->seq ||
                    (x->seq == w->seq && (x->file_id > w->file_id ||
                                          (x->file_id == w->file_id && x->offset > w->offset))))
                    win = nc;
                nc++;
            } while ((more = run_next(r)) && r->head == kh &&
                     br_hint_keycmp(r->key, r->klen, k, kl) == 0);
            if (!more)
                heap[0] = heap[--nh];
            heap_down(heap, nh, 0);
        }
        for (size_t x = 0; x < nc; x++) {
            br_datafile *f = e->files[c[x].file_id];
            uint64_t size = br_rec_size(kl, c[x].vlen);
            if (c[x].seq < f->min_seq)
                f->min_seq = c[x].seq;
            if (c[x].seq > e->seq)
                e->seq = c[x].seq;
            if (x == win && !c[x].del) {
                f->live += size;
                /* k stays valid: it lies in a hint map or a data file map. */
                br_kd_put(e->kd, k, kl, (br_loc){c[x].file_id, c[x].offset, c[x].vlen}, NULL);
            } else {
                f->dead += size;
                if (c[x].del) {
                    f->tomb += size;
                    if (c[x].seq > f->tomb_max_seq)
                        f->tomb_max_seq = c[x].seq;
                }
            }
        }
    }
out:
    free(runs);
    free(heap);
    free(c);
    return rc;
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

/* Takes f's hint file, if it has a valid one, for the build (which merges
 * its entries). Returns 0, -ENOENT, BR_ECORRUPT (unusable hint) or
 * BR_ENOMEM. */
static int load_hint(br_engine *e, recov *rv, br_datafile *f, uint64_t disk_size, uint64_t *bytes) {
    br_hint h;
    int rc = br_hint_open(e->dirfd, f->id, disk_size, f->size, &h);
    if (rc)
        return rc;
    *bytes += h.len;
    br_hint *nh = realloc(rv->hints, (rv->nhints + 1) * sizeof *nh);
    uint32_t *ni = nh ? realloc(rv->hint_ids, (rv->nhints + 1) * sizeof *ni) : NULL;
    if (nh)
        rv->hints = nh;
    if (!ni) {
        br_hint_close(&h);
        return BR_ENOMEM;
    }
    rv->hint_ids = ni;
    rv->hints[rv->nhints] = h;
    rv->hint_ids[rv->nhints++] = f->id;
    /* Known before the newest file is scanned, whose torn-tail rule needs
     * the last number written before it. */
    if (h.max_seq > e->seq)
        e->seq = h.max_seq;
    return 0;
}

/* verify: compares f's hint file, if any, with the records just scanned
 * from f (rv->v[first..]), logging and counting every difference. */
static void verify_hint(br_engine *e, const recov *rv, size_t first, const br_datafile *f,
                        uint64_t disk_size) {
    char name[48];
    br_hint_name(name, sizeof name, f->id);
    br_hint h;
    int rc = br_hint_open(e->dirfd, f->id, disk_size, f->size, &h);
    if (rc == -ENOENT)
        return; /* none yet: it is only an optimization */
    if (rc) {
        br_engine_log(e, BR_LOG_ERROR, "%s: unusable (%s)", name, br_strerror(rc));
        e->problems++;
        return;
    }
    /* The hint lists the records by key: so must the comparison. */
    size_t cnt = rv->n - first;
    rec_ent *sorted = malloc((cnt ? cnt : 1) * sizeof *sorted);
    if (!sorted) {
        br_hint_close(&h);
        return;
    }
    memcpy(sorted, rv->v + first, cnt * sizeof *sorted);
    qsort(sorted, cnt, sizeof *sorted, rec_cmp);
    size_t pos = BR_HINT_HEADER_SIZE, i = 0;
    bool bad = false;
    br_hint_entry he;
    while (!bad && br_hint_next(&h, &pos, &he)) {
        const rec_ent *r = i < cnt ? &sorted[i] : NULL;
        if (!r || r->offset != he.offset || r->vlen != he.vlen || r->seq != he.seq ||
            r->klen != (he.klen | (he.tombstone ? REC_DEL : 0)) ||
            memcmp(r->key, he.key, he.klen) != 0) {
            br_engine_log(e, BR_LOG_ERROR, "%s: entry for offset %u does not match its data file",
                          name, he.offset);
            e->problems++;
            bad = true;
            break;
        }
        i++;
    }
    if (!bad && i != cnt) {
        br_engine_log(e, BR_LOG_ERROR, "%s: lists %zu of the data file's %zu records", name, i,
                      cnt);
        e->problems++;
    }
    free(sorted);
    br_hint_close(&h);
}

#define RECOVER_LOG_BYTES (1ull << 30)

/* Logs how far an open has got; with the caller's clock, its speed too. */
static void log_progress(const br_engine *e, const char *what, size_t files, size_t nfiles,
                         size_t records, uint64_t bytes, uint64_t t0) {
    double mb = (double)bytes / 1e6;
    if (e->o.clock_ms) {
        double s = (double)(e->o.clock_ms() - t0) / 1000.0;
        br_engine_log(e, BR_LOG_INFO,
                      "%s: %s: %zu/%zu files, %zu records, %.0f MB in %.2f s (%.0f MB/s)", e->dir,
                      what, files, nfiles, records, mb, s, s > 0 ? mb / s : 0.0);
    } else {
        br_engine_log(e, BR_LOG_INFO, "%s: %s: %zu/%zu files, %zu records, %.0f MB", e->dir, what,
                      files, nfiles, records, mb);
    }
}

/* What the first pass learns of a file from its header. */
typedef struct file_info {
    uint32_t id;
    bool merged;     /* a merge output */
    bool superseded; /* an input of a merge output that is on disk */
    uint64_t list_off;
} file_info;

static int cmp_id(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = ((const file_info *)b)->id;
    return (x > y) - (x < y);
}

/*
 * Reads a merge output's input list (the bytes from list_off to the end of
 * the file) and marks its inputs that are on disk as superseded. Returns 0
 * or BR_ECORRUPT with the reason in err.
 */
static int read_input_list(br_engine *e, file_info *fi, size_t n, size_t at, char *err,
                           size_t errlen) {
    char name[48];
    br_df_name(name, sizeof name, fi[at].id);
    int fd = openat(e->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    uint8_t *buf = NULL;
    int rc = fstat(fd, &st) != 0 ? -errno : 0;
    uint64_t len = rc ? 0 : (uint64_t)st.st_size - fi[at].list_off;
    if (rc == 0 && ((uint64_t)st.st_size < fi[at].list_off + 8 || len > (1u << 20)))
        rc = BR_ECORRUPT;
    if (rc == 0 && !(buf = malloc(len)))
        rc = BR_ENOMEM;
    if (rc == 0 && pread(fd, buf, len, (off_t)fi[at].list_off) != (ssize_t)len)
        rc = BR_ECORRUPT;
    close(fd);
    uint32_t cnt = rc == 0 ? br_get32(buf) : 0;
    if (rc == 0 &&
        ((uint64_t)cnt * 4 + 8 != len || br_get32(buf + len - 4) != br_checksum(buf, len - 4)))
        rc = BR_ECORRUPT;
    for (uint32_t i = 0; rc == 0 && i < cnt; i++) {
        uint32_t id = br_get32(buf + 4 + 4 * i);
        file_info *in = bsearch(&id, fi, n, sizeof *fi, cmp_id);
        if (in && in->id < fi[at].id) /* an input is always older than its output */
            in->superseded = true;
    }
    free(buf);
    if (rc == BR_ECORRUPT)
        br_engine_seterr(err, errlen, "%s/%s: merge output with a bad input list", e->dir, name);
    return rc;
}

/*
 * First pass: reads every file's header. Merge outputs list the files they
 * replace; those still on disk (a crash came before they were deleted) are
 * superseded and not read. The active file is the newest file that is not
 * a merge output.
 */
static int classify(br_engine *e, const uint32_t *ids, size_t n, file_info **out, char *err,
                    size_t errlen) {
    file_info *fi = calloc(n ? n : 1, sizeof *fi);
    if (!fi)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        fi[i].id = ids[i];
        char name[48];
        br_df_name(name, sizeof name, ids[i]);
        int fd = openat(e->dirfd, name, O_RDONLY | O_CLOEXEC);
        uint8_t hdr[BR_FILE_HEADER_SIZE];
        uint32_t flags = 0;
        /* A header that cannot be read is reported by the scan. */
        if (fd >= 0 && pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
            br_file_header_check(hdr, sizeof hdr, ids[i], &flags, &fi[i].list_off) == 0)
            fi[i].merged = (flags & BR_FILE_MERGED) != 0;
        if (fd >= 0)
            close(fd);
    }
    for (size_t i = 0; i < n; i++) {
        if (!fi[i].merged)
            continue;
        int rc = read_input_list(e, fi, n, i, err, errlen);
        if (rc) {
            free(fi);
            return rc;
        }
    }
    *out = fi;
    return 0;
}

/* Deletes the files that merge outputs replaced (their hints too), and
 * merge outputs without records that replace nothing left on disk. */
static void remove_superseded(br_engine *e, const file_info *fi, size_t n) {
    bool any = false, inputs_left = false;
    for (size_t i = 0; i < n; i++)
        inputs_left |= fi[i].superseded;
    for (size_t i = 0; i < n; i++) {
        bool empty_output =
            fi[i].merged && !fi[i].superseded && fi[i].list_off == BR_FILE_HEADER_SIZE;
        if (!fi[i].superseded && !empty_output)
            continue;
        if (empty_output) {
            /* Still needed while a file it replaces may be on disk: kept
             * while this open deletes any (the next open removes it). */
            const br_datafile *f = e->files[fi[i].id];
            if (!f || f->live || f->dead || inputs_left)
                continue;
            br_engine_remove_file(e, e->files[fi[i].id]);
            br_df_free((br_datafile *)f);
        }
        char name[48];
        br_hint_name(name, sizeof name, fi[i].id);
        unlinkat(e->dirfd, name, 0);
        br_df_name(name, sizeof name, fi[i].id);
        if (unlinkat(e->dirfd, name, 0) == 0)
            any = true;
        br_engine_log(e, BR_LOG_INFO, "%s/%s: %s, deleted", e->dir, name,
                      empty_output ? "empty merge output" : "replaced by a merge output");
    }
    if (any)
        fsync(e->dirfd);
}

int br_engine_recover(br_engine *e, char *err, size_t errlen) {
    uint32_t *ids = NULL;
    size_t n = 0;
    int rc = list_files(e, &ids, &n);
    if (rc) {
        br_engine_seterr(err, errlen, "%s: cannot list directory: %s", e->dir, br_strerror(rc));
        return rc;
    }
    file_info *fi = NULL;
    if ((rc = classify(e, ids, n, &fi, err, errlen)) != 0) {
        free(ids);
        return rc;
    }
    size_t newest_i = n; /* none */
    for (size_t i = n; i-- > 0;)
        if (!fi[i].merged && !fi[i].superseded) {
            newest_i = i;
            break;
        }
    atomic_store(&e->next_id, n ? ids[n - 1] + 1 : 1);
    recov rv = {0};
    size_t hinted = 0, nread = 0;
    /* Progress of a large open, logged every RECOVER_LOG_BYTES read. */
    uint64_t t0 = e->o.clock_ms ? e->o.clock_ms() : 0, bytes = 0, next_log = RECOVER_LOG_BYTES;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (fi[i].superseded)
            continue;
        nread++;
        bool newest = i == newest_i;
        br_datafile *f;
        char name[48];
        br_df_name(name, sizeof name, ids[i]);
        /* The newest file becomes the active one: map it writable, at the cap. */
        rc = br_df_open(e->dirfd, ids[i], newest && !e->o.read_only ? e->o.max_file_size : 0, &f);
        if (rc) {
            br_engine_seterr(err, errlen, "%s/%s: cannot open: %s", e->dir, name, br_strerror(rc));
            break;
        }
        if ((rc = br_engine_add_file(e, f)) != 0) {
            br_df_free(f);
            break;
        }
        f->min_seq = UINT64_MAX;
        f->sealed = !newest;
        uint64_t disk_size = f->size;
        if (fi[i].merged) {
            /* Records end where the input list starts. */
            f->merged = 1;
            f->size = fi[i].list_off < disk_size ? fi[i].list_off : disk_size;
        }
        uint64_t end = newest ? f->map_len : f->size;
        if (bytes >= next_log) {
            log_progress(e, "reading", i, n, rv.n, bytes, t0);
            next_log = bytes + RECOVER_LOG_BYTES;
        }
        if (!newest && !e->o.verify) {
            int hr = load_hint(e, &rv, f, disk_size, &bytes);
            if (hr == 0) {
                hinted++;
                continue;
            }
            if (hr != -ENOENT) {
                br_engine_log(e, BR_LOG_WARN, "%s: hint file unusable (%s): scanning the data file",
                              name, br_strerror(hr));
                e->problems++;
            }
            if (hr != BR_ENOMEM && !e->o.read_only && br_engine_queue_hint(e, f->id) != 0)
                hr = BR_ENOMEM;
            if (hr == BR_ENOMEM) {
                rc = hr;
                break;
            }
        }
        size_t first = rv.n;
        rc = scan_file(e, &rv, f, end, newest, err, errlen);
        bytes += f->size;
        if (rc == 0 && !newest && e->o.verify)
            verify_hint(e, &rv, first, f, disk_size);
        if (rc == 0 && newest && e->o.read_only) {
            e->active = f;
        } else if (rc == 0 && newest) {
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
        br_engine_seterr(err, errlen, "%s: out of memory while rebuilding the index", e->dir);
    if (rc == 0 && nread > 1) {
        br_engine_log(e, BR_LOG_INFO, "%s: %zu of %zu closed files loaded from hint files", e->dir,
                      hinted, nread - 1);
        log_progress(e, "index rebuilt", nread, nread, rv.n, bytes, t0);
    }
    if (rc == 0 && !e->o.read_only)
        remove_superseded(e, fi, n);
    for (size_t i = 0; i < rv.nhints; i++)
        br_hint_close(&rv.hints[i]);
    free(rv.hints);
    free(rv.hint_ids);
    free(rv.v);
    free(ids);
    free(fi);
    return rc;
}
