/*
 * serve.c - bitraft serve: a standalone node serving the HTTP API.
 *
 * Two argument forms:
 *   bitraft serve [--port P] [--bind ADDR] [--data-dir D] [--sync POLICY] ...
 *   bitraft serve port P data-dir D distributed false     (the original's)
 * In the original's form a node is a cluster member unless "distributed
 * false" is given; cluster mode is not built yet, so that is refused.
 *
 * Shutdown: SIGTERM or SIGINT stops accepting connections, lets requests in
 * flight finish (every accepted write completes), closes the engine (which
 * syncs) and exits 0. The signals are blocked in every thread and taken by
 * sigwait() in the main thread, so no handler runs inside a library call.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitraft/service.h"
#include "cli.h"
#include "server.h"

#define VERSION "0.1.0"

static int log_level = BR_LOG_INFO;

/* The engine's clock for its open progress lines (it reads none itself). */
static uint64_t clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void log_stderr(void *ctx, br_log_level lvl, const char *msg) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)ctx;
    if ((int)lvl <= log_level)
        fprintf(stderr, "bitraft: %s: %s\n", names[lvl], msg);
}

static void serve_usage(FILE *to) {
    fprintf(to,
            "usage: bitraft serve [flags]\n"
            "       bitraft serve port P data-dir D distributed false   (the original's form)\n"
            "Starts a standalone node serving the HTTP API (docs/API.md).\n"
            "  --port P             TCP port (default 4000; 0 picks a free one)\n"
            "  --bind ADDR          IPv4 address to listen on (default 127.0.0.1)\n"
            "  --data-dir D         data directory (default ./data)\n"
            "  --sync POLICY        always (default: a write is acknowledged after fdatasync),\n"
            "                       interval (every --sync-interval-ms) or never\n"
            "  --sync-interval-ms N for --sync interval (default 1000)\n"
            "  --max-file-size N    roll data files over past N bytes (K, M, G suffixes)\n"
            "  --max-key-size N     longest key accepted (default 64K)\n"
            "  --max-value-size N   largest value accepted (default 64M)\n"
            "  --max-batch-size N   largest batch body accepted (default 64M)\n"
            "  --threads N          HTTP threads (default: the number of cores)\n"
            "  --write-threads N    threads running writes (default 32)\n"
            "  --connections N      open connections at most (default 1024)\n"
            "  --timeout S          idle connection timeout in seconds (default 60)\n"
            "  --log-level L        error, warn, info (default) or debug (one line per request)\n"
            "  --compact-dead-pct N merge closed data files at least N%% dead in the background\n"
            "                       (default 50; 0: only POST /admin/compact)\n"
            "  --compact-rate N     compaction I/O per second (default 64M; 0: unlimited)\n"
            "  --int-keys           create a new directory in integer-key mode: keys are\n"
            "                       decimal numbers and ranges are numeric (the original's\n"
            "                       keys; the default in the original's argument form). A\n"
            "                       directory keeps the mode it was created with.\n"
            "Cluster mode (--peers, the original's form without 'distributed false') is not\n"
            "built yet. SIGTERM/SIGINT stop the server cleanly.\n");
}

/* Parses a size with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    if (*end || (shift && v > (~0ULL >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

typedef struct serve_args {
    br_http_options http;
    br_engine_options engine;
    br_service_options service;
    const char *dir;
    int cluster; /* asked for cluster mode */
} serve_args;

static int bad(const char *flag, const char *v, const char *want) {
    fprintf(stderr, "bitraft serve: %s wants %s, got '%s'\n", flag, want, v);
    return -1;
}

