/*
 * bench.c - bitraft-bench: figures for bitraft's engine, never pass/fail.
 *
 * Usage: bitraft-bench engine [--n N] [--dir D] [--seed S] [--phases a,b,c]
 *                             [--file-size BYTES]
 *        bitraft-bench engine --large SIZE [--dir D]   (see run_large)
 *
 * Runs the workload of workload.h, phase for phase as refbench.c runs it on
 * LMDB, LevelDB and RocksDB, and prints one JSON line per phase:
 *   fillrandom   N single puts in perm order, sync=never
 *   fillbatch    fresh store, N puts in perm order, 1000 per batch, sync=never
 *   readrandom   1,000,000 gets of key number wl_rand(seed + 1) % N, values
 *                checked
 *   scan100      100,000 ranges of 100 keys from number wl_rand(seed + 2) %
 *                (N - 99); ops = ranges
 *   fullscan     the whole store in order; ops = entries
 *   reopen       close, open, one get; seconds = close + open + get
 *   scan100cold  500 ranges of 100 keys after the data files are dropped from
 *                the page cache, once with range readers off
 *                (scan100cold_serial), once with 16 (scan100cold_parallel).
 *                Opening reads the active file back (recovery scans it), so
 *                only the closed files are cold: at the default N, 2 of 3.
 *   rawsync      the floor for synced writes: 10,000 appends of one 116-byte
 *                record to a preallocated file, each followed by fdatasync
 *   syncwrite    10,000 puts of numbers N .. N+9999, sync=always, one thread
 *   syncwrite16  10,000 puts of numbers N+10000 .., sync=always, 16 threads
 *   compact      half of the keys overwritten (same values, in batches), then
 *                readrandom alone (500,000 gets), then a full compaction
 *                (br_engine_compact(e, 0), paced at --compact-rate, default
 *                the engine's) with a readrandom loop beside it, then
 *                readrandom alone again: readrandom_alone and
 *                readrandom_during_compact lines, and one compact line with
 *                the seconds, the disk before and after, the live data and
 *                during/alone (the alone figure is the mean of before and
 *                after)
 * then one line with rss_bytes, peak_rss_bytes, index_bytes and
 * index_bytes_per_key (beyond the key itself, as of the last phase before
 * rawsync: after reopen when it ran), index_bytes_per_key_after_fill (as
 * random inserts left the index), disk_bytes (blocks allocated, the
 * preallocated active file included) and data_bytes (bytes of records).
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "workload.h"

#define READ_OPS     1000000ULL
#define SCAN_RANGES  100000ULL
#define SCAN_LEN     100
#define SYNC_OPS     10000ULL
#define SYNC_THREADS 16
#define BATCH        1000

static const char *const phase_names[] = {"fillrandom", "fillbatch",   "readrandom",  "scan100",
                                          "fullscan",   "reopen",      "scan100cold", "rawsync",
                                          "syncwrite",  "syncwrite16", "compact"};
enum {
    PH_FILLRANDOM,
    PH_FILLBATCH,
    PH_READRANDOM,
    PH_SCAN,
    PH_FULLSCAN,
    PH_REOPEN,
    PH_SCANCOLD,
    PH_RAWSYNC,
    PH_SYNCWRITE,
    PH_SYNCWRITE16,
    PH_COMPACT,
    PH_COUNT
};

typedef struct bench {
    uint64_t n, seed;
    uint64_t *perm;
    char dir[4096];
    br_engine_options o;
    br_engine *e;
} bench;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bitraft-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_rf(const char *p) {
    nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t disk_sum;
static int disk_add(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)p, (void)ftw;
    if (flag == FTW_F)
        disk_sum += (uint64_t)st->st_blocks * 512u;
    return 0;
}

/* Bytes allocated on disk under dir (blocks, so preallocation counts). */
static uint64_t disk_bytes(const char *dir) {
    disk_sum = 0;
    nftw(dir, disk_add, 16, FTW_PHYS);
    return disk_sum;
}

static void open_store(bench *b, br_sync_policy sync) {
    char err[512] = "";
    b->o.sync = sync;
    int rc = br_engine_open(b->dir, &b->o, &b->e, err, sizeof err);
    if (rc)
        die("open %s: %s (%s)", b->dir, br_strerror(rc), err);
}

static void close_store(bench *b) {
    int rc = br_engine_close(b->e);
    b->e = NULL;
    if (rc)
        die("close: %s", br_strerror(rc));
}

