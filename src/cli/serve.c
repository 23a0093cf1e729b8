/*
 * serve.c - bitraft serve: a node serving the HTTP API, standalone or as a
 * member of a replicated cluster.
 *
 * Two argument forms:
 *   bitraft serve [--port P] [--bind ADDR] [--data-dir D] [--sync POLICY] ...
 *                 [--peers 1=H:P,2=H:P,3=H:P [--node-id N] [--raft-port R] ...]
 *   bitraft serve port P data-dir D [distributed false]   (the original's)
 * In the original's form a node is a member of the three-node cluster on
 * 127.0.0.1 ports 4000, 5000, 6000 (ids 1, 2, 3) unless "distributed
 * false" is given. --peers lists the members' client (HTTP) addresses; a
 * member's raft port is its client port + 10000 unless --peer-raft-addrs
 * (or, for this node, --raft-port) says otherwise.
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

#include "bitraft/raft.h"
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
            "Starts a node serving the HTTP API (docs/API.md): standalone, or a cluster member\n"
            "with --peers (or the original's form without 'distributed false').\n"
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
            "Cluster mode:\n"
            "  --peers LIST         the members' client addresses: 1=HOST:PORT,2=HOST:PORT,...\n"
            "                       (ids 1..%d; each raft port is its client port + 10000)\n"
            "  --node-id N          this member (default: the member whose port is --port)\n"
            "  --raft-port P        this node's raft listen port (default --port + 10000)\n"
            "  --peer-raft-addrs L  where to dial members' raft ports instead: 2=HOST:PORT,...\n"
            "  --cluster-token T    shared secret checked when peers connect\n"
            "  --election-ms N      election timeout, random in [N, 2N) (default 150)\n"
            "  --heartbeat-ms N     leader heartbeat interval (default 50)\n"
            "  --snapshot-every N   snapshot and truncate the raft log every N applied entries\n"
            "                       (default 10000)\n"
            "  --snapshot-keep N    entries kept behind a snapshot for slow followers (1000)\n"
            "  --join               a new member of a running cluster: wait to be added\n"
            "                       (bitraft member add on the cluster) instead of starting\n"
            "                       a new cluster; --peers lists the current members and this\n"
            "                       node\n"
            "The original's form 'bitraft serve port 5000 data-dir data5000' is member 2 of\n"
            "1=127.0.0.1:4000,2=127.0.0.1:5000,3=127.0.0.1:6000. In cluster mode --sync is\n"
            "ignored: a write is acknowledged once it is in the raft log (fsynced) of a\n"
            "majority. SIGTERM/SIGINT stop the server cleanly.\n",
            BR_RAFT_MAX_MEMBERS);
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

#define TICK_MS 10

typedef struct member {
    uint64_t id;
    char host[256];
    uint16_t port; /* client (HTTP) port */
    char raft_host[256];
    uint16_t raft_port; /* 0 until known */
    char client_addr[300];
} member;

typedef struct serve_args {
    br_http_options http;
    br_engine_options engine;
    br_service_options service;
    const char *dir;
    int cluster;    /* asked for cluster mode */
    int port_set;   /* --port given */
    int standalone; /* distributed false */
    const char *peers, *peer_raft, *token;
    uint64_t node_id;
    int raft_port; /* -1 = default */
    uint64_t election_ms, heartbeat_ms;
    uint64_t snapshot_every, snapshot_keep; /* 0: the node's defaults */
    int join;                               /* --join */
    member members[BR_RAFT_MAX_MEMBERS];
    size_t n_members;
} serve_args;

