/* readahead.c - a pool of threads faulting in the records of cold ranges
 * (see readahead.h). */
#include "engine/readahead.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define RA_QUEUE 4096 /* queued reads at most; more are left to the iterator */

typedef struct ra_job {
    br_datafile *f;
    uint64_t off;
    size_t len;
} ra_job;

struct br_readahead {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ra_job q[RA_QUEUE];
    size_t head, n;
    bool stop;
    unsigned nthreads;
    pthread_t th[];
};

static void *reader(void *arg) {
    br_readahead *ra = arg;
    pthread_mutex_lock(&ra->mu);
    for (;;) {
        while (!ra->n && !ra->stop)
            pthread_cond_wait(&ra->cv, &ra->mu);
        if (!ra->n)
            break;
        ra_job j = ra->q[ra->head];
        ra->head = (ra->head + 1) % RA_QUEUE;
        ra->n--;
        pthread_mutex_unlock(&ra->mu);
        /* Touch one byte per page: the fault reads the page in. */
        const volatile uint8_t *p = j.f->map + j.off;
        uint8_t sink = 0;
        for (size_t o = 0; o < j.len; o += 4096)
            sink ^= p[o];
        if (j.len)
            sink ^= p[j.len - 1];
        (void)sink;
        atomic_fetch_sub_explicit(&j.f->refs, 1, memory_order_release);
        pthread_mutex_lock(&ra->mu);
    }
    pthread_mutex_unlock(&ra->mu);
    return NULL;
}

br_readahead *br_ra_new(unsigned threads) {
    if (threads == 0)
        return NULL;
    br_readahead *ra = calloc(1, sizeof *ra + threads * sizeof(pthread_t));
    if (!ra)
        return NULL;
    pthread_mutex_init(&ra->mu, NULL);
    pthread_cond_init(&ra->cv, NULL);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&ra->th[i], NULL, reader, ra) != 0)
            break;
        ra->nthreads++;
    }
    if (ra->nthreads == 0) {
        br_ra_free(ra);
        return NULL;
    }
    return ra;
}

void br_ra_free(br_readahead *ra) {
    if (!ra)
        return;
    pthread_mutex_lock(&ra->mu);
    ra->stop = true;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    for (unsigned i = 0; i < ra->nthreads; i++)
        pthread_join(ra->th[i], NULL);
    pthread_mutex_destroy(&ra->mu);
    pthread_cond_destroy(&ra->cv);
    free(ra);
}

int br_ra_queue(br_readahead *ra, br_datafile *f, uint64_t offset, size_t len) {
    pthread_mutex_lock(&ra->mu);
    if (ra->n == RA_QUEUE || ra->stop) {
        pthread_mutex_unlock(&ra->mu);
        return -1;
    }
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_acquire);
    ra->q[(ra->head + ra->n) % RA_QUEUE] = (ra_job){f, offset, len};
    ra->n++;
    pthread_cond_signal(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    return 0;
}

int br_ra_resident(const br_datafile *f, uint64_t offset) {
    long pagesz = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(f->map + offset) & ~(uintptr_t)(pagesz - 1);
    unsigned char vec = 0;
    if (mincore((void *)a, (size_t)pagesz, &vec) != 0)
        return 1; /* cannot tell: do not bother the pool */
    return vec & 1;
}