static void put_num(br_engine *e, uint64_t num) {
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    wl_key(num, k);
    wl_value(num, v);
    int rc = br_engine_put(e, k, sizeof k, v, sizeof v);
    if (rc)
        die("put: %s", br_strerror(rc));
}

static void check_num(br_engine *e, uint64_t num) {
    char k[WL_KEY_LEN], v[WL_VALUE_LEN], got[WL_VALUE_LEN];
    size_t vl;
    wl_key(num, k);
    wl_value(num, v);
    int rc = br_engine_get_into(e, k, sizeof k, got, sizeof got, &vl);
    if (rc || vl != sizeof v || memcmp(got, v, sizeof v) != 0)
        die("get %.16s: %s", k, rc ? br_strerror(rc) : "wrong value");
}

static void fresh(bench *b) {
    rm_rf(b->dir);
}

static double fill_random(bench *b) {
    fresh(b);
    open_store(b, BR_SYNC_NEVER);
    double t = wl_now();
    for (uint64_t i = 0; i < b->n; i++)
        put_num(b->e, b->perm[i]);
    return wl_now() - t;
}

static double fill_batch(bench *b) {
    if (b->e)
        close_store(b);
    fresh(b);
    open_store(b, BR_SYNC_NEVER);
    br_batch *bt = br_batch_new();
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    double t = wl_now();
    for (uint64_t i = 0; i < b->n; i += BATCH) {
        br_batch_clear(bt);
        for (uint64_t j = i; j < i + BATCH && j < b->n; j++) {
            wl_key(b->perm[j], k);
            wl_value(b->perm[j], v);
            br_batch_put(bt, k, sizeof k, v, sizeof v);
        }
        int rc = br_engine_write(b->e, bt);
        if (rc)
            die("batch: %s", br_strerror(rc));
    }
    double d = wl_now() - t;
    br_batch_free(bt);
    return d;
}

static double read_random(bench *b) {
    uint64_t st = b->seed + 1;
    double t = wl_now();
    for (uint64_t i = 0; i < READ_OPS; i++)
        check_num(b->e, wl_rand(&st) % b->n);
    return wl_now() - t;
}

/* ---- compact ---------------------------------------------------------------- */

typedef struct compact_run {
    br_engine *e;
    int rc;
    double seconds;
    volatile int done;
} compact_run;