/* Parses both argument forms. Returns 0, 1 for --help, -1 for bad usage. */
static int parse_serve(int argc, char **argv, serve_args *a) {
    int original = 0, distributed = -1;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0)
            return 1;
        if (strcmp(f, "--int-keys") == 0) {
            a->service.int_keys = 1;
            continue;
        }
        int flag = f[0] == '-' && f[1] == '-';
        if (!flag)
            original = 1;
        if (i + 1 >= argc) {
            fprintf(stderr, "bitraft serve: %s needs a value\n", f);
            return -1;
        }
        const char *v = argv[++i];
        const char *name = flag ? f + 2 : f;
        uint64_t n;
        if (strcmp(name, "port") == 0) {
            if (parse_size(v, &n) || n > 65535 || strpbrk(v, "KkMmGg"))
                return bad(f, v, "a port number 0..65535");
            a->http.port = (uint16_t)n;
        } else if (strcmp(name, "data-dir") == 0) {
            a->dir = v;
        } else if (strcmp(name, "distributed") == 0 && !flag) {
            if (strcmp(v, "true") == 0)
                distributed = 1;
            else if (strcmp(v, "false") == 0)
                distributed = 0;
            else
                return bad(f, v, "true or false");
        } else if (!flag) {
            fprintf(stderr,
                    "bitraft serve: unknown argument '%s' (the original's form takes "
                    "port, data-dir and distributed)\n",
                    f);
            return -1;
        } else if (strcmp(name, "bind") == 0) {
            a->http.bind = v;
        } else if (strcmp(name, "peers") == 0) {
            a->cluster = 1;
        } else if (strcmp(name, "sync") == 0) {
            if (strcmp(v, "always") == 0)
                a->engine.sync = BR_SYNC_ALWAYS;
            else if (strcmp(v, "interval") == 0)
                a->engine.sync = BR_SYNC_INTERVAL;
            else if (strcmp(v, "never") == 0)
                a->engine.sync = BR_SYNC_NEVER;
            else
                return bad(f, v, "always, interval or never");
        } else if (strcmp(name, "sync-interval-ms") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 3600000)
                return bad(f, v, "1..3600000");
            a->engine.sync_interval_ms = (uint32_t)n;
        } else if (strcmp(name, "max-file-size") == 0) {
            if (parse_size(v, &n) || n < 4096 || n > (2ULL << 30))
                return bad(f, v, "a size from 4K to 2G");
            a->engine.max_file_size = n;
        } else if (strcmp(name, "max-key-size") == 0) {
            if (parse_size(v, &n) || n < 1 || n > (64ULL << 10))
                return bad(f, v, "a size from 1 to 64K");
            a->engine.max_key_size = (uint32_t)n;
            a->http.max_key_size = (size_t)n;
        } else if (strcmp(name, "max-value-size") == 0) {
            if (parse_size(v, &n) || n > (1ULL << 30))
                return bad(f, v, "a size up to 1G");
            a->engine.max_value_size = (uint32_t)n;
            a->http.max_value_size = (size_t)n;
        } else if (strcmp(name, "max-batch-size") == 0) {
            if (parse_size(v, &n) || n < 1 || n > (1ULL << 30))
                return bad(f, v, "a size from 1 to 1G");
            a->http.max_batch_size = (size_t)n;
        } else if (strcmp(name, "compact-dead-pct") == 0) {
            if (parse_size(v, &n) || n > 100)
                return bad(f, v, "0..100");
            a->engine.compact_dead_pct = (uint32_t)n;
        } else if (strcmp(name, "compact-rate") == 0) {
            if (parse_size(v, &n))
                return bad(f, v, "a size per second (K, M, G suffixes), 0 for unlimited");
            a->engine.compact_rate = n;
        } else if (strcmp(name, "threads") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 256)
                return bad(f, v, "1..256");
            a->http.threads = (unsigned)n;
        } else if (strcmp(name, "write-threads") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 1024)
                return bad(f, v, "1..1024");
            a->service.write_threads = (unsigned)n;
        } else if (strcmp(name, "connections") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 65536)
                return bad(f, v, "1..65536");
            a->http.conn_limit = (unsigned)n;
        } else if (strcmp(name, "timeout") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 86400)
                return bad(f, v, "1..86400 seconds");
            a->http.timeout_s = (unsigned)n;
        } else if (strcmp(name, "log-level") == 0) {
            static const char *const lv[] = {"error", "warn", "info", "debug"};
            int found = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(v, lv[k]) == 0)
                    found = k;
            if (found < 0)
                return bad(f, v, "error, warn, info or debug");
            log_level = found;
            a->http.verbose = found == BR_LOG_DEBUG;
        } else {
            fprintf(stderr, "bitraft serve: unknown option %s\n", f);
            return -1;
        }
    }
    /* The original: a node is distributed unless told otherwise, and its
     * keys are integers (a new directory is created in integer-key mode). */
    if (distributed == 1 || (original && distributed != 0))
        a->cluster = 1;
    if (original && !a->service.int_keys)
        a->service.int_keys = 2; /* a new directory only */
    return 0;
}

