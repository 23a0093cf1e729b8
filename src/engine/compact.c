/*
 * compact.c - online compaction (merge): rewriting the live records of
 * closed data files into new files so that the space of overwritten values
 * and of tombstones no longer needed comes back (contract in engine.h,
 * format of a merge output in record.h).
 *
 * One merge turns a group of closed files (its inputs) into one merge
 * output, in these steps:
 *
 *  1. Copy. Every record of the inputs, in id and offset order, is checked
 *     (checksum) and kept when it is a put the index still points at, or a
 *     tombstone that may still hide an older record of its key. A kept
 *     record keeps its sequence number and loses its batch framing (the
 *     batch was whole, or it would not be in a closed file). Output goes to
 *     NNNNNNNNNN.data.tmp, paced at compact_rate.
 *  2. Commit. The input list is appended, the header written, the file
 *     synced, renamed into place and the directory synced. From this moment
 *     the inputs count as deleted: an open that finds a merge output
 *     ignores (and deletes) the files it lists. Before it, the .tmp is
 *     removed by the next open and the inputs stand. Either way the store
 *     holds the same records, so a crash at any point of a merge changes
 *     nothing a reader can see.
 *  3. Swap. Each moved record's index entry is pointed at the output only
 *     if it still points at the input record (br_kd_replace_if): a write
 *     that landed during the merge wins, and its copy in the output just
 *     counts as dead. The swap takes the exclusive lock in short slices.
 *  4. Release. The inputs leave the file table; they are unmapped and
 *     deleted once no reader pins them (a range may hold a pin for a
 *     while), which the compaction thread checks each time it wakes.
 *
 * Which record of a key is the newest is decided by sequence number (open
 * does the same), not by file order: an output holds old records under a
 * new, higher file id.
 *
 * Tombstones. A tombstone with sequence number s is dropped only when no
 * closed file outside the group holds a record numbered below s (`floor`
 * below): then no older record of its key exists outside the group, and
 * those inside are dropped with it (they are dead), and step 2 makes the
 * whole group disappear at once. Files written after the merge started
 * hold only newer records.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "br_io.h"
#include "engine/hint.h"
#include "engine/internal.h"

#define MERGE_BUF       (1u << 20) /* output buffer */
#define MERGE_PACE_STEP (1u << 18) /* bytes between two checks of pace and stop */
#define MERGE_LOOKUPS   64         /* index lookups per shared-lock hold */
#define MERGE_SWAPS     1024       /* index swaps per exclusive-lock hold */
#define MERGE_AHEAD     (4u << 20) /* read-ahead of input data */

void (*br_compact_test_hook)(int step);

static void hook(int step) {
    if (br_compact_test_hook)
        br_compact_test_hook(step);
}

/* Where a moved record was and where it is now. */
typedef struct move {
    uint32_t new_off, old_off, old_id;
} move;

typedef struct merge {
    br_engine *e;
    br_datafile **in; /* inputs, in id order */
    size_t nin;
    uint64_t floor; /* smallest sequence number in closed files outside the group:
                       a tombstone numbered above it is kept */
    uint32_t id;    /* the output's */
    int fd;
    uint8_t *buf;
    size_t buf_used;
    uint64_t buf_at; /* file offset of buf[0] */
    uint64_t out_end;
    move *moves;
    size_t nmoves, moves_cap;
    uint64_t min_seq, tomb_max_seq, tomb_bytes;
    size_t list_bytes; /* of the input list at the end of the output */
    uint64_t t0, io;   /* pacing: start time, bytes read + written */
} merge;

/* ---- Picking ------------------------------------------------------------------ */

/* Smallest sequence number f holds (UINT64_MAX when empty; 0 when unknown,
 * which keeps every tombstone). The records of a file that is not a merge
 * output are in sequence order. */