static void *compact_thread(void *p) {
    compact_run *c = p;
    double t = wl_now();
    c->rc = br_engine_compact(c->e, 0);
    c->seconds = wl_now() - t;
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Gets of random keys until *stop (or ops gets when stop is NULL);
 * returns gets per second. */
static double read_loop(bench *b, uint64_t seed, uint64_t ops, volatile int *stop) {
    uint64_t st = seed, n = 0;
    double t = wl_now();
    while (stop ? !__atomic_load_n(stop, __ATOMIC_ACQUIRE) : n < ops) {
        for (int i = 0; i < 1000; i++)
            check_num(b->e, wl_rand(&st) % b->n);
        n += 1000;
    }
    return (double)n / (wl_now() - t);
}

static void run_compact(bench *b) {
    /* Half of the data dead: every other key of the permutation rewritten
     * with its own value. */
    br_batch *bt = br_batch_new();
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    for (uint64_t i = 0; i < b->n; i += 2 * BATCH) {
        br_batch_clear(bt);
        for (uint64_t j = i; j < i + 2 * BATCH && j < b->n; j += 2) {
            wl_key(b->perm[j], k);
            wl_value(b->perm[j], v);
            br_batch_put(bt, k, sizeof k, v, sizeof v);
        }
        int rc = br_engine_write(b->e, bt);
        if (rc)
            die("batch: %s", br_strerror(rc));
    }
    br_batch_free(bt);
    br_engine_stats before, after;
    br_engine_stats_get(b->e, &before);
    double alone1 = read_loop(b, b->seed + 5, READ_OPS / 2, NULL);
    compact_run c = {.e = b->e};
    pthread_t th;
    if (pthread_create(&th, NULL, compact_thread, &c) != 0)
        die("pthread_create");
    double during = read_loop(b, b->seed + 6, 0, &c.done);
    pthread_join(th, NULL);
    if (c.rc)
        die("compact: %s", br_strerror(c.rc));
    double alone2 = read_loop(b, b->seed + 7, READ_OPS / 2, NULL);
    br_engine_stats_get(b->e, &after);
    double alone = (alone1 + alone2) / 2;
    printf("{\"engine\":\"bitraft\",\"phase\":\"readrandom_alone\",\"ops_per_sec\":%.0f,"
           "\"before\":%.0f,\"after\":%.0f}\n",
           alone, alone1, alone2);
    printf("{\"engine\":\"bitraft\",\"phase\":\"readrandom_during_compact\",\"ops_per_sec\":%.0f}"
           "\n",
           during);
    printf("{\"engine\":\"bitraft\",\"phase\":\"compact\",\"seconds\":%.2f,\"rate_mb\":%.0f,"
           "\"files_in\":%llu,\"mb_read\":%.1f,\"mb_written\":%.1f,"
           "\"disk_before_mb\":%.1f,\"disk_after_mb\":%.1f,\"live_mb\":%.1f,"
           "\"disk_over_live\":%.3f,\"read_during_over_alone\":%.3f}\n",
           c.seconds, (double)b->o.compact_rate / 1e6,
           (unsigned long long)(after.compact_files_in - before.compact_files_in),
           (double)(after.compact_bytes_read - before.compact_bytes_read) / 1e6,
           (double)(after.compact_bytes_written - before.compact_bytes_written) / 1e6,
           (double)before.disk_bytes / 1e6, (double)after.disk_bytes / 1e6,
           (double)after.live_bytes / 1e6, (double)after.disk_bytes / (double)after.live_bytes,
           during / alone);
    fflush(stdout);
}

/* `ranges` ranges of SCAN_LEN keys from random starts drawn with seed. */
static double scan_ranges(bench *b, uint64_t seed, uint64_t ranges, uint64_t *sum) {
    uint64_t st = seed;
    double t = wl_now();
    for (uint64_t r = 0; r < ranges; r++) {
        char k[WL_KEY_LEN];
        wl_key(wl_rand(&st) % (b->n - SCAN_LEN + 1), k);
        br_iter *it;
        if (br_engine_iter(b->e, k, sizeof k, NULL, 0, SCAN_LEN, &it))
            die("iter");
        const void *kp, *vp;
        size_t kl, vl;
        int got = 0, rc;
        while ((rc = br_iter_next(it, &kp, &kl, &vp, &vl)) == 1) {
            *sum += ((const uint8_t *)kp)[kl - 1] + ((const uint8_t *)vp)[vl - 1];
            got++;
        }
        if (rc < 0 || got != SCAN_LEN)
            die("scan: %d entries, %s", got, br_strerror(rc));
        br_iter_free(it);
    }
    return wl_now() - t;
}

static double full_scan(bench *b, uint64_t *entries) {
    br_iter *it;
    double t = wl_now();
    if (br_engine_iter(b->e, NULL, 0, NULL, 0, 0, &it))
        die("iter");
    const void *kp, *vp;
    size_t kl, vl;
    uint64_t n = 0, sum = 0;
    int rc;
    while ((rc = br_iter_next(it, &kp, &kl, &vp, &vl)) == 1) {
        sum += ((const uint8_t *)vp)[0];
        n++;
    }
    br_iter_free(it);
    double d = wl_now() - t;
    if (rc < 0 || n != b->n)
        die("fullscan: %llu entries (sum %llu)", (unsigned long long)n, (unsigned long long)sum);
    *entries = n;
    return d;
}

/* Drops the store's data files from the page cache (the store closed). */
static void evict(bench *b) {
    sync();
    DIR *d = opendir(b->dir);
    if (!d)
        die("opendir %s: %s", b->dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".data") != 0)
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY);
        if (fd < 0)
            continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    closedir(d);
}

/* scan100 on a cold page cache, with `readers` range reader threads. */
static double scan_cold(bench *b, unsigned readers, uint64_t ranges) {
    close_store(b);
    evict(b);
    b->o.range_readers = readers;
    open_store(b, BR_SYNC_NEVER);
    uint64_t sum = 0;
    double d = scan_ranges(b, b->seed + 4, ranges, &sum);
    b->o.range_readers = 16;
    return d;
}

static double reopen(bench *b) {
    uint64_t st = b->seed + 3;
    double t = wl_now();
    close_store(b);
    double t_open = wl_now();
    open_store(b, BR_SYNC_NEVER);
    check_num(b->e, wl_rand(&st) % b->n);
    double end = wl_now();
    fprintf(stderr, "reopen: close %.4f s, open + get %.4f s\n", t_open - t, end - t_open);
    return end - t;
}

