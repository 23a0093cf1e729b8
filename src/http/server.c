/*
 * server.c - the HTTP API on h2o's libuv binding (docs/API.md).
 *
 * Threads and request life cycle
 * ------------------------------
 * The server runs `threads` libuv loops, each with its own h2o context.
 * Loop 0 also accepts: it hands each new connection to the loops in turn
 * (an accept loop of its own, not the kernel's, keeps a burst of
 * connections from landing on one thread). h2o parses a request, reads its
 * whole body (up to the largest body any route takes) and calls on_req on
 * the connection's loop, which classifies, validates and calls the
 * service. Reads that complete inline and writes the service completes
 * inline are answered at once. Otherwise the request waits: the
 * service's completion (on a service thread) stores the result and posts
 * the request to its loop's queue, waking the loop once per batch
 * (uv_async); the loop answers. Nothing else is done per request on the
 * way back: no suspension or resumption of the connection (libmicrohttpd's
 * cost, docs/API.md "Threads").
 *
 * Raw paths and query strings: the server decodes keys itself, strictly (a
 * bad %-escape is a 400) and binary-safely (%00 is a key byte).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <h2o.h>
#include <pthread.h>
#include <sys/socket.h>
#include <uv.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"

/* ---- Routes and metrics -------------------------------------------------- */

#define ROUTES(X)                                                                                  \
    X(root_usage)                                                                                  \
    X(root_get)                                                                                    \
    X(root_range)                                                                                  \
    X(root_post)                                                                                   \
    X(root_delete)                                                                                 \
    X(kv_get)                                                                                      \
    X(kv_put)                                                                                      \
    X(kv_delete)                                                                                   \
    X(kv_range)                                                                                    \
    X(kv_batch)                                                                                    \
    X(health)                                                                                      \
    X(status)                                                                                      \
    X(metrics)                                                                                     \
    X(admin_compact)                                                                               \
    X(admin_members)                                                                               \
    X(admin_member_add)                                                                            \
    X(admin_member_remove)                                                                         \
    X(bad_method)                                                                                  \
    X(not_found)

#define ROUTE_ENUM(n) R_##n,
enum route { ROUTES(ROUTE_ENUM) NROUTES };
#undef ROUTE_ENUM
#define ROUTE_NAME(n) #n,
static const char *const route_names[] = {ROUTES(ROUTE_NAME)};
#undef ROUTE_NAME

static const unsigned codes[] = {200, 202, 204, 307, 400, 404,
                                 405, 409, 413, 500, 503, 0 /* other */};
#define NCODES (sizeof codes / sizeof codes[0])

/* Latency buckets, seconds (upper bounds; the last is +Inf). */
static const double buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
#define NBUCKETS (sizeof buckets / sizeof buckets[0] + 1)

typedef struct req req;
typedef struct loop_ctx loop_ctx;

/* An accepted connection (h2o owns it once it has its socket). */
typedef struct conn {
    uv_tcp_t tcp; /* first: h2o's close callback gets its address */
    loop_ctx *lc;
    struct conn *prev, *next;
} conn;

/* One HTTP thread: a libuv loop with its h2o context. */
struct loop_ctx {
    br_http *h;
    pthread_t thread;
    int started;
    uv_loop_t loop;
    uv_async_t wake;         /* posted requests, new connections, stop */
    uv_poll_t accept_poll;   /* loop 0: the listening socket */
    uv_timer_t accept_pause; /* loop 0: accepting again after running out of fds */
    int accepting;
    int starved; /* accept ran out of descriptors (logged once until one succeeds) */
    h2o_context_t ctx;
    h2o_accept_ctx_t actx;
    conn *conns; /* open connections (this loop) */
    int closing; /* shutdown begun (this loop) */
    pthread_mutex_t mu;
    req *done_head, *done_tail; /* (mu) requests whose service call completed */
    int *new_fds;               /* (mu) accepted sockets to adopt */
    size_t n_new, cap_new;      /* (mu) */
    int stop_accept, shutdown;  /* (mu) requests from br_http_stop */
};

/* The handler h2o calls for every path. */
typedef struct handler_t {
    h2o_handler_t super;
    br_http *h;
} handler_t;

struct br_http {
    br_service *svc;
    br_http_options o;
    h2o_globalconf_t config;
    int listen_fd;
    loop_ctx *loops;
    unsigned n_loops;
    unsigned next_loop;     /* (loop 0) where the next connection goes */
    atomic_uint n_conns;    /* open connections */
    atomic_int accept_done; /* loop 0 stopped accepting */
    struct timespec started;
    atomic_uint active;    /* requests between their first call and completion */
    atomic_int stopping;   /* set by br_http_stop: new writes get 503 */
    atomic_int submitting; /* handlers between their stopping check and submit */
    atomic_int waiting;    /* requests in P_WAITING (their answer not yet posted back) */
    atomic_uint port;      /* the port bound */
    atomic_ullong requests[NROUTES][NCODES];
    atomic_ullong lat[NBUCKETS];
    atomic_ullong lat_sum_ns, lat_count;
    atomic_ullong abandoned; /* requests whose client went away before the answer was sent */
};

/* ---- Per-request state --------------------------------------------------- */

typedef enum phase {
    P_NEW,     /* headers seen, body (if any) arriving */
    P_WAITING, /* a write or read is with the service; its completion posts it back */
    P_DONE,    /* the reply is queued */
} phase;

/* What a request in P_WAITING waits for. */
typedef enum pending { PEND_WRITE, PEND_GET, PEND_RANGE } pending;

struct req {
    br_http *h;
    h2o_req_t *hreq;   /* NULL once h2o disposed of the request (client gone) */
    loop_ctx *lc;      /* the loop that answers */
    req *next_done;    /* in lc's queue of completed requests */
    char *path;        /* the raw path, without the query (malloc'd) */
    const char *query; /* the raw query string after '?' (h2o's memory), or "" */
    size_t query_len;
    enum route route;
    phase phase;
    int gone; /* h2o disposed of the request while it waited (P_WAITING) */
    struct timespec t0;
    br_buf body;
    size_t cap;        /* largest body accepted */
    int too_large;     /* the body went past cap; the rest was discarded */
    unsigned status;   /* status replied, for the metrics */
    const char *allow; /* the methods the path takes (static) */
    unsigned rflags;   /* read flags (BR_SERVICE_STALE) */
    pending pend;      /* what P_WAITING waits for */
    int accepted;      /* the service accepted the request (its callback will run) */
    /* What a write keeps alive until its completion. */
    char *key;
    size_t klen;
    br_service_batch *batch;
    int nops;
    int inline_write; /* the service completes writes before returning */
    atomic_int rc;    /* the completion's result */
    /* An asynchronous range's result (set before the connection resumes). */
    br_service_iter *it;
    int ndjson;          /* a range's format */
    const char *rs, *re; /* a range's bounds while it is submitted (the service copies them) */
    size_t rsl, rel;
    size_t limit; /* a range's limit (0 none) */
    /* A membership change (the strings are malloc'd). */
    br_service_member member;
    int learner;
};

