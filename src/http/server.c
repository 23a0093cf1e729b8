/*
 * server.c - the HTTP API on libmicrohttpd (docs/API.md).
 *
 * Request life cycle
 * ------------------
 * libmicrohttpd calls the access handler several times per request:
 *
 *   1st call   headers only. We allocate the request state and classify the
 *              route. We never queue a reply here (libmicrohttpd 0.9.75 then
 *              closes keep-alive connections), except a 413 for a declared
 *              Content-Length over the cap, where closing is wanted anyway.
 *   body calls append the body to a buffer up to the route's cap; past it
 *              the rest is discarded and the reply will be 413.
 *   last call  (upload_data_size == 0) validate and call the service. Reads
 *              complete inline and are answered at once. A write suspends
 *              the connection first, then hands the write to the service;
 *              the completion (on a service thread) stores the result and
 *              resumes the connection, and the next call queues the reply.
 *
 * Raw paths and query strings: the server installs an unescape callback
 * that leaves strings as they are, and decodes keys itself, strictly (a bad
 * %-escape is a 400) and binary-safely (%00 is a key byte).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
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

struct br_http {
    struct MHD_Daemon *d;
    br_service *svc;
    br_http_options o;
    MHD_socket quiesced_fd;
    struct timespec started;
    atomic_uint active;    /* requests between their first call and completion */
    atomic_int stopping;   /* set by br_http_stop: new writes get 503 */
    atomic_int submitting; /* handlers between their stopping check and submit */
    atomic_int waiting;    /* requests in P_WAITING (their connection suspended) */
    atomic_uint port;      /* the port bound, once known (threads may run before) */
    atomic_ullong requests[NROUTES][NCODES];
    atomic_ullong lat[NBUCKETS];
    atomic_ullong lat_sum_ns, lat_count;
};

/* ---- Per-request state --------------------------------------------------- */

typedef enum phase {
    P_NEW,     /* headers seen, body (if any) arriving */
    P_WAITING, /* a write or read is with the service; the connection is suspended */
    P_DONE,    /* the reply is queued */
} phase;

/* What a suspended request waits for. */
typedef enum pending { PEND_WRITE, PEND_GET, PEND_RANGE } pending;

typedef struct req {
    br_http *h;
    struct MHD_Connection *conn;
    enum route route;
    phase phase;
    struct timespec t0;
    br_buf body;
    size_t cap;        /* largest body accepted */
    int too_large;     /* the body went past cap; the rest was discarded */
    unsigned status;   /* status replied, for the metrics */
    const char *allow; /* the methods the path takes (static) */
    const char *url;   /* the raw path, valid during the current handler call */
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
} req;

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

static enum MHD_Result queue(req *r, unsigned status, struct MHD_Response *resp,
                             const char *ctype) {
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 405 && r->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->phase = P_DONE;
    return ok;
}

/* A reply whose body is a copy of text. */
static enum MHD_Result reply_text(req *r, unsigned status, const char *text) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    return queue(r, status, resp, "text/plain; charset=utf-8");
}

/* A 503 for a write that was accepted and may or may not have been
 * applied: the header tells clients (and the linearizability recorder)
 * not to count it as rejected. */
static enum MHD_Result reply_unknown(req *r, const char *text) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (resp)
        MHD_add_response_header(resp, "X-Bitraft-Outcome", "unknown");
    return queue(r, 503, resp, "text/plain; charset=utf-8");
}

/* A reply that takes a malloc'd buffer. */
static enum MHD_Result reply_owned(req *r, unsigned status, void *buf, size_t len,
                                   const char *ctype) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, buf ? buf : (void *)"", buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        free(buf);
    return queue(r, status, resp, ctype);
}

