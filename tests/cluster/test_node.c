/*
 * test_node.c - br_node: real 3-node clusters in one process on 127.0.0.1
 * (each Criterion test in its own process; the fixture closes every node
 * even when an assertion fails).
 *
 * Set BR_TEST_VERBOSE=1 to see every log line of the nodes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "node.h"

#define N 3

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int verbose;

static void test_log(void *ctx, int level, const char *msg) {
    if (verbose || level >= BR_NODE_LOG_WARN)
        fprintf(stderr, "[%llu] %s\n", (unsigned long long)(now_ms() % 100000), msg);
}

/* ------------------------------------------------------------ cluster */

struct cluster {
    char dir[512];
    uint16_t ports[N + 1];
    char addrs[N + 1][32];
    struct br_node_member members[N];
    br_node *nodes[N + 1]; /* by id, 1..N */
    uint64_t compact_every, compact_tail;
    uint32_t chunk;
    uint64_t engine_file_size;
};

static struct cluster C;

/* Picks N distinct free ports: bind port 0, read it, close. */
static void pick_ports(void) {
    int fds[N + 1];
    for (int i = 1; i <= N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert(bind(fds[i], (struct sockaddr *)&a, sizeof a) == 0);
        socklen_t l = sizeof a;
        cr_assert(getsockname(fds[i], (struct sockaddr *)&a, &l) == 0);
        C.ports[i] = ntohs(a.sin_port);
    }
    for (int i = 1; i <= N; i++)
        close(fds[i]);
}

static void setup(void) {
    signal(SIGPIPE, SIG_IGN);
    verbose = getenv("BR_TEST_VERBOSE") != NULL;
    memset(&C, 0, sizeof C);
    const char *base = getenv("BR_TEST_TMP");
    if (!base)
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(C.dir, sizeof C.dir, "%s/node-XXXXXX", base);
    cr_assert(mkdtemp(C.dir) != NULL, "mkdtemp %s: %s", C.dir, strerror(errno));
    pick_ports();
    for (int i = 1; i <= N; i++) {
        snprintf(C.addrs[i], sizeof C.addrs[i], "127.0.0.1:%d", 4000 + i);
        C.members[i - 1] = (struct br_node_member){.id = (uint64_t)i,
                                                   .host = "127.0.0.1",
                                                   .raft_port = C.ports[i],
                                                   .client_addr = C.addrs[i]};
    }
}

static void node_close(int id) {
    if (C.nodes[id]) {
        int rc = br_node_close(C.nodes[id]);
        C.nodes[id] = NULL;
        cr_expect(rc == 0, "close of node %d: %s", id, br_strerror(rc));
    }
}

static void teardown(void) {
    for (int i = 1; i <= N; i++)
        node_close(i);
    if (C.dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", C.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", C.dir);
    }
}

static void node_open(int id) {
    struct br_node_config cfg;
    br_node_config_init(&cfg);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/n%d", C.dir, id);
    br_engine_options eo;
    br_engine_options_init(&eo);
    eo.compact_dead_pct = 0;
    eo.range_readers = 0;
    if (C.engine_file_size)
        eo.max_file_size = C.engine_file_size;
    cfg.id = (uint64_t)id;
    cfg.members = C.members;
    cfg.n_members = N;
    cfg.cluster_token = "test-token";
    cfg.dir = dir;
    cfg.compact_every = C.compact_every;
    cfg.compact_tail = C.compact_tail;
    cfg.snapshot_chunk = C.chunk;
    cfg.raftlog_segment = 1u << 20;
    cfg.engine = &eo;
    cfg.log_fn = test_log;
    int rc = 0;
    char err[256] = "";
    for (int attempt = 0; attempt < 50; attempt++) {
        rc = br_node_open(&cfg, &C.nodes[id], err, sizeof err);
        if (rc != -EADDRINUSE)
            break;
        sleep_ms(100);
    }
    cr_assert(rc == 0, "open node %d: %s (%s)", id, br_strerror(rc), err);
}

