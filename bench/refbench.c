/*
 * refbench.c - runs the engine workload of bench/workload.h against the
 * reference engines LMDB, LevelDB and RocksDB through their C APIs, so that
 * bitraft-bench's figures can be compared with theirs side by side.
 *
 * Usage: bitraft-refbench ENGINE [--n N] [--dir D] [--seed S] [--phases a,b,c]
 *   ENGINE  lmdb | leveldb | rocksdb (one engine per process, so that the
 *           peak RSS reported is that engine's alone)
 *   --n     number of records (default 2000000)
 *   --dir   parent directory; the store is D/ENGINE, created fresh and removed
 *           at the end (D itself is left). Default: a fresh mkdtemp under
 *           /tmp, removed at the end with everything under it.
 *   --seed  workload seed (default 42)
 *   --phases comma-separated subset of the phases below (default: all). They
 *           always run in the order below, whatever the order given.
 *
 * Phases (one JSON line each, from wl_report):
 *   fillrandom   N single puts in perm order, no fsync
 *   fillbatch    fresh store, N puts in perm order, 1000 per batch, no fsync
 *   readrandom   1,000,000 gets of key number wl_rand(seed + 1) % N, each
 *                value checked against wl_value
 *   scan100      100,000 ranges: start number wl_rand(seed + 2) % (N - 99),
 *                seek to it, read 100 entries (key and value summed into a
 *                checksum); ops = ranges
 *   fullscan     iterate the whole store once; ops = entries (checked == N)
 *   reopen       close, open, one get of number wl_rand(seed + 3) % N;
 *                seconds = close + open + get (the split is on stderr)
 *   syncwrite    10,000 puts of numbers N .. N+9999, each fsynced, 1 thread
 *   syncwrite16  10,000 fsynced puts of numbers N+10000 .. N+19999, thread t
 *                of 16 writing those with index % 16 == t
 * The read phases run on the store left by fillbatch (or by fillrandom when
 * fillbatch is not selected; when neither is, an untimed batch load is done
 * first). Then one line with rss_bytes and peak_rss_bytes (taken with the
 * store open) and disk_bytes (the blocks allocated to the files of the store's
 * directory, after the final close: allocated blocks, so a sparse map counts
 * what it holds).
 *
 * What "no fsync" / "fsync" mean per engine:
 *   LMDB     one write transaction per put (per batch in fillbatch). No
 *            fsync = the MDB_NOSYNC environment flag (which also skips the
 *            meta-page sync); fsync = the default durable commit (flag off).
 *   LevelDB  leveldb_put / leveldb_write with write options sync=false (the
 *            WAL is written, not fsynced) or sync=true.
 *   RocksDB  same as LevelDB with rocksdb_writeoptions_set_sync.
 * All other options are each engine's defaults, except that LMDB gets a
 * 64 GiB map and MDB_WRITEMAP (its fastest documented mode, and the one
 * closest to bitraft, which also writes through a shared map: without it
 * LMDB's unsynced single puts ran ~5x slower here); LevelDB and RocksDB
 * with create_if_missing
 * only (no tuning, no increase_parallelism, no manual compaction: background
 * compaction runs while later phases run, as in a real deployment).
 *
 * Reads are done the way a client would issue them one at a time: LMDB gets
 * and ranges each run in their own read transaction (a handle reused with
 * mdb_txn_reset/mdb_txn_renew); LevelDB/RocksDB gets return a malloc'd copy,
 * and every range uses a new iterator (implicit snapshot).
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <leveldb/c.h>
#include <lmdb.h>
#include <rocksdb/c.h>

#include "workload.h"

#define DEFAULT_N      2000000ULL
#define DEFAULT_SEED   42ULL
#define BATCH_SIZE     1000
#define READ_OPS       1000000ULL
#define SCAN_RANGES    100000ULL
#define SCAN_LEN       100
#define SYNC_OPS       10000ULL
#define SYNC_THREADS   16
#define LMDB_MAP_SIZE  (64ULL << 30)
#define CHECK_OK       0
#define CHECK_MISSING  1
#define CHECK_MISMATCH 2

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fputs("bitraft-refbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Sums the bytes of p (a word at a time) so that a scan really reads them. */
static uint64_t touch(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t s = n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        s += w;
    }
    for (; i < n; i++)
        s += b[i];
    return s;
}

