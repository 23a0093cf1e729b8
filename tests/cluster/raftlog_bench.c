/*
 * raftlog_bench.c - br_raftlog throughput: entries/s and fdatasyncs/s.
 *
 *   raftlog_bench [dir] [seconds-per-case] [entry-bytes]
 *
 * Cases:
 *   serial B    the owner appends B entries and a hard state (one Ready),
 *               then syncs, and again: one fdatasync per Ready;
 *   worker B    the owner appends Readys of B entries without waiting;
 *               a worker thread syncs in a loop (group commit): every
 *               sync covers all the Readys written while the previous
 *               one ran.
 * Prints figures, never pass/fail. The directory (default: under
 * $BR_TEST_TMP or /tmp) is removed afterwards.
 */
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bitraft/error.h"
#include "raftlog.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "raftlog_bench: %s: %s\n", what, br_strerror(rc));
    exit(1);
}

struct worker {
    br_raftlog *log;
    atomic_bool stop;
    uint64_t syncs;
};

static void *sync_loop(void *arg) {
    struct worker *w = arg;
    while (!atomic_load(&w->stop)) {
        int rc = br_raftlog_sync(w->log, NULL);
        if (rc)
            die("sync", rc);
        w->syncs++;
    }
    return NULL;
}

static void run(const char *dir, const char *mode, size_t batch, double secs, uint32_t bytes) {
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    br_raftlog *log;
    char err[256];
    int rc = br_raftlog_open(dir, NULL, &log, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        die("open", rc);
    }
    uint8_t *data = malloc(bytes ? bytes : 1);
    memset(data, 0xab, bytes);
    struct br_raft_entry *e = calloc(batch, sizeof(*e));
    bool worker = strcmp(mode, "worker") == 0;
    struct worker w = {.log = log};
    pthread_t th;
    if (worker && pthread_create(&th, NULL, sync_loop, &w) != 0)
        die("pthread_create", BR_ENOMEM);
    uint64_t next = 1, syncs = 0;
    double t0 = now(), t;
    struct br_raft_hard_state hs = {.term = 1, .vote = 1};
    do {
        for (size_t k = 0; k < batch; k++)
            e[k] = (struct br_raft_entry){
                .term = 1, .index = next + k, .len = bytes, .data = bytes ? data : NULL};
        if ((rc = br_raftlog_append(log, e, batch)) != 0)
            die("append", rc);
        next += batch;
        hs.commit = next - 1;
        if ((rc = br_raftlog_set_hard_state(log, &hs)) != 0)
            die("set_hard_state", rc);
        if (!worker) {
            if ((rc = br_raftlog_sync(log, NULL)) != 0)
                die("sync", rc);
            syncs++;
        }
        t = now() - t0;
    } while (t < secs);
    if (worker) {
        atomic_store(&w.stop, true);
        pthread_join(th, NULL);
        syncs = w.syncs;
    }
    uint64_t n = next - 1;
    printf("%-6s batch %4zu x %u B: %10.0f entries/s  %8.0f fdatasyncs/s  %7.1f MB/s  "
           "(%llu entries, %.1f per sync)\n",
           mode, batch, bytes, (double)n / t, (double)syncs / t, (double)n * (bytes + 40) / t / 1e6,
           (unsigned long long)n, syncs ? (double)n / (double)syncs : 0.0);
    fflush(stdout);
    br_raftlog_close(log);
    free(e);
    free(data);
}

int main(int argc, char **argv) {
    char def[512];
    const char *dir = argc > 1 && argv[1][0] ? argv[1] : NULL;
    if (!dir) {
        const char *base = getenv("BR_TEST_TMP");
        if (!base || !*base)
            base = "/tmp";
        mkdir(base, 0755);
        snprintf(def, sizeof def, "%s/raftlog-bench.%d", base, (int)getpid());
        dir = def;
    }
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    uint32_t bytes = argc > 3 ? (uint32_t)atoi(argv[3]) : 130;
    printf("raftlog_bench: %s, %.1f s per case, %u-byte entries, 64 MiB segments\n", dir, secs,
           bytes);
    static const size_t batches[] = {1, 8, 64, 256};
    for (size_t i = 0; i < sizeof batches / sizeof *batches; i++)
        run(dir, "serial", batches[i], secs, bytes);
    for (size_t i = 0; i < sizeof batches / sizeof *batches; i++)
        run(dir, "worker", batches[i], secs, bytes);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
