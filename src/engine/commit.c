/*
 * commit.c - the write path: group commit, rollover, and the public put,
 * delete and sync calls.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define BR_GROUP_MAX_BYTES (4u << 20) /* a group's bytes, unless one writer's are more */
#define BR_APPLY_AHEAD     8          /* index prefetch distance when applying a batch */
#define BR_SYNCS_IN_FLIGHT 1          /* concurrent fdatasyncs (see below) */

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
        f->tomb += size;
    } else {
        br_loc loc = {f->id, (uint32_t)off, vlen};
        existed = br_kd_put(e->kd, key, klen, loc, &old);
        f->live += size;
    }
    if (existed)
        mark_dead(e, old.file_id, br_rec_size(klen, old.vlen));
    return existed;
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
    int rc = br_df_create(e->dirfd, atomic_fetch_add(&e->next_id, 1), cap, &f);
    if (rc == 0) {
        pthread_rwlock_wrlock(&e->lock);
        rc = br_engine_add_file(e, f);
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
    if (src == 0) {
        pthread_rwlock_wrlock(&e->lock);
        old->sealed = 1; /* compaction may merge it from now on */
        pthread_rwlock_unlock(&e->lock);
    }
    if (src == 0 && br_engine_queue_hint(e, old->id) != 0)
        br_engine_log(e, BR_LOG_WARN, "%010u.data: no memory to queue its hint file", old->id);
    br_compact_wake(e); /* a closed file more: maybe something to merge */
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
    if (g->first->roll) {
        /* A checkpoint: every record so far goes into closed files. */
        if (e->wpos > BR_FILE_HEADER_SIZE)
            rc = rollover(e, 0);
        g->first->seq_out = e->seq;
        g->first->roll_id = e->active->id;
    }
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
            /* A numbered write (cluster mode) carries its own number. */
            uint64_t wseq = w->at_seq;
            if (wseq && wseq > seq)
                seq = wseq;
            else if (!wseq && w->batch)
                wseq = ++seq;
            for (size_t i = 0; i < w->nops; i++) {
                const br_op *op = &w->ops[i];
                uint8_t flags = op->del ? BR_REC_TOMBSTONE : 0;
                if (w->batch)
                    flags |= BR_REC_IN_BATCH | (i + 1 == w->nops ? BR_REC_COMMIT : 0);
                else if (!w->at_seq)
                    wseq = ++seq;
                uint32_t vlen = op->del ? 0 : op->vlen;
                br_rec_encode(f->map + off, wseq, flags, op->key, op->klen, op->val, vlen);
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
    int rc = br_engine_submit_writer(e, &w);
    if (existed)
        *existed = w.existed;
    return rc;
}

int br_engine_submit_writer(br_engine *e, br_writer *w) {
    if (e->o.read_only)
        return BR_EREADONLY;
    /* The group this writer may lead: it must live until the writer is
     * done, since the thread that applies it may be another one. */
    br_group g = {.first = w};
    pthread_cond_init(&w->cv, NULL);
    pthread_mutex_lock(&e->wmu);
    if (w->at_seq && w->at_seq <= e->seq) {
        /* A replay of a numbered write the store already holds. */
        pthread_mutex_unlock(&e->wmu);
        pthread_cond_destroy(&w->cv);
        return 0;
    }
    if (e->qtail)
        e->qtail->next = w;
    else
        e->qhead = w;
    e->qtail = w;
    /* Lead when first in line, nobody is copying, and fewer than
     * BR_SYNCS_IN_FLIGHT syncs run: waiting for a sync slot is what lets a
     * group gather many writers. */
    while (!w->done && !(e->qhead == w && !e->writing && e->syncs_running < BR_SYNCS_IN_FLIGHT))
        pthread_cond_wait(&w->cv, &e->wmu);
    if (!w->done) {
        /* Write leader: take a group of the writers queued behind us. */
        e->writing = true;
        size_t bytes = writer_bytes(w);
        bool sync = w->force_sync || e->o.sync == BR_SYNC_ALWAYS;
        br_writer *last = w;
        while (last->next && !w->roll && !last->next->roll) { /* a roll goes alone */
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
    while (!w->done)
        pthread_cond_wait(&w->cv, &e->wmu);
    pthread_mutex_unlock(&e->wmu);
    pthread_cond_destroy(&w->cv);
    if (w->locs != &w->loc1)
        free(w->locs);
    return w->rc;
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
