/*
 * standalone.c - the service over the local engine, no replication.
 *
 * Writes go through a FIFO queue to a pool of threads that each call the
 * engine (blocking until durable) and then the completion callback. The
 * pool is what lets many writes share one fdatasync: the engine groups the
 * writers that arrive while a sync is in flight, so the pool size bounds
 * the group size. Reads run on the caller's thread: the engine never makes
 * a reader wait for a flush.
 */
#include "service_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum job_kind { JOB_PUT, JOB_DELETE, JOB_WRITE } job_kind;

typedef struct job {
    struct job *next;
    job_kind kind;
    const void *key, *val;
    size_t klen, vlen;
    const br_batch *batch;
    br_service_done_fn cb;
    void *ctx;
} job;

typedef struct standalone {
    br_service base; /* first: the table and the key mode */
    br_engine *engine;
    pthread_mutex_t mu;
    pthread_cond_t work;    /* signalled when a job is queued or closing */
    pthread_cond_t drained; /* signalled when inflight drops to zero */
    job *head, *tail;       /* queued jobs, FIFO */
    uint64_t queued;        /* jobs in the queue */
    uint64_t inflight;      /* accepted, callback not yet returned */
    int closing;            /* no new operations; workers exit when the queue is empty */
    int inline_writes;      /* run writes on the caller's thread (sync policy not always) */
    unsigned nthreads;
    pthread_t *threads;
} standalone;

static const br_service_ops standalone_ops;

static int run_job(standalone *s, const job *j) {
    switch (j->kind) {
    case JOB_PUT:
        return br_engine_put(s->engine, j->key, j->klen, j->val, j->vlen);
    case JOB_DELETE:
        return br_engine_delete(s->engine, j->key, j->klen);
    default:
        return br_engine_write(s->engine, j->batch);
    }
}

static void *worker(void *arg) {
    standalone *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->closing)
            pthread_cond_wait(&s->work, &s->mu);
        job *j = s->head;
        if (!j)
            break; /* closing and nothing left */
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        s->queued--;
        pthread_mutex_unlock(&s->mu);

        j->cb(j->ctx, run_job(s, j));
        free(j);

        pthread_mutex_lock(&s->mu);
        if (--s->inflight == 0)
            pthread_cond_broadcast(&s->drained);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int br_service_open_standalone(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, br_service **out, char *err,
                               size_t errlen) {
    *out = NULL;
    br_service_options dflt;
    if (!so) {
        br_service_options_init(&dflt);
        so = &dflt;
    }
    unsigned n = so->write_threads;
    if (n < 1 || n > 1024) {
        if (err && errlen)
            snprintf(err, errlen, "write threads must be 1..1024, got %u", n);
        return BR_EINVAL;
    }
    standalone *s = calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    s->base.ops = &standalone_ops;
    int rc = br_engine_open(dir, eo, &s->engine, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->drained, NULL);
    br_engine_stats st;
    br_engine_stats_get(s->engine, &st);
    rc = br_service_key_mode_load(dir, so->int_keys, st.keys || st.last_seq, &s->base.key_mode, err,
                                  errlen);
    if (rc)
        goto fail;
    s->inline_writes = so->inline_writes && eo && eo->sync != BR_SYNC_ALWAYS;
    s->threads = calloc(n, sizeof *s->threads);
    if (!s->threads) {
        rc = BR_ENOMEM;
        goto fail;
    }
    for (; s->nthreads < n; s->nthreads++) {
        int e = pthread_create(&s->threads[s->nthreads], NULL, worker, s);
        if (e) {
            rc = -e;
            if (err && errlen)
                snprintf(err, errlen, "cannot start write thread: %s", br_strerror(rc));
            goto fail;
        }
    }
    *out = &s->base;
    return 0;
fail:
    br_service_close(&s->base);
    return rc;
}

static int sa_reads_inline(const br_service *s, unsigned flags) {
    (void)s, (void)flags;
    return 1;
}

static int sa_writes_inline(const br_service *bs) {
    return ((const standalone *)bs)->inline_writes;
}

static void sa_leader(br_service *s, uint64_t *self, uint64_t *leader, char *addr, size_t addrlen) {
    (void)s;
    if (self)
        *self = 0;
    if (leader)
        *leader = 0;
    if (addr && addrlen)
        addr[0] = 0;
}

/* Queues j (or runs it here when writes are inline), or returns BR_ECLOSED
 * (j is freed) when closing. */
static int submit(standalone *s, job *j) {
    if (s->inline_writes) {
        j->cb(j->ctx, run_job(s, j));
        free(j);
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        return BR_ECLOSED;
    }
    j->next = NULL;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->queued++;
    s->inflight++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static job *job_new(job_kind kind, br_service_done_fn cb, void *ctx) {
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->kind = kind;
        j->cb = cb;
        j->ctx = ctx;
    }
    return j;
}

