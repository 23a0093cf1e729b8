/*
 * engine.c - open and close, the background threads (hint writer, interval
 * syncer), point reads and figures of the storage engine (contract in
 * include/bitraft/engine.h, file format in record.h). Recovery is in
 * recover.c, the write path in commit.c.
 *
 * Read path. A reader looks the key up under the shared lock, pins the file
 * (refs), drops the lock, checks the record (checksum, key) in the map and
 * copies the value out. A record is in the index only once it is durable,
 * so a reader never sees a write that a crash could take back.
 */
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

/* Offsets are 32 bits: a file's cap plus one oversized batch stay < 4 GiB. */
#define BR_MAX_FILE_CAP  (2u << 30)
#define BR_MAX_VALUE_CAP (1u << 30)

/* ---- Helpers ---------------------------------------------------------------- */

void br_engine_options_init(br_engine_options *o) {
    memset(o, 0, sizeof *o);
    o->max_file_size = 128u << 20;
    o->max_key_size = 64u << 10;
    o->max_value_size = 64u << 20;
    o->sync = BR_SYNC_ALWAYS;
    o->sync_interval_ms = 1000;
    o->range_readers = 16;
    o->compact_dead_pct = 50;
    o->compact_rate = 64u << 20;
    o->compact_interval_ms = 1000;
    o->clock_ms = br_engine_clock_ms;
}

uint64_t br_engine_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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

void br_engine_seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int br_engine_check_op(const br_engine *e, const br_op *op) {
    if (op->klen == 0)
        return BR_EEMPTYKEY;
    if (op->klen > e->o.max_key_size)
        return BR_EKEYTOOBIG;
    if (!op->del && op->vlen > e->o.max_value_size)
        return BR_EVALTOOBIG;
    return 0;
}

