/*
 * local.c - bitraft demo and bitraft local ...: the storage engine driven
 * directly on a data directory, without a server.
 *
 *   bitraft demo [--data-dir D]              a short tour of the engine
 *   bitraft local put  KEY [VALUE]   [--data-dir D] [--sync always|interval|never]
 *   bitraft local get  KEY           [--data-dir D]
 *   bitraft local del  KEY           [--data-dir D]
 *   bitraft local range [START [END]] [--limit N] [--data-dir D]
 *   bitraft local stats              [--data-dir D]
 *
 * VALUE defaults to standard input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/engine.h"
#include "cli.h"

static void log_stderr(void *ctx, br_log_level lvl, const char *msg) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    int *verbose = ctx;
    if ((int)lvl <= BR_LOG_WARN || *verbose)
        fprintf(stderr, "bitraft: %s: %s\n", names[lvl], msg);
}

typedef struct args {
    const char *dir;
    const char *pos[3];
    int npos;
    size_t limit;
    br_sync_policy sync;
    int verbose;
} args;

/* Parses flags and up to three positional arguments. Returns 0 or -1. */
static int parse(int argc, char **argv, args *a) {
    a->dir = "data";
    a->sync = BR_SYNC_ALWAYS;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--data-dir") == 0 && i + 1 < argc) {
            a->dir = argv[++i];
        } else if (strcmp(s, "--limit") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || argv[i][0] == '-') {
                fprintf(stderr, "bitraft: --limit wants a number, got '%s'\n", argv[i]);
                return -1;
            }
            a->limit = (size_t)v;
        } else if (strcmp(s, "--sync") == 0 && i + 1 < argc) {
            const char *p = argv[++i];
            if (strcmp(p, "always") == 0)
                a->sync = BR_SYNC_ALWAYS;
            else if (strcmp(p, "interval") == 0)
                a->sync = BR_SYNC_INTERVAL;
            else if (strcmp(p, "never") == 0)
                a->sync = BR_SYNC_NEVER;
            else {
                fprintf(stderr, "bitraft: --sync wants always, interval or never\n");
                return -1;
            }
        } else if (strcmp(s, "-v") == 0 || strcmp(s, "--verbose") == 0) {
            a->verbose = 1;
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "bitraft: unknown option %s\n", s);
            return -1;
        } else if (a->npos < 3) {
            a->pos[a->npos++] = s;
        } else {
            fprintf(stderr, "bitraft: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

static br_engine *open_store(args *a) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.sync = a->sync;
    o.log = log_stderr;
    o.log_ctx = &a->verbose;
    br_engine *e;
    char err[512] = "";
    int rc = br_engine_open(a->dir, &o, &e, err, sizeof err);
    if (rc) {
        fprintf(stderr, "bitraft: cannot open %s: %s\n", a->dir, err[0] ? err : br_strerror(rc));
        return NULL;
    }
    return e;
}

/* Reads all of standard input into a malloc'd buffer. */
char *cli_read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
    }
    *len = n;
    return buf;
}

void cli_print_escaped(const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
            putchar(s[i]);
        else
            printf("\\x%02x", s[i]);
    }
}

static int print_entry(void *ctx, const void *k, size_t kl, const void *v, size_t vl) {
    (void)ctx;
    cli_print_escaped(k, kl);
    putchar('\t');
    cli_print_escaped(v, vl);
    putchar('\n');
    return 0;
}

static void print_stats(br_engine *e) {
    br_engine_stats st;
    br_engine_stats_get(e, &st);
    printf("{\"keys\":%llu,\"data_files\":%llu,\"disk_bytes\":%llu,\"live_bytes\":%llu,"
           "\"dead_bytes\":%llu,\"index_bytes\":%llu,\"last_seq\":%llu}\n",
           (unsigned long long)st.keys, (unsigned long long)st.data_files,
           (unsigned long long)st.disk_bytes, (unsigned long long)st.live_bytes,
           (unsigned long long)st.dead_bytes, (unsigned long long)st.index_bytes,
           (unsigned long long)st.last_seq);
}

