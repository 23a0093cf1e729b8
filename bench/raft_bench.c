/*
 * raft_bench.c - bitraft-bench raft: how fast the raft core commits.
 *
 * A 3-node cluster in one thread, in memory, with no I/O and no codec:
 * the leader takes batches of 100-byte proposals, messages go straight to
 * the other cores' br_raft_step(), storage is br_raft_memstorage (compacted
 * as the run goes). Prints one JSON line:
 *   {"phase":"raft_commit","ops":N,"seconds":S,"ops_per_s":R}
 * where ops counts entries committed and applied on the leader.
 *
 *   bitraft-bench raft [entries] [batch]      (default 2000000, 1000)
 */
#include "bitraft/raft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 3

static br_raft *nodes[N + 1];
static br_raft_memstorage *stores[N + 1];
static uint64_t applied[N + 1];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "raft-bench: %s failed (%d)\n", what, rc);
    exit(1);
}

/* One driver round for node i: persist, send (step the peers directly),
 * apply, advance. Returns true if there was work. */
static bool handle(int i) {
    br_raft *r = nodes[i];
    if (!br_raft_has_ready(r))
        return false;
    struct br_raft_ready rd;
    int rc = br_raft_ready(r, &rd);
    if (rc < 0)
        die("ready", rc);
    if (rd.n_entries && (rc = br_raft_memstorage_append(stores[i], rd.entries, rd.n_entries)) < 0)
        die("append", rc);
    if (rd.has_hard_state)
        br_raft_memstorage_set_hard_state(stores[i], &rd.hard_state);
    for (size_t k = 0; k < rd.n_msgs; k++)
        if ((rc = br_raft_step(nodes[rd.msgs[k].to], &rd.msgs[k])) < 0)
            die("step", rc);
    if (rd.n_committed)
        applied[i] = rd.committed[rd.n_committed - 1].index;
    br_raft_advance(r);
    return true;
}

static void settle(void) {
    bool any = true;
    while (any) {
        any = false;
        for (int i = 1; i <= N; i++)
            any |= handle(i);
    }
}

static void compact(int i) {
    struct br_raft_conf_state conf;
    br_raft_get_conf(nodes[i], &conf);
    uint64_t a = applied[i];
    if (a > br_raft_memstorage_first_index(stores[i]) + 4096) {
        if (br_raft_memstorage_create_snapshot(stores[i], a, &conf) < 0 ||
            br_raft_memstorage_compact(stores[i], a - 1024) < 0)
            die("compact", -1);
    }
}

/* Entry point of `bitraft-bench raft` (argv holds the arguments after it). */
int raft_bench_main(int argc, char **argv);
int raft_bench_main(int argc, char **argv) {
    uint64_t total = argc > 0 ? strtoull(argv[0], NULL, 0) : 2000000;
    uint64_t batch = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000;
    struct br_raft_conf_state conf = {.n_voters = N, .voters = {1, 2, 3}};
    for (int i = 1; i <= N; i++) {
        int rc = br_raft_memstorage_new(&stores[i]);
        if (rc < 0 || (rc = br_raft_memstorage_bootstrap(stores[i], &conf)) < 0)
            die("storage", rc);
        struct br_raft_config c = {.id = (uint64_t)i,
                                   .election_tick = 10,
                                   .heartbeat_tick = 1,
                                   .seed = (uint64_t)i,
                                   .max_inflight = 256,
                                   .max_msg_bytes = 1 << 20,
                                   .storage = br_raft_memstorage_storage(stores[i])};
        if ((rc = br_raft_new(&c, &nodes[i])) < 0)
            die("new", rc);
    }
    br_raft_campaign(nodes[1]);
    settle();
    struct br_raft_status st;
    br_raft_get_status(nodes[1], &st);
    if (st.role != BR_RAFT_LEADER)
        die("election", -1);

    uint8_t payload[100];
    memset(payload, 'v', sizeof(payload));
    uint64_t start = applied[1];
    double t0 = now_s();
    uint64_t proposed = 0;
    while (applied[1] - start < total) {
        for (uint64_t k = 0; k < batch && proposed < total; k++, proposed++) {
            int rc = br_raft_propose(nodes[1], payload, sizeof(payload), NULL, NULL);
            if (rc < 0)
                die("propose", rc);
        }
        settle();
        for (int i = 1; i <= N; i++)
            compact(i);
    }
    double secs = now_s() - t0;
    uint64_t ops = applied[1] - start;
    printf("{\"phase\":\"raft_commit\",\"ops\":%llu,\"seconds\":%.3f,\"ops_per_s\":%.0f}\n",
           (unsigned long long)ops, secs, (double)ops / secs);
    for (int i = 1; i <= N; i++) {
        br_raft_free(nodes[i]);
        br_raft_memstorage_free(stores[i]);
    }
    return 0;
}