static void open_all(void) {
    for (int i = 1; i <= N; i++)
        node_open(i);
}

static struct br_node_status status(int id) {
    struct br_node_status st;
    br_node_status_get(C.nodes[id], &st);
    return st;
}

/* Waits until the open nodes agree on one leader that says it leads. */
static int wait_leader(unsigned timeout_ms) {
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        int leader = 0, leaders = 0;
        bool agree = true;
        uint64_t seen = 0;
        for (int i = 1; i <= N; i++) {
            if (!C.nodes[i])
                continue;
            struct br_node_status st = status(i);
            if (st.role == BR_RAFT_LEADER) {
                leader = i;
                leaders++;
            }
            if (seen == 0)
                seen = st.leader;
            if (st.leader == 0 || st.leader != seen)
                agree = false;
        }
        if (leaders == 1 && agree && seen == (uint64_t)leader)
            return leader;
        sleep_ms(5);
    }
    return 0;
}

/* ------------------------------------------------------------ waiting */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int rc;
};

static void waiter_init(struct waiter *w) {
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->done = 0;
    w->rc = 0;
}

static void waiter_cb(void *ctx, int rc) {
    struct waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->rc = rc;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Returns the callback's rc, or 1 on timeout. */
static int waiter_wait(struct waiter *w, unsigned timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    int rc = w->done ? w->rc : 1;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static int put_wait(int id, const char *key, const char *val) {
    struct waiter w;
    waiter_init(&w);
    int rc = br_node_put(C.nodes[id], key, strlen(key), val, strlen(val), waiter_cb, &w);
    if (rc < 0)
        return rc;
    return waiter_wait(&w, 10000);
}

/* Many writes in flight at once. */
struct counter {
    atomic_int done;
    atomic_int errors;
    atomic_int first_err;
};

static void counter_cb(void *ctx, int rc) {
    struct counter *c = ctx;
    if (rc != 0) {
        int zero = 0;
        atomic_compare_exchange_strong(&c->first_err, &zero, rc);
        atomic_fetch_add(&c->errors, 1);
    }
    atomic_fetch_add(&c->done, 1);
}

/* Proposes keys prefix:from..to-1 on node id, all at once; waits for all. */
static void write_many(int id, const char *prefix, int from, int to, size_t vlen) {
    struct counter c = {0};
    char *val = malloc(vlen + 1);
    int issued = 0;
    for (int i = from; i < to; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s:%06d", prefix, i);
        memset(val, 'a' + i % 26, vlen);
        int rc = br_node_put(C.nodes[id], key, strlen(key), val, vlen, counter_cb, &c);
        cr_assert(rc == 0, "put %s on %d: %s", key, id, br_strerror(rc));
        issued++;
    }
    free(val);
    uint64_t end = now_ms() + 30000;
    while (atomic_load(&c.done) < issued && now_ms() < end)
        sleep_ms(2);
    cr_assert(atomic_load(&c.done) == issued, "%d of %d writes completed", atomic_load(&c.done),
              issued);
    cr_assert(atomic_load(&c.errors) == 0, "%d writes failed, first: %s", atomic_load(&c.errors),
              br_strerror(atomic_load(&c.first_err)));
}

/* ------------------------------------------------------------ contents */

struct digest {
    uint64_t hash, keys;
};

static int digest_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    struct digest *d = ctx;
    d->hash = XXH3_64bits_withSeed(key, klen, d->hash);
    d->hash = XXH3_64bits_withSeed(val, vlen, d->hash);
    d->keys++;
    return 0;
}

static struct digest digest(int id) {
    struct digest d = {0, 0};
    br_engine *e = br_node_engine_acquire(C.nodes[id]);
    cr_assert(e != NULL);
    int rc = br_engine_range(e, NULL, 0, NULL, 0, 0, digest_fn, &d);
    br_node_engine_release(C.nodes[id]);
    cr_assert(rc == 0, "range on %d: %s", id, br_strerror(rc));
    return d;
}

/* Waits until every open node has applied what `leader` has, then checks
 * that their contents are equal; returns the number of keys. */
static uint64_t check_same(int leader, unsigned timeout_ms) {
    /* No write is in flight: wait until every node applied the leader's
     * whole log. */
    uint64_t end = now_ms() + timeout_ms;
    bool all = false;
    while (!all && now_ms() < end) {
        uint64_t target = status(leader).last_index;
        all = true;
        for (int i = 1; i <= N; i++)
            if (C.nodes[i] && status(i).applied < target)
                all = false;
        if (!all)
            sleep_ms(5);
    }
    for (int i = 1; i <= N; i++)
        cr_assert(!C.nodes[i] || status(i).applied >= status(leader).last_index,
                  "node %d applied %llu < %llu", i, (unsigned long long)status(i).applied,
                  (unsigned long long)status(leader).last_index);
    struct digest ref = digest(leader);
    for (int i = 1; i <= N; i++) {
        if (!C.nodes[i] || i == leader)
            continue;
        struct digest d = digest(i);
        cr_assert(d.keys == ref.keys && d.hash == ref.hash,
                  "node %d: %llu keys (hash %llx), leader %d: %llu keys (hash %llx)", i,
                  (unsigned long long)d.keys, (unsigned long long)d.hash, leader,
                  (unsigned long long)ref.keys, (unsigned long long)ref.hash);
    }
    return ref.keys;
}

static bool has_key(int id, const char *key, const char *want) {
    br_engine *e = br_node_engine_acquire(C.nodes[id]);
    cr_assert(e != NULL);
    void *v = NULL;
    size_t vl = 0;
    int rc = br_engine_get(e, key, strlen(key), &v, &vl);
    br_node_engine_release(C.nodes[id]);
    bool ok = rc == 0 && vl == strlen(want) && memcmp(v, want, vl) == 0;
    free(v);
    return ok;
}

TestSuite(node, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------ tests */

Test(node, elect_replicate_and_redirect) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0, "no leader elected");
    write_many(l, "k", 0, 1000, 16);
    cr_assert_eq(check_same(l, 10000), 1000);

    int f = l % N + 1;
    int rc = br_node_put(C.nodes[f], "x", 1, "y", 1, waiter_cb, NULL);
    cr_assert_eq(rc, BR_ENOTLEADER, "put on follower: %s", br_strerror(rc));
    /* a follower's read barrier goes through the leader: after it, the
     * follower's engine holds every write acknowledged before */
    for (int i = 0; i < 20; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        struct waiter rw;
        waiter_init(&rw);
        cr_assert_eq(br_node_put(C.nodes[l], "ryw", 3, v, strlen(v), waiter_cb, &rw), 0);
        cr_assert_eq(waiter_wait(&rw, 10000), 0);
        waiter_init(&rw);
        cr_assert_eq(br_node_read_index(C.nodes[f], waiter_cb, &rw), 0);
        cr_assert_eq(waiter_wait(&rw, 10000), 0);
        cr_assert(has_key(f, "ryw", v), "follower %d read after the barrier missed write %s", f, v);
    }
    uint64_t lid = 0;
    char host[64], addr[64];
    uint16_t port = 0;
    br_node_leader(C.nodes[f], &lid, host, sizeof host, &port, addr, sizeof addr);
    cr_assert_eq(lid, (uint64_t)l);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, C.ports[l]);
    cr_assert_str_eq(addr, C.addrs[l]);

    /* a delete of an absent key commits but reports BR_ENOTFOUND */
    struct waiter w;
    waiter_init(&w);
    cr_assert_eq(br_node_delete(C.nodes[l], "nope", 4, waiter_cb, &w), 0);
    cr_assert_eq(waiter_wait(&w, 10000), BR_ENOTFOUND);
    waiter_init(&w);
    cr_assert_eq(br_node_delete(C.nodes[l], "k:000007", 8, waiter_cb, &w), 0);
    cr_assert_eq(waiter_wait(&w, 10000), 0);

    /* an atomic batch */
    br_node_batch *b = br_node_batch_new();
    cr_assert_eq(br_node_batch_put(b, "b1", 2, "v1", 2), 0);
    cr_assert_eq(br_node_batch_put(b, "b2", 2, "v2", 2), 0);
    cr_assert_eq(br_node_batch_delete(b, "k:000008", 8), 0);
    waiter_init(&w);
    cr_assert_eq(br_node_write(C.nodes[l], b, waiter_cb, &w), 0);
    br_node_batch_free(b);
    cr_assert_eq(waiter_wait(&w, 10000), 0);
    cr_assert_eq(check_same(l, 10000), 1000 - 2 + 2 + 1 /* ryw */);
    for (int i = 1; i <= N; i++)
        cr_assert(has_key(i, "b2", "v2"));

    /* bad input is refused at once */
    cr_assert_eq(br_node_put(C.nodes[l], "", 0, "v", 1, waiter_cb, NULL), BR_EEMPTYKEY);

    struct br_node_status st = status(l);
    cr_assert_eq(st.n_peers, (size_t)N);
    for (size_t i = 0; i < st.n_peers; i++)
        cr_assert(st.peers[i].match > 0);
    printf("elect_replicate: leader %d, %llu proposals, %llu readys, %llu syncs\n", l,
           (unsigned long long)st.proposals, (unsigned long long)st.readys,
           (unsigned long long)st.syncs);
}