static uint64_t file_min_seq(const br_datafile *f) {
    if (f->merged)
        return f->min_seq;
    if (f->size <= BR_FILE_HEADER_SIZE)
        return UINT64_MAX;
    br_rec_hdr h;
    if (br_rec_decode(f->map + BR_FILE_HEADER_SIZE, f->size - BR_FILE_HEADER_SIZE, &h) != 0)
        return 0;
    return h.seq;
}

/* Whether every tombstone of f could be dropped if f were merged alone,
 * given the smallest sequence number of the other closed files. For a file
 * that is not a merge output, the other files hold either only older or
 * only newer numbers than all of its own (the numbers of one written file
 * form a run no other file shares). */
static bool tombs_droppable(const br_datafile *f, uint64_t fmin, uint64_t others_min) {
    return f->merged ? others_min > f->tomb_max_seq : others_min > fmin;
}

/*
 * Picks the closed files worth merging: those whose reclaimable bytes
 * (dead values; tombstones too when they can go) are at least pct percent
 * of their data (pct 0: any). Returns their count with the files in *out
 * (id order; the caller frees it), or a negative error. Shared lock held.
 */
/* A file picked for merging, with its live bytes as of the pick. */
typedef struct picked {
    br_datafile *f;
    uint64_t live;
} picked;

static ssize_t pick(br_engine *e, uint32_t pct, picked **out) {
    size_t n = 0;
    for (uint32_t i = 0; i < e->files_cap; i++)
        n += e->files[i] && e->files[i] != e->active;
    /* Only sealed files are merged (a rollover seals the old active file
     * after it stopped being active); all closed ones count for fmin. */
    br_datafile **v = malloc((n ? n : 1) * sizeof *v);
    uint64_t *fmin = malloc((n ? n : 1) * sizeof *fmin);
    picked *p = malloc((n ? n : 1) * sizeof *p);
    if (!v || !fmin || !p) {
        free(v);
        free(fmin);
        free(p);
        return BR_ENOMEM;
    }
    /* The two smallest minima, so each file knows the smallest of the others. */
    uint64_t m1 = UINT64_MAX, m2 = UINT64_MAX;
    size_t k = 0;
    for (uint32_t i = 0; i < e->files_cap; i++) {
        br_datafile *f = e->files[i];
        if (!f || f == e->active)
            continue;
        v[k] = f;
        fmin[k] = file_min_seq(f);
        if (fmin[k] < m1) {
            m2 = m1;
            m1 = fmin[k];
        } else if (fmin[k] < m2) {
            m2 = fmin[k];
        }
        k++;
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        br_datafile *f = v[i];
        uint64_t others = fmin[i] == m1 ? m2 : m1;
        uint64_t reclaim = f->dead - f->tomb;
        if (f->tomb && tombs_droppable(f, fmin[i], others))
            reclaim += f->tomb;
        uint64_t data = f->size > BR_FILE_HEADER_SIZE ? f->size - BR_FILE_HEADER_SIZE : 0;
        if (f->sealed && reclaim > 0 && reclaim * 100 >= (uint64_t)pct * data)
            p[c++] = (picked){f, f->live};
    }
    free(v);
    free(fmin);
    *out = p;
    return (ssize_t)c;
}

/* ---- Pacing ------------------------------------------------------------------- */

/* Sleeps as long as needed to keep the merge's I/O at compact_rate, in
 * slices short enough for close to interrupt. Returns -ECANCELED when the
 * engine is closing. */
static int pace(merge *m) {
    br_engine *e = m->e;
    for (;;) {
        if (atomic_load(&e->cstop))
            return -ECANCELED;
        if (!e->o.compact_rate)
            return 0;
        uint64_t due = m->io * 1000 / e->o.compact_rate, spent = e->o.clock_ms() - m->t0;
        if (spent >= due)
            return 0;
        uint64_t ms = due - spent < 50 ? due - spent : 50;
        struct timespec ts = {0, (long)(ms * 1000000)};
        nanosleep(&ts, NULL);
    }
}