int cmd_serve(int argc, char **argv) {
    serve_args a;
    memset(&a, 0, sizeof a);
    br_http_options_init(&a.http);
    br_engine_options_init(&a.engine);
    br_service_options_init(&a.service);
    a.dir = "data";
    a.http.version = VERSION;
    int p = parse_serve(argc, argv, &a);
    if (p) {
        serve_usage(p > 0 ? stdout : stderr);
        return p > 0 ? 0 : EXIT_USAGE;
    }
    if (a.cluster) {
        fprintf(stderr, "bitraft serve: cluster mode is not built yet; run a standalone node "
                        "with 'bitraft serve' (or the original's form with 'distributed "
                        "false')\n");
        return EXIT_USAGE;
    }
    /* Under interval or never a write waits for no flush: run it on the
     * HTTP thread rather than hop to the write pool and back. */
    a.service.inline_writes = 1;
    a.engine.log = log_stderr;
    a.engine.clock_ms = clock_ms;
    a.http.log = log_stderr;

    /* Block the stop signals before any thread starts: every thread
     * inherits the mask, and the main thread takes them with sigwait(). */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    br_service *svc;
    char err[512] = "";
    int rc = br_service_open_standalone(a.dir, &a.engine, &a.service, &svc, err, sizeof err);
    if (rc) {
        if (rc == BR_ELOCKED)
            fprintf(stderr,
                    "bitraft serve: %s is in use by another bitraft process (its LOCK is "
                    "held); stop that one or choose another --data-dir\n",
                    a.dir);
        else
            fprintf(stderr, "bitraft serve: cannot open %s: %s\n", a.dir,
                    err[0] ? err : br_strerror(rc));
        return EXIT_STORE;
    }
    a.http.int_keys = br_service_key_mode(svc) == BR_KEYS_INT;
    br_http *h;
    rc = br_http_start(svc, &a.http, &h, err, sizeof err);
    if (rc) {
        fprintf(stderr, "bitraft serve: %s\n", err);
        br_service_close(svc);
        return EXIT_STORE;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "serving http://%s:%u/ (standalone, %s keys, data in %s, pid %ld)",
             a.http.bind, (unsigned)br_http_port(h), a.http.int_keys ? "integer" : "byte", a.dir,
             (long)getpid());
    if (log_level >= BR_LOG_INFO)
        fprintf(stderr, "bitraft: info: %s\n", msg);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    if (log_level >= BR_LOG_INFO)
        fprintf(stderr, "bitraft: info: %s: stopping (finishing requests in flight)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    unsigned left = br_http_stop(h, 10000);
    if (left)
        fprintf(stderr, "bitraft: warn: %u requests were still in flight after 10 s\n", left);
    rc = br_service_close(svc);
    if (rc) {
        fprintf(stderr, "bitraft serve: closing the store: %s\n", br_strerror(rc));
        return EXIT_STORE;
    }
    if (log_level >= BR_LOG_INFO)
        fprintf(stderr, "bitraft: info: stopped\n");
    return 0;
}