static double raw_sync(bench *b) {
    char path[4200];
    snprintf(path, sizeof path, "%s.rawsync", b->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || fallocate(fd, 0, 0, 64 << 20) != 0)
        die("rawsync: %s", strerror(errno));
    char rec[116];
    memset(rec, 'r', sizeof rec);
    double t = wl_now();
    for (uint64_t i = 0; i < SYNC_OPS; i++) {
        if (pwrite(fd, rec, sizeof rec, (off_t)(i * sizeof rec)) != (ssize_t)sizeof rec ||
            fdatasync(fd) != 0)
            die("rawsync: %s", strerror(errno));
    }
    double d = wl_now() - t;
    close(fd);
    unlink(path);
    return d;
}

static double sync_write(bench *b) {
    close_store(b);
    open_store(b, BR_SYNC_ALWAYS);
    double t = wl_now();
    for (uint64_t i = 0; i < SYNC_OPS; i++)
        put_num(b->e, b->n + i);
    return wl_now() - t;
}

typedef struct sync_arg {
    bench *b;
    int t;
} sync_arg;

static void *sync_worker(void *p) {
    sync_arg *a = p;
    for (uint64_t i = (uint64_t)a->t; i < SYNC_OPS; i += SYNC_THREADS)
        put_num(a->b->e, a->b->n + SYNC_OPS + i);
    return NULL;
}

static double sync_write16(bench *b) {
    if (b->o.sync != BR_SYNC_ALWAYS) {
        close_store(b);
        open_store(b, BR_SYNC_ALWAYS);
    }
    pthread_t th[SYNC_THREADS];
    sync_arg args[SYNC_THREADS];
    br_engine_stats s0, s1;
    br_engine_stats_get(b->e, &s0);
    double t = wl_now();
    for (int i = 0; i < SYNC_THREADS; i++) {
        args[i] = (sync_arg){b, i};
        pthread_create(&th[i], NULL, sync_worker, &args[i]);
    }
    for (int i = 0; i < SYNC_THREADS; i++)
        pthread_join(th[i], NULL);
    double d = wl_now() - t;
    br_engine_stats_get(b->e, &s1);
    fprintf(stderr, "syncwrite16: %llu fdatasyncs for %llu puts\n",
            (unsigned long long)(s1.syncs - s0.syncs), (unsigned long long)SYNC_OPS);
    return d;
}

/* Parses a size with an optional K, M, G or T suffix (powers of 1024). */
static uint64_t parse_size(const char *v) {
    char *end;
    double x = strtod(v, &end);
    uint64_t m = 1;
    switch (*end) {
    case 'k':
    case 'K':
        m = 1ull << 10;
        break;
    case 'm':
    case 'M':
        m = 1ull << 20;
        break;
    case 'g':
    case 'G':
        m = 1ull << 30;
        break;
    case 't':
    case 'T':
        m = 1ull << 40;
        break;
    case '\0':
        break;
    default:
        die("bad size %s", v);
    }
    if (x <= 0)
        die("bad size %s", v);
    return (uint64_t)(x * (double)m);
}

/*
 * --large SIZE: a store far larger than the index, as the original was tried
 * with (52 GB). Writes SIZE bytes of ~1 KiB values under random 16-digit
 * keys in batches of 100 (sync=never, then one sync), then reports write
 * MB/s, RSS, index bytes per key, disk use and the time to reopen (hint
 * files by then cover every closed file), then reads back 10,000 random
 * keys cold (the data files' pages dropped from the cache first).
 */