static int store_error(const char *what, int rc) {
    fprintf(stderr, "bitraft: %s: %s\n", what, br_strerror(rc));
    return rc == BR_ENOTFOUND                                                   ? EXIT_NOTFOUND
           : (rc == BR_EEMPTYKEY || rc == BR_EKEYTOOBIG || rc == BR_EVALTOOBIG) ? EXIT_USAGE
                                                                                : EXIT_STORE;
}

int cmd_local(int argc, char **argv) {
    args a = {0};
    if (argc < 1 || parse(argc - 1, argv + 1, &a) != 0) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[0];
    int need = strcmp(cmd, "put") == 0   ? 1
               : strcmp(cmd, "get") == 0 ? 1
               : strcmp(cmd, "del") == 0 ? 1
                                         : 0;
    if (strcmp(cmd, "put") && strcmp(cmd, "get") && strcmp(cmd, "del") && strcmp(cmd, "range") &&
        strcmp(cmd, "stats")) {
        fprintf(stderr, "bitraft: unknown command local %s\n", cmd);
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    if (a.npos < need || (strcmp(cmd, "put") != 0 && strcmp(cmd, "range") != 0 && a.npos > need)) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    br_engine *e = open_store(&a);
    if (!e)
        return EXIT_STORE;
    int code = 0, rc = 0;
    if (strcmp(cmd, "put") == 0) {
        size_t vl;
        char *val = NULL;
        const char *v = a.npos >= 2 ? a.pos[1] : (val = cli_read_stdin(&vl));
        if (!v) {
            fprintf(stderr, "bitraft: cannot read the value from standard input\n");
            code = EXIT_STORE;
        } else {
            if (a.npos >= 2)
                vl = strlen(v);
            rc = br_engine_put(e, a.pos[0], strlen(a.pos[0]), v, vl);
            if (rc)
                code = store_error("put", rc);
        }
        free(val);
    } else if (strcmp(cmd, "get") == 0) {
        void *v;
        size_t vl;
        rc = br_engine_get(e, a.pos[0], strlen(a.pos[0]), &v, &vl);
        if (rc) {
            code = store_error("get", rc);
        } else {
            fwrite(v, 1, vl, stdout);
            free(v);
        }
    } else if (strcmp(cmd, "del") == 0) {
        rc = br_engine_delete(e, a.pos[0], strlen(a.pos[0]));
        if (rc)
            code = store_error("del", rc);
    } else if (strcmp(cmd, "range") == 0) {
        const char *s = a.npos >= 1 ? a.pos[0] : NULL, *en = a.npos >= 2 ? a.pos[1] : NULL;
        rc = br_engine_range(e, s, s ? strlen(s) : 0, en, en ? strlen(en) : 0, a.limit, print_entry,
                             NULL);
        if (rc)
            code = store_error("range", rc);
    } else {
        print_stats(e);
    }
    rc = br_engine_close(e);
    if (rc && !code)
        code = store_error("close", rc);
    return code;
}

int cmd_demo(int argc, char **argv) {
    args a = {0};
    if (parse(argc, argv, &a) != 0 || a.npos) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    a.verbose = 1;
    printf("bitraft engine demo on %s/\n\n", a.dir);
    br_engine *e = open_store(&a);
    if (!e)
        return EXIT_STORE;
    char k[32], v[64];
    for (int i = 1; i <= 10; i++) {
        snprintf(k, sizeof k, "demo:%02d", i);
        snprintf(v, sizeof v, "value %d", i * 100);
        int rc = br_engine_put(e, k, strlen(k), v, strlen(v));
        if (rc) {
            br_engine_close(e);
            return store_error("put", rc);
        }
    }
    printf("put demo:01 .. demo:10 (each acknowledged after fdatasync)\n");
    br_engine_delete(e, "demo:05", 7);
    printf("deleted demo:05\n\nrange demo:03 .. demo:07 (end inclusive):\n");
    br_engine_range(e, "demo:03", 7, "demo:07", 7, 0, print_entry, NULL);
    printf("\nstats: ");
    print_stats(e);
    br_engine_close(e);
    printf("\nTry: build/bitraft local get demo:03 --data-dir %s\n"
           "or:  build/bitraft serve --data-dir %s   (then curl localhost:4000)\n",
           a.dir, a.dir);
    return 0;
}