Test(node, leader_failover_and_catch_up) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    write_many(l, "a", 0, 100, 32);
    check_same(l, 10000);

    uint64_t t0 = now_ms();
    node_close(l);
    int l2 = wait_leader(10000);
    uint64_t took = now_ms() - t0;
    cr_assert(l2 != 0 && l2 != l, "no new leader after the old one closed");
    printf("failover: node %d closed, node %d leads after %llu ms\n", l, l2,
           (unsigned long long)took);
    cr_assert(took < 10000);
    write_many(l2, "b", 0, 100, 32);

    node_open(l);
    cr_assert_eq(wait_leader(10000), l2);
    cr_assert_eq(check_same(l2, 20000), 200);
    /* value of key 99: 'a' + 99 % 26, 32 times */
    cr_assert(has_key(l, "b:000099", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"));
}

Test(node, restart_all_keeps_writes_and_applied_index) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    write_many(l, "r", 0, 500, 24);
    check_same(l, 10000);
    uint64_t applied[N + 1];
    struct digest before = digest(l);
    for (int i = 1; i <= N; i++)
        applied[i] = status(i).applied;
    for (int i = 1; i <= N; i++)
        node_close(i);
    open_all();
    for (int i = 1; i <= N; i++) {
        /* restored from the engine, not re-applied from zero */
        struct br_node_status st = status(i);
        cr_assert(st.applied + 1 >= applied[i] && st.applied > 500,
                  "node %d restarted at applied %llu (was %llu)", i, (unsigned long long)st.applied,
                  (unsigned long long)applied[i]);
    }
    l = wait_leader(10000);
    cr_assert(l != 0);
    for (int i = 1; i <= N; i++) {
        struct digest d = digest(i);
        cr_assert(d.keys == before.keys && d.hash == before.hash, "node %d lost writes", i);
    }
    cr_assert_eq(put_wait(l, "after", "restart"), 0);
    cr_assert_eq(check_same(l, 10000), 501);
}

