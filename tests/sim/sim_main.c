/*
 * sim_main.c - bitraft-raft-sim: plays random fault schedules against a
 * simulated cluster and stops at the first safety or liveness violation.
 *
 *   bitraft-raft-sim [--schedules N] [--seed S] [--base B] [--trace]
 *
 * Environment: BR_SIM_SCHEDULES (default 2000; 100000 with BR_TEST_LONG=1),
 * BR_SIM_SEED=<seed> replays exactly one schedule (add BR_SIM_TRACE=1 for a
 * trace of every event). Schedules use seeds B, B+1, ... (B = 1 unless
 * --base or BR_SIM_BASE says otherwise).
 */
#include "sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t env_u64(const char *name, uint64_t def) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : def;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    uint64_t n = env_u64("BR_SIM_SCHEDULES", env_u64("BR_TEST_LONG", 0) ? 100000 : 2000);
    uint64_t base = env_u64("BR_SIM_BASE", 1);
    bool one = getenv("BR_SIM_SEED") && *getenv("BR_SIM_SEED");
    uint64_t seed = env_u64("BR_SIM_SEED", 0);
    bool trace = env_u64("BR_SIM_TRACE", 0) != 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--schedules") && i + 1 < argc) {
            n = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            one = true;
            seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--base") && i + 1 < argc) {
            base = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--trace")) {
            trace = true;
        } else {
            fprintf(stderr, "usage: %s [--schedules N] [--seed S] [--base B] [--trace]\n", argv[0]);
            return 2;
        }
    }
    char err[1024];
    double t0 = now_s();
    if (one) {
        if (sim_run_schedule(seed, trace, err, sizeof(err)) != 0) {
            printf("FAIL %s\n", err);
            return 1;
        }
        printf("seed %" PRIu64 ": ok\n", seed);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (sim_run_schedule(base + i, false, err, sizeof(err)) != 0) {
            printf("FAIL %s\nreproduce: BR_SIM_SEED=%" PRIu64 " BR_SIM_TRACE=1 %s\n", err, base + i,
                   argv[0]);
            return 1;
        }
    }
    struct sim_stats st;
    sim_stats_get(&st);
    printf("%" PRIu64 " schedules (seeds %" PRIu64 "..%" PRIu64 ") passed in %.1f s\n", n, base,
           base + n - 1, now_s() - t0);
    printf("exercised: %" PRIu64 " messages, %" PRIu64 " leaders elected, %" PRIu64
           " crashes, %" PRIu64 " entries applied, %" PRIu64 " membership changes applied, %" PRIu64
           " snapshots sent, %" PRIu64 " reads checked, %" PRIu64 " refused (non-members)\n",
           st.messages, st.elections, st.crashes, st.applied, st.conf_changes, st.snapshots,
           st.reads, st.reads_refused);
    return 0;
}
