/*
 * check.c - bitraft check: verifies a data directory offline.
 *
 *   bitraft check [--data-dir D]
 *
 * Opens the store read-only (no server may hold it), reads every record of
 * every data file, compares each hint file with its data file, prints each
 * file's size and live/dead bytes, and reports every problem on stderr.
 * Changes nothing on disk. Exit: 0 clean, 1 problems found, 2 usage,
 * 3 the store cannot be opened.
 */
#include <stdio.h>
#include <string.h>

#include "bitraft/engine.h"
#include "cli.h"

static void log_problem(void *ctx, br_log_level lvl, const char *msg) {
    (void)ctx;
    if (lvl <= BR_LOG_WARN)
        fprintf(stderr, "bitraft check: %s\n", msg);
}

static void print_file(void *ctx, const br_file_stats *fs) {
    (void)ctx;
    double total = (double)(fs->live_bytes + fs->dead_bytes);
    printf("%010u.data %12llu %12llu %12llu %5.1f%%%s\n", fs->id, (unsigned long long)fs->size,
           (unsigned long long)fs->live_bytes, (unsigned long long)fs->dead_bytes,
           total > 0 ? 100.0 * (double)fs->dead_bytes / total : 0.0,
           fs->active   ? "  (active)"
           : fs->merged ? "  (merge output)"
                        : "");
}

int cmd_check(int argc, char **argv) {
    const char *dir = "data";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr, "usage: bitraft check [--data-dir D]\n");
            return EXIT_USAGE;
        }
    }
    br_engine_options o;
    br_engine_options_init(&o);
    o.read_only = 1;
    o.verify = 1;
    o.repair = 1; /* go on past damage, to report all of it (nothing is written) */
    o.range_readers = 0;
    o.log = log_problem;
    br_engine *e;
    char err[512] = "";
    int rc = br_engine_open(dir, &o, &e, err, sizeof err);
    if (rc) {
        fprintf(stderr, "bitraft check: cannot open %s: %s\n", dir, err[0] ? err : br_strerror(rc));
        return EXIT_STORE;
    }
    printf("%-15s %12s %12s %12s %6s\n", "file", "bytes", "live", "dead", "dead%");
    br_engine_file_stats(e, print_file, NULL);
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    printf("%llu keys, %llu data files, %llu bytes live, %llu dead: %llu problem%s\n",
           (unsigned long long)st.keys, (unsigned long long)st.data_files,
           (unsigned long long)st.live_bytes, (unsigned long long)st.dead_bytes,
           (unsigned long long)st.problems, st.problems == 1 ? "" : "s");
    br_engine_close(e);
    return st.problems ? 1 : 0;
}