/*
 * The engine interface the phases are written against. Handles are opaque.
 * put and the batch calls write with the durability last given to set_sync.
 * put and set_sync-free writes may be called from several threads at once;
 * get, scan and the batch calls only from the main thread.
 */
typedef struct engine_ops {
    const char *name;
    void *(*open)(const char *dir);
    void (*close)(void *h);
    void (*set_sync)(void *h, int sync);
    void (*put)(void *h, const char *k, size_t kl, const char *v, size_t vl);
    void (*batch_begin)(void *h);
    void (*batch_put)(void *h, const char *k, size_t kl, const char *v, size_t vl);
    void (*batch_commit)(void *h);
    /* Looks k up and compares its value with expect (WL_VALUE_LEN bytes). */
    int (*get_check)(void *h, const char *k, size_t kl, const char *expect);
    /* Reads up to limit entries from the first key >= start (from the first
     * key if start is NULL), adding them into *sum; returns the count. */
    uint64_t (*scan)(void *h, const char *start, size_t sl, uint64_t limit, uint64_t *sum);
} engine_ops;

/* ---------------------------------------------------------------- LMDB */

typedef struct lmdb_h {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *rtxn; /* reusable read transaction (reset between uses) */
    MDB_cursor *rcur;
    MDB_txn *btxn; /* open batch */
} lmdb_h;

static void lmdb_chk(int rc, const char *what) {
    if (rc != MDB_SUCCESS)
        die("lmdb: %s: %s", what, mdb_strerror(rc));
}

static void *lmdb_open(const char *dir) {
    lmdb_h *h = calloc(1, sizeof *h);
    MDB_txn *t;
    if (!h)
        abort();
    lmdb_chk(mdb_env_create(&h->env), "env_create");
    lmdb_chk(mdb_env_set_mapsize(h->env, LMDB_MAP_SIZE), "set_mapsize");
    lmdb_chk(mdb_env_open(h->env, dir, MDB_WRITEMAP, 0644), "env_open");
    lmdb_chk(mdb_txn_begin(h->env, NULL, MDB_RDONLY, &t), "txn_begin");
    lmdb_chk(mdb_dbi_open(t, NULL, 0, &h->dbi), "dbi_open");
    lmdb_chk(mdb_txn_commit(t), "txn_commit");
    return h;
}

static void lmdb_close(void *hp) {
    lmdb_h *h = hp;
    if (h->rcur)
        mdb_cursor_close(h->rcur);
    if (h->rtxn)
        mdb_txn_abort(h->rtxn);
    mdb_env_close(h->env);
    free(h);
}

static void lmdb_set_sync(void *hp, int sync) {
    lmdb_h *h = hp;
    lmdb_chk(mdb_env_set_flags(h->env, MDB_NOSYNC, sync ? 0 : 1), "env_set_flags");
}

static void lmdb_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    lmdb_h *h = hp;
    MDB_txn *t;
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lmdb_chk(mdb_txn_begin(h->env, NULL, 0, &t), "txn_begin");
    lmdb_chk(mdb_put(t, h->dbi, &key, &val, 0), "put");
    lmdb_chk(mdb_txn_commit(t), "txn_commit");
}

static void lmdb_batch_begin(void *hp) {
    lmdb_h *h = hp;
    lmdb_chk(mdb_txn_begin(h->env, NULL, 0, &h->btxn), "txn_begin");
}

static void lmdb_batch_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    lmdb_h *h = hp;
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lmdb_chk(mdb_put(h->btxn, h->dbi, &key, &val, 0), "put");
}

static void lmdb_batch_commit(void *hp) {
    lmdb_h *h = hp;
    lmdb_chk(mdb_txn_commit(h->btxn), "txn_commit");
    h->btxn = NULL;
}

/* Starts the read transaction: a fresh one the first time, then renewed. */
static void lmdb_read_begin(lmdb_h *h) {
    if (h->rtxn)
        lmdb_chk(mdb_txn_renew(h->rtxn), "txn_renew");
    else
        lmdb_chk(mdb_txn_begin(h->env, NULL, MDB_RDONLY, &h->rtxn), "txn_begin");
}