static void logf_(br_http *h, br_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(br_http *h, br_log_level lvl, const char *fmt, ...) {
    if (!h->o.log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->o.log(h->o.log_ctx, lvl, msg);
}

/* ---- Replies ------------------------------------------------------------- */

#define NO_LEADER_MSG                                                                              \
    "no leader known (an election is in progress or there is no quorum); retry shortly\n"

static const char *reason(unsigned status) {
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 307:
        return "Temporary Redirect";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Adds a response header (name and value copied into the request's pool). */
static void add_header(req *r, const char *name, const char *value) {
    h2o_req_t *q = r->hreq;
    h2o_iovec_t v = h2o_strdup(&q->pool, value, strlen(value));
    h2o_add_header_by_str(&q->pool, &q->res.headers, name, strlen(name), 1, NULL, v.base, v.len);
}

static void free_slot(void *p) {
    free(*(void **)p);
}

/*
 * Sends the whole reply: status, Content-Type (if ctype) and body. The
 * body is either copied (owned 0) or a malloc'd buffer the request's pool
 * frees after it has been written (owned 1). Returns 0.
 */
static int send_reply(req *r, unsigned status, const void *body, size_t len, int owned,
                      const char *ctype) {
    static h2o_generator_t done_gen = {NULL, NULL};
    h2o_req_t *q = r->hreq;
    h2o_iovec_t b = h2o_iovec_init(NULL, 0);
    if (owned && body) {
        void **slot = h2o_mem_alloc_shared(&q->pool, sizeof *slot, free_slot);
        *slot = (void *)body;
        b = h2o_iovec_init(body, len);
    } else if (len) {
        b = h2o_strdup(&q->pool, body, len);
    }
    q->res.status = (int)status;
    q->res.reason = reason(status);
    if (status != 204)
        q->res.content_length = len;
    if (ctype)
        h2o_add_header(&q->pool, &q->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype,
                       strlen(ctype));
    if (status == 405 && r->allow)
        add_header(r, "Allow", r->allow);
    r->status = status;
    r->phase = P_DONE;
    h2o_start_response(q, &done_gen);
    h2o_send(q, &b, b.len ? 1 : 0, H2O_SEND_STATE_FINAL);
    return 0;
}

/* A reply whose body is a copy of text. */
static int reply_text(req *r, unsigned status, const char *text) {
    return send_reply(r, status, text, strlen(text), 0, "text/plain; charset=utf-8");
}

/* A 503 for a write that was accepted and may or may not have been
 * applied: the header tells clients (and the linearizability recorder)
 * not to count it as rejected. */
static int reply_unknown(req *r, const char *text) {
    add_header(r, "X-Bitraft-Outcome", "unknown");
    return reply_text(r, 503, text);
}

/* A reply that takes a malloc'd buffer. */
static int reply_owned(req *r, unsigned status, void *buf, size_t len, const char *ctype) {
    return send_reply(r, status, buf, len, 1, ctype);
}

static int reply_err(req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int reply_err(req *r, unsigned status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 2)
        n = sizeof msg - 2;
    msg[n] = '\n';
    msg[n + 1] = 0;
    return reply_text(r, status, msg);
}

/*
 * This node cannot serve the request (not the leader): a 307 to the leader
 * with the same path and query (a 307 keeps the method and the body), or a
 * 503 with Retry-After when no leader is known.
 */
static int reply_not_leader(req *r) {
    uint64_t self = 0, leader = 0;
    char addr[256] = "";
    br_service_leader(r->h->svc, &self, &leader, addr, sizeof addr);
    if (!leader || leader == self || !addr[0]) {
        add_header(r, "Retry-After", "1");
        return reply_text(r, 503, NO_LEADER_MSG);
    }
    br_buf loc = {0};
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)leader);
    int err =
        br_buf_adds(&loc, "http://") || br_buf_adds(&loc, addr) || br_buf_adds(&loc, r->path) ||
        (r->query_len && (br_buf_addc(&loc, '?') || br_buf_add(&loc, r->query, r->query_len)));
    err = err || br_buf_addc(&loc, 0);
    char *msg = NULL;
    int n =
        err ? -1 : asprintf(&msg, "not the leader; the leader is node %s at http://%s\n", id, addr);
    if (n < 0) {
        free(msg);
        free(loc.p);
        return reply_err(r, 500, "out of memory");
    }
    add_header(r, "Location", loc.p);
    add_header(r, "X-Bitraft-Leader", id);
    free(loc.p);
    return reply_owned(r, 307, msg, (size_t)n, "text/plain; charset=utf-8");
}

/* Maps a service error to a status and a reason. */
static int reply_rc(req *r, int rc) {
    switch (rc) {
    case BR_ENOTLEADER:
        return reply_not_leader(r);
    case BR_SERVICE_EUNKNOWN:
        return reply_unknown(r, "outcome unknown: leadership was lost while the write was pending; "
                                "it may or may not have been applied (read the key to find out)\n");
    case -ETIMEDOUT:
        return reply_err(r, 503, "no quorum: the cluster did not confirm the leader in time");
    case BR_ENOTFOUND:
        return reply_err(r, 404, "key not found");
    case BR_EEMPTYKEY:
    case BR_EKEYTOOBIG:
    case BR_EINVAL:
        return reply_err(r, 400, "%s", br_strerror(rc));
    case BR_EVALTOOBIG:
    case BR_ETOOBIG:
        return reply_err(r, 413, "%s", br_strerror(rc));
    case BR_ECLOSED:
        if (r->pend == PEND_WRITE && r->accepted)
            return reply_unknown(r, "server is shutting down; the write's outcome is unknown (it "
                                    "may or may not have been applied)\n");
        return reply_err(r, 503, "server is shutting down");
    default:
        logf_(r->h, BR_LOG_ERROR, "%s: %s", route_names[r->route], br_strerror(rc));
        return reply_err(r, 500, "store error: %s", br_strerror(rc));
    }
}

/* ---- Query arguments and keys -------------------------------------------- */

/* Looks up query argument name and decodes it into a malloc'd buffer
 * (NUL-terminated for convenience; binary-safe through *len). Returns 1
 * found, 0 absent, -1 bad escape or no '=value'. */
/* Finds query argument name (its first occurrence; names compared raw).
 * Returns 1 with *v at its raw value (NULL if it has no '='), or 0. */
static int query_find(const req *r, const char *name, const char **v, size_t *vl) {
    size_t nl = strlen(name);
    const char *p = r->query, *end = r->query + r->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ke = eq ? eq : e;
        if ((size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
            *v = eq ? eq + 1 : NULL;
            *vl = eq ? (size_t)(e - eq - 1) : 0;
            return 1;
        }
        p = e + 1;
    }
    return 0;
}

static int arg(req *r, const char *name, char **out, size_t *len) {
    const char *v = NULL;
    size_t vl = 0;
    *out = NULL;
    if (!query_find(r, name, &v, &vl))
        return 0;
    if (!v)
        return -1;
    char *buf = malloc(vl + 1);
    if (!buf || br_pct_decode(v, vl, buf, len, 1)) {
        free(buf);
        return -1;
    }
    buf[*len] = 0;
    *out = buf;
    return 1;
}

#define INT_KEY_MSG "keys are integers 0..18446744073709551615 in this directory (integer-key mode)"

/* In integer-key mode, points *s at the 8-byte form of the decimal key
 * *s[0..*n), kept in buf. Returns 0, or -1 if it is not such a number. */
static int wire_key(const br_http *h, const char **s, size_t *n, char buf[8]) {
    if (!h->o.int_keys)
        return 0;
    if (br_intkey_enc(*s, *n, buf))
        return -1;
    *s = buf;
    *n = 8;
    return 0;
}

/* wire_key for the request's own key (r->key). */
static int own_wire_key(req *r) {
    char kb[8];
    const char *k = r->key;
    size_t n = r->klen;
    if (!r->h->o.int_keys)
        return 0;
    if (wire_key(r->h, &k, &n, kb))
        return -1;
    char *nk = realloc(r->key, 8);
    if (!nk)
        return -1;
    memcpy(nk, kb, 8);
    r->key = nk;
    r->klen = 8;
    return 0;
}

/* ---- Write completions --------------------------------------------------- */

/* Hands a request whose service call completed back to its loop (from any
 * thread); the loop answers it (on_wake). */
static void post(req *r) {
    loop_ctx *lc = r->lc;
    pthread_mutex_lock(&lc->mu);
    r->next_done = NULL;
    if (lc->done_tail)
        lc->done_tail->next_done = r;
    else
        lc->done_head = r;
    lc->done_tail = r;
    pthread_mutex_unlock(&lc->mu);
    uv_async_send(&lc->wake);
}

static void write_done(void *ctx, int rc) {
    req *r = ctx;
    atomic_store_explicit(&r->rc, rc, memory_order_release);
    if (!r->inline_write)
        post(r);
}

static int reply_write(req *r);
static int finish(req *r);

/* Hands a request to the service (submit); the completion posts it back
 * to this loop, which answers it then (finish). */
static int wait_submit(req *r, pending what, int (*submit)(req *r)) {
    br_http *h = r->h;
    /* With br_http_stop(): either it sees this handler in submitting and
     * waits for the request it submits, or this handler sees stopping. */
    atomic_fetch_add(&h->submitting, 1);
    if (atomic_load(&h->stopping)) {
        atomic_fetch_sub(&h->submitting, 1);
        return reply_rc(r, BR_ECLOSED);
    }
    r->pend = what;
    r->phase = P_WAITING;
    atomic_fetch_add(&h->waiting, 1);
    int rc = submit(r);
    atomic_fetch_sub(&h->submitting, 1);
    if (rc) {
        /* Not accepted: the completion will never run. */
        atomic_store(&r->rc, rc);
        return finish(r);
    }
    r->accepted = 1;
    return 0;
}

/* Hands a write to the service: on the caller's thread when the service
 * completes writes inline, else with the answer posted back. */
static int start_write(req *r, int (*submit)(req *r)) {
    if (br_service_writes_inline(r->h->svc)) {
        /* The write never waits for a flush (--sync interval or never):
         * no thread hop. */
        r->inline_write = 1;
        int rc = submit(r);
        if (rc)
            atomic_store(&r->rc, rc);
        else
            r->accepted = 1;
        return reply_write(r);
    }
    return wait_submit(r, PEND_WRITE, submit);
}

static int submit_put(req *r) {
    return br_service_put(r->h->svc, r->key, r->klen, r->body.p ? r->body.p : "", r->body.len,
                          write_done, r);
}

static int submit_delete(req *r) {
    return br_service_delete(r->h->svc, r->key, r->klen, write_done, r);
}

static int submit_batch(req *r) {
    return br_service_write(r->h->svc, r->batch, write_done, r);
}

static int finish_get(req *r, int rc);
static int reply_range(req *r, int rc, br_service_iter *it);

/* Answers a request whose service call completed (on its loop). */
static int finish(req *r) {
    atomic_fetch_sub(&r->h->waiting, 1);
    r->phase = P_DONE;
    int rc = atomic_load_explicit(&r->rc, memory_order_acquire);
    switch (r->pend) {
    case PEND_GET:
        return finish_get(r, rc);
    case PEND_RANGE: {
        br_service_iter *it = r->it;
        r->it = NULL;
        return reply_range(r, rc, it);
    }
    default:
        return reply_write(r);
    }
}

static int reply_member_change(req *r, int rc);

static int reply_write(req *r) {
    int rc = atomic_load_explicit(&r->rc, memory_order_acquire);
    if (r->route == R_admin_member_add || r->route == R_admin_member_remove)
        return reply_member_change(r, rc);
    if (rc)
        return reply_rc(r, rc);
    switch (r->route) {
    case R_root_post:
        return reply_text(r, 200, r->nops == 1 ? "Key saved\n" : "Keys saved\n");
    case R_root_delete:
        return reply_text(r, 200, "Key deleted\n");
    case R_kv_batch: {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "{\"ok\":true,\"ops\":%d}\n", r->nops);
        return send_reply(r, 200, msg, (size_t)n, 0, "application/json");
    }
    default:
        return reply_owned(r, 204, NULL, 0, NULL);
    }
}

/* ---- Reads --------------------------------------------------------------- */

/*
 * Reads complete inline (standalone, or a stale read) or, when the service
 * needs a read barrier first (a linearizable read in cluster mode), like a
 * write: the completion stores the result in the request and posts it back
 * to its loop. A get waits for the barrier alone (br_service_read_barrier)
 * and reads the store when posted back, on its loop; a range gets its
 * iterator with the completion.
 */

static int reply_get(req *r, int rc, void *val, size_t vlen) {
    if (rc) {
        free(val);
        return reply_rc(r, rc);
    }
    return reply_owned(r, 200, val, vlen, "application/octet-stream");
}

typedef struct get_result {
    int rc;
    void *val;
    size_t vlen;
} get_result;

static void get_done(void *ctx, int rc, void *val, size_t vlen) {
    get_result *g = ctx;
    g->rc = rc, g->val = val, g->vlen = vlen;
}

/* A linearizable get that must wait (cluster mode) waits only for the read
 * barrier; the store is read on the HTTP thread once the barrier has passed
 * (finish_get), so the node's thread does nothing per get but post it
 * back. */
static void barrier_done(void *ctx, int rc) {
    req *r = ctx;
    atomic_store_explicit(&r->rc, rc, memory_order_release);
    post(r);
}

static int submit_get(req *r) {
    return br_service_read_barrier(r->h->svc, barrier_done, r);
}

/* Reads r->key after its barrier (rc 0) and replies. */
static int finish_get(req *r, int rc) {
    get_result g = {0};
    if (rc == 0) {
        rc = br_service_get(r->h->svc, r->key, r->klen, BR_SERVICE_STALE, get_done, &g);
        if (rc == 0)
            rc = g.rc;
    }
    return reply_get(r, rc, g.val, g.vlen);
}

static int do_get(req *r, const char *key, size_t klen) {
    if (klen > r->h->o.max_key_size)
        return reply_err(r, 400, "key is larger than the configured maximum");
    char kb[8];
    if (key != r->key && wire_key(r->h, &key, &klen, kb))
        return reply_err(r, 400, INT_KEY_MSG);
    if (br_service_reads_inline(r->h->svc, r->rflags)) {
        get_result g = {0};
        int rc = br_service_get(r->h->svc, key, klen, r->rflags, get_done, &g);
        if (rc == 0)
            rc = g.rc;
        return reply_get(r, rc, g.val, g.vlen);
    }
    if (key != r->key) {
        char *k = malloc(klen ? klen : 1);
        if (!k)
            return reply_rc(r, BR_ENOMEM);
        memcpy(k, key, klen);
        free(r->key);
        r->key = k;
        r->klen = klen;
    }
    return wait_submit(r, PEND_GET, submit_get);
}

/* A streamed range reply: entries are formatted into pend up to 64 KiB at a
 * time and sent; h2o asks for more (proceed) once a piece is written. It
 * lives in the request's pool (stream_dispose frees what it holds). */
typedef struct stream {
    h2o_generator_t gen; /* first */
    br_service_iter *it;
    int ndjson;   /* 1: {"key":..} lines; 0: the original's "K,V" lines */
    int int_keys; /* keys are 8-byte numbers, shown in decimal */
    size_t limit; /* 0 = none; else the iterator holds limit + 1 */
    size_t count; /* entries taken from the iterator */
    int finished; /* nothing more to format */
    br_buf pend;  /* the piece being sent */
    br_http *h;
} stream;

#define STREAM_PIECE (64 * 1024)

static void stream_proceed(h2o_generator_t *g, h2o_req_t *q) {
    stream *st = (stream *)g;
    st->pend.len = 0;
    while (!st->finished && st->pend.len < STREAM_PIECE) {
        const void *k, *v;
        size_t kl, vl;
        int rc = br_service_iter_next(st->it, &k, &kl, &v, &vl);
        if (rc < 0) {
            logf_(st->h, BR_LOG_ERROR, "range: %s", br_strerror(rc));
            h2o_send(q, NULL, 0, H2O_SEND_STATE_ERROR);
            return;
        }
        if (rc == 0) {
            st->finished = 1;
            break;
        }
        char kd[21];
        size_t dl = st->int_keys ? br_intkey_dec(k, kl, kd) : 0;
        if (dl)
            k = kd, kl = dl;
        int err;
        if (st->limit && ++st->count > st->limit) {
            st->finished = 1; /* the entry past the limit: where to go on */
            err = br_range_line(&st->pend, k, kl, NULL, 0);
        } else if (st->ndjson) {
            err = br_range_line(&st->pend, k, kl, v, vl);
        } else {
            err = br_buf_add(&st->pend, k, kl) || br_buf_addc(&st->pend, ',') ||
                  br_buf_add(&st->pend, v, vl) || br_buf_addc(&st->pend, '\n');
        }
        if (err) {
            h2o_send(q, NULL, 0, H2O_SEND_STATE_ERROR);
            return;
        }
    }
    h2o_iovec_t b = h2o_iovec_init(st->pend.p, st->pend.len);
    h2o_send(q, &b, b.len ? 1 : 0,
             st->finished ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void stream_stop(h2o_generator_t *g, h2o_req_t *q) {
    (void)g, (void)q; /* the client went away: stream_dispose cleans up */
}

static void stream_dispose(void *p) {
    stream *st = p;
    br_service_iter_free(st->it);
    free(st->pend.p);
}

typedef struct range_result {
    int rc;
    br_service_iter *it;
} range_result;

static void range_done(void *ctx, int rc, br_service_iter *it) {
    range_result *x = ctx;
    x->rc = rc, x->it = it;
}

static void range_async_done(void *ctx, int rc, br_service_iter *it) {
    req *r = ctx;
    r->it = it;
    atomic_store_explicit(&r->rc, rc, memory_order_release);
    post(r);
}

static int submit_range(req *r) {
    return br_service_range(r->h->svc, r->rs, r->rsl, r->re, r->rel, r->limit ? r->limit + 1 : 0,
                            r->rflags, range_async_done, r);
}

static int do_range(req *r, const char *s, size_t sl, const char *e, size_t el, uint64_t limit,
                    int ndjson) {
    size_t lim = limit >= SIZE_MAX - 1 ? 0 : (size_t)limit;
    char sb[8], eb[8];
    if ((s && wire_key(r->h, &s, &sl, sb)) || (e && wire_key(r->h, &e, &el, eb)))
        return reply_err(r, 400, INT_KEY_MSG);
    r->ndjson = ndjson;
    r->limit = lim;
    if (!br_service_reads_inline(r->h->svc, r->rflags)) {
        r->rs = s, r->rsl = sl, r->re = e, r->rel = el;
        return wait_submit(r, PEND_RANGE, submit_range);
    }
    range_result x = {0};
    int rc =
        br_service_range(r->h->svc, s, sl, e, el, lim ? lim + 1 : 0, r->rflags, range_done, &x);
    if (rc == 0)
        rc = x.rc;
    return reply_range(r, rc, x.it);
}

/* Replies to a range: the stream over it, or the error rc. */
static int reply_range(req *r, int rc, br_service_iter *it) {
    if (rc) {
        br_service_iter_free(it);
        return reply_rc(r, rc);
    }
    h2o_req_t *q = r->hreq;
    stream *st = h2o_mem_alloc_shared(&q->pool, sizeof *st, stream_dispose);
    memset(st, 0, sizeof *st);
    st->gen.proceed = stream_proceed;
    st->gen.stop = stream_stop;
    st->it = it;
    st->ndjson = r->ndjson;
    st->int_keys = r->h->o.int_keys;
    st->limit = r->limit;
    st->h = r->h;
    const char *ctype = r->ndjson ? "application/x-ndjson" : "text/plain; charset=utf-8";
    q->res.status = 200;
    q->res.reason = "OK";
    h2o_add_header(&q->pool, &q->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    r->status = 200;
    r->phase = P_DONE;
    h2o_start_response(q, &st->gen);
    stream_proceed(&st->gen, q);
    return 0;
}

/* ---- Batches ------------------------------------------------------------- */

#define BAD_INT_KEY (-2)

static int add_op(void *ctx, int op, const char *k, size_t kl, const char *v, size_t vl) {
    req *r = ctx;
    char kb[8];
    if (wire_key(r->h, &k, &kl, kb))
        return BAD_INT_KEY;
    int rc = op == BR_OP_PUT ? br_service_batch_put(r->batch, k, kl, v, vl)
                             : br_service_batch_delete(r->batch, k, kl);
    return rc ? rc : 0;
}

static int do_batch(req *r, int ndjson) {
    char err[256] = "bad body";
    r->batch = br_service_batch_new(r->h->svc);
    if (!r->batch)
        return reply_rc(r, BR_ENOMEM);
    const char *b = r->body.p ? r->body.p : "";
    int n = ndjson ? br_parse_ndjson_batch(b, r->body.len, add_op, r, err, sizeof err)
                   : br_parse_kv_lines(b, r->body.len, add_op, r, err, sizeof err);
    if (n == BAD_INT_KEY)
        return reply_err(r, 400, INT_KEY_MSG);
    if (n < -1)
        return reply_rc(r, n);
    if (n < 0)
        return reply_err(r, 400, "%s", err);
    r->nops = n;
    return start_write(r, submit_batch);
}

/* ---- Status and metrics -------------------------------------------------- */

static double since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The "raft" member of /status in cluster mode (a malloc'd string), or "". */
static char *raft_json(const br_service_stats *st) {
    if (!st->cluster)
        return strdup("");
    const br_service_raft_stats *rs = &st->raft;
    br_buf b = {0};
    char line[512];
    snprintf(line, sizeof line,
             ",\"raft\":{\"id\":%llu,\"role\":\"%s\",\"membership\":\"%s\",\"term\":%llu,"
             "\"leader\":%llu,\"leader_addr\":\"",
             (unsigned long long)rs->id, rs->role, rs->membership ? rs->membership : "none",
             (unsigned long long)rs->term, (unsigned long long)rs->leader);
    int err = br_buf_adds(&b, line);
    for (const char *p = rs->leader_addr; *p && !err; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            err = br_buf_addc(&b, *p);
    snprintf(line, sizeof line,
             "\",\"commit\":%llu,\"applied\":%llu,\"last_index\":%llu,\"first_index\":%llu,"
             "\"snapshot_index\":%llu,\"proposals\":%llu,\"syncs\":%llu,"
             "\"snapshots_sent\":%llu,\"snapshots_installed\":%llu,\"fatal\":\"%s\","
             "\"peers\":[",
             (unsigned long long)rs->commit, (unsigned long long)rs->applied,
             (unsigned long long)rs->last_index, (unsigned long long)rs->first_index,
             (unsigned long long)rs->snapshot_index, (unsigned long long)rs->proposals,
             (unsigned long long)rs->syncs, (unsigned long long)rs->snapshots_sent,
             (unsigned long long)rs->snapshots_installed, rs->fatal ? br_errname(rs->fatal) : "");
    err = err || br_buf_adds(&b, line);
    for (size_t i = 0; i < rs->n_peers && i < 16; i++) {
        const br_service_peer *p = &rs->peers[i];
        snprintf(line, sizeof line,
                 "%s{\"id\":%llu,\"match\":%llu,\"next\":%llu,\"connected\":%s,"
                 "\"snapshotting\":%s}",
                 i ? "," : "", (unsigned long long)p->id, (unsigned long long)p->match,
                 (unsigned long long)p->next, p->connected ? "true" : "false",
                 p->snapshotting ? "true" : "false");
        err = err || br_buf_adds(&b, line);
    }
    err = err || br_buf_adds(&b, "]}") || br_buf_addc(&b, 0);
    if (err) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static int do_status(req *r) {
    br_service_stats st;
    br_service_stats_get(r->h->svc, &st);
    char *raft = raft_json(&st);
    if (!raft)
        return reply_rc(r, BR_ENOMEM);
    char *out = NULL;
    int n = asprintf(
        &out,
        "{\"version\":\"%s\",\"uptime_s\":%.0f,\"mode\":\"%s\",\"key_mode\":\"%s\","
        "\"keys\":%llu,"
        "\"data_files\":%llu,\"disk_bytes\":%llu,\"live_bytes\":%llu,"
        "\"dead_bytes\":%llu,\"index_bytes\":%llu,\"last_seq\":%llu,"
        "\"writes_inflight\":%llu,\"compaction\":{\"running\":%s,\"todo_bytes\":%llu,"
        "\"done_bytes\":%llu,\"merges\":%llu,\"files_in\":%llu,\"bytes_read\":%llu,"
        "\"bytes_written\":%llu,\"bytes_reclaimed\":%llu}%s}\n",
        r->h->o.version, since(&r->h->started), st.mode,
        st.key_mode == BR_KEYS_INT ? "int" : "bytes", (unsigned long long)st.engine.keys,
        (unsigned long long)st.engine.data_files, (unsigned long long)st.engine.disk_bytes,
        (unsigned long long)st.engine.live_bytes, (unsigned long long)st.engine.dead_bytes,
        (unsigned long long)st.engine.index_bytes, (unsigned long long)st.engine.last_seq,
        (unsigned long long)st.writes_inflight, st.engine.compact_running ? "true" : "false",
        (unsigned long long)st.engine.compact_todo_bytes,
        (unsigned long long)st.engine.compact_done_bytes, (unsigned long long)st.engine.compactions,
        (unsigned long long)st.engine.compact_files_in,
        (unsigned long long)st.engine.compact_bytes_read,
        (unsigned long long)st.engine.compact_bytes_written,
        (unsigned long long)st.engine.compact_reclaimed, raft);
    free(raft);
    if (n < 0)
        return reply_rc(r, BR_ENOMEM);
    return reply_owned(r, 200, out, (size_t)n, "application/json");
}

static int addf(br_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int addf(br_buf *b, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    return br_buf_add(b, line, (size_t)n);
}

static int do_metrics(req *r) {
    br_http *h = r->h;
    br_buf b = {0};
    int err = 0;
    err |= addf(&b, "# HELP bitraft_http_requests_total HTTP requests by route and status.\n"
                    "# TYPE bitraft_http_requests_total counter\n");
    for (int i = 0; i < NROUTES; i++) {
        for (size_t c = 0; c < NCODES; c++) {
            unsigned long long v = atomic_load(&h->requests[i][c]);
            if (!v)
                continue;
            char code[8];
            snprintf(code, sizeof code, codes[c] ? "%u" : "other", codes[c]);
            err |= addf(&b, "bitraft_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                        route_names[i], code, v);
        }
    }
    err |= addf(&b, "# HELP bitraft_http_request_duration_seconds Time from the request's "
                    "headers to its reply sent.\n"
                    "# TYPE bitraft_http_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&h->lat[i]);
        if (i + 1 < NBUCKETS)
            err |= addf(&b, "bitraft_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        buckets[i], cum);
        else
            err |=
                addf(&b, "bitraft_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    err |= addf(&b, "bitraft_http_request_duration_seconds_sum %.6f\n",
                (double)atomic_load(&h->lat_sum_ns) / 1e9);
    err |= addf(&b, "bitraft_http_request_duration_seconds_count %llu\n",
                (unsigned long long)atomic_load(&h->lat_count));
    br_service_stats st;
    br_service_stats_get(h->svc, &st);
    const struct {
        const char *name, *type, *help;
        unsigned long long v;
    } figs[] = {
        {"bitraft_uptime_seconds", "gauge", "Seconds since the server started.",
         (unsigned long long)since(&h->started)},
        {"bitraft_http_requests_active", "gauge", "Requests in flight.", atomic_load(&h->active)},
        {"bitraft_http_requests_abandoned_total", "counter",
         "Requests whose client went away before the answer was sent.", atomic_load(&h->abandoned)},
        {"bitraft_service_writes_inflight", "gauge", "Writes accepted, not yet durable.",
         st.writes_inflight},
        {"bitraft_engine_keys", "gauge", "Live keys.", st.engine.keys},
        {"bitraft_engine_data_files", "gauge", "Data files on disk.", st.engine.data_files},
        {"bitraft_engine_disk_bytes", "gauge", "Bytes in data files.", st.engine.disk_bytes},
        {"bitraft_engine_live_bytes", "gauge", "Bytes of live records.", st.engine.live_bytes},
        {"bitraft_engine_dead_bytes", "gauge", "Bytes of dead records.", st.engine.dead_bytes},
        {"bitraft_engine_index_bytes", "gauge", "Memory held by the key index.",
         st.engine.index_bytes},
        {"bitraft_engine_puts_total", "counter", "Puts applied.", st.engine.puts},
        {"bitraft_engine_deletes_total", "counter", "Deletes applied.", st.engine.deletes},
        {"bitraft_engine_batches_total", "counter", "Batches applied.", st.engine.batches},
        {"bitraft_engine_gets_total", "counter", "Gets served.", st.engine.gets},
        {"bitraft_engine_syncs_total", "counter", "fdatasync calls on data files.",
         st.engine.syncs},
        {"bitraft_engine_write_groups_total", "counter", "Group commits.", st.engine.write_groups},
        {"bitraft_compaction_running", "gauge", "1 while a compaction runs.",
         st.engine.compact_running},
        {"bitraft_compaction_merges_total", "counter", "Merges done (one output file each).",
         st.engine.compactions},
        {"bitraft_compaction_read_bytes_total", "counter", "Bytes of input files read.",
         st.engine.compact_bytes_read},
        {"bitraft_compaction_written_bytes_total", "counter", "Bytes of merge outputs written.",
         st.engine.compact_bytes_written},
        {"bitraft_compaction_reclaimed_bytes_total", "counter",
         "Input bytes minus output bytes of the merges done.", st.engine.compact_reclaimed},
    };
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
        err |= addf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", figs[i].name, figs[i].help,
                    figs[i].name, figs[i].type, figs[i].name, figs[i].v);
    if (st.cluster) {
        const struct {
            const char *name, *type, *help;
            unsigned long long v;
        } rf[] = {
            {"bitraft_raft_term", "gauge", "Current Raft term.", st.raft.term},
            {"bitraft_raft_commit_index", "gauge", "Highest log index known committed.",
             st.raft.commit},
            {"bitraft_raft_applied_index", "gauge", "Highest log index applied to the store.",
             st.raft.applied},
            {"bitraft_raft_last_index", "gauge", "Last index of the local raft log.",
             st.raft.last_index},
            {"bitraft_raft_is_leader", "gauge", "1 on the leader.",
             (unsigned long long)st.raft.is_leader},
            {"bitraft_raft_leader_id", "gauge", "The leader this node knows (0 none).",
             st.raft.leader},
            {"bitraft_raft_log_syncs_total", "counter", "Raft log fsyncs.", st.raft.syncs},
            {"bitraft_raft_proposals_total", "counter", "Entries proposed.", st.raft.proposals},
        };
        for (size_t i = 0; i < sizeof rf / sizeof rf[0]; i++)
            err |= addf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", rf[i].name, rf[i].help,
                        rf[i].name, rf[i].type, rf[i].name, rf[i].v);
    }
    if (err) {
        free(b.p);
        return reply_rc(r, BR_ENOMEM);
    }
    return reply_owned(r, 200, b.p, b.len, "text/plain; version=0.0.4");
}

/* POST /admin/compact[?min_dead_pct=N]: starts a compaction (default: every
 * file with reclaimable bytes) and answers 202 at once; /status shows its
 * progress. */
static int do_compact(req *r) {
    char *v = NULL;
    size_t vl = 0;
    int has = arg(r, "min_dead_pct", &v, &vl);
    unsigned long pct = 0;
    if (has) {
        char *end = NULL;
        errno = 0;
        if (v)
            pct = strtoul(v, &end, 10);
        int bad = !v || !*v || *end || errno || pct > 100 || strlen(v) != vl;
        free(v);
        if (bad)
            return reply_err(r, 400, "min_dead_pct must be a whole number from 0 to 100");
    }
    int rc = br_service_compact(r->h->svc, (uint32_t)pct);
    if (rc)
        return reply_rc(r, rc);
    char *out = NULL;
    int n = asprintf(&out, "{\"compaction\":\"started\",\"min_dead_pct\":%lu}\n", pct);
    if (n < 0)
        return reply_rc(r, BR_ENOMEM);
    return reply_owned(r, 202, out, (size_t)n, "application/json");
}

/* ---- Membership ------------------------------------------------------------ */

/* {"id":self,"leader":L,"members":[{"id":..,"role":..,"promote":..,"raft":"h:p",
 * "client":"h:p"},...]} as this node knows them. */
static int reply_members(req *r) {
    br_service_member_info m[16];
    size_t k = br_service_members(r->h->svc, m, 16);
    uint64_t self = 0, leader = 0;
    br_service_leader(r->h->svc, &self, &leader, NULL, 0);
    br_buf b = {0};
    int err = addf(&b, "{\"id\":%llu,\"leader\":%llu,\"members\":[", (unsigned long long)self,
                   (unsigned long long)leader);
    for (size_t i = 0; i < k && i < 16 && !err; i++) {
        char raft[300];
        snprintf(raft, sizeof raft, "%s:%u", m[i].host, m[i].raft_port);
        err = addf(&b, "%s{\"id\":%llu,\"role\":\"%s\",\"promote\":%s,\"raft\":", i ? "," : "",
                   (unsigned long long)m[i].id, m[i].role, m[i].promote ? "true" : "false") ||
              br_json_str(&b, raft, strlen(raft)) || br_buf_adds(&b, ",\"client\":") ||
              br_json_str(&b, m[i].client_addr, strlen(m[i].client_addr)) || br_buf_addc(&b, '}');
    }
    err = err || br_buf_adds(&b, "]}\n");
    if (err) {
        free(b.p);
        return reply_rc(r, BR_ENOMEM);
    }
    return reply_owned(r, 200, b.p, b.len, "application/json");
}

/* The answer to a membership change: the members as they are now, or why
 * not. */
static int reply_member_change(req *r, int rc) {
    unsigned long long id = r->member.id;
    int add = r->route == R_admin_member_add;
    switch (rc) {
    case 0:
        return reply_members(r);
    case -EOPNOTSUPP:
        return reply_err(r, 400,
                         "membership changes need cluster mode (this server is standalone)");
    case -EEXIST:
        return reply_err(r, 409, "node %llu is already a %s", id, r->learner ? "member" : "voter");
    case -ENOSPC:
        return reply_err(r, 409, "the cluster has as many members as it can hold (16)");
    case BR_ENOTFOUND:
        return reply_err(r, 404, "node %llu is not a member", id);
    case BR_EINVAL:
        if (add)
            return reply_err(r, 409,
                             "learner %llu has not caught up yet; without learner=true it is "
                             "promoted automatically once it has",
                             id);
        return reply_err(r, 409, "node %llu is the last voter; it cannot be removed", id);
    case BR_SERVICE_EUNKNOWN:
        return reply_unknown(r, "outcome unknown: leadership moved while the change was pending; "
                                "it may or may not have been applied (GET /admin/members)\n");
    case -EBUSY: {
        add_header(r, "Retry-After", "1");
        return reply_text(r, 503, "another membership change is being applied; retry shortly\n");
    }
    default:
        return reply_rc(r, rc);
    }
}

/* Splits "host:port" (a host of 1..255 printable bytes, a port 1..65535)
 * into a malloc'd host and the port. -1 if it is not such an address. */
static int split_addr(const char *s, char **host, uint16_t *port) {
    const char *c = s ? strrchr(s, ':') : NULL;
    uint64_t p;
    if (!c || c == s || c - s > 255 || br_parse_u64(c + 1, strlen(c + 1), &p) || p == 0 ||
        p > 65535)
        return -1;
    for (const char *q = s; q < c; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            return -1;
    *host = strndup(s, (size_t)(c - s));
    *port = (uint16_t)p;
    return *host ? 0 : -1;
}

static int submit_member_add(req *r) {
    return br_service_add_member(r->h->svc, &r->member, r->learner, write_done, r);
}

static int submit_member_remove(req *r) {
    return br_service_remove_member(r->h->svc, r->member.id, write_done, r);
}

/* POST /admin/members?id=N&raft=HOST:PORT[&client=HOST:PORT][&learner=true] */
static int do_member_add(req *r) {
    char *id = NULL, *raft = NULL, *client = NULL, *learner = NULL;
    size_t idl = 0, rl = 0, cl = 0, ll = 0;
    int bad = arg(r, "id", &id, &idl) < 0 || arg(r, "raft", &raft, &rl) < 0 ||
              arg(r, "client", &client, &cl) < 0 || arg(r, "learner", &learner, &ll) < 0;
    const char *why = NULL;
    uint64_t v = 0;
    char *host = NULL, *ch = NULL;
    uint16_t cp;
    int yes = learner && (strcmp(learner, "true") == 0 || strcmp(learner, "1") == 0);
    if (bad)
        why = "bad %-escape in the query";
    else if (!id || br_parse_u64(id, idl, &v) || v == 0)
        why = "id must be a node id (a whole number above 0)";
    else if (!raft || strlen(raft) != rl || split_addr(raft, &host, &r->member.raft_port))
        why = "raft must be the new member's raft address, HOST:PORT";
    else if (client && (strlen(client) != cl || split_addr(client, &ch, &cp)))
        why = "client must be the new member's HTTP address, HOST:PORT";
    else if (learner && !yes && strcmp(learner, "false") != 0 && strcmp(learner, "0") != 0)
        why = "learner must be true or false";
    free(ch);
    free(id);
    free(raft);
    free(learner);
    r->member.id = v;
    r->member.host = host;
    r->member.client_addr = client;
    r->learner = yes;
    if (why)
        return reply_err(r, 400, "%s", why);
    return start_write(r, submit_member_add);
}

/* DELETE /admin/members/N */
static int do_member_remove(req *r, const char *url) {
    const char *id = url + strlen("/admin/members/");
    uint64_t v;
    if (br_parse_u64(id, strlen(id), &v) || v == 0)
        return reply_err(r, 400, "the path must end in a node id (a whole number above 0)");
    r->member.id = v;
    return start_write(r, submit_member_remove);
}

/* ---- Dispatch ------------------------------------------------------------ */

static int do_usage(req *r) {
    char *out = NULL;
    unsigned port = atomic_load(&r->h->port);
    if (!port)
        port = r->h->o.port;
    int n = asprintf(
        &out,
        "bitraft %s\n"
        "Usage:\n"
        "READ: curl --location 'http://localhost:%u?key=1'\n"
        "READ KEY RANGE: curl --location 'http://localhost:%u?start_key=1&end_key=10'\n"
        "PUT: curl --location 'http://localhost:%u/' --header 'Content-Type: text/plain' "
        "--data 'key:1,value:2000'\n"
        "BATCH PUT: curl --location 'http://localhost:%u' --header 'Content-Type: text/plain' "
        "--data 'key:1,value:2000\nkey:2,value:5000'\n"
        "DELETE: curl --location --request DELETE 'http://localhost:%u?key=1'\n"
        "REST: GET|PUT|DELETE /kv/{key}, GET /kv?start=&end=&limit=, POST /kv/batch,\n"
        "      /status, /metrics, /health (see docs/API.md)\n",
        r->h->o.version, port, port, port, port, port);
    if (n < 0)
        return reply_rc(r, BR_ENOMEM);
    return reply_owned(r, 200, out, (size_t)n, "text/plain; charset=utf-8");
}

/* GET / : a key, a range, or the usage text. */
static int root_get(req *r) {
    char *key = NULL, *s = NULL, *e = NULL;
    size_t kl = 0, sl = 0, el = 0;
    int res;
    int hk = arg(r, "key", &key, &kl), hs = arg(r, "start_key", &s, &sl),
        he = arg(r, "end_key", &e, &el);
    if (hk < 0 || hs < 0 || he < 0) {
        r->route = R_root_get;
        res = reply_err(r, 400, "bad query string: %s needs a value with valid %%-escapes",
                        hk < 0   ? "key"
                        : hs < 0 ? "start_key"
                                 : "end_key");
    } else if (hk && (hs || he)) {
        r->route = R_root_get;
        res = reply_err(r, 400, "use either key or start_key and end_key");
    } else if (hk) {
        r->route = R_root_get;
        res = kl ? do_get(r, key, kl) : reply_err(r, 400, "key is empty");
    } else if (hs || he) {
        r->route = R_root_range;
        if (!hs || !he)
            res = reply_err(r, 400, "a range needs both start_key and end_key");
        else
            res = do_range(r, s, sl, e, el, 0, 0);
    } else {
        res = do_usage(r);
    }
    free(key), free(s), free(e);
    return res;
}

static int root_delete(req *r) {
    int hk = arg(r, "key", &r->key, &r->klen);
    if (hk < 0)
        return reply_err(r, 400, "bad query string: key needs a value with valid %%-escapes");
    if (hk == 0)
        return reply_err(r, 400, "missing parameter key");
    if (r->klen == 0)
        return reply_err(r, 400, "key is empty");
    if (own_wire_key(r))
        return reply_err(r, 400, INT_KEY_MSG);
    return start_write(r, submit_delete);
}

/* Decodes the key of /kv/{key} into r->key. Returns 0, or -1 when a reply
 * (an error) has been queued instead, its result in *res. */
static int kv_key(req *r, const char *url, int *res) {
    const char *raw = url + 4;
    size_t n = strlen(raw);
    r->key = malloc(n + 1);
    if (!r->key)
        *res = reply_rc(r, BR_ENOMEM);
    else if (br_pct_decode(raw, n, r->key, &r->klen, 0))
        *res = reply_err(r, 400, "bad %%-escape in the key");
    else if (r->klen == 0)
        *res = reply_err(r, 400, "key is empty");
    else if (r->klen > r->h->o.max_key_size)
        *res = reply_err(r, 400, "key is larger than the configured maximum");
    else if (own_wire_key(r))
        *res = reply_err(r, 400, INT_KEY_MSG);
    else
        return 0;
    return -1;
}

static int kv_range(req *r) {
    char *s = NULL, *e = NULL, *l = NULL;
    size_t sl = 0, el = 0, ll = 0;
    uint64_t limit = 0;
    int res;
    int hs = arg(r, "start", &s, &sl), he = arg(r, "end", &e, &el), hl = arg(r, "limit", &l, &ll);
    if (hs < 0 || he < 0 || hl < 0)
        res = reply_err(r, 400, "bad query string: %s needs a value with valid %%-escapes",
                        hs < 0   ? "start"
                        : he < 0 ? "end"
                                 : "limit");
    else if (hl && br_parse_u64(l, ll, &limit))
        res = reply_err(r, 400, "limit must be a non-negative decimal number");
    else
        res = do_range(r, hs && sl ? s : NULL, sl, he && el ? e : NULL, el, limit, 1);
    free(s), free(e), free(l);
    return res;
}

static int is(const char *m, const char *want) {
    return strcmp(m, want) == 0;
}

/* Classifies a request on its first call; *allow gets the methods its
 * path takes. */
static enum route classify(const char *url, const char *m, const char **allow) {
    int get = is(m, "GET") || is(m, "HEAD");
    *allow = "GET, HEAD";
    if (strcmp(url, "/") == 0) {
        *allow = "GET, HEAD, POST, DELETE";
        if (get)
            return R_root_usage;
        if (is(m, "POST"))
            return R_root_post;
        if (is(m, "DELETE"))
            return R_root_delete;
        return R_bad_method;
    }
    if (strcmp(url, "/kv/batch") == 0 && is(m, "POST"))
        return R_kv_batch;
    if (strncmp(url, "/kv/", 4) == 0) {
        *allow = strcmp(url, "/kv/batch") == 0 ? "GET, HEAD, PUT, DELETE, POST"
                                               : "GET, HEAD, PUT, DELETE";
        if (get)
            return R_kv_get;
        if (is(m, "PUT"))
            return R_kv_put;
        if (is(m, "DELETE"))
            return R_kv_delete;
        return R_bad_method;
    }
    if (strcmp(url, "/kv") == 0)
        return get ? R_kv_range : R_bad_method;
    if (strcmp(url, "/health") == 0)
        return get ? R_health : R_bad_method;
    if (strcmp(url, "/status") == 0)
        return get ? R_status : R_bad_method;
    if (strcmp(url, "/metrics") == 0)
        return get ? R_metrics : R_bad_method;
    if (strcmp(url, "/admin/compact") == 0) {
        *allow = "POST";
        return is(m, "POST") ? R_admin_compact : R_bad_method;
    }
    if (strcmp(url, "/admin/members") == 0) {
        *allow = "GET, HEAD, POST";
        return get ? R_admin_members : is(m, "POST") ? R_admin_member_add : R_bad_method;
    }
    if (strncmp(url, "/admin/members/", 15) == 0) {
        *allow = "DELETE";
        return is(m, "DELETE") ? R_admin_member_remove : R_bad_method;
    }
    return R_not_found;
}

static int dispatch(req *r, const char *url, const char *method) {
    int res;
    if (r->too_large)
        return reply_err(r, 413, "request body is larger than %zu bytes", r->cap);
    if (r->route == R_root_usage || r->route == R_kv_get || r->route == R_kv_range) {
        /* ?consistency=stale reads this node's store as it is (it may lag
         * the leader); the default is linearizable. */
        const char *c = NULL;
        size_t cl = 0;
        if (query_find(r, "consistency", &c, &cl)) {
            if (c && cl == 5 && memcmp(c, "stale", 5) == 0)
                r->rflags = BR_SERVICE_STALE;
            else if (!c || cl != 12 || memcmp(c, "linearizable", 12) != 0)
                return reply_err(r, 400, "consistency must be linearizable (the default) or stale");
        }
    }
    switch (r->route) {
    case R_root_usage:
        return root_get(r);
    case R_root_post:
        return do_batch(r, 0);
    case R_root_delete:
        return root_delete(r);
    case R_kv_get:
        if (kv_key(r, url, &res))
            return res;
        return do_get(r, r->key, r->klen);
    case R_kv_put:
        if (kv_key(r, url, &res))
            return res;
        if (r->body.len > r->h->o.max_value_size)
            return reply_err(r, 413, "value is larger than %zu bytes", r->h->o.max_value_size);
        return start_write(r, submit_put);
    case R_kv_delete:
        if (kv_key(r, url, &res))
            return res;
        return start_write(r, submit_delete);
    case R_kv_range:
        return kv_range(r);
    case R_kv_batch:
        return do_batch(r, 1);
    case R_health:
        return reply_text(r, 200, "ok\n");
    case R_status:
        return do_status(r);
    case R_metrics:
        return do_metrics(r);
    case R_admin_compact:
        return do_compact(r);
    case R_admin_members:
        return reply_members(r);
    case R_admin_member_add:
        return do_member_add(r);
    case R_admin_member_remove:
        return do_member_remove(r, url);
    case R_bad_method:
        return reply_err(r, 405, "method %s not allowed on %s", method, url);
    default:
        return reply_err(r, 404, "no such endpoint: %s (see GET / or docs/API.md)", url);
    }
}

/* ---- Requests ------------------------------------------------------------ */

/* Records a finished request in the metrics and frees it. */
static void req_free(req *r) {
    br_http *h = r->h;
    double secs = since(&r->t0);
    size_t b = 0;
    while (b + 1 < NBUCKETS && secs > buckets[b])
        b++;
    atomic_fetch_add(&h->lat[b], 1);
    atomic_fetch_add(&h->lat_sum_ns, (unsigned long long)(secs * 1e9));
    atomic_fetch_add(&h->lat_count, 1);
    size_t c = 0;
    while (c + 1 < NCODES && codes[c] != r->status)
        c++;
    if (r->status)
        atomic_fetch_add(&h->requests[r->route][c], 1);
    if (h->o.verbose)
        logf_(h, BR_LOG_DEBUG, "%s %u %.6fs%s", route_names[r->route], r->status, secs,
              r->phase == P_DONE ? "" : " (connection closed early)");
    br_service_batch_free(r->batch);
    br_service_iter_free(r->it);
    free(r->key);
    free(r->body.p);
    free((char *)r->member.host);
    free((char *)r->member.client_addr);
    free(r->path);
    free(r);
    atomic_fetch_sub(&h->active, 1);
}

/* h2o disposes of a request: its reply was written, or the client went
 * away. One that still waits for the service is freed when posted back. */
static void on_dispose(void *p) {
    req *r = *(req **)p;
    r->hreq = NULL;
    if (r->phase != P_DONE)
        atomic_fetch_add(&r->h->abandoned, 1);
    if (r->phase == P_WAITING)
        r->gone = 1;
    else
        req_free(r);
}

static int on_req(h2o_handler_t *self, h2o_req_t *q) {
    br_http *h = ((handler_t *)self)->h;
    loop_ctx *lc = (loop_ctx *)(void *)((char *)q->conn->ctx - offsetof(loop_ctx, ctx));
    size_t plen = q->input.query_at < q->input.path.len ? q->input.query_at : q->input.path.len;
    req *r = calloc(1, sizeof *r);
    char *path = r ? malloc(plen + 1) : NULL;
    if (!path) {
        free(r);
        h2o_send_error_generic(q, 503, "Service Unavailable", "out of memory\n", 0);
        return 0;
    }
    memcpy(path, q->input.path.base, plen);
    path[plen] = 0;
    r->h = h;
    r->hreq = q;
    r->lc = lc;
    r->path = path;
    if (plen < q->input.path.len) {
        r->query = q->input.path.base + plen + 1;
        r->query_len = q->input.path.len - plen - 1;
    } else {
        r->query = "";
    }
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    atomic_fetch_add(&h->active, 1);
    req **slot = h2o_mem_alloc_shared(&q->pool, sizeof *slot, on_dispose);
    *slot = r;
    char m[16];
    size_t ml = q->method.len < sizeof m - 1 ? q->method.len : sizeof m - 1;
    memcpy(m, q->method.base, ml);
    m[ml] = 0;
    r->route = classify(path, m, &r->allow);
    r->cap = r->route == R_kv_put                                ? h->o.max_value_size
             : r->route == R_root_post || r->route == R_kv_batch ? h->o.max_batch_size
                                                                 : 64 * 1024;
    /* The body is copied: h2o frees its own copy when the client goes away,
     * and a write may still be reading it then (standalone writes hold it
     * until durable). */
    if (q->entity.len > r->cap)
        r->too_large = 1;
    else if (q->entity.len && br_buf_add(&r->body, q->entity.base, q->entity.len))
        return reply_rc(r, BR_ENOMEM), 0;
    dispatch(r, path, m);
    return 0;
}

/* ---- Connections and loops ----------------------------------------------- */

static void free_handle(uv_handle_t *hd) {
    free(hd);
}

static void loop_finish(loop_ctx *lc) {
    uv_close((uv_handle_t *)&lc->wake, NULL);
    uv_stop(&lc->loop);
}

static void on_conn_close(uv_handle_t *hd) {
    conn *c = (conn *)(void *)hd;
    loop_ctx *lc = c->lc;
    if (c->prev)
        c->prev->next = c->next;
    else
        lc->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    atomic_fetch_sub(&lc->h->n_conns, 1);
    if (lc->closing && !lc->conns)
        loop_finish(lc);
}

/* Gives an accepted socket to h2o on this loop. */
static void adopt(loop_ctx *lc, int fd) {
    conn *c = lc->closing ? NULL : calloc(1, sizeof *c);
    if (!c || uv_tcp_init(&lc->loop, &c->tcp) != 0) {
        free(c);
        close(fd);
        atomic_fetch_sub(&lc->h->n_conns, 1);
        return;
    }
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        atomic_fetch_sub(&lc->h->n_conns, 1);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->lc = lc;
    c->next = lc->conns;
    if (c->next)
        c->next->prev = c;
    lc->conns = c;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_close);
    h2o_accept(&lc->actx, sock);
}

static void on_listen(uv_poll_t *p, int status, int events);

static void accept_resume(uv_timer_t *t) {
    loop_ctx *lc = t->data;
    if (lc->accepting)
        uv_poll_start(&lc->accept_poll, UV_READABLE, on_listen);
}

/* Loop 0: accepts what is pending and deals the connections out to the
 * loops in turn. */
static void on_listen(uv_poll_t *p, int status, int events) {
    loop_ctx *lc = p->data;
    br_http *h = lc->h;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The listening socket stays readable: pause rather than
                 * spin until a descriptor or memory is free again. */
                if (!lc->starved)
                    logf_(h, BR_LOG_WARN, "accept: %s (pausing 100 ms at a time)", strerror(errno));
                lc->starved = 1;
                uv_poll_stop(&lc->accept_poll);
                uv_timer_start(&lc->accept_pause, accept_resume, 100, 0);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                logf_(h, BR_LOG_WARN, "accept: %s", strerror(errno));
            }
            return;
        }
        lc->starved = 0;
        if (atomic_load(&h->n_conns) >= h->o.conn_limit) {
            close(fd); /* at the connection limit */
            continue;
        }
        atomic_fetch_add(&h->n_conns, 1);
        loop_ctx *to = &h->loops[h->next_loop++ % h->n_loops];
        if (to == lc) {
            adopt(lc, fd);
            continue;
        }
        pthread_mutex_lock(&to->mu);
        int ok = 1;
        if (to->n_new == to->cap_new) {
            size_t cap = to->cap_new ? 2 * to->cap_new : 16;
            int *v = realloc(to->new_fds, cap * sizeof *v);
            if (v) {
                to->new_fds = v;
                to->cap_new = cap;
            } else {
                ok = 0;
            }
        }
        if (ok)
            to->new_fds[to->n_new++] = fd;
        pthread_mutex_unlock(&to->mu);
        if (ok) {
            uv_async_send(&to->wake);
        } else {
            close(fd);
            atomic_fetch_sub(&h->n_conns, 1);
        }
    }
}

/* Wakes a loop: requests posted back, connections handed over, or what
 * br_http_stop asks. */
static void on_wake(uv_async_t *a) {
    loop_ctx *lc = a->data;
    br_http *h = lc->h;
    pthread_mutex_lock(&lc->mu);
    req *done = lc->done_head;
    lc->done_head = lc->done_tail = NULL;
    int *fds = lc->new_fds; /* taken whole; the acceptor starts a new array */
    size_t nf = lc->n_new;
    lc->new_fds = NULL;
    lc->n_new = lc->cap_new = 0;
    int stop_accept = lc->stop_accept, shut = lc->shutdown;
    pthread_mutex_unlock(&lc->mu);
    for (size_t i = 0; i < nf; i++)
        adopt(lc, fds[i]);
    free(fds);
    while (done) {
        req *r = done;
        done = r->next_done;
        if (r->gone) { /* the client went away meanwhile */
            atomic_fetch_sub(&h->waiting, 1);
            req_free(r);
        } else {
            finish(r);
        }
    }
    if (stop_accept && lc->accepting) {
        lc->accepting = 0;
        uv_poll_stop(&lc->accept_poll);
        uv_close((uv_handle_t *)&lc->accept_poll, NULL);
        uv_close((uv_handle_t *)&lc->accept_pause, NULL);
        atomic_store(&h->accept_done, 1);
    }
    if (shut && !lc->closing) {
        lc->closing = 1;
        /* h2o closes each connection when its next read or write fails */
        for (conn *c = lc->conns; c; c = c->next) {
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
                shutdown(fd, SHUT_RDWR);
        }
        if (!lc->conns)
            loop_finish(lc);
    }
}

static void close_walk(uv_handle_t *hd, void *arg) {
    (void)arg;
    if (!uv_is_closing(hd))
        uv_close(hd, NULL);
}

static void *loop_main(void *arg) {
    loop_ctx *lc = arg;
    uv_run(&lc->loop, UV_RUN_DEFAULT);
    h2o_context_dispose(&lc->ctx);
    uv_walk(&lc->loop, close_walk, NULL);
    uv_run(&lc->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- Life cycle ---------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
/* h2o keeps memory it frees in per-thread caches (its "recycle"
 * allocators: request pool chunks, socket buffers) for the life of the
 * thread and has no call that empties them; when an HTTP thread ends,
 * LeakSanitizer would report them. Nothing else is suppressed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:h2o_mem_alloc_recycle\n";
}
#endif

void br_http_options_init(br_http_options *o) {
    memset(o, 0, sizeof *o);
    o->bind = "127.0.0.1";
    o->port = 4000;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = n > 0 ? (unsigned)n : 2;
    o->conn_limit = 1024;
    o->timeout_s = 60;
    o->max_key_size = 64 * 1024;
    o->max_value_size = 64u << 20;
    o->max_batch_size = 64u << 20;
    o->version = "0.0.0";
}

static void loops_free(br_http *h) {
    for (unsigned i = 0; i < h->n_loops; i++) {
        loop_ctx *lc = &h->loops[i];
        uv_loop_close(&lc->loop);
        pthread_mutex_destroy(&lc->mu);
        for (size_t k = 0; k < lc->n_new; k++)
            close(lc->new_fds[k]);
        free(lc->new_fds);
    }
    free(h->loops);
    h2o_config_dispose(&h->config);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    free(h);
}

/* Asks every running loop to close its connections and end; joins them. */
static void loops_stop(br_http *h) {
    for (unsigned i = 0; i < h->n_loops; i++) {
        loop_ctx *lc = &h->loops[i];
        if (!lc->started)
            continue;
        pthread_mutex_lock(&lc->mu);
        lc->stop_accept = lc->shutdown = 1;
        pthread_mutex_unlock(&lc->mu);
        uv_async_send(&lc->wake);
    }
    for (unsigned i = 0; i < h->n_loops; i++)
        if (h->loops[i].started)
            pthread_join(h->loops[i].thread, NULL);
}

int br_http_start(br_service *svc, const br_http_options *o, br_http **out, char *err,
                  size_t errlen) {
    *out = NULL;
    br_http *h = calloc(1, sizeof *h);
    if (!h)
        return BR_ENOMEM;
    h->svc = svc;
    h->o = *o;
    h->listen_fd = -1;
    if (!h->o.conn_limit)
        h->o.conn_limit = 1;
    clock_gettime(CLOCK_MONOTONIC, &h->started);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(o->port);
    if (inet_pton(AF_INET, o->bind, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--bind wants an IPv4 address, got '%s'", o->bind);
        free(h);
        return BR_EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s:%u: %s", o->bind, (unsigned)o->port,
                 strerror(e));
        if (fd >= 0)
            close(fd);
        free(h);
        return -e;
    }
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    atomic_store(&h->port, ntohs(sa.sin_port));
    h->listen_fd = fd;

    h2o_config_init(&h->config);
    h->config.server_name = h2o_iovec_init(H2O_STRLIT("bitraft"));
    size_t maxbody = o->max_value_size > o->max_batch_size ? o->max_value_size : o->max_batch_size;
    /* h2o reads a whole body before the handler runs; past this it
     * answers 413 itself. The routes' own caps are checked in on_req. */
    h->config.max_request_entity_size = maxbody > 64 * 1024 ? maxbody : 64 * 1024;
    h->config.http1.req_timeout = (uint64_t)(o->timeout_s ? o->timeout_s : 60) * 1000;
    h->config.http2.idle_timeout = h->config.http1.req_timeout;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    handler_t *hd = (handler_t *)h2o_create_handler(path, sizeof *hd);
    hd->super.on_req = on_req;
    hd->h = h;

    unsigned n = o->threads ? o->threads : 1;
    if (n > 64)
        n = 64;
    h->loops = calloc(n, sizeof *h->loops);
    if (!h->loops) {
        h2o_config_dispose(&h->config);
        close(fd);
        free(h);
        return BR_ENOMEM;
    }
    h->n_loops = n;
    for (unsigned i = 0; i < n; i++) {
        loop_ctx *lc = &h->loops[i];
        lc->h = h;
        pthread_mutex_init(&lc->mu, NULL);
        uv_loop_init(&lc->loop);
        uv_async_init(&lc->loop, &lc->wake, on_wake);
        lc->wake.data = lc;
        h2o_context_init(&lc->ctx, &lc->loop, &h->config);
        lc->actx.ctx = &lc->ctx;
        lc->actx.hosts = h->config.hosts;
    }
    loop_ctx *l0 = &h->loops[0];
    uv_poll_init(&l0->loop, &l0->accept_poll, fd);
    l0->accept_poll.data = l0;
    uv_timer_init(&l0->loop, &l0->accept_pause);
    l0->accept_pause.data = l0;
    uv_poll_start(&l0->accept_poll, UV_READABLE, on_listen);
    l0->accepting = 1;
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        rc = -pthread_create(&h->loops[i].thread, NULL, loop_main, &h->loops[i]);
        h->loops[i].started = rc == 0;
    }
    if (rc) {
        snprintf(err, errlen, "cannot start the HTTP threads: %s", strerror(-rc));
        loops_stop(h);
        for (unsigned i = 0; i < n; i++) {
            loop_ctx *lc = &h->loops[i];
            if (lc->started)
                continue;
            h2o_context_dispose(&lc->ctx);
            uv_walk(&lc->loop, close_walk, NULL);
            uv_run(&lc->loop, UV_RUN_DEFAULT);
        }
        loops_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

uint16_t br_http_port(br_http *h) {
    return (uint16_t)atomic_load(&h->port);
}

unsigned br_http_stop(br_http *h, unsigned timeout_ms) {
    if (!h)
        return 0;
    /* Stop accepting first. */
    pthread_mutex_lock(&h->loops[0].mu);
    h->loops[0].stop_accept = 1;
    pthread_mutex_unlock(&h->loops[0].mu);
    uv_async_send(&h->loops[0].wake);
    struct timespec ts = {0, 1000 * 1000};
    while (!atomic_load(&h->accept_done))
        nanosleep(&ts, NULL);
    /* From now on a new write, even on a connection already open, is
     * refused with 503 (a client can retry elsewhere); requests in flight
     * finish. */
    atomic_store(&h->stopping, 1);
    unsigned waited = 0;
    while (atomic_load(&h->active) && waited < timeout_ms) {
        struct timespec t10 = {0, 10 * 1000 * 1000};
        nanosleep(&t10, NULL);
        waited += 10;
    }
    unsigned left = atomic_load(&h->active);
    /* An accepted write always completes and is answered: wait for those
     * the service holds, so that no completion comes after the loops end. */
    while (atomic_load(&h->submitting))
        nanosleep(&ts, NULL);
    while (atomic_load(&h->waiting))
        nanosleep(&ts, NULL);
    loops_stop(h);
    loops_free(h);
    return left;
}