Test(node, read_index_sees_completed_write) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    for (int round = 0; round < 20; round++) {
        char val[32];
        snprintf(val, sizeof val, "v%d", round);
        cr_assert_eq(put_wait(l, "ri", val), 0);
        struct waiter w;
        waiter_init(&w);
        cr_assert_eq(br_node_read_index(C.nodes[l], waiter_cb, &w), 0);
        cr_assert_eq(waiter_wait(&w, 10000), 0);
        cr_assert(has_key(l, "ri", val));
    }
    /* many reads at once share rounds and all complete */
    struct counter c = {0};
    for (int i = 0; i < 200; i++)
        cr_assert_eq(br_node_read_index(C.nodes[l], counter_cb, &c), 0);
    uint64_t end = now_ms() + 10000;
    while (atomic_load(&c.done) < 200 && now_ms() < end)
        sleep_ms(2);
    cr_assert_eq(atomic_load(&c.done), 200);
    cr_assert_eq(atomic_load(&c.errors), 0);
}

Test(node, lagging_follower_catches_up_by_snapshot) {
    C.compact_every = 50;
    C.compact_tail = 10;
    C.chunk = 4096;
    C.engine_file_size = 16 << 10;
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    write_many(l, "s", 0, 20, 100);
    check_same(l, 10000);
    int f = l % N + 1;
    uint64_t f_applied = status(f).applied;
    node_close(f);
    for (int k = 0; k < 5; k++)
        write_many(l, "t", k * 100, (k + 1) * 100, 300);
    /* overwrite and delete some, so the snapshot is not only appends */
    write_many(l, "s", 0, 10, 50);
    struct waiter w;
    waiter_init(&w);
    cr_assert_eq(br_node_delete(C.nodes[l], "t:000003", 8, waiter_cb, &w), 0);
    cr_assert_eq(waiter_wait(&w, 10000), 0);
    struct br_node_status ls = status(l);
    cr_assert(ls.first_index > f_applied + 1,
              "leader log starts at %llu, follower had %llu: no snapshot needed",
              (unsigned long long)ls.first_index, (unsigned long long)f_applied);
    cr_assert(ls.compactions > 0);

    node_open(f);
    cr_assert_eq(check_same(l, 30000), 20 + 500 - 1);
    cr_assert(status(f).snapshots_installed >= 1, "follower did not install a snapshot");
    cr_assert(status(l).snapshots_sent >= 1);

    /* it keeps replicating after the snapshot, and keeps it across a restart */
    write_many(l, "u", 0, 50, 10);
    cr_assert_eq(check_same(l, 10000), 20 + 500 - 1 + 50);
    node_close(f);
    node_open(f);
    cr_assert_eq(check_same(l, 10000), 20 + 500 - 1 + 50);
    printf("snapshot: leader log %llu..%llu, follower had %llu, installed %llu snapshot(s)\n",
           (unsigned long long)ls.first_index, (unsigned long long)ls.last_index,
           (unsigned long long)f_applied, (unsigned long long)1);
}