static int lmdb_get_check(void *hp, const char *k, size_t kl, const char *expect) {
    lmdb_h *h = hp;
    MDB_val key = {kl, (void *)k}, val;
    int rc, res;
    lmdb_read_begin(h);
    rc = mdb_get(h->rtxn, h->dbi, &key, &val);
    if (rc == MDB_NOTFOUND)
        res = CHECK_MISSING;
    else {
        lmdb_chk(rc, "get");
        res = val.mv_size == WL_VALUE_LEN && memcmp(val.mv_data, expect, WL_VALUE_LEN) == 0
                  ? CHECK_OK
                  : CHECK_MISMATCH;
    }
    mdb_txn_reset(h->rtxn);
    return res;
}

static uint64_t lmdb_scan(void *hp, const char *start, size_t sl, uint64_t limit, uint64_t *sum) {
    lmdb_h *h = hp;
    MDB_val key = {sl, (void *)start}, val;
    uint64_t n = 0;
    int rc;
    lmdb_read_begin(h);
    if (h->rcur)
        lmdb_chk(mdb_cursor_renew(h->rtxn, h->rcur), "cursor_renew");
    else
        lmdb_chk(mdb_cursor_open(h->rtxn, h->dbi, &h->rcur), "cursor_open");
    rc = mdb_cursor_get(h->rcur, &key, &val, start ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == MDB_SUCCESS && n < limit) {
        *sum += touch(key.mv_data, key.mv_size) + touch(val.mv_data, val.mv_size);
        n++;
        if (n < limit)
            rc = mdb_cursor_get(h->rcur, &key, &val, MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND)
        lmdb_chk(rc, "cursor_get");
    mdb_txn_reset(h->rtxn);
    return n;
}

static const engine_ops lmdb_ops = {
    "lmdb",           lmdb_open,      lmdb_close,        lmdb_set_sync,  lmdb_put,
    lmdb_batch_begin, lmdb_batch_put, lmdb_batch_commit, lmdb_get_check, lmdb_scan,
};

/* ------------------------------------------------------------- LevelDB */

typedef struct ldb_h {
    leveldb_t *db;
    leveldb_options_t *opt;
    leveldb_readoptions_t *ropt;
    leveldb_writeoptions_t *wopt_nosync, *wopt_sync;
    leveldb_writeoptions_t *wopt; /* one of the two above */
    leveldb_writebatch_t *batch;
} ldb_h;

static void ldb_chk(char *err, const char *what) {
    if (err)
        die("leveldb: %s: %s", what, err);
}

static void *ldb_open(const char *dir) {
    ldb_h *h = calloc(1, sizeof *h);
    char *err = NULL;
    if (!h)
        abort();
    h->opt = leveldb_options_create();
    leveldb_options_set_create_if_missing(h->opt, 1);
    h->ropt = leveldb_readoptions_create();
    h->wopt_nosync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(h->wopt_nosync, 0);
    h->wopt_sync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(h->wopt_sync, 1);
    h->wopt = h->wopt_sync;
    h->batch = leveldb_writebatch_create();
    h->db = leveldb_open(h->opt, dir, &err);
    ldb_chk(err, "open");
    return h;
}

static void ldb_close(void *hp) {
    ldb_h *h = hp;
    leveldb_close(h->db);
    leveldb_writebatch_destroy(h->batch);
    leveldb_writeoptions_destroy(h->wopt_sync);
    leveldb_writeoptions_destroy(h->wopt_nosync);
    leveldb_readoptions_destroy(h->ropt);
    leveldb_options_destroy(h->opt);
    free(h);
}

static void ldb_set_sync(void *hp, int sync) {
    ldb_h *h = hp;
    h->wopt = sync ? h->wopt_sync : h->wopt_nosync;
}

static void ldb_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    ldb_h *h = hp;
    char *err = NULL;
    leveldb_put(h->db, h->wopt, k, kl, v, vl, &err);
    ldb_chk(err, "put");
}

static void ldb_batch_begin(void *hp) {
    ldb_h *h = hp;
    leveldb_writebatch_clear(h->batch);
}

static void ldb_batch_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    ldb_h *h = hp;
    leveldb_writebatch_put(h->batch, k, kl, v, vl);
}

static void ldb_batch_commit(void *hp) {
    ldb_h *h = hp;
    char *err = NULL;
    leveldb_write(h->db, h->wopt, h->batch, &err);
    ldb_chk(err, "write");
}

static int ldb_get_check(void *hp, const char *k, size_t kl, const char *expect) {
    ldb_h *h = hp;
    char *err = NULL;
    size_t vl = 0;
    char *v = leveldb_get(h->db, h->ropt, k, kl, &vl, &err);
    int res;
    ldb_chk(err, "get");
    if (!v)
        return CHECK_MISSING;
    res = vl == WL_VALUE_LEN && memcmp(v, expect, WL_VALUE_LEN) == 0 ? CHECK_OK : CHECK_MISMATCH;
    leveldb_free(v);
    return res;
}