static enum MHD_Result reply_err(req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_err(req *r, unsigned status, const char *fmt, ...) {
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

/* Appends the request's raw query string ("?a=b&c") to b. */
static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value) {
    br_buf *b = cls;
    (void)kind;
    int err = br_buf_addc(b, b->len && memchr(b->p, '?', b->len) ? '&' : '?') ||
              br_buf_adds(b, key) || (value && (br_buf_addc(b, '=') || br_buf_adds(b, value)));
    return err ? MHD_NO : MHD_YES;
}

/*
 * This node cannot serve the request (not the leader): a 307 to the leader
 * with the same path and query (a 307 keeps the method and the body), or a
 * 503 with Retry-After when no leader is known.
 */
static enum MHD_Result reply_not_leader(req *r) {
    uint64_t self = 0, leader = 0;
    char addr[256] = "";
    br_service_leader(r->h->svc, &self, &leader, addr, sizeof addr);
    if (!leader || leader == self || !addr[0] || !r->url) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            strlen(NO_LEADER_MSG), (void *)NO_LEADER_MSG, MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, "Retry-After", "1");
        return queue(r, 503, resp, "text/plain; charset=utf-8");
    }
    br_buf loc = {0};
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)leader);
    int err = br_buf_adds(&loc, "http://") || br_buf_adds(&loc, addr) || br_buf_adds(&loc, r->url);
    if (!err && MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, add_arg, &loc) < 0)
        err = 1;
    err = err || br_buf_addc(&loc, 0);
    char *msg = NULL;
    int n =
        err ? -1 : asprintf(&msg, "not the leader; the leader is node %s at http://%s\n", id, addr);
    struct MHD_Response *resp =
        n < 0 ? NULL : MHD_create_response_from_buffer((size_t)n, msg, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(msg);
        free(loc.p);
        return reply_err(r, 500, "out of memory");
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc.p);
    MHD_add_response_header(resp, "X-Bitraft-Leader", id);
    free(loc.p);
    return queue(r, 307, resp, "text/plain; charset=utf-8");
}

/* Maps a service error to a status and a reason. */
static enum MHD_Result reply_rc(req *r, int rc) {
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
static int arg(req *r, const char *name, char **out, size_t *len) {
    const char *v = NULL;
    size_t vl = 0;
    *out = NULL;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v,
                                      &vl) != MHD_YES)
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

static void write_done(void *ctx, int rc) {
    req *r = ctx;
    atomic_store_explicit(&r->rc, rc, memory_order_release);
    if (!r->inline_write)
        MHD_resume_connection(r->conn);
}

static enum MHD_Result reply_write(req *r);

/* Suspends the connection and hands a request to the service (submit);
 * the reply comes on the call after the completion resumes the
 * connection. */
static enum MHD_Result suspend_submit(req *r, pending what, int (*submit)(req *r)) {
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
    MHD_suspend_connection(r->conn);
    int rc = submit(r);
    if (rc) {
        /* Not accepted: the completion will never run. */
        atomic_store(&r->rc, rc);
        MHD_resume_connection(r->conn);
    } else {
        r->accepted = 1;
    }
    atomic_fetch_sub(&h->submitting, 1);
    return MHD_YES;
}

/* Hands a write to the service: on the caller's thread when the service
 * completes writes inline, else with the connection suspended. */
static enum MHD_Result start_write(req *r, int (*submit)(req *r)) {
    if (br_service_writes_inline(r->h->svc)) {
        /* The write never waits for a flush (--sync interval or never):
         * no suspension, no thread hop. */
        r->inline_write = 1;
        int rc = submit(r);
        if (rc)
            atomic_store(&r->rc, rc);
        else
            r->accepted = 1;
        return reply_write(r);
    }
    return suspend_submit(r, PEND_WRITE, submit);
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

static enum MHD_Result finish_get(req *r, int rc);
static enum MHD_Result reply_range(req *r, int rc, br_service_iter *it);

/* The call after a suspended request's completion resumed the connection. */
static enum MHD_Result finish(req *r) {
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

static enum MHD_Result reply_member_change(req *r, int rc);

static enum MHD_Result reply_write(req *r) {
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
        snprintf(msg, sizeof msg, "{\"ok\":true,\"ops\":%d}\n", r->nops);
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(strlen(msg), msg, MHD_RESPMEM_MUST_COPY);
        return queue(r, 200, resp, "application/json");
    }
    default:
        return reply_owned(r, 204, NULL, 0, NULL);
    }
}

/* ---- Reads --------------------------------------------------------------- */

