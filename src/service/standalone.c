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
#include "bitraft/service.h"

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

struct br_service {
    br_engine *engine;
    pthread_mutex_t mu;
    pthread_cond_t work;    /* signalled when a job is queued or closing */
    pthread_cond_t drained; /* signalled when inflight drops to zero */
    job *head, *tail;       /* queued jobs, FIFO */
    uint64_t queued;        /* jobs in the queue */
    uint64_t inflight;      /* accepted, callback not yet returned */
    int closing;            /* no new operations; workers exit when the queue is empty */
    int inline_writes;      /* run writes on the caller's thread (sync policy not always) */
    br_key_mode key_mode;   /* from the directory's KEYS file */
    unsigned nthreads;
    pthread_t *threads;
};

void br_service_options_init(br_service_options *o) {
    memset(o, 0, sizeof *o);
    o->write_threads = 32;
}

static int run_job(br_service *s, const job *j) {
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
    br_service *s = arg;
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

/*
 * The KEYS file: absent for byte keys, or the line "int\n" for integer
 * keys. Written once, when an empty directory is created in integer mode:
 * KEYS.tmp, fsync, rename, fsync of the directory; so after a crash it is
 * either whole or absent (and the directory still empty).
 */
static int key_mode_load(br_service *s, const char *dir, int want_int, char *err, size_t errlen) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/KEYS", dir);
    snprintf(tmp, sizeof tmp, "%s/KEYS.tmp", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[16] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n == 4 && memcmp(buf, "int\n", 4) == 0) {
            s->key_mode = BR_KEYS_INT;
            return 0;
        }
        if (err && errlen)
            snprintf(err, errlen, "%s: not a key mode this version knows", path);
        return BR_EFORMAT;
    }
    if (errno != ENOENT)
        return -errno;
    s->key_mode = BR_KEYS_BYTES;
    if (!want_int)
        return 0;
    br_engine_stats st;
    br_engine_stats_get(s->engine, &st);
    if (st.keys || st.last_seq) {
        if (want_int == 2)
            return 0; /* keep the byte keys already there */
        if (err && errlen)
            snprintf(err, errlen,
                     "%s holds byte keys; integer-key mode is chosen when a directory is "
                     "created",
                     dir);
        return BR_EINVAL;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    errno = 0;
    int rc = write(fd, "int\n", 4) == 4 && fsync(fd) == 0 ? 0 : (errno ? -errno : -EIO);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rc = -errno;
        if (dfd >= 0)
            close(dfd);
    }
    if (rc) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, br_strerror(rc));
        return rc;
    }
    s->key_mode = BR_KEYS_INT;
    return 0;
}

br_key_mode br_service_key_mode(const br_service *s) {
    return s->key_mode;
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
    br_service *s = calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    int rc = br_engine_open(dir, eo, &s->engine, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->drained, NULL);
    rc = key_mode_load(s, dir, so->int_keys, err, errlen);
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
    *out = s;
    return 0;
fail:
    br_service_close(s);
    return rc;
}

int br_service_reads_inline(const br_service *s) {
    (void)s;
    return 1;
}

int br_service_writes_inline(const br_service *s) {
    return s->inline_writes;
}

/* Queues j (or runs it here when writes are inline), or returns BR_ECLOSED
 * (j is freed) when closing. */
static int submit(br_service *s, job *j) {
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

int br_service_put(br_service *s, const void *key, size_t klen, const void *val, size_t vlen,
                   br_service_done_fn cb, void *ctx) {
    job *j = job_new(JOB_PUT, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->key = key;
    j->klen = klen;
    j->val = val;
    j->vlen = vlen;
    return submit(s, j);
}

int br_service_delete(br_service *s, const void *key, size_t klen, br_service_done_fn cb,
                      void *ctx) {
    job *j = job_new(JOB_DELETE, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->key = key;
    j->klen = klen;
    return submit(s, j);
}

int br_service_write(br_service *s, const br_batch *b, br_service_done_fn cb, void *ctx) {
    job *j = job_new(JOB_WRITE, cb, ctx);
    if (!j)
        return BR_ENOMEM;
    j->batch = b;
    return submit(s, j);
}

int br_service_get(br_service *s, const void *key, size_t klen, br_service_get_fn cb, void *ctx) {
    void *val = NULL;
    size_t vlen = 0;
    int rc = br_engine_get(s->engine, key, klen, &val, &vlen);
    cb(ctx, rc, rc ? NULL : val, rc ? 0 : vlen);
    return 0;
}

int br_service_range(br_service *s, const void *start, size_t slen, const void *end, size_t elen,
                     size_t limit, br_service_range_fn cb, void *ctx) {
    br_iter *it = NULL;
    int rc = br_engine_iter(s->engine, start, slen, end, elen, limit, &it);
    cb(ctx, rc, rc ? NULL : it);
    return 0;
}

void br_service_stats_get(br_service *s, br_service_stats *st) {
    memset(st, 0, sizeof *st);
    st->mode = "standalone";
    st->key_mode = s->key_mode;
    br_engine_stats_get(s->engine, &st->engine);
    pthread_mutex_lock(&s->mu);
    st->writes_queued = s->queued;
    st->writes_inflight = s->inflight;
    pthread_mutex_unlock(&s->mu);
}

int br_service_compact(br_service *s, uint32_t min_dead_pct) {
    return br_engine_compact_start(s->engine, min_dead_pct);
}

int br_service_close(br_service *s) {
    if (!s)
        return 0;
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