static uint64_t ldb_scan(void *hp, const char *start, size_t sl, uint64_t limit, uint64_t *sum) {
    ldb_h *h = hp;
    leveldb_iterator_t *it = leveldb_create_iterator(h->db, h->ropt);
    char *err = NULL;
    uint64_t n = 0;
    if (start)
        leveldb_iter_seek(it, start, sl);
    else
        leveldb_iter_seek_to_first(it);
    for (; n < limit && leveldb_iter_valid(it); n++) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl);
        const char *v = leveldb_iter_value(it, &vl);
        *sum += touch(k, kl) + touch(v, vl);
        if (n + 1 < limit)
            leveldb_iter_next(it);
    }
    leveldb_iter_get_error(it, &err);
    ldb_chk(err, "iterator");
    leveldb_iter_destroy(it);
    return n;
}

static const engine_ops leveldb_ops = {
    "leveldb",       ldb_open,      ldb_close,        ldb_set_sync,  ldb_put,
    ldb_batch_begin, ldb_batch_put, ldb_batch_commit, ldb_get_check, ldb_scan,
};

/* ------------------------------------------------------------- RocksDB */

typedef struct rdb_h {
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_readoptions_t *ropt;
    rocksdb_writeoptions_t *wopt_nosync, *wopt_sync;
    rocksdb_writeoptions_t *wopt; /* one of the two above */
    rocksdb_writebatch_t *batch;
} rdb_h;

static void rdb_chk(char *err, const char *what) {
    if (err)
        die("rocksdb: %s: %s", what, err);
}

static void *rdb_open(const char *dir) {
    rdb_h *h = calloc(1, sizeof *h);
    char *err = NULL;
    if (!h)
        abort();
    h->opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(h->opt, 1);
    h->ropt = rocksdb_readoptions_create();
    h->wopt_nosync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(h->wopt_nosync, 0);
    h->wopt_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(h->wopt_sync, 1);
    h->wopt = h->wopt_sync;
    h->batch = rocksdb_writebatch_create();
    h->db = rocksdb_open(h->opt, dir, &err);
    rdb_chk(err, "open");
    return h;
}

static void rdb_close(void *hp) {
    rdb_h *h = hp;
    rocksdb_close(h->db);
    rocksdb_writebatch_destroy(h->batch);
    rocksdb_writeoptions_destroy(h->wopt_sync);
    rocksdb_writeoptions_destroy(h->wopt_nosync);
    rocksdb_readoptions_destroy(h->ropt);
    rocksdb_options_destroy(h->opt);
    free(h);
}

static void rdb_set_sync(void *hp, int sync) {
    rdb_h *h = hp;
    h->wopt = sync ? h->wopt_sync : h->wopt_nosync;
}

static void rdb_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    rdb_h *h = hp;
    char *err = NULL;
    rocksdb_put(h->db, h->wopt, k, kl, v, vl, &err);
    rdb_chk(err, "put");
}

static void rdb_batch_begin(void *hp) {
    rdb_h *h = hp;
    rocksdb_writebatch_clear(h->batch);
}

static void rdb_batch_put(void *hp, const char *k, size_t kl, const char *v, size_t vl) {
    rdb_h *h = hp;
    rocksdb_writebatch_put(h->batch, k, kl, v, vl);
}

static void rdb_batch_commit(void *hp) {
    rdb_h *h = hp;
    char *err = NULL;
    rocksdb_write(h->db, h->wopt, h->batch, &err);
    rdb_chk(err, "write");
}

static int rdb_get_check(void *hp, const char *k, size_t kl, const char *expect) {
    rdb_h *h = hp;
    char *err = NULL;
    size_t vl = 0;
    char *v = rocksdb_get(h->db, h->ropt, k, kl, &vl, &err);
    int res;
    rdb_chk(err, "get");
    if (!v)
        return CHECK_MISSING;
    res = vl == WL_VALUE_LEN && memcmp(v, expect, WL_VALUE_LEN) == 0 ? CHECK_OK : CHECK_MISMATCH;
    rocksdb_free(v);
    return res;
}