/* Parses "HOST:PORT" (the host may be empty: 127.0.0.1). */
static int parse_hostport(const char *s, size_t n, char *host, size_t hostlen, uint16_t *port) {
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon)
        return -1;
    size_t hl = (size_t)(colon - s);
    if (hl >= hostlen)
        return -1;
    const char *ps = colon + 1;
    size_t pl = n - hl - 1;
    if (pl == 0 || pl > 5)
        return -1;
    unsigned long v = 0;
    for (size_t i = 0; i < pl; i++) {
        if (ps[i] < '0' || ps[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(ps[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    if (hl == 0)
        snprintf(host, hostlen, "127.0.0.1");
    else {
        memcpy(host, s, hl);
        host[hl] = 0;
    }
    *port = (uint16_t)v;
    return 0;
}

/* Calls fn(id, "HOST:PORT") for each item of "ID=HOST:PORT,..."; returns
 * -1 with a message on a malformed list. */
static int parse_idlist(const char *flag, const char *list,
                        int (*fn)(serve_args *a, uint64_t id, const char *hp, size_t n),
                        serve_args *a) {
    const char *p = list;
    if (!*p) {
        fprintf(stderr, "bitraft serve: %s is empty\n", flag);
        return -1;
    }
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        uint64_t id = 0;
        int ok = eq && eq > p;
        for (const char *q = p; ok && q < eq; q++) {
            if (*q < '0' || *q > '9' || id > 1000000)
                ok = 0;
            else
                id = id * 10 + (uint64_t)(*q - '0');
        }
        if (!ok || id == 0) {
            fprintf(stderr,
                    "bitraft serve: %s: '%.*s' is not ID=HOST:PORT (ID a number from 1; e.g. "
                    "1=127.0.0.1:4000,2=127.0.0.1:5000,3=127.0.0.1:6000)\n",
                    flag, (int)n, p);
            return -1;
        }
        if (fn(a, id, eq + 1, n - (size_t)(eq + 1 - p))) {
            fprintf(stderr, "bitraft serve: %s: bad entry '%.*s'\n", flag, (int)n, p);
            return -1;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (!*p) {
                fprintf(stderr, "bitraft serve: %s ends with a comma\n", flag);
                return -1;
            }
        }
    }
    return 0;
}

static member *find_member(serve_args *a, uint64_t id) {
    for (size_t i = 0; i < a->n_members; i++)
        if (a->members[i].id == id)
            return &a->members[i];
    return NULL;
}

static int add_peer(serve_args *a, uint64_t id, const char *hp, size_t n) {
    if (find_member(a, id)) {
        fprintf(stderr, "bitraft serve: --peers: member %llu is listed twice\n",
                (unsigned long long)id);
        return -1;
    }
    if (a->n_members == BR_RAFT_MAX_MEMBERS) {
        fprintf(stderr, "bitraft serve: --peers: at most %d members\n", BR_RAFT_MAX_MEMBERS);
        return -1;
    }
    member *m = &a->members[a->n_members];
    memset(m, 0, sizeof *m);
    m->id = id;
    if (parse_hostport(hp, n, m->host, sizeof m->host, &m->port))
        return -1;
    a->n_members++;
    return 0;
}

static int add_raft_addr(serve_args *a, uint64_t id, const char *hp, size_t n) {
    member *m = find_member(a, id);
    if (!m) {
        fprintf(stderr, "bitraft serve: --peer-raft-addrs: %llu is not a member (see --peers)\n",
                (unsigned long long)id);
        return -1;
    }
    return parse_hostport(hp, n, m->raft_host, sizeof m->raft_host, &m->raft_port);
}

/* Builds the member list and checks the cluster flags. Returns 0 or -1
 * (a message printed). */
static int setup_cluster(serve_args *a) {
    if (a->standalone) {
        fprintf(stderr, "bitraft serve: 'distributed false' and --peers contradict each other\n");
        return -1;
    }
    if (!a->peers)
        a->peers = "1=127.0.0.1:4000,2=127.0.0.1:5000,3=127.0.0.1:6000"; /* the original's */
    if (parse_idlist("--peers", a->peers, add_peer, a))
        return -1;
    if (a->peer_raft && parse_idlist("--peer-raft-addrs", a->peer_raft, add_raft_addr, a))
        return -1;
    member *self = NULL;
    if (a->node_id) {
        self = find_member(a, a->node_id);
        if (!self) {
            fprintf(stderr, "bitraft serve: --node-id %llu is not among the members of --peers\n",
                    (unsigned long long)a->node_id);
            return -1;
        }
        if (a->port_set && a->http.port != self->port) {
            fprintf(stderr,
                    "bitraft serve: --port %u but member %llu's address in --peers has port "
                    "%u\n",
                    (unsigned)a->http.port, (unsigned long long)a->node_id, (unsigned)self->port);
            return -1;
        }
    } else {
        for (size_t i = 0; i < a->n_members; i++) {
            if (a->members[i].port != a->http.port)
                continue;
            if (self) {
                fprintf(stderr,
                        "bitraft serve: several members have port %u; say which one this is "
                        "with --node-id\n",
                        (unsigned)a->http.port);
                return -1;
            }
            self = &a->members[i];
        }
        if (!self) {
            fprintf(stderr,
                    "bitraft serve: no member of --peers has port %u; give --node-id or a "
                    "--port listed in --peers\n",
                    (unsigned)a->http.port);
            return -1;
        }
        a->node_id = self->id;
    }
    a->http.port = self->port;
    for (size_t i = 0; i < a->n_members; i++) {
        member *m = &a->members[i];
        char addr[sizeof m->client_addr]; /* not in place: GCC sees host and addr as one object */
        snprintf(addr, sizeof addr, "%s:%u", m->host, (unsigned)m->port);
        memcpy(m->client_addr, addr, sizeof addr);
        if (!m->raft_port) {
            if (m->port > 65535 - 10000 && (m != self || a->raft_port < 0)) {
                fprintf(stderr,
                        "bitraft serve: member %llu's port %u + 10000 is not a port; give its "
                        "raft address with --peer-raft-addrs (or --raft-port)\n",
                        (unsigned long long)m->id, (unsigned)m->port);
                return -1;
            }
            memcpy(m->raft_host, m->host, sizeof m->raft_host);
            m->raft_port = (uint16_t)(m->port + 10000);
        }
    }
    if (a->raft_port >= 0)
        self->raft_port = (uint16_t)a->raft_port;
    if (a->heartbeat_ms >= a->election_ms) {
        fprintf(stderr, "bitraft serve: --heartbeat-ms (%llu) must be below --election-ms (%llu)\n",
                (unsigned long long)a->heartbeat_ms, (unsigned long long)a->election_ms);
        return -1;
    }
    return 0;
}

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
        if (strcmp(f, "--join") == 0) {
            a->join = 1;
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
            a->port_set = 1;
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
            a->peers = v;
        } else if (strcmp(name, "peer-raft-addrs") == 0) {
            a->peer_raft = v;
        } else if (strcmp(name, "cluster-token") == 0) {
            a->token = v;
        } else if (strcmp(name, "node-id") == 0) {
            if (parse_size(v, &n) || n < 1 || n > 1000000 || strpbrk(v, "KkMmGg"))
                return bad(f, v, "a member id (a number from 1)");
            a->node_id = n;
        } else if (strcmp(name, "raft-port") == 0) {
            if (parse_size(v, &n) || n > 65535 || strpbrk(v, "KkMmGg"))
                return bad(f, v, "a port number 0..65535");
            a->raft_port = (int)n;
        } else if (strcmp(name, "election-ms") == 0) {
            if (parse_size(v, &n) || n < 2 * TICK_MS || n > 60000 || strpbrk(v, "KkMmGg"))
                return bad(f, v, "20..60000 milliseconds");
            a->election_ms = n;
        } else if (strcmp(name, "snapshot-every") == 0) {
            if (parse_size(v, &n) || n < 1)
                return bad(f, v, "a number of entries (at least 1)");
            a->snapshot_every = n;
        } else if (strcmp(name, "snapshot-keep") == 0) {
            if (parse_size(v, &n) || n < 1)
                return bad(f, v, "a number of entries (at least 1)");
            a->snapshot_keep = n;
        } else if (strcmp(name, "heartbeat-ms") == 0) {
            if (parse_size(v, &n) || n < TICK_MS || n > 30000 || strpbrk(v, "KkMmGg"))
                return bad(f, v, "10..30000 milliseconds");
            a->heartbeat_ms = n;
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
    a->standalone = distributed == 0;
    if ((a->node_id || a->peer_raft || a->token || a->raft_port >= 0 || a->join) && !a->cluster) {
        fprintf(stderr, "bitraft serve: --node-id, --raft-port, --peer-raft-addrs, "
                        "--cluster-token and --join need --peers\n");
        return -1;
    }
    if (a->cluster && setup_cluster(a))
        return -1;
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
    a.raft_port = -1;
    a.election_ms = 150;
    a.heartbeat_ms = 50;
    int p = parse_serve(argc, argv, &a);
    if (p) {
        serve_usage(p > 0 ? stdout : stderr);
        return p > 0 ? 0 : EXIT_USAGE;
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
    int rc;
    if (a.cluster) {
        br_service_member ms[BR_RAFT_MAX_MEMBERS];
        for (size_t i = 0; i < a.n_members; i++) {
            ms[i].id = a.members[i].id;
            ms[i].host = a.members[i].raft_host;
            ms[i].raft_port = a.members[i].raft_port;
            ms[i].client_addr = a.members[i].client_addr;
        }
        br_service_cluster_options co;
        br_service_cluster_options_init(&co);
        co.id = a.node_id;
        co.members = ms;
        co.n_members = a.n_members;
        co.listen_host = a.http.bind;
        co.listen_port = -1;
        co.token = a.token;
        co.tick_ms = TICK_MS;
        co.election_ticks = (uint32_t)(a.election_ms / TICK_MS);
        co.heartbeat_ticks = (uint32_t)(a.heartbeat_ms / TICK_MS);
        if (co.heartbeat_ticks >= co.election_ticks)
            co.heartbeat_ticks = co.election_ticks - 1;
        co.snapshot_every = a.snapshot_every;
        co.snapshot_keep = a.snapshot_keep;
        co.join = a.join;
        co.log = log_stderr;
        co.log_level = (br_log_level)log_level;
        rc = br_service_open_replicated(a.dir, &a.engine, &a.service, &co, &svc, err, sizeof err);
    } else {
        rc = br_service_open_standalone(a.dir, &a.engine, &a.service, &svc, err, sizeof err);
    }
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
    char msg[512], mode[128] = "standalone";
    if (a.cluster) {
        member *self = find_member(&a, a.node_id);
        snprintf(mode, sizeof mode, "cluster node %llu of %zu, raft port %u",
                 (unsigned long long)a.node_id, a.n_members, self ? (unsigned)self->raft_port : 0);
    }
    snprintf(msg, sizeof msg, "serving http://%s:%u/ (%s, %s keys, data in %s, pid %ld)",
             a.http.bind, (unsigned)br_http_port(h), mode, a.http.int_keys ? "integer" : "byte",
             a.dir, (long)getpid());
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