/* ---- Writing the output --------------------------------------------------------- */

static int flush(merge *m) {
    int rc = br_pwrite_all(m->fd, m->buf, m->buf_used, m->buf_at);
    m->io += m->buf_used;
    m->buf_at += m->buf_used;
    m->buf_used = 0;
    return rc;
}

/* Appends bytes to the output. */
static int emit(merge *m, const uint8_t *p, size_t len) {
    if (m->buf_used + len > MERGE_BUF) {
        int rc = flush(m);
        if (rc)
            return rc;
    }
    if (len > MERGE_BUF) {
        int rc = br_pwrite_all(m->fd, p, len, m->buf_at);
        m->io += len;
        m->buf_at += len;
        return rc;
    }
    memcpy(m->buf + m->buf_used, p, len);
    m->buf_used += len;
    return 0;
}

/* Copies the record h at p (from input file `in`, offset off) into the
 * output, without batch framing. */
static int copy_record(merge *m, const br_datafile *in, uint64_t off, const uint8_t *p,
                       const br_rec_hdr *h) {
    size_t size = br_rec_size(h->klen, h->vlen);
    uint8_t flags = h->flags & BR_REC_TOMBSTONE;
    int rc;
    if (flags == h->flags) {
        rc = emit(m, p, size); /* the same bytes, checksum included */
    } else {
        /* A record of a batch: its flags, hence its checksum, change. */
        uint8_t *tmp = malloc(size);
        if (!tmp)
            return BR_ENOMEM;
        br_rec_encode(tmp, h->seq, flags, p + BR_REC_HEADER_SIZE, h->klen,
                      p + BR_REC_HEADER_SIZE + h->klen, h->vlen);
        rc = emit(m, tmp, size);
        free(tmp);
    }
    if (rc)
        return rc;
    if (m->out_end + size > UINT32_MAX)
        return BR_ETOOBIG; /* offsets in the index are 32 bits */
    if (h->seq < m->min_seq)
        m->min_seq = h->seq;
    if (flags) {
        m->tomb_bytes += size;
        if (h->seq > m->tomb_max_seq)
            m->tomb_max_seq = h->seq;
    } else {
        if (m->nmoves == m->moves_cap) {
            size_t cap = m->moves_cap ? m->moves_cap * 2 : 4096;
            move *nm = realloc(m->moves, cap * sizeof *nm);
            if (!nm)
                return BR_ENOMEM;
            m->moves = nm;
            m->moves_cap = cap;
        }
        m->moves[m->nmoves++] = (move){(uint32_t)m->out_end, (uint32_t)off, in->id};
    }
    m->out_end += size;
    return 0;
}