#define LARGE_VALUE 1000
static int run_large(bench *b, uint64_t size) {
    uint64_t n = size / (LARGE_VALUE + WL_KEY_LEN + 24);
    uint64_t *perm = wl_perm(n, b->seed);
    char *val = malloc(LARGE_VALUE);
    fresh(b);
    open_store(b, BR_SYNC_NEVER);
    br_batch *bt = br_batch_new();
    char k[WL_KEY_LEN];
    double t = wl_now();
    for (uint64_t i = 0; i < n; i += 100) {
        br_batch_clear(bt);
        for (uint64_t j = i; j < i + 100 && j < n; j++) {
            wl_key(perm[j], k);
            for (int c = 0; c < LARGE_VALUE; c += WL_VALUE_LEN)
                wl_value(perm[j] + (uint64_t)c, val + c);
            br_batch_put(bt, k, sizeof k, val, LARGE_VALUE);
        }
        if (br_engine_write(b->e, bt))
            die("batch write failed");
    }
    if (br_engine_sync(b->e))
        die("sync failed");
    double wsec = wl_now() - t;
    br_engine_stats st;
    br_engine_stats_get(b->e, &st);
    uint64_t rss = wl_rss();
    double mb = (double)st.disk_bytes / 1e6;
    printf("{\"engine\":\"bitraft\",\"phase\":\"large_write\",\"keys\":%llu,\"mb\":%.0f,"
           "\"seconds\":%.2f,\"mb_per_s\":%.1f,\"rss_bytes\":%llu,\"rss_anon_bytes\":%llu,"
           "\"index_bytes_per_key\":%.1f,\"data_files\":%llu}\n",
           (unsigned long long)n, mb, wsec, mb / wsec, (unsigned long long)rss,
           (unsigned long long)wl_rss_anon(),
           ((double)st.index_bytes - (double)st.key_bytes) / (double)st.keys,
           (unsigned long long)st.data_files);
    fflush(stdout);
    t = wl_now();
    close_store(b);
    open_store(b, BR_SYNC_NEVER);
    char got1[LARGE_VALUE];
    size_t vl1;
    wl_key(perm[n / 2], k);
    if (br_engine_get_into(b->e, k, sizeof k, got1, sizeof got1, &vl1))
        die("large: get after reopen failed");
    double r = wl_now() - t;
    br_engine_stats_get(b->e, &st);
    printf("{\"engine\":\"bitraft\",\"phase\":\"large_reopen\",\"seconds\":%.2f,"
           "\"rss_bytes\":%llu,\"rss_anon_bytes\":%llu,\"index_bytes_per_key\":%.1f,"
           "\"disk_bytes\":%llu}\n",
           r, (unsigned long long)wl_rss(), (unsigned long long)wl_rss_anon(),
           ((double)st.index_bytes - (double)st.key_bytes) / (double)st.keys,
           (unsigned long long)disk_bytes(b->dir));
    fflush(stdout);
    /* Cold reads: drop the data files from the page cache first. */
    sync();
    for (uint64_t id = 1; id <= st.data_files + 1; id++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%010llu.data", b->dir, (unsigned long long)id);
        int fd = open(p, O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    uint64_t rs = b->seed + 9;
    char got[LARGE_VALUE];
    size_t vl;
    t = wl_now();
    for (int i = 0; i < 10000; i++) {
        wl_key(perm[wl_rand(&rs) % n], k);
        if (br_engine_get_into(b->e, k, sizeof k, got, sizeof got, &vl) || vl != LARGE_VALUE)
            die("large: get failed");
    }
    wl_report("bitraft", "large_readrandom_cold", 10000, wl_now() - t);
    br_batch_free(bt);
    free(val);
    free(perm);
    close_store(b);
    return 0;
}

static unsigned parse_phases(const char *list) {
    unsigned mask = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int p = 0; p < PH_COUNT; p++)
            if (strcmp(tok, phase_names[p]) == 0) {
                mask |= 1u << p;
                found = 1;
            }
        if (!found)
            die("unknown phase %s", tok);
    }
    free(copy);
    return mask;
}