int br_engine_add_file(br_engine *e, br_datafile *f) {
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

void br_engine_remove_file(br_engine *e, br_datafile *f) {
    if (f->id < e->files_cap && e->files[f->id] == f) {
        e->files[f->id] = NULL;
        e->nfiles--;
    }
}

/* ---- Hint writer ---------------------------------------------------------------- */

/* Queues closed file id for a hint file. Returns 0 or BR_ENOMEM. */
int br_engine_queue_hint(br_engine *e, uint32_t id) {
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
        /* Closed files are immutable; the pin keeps compaction from
         * deleting one while its hint is written. A file already merged
         * away is gone from the table and needs no hint. */
        pthread_rwlock_rdlock(&e->lock);
        br_datafile *f = id < e->files_cap ? e->files[id] : NULL;
        if (f)
            atomic_fetch_add_explicit(&f->refs, 1, memory_order_acquire);
        pthread_rwlock_unlock(&e->lock);
        int rc = f ? br_hint_write(e->dirfd, f) : 0;
        if (f)
            atomic_fetch_sub_explicit(&f->refs, 1, memory_order_release);
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
        o.range_readers > 256 || (o.sync == BR_SYNC_INTERVAL && o.sync_interval_ms == 0) ||
        o.compact_dead_pct > 100 || (o.compact_dead_pct && o.compact_interval_ms == 0) ||
        o.sync > BR_SYNC_NEVER) {
        br_engine_seterr(err, errlen, "invalid engine options");
        return BR_EINVAL;
    }
    if (!o.clock_ms)
        o.clock_ms = br_engine_clock_ms;
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
    pthread_mutex_init(&e->cmu, NULL);
    pthread_mutex_init(&e->cwmu, NULL);
    pthread_cond_init(&e->ccv, NULL);
    atomic_init(&e->next_id, 1);
    e->creq = -1;
    int rc = 0;
    e->dir = strdup(dir);
    e->kd = br_kd_new();
    if (!e->dir) {
        rc = BR_ENOMEM;
        goto fail;
    }
    if (!e->o.read_only && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        br_engine_seterr(err, errlen, "%s: cannot create: %s", dir, br_strerror(rc));
        goto fail;
    }
    e->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (e->dirfd < 0) {
        rc = -errno;
        br_engine_seterr(err, errlen, "%s: cannot open: %s", dir, br_strerror(rc));
        goto fail;
    }
    /* A writer holds LOCK exclusively; read-only openers share it. */
    e->lockfd = e->o.read_only ? openat(e->dirfd, "LOCK", O_RDONLY | O_CLOEXEC)
                               : openat(e->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (e->lockfd < 0) {
        rc = -errno;
        br_engine_seterr(err, errlen, "%s/LOCK: %s%s", dir, br_strerror(rc),
                         rc == -ENOENT ? " (not a bitraft data directory)" : "");
        goto fail;
    }
    if (flock(e->lockfd, (e->o.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? BR_ELOCKED : -errno;
        br_engine_seterr(err, errlen, "%s: %s", dir,
                         rc == BR_ELOCKED ? "data directory is in use by another bitraft process"
                                          : br_strerror(rc));
        goto fail;
    }
    if ((rc = br_engine_recover(e, err, errlen)) != 0)
        goto fail;
    if (e->o.read_only) {
        br_engine_log(e, BR_LOG_INFO, "%s: opened read-only, %zu keys in %u files", dir,
                      br_kd_count(e->kd), e->nfiles);
        *out = e;
        return 0;
    }
    if (!e->active) {
        br_datafile *f;
        if ((rc = br_df_create(e->dirfd, atomic_fetch_add(&e->next_id, 1), e->o.max_file_size,
                               &f)) != 0) {
            br_engine_seterr(err, errlen, "%s: cannot create the first data file: %s", dir,
                             br_strerror(rc));
            goto fail;
        }
        if ((rc = br_engine_add_file(e, f)) != 0) {
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
    if ((rc = br_compact_start(e)) != 0)
        goto fail;
    br_engine_log(e, BR_LOG_INFO, "%s: opened, %zu keys in %u files, last seq %llu", dir,
                  br_kd_count(e->kd), e->nfiles, (unsigned long long)e->seq);
    *out = e;
    return 0;
fail:
    if (rc == BR_ENOMEM)
        br_engine_seterr(err, errlen, "%s: out of memory", dir);
    e->active = NULL; /* br_engine_close must not sync a file it could not open */
    br_engine_close(e);
    return rc;
}

int br_engine_close(br_engine *e) {
    if (!e)
        return 0;
    int rc = 0;
    /* First: a merge in progress is abandoned (its output removed). */
    br_compact_stop(e);
    if (e->syncer_running) {
        pthread_mutex_lock(&e->smu);
        e->stopping = true;
        pthread_cond_signal(&e->scv);
        pthread_mutex_unlock(&e->smu);
        pthread_join(e->syncer, NULL);
    }
    if (e->active && !e->o.read_only) {
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
    br_compact_release(e);
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
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->cwmu);
    pthread_cond_destroy(&e->ccv);
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
    st->problems = e->problems; /* set during open only */
    st->compactions = STAT_GET(n_compactions);
    st->compact_files_in = STAT_GET(n_compact_in);
    st->compact_bytes_read = STAT_GET(n_compact_read);
    st->compact_bytes_written = STAT_GET(n_compact_written);
    st->compact_reclaimed = STAT_GET(n_compact_reclaimed);
    st->compact_running = STAT_GET(compact_running);
    st->compact_todo_bytes = STAT_GET(compact_todo);
    st->compact_done_bytes = STAT_GET(compact_done);
}

void br_engine_file_stats(br_engine *e, void (*fn)(void *ctx, const br_file_stats *fs), void *ctx) {
    pthread_rwlock_rdlock(&e->lock);
    for (uint32_t i = 0; i < e->files_cap; i++) {
        const br_datafile *f = e->files[i];
        if (!f)
            continue;
        br_file_stats fs = {f->id, f->size, f->live, f->dead, f == e->active, f->merged};
        fn(ctx, &fs);
    }
    pthread_rwlock_unlock(&e->lock);
}