struct slot {
    atomic_int calls;
    atomic_int rc;
};

static void slot_cb(void *ctx, int rc) {
    struct slot *s = ctx;
    atomic_store(&s->rc, rc);
    atomic_fetch_add(&s->calls, 1);
}

/* Writes in flight when the leader closes: each gets exactly one callback,
 * and every write acknowledged with 0 is on the new leader. */
Test(node, close_with_writes_in_flight_loses_no_acknowledged_write) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    enum { W = 2000 };
    static struct slot slots[W];
    int issued = 0;
    for (int i = 0; i < W; i++) {
        char key[32];
        snprintf(key, sizeof key, "f:%06d", i);
        if (br_node_put(C.nodes[l], key, strlen(key), "v", 1, slot_cb, &slots[i]) == 0)
            issued++;
        else
            atomic_store(&slots[i].calls, -1);
        if (i == W / 2)
            sleep_ms(5);
    }
    node_close(l); /* returns after every callback ran */
    int ok = 0;
    for (int i = 0; i < W; i++) {
        int calls = atomic_load(&slots[i].calls);
        if (calls < 0)
            continue;
        cr_assert_eq(calls, 1, "write %d called back %d times", i, calls);
        int rc = atomic_load(&slots[i].rc);
        cr_assert(rc == 0 || rc == BR_ECLOSED || rc == BR_NODE_ELOST, "write %d: %s", i,
                  br_strerror(rc));
        ok += rc == 0;
    }
    int l2 = wait_leader(10000);
    cr_assert(l2 != 0);
    check_same(l2, 10000);
    for (int i = 0; i < W; i++) {
        if (atomic_load(&slots[i].calls) == 1 && atomic_load(&slots[i].rc) == 0) {
            char key[32];
            snprintf(key, sizeof key, "f:%06d", i);
            cr_assert(has_key(l2, key, "v"), "acknowledged write %s lost", key);
        }
    }
    printf("close in flight: %d issued, %d acknowledged before the close\n", issued, ok);
}