static int run_engine(int argc, char **argv) {
    bench b = {.n = 2000000, .seed = 42};
    br_engine_options_init(&b.o);
    b.o.compact_dead_pct = 0; /* the compact phase starts its compaction itself */
    unsigned phases = (1u << PH_COUNT) - 1;
    const char *dir = NULL;
    uint64_t large = 0;
    int keep = 0; /* --keep 1: leave the store in --dir for a later look */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("%s needs a value", a);
        if (strcmp(a, "--n") == 0)
            b.n = strtoull(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0)
            b.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--phases") == 0)
            phases = parse_phases(v);
        else if (strcmp(a, "--file-size") == 0)
            b.o.max_file_size = strtoull(v, NULL, 10);
        else if (strcmp(a, "--keep") == 0)
            keep = strcmp(v, "0") != 0;
        else if (strcmp(a, "--compact-rate") == 0)
            b.o.compact_rate = parse_size(v);
        else if (strcmp(a, "--large") == 0)
            large = parse_size(v);
        else
            die("unknown option %s", a);
        i++;
    }
    if (b.n < SCAN_LEN)
        die("--n must be at least %d", SCAN_LEN);
    char tmpl[] = "/tmp/bitraft-bench.XXXXXX";
    const char *parent = dir;
    if (!parent) {
        if (!mkdtemp(tmpl))
            die("mkdtemp: %s", strerror(errno));
        parent = tmpl;
    }
    mkdir(parent, 0755);
    snprintf(b.dir, sizeof b.dir, "%s/bitraft", parent);
    if (large) {
        run_large(&b, large);
        rm_rf(parent == tmpl ? tmpl : b.dir);
        return 0;
    }
    b.perm = wl_perm(b.n, b.seed);

    if (phases & (1u << PH_FILLRANDOM))
        wl_report("bitraft", "fillrandom", b.n, fill_random(&b));
    if (phases & (1u << PH_FILLBATCH))
        wl_report("bitraft", "fillbatch", b.n, fill_batch(&b));
    if (!b.e) { /* the read phases need a store */
        if (phases & ((1u << PH_READRANDOM) | (1u << PH_SCAN) | (1u << PH_FULLSCAN) |
                      (1u << PH_REOPEN) | (1u << PH_COMPACT)))
            fill_batch(&b);
        else
            open_store(&b, BR_SYNC_NEVER);
    }
    /* The index as random inserts left it (a reopen rebuilds it in key
     * order, with full nodes). */
    br_engine_stats fill_st;
    br_engine_stats_get(b.e, &fill_st);
    if (phases & (1u << PH_READRANDOM))
        wl_report("bitraft", "readrandom", READ_OPS, read_random(&b));
    uint64_t sum = 0;
    if (phases & (1u << PH_SCAN))
        wl_report("bitraft", "scan100", SCAN_RANGES,
                  scan_ranges(&b, b.seed + 2, SCAN_RANGES, &sum));
    if (phases & (1u << PH_FULLSCAN)) {
        uint64_t entries = 0;
        double d = full_scan(&b, &entries);
        wl_report("bitraft", "fullscan", entries, d);
    }
    if (phases & (1u << PH_REOPEN))
        wl_report("bitraft", "reopen", 1, reopen(&b));
    if (phases & (1u << PH_COMPACT))
        run_compact(&b);
    if (phases & (1u << PH_SCANCOLD)) {
        /* Cold ranges wait for the disk: fewer of them. */
        uint64_t ranges = SCAN_RANGES / 200;
        wl_report("bitraft", "scan100cold_serial", ranges, scan_cold(&b, 0, ranges));
        wl_report("bitraft", "scan100cold_parallel", ranges, scan_cold(&b, 16, ranges));
    }
    br_engine_stats st;
    br_engine_stats_get(b.e, &st);
    uint64_t rss = wl_rss(), peak = wl_peak_rss();
    if (phases & (1u << PH_RAWSYNC))
        wl_report("bitraft", "rawsync", SYNC_OPS, raw_sync(&b));
    if (phases & (1u << PH_SYNCWRITE))
        wl_report("bitraft", "syncwrite", SYNC_OPS, sync_write(&b));
    if (phases & (1u << PH_SYNCWRITE16))
        wl_report("bitraft", "syncwrite16", SYNC_OPS, sync_write16(&b));
    close_store(&b);
    double per_key =
        st.keys ? ((double)st.index_bytes - (double)st.key_bytes) / (double)st.keys : 0.0;
    double fill_per_key = fill_st.keys ? ((double)fill_st.index_bytes - (double)fill_st.key_bytes) /
                                             (double)fill_st.keys
                                       : 0.0;
    printf("{\"engine\":\"bitraft\",\"keys\":%llu,\"rss_bytes\":%llu,\"peak_rss_bytes\":%llu,"
           "\"index_bytes\":%llu,\"index_bytes_per_key\":%.1f,"
           "\"index_bytes_per_key_after_fill\":%.1f,\"disk_bytes\":%llu,\"data_bytes\":%llu}\n",
           (unsigned long long)st.keys, (unsigned long long)rss, (unsigned long long)peak,
           (unsigned long long)st.index_bytes, per_key, fill_per_key,
           (unsigned long long)disk_bytes(b.dir), (unsigned long long)st.disk_bytes);
    fprintf(stderr, "scan checksum %llu\n", (unsigned long long)sum);
    if (!keep)
        rm_rf(parent == tmpl ? tmpl : b.dir);
    free(b.perm);
    return 0;
}

/* raft_bench.c: a 3-node in-memory cluster committing 100-byte entries. */
int raft_bench_main(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "engine") == 0)
        return run_engine(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "raft") == 0)
        return raft_bench_main(argc - 2, argv + 2);
    fprintf(stderr, "usage: bitraft-bench engine [--n N] [--dir D] [--seed S] [--phases a,b,c] "
                    "[--file-size BYTES]\n"
                    "       bitraft-bench engine --large SIZE[K|M|G|T] [--dir D]\n"
                    "       bitraft-bench raft [ENTRIES [BATCH]]\n");
    return 2;
}