static int sa_put(br_service *bs, const void *key, size_t klen, const void *val, size_t vlen,
                  br_service_done_fn cb, void *ctx) {
    standalone *s = (standalone *)bs;
    job *j = job_new(JOB_PUT, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->key = key;
    j->klen = klen;
    j->val = val;
    j->vlen = vlen;
    return submit(s, j);
}

static int sa_delete(br_service *bs, const void *key, size_t klen, br_service_done_fn cb,
                     void *ctx) {
    standalone *s = (standalone *)bs;
    job *j = job_new(JOB_DELETE, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->key = key;
    j->klen = klen;
    return submit(s, j);
}

static void *sa_batch_new(br_service *s) {
    (void)s;
    return br_batch_new();
}

static int sa_batch_put(void *b, const void *key, size_t klen, const void *val, size_t vlen) {
    return br_batch_put(b, key, klen, val, vlen);
}

static int sa_batch_delete(void *b, const void *key, size_t klen) {
    return br_batch_delete(b, key, klen);
}

static void sa_batch_free(void *b) {
    br_batch_free(b);
}

static int sa_write(br_service *bs, void *b, br_service_done_fn cb, void *ctx) {
    standalone *s = (standalone *)bs;
    job *j = job_new(JOB_WRITE, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->batch = (const br_batch *)b;
    return submit(s, j);
}

static int sa_get(br_service *bs, const void *key, size_t klen, unsigned flags,
                  br_service_get_fn cb, void *ctx) {
    standalone *s = (standalone *)bs;
    (void)flags;
    void *val = NULL;
    size_t vlen = 0;
    int rc = br_engine_get(s->engine, key, klen, &val, &vlen);
    cb(ctx, rc, rc ? NULL : val, rc ? 0 : vlen);
    return 0;
}

/* One store, no consensus: every read is linearizable as it is. */
static int sa_read_barrier(br_service *bs, br_service_done_fn cb, void *ctx) {
    (void)bs;
    cb(ctx, 0);
    return 0;
}

/* The engine's iterator behind the service's. */
typedef struct sa_iter {
    br_service_iter base;
    br_iter *it;
} sa_iter;

static int sa_iter_next(br_service_iter *it, const void **key, size_t *klen, const void **val,
                        size_t *vlen) {
    return br_iter_next(((sa_iter *)it)->it, key, klen, val, vlen);
}

static void sa_iter_free(br_service_iter *it) {
    br_iter_free(((sa_iter *)it)->it);
    free(it);
}

static const br_service_iter_ops sa_iter_ops = {sa_iter_next, sa_iter_free};

static int sa_range(br_service *bs, const void *start, size_t slen, const void *end, size_t elen,
                    size_t limit, unsigned flags, br_service_range_fn cb, void *ctx) {
    standalone *s = (standalone *)bs;
    (void)flags;
    sa_iter *si = calloc(1, sizeof *si);
    if (!si)
        return BR_ENOMEM;
    si->base.ops = &sa_iter_ops;
    int rc = br_engine_iter(s->engine, start, slen, end, elen, limit, &si->it);
    if (rc) {
        free(si);
        cb(ctx, rc, NULL);
    } else {
        cb(ctx, 0, &si->base);
    }
    return 0;
}

static void sa_stats(br_service *bs, br_service_stats *st) {
    standalone *s = (standalone *)bs;
    memset(st, 0, sizeof *st);
    st->mode = "standalone";
    st->key_mode = s->base.key_mode;
    br_engine_stats_get(s->engine, &st->engine);
    pthread_mutex_lock(&s->mu);
    st->writes_queued = s->queued;
    st->writes_inflight = s->inflight;
    pthread_mutex_unlock(&s->mu);
}

static int sa_compact(br_service *bs, uint32_t min_dead_pct) {
    return br_engine_compact_start(((standalone *)bs)->engine, min_dead_pct);
}

static int sa_close(br_service *bs) {
    standalone *s = (standalone *)bs;
    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    pthread_cond_broadcast(&s->work);
    while (s->inflight)
        pthread_cond_wait(&s->drained, &s->mu);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    free(s->threads);
    int rc = br_engine_close(s->engine);
    pthread_cond_destroy(&s->drained);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}

static const br_service_ops standalone_ops = {
    .mode = "standalone",
    .reads_inline = sa_reads_inline,
    .writes_inline = sa_writes_inline,
    .leader = sa_leader,
    .get = sa_get,
    .read_barrier = sa_read_barrier,
    .put = sa_put,
    .del = sa_delete,
    .batch_new = sa_batch_new,
    .batch_put = sa_batch_put,
    .batch_delete = sa_batch_delete,
    .batch_free = sa_batch_free,
    .write = sa_write,
    .range = sa_range,
    .stats = sa_stats,
    .compact = sa_compact,
    .close = sa_close,
};