/*
 * Reads complete inline (standalone, or a stale read) or, when the service
 * needs a read barrier first (a linearizable read in cluster mode), with
 * the connection suspended like a write: the completion stores the result
 * in the request and resumes it. A get waits for the barrier alone
 * (br_service_read_barrier) and reads the store after the resume, on this
 * thread; a range gets its iterator with the completion.
 */

static enum MHD_Result reply_get(req *r, int rc, void *val, size_t vlen) {
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
 * barrier with the connection suspended; the store is read here, on the
 * HTTP thread, once the barrier has passed (finish_get), so the node's
 * thread does nothing per get but wake the connection. */
static void barrier_done(void *ctx, int rc) {
    req *r = ctx;
    atomic_store_explicit(&r->rc, rc, memory_order_release);
    MHD_resume_connection(r->conn);
}

static int submit_get(req *r) {
    return br_service_read_barrier(r->h->svc, barrier_done, r);
}

/* Reads r->key after its barrier (rc 0) and replies. */
static enum MHD_Result finish_get(req *r, int rc) {
    get_result g = {0};
    if (rc == 0) {
        rc = br_service_get(r->h->svc, r->key, r->klen, BR_SERVICE_STALE, get_done, &g);
        if (rc == 0)
            rc = g.rc;
    }
    return reply_get(r, rc, g.val, g.vlen);
}

static enum MHD_Result do_get(req *r, const char *key, size_t klen) {
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
    return suspend_submit(r, PEND_GET, submit_get);
}

/* A streamed range reply: entries are formatted into pend a few at a time
 * and copied out as libmicrohttpd asks for them. */
typedef struct stream {
    br_service_iter *it;
    int ndjson;   /* 1: {"key":..} lines; 0: the original's "K,V" lines */
    int int_keys; /* keys are 8-byte numbers, shown in decimal */
    size_t limit; /* 0 = none; else the iterator holds limit + 1 */
    size_t count; /* entries taken from the iterator */
    int finished; /* nothing more to format */
    br_buf pend;  /* formatted, not yet handed out */
    size_t off;   /* handed out of pend */
    br_http *h;
} stream;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    (void)pos;
    if (st->off == st->pend.len) {
        st->off = st->pend.len = 0;
        while (!st->finished && st->pend.len < max) {
            const void *k, *v;
            size_t kl, vl;
            int rc = br_service_iter_next(st->it, &k, &kl, &v, &vl);
            if (rc < 0) {
                logf_(st->h, BR_LOG_ERROR, "range: %s", br_strerror(rc));
                return MHD_CONTENT_READER_END_WITH_ERROR;
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
            if (err)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (st->pend.len == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = st->pend.len - st->off;
    if (n > max)
        n = max;
    memcpy(buf, st->pend.p + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream *st = cls;
    br_service_iter_free(st->it);
    free(st->pend.p);
    free(st);
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
    MHD_resume_connection(r->conn);
}

static int submit_range(req *r) {
    return br_service_range(r->h->svc, r->rs, r->rsl, r->re, r->rel, r->limit ? r->limit + 1 : 0,
                            r->rflags, range_async_done, r);
}

static enum MHD_Result do_range(req *r, const char *s, size_t sl, const char *e, size_t el,
                                uint64_t limit, int ndjson) {
    size_t lim = limit >= SIZE_MAX - 1 ? 0 : (size_t)limit;
    char sb[8], eb[8];
    if ((s && wire_key(r->h, &s, &sl, sb)) || (e && wire_key(r->h, &e, &el, eb)))
        return reply_err(r, 400, INT_KEY_MSG);
    r->ndjson = ndjson;
    r->limit = lim;
    if (!br_service_reads_inline(r->h->svc, r->rflags)) {
        r->rs = s, r->rsl = sl, r->re = e, r->rel = el;
        return suspend_submit(r, PEND_RANGE, submit_range);
    }
    range_result x = {0};
    int rc =
        br_service_range(r->h->svc, s, sl, e, el, lim ? lim + 1 : 0, r->rflags, range_done, &x);
    if (rc == 0)
        rc = x.rc;
    return reply_range(r, rc, x.it);
}

/* Replies to a range: the stream over it, or the error rc. */
static enum MHD_Result reply_range(req *r, int rc, br_service_iter *it) {
    if (rc) {
        br_service_iter_free(it);
        return reply_rc(r, rc);
    }
    stream *st = calloc(1, sizeof *st);
    if (!st) {
        br_service_iter_free(it);
        return reply_rc(r, BR_ENOMEM);
    }
    st->it = it;
    st->ndjson = r->ndjson;
    st->int_keys = r->h->o.int_keys;
    st->limit = r->limit;
    st->h = r->h;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                  stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    return queue(r, 200, resp, r->ndjson ? "application/x-ndjson" : "text/plain; charset=utf-8");
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

static enum MHD_Result do_batch(req *r, int ndjson) {
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

static enum MHD_Result do_status(req *r) {
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

static enum MHD_Result do_metrics(req *r) {
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
static enum MHD_Result do_compact(req *r) {
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "min_dead_pct");
    unsigned long pct = 0;
    if (v) {
        char *end;
        errno = 0;
        pct = strtoul(v, &end, 10);
        if (!*v || *end || errno || pct > 100)
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
static enum MHD_Result reply_members(req *r) {
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
static enum MHD_Result reply_member_change(req *r, int rc) {
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
        static const char msg[] = "another membership change is being applied; retry shortly\n";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, "Retry-After", "1");
        return queue(r, 503, resp, "text/plain; charset=utf-8");
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
static enum MHD_Result do_member_add(req *r) {
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
static enum MHD_Result do_member_remove(req *r, const char *url) {
    const char *id = url + strlen("/admin/members/");
    uint64_t v;
    if (br_parse_u64(id, strlen(id), &v) || v == 0)
        return reply_err(r, 400, "the path must end in a node id (a whole number above 0)");
    r->member.id = v;
    return start_write(r, submit_member_remove);
}

/* ---- Dispatch ------------------------------------------------------------ */

static enum MHD_Result do_usage(req *r) {
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
static enum MHD_Result root_get(req *r) {
    char *key = NULL, *s = NULL, *e = NULL;
    size_t kl = 0, sl = 0, el = 0;
    enum MHD_Result res;
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

static enum MHD_Result root_delete(req *r) {
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
static int kv_key(req *r, const char *url, enum MHD_Result *res) {
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

static enum MHD_Result kv_range(req *r) {
    char *s = NULL, *e = NULL, *l = NULL;
    size_t sl = 0, el = 0, ll = 0;
    uint64_t limit = 0;
    enum MHD_Result res;
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

static enum MHD_Result dispatch(req *r, const char *url, const char *method) {
    enum MHD_Result res;
    if (r->too_large)
        return reply_err(r, 413, "request body is larger than %zu bytes", r->cap);
    if (r->route == R_root_usage || r->route == R_kv_get || r->route == R_kv_range) {
        /* ?consistency=stale reads this node's store as it is (it may lag
         * the leader); the default is linearizable. */
        const char *c = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "consistency");
        if (c && strcmp(c, "stale") == 0)
            r->rflags = BR_SERVICE_STALE;
        else if (c && strcmp(c, "linearizable") != 0)
            return reply_err(r, 400, "consistency must be linearizable (the default) or stale");
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

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
    br_http *h = cls;
    req *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->h = h;
        r->conn = conn;
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        r->route = classify(url, method, &r->allow);
        r->cap = r->route == R_kv_put                                ? h->o.max_value_size
                 : r->route == R_root_post || r->route == R_kv_batch ? h->o.max_batch_size
                                                                     : 64 * 1024;
        *con_cls = r;
        atomic_fetch_add(&h->active, 1);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t len;
        if (cl && br_parse_u64(cl, strlen(cl), &len) == 0 && len > r->cap) {
            r->too_large = 1;
            /* Answer before the body is sent; libmicrohttpd closes the
             * connection after this reply, which is what we want. */
            return reply_err(r, 413, "request body is larger than %zu bytes", r->cap);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->phase == P_DONE || r->too_large)
            return MHD_YES;
        if (n > r->cap - r->body.len) {
            r->too_large = 1;
            free(r->body.p);
            r->body = (br_buf){0};
            return MHD_YES;
        }
        return br_buf_add(&r->body, upload_data, n) ? MHD_NO : MHD_YES;
    }
    r->url = url;
    switch (r->phase) {
    case P_NEW:
        return dispatch(r, url, method);
    case P_WAITING:
        return finish(r);
    default:
        return MHD_YES; /* reply already queued */
    }
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    br_http *h = cls;
    req *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->phase == P_WAITING) /* resumed, then the client was gone */
        atomic_fetch_sub(&h->waiting, 1);
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
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    br_service_batch_free(r->batch);
    br_service_iter_free(r->it);
    free(r->key);
    free(r->body.p);
    free((char *)r->member.host);
    free((char *)r->member.client_addr);
    free(r);
    atomic_fetch_sub(&h->active, 1);
}

/* Leaves %-escapes and '+' for the server to decode itself (binary-safe,
 * strict). */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls, (void)c;
    return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    br_http *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    if (h->o.log)
        h->o.log(h->o.log_ctx, BR_LOG_DEBUG, msg); /* mostly clients' errors */
}

/* ---- Life cycle ---------------------------------------------------------- */

void br_http_options_init(br_http_options *o) {
    memset(o, 0, sizeof *o);
    o->bind = "127.0.0.1";
    o->port = 4000;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = n > 0 ? (unsigned)n : 2;
    o->conn_limit = 1024;
    o->timeout_s = 60;
    o->max_key_size = 64 * 1024;
    o->conn_memory = 16 * 1024;
    o->max_value_size = 64u << 20;
    o->max_batch_size = 64u << 20;
    o->version = "0.0.0";
}

int br_http_start(br_service *svc, const br_http_options *o, br_http **out, char *err,
                  size_t errlen) {
    *out = NULL;
    br_http *h = calloc(1, sizeof *h);
    if (!h)
        return BR_ENOMEM;
    h->svc = svc;
    h->o = *o;
    h->quiesced_fd = MHD_INVALID_SOCKET;
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
    /* libmicrohttpd splits the connection cap among its threads. */
    unsigned int threads = o->threads ? o->threads : 1;
    if (threads > o->conn_limit)
        threads = o->conn_limit ? o->conn_limit : 1;
    /* libmicrohttpd zeroes a connection's whole memory pool after every
     * request on a keep-alive connection: a pool larger than the requests
     * need costs CPU on every request (64 KiB took ~10% of a cluster
     * leader's CPU). */
    size_t conn_memory = o->conn_memory ? o->conn_memory : 16 * 1024;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    h->d = MHD_start_daemon(flags, o->port, NULL, NULL, handler, h, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_log, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)o->conn_limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)o->timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            conn_memory, MHD_OPTION_NOTIFY_COMPLETED, completed, h,
                            MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, h, MHD_OPTION_END);
    if (!h->d) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s:%u: %s", o->bind, (unsigned)o->port,
                 e ? strerror(e) : "libmicrohttpd refused to start");
        free(h);
        return e ? -e : BR_EINVAL;
    }
    atomic_store(&h->port, br_http_port(h));
    *out = h;
    return 0;
}

uint16_t br_http_port(br_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : h->o.port;
}

unsigned br_http_stop(br_http *h, unsigned timeout_ms) {
    if (!h)
        return 0;
    h->quiesced_fd = MHD_quiesce_daemon(h->d);
    /* From now on a new write, even on a connection already open, is
     * refused with 503 (a client can retry elsewhere); requests in flight
     * finish. */
    atomic_store(&h->stopping, 1);
    unsigned waited = 0;
    while (atomic_load(&h->active) && waited < timeout_ms) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited += 10;
    }
    unsigned left = atomic_load(&h->active);
    /* libmicrohttpd must not be stopped with a connection suspended, and a
     * suspended connection is a write with the service: wait until every
     * accepted write has completed and its connection has been resumed and
     * answered (a write always completes). */
    struct timespec ts = {0, 1000 * 1000};
    while (atomic_load(&h->submitting))
        nanosleep(&ts, NULL);
    while (atomic_load(&h->waiting))
        nanosleep(&ts, NULL);
    MHD_stop_daemon(h->d);
    if (h->quiesced_fd != MHD_INVALID_SOCKET)
        close(h->quiesced_fd);
    free(h);
    return left;
}