/* Step 1: copies the live records of one input. */
static int copy_input(merge *m, br_datafile *in) {
    br_engine *e = m->e;
    uint64_t off = BR_FILE_HEADER_SIZE, paced = off, ahead = off;
    atomic_fetch_add_explicit(&e->compact_done, off, memory_order_relaxed);
    char name[48];
    br_df_name(name, sizeof name, in->id);
    while (off < in->size) {
        /* Look a run of records up under one hold of the shared lock. */
        struct {
            uint64_t off;
            br_rec_hdr h;
            bool keep;
        } run[MERGE_LOOKUPS];
        size_t nrun = 0;
        uint64_t at = off;
        while (nrun < MERGE_LOOKUPS && at < in->size) {
            br_rec_hdr h;
            if (br_rec_decode(in->map + at, in->size - at, &h) != 0) {
                br_engine_log(e, BR_LOG_ERROR, "%s: corrupt record at offset %llu: not merged",
                              name, (unsigned long long)at);
                return BR_ECORRUPT;
            }
            run[nrun].off = at;
            run[nrun].h = h;
            run[nrun].keep = (h.flags & BR_REC_TOMBSTONE) && h.seq > m->floor;
            nrun++;
            at += br_rec_size(h.klen, h.vlen);
        }
        pthread_rwlock_rdlock(&e->lock);
        for (size_t i = 0; i < nrun; i++) {
            if (run[i].h.flags & BR_REC_TOMBSTONE)
                continue;
            br_loc loc;
            run[i].keep =
                br_kd_get(e->kd, in->map + run[i].off + BR_REC_HEADER_SIZE, run[i].h.klen, &loc) &&
                loc.file_id == in->id && loc.offset == run[i].off;
        }
        pthread_rwlock_unlock(&e->lock);
        for (size_t i = 0; i < nrun; i++) {
            if (!run[i].keep)
                continue;
            int rc = copy_record(m, in, run[i].off, in->map + run[i].off, &run[i].h);
            if (rc)
                return rc;
        }
        m->io += at - off;
        atomic_fetch_add_explicit(&e->compact_done, at - off, memory_order_relaxed);
        off = at;
        if (off >= ahead && off < in->size) {
            /* Input is read in order: ask for the next stretch ahead of use. */
            uint64_t a = off & ~(uint64_t)4095, len = MERGE_AHEAD;
            if (a + len > in->size)
                len = in->size - a;
            madvise(in->map + a, len, MADV_WILLNEED);
            ahead = a + len / 2;
        }
        if (off - paced >= MERGE_PACE_STEP) {
            paced = off;
            int rc = pace(m);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Step 2: the input list, the header, sync, rename. */
static int commit_output(merge *m) {
    br_engine *e = m->e;
    int rc = flush(m);
    if (rc)
        return rc;
    /* The list names the inputs and every file replaced earlier that is
     * still on disk (pinned by a reader): those are listed only by their
     * own merge output, which may be one of this merge's inputs — once it
     * is deleted, nothing else would keep them from coming back at the
     * next open. cmu is held, so the set is stable. */
    uint64_t list_off = m->out_end;
    size_t cnt = m->nin + e->ngrave;
    size_t llen = 8 + 4 * cnt;
    uint8_t *list = malloc(llen);
    if (!list)
        return BR_ENOMEM;
    br_put32(list, (uint32_t)cnt);
    for (size_t i = 0; i < m->nin; i++)
        br_put32(list + 4 + 4 * i, m->in[i]->id);
    for (size_t i = 0; i < e->ngrave; i++)
        br_put32(list + 4 + 4 * (m->nin + i), e->grave[i]->id);
    br_put32(list + llen - 4, br_checksum(list, llen - 4));
    m->list_bytes = llen;
    hook(BR_COMPACT_STEP_COPIED);
    rc = br_pwrite_all(m->fd, list, llen, list_off);
    free(list);
    uint8_t hdr[BR_FILE_HEADER_SIZE];
    br_file_header_encode(hdr, m->id, BR_FILE_MERGED, list_off);
    if (rc == 0)
        rc = br_pwrite_all(m->fd, hdr, sizeof hdr, 0);
    if (rc == 0 && fdatasync(m->fd) != 0)
        rc = -errno;
    if (rc)
        return rc;
    hook(BR_COMPACT_STEP_SYNCED);
    char name[48], tmp[64];
    br_df_name(name, sizeof name, m->id);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    if (renameat(e->dirfd, tmp, e->dirfd, name) != 0)
        return -errno;
    if (fsync(e->dirfd) != 0) {
        /* Whether the rename is durable is unknown: either way the store
         * is consistent (see the top of this file), so go on. */
        br_engine_log(e, BR_LOG_WARN, "%s: directory sync after a merge failed: %s", e->dir,
                      br_strerror(-errno));
    }
    hook(BR_COMPACT_STEP_RENAMED);
    return 0;
}

/* Step 3: maps the output, adds it to the table and moves the index
 * entries that still point at the inputs. Step 4: retires the inputs. */
static int adopt_output(merge *m) {
    br_engine *e = m->e;
    br_datafile *out;
    int rc = br_df_open(e->dirfd, m->id, 0, &out);
    if (rc)
        return rc; /* the next open adopts it; until then the inputs serve */
    out->merged = 1;
    out->sealed = 1;
    out->size = m->out_end;
    out->min_seq = m->min_seq;
    out->tomb_max_seq = m->tomb_max_seq;
    out->tomb = out->dead = m->tomb_bytes;
    pthread_rwlock_wrlock(&e->lock);
    rc = br_engine_add_file(e, out);
    pthread_rwlock_unlock(&e->lock);
    if (rc) {
        br_df_free(out);
        return rc;
    }
    for (size_t i = 0; i < m->nmoves;) {
        pthread_rwlock_wrlock(&e->lock);
        for (size_t end = i + MERGE_SWAPS < m->nmoves ? i + MERGE_SWAPS : m->nmoves; i < end; i++) {
            const move *mv = &m->moves[i];
            const uint8_t *p = out->map + mv->new_off;
            uint32_t klen = br_get32(p + 4), vlen = br_get32(p + 8);
            uint64_t size = br_rec_size(klen, vlen);
            br_loc from = {mv->old_id, mv->old_off, vlen}, to = {m->id, mv->new_off, vlen};
            if (br_kd_replace_if(e->kd, p + BR_REC_HEADER_SIZE, klen, from, to)) {
                out->live += size;
                br_datafile *in = e->files[mv->old_id];
                in->live -= size;
                in->dead += size;
            } else {
                out->dead += size; /* overwritten or deleted during the merge */
            }
        }
        pthread_rwlock_unlock(&e->lock);
    }
    /* No index entry points into the inputs any more: only readers that
     * looked a key up before the swap can still use them (pinned). */
    pthread_rwlock_wrlock(&e->lock);
    for (size_t i = 0; i < m->nin; i++)
        br_engine_remove_file(e, m->in[i]);
    pthread_rwlock_unlock(&e->lock);
    for (size_t i = 0; i < m->nin; i++)
        e->grave[e->ngrave++] = m->in[i]; /* room reserved by run_merge */
    if (br_engine_queue_hint(e, m->id) != 0)
        br_engine_log(e, BR_LOG_WARN, "%010u.data: no memory to queue its hint file", m->id);
    return 0;
}

/* Deletes the replaced files no reader pins any more. cmu held. */
static void reap(br_engine *e, bool all) {
    size_t k = 0;
    bool any = false;
    for (size_t i = 0; i < e->ngrave; i++) {
        br_datafile *f = e->grave[i];
        if (!all && atomic_load_explicit(&f->refs, memory_order_acquire) != 0) {
            e->grave[k++] = f;
            continue;
        }
        char name[48];
        br_hint_name(name, sizeof name, f->id);
        unlinkat(e->dirfd, name, 0);
        br_df_name(name, sizeof name, f->id);
        if (unlinkat(e->dirfd, name, 0) != 0)
            br_engine_log(e, BR_LOG_WARN, "%s/%s: cannot delete: %s", e->dir, name,
                          br_strerror(-errno));
        any = true;
        br_df_free(f);
        hook(BR_COMPACT_STEP_DELETED_ONE);
    }
    e->ngrave = k;
    if (any)
        fsync(e->dirfd);
}

/* Merges one group of closed files into one output. cmu held. */
static int run_merge(br_engine *e, br_datafile **in, size_t nin) {
    if (e->ngrave + nin > e->grave_cap) {
        size_t cap = e->grave_cap ? e->grave_cap : 16;
        while (cap < e->ngrave + nin)
            cap *= 2;
        br_datafile **ng = realloc(e->grave, cap * sizeof *ng);
        if (!ng)
            return BR_ENOMEM;
        e->grave = ng;
        e->grave_cap = cap;
    }
    merge m = {.e = e, .in = in, .nin = nin, .fd = -1, .min_seq = UINT64_MAX};
    /* The floor for tombstones: files created from now on hold only newer
     * records; the inputs do not count. */
    m.floor = UINT64_MAX;
    pthread_rwlock_rdlock(&e->lock);
    for (uint32_t i = 0; i < e->files_cap; i++) {
        br_datafile *f = e->files[i];
        if (!f || f == e->active)
            continue;
        bool input = false;
        for (size_t j = 0; j < nin && !input; j++)
            input = in[j] == f;
        uint64_t s = input ? UINT64_MAX : file_min_seq(f);
        if (s < m.floor)
            m.floor = s;
    }
    pthread_rwlock_unlock(&e->lock);
    /* With nothing outside the floor is UINT64_MAX and every tombstone
     * goes; an unknown minimum (0) keeps them all. */

    m.id = atomic_fetch_add(&e->next_id, 1);
    char name[48], tmp[64];
    br_df_name(name, sizeof name, m.id);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int rc = 0;
    uint64_t in_bytes = 0;
    for (size_t i = 0; i < nin; i++)
        in_bytes += in[i]->size;
    m.buf = malloc(MERGE_BUF);
    if (!m.buf)
        return BR_ENOMEM;
    m.fd = openat(e->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (m.fd < 0) {
        rc = -errno;
        goto out;
    }
    m.t0 = e->o.clock_ms();
    m.buf_at = 0;
    m.out_end = BR_FILE_HEADER_SIZE;
    static const uint8_t zero_hdr[BR_FILE_HEADER_SIZE];
    rc = emit(&m, zero_hdr, sizeof zero_hdr); /* the header is written last */
    for (size_t i = 0; i < nin && rc == 0; i++)
        rc = copy_input(&m, in[i]);
    if (rc == 0)
        rc = commit_output(&m);
    close(m.fd);
    m.fd = -1;
    if (rc) {
        unlinkat(e->dirfd, tmp, 0);
        goto out;
    }
    rc = adopt_output(&m);
    hook(BR_COMPACT_STEP_ADOPTED);
    if (rc) {
        br_engine_log(e, BR_LOG_ERROR,
                      "%s/%s: merge output written but not taken into use (%s); the next open "
                      "will",
                      e->dir, name, br_strerror(rc));
        goto out;
    }
    uint64_t out_bytes = m.out_end + m.list_bytes;
    STAT_ADD(n_compactions, 1);
    STAT_ADD(n_compact_in, nin);
    STAT_ADD(n_compact_read, in_bytes);
    STAT_ADD(n_compact_written, out_bytes);
    if (in_bytes > out_bytes)
        STAT_ADD(n_compact_reclaimed, in_bytes - out_bytes);
    br_engine_log(e, BR_LOG_INFO,
                  "%s: merged %zu file%s (%010u.data..%010u.data, %.1f MB) into %s (%.1f MB, "
                  "%zu records)",
                  e->dir, nin, nin == 1 ? "" : "s", in[0]->id, in[nin - 1]->id,
                  (double)in_bytes / 1e6, name, (double)out_bytes / 1e6, m.nmoves);
out:
    if (rc && rc != -ECANCELED)
        br_engine_log(e, BR_LOG_WARN, "%s: merge into %s abandoned: %s", e->dir, name,
                      br_strerror(rc));
    free(m.buf);
    free(m.moves);
    return rc;
}

/*
 * One compaction: picks the files, groups them in id order so that each
 * group's live data fits one file, and merges group after group. cmu held.
 */
static int compact_now(br_engine *e, uint32_t pct) {
    pthread_mutex_lock(&e->wmu);
    int failed = e->failed;
    pthread_mutex_unlock(&e->wmu);
    if (failed)
        return failed; /* the disk failed a sync: write nothing more */
    picked *v;
    pthread_rwlock_rdlock(&e->lock);
    ssize_t n = pick(e, pct, &v);
    pthread_rwlock_unlock(&e->lock);
    if (n < 0)
        return (int)n;
    uint64_t todo = 0;
    for (ssize_t i = 0; i < n; i++)
        todo += v[i].f->size;
    atomic_store(&e->compact_todo, todo);
    atomic_store(&e->compact_done, 0);
    atomic_store(&e->compact_running, n > 0);
    int rc = 0;
    for (size_t i = 0; i < (size_t)n && rc == 0;) {
        size_t j = i + 1;
        uint64_t live = v[i].live;
        while (j < (size_t)n && live + v[j].live <= e->o.max_file_size)
            live += v[j++].live;
        br_datafile **in = malloc((j - i) * sizeof *in);
        if (!in) {
            rc = BR_ENOMEM;
            break;
        }
        for (size_t x = i; x < j; x++)
            in[x - i] = v[x].f;
        rc = run_merge(e, in, j - i);
        free(in);
        reap(e, false);
        i = j;
    }
    atomic_store(&e->compact_running, 0);
    free(v);
    return rc;
}

int br_engine_compact(br_engine *e, uint32_t min_dead_pct) {
    if (e->o.read_only)
        return BR_EREADONLY;
    if (min_dead_pct > 100)
        return BR_EINVAL;
    pthread_mutex_lock(&e->cmu);
    int rc = atomic_load(&e->cstop) ? BR_ECLOSED : compact_now(e, min_dead_pct);
    reap(e, false); /* also files that readers held until now */
    pthread_mutex_unlock(&e->cmu);
    return rc == -ECANCELED ? BR_ECLOSED : rc;
}

int br_engine_compact_start(br_engine *e, uint32_t min_dead_pct) {
    if (e->o.read_only)
        return BR_EREADONLY;
    if (min_dead_pct > 100)
        return BR_EINVAL;
    if (atomic_load(&e->cstop) || !e->compactor_running)
        return BR_ECLOSED;
    pthread_mutex_lock(&e->cwmu);
    /* Two requests before the thread wakes: the more thorough one wins. */
    if (e->creq < 0 || (int)min_dead_pct < e->creq)
        e->creq = (int)min_dead_pct;
    e->cwake = true;
    pthread_cond_signal(&e->ccv);
    pthread_mutex_unlock(&e->cwmu);
    return 0;
}

/* ---- The compaction thread ------------------------------------------------------ */

static void *compactor_main(void *arg) {
    br_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->cwmu);
        if (!e->cwake && !atomic_load(&e->cstop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)e->o.compact_interval_ms * 1000000u;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&e->ccv, &e->cwmu, &ts);
        }
        e->cwake = false;
        int req = e->creq;
        e->creq = -1;
        pthread_mutex_unlock(&e->cwmu);
        if (atomic_load(&e->cstop))
            break;
        pthread_mutex_lock(&e->cmu);
        if (req >= 0)
            compact_now(e, (uint32_t)req); /* logs its own failures */
        else if (e->o.compact_dead_pct)
            compact_now(e, e->o.compact_dead_pct);
        reap(e, false);
        pthread_mutex_unlock(&e->cmu);
    }
    return NULL;
}

int br_compact_start(br_engine *e) {
    if (pthread_create(&e->compactor, NULL, compactor_main, e) != 0)
        return BR_ENOMEM;
    e->compactor_running = true;
    return 0;
}

void br_compact_wake(br_engine *e) {
    pthread_mutex_lock(&e->cwmu);
    e->cwake = true;
    pthread_cond_signal(&e->ccv);
    pthread_mutex_unlock(&e->cwmu);
}

void br_compact_stop(br_engine *e) {
    atomic_store(&e->cstop, true);
    if (e->compactor_running) {
        br_compact_wake(e);
        pthread_join(e->compactor, NULL);
        e->compactor_running = false;
    }
}

void br_compact_release(br_engine *e) {
    /* Close comes after every reader: nothing pins these any more. */
    reap(e, true);
    free(e->grave);
    e->grave = NULL;
    e->ngrave = e->grave_cap = 0;
}