static uint64_t rdb_scan(void *hp, const char *start, size_t sl, uint64_t limit, uint64_t *sum) {
    rdb_h *h = hp;
    rocksdb_iterator_t *it = rocksdb_create_iterator(h->db, h->ropt);
    char *err = NULL;
    uint64_t n = 0;
    if (start)
        rocksdb_iter_seek(it, start, sl);
    else
        rocksdb_iter_seek_to_first(it);
    for (; n < limit && rocksdb_iter_valid(it); n++) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        *sum += touch(k, kl) + touch(v, vl);
        if (n + 1 < limit)
            rocksdb_iter_next(it);
    }
    rocksdb_iter_get_error(it, &err);
    rdb_chk(err, "iterator");
    rocksdb_iter_destroy(it);
    return n;
}

static const engine_ops rocksdb_ops = {
    "rocksdb",       rdb_open,      rdb_close,        rdb_set_sync,  rdb_put,
    rdb_batch_begin, rdb_batch_put, rdb_batch_commit, rdb_get_check, rdb_scan,
};

/* ---------------------------------------------------------- filesystem */

static uint64_t disk_total;

static int disk_add(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)path;
    (void)ftw;
    if (type == FTW_F)
        disk_total += (uint64_t)st->st_blocks * 512u; /* allocated, not apparent, size */
    return 0;
}

/* Bytes allocated to the regular files under dir. */
static uint64_t disk_bytes(const char *dir) {
    disk_total = 0;
    if (nftw(dir, disk_add, 16, FTW_PHYS) != 0)
        die("cannot walk %s: %s", dir, strerror(errno));
    return disk_total;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0)
        die("cannot remove %s: %s", path, strerror(errno));
    return 0;
}

/* Removes path and everything under it; a missing path is fine. */
static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT)
        return;
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        die("cannot remove %s: %s", path, strerror(errno));
}

/* Makes dir an empty directory. */
static void fresh_dir(const char *dir) {
    rm_rf(dir);
    if (mkdir(dir, 0755) != 0)
        die("cannot create %s: %s", dir, strerror(errno));
}

/* -------------------------------------------------------------- phases */

enum {
    PH_FILLRANDOM,
    PH_FILLBATCH,
    PH_READRANDOM,
    PH_SCAN100,
    PH_FULLSCAN,
    PH_REOPEN,
    PH_SYNCWRITE,
    PH_SYNCWRITE16,
    PH_COUNT
};

static const char *phase_name(int p) {
    static const char *const names[PH_COUNT] = {
        "fillrandom", "fillbatch", "readrandom", "scan100",
        "fullscan",   "reopen",    "syncwrite",  "syncwrite16",
    };
    return names[p];
}

typedef struct bench {
    const engine_ops *ops;
    void *h;
    const char *store;
    uint64_t n;
    uint64_t seed;
    const uint64_t *perm;
} bench;

static void put_num(const engine_ops *ops, void *h, uint64_t num) {
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    wl_key(num, k);
    wl_value(num, v);
    ops->put(h, k, sizeof k, v, sizeof v);
}

/* Checks that key number num holds its value; aborts otherwise. */
static void check_num(bench *b, uint64_t num) {
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    int rc;
    wl_key(num, k);
    wl_value(num, v);
    rc = b->ops->get_check(b->h, k, sizeof k, v);
    if (rc != CHECK_OK)
        die("%s: key %.16s: %s", b->ops->name, k,
            rc == CHECK_MISSING ? "not found" : "wrong value");
}

/* Closes any open store, wipes it and opens a fresh empty one. */
static void open_fresh(bench *b) {
    if (b->h)
        b->ops->close(b->h);
    b->h = NULL;
    fresh_dir(b->store);
    b->h = b->ops->open(b->store);
}

static double fill_random(bench *b) {
    double t0;
    open_fresh(b);
    b->ops->set_sync(b->h, 0);
    t0 = wl_now();
    for (uint64_t i = 0; i < b->n; i++)
        put_num(b->ops, b->h, b->perm[i]);
    return wl_now() - t0;
}

static double fill_batch(bench *b) {
    double t0;
    char k[WL_KEY_LEN], v[WL_VALUE_LEN];
    open_fresh(b);
    b->ops->set_sync(b->h, 0);
    t0 = wl_now();
    for (uint64_t i = 0; i < b->n; i += BATCH_SIZE) {
        uint64_t end = i + BATCH_SIZE < b->n ? i + BATCH_SIZE : b->n;
        b->ops->batch_begin(b->h);
        for (uint64_t j = i; j < end; j++) {
            wl_key(b->perm[j], k);
            wl_value(b->perm[j], v);
            b->ops->batch_put(b->h, k, sizeof k, v, sizeof v);
        }
        b->ops->batch_commit(b->h);
    }
    return wl_now() - t0;
}