/* ------------------------------------------------------------ throughput */

struct proposer {
    int id;
    int t;
    int done;
    int errors;
    uint64_t until;
};

static void *proposer_main(void *arg) {
    struct proposer *p = arg;
    char key[32], val[100];
    memset(val, 'p', sizeof val);
    for (int i = 0; now_ms() < p->until; i++) {
        snprintf(key, sizeof key, "p%02d:%07d", p->t, i);
        struct waiter w;
        waiter_init(&w);
        int rc = br_node_put(C.nodes[p->id], key, strlen(key), val, sizeof val, waiter_cb, &w);
        if (rc == 0)
            rc = waiter_wait(&w, 10000);
        if (rc != 0)
            p->errors++;
        else
            p->done++;
    }
    return NULL;
}

Test(node, throughput_16_proposers) {
    open_all();
    int l = wait_leader(10000);
    cr_assert(l != 0);
    struct proposer ps[16];
    pthread_t th[16];
    uint64_t t0 = now_ms();
    for (int i = 0; i < 16; i++) {
        ps[i] = (struct proposer){.id = l, .t = i, .until = t0 + 3000};
        pthread_create(&th[i], NULL, proposer_main, &ps[i]);
    }
    int done = 0, errors = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        done += ps[i].done;
        errors += ps[i].errors;
    }
    uint64_t ms = now_ms() - t0;
    struct br_node_status st = status(l);
    printf("throughput: %d writes of 100 bytes from 16 proposers in %llu ms = %.0f/s "
           "(%llu syncs on the leader, %.1f writes per sync)\n",
           done, (unsigned long long)ms, done * 1000.0 / (double)ms, (unsigned long long)st.syncs,
           st.syncs ? (double)done / (double)st.syncs : 0.0);
    cr_assert_eq(errors, 0);
    check_same(l, 20000);
}

/* ------------------------------------------------------------ command codec */

#include "node_int.h"

static int count_op(void *ctx, uint8_t kind, const void *key, size_t klen, const void *val,
                    size_t vlen) {
    (*(int *)ctx)++;
    return 0;
}

Test(node, command_codec_rejects_damage) {
    br_node_batch *b = br_node_batch_new();
    cr_assert_eq(br_node_batch_put(b, "key", 3, "value", 5), 0);
    cr_assert_eq(br_node_batch_delete(b, "gone", 4), 0);
    cr_assert_eq(br_node_batch_put(b, "e", 1, "", 0), 0);
    uint8_t *cmd;
    size_t len;
    cr_assert_eq(nd_cmd_from_batch(b, &cmd, &len), 0);
    br_node_batch_free(b);
    int ops = 0;
    cr_assert_eq(nd_cmd_decode(cmd, len, count_op, &ops), 0);
    cr_assert_eq(ops, 3);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            cmd[i] ^= (uint8_t)(1u << bit);
            ops = 0;
            cr_assert_eq(nd_cmd_decode(cmd, len, count_op, &ops), BR_ECORRUPT,
                         "flip of byte %zu bit %d accepted", i, bit);
            cr_assert_eq(ops, 0, "an op was applied from a damaged command");
            cmd[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (size_t l = 0; l < len; l++)
        cr_assert_eq(nd_cmd_decode(cmd, l, count_op, &ops), BR_ECORRUPT);
    free(cmd);
    br_node_batch *empty = br_node_batch_new();
    cr_assert_eq(nd_cmd_from_batch(empty, &cmd, &len), BR_EINVAL);
    br_node_batch_free(empty);
}