static double read_random(bench *b) {
    uint64_t rs = b->seed + 1;
    double t0 = wl_now();
    for (uint64_t i = 0; i < READ_OPS; i++)
        check_num(b, wl_rand(&rs) % b->n);
    return wl_now() - t0;
}

static double scan_ranges(bench *b) {
    uint64_t rs = b->seed + 2, sum = 0;
    uint64_t starts = b->n >= SCAN_LEN ? b->n - SCAN_LEN + 1 : 1;
    uint64_t want = b->n >= SCAN_LEN ? SCAN_LEN : b->n;
    char k[WL_KEY_LEN];
    double t0 = wl_now(), t;
    for (uint64_t i = 0; i < SCAN_RANGES; i++) {
        uint64_t got;
        wl_key(wl_rand(&rs) % starts, k);
        got = b->ops->scan(b->h, k, sizeof k, SCAN_LEN, &sum);
        if (got != want)
            die("%s: scan from %.16s read %llu entries, expected %llu", b->ops->name, k,
                (unsigned long long)got, (unsigned long long)want);
    }
    t = wl_now() - t0;
    fprintf(stderr, "%s: scan100 checksum %016llx\n", b->ops->name, (unsigned long long)sum);
    return t;
}

static double full_scan(bench *b, uint64_t *entries) {
    uint64_t sum = 0;
    double t0 = wl_now(), t;
    *entries = b->ops->scan(b->h, NULL, 0, UINT64_MAX, &sum);
    t = wl_now() - t0;
    if (*entries != b->n)
        die("%s: fullscan read %llu entries, expected %llu", b->ops->name,
            (unsigned long long)*entries, (unsigned long long)b->n);
    fprintf(stderr, "%s: fullscan checksum %016llx\n", b->ops->name, (unsigned long long)sum);
    return t;
}

static double reopen(bench *b) {
    uint64_t rs = b->seed + 3;
    double t0 = wl_now(), t1, t2;
    b->ops->close(b->h);
    t1 = wl_now();
    b->h = b->ops->open(b->store);
    check_num(b, wl_rand(&rs) % b->n);
    t2 = wl_now();
    fprintf(stderr, "%s: reopen: close %.4f s, open+get %.4f s\n", b->ops->name, t1 - t0, t2 - t1);
    return t2 - t0;
}

static double sync_write(bench *b) {
    double t0;
    b->ops->set_sync(b->h, 1);
    t0 = wl_now();
    for (uint64_t i = 0; i < SYNC_OPS; i++)
        put_num(b->ops, b->h, b->n + i);
    return wl_now() - t0;
}

typedef struct sync_thread {
    pthread_t tid;
    const bench *b;
    uint64_t first; /* key numbers first + t, first + t + 16, ... */
    unsigned t;
} sync_thread;

static void *sync_worker(void *arg) {
    sync_thread *st = arg;
    for (uint64_t i = st->t; i < SYNC_OPS; i += SYNC_THREADS)
        put_num(st->b->ops, st->b->h, st->first + i);
    return NULL;
}

static double sync_write16(bench *b) {
    sync_thread th[SYNC_THREADS];
    double t0;
    int rc;
    b->ops->set_sync(b->h, 1);
    t0 = wl_now();
    for (unsigned t = 0; t < SYNC_THREADS; t++) {
        th[t].b = b;
        th[t].first = b->n + SYNC_OPS;
        th[t].t = t;
        rc = pthread_create(&th[t].tid, NULL, sync_worker, &th[t]);
        if (rc != 0)
            die("pthread_create: %s", strerror(rc));
    }
    for (unsigned t = 0; t < SYNC_THREADS; t++)
        pthread_join(th[t].tid, NULL);
    return wl_now() - t0;
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr, "usage: bitraft-refbench lmdb|leveldb|rocksdb [--n N] [--dir D] [--seed S] "
                    "[--phases a,b,c]\nphases:");
    for (int p = 0; p < PH_COUNT; p++)
        fprintf(stderr, " %s", phase_name(p));
    fputc('\n', stderr);
    exit(2);
}

static uint64_t parse_u64(const char *opt, const char *s) {
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        die("%s: not a number: %s", opt, s);
    return v;
}

static unsigned parse_phases(const char *list) {
    unsigned mask = 0;
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        abort();
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int p = 0;
        while (p < PH_COUNT && strcmp(tok, phase_name(p)) != 0)
            p++;
        if (p == PH_COUNT)
            die("unknown phase: %s", tok);
        mask |= 1u << p;
    }
    free(copy);
    return mask;
}

int main(int argc, char **argv) {
    const engine_ops *ops = NULL;
    const char *dir_opt = NULL;
    uint64_t n = DEFAULT_N, seed = DEFAULT_SEED, entries;
    unsigned mask = (1u << PH_COUNT) - 1;
    char tmpl[] = "/tmp/bitraft-refbench-XXXXXX";
    const char *parent;
    char *store;
    bench b;
    int loaded = 0;
    uint64_t rss, peak;

    if (argc < 2)
        usage();
    if (strcmp(argv[1], "lmdb") == 0)
        ops = &lmdb_ops;
    else if (strcmp(argv[1], "leveldb") == 0)
        ops = &leveldb_ops;
    else if (strcmp(argv[1], "rocksdb") == 0)
        ops = &rocksdb_ops;
    else
        usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        if (strcmp(a, "--n") == 0)
            n = parse_u64(a, argv[++i]);
        else if (strcmp(a, "--seed") == 0)
            seed = parse_u64(a, argv[++i]);
        else if (strcmp(a, "--dir") == 0)
            dir_opt = argv[++i];
        else if (strcmp(a, "--phases") == 0)
            mask = parse_phases(argv[++i]);
        else
            usage();
    }
    if (n == 0)
        die("--n must be at least 1");

    if (dir_opt)
        parent = dir_opt;
    else if (!(parent = mkdtemp(tmpl)))
        die("mkdtemp: %s", strerror(errno));
    if (asprintf(&store, "%s/%s", parent, ops->name) < 0)
        abort();

    memset(&b, 0, sizeof b);
    b.ops = ops;
    b.store = store;
    b.n = n;
    b.seed = seed;
    b.perm = wl_perm(n, seed);

    if (mask & (1u << PH_FILLRANDOM)) {
        wl_report(ops->name, "fillrandom", n, fill_random(&b));
        loaded = 1;
    }
    if (mask & (1u << PH_FILLBATCH)) {
        wl_report(ops->name, "fillbatch", n, fill_batch(&b));
        loaded = 1;
    }
    if (!loaded && (mask & ((1u << PH_READRANDOM) | (1u << PH_SCAN100) | (1u << PH_FULLSCAN) |
                            (1u << PH_REOPEN)))) {
        fprintf(stderr, "%s: no fill phase selected: loading %llu records (untimed)\n", ops->name,
                (unsigned long long)n);
        fill_batch(&b);
        loaded = 1;
    }
    if (!b.h)
        open_fresh(&b);
    if (mask & (1u << PH_READRANDOM))
        wl_report(ops->name, "readrandom", READ_OPS, read_random(&b));
    if (mask & (1u << PH_SCAN100))
        wl_report(ops->name, "scan100", SCAN_RANGES, scan_ranges(&b));
    if (mask & (1u << PH_FULLSCAN)) {
        double t = full_scan(&b, &entries);
        wl_report(ops->name, "fullscan", entries, t);
    }
    if (mask & (1u << PH_REOPEN))
        wl_report(ops->name, "reopen", 1, reopen(&b));
    if (mask & (1u << PH_SYNCWRITE))
        wl_report(ops->name, "syncwrite", SYNC_OPS, sync_write(&b));
    if (mask & (1u << PH_SYNCWRITE16))
        wl_report(ops->name, "syncwrite16", SYNC_OPS, sync_write16(&b));

    rss = wl_rss();
    peak = wl_peak_rss();
    ops->close(b.h);
    printf("{\"engine\":\"%s\",\"rss_bytes\":%llu,\"peak_rss_bytes\":%llu,\"disk_bytes\":%llu}\n",
           ops->name, (unsigned long long)rss, (unsigned long long)peak,
           (unsigned long long)disk_bytes(store));
    fflush(stdout);

    rm_rf(store);
    if (!dir_opt)
        rm_rf(parent);
    free(store);
    free((void *)b.perm);
    return 0;
}
