/*
 * transport.c - the peer transport: framed raft messages over TCP on libuv.
 *
 * Wire format
 * -----------
 * A connection carries frames. All integers are little-endian.
 *
 *   off  size  field
 *   0    4     length L of the payload, 1 <= L <= limit
 *   4    4     checksum: the low 32 bits of XXH3_64bits(payload)
 *   8    L     payload
 *
 * The limit is max_frame_bytes for messages and HELLO_MAX (282) while a
 * hello is expected, so an unauthenticated connection can never make us
 * hold more than a few hundred bytes. A length of 0 or above the limit is
 * rejected as soon as the 8-byte header is in, before any payload is read
 * or allocated; the receive buffer then grows only as payload bytes really
 * arrive. A frame is valid when its length is in range and the checksum of
 * the payload matches; only then is the payload looked at.
 *
 * The first frame in each direction is a hello; its payload:
 *
 *   off  size  field
 *   0    4     magic "BRTH"
 *   4    2     protocol version (1)
 *   6    2     reserved, 0
 *   8    8     sender node id
 *   16   8     recipient node id (the node the sender means to reach)
 *   24   2     token length T, 0 <= T <= 256
 *   26   T     cluster token bytes
 *
 * A hello is valid when its payload is exactly 26 + T bytes, the magic,
 * version and reserved field match, and (checked by the receiver) the token
 * equals its own (compared in constant time), the recipient is the
 * receiver and the sender is a configured peer other than itself.
 *
 * Conversation: the dialer connects and sends its hello; the acceptor
 * checks it and answers with its own hello (sender = acceptor, recipient =
 * dialer), which the dialer checks in turn against the peer it dialled.
 * After that the dialer sends one frame per message, whose payload is the
 * message (opaque here), and the acceptor sends nothing: any further frame
 * from the acceptor is a protocol error. Any invalid frame closes the
 * connection; nothing of it is delivered.
 *
 * Sending: br_transport_send() copies a message into a frame (header and
 * payload in one allocation) on the peer's queue. A uv_idle handle flushes
 * the queues once per loop iteration, so the messages produced in one
 * iteration leave in one writev of up to BATCH_MAX_BUFS frames; while a
 * write is in flight newer messages wait and go in the next batch. One
 * write at a time per connection keeps the order.
 */
#include "transport.h"

#include "bitraft/error.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#define FRAME_HDR       8
#define HELLO_FIXED     26
#define HELLO_MAX       (HELLO_FIXED + BR_TRANSPORT_MAX_TOKEN)
#define PROTO_VERSION   1
#define BATCH_MAX_BUFS  512
#define BATCH_MAX_BYTES (4u << 20)
#define READ_BUF_SIZE   (64u << 10)
#define RBUF_KEEP       (256u << 10) /* receive buffers above this are freed after a frame */
#define LOG_WINDOW_MS   1000
#define LOG_PER_WINDOW  20
#define LISTEN_BACKLOG  128

static const uint8_t hello_magic[4] = {'B', 'R', 'T', 'H'};

/* ================================================================ types */

/* A queued message: a complete frame, header included. */
struct msg {
    struct msg *next;
    size_t frame_len; /* FRAME_HDR + payload */
    uint8_t frame[];
};

/* What a message costs against max_queue_bytes. */
static uint64_t msg_cost(const struct msg *m) {
    return sizeof(*m) + m->frame_len;
}

enum conn_state {
    C_CONNECTING, /* outbound: TCP connect in progress */
    C_HELLO,      /* waiting for the other side's hello */
    C_OPEN,       /* handshake done */
    C_CLOSING     /* uv_close() issued; waiting for the close callbacks */
};

/* Why a connection is closed (selects the counter and the log line). */
enum close_kind { K_IO, K_PROTOCOL, K_TOKEN, K_PEER, K_TIMEOUT, K_OVERLOAD };

struct peer;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake deadline */
    uv_connect_t connect_req;
    uv_write_t hello_req;
    uv_write_t write_req;
    br_transport *t;
    struct peer *peer;        /* outbound: the peer dialled; inbound: the authenticated sender;
                                 NULL once detached (or before the hello) */
    struct conn *prev, *next; /* inbound connections list */
    bool outbound;
    bool writing; /* write_req in flight */
    int state;    /* enum conn_state */
    int handles;  /* open uv handles (tcp, timer); freed at 0 */
    uint64_t bytes_in;
    /* Reader: the header being read, then the payload. */
    uint8_t hdr[FRAME_HDR];
    uint32_t hdr_have;
    uint32_t flen, fsum;
    uint8_t *buf; /* payload of a frame split over reads; capacity cap */
    size_t cap, have;
    /* Writer: the batch in flight and what it counts. */
    struct msg *batch;
    size_t batch_n;
    uint64_t batch_cost, batch_payload;
    uv_buf_t bufs[BATCH_MAX_BUFS];
    uint8_t hello[FRAME_HDR + HELLO_MAX];
    char remote[64];
};

struct peer {
    br_transport *t;
    struct peer *next;
    uint64_t id;
    char *host;
    uint16_t port;
    struct sockaddr_storage addr;
    bool have_addr;   /* host was an address literal */
    uv_timer_t timer; /* redial */
    uv_getaddrinfo_t gai;
    bool resolving;
    uint32_t addr_turn; /* which resolved address to try: advances on each failed dial */
    bool removed;
    int refs;         /* timer handle + pending resolution; freed at 0 */
    struct conn *out; /* our connection to it, in any state */
    struct conn *in;  /* its authenticated connection to us */
    bool connected;   /* out is open */
    bool down_logged; /* a failure was logged since the last success */
    uint32_t backoff_ms;
    struct msg *qhead, *qtail; /* not yet written */
    uint64_t q_frames, q_cost; /* queued + in flight */
    struct br_transport_counters st;
};

struct br_transport {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_idle_t flusher;
    bool flush_armed;
    bool closing;
    int handles; /* open handles and requests; freed at 0 once closing */
    void (*close_cb)(void *arg);
    void *close_arg;

    uint64_t self_id;
    uint8_t token[BR_TRANSPORT_MAX_TOKEN]; /* zero-padded */
    size_t token_len;
    uint32_t max_frame;
    uint64_t max_queue;
    uint32_t backoff_min, backoff_max;
    uint32_t hs_timeout_ms;
    uint32_t keepalive_s;
    uint32_t max_pending;
    uint16_t port;
    void (*on_message)(void *ctx, uint64_t from, const uint8_t *bytes, size_t len);
    void (*on_peer_state)(void *ctx, uint64_t peer, bool connected);
    void *ctx;
    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;

    struct peer *peers;
    uint32_t n_peers;
    struct conn *inbound; /* pending and authenticated */
    uint32_t n_pending, n_inbound_open;
    uint64_t rng;

    uint64_t log_window, log_suppressed;
    uint32_t log_count;

    struct br_transport_stats st;
    uint8_t rbuf[READ_BUF_SIZE]; /* every read lands here; consumed before the next */
};

/* ================================================================ helpers */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t frame_sum(const uint8_t *payload, size_t len) {
    return (uint32_t)XXH3_64bits(payload, len);
}

/* splitmix64, for backoff jitter only. */
static uint64_t next_rand(br_transport *t) {
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Constant-time comparison of two zero-padded tokens: the time depends on
 * neither content nor where they differ. */
static bool token_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    unsigned diff = (unsigned)(alen ^ blen);
    for (size_t i = 0; i < BR_TRANSPORT_MAX_TOKEN; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

__attribute__((format(printf, 3, 0))) static void tlogv(br_transport *t, int level, const char *fmt,
                                                        va_list ap) {
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    t->log_fn(t->log_ctx, level, line);
}

__attribute__((format(printf, 3, 4))) static void tlog(br_transport *t, int level, const char *fmt,
                                                       ...) {
    if (!t->log_fn)
        return;
    va_list ap;
    va_start(ap, fmt);
    tlogv(t, level, fmt, ap);
    va_end(ap);
}

/* For lines a remote can cause at will: at most LOG_PER_WINDOW per second,
 * then one line saying how many were suppressed. */
__attribute__((format(printf, 3, 4))) static void tlog_limited(br_transport *t, int level,
                                                               const char *fmt, ...) {
    if (!t->log_fn)
        return;
    uint64_t now = uv_now(t->loop);
    if (now - t->log_window >= LOG_WINDOW_MS) {
        if (t->log_suppressed > 0)
            tlog(t, BR_TRANSPORT_LOG_WARN, "transport: %llu log lines suppressed",
                 (unsigned long long)t->log_suppressed);
        t->log_window = now;
        t->log_count = 0;
        t->log_suppressed = 0;
    }
    if (t->log_count >= LOG_PER_WINDOW) {
        t->log_suppressed++;
        return;
    }
    t->log_count++;
    va_list ap;
    va_start(ap, fmt);
    tlogv(t, level, fmt, ap);
    va_end(ap);
}

static struct peer *peer_find(const br_transport *t, uint64_t id) {
    for (struct peer *p = t->peers; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* One libuv handle or request of the transport finished closing. */
static void t_done(br_transport *t) {
    if (--t->handles == 0 && t->closing) {
        void (*cb)(void *) = t->close_cb;
        void *arg = t->close_arg;
        free(t);
        if (cb)
            cb(arg);
    }
}

static void free_msgs(struct msg *m) {
    while (m) {
        struct msg *next = m->next;
        free(m);
        m = next;
    }
}

static void count_lost(struct peer *p, uint64_t n) {
    p->st.lost += n;
    p->t->st.c.lost += n;
}

/* Discards what waits in p's queue (not the batch in flight). */
static void peer_discard_queue(struct peer *p) {
    uint64_t n = 0, cost = 0;
    for (struct msg *m = p->qhead; m; m = m->next) {
        n++;
        cost += msg_cost(m);
    }
    free_msgs(p->qhead);
    p->qhead = p->qtail = NULL;
    p->q_frames -= n;
    p->q_cost -= cost;
    count_lost(p, n);
}

/* ================================================================ hello */

static void hello_encode(const br_transport *t, uint64_t to, uint8_t *out, size_t *len) {
    uint8_t *p = out + FRAME_HDR;
    memcpy(p, hello_magic, 4);
    put16(p + 4, PROTO_VERSION);
    put16(p + 6, 0);
    put64(p + 8, t->self_id);
    put64(p + 16, to);
    put16(p + 24, (uint16_t)t->token_len);
    memcpy(p + 26, t->token, t->token_len);
    size_t plen = HELLO_FIXED + t->token_len;
    put32(out, (uint32_t)plen);
    put32(out + 4, frame_sum(p, plen));
    *len = FRAME_HDR + plen;
}

struct hello {
    uint64_t from, to;
    size_t token_len;
    uint8_t token[BR_TRANSPORT_MAX_TOKEN]; /* zero-padded */
};

/* Parses a hello payload. Returns NULL or why it is malformed. */
static const char *hello_decode(const uint8_t *p, size_t len, struct hello *h) {
    if (len < HELLO_FIXED)
        return "hello too short";
    if (memcmp(p, hello_magic, 4) != 0)
        return "bad hello magic";
    if (get16(p + 4) != PROTO_VERSION)
        return "unsupported protocol version";
    if (get16(p + 6) != 0)
        return "reserved hello bits set";
    h->from = get64(p + 8);
    h->to = get64(p + 16);
    h->token_len = get16(p + 24);
    if (h->token_len > BR_TRANSPORT_MAX_TOKEN || HELLO_FIXED + h->token_len != len)
        return "bad hello token length";
    memset(h->token, 0, sizeof(h->token));
    memcpy(h->token, p + HELLO_FIXED, h->token_len);
    return NULL;
}

/* ================================================================ connections */

static void conn_close(struct conn *c);
static void peer_flush(struct peer *p);
static void peer_schedule_dial(struct peer *p, bool failed);

static void conn_handle_closed(uv_handle_t *h) {
    struct conn *c = h->data;
    br_transport *t = c->t;
    if (--c->handles == 0) {
        free_msgs(c->batch);
        free(c->buf);
        free(c);
    }
    t_done(t);
}

/* Allocates a connection with its two handles initialized. NULL: no
 * memory (nothing to clean up). */
static struct conn *conn_new(br_transport *t, bool outbound) {
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->t = t;
    c->outbound = outbound;
    c->state = outbound ? C_CONNECTING : C_HELLO;
    /* On Unix neither init fails for these arguments (no socket is made). */
    uv_tcp_init(t->loop, &c->tcp);
    uv_timer_init(t->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->hello_req.data = c;
    c->write_req.data = c;
    c->handles = 2;
    t->handles += 2;
    snprintf(c->remote, sizeof(c->remote), "?");
    return c;
}

/* Cuts the link between c and its peer. An outbound connection hands the
 * batch it has in flight back to nobody: those messages count as lost
 * (they may or may not have arrived) and leave the peer's queue bound. */
static void conn_detach(struct conn *c) {
    struct peer *p = c->peer;
    if (!p)
        return;
    if (c->outbound) {
        if (c->writing) {
            p->q_cost -= c->batch_cost;
            p->q_frames -= c->batch_n;
            count_lost(p, c->batch_n);
        }
        p->out = NULL;
        p->connected = false;
    } else if (p->in == c) {
        p->in = NULL;
        c->t->n_inbound_open--;
    }
    c->peer = NULL;
}

/* Closes c (idempotent) without callbacks or logging. */
static void conn_close(struct conn *c) {
    if (c->state == C_CLOSING)
        return;
    br_transport *t = c->t;
    if (!c->outbound) {
        if (c->state == C_HELLO)
            t->n_pending--;
        if (c->prev)
            c->prev->next = c->next;
        else
            t->inbound = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
    }
    conn_detach(c);
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/*
 * Closes c because of `kind` (err: the libuv/errno code when there is
 * one), counts and logs it, and for an outbound connection tells the
 * caller and schedules the redial.
 */
__attribute__((format(printf, 4, 5))) static void conn_fail(struct conn *c, int kind, int err,
                                                            const char *fmt, ...) {
    if (c->state == C_CLOSING)
        return;
    br_transport *t = c->t;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    const char *ename = err ? uv_err_name(err) : "";
    const char *sep = err ? ": " : "";

    if (!c->outbound) {
        if (c->state == C_HELLO) {
            switch (kind) {
            case K_TOKEN:
                t->st.rejected_token++;
                break;
            case K_PEER:
                t->st.rejected_peer++;
                break;
            case K_TIMEOUT:
                t->st.rejected_timeout++;
                break;
            case K_OVERLOAD:
                t->st.rejected_overload++;
                break;
            default:
                t->st.rejected_protocol++;
                break;
            }
            tlog_limited(t, BR_TRANSPORT_LOG_WARN, "transport: rejected connection from %s: %s%s%s",
                         c->remote, why, sep, ename);
        } else if (c->peer) {
            if (kind == K_PROTOCOL) {
                t->st.protocol_errors++;
                tlog_limited(t, BR_TRANSPORT_LOG_WARN,
                             "transport: closed connection from peer %llu (%s): %s",
                             (unsigned long long)c->peer->id, c->remote, why);
            } else {
                tlog(t, BR_TRANSPORT_LOG_INFO, "transport: peer %llu closed its connection: %s%s%s",
                     (unsigned long long)c->peer->id, why, sep, ename);
            }
        }
        conn_close(c);
        return;
    }

    struct peer *p = c->peer;
    bool was_open = c->state == C_OPEN;
    conn_close(c);
    if (!p)
        return;
    if (kind == K_PROTOCOL || kind == K_TOKEN || kind == K_PEER) {
        if (was_open)
            t->st.protocol_errors++;
        tlog_limited(t, BR_TRANSPORT_LOG_WARN, "transport: peer %llu at %s:%u: %s%s%s",
                     (unsigned long long)p->id, p->host, p->port, why, sep, ename);
        p->down_logged = true;
    } else if (was_open) {
        tlog(t, BR_TRANSPORT_LOG_WARN, "transport: lost connection to peer %llu at %s:%u: %s%s%s",
             (unsigned long long)p->id, p->host, p->port, why, sep, ename);
        p->down_logged = true;
    } else {
        tlog(t, p->down_logged ? BR_TRANSPORT_LOG_DEBUG : BR_TRANSPORT_LOG_WARN,
             "transport: cannot reach peer %llu at %s:%u: %s%s%s; retrying with backoff",
             (unsigned long long)p->id, p->host, p->port, why, sep, ename);
        p->down_logged = true;
    }
    if (!was_open) { /* a dial failed: do not keep messages for a peer that is down */
        peer_discard_queue(p);
        p->addr_turn++;
    }
    peer_schedule_dial(p, !was_open);
    if (was_open && t->on_peer_state)
        t->on_peer_state(t->ctx, p->id, false);
}

static void conn_timeout(uv_timer_t *timer) {
    struct conn *c = timer->data;
    conn_fail(c, K_TIMEOUT, UV_ETIMEDOUT, "handshake not done within %u ms", c->t->hs_timeout_ms);
}

static void hello_written(uv_write_t *req, int status) {
    struct conn *c = req->data;
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, K_IO, status, "writing hello failed");
}

static int conn_send_hello(struct conn *c, uint64_t to) {
    size_t len;
    hello_encode(c->t, to, c->hello, &len);
    uv_buf_t b = uv_buf_init((char *)c->hello, (unsigned)len);
    return uv_write(&c->hello_req, (uv_stream_t *)&c->tcp, &b, 1, hello_written);
}

/* Inbound: the dialer's hello arrived (checksum already verified). */
static void inbound_hello(struct conn *c, const uint8_t *payload, size_t len) {
    br_transport *t = c->t;
    struct hello h;
    const char *bad = hello_decode(payload, len, &h);
    if (bad) {
        conn_fail(c, K_PROTOCOL, 0, "%s", bad);
        return;
    }
    if (!token_equal(h.token, h.token_len, t->token, t->token_len)) {
        conn_fail(c, K_TOKEN, 0, "cluster token mismatch (claims to be node %llu)",
                  (unsigned long long)h.from);
        return;
    }
    if (h.to != t->self_id) {
        conn_fail(c, K_PEER, 0, "hello from node %llu is for node %llu, this is node %llu",
                  (unsigned long long)h.from, (unsigned long long)h.to,
                  (unsigned long long)t->self_id);
        return;
    }
    struct peer *p = h.from == t->self_id ? NULL : peer_find(t, h.from);
    if (!p) {
        conn_fail(c, K_PEER, 0, "node %llu is not a configured peer", (unsigned long long)h.from);
        return;
    }
    int rc = conn_send_hello(c, p->id);
    if (rc < 0) {
        conn_fail(c, K_IO, rc, "cannot answer hello");
        return;
    }
    if (p->in) {
        tlog(t, BR_TRANSPORT_LOG_INFO,
             "transport: peer %llu reconnected from %s; closing its older connection",
             (unsigned long long)p->id, c->remote);
        conn_close(p->in);
    }
    t->n_pending--;
    t->n_inbound_open++;
    c->state = C_OPEN;
    c->peer = p;
    p->in = c;
    uv_timer_stop(&c->timer);
    tlog(t, BR_TRANSPORT_LOG_INFO, "transport: accepted connection from peer %llu (%s)",
         (unsigned long long)p->id, c->remote);
}

/* Outbound: the acceptor's answer arrived (checksum already verified). */
static void outbound_hello(struct conn *c, const uint8_t *payload, size_t len) {
    br_transport *t = c->t;
    struct peer *p = c->peer;
    struct hello h;
    const char *bad = hello_decode(payload, len, &h);
    if (bad) {
        conn_fail(c, K_PROTOCOL, 0, "%s", bad);
        return;
    }
    if (!token_equal(h.token, h.token_len, t->token, t->token_len)) {
        conn_fail(c, K_TOKEN, 0, "cluster token mismatch");
        return;
    }
    if (h.from != p->id || h.to != t->self_id) {
        conn_fail(c, K_PEER, 0, "answered as node %llu to node %llu", (unsigned long long)h.from,
                  (unsigned long long)h.to);
        return;
    }
    c->state = C_OPEN;
    uv_timer_stop(&c->timer);
    p->connected = true;
    p->backoff_ms = t->backoff_min;
    p->down_logged = false;
    p->st.connects++;
    t->st.c.connects++;
    tlog(t, BR_TRANSPORT_LOG_INFO, "transport: connected to peer %llu at %s:%u",
         (unsigned long long)p->id, p->host, p->port);
    if (t->on_peer_state)
        t->on_peer_state(t->ctx, p->id, true);
    if (p->out == c && c->state == C_OPEN)
        peer_flush(p);
}

/* A complete frame with a verified length; checks the sum, then acts. */
static void conn_frame(struct conn *c, const uint8_t *payload, uint32_t len) {
    if (frame_sum(payload, len) != c->fsum) {
        conn_fail(c, K_PROTOCOL, 0, "bad frame checksum");
        return;
    }
    if (c->state == C_HELLO) {
        if (c->outbound)
            outbound_hello(c, payload, len);
        else
            inbound_hello(c, payload, len);
        return;
    }
    struct peer *p = c->peer;
    if (!p)
        return;
    br_transport *t = c->t;
    p->st.frames_received++;
    p->st.bytes_received += len;
    t->st.c.frames_received++;
    t->st.c.bytes_received += len;
    t->on_message(t->ctx, p->id, payload, len);
}

/* Makes room for `need` payload bytes, growing geometrically but never
 * past the frame's length. */
static int conn_reserve(struct conn *c, size_t need) {
    if (need <= c->cap)
        return 0;
    size_t ncap = c->cap ? c->cap * 2 : READ_BUF_SIZE;
    if (ncap < need)
        ncap = need;
    if (ncap > c->flen)
        ncap = c->flen;
    uint8_t *nb = realloc(c->buf, ncap);
    if (!nb)
        return BR_ENOMEM;
    c->buf = nb;
    c->cap = ncap;
    return 0;
}

/* A frame's payload is complete in c->buf: deliver it, then give a big
 * buffer's memory back. */
static void conn_buffered_frame(struct conn *c) {
    c->hdr_have = 0;
    c->have = 0;
    conn_frame(c, c->buf, c->flen);
    if (c->cap > RBUF_KEEP) {
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
}

/*
 * Reads land in the transport's shared buffer, except in the middle of a
 * large payload: then straight in the frame's own buffer (grown to at most
 * twice what has arrived), never past the end of the frame, which saves a
 * copy and many small reads.
 */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct conn *c = h->data;
    if (c->state == C_OPEN && c->hdr_have == FRAME_HDR && c->flen - c->have >= READ_BUF_SIZE) {
        size_t want = c->have + (c->have > READ_BUF_SIZE ? c->have : READ_BUF_SIZE);
        if (want > c->flen)
            want = c->flen;
        if (conn_reserve(c, want) == 0) {
            size_t room = c->cap - c->have;
            if (room > c->flen - c->have)
                room = c->flen - c->have;
            buf->base = (char *)c->buf + c->have;
            buf->len = room;
            return;
        }
    }
    buf->base = (char *)c->t->rbuf;
    buf->len = READ_BUF_SIZE;
}

/* Feeds received bytes through the frame parser. Stops as soon as the
 * connection closes (a bad frame, or a callback that closed it). */
static void conn_feed(struct conn *c, const uint8_t *p, size_t n) {
    br_transport *t = c->t;
    while (n > 0 && c->state != C_CLOSING) {
        if (c->hdr_have < FRAME_HDR) {
            size_t k = FRAME_HDR - c->hdr_have;
            if (k > n)
                k = n;
            memcpy(c->hdr + c->hdr_have, p, k);
            c->hdr_have += (uint32_t)k;
            p += k;
            n -= k;
            if (c->hdr_have < FRAME_HDR)
                return;
            c->flen = get32(c->hdr);
            c->fsum = get32(c->hdr + 4);
            c->have = 0;
            if (c->outbound && c->state == C_OPEN) {
                conn_fail(c, K_PROTOCOL, 0, "unexpected frame after the hello");
                return;
            }
            uint32_t limit = c->state == C_OPEN ? t->max_frame : HELLO_MAX;
            if (c->flen == 0 || c->flen > limit) {
                conn_fail(c, K_PROTOCOL, 0, "frame length %u outside 1..%u", c->flen, limit);
                return;
            }
        }
        if (c->have == 0 && n >= c->flen) { /* whole payload in this read: no copy */
            const uint8_t *payload = p;
            p += c->flen;
            n -= c->flen;
            c->hdr_have = 0;
            conn_frame(c, payload, c->flen);
            continue;
        }
        size_t k = c->flen - c->have;
        if (k > n)
            k = n;
        if (conn_reserve(c, c->have + k) < 0) {
            conn_fail(c, K_IO, UV_ENOMEM, "no memory for a %u-byte frame", c->flen);
            return;
        }
        memcpy(c->buf + c->have, p, k);
        c->have += k;
        p += k;
        n -= k;
        if (c->have == c->flen)
            conn_buffered_frame(c);
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    struct conn *c = s->data;
    if (nread == 0 || c->state == C_CLOSING)
        return;
    if (nread < 0) {
        bool mid = c->hdr_have > 0 || c->have > 0;
        if (nread == UV_EOF && mid)
            conn_fail(c, K_PROTOCOL, 0, "connection closed in the middle of a frame");
        else if (nread == UV_EOF && c->state == C_HELLO && c->outbound)
            conn_fail(c, K_IO, 0,
                      "closed by the peer during the handshake (does it know this "
                      "node and the same cluster token?)");
        else if (nread == UV_EOF && c->state == C_HELLO)
            conn_fail(c, K_PROTOCOL, 0, "connection closed before the hello (%llu bytes)",
                      (unsigned long long)c->bytes_in);
        else
            conn_fail(c, K_IO, (int)nread, "connection closed");
        return;
    }
    c->bytes_in += (uint64_t)nread;
    if ((const uint8_t *)buf->base != c->t->rbuf) { /* read into the frame, see alloc_cb */
        c->have += (size_t)nread;
        if (c->have == c->flen)
            conn_buffered_frame(c);
        return;
    }
    conn_feed(c, (const uint8_t *)buf->base, (size_t)nread);
}

static void set_socket_options(struct conn *c) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, c->t->keepalive_s);
}

/* ================================================================ accepting */

static void on_connection(uv_stream_t *server, int status) {
    br_transport *t = server->data;
    if (status < 0) {
        tlog_limited(t, BR_TRANSPORT_LOG_WARN, "transport: accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = conn_new(t, false);
    if (!c) {
        /* Take the connection off the backlog anyway, then drop it. */
        tlog_limited(t, BR_TRANSPORT_LOG_WARN, "transport: no memory for a connection");
        return;
    }
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    c->next = t->inbound;
    if (t->inbound)
        t->inbound->prev = c;
    t->inbound = c;
    t->n_pending++;
    if (rc < 0) {
        conn_fail(c, K_IO, rc, "accept failed");
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[48] = "?";
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(a6, ip, sizeof(ip));
            snprintf(c->remote, sizeof(c->remote), "[%s]:%u", ip, ntohs(a6->sin6_port));
        } else {
            const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
            uv_ip4_name(a4, ip, sizeof(ip));
            snprintf(c->remote, sizeof(c->remote), "%s:%u", ip, ntohs(a4->sin_port));
        }
    }
    if (t->n_pending > t->max_pending) {
        conn_fail(c, K_OVERLOAD, 0, "%u connections already wait for their hello", t->max_pending);
        return;
    }
    set_socket_options(c);
    uv_timer_start(&c->timer, conn_timeout, t->hs_timeout_ms, 0);
    rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc < 0)
        conn_fail(c, K_IO, rc, "cannot read");
}

/* ================================================================ dialling */

static void connect_cb(uv_connect_t *req, int status) {
    struct conn *c = req->data;
    if (status == UV_ECANCELED || c->state == C_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, K_IO, status, "connect failed");
        return;
    }
    set_socket_options(c);
    c->state = C_HELLO;
    int rc = conn_send_hello(c, c->peer->id);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc < 0)
        conn_fail(c, K_IO, rc, "cannot start the handshake");
}

static void peer_dial_addr(struct peer *p, const struct sockaddr *addr) {
    br_transport *t = p->t;
    struct conn *c = conn_new(t, true);
    if (!c) {
        tlog(t, BR_TRANSPORT_LOG_WARN, "transport: no memory to dial peer %llu",
             (unsigned long long)p->id);
        peer_schedule_dial(p, true);
        return;
    }
    c->peer = p;
    p->out = c;
    uv_timer_start(&c->timer, conn_timeout, t->hs_timeout_ms, 0);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, connect_cb);
    if (rc < 0)
        conn_fail(c, K_IO, rc, "connect failed");
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    struct peer *p = req->data;
    br_transport *t = p->t;
    p->resolving = false;
    if (!p->removed && !t->closing) {
        if (status < 0) {
            tlog(t, p->down_logged ? BR_TRANSPORT_LOG_DEBUG : BR_TRANSPORT_LOG_WARN,
                 "transport: cannot resolve peer %llu host %s: %s", (unsigned long long)p->id,
                 p->host, uv_strerror(status));
            p->down_logged = true;
            peer_discard_queue(p);
            peer_schedule_dial(p, true);
        } else {
            /* Rotate through the addresses, so that a name whose first
             * address does not answer (::1 vs 127.0.0.1) still connects. */
            uint32_t n = 0;
            for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
                n++;
            struct addrinfo *ai = res;
            for (uint32_t k = p->addr_turn % n; k > 0; k--)
                ai = ai->ai_next;
            peer_dial_addr(p, ai->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    if (--p->refs == 0) {
        free(p->host);
        free(p);
    }
    t_done(t);
}

static void peer_dial(struct peer *p) {
    br_transport *t = p->t;
    if (t->closing || p->removed || p->out || p->resolving)
        return;
    p->st.dials++;
    t->st.c.dials++;
    if (p->have_addr) {
        peer_dial_addr(p, (const struct sockaddr *)&p->addr);
        return;
    }
    char port[8];
    snprintf(port, sizeof(port), "%u", p->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    p->gai.data = p;
    int rc = uv_getaddrinfo(t->loop, &p->gai, gai_cb, p->host, port, &hints);
    if (rc < 0) {
        tlog(t, BR_TRANSPORT_LOG_WARN, "transport: cannot resolve peer %llu host %s: %s",
             (unsigned long long)p->id, p->host, uv_strerror(rc));
        peer_schedule_dial(p, true);
        return;
    }
    p->resolving = true;
    p->refs++;
    t->handles++;
}

static void redial_cb(uv_timer_t *timer) {
    peer_dial(timer->data);
}

/*
 * Arms the redial timer: after a failure the delay is drawn from
 * [backoff/2, backoff] and backoff doubles up to the cap; after a lost open
 * connection backoff was reset to the minimum by the handshake, so the
 * first redial is quick and repeated failures slow down again.
 */
static void peer_schedule_dial(struct peer *p, bool failed) {
    br_transport *t = p->t;
    if (t->closing || p->removed)
        return;
    uint32_t b = p->backoff_ms;
    uint32_t delay = b / 2 + (uint32_t)(next_rand(t) % (b - b / 2 + 1));
    if (failed) {
        uint64_t nb = (uint64_t)b * 2;
        p->backoff_ms = nb > t->backoff_max ? t->backoff_max : (uint32_t)nb;
    }
    uv_timer_start(&p->timer, redial_cb, delay, 0);
}

/* ================================================================ sending */

static void write_cb(uv_write_t *req, int status) {
    struct conn *c = req->data;
    struct peer *p = c->peer;
    br_transport *t = c->t;
    struct msg *batch = c->batch;
    c->batch = NULL;
    c->writing = false;
    if (p) {
        p->q_cost -= c->batch_cost;
        p->q_frames -= c->batch_n;
        if (status == 0) {
            p->st.frames_sent += c->batch_n;
            p->st.bytes_sent += c->batch_payload;
            t->st.c.frames_sent += c->batch_n;
            t->st.c.bytes_sent += c->batch_payload;
        } else {
            count_lost(p, c->batch_n);
        }
    }
    free_msgs(batch);
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_fail(c, K_IO, status, "write failed");
        return;
    }
    if (p && c->state == C_OPEN)
        peer_flush(p);
}

/* Writes the next batch of p's queue if its connection is open and idle. */
static void peer_flush(struct peer *p) {
    struct conn *c = p->out;
    if (!c || c->state != C_OPEN || c->writing || !p->qhead)
        return;
    size_t n = 0;
    uint64_t bytes = 0, cost = 0;
    struct msg *m = p->qhead, *last = NULL;
    while (m && n < BATCH_MAX_BUFS && bytes < BATCH_MAX_BYTES) {
        c->bufs[n++] = uv_buf_init((char *)m->frame, (unsigned)m->frame_len);
        bytes += m->frame_len;
        cost += msg_cost(m);
        last = m;
        m = m->next;
    }
    c->batch = p->qhead;
    last->next = NULL;
    p->qhead = m;
    if (!m)
        p->qtail = NULL;
    c->batch_n = n;
    c->batch_cost = cost;
    c->batch_payload = bytes - (uint64_t)n * FRAME_HDR;
    c->writing = true;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, c->bufs, (unsigned)n, write_cb);
    if (rc < 0) {
        /* No callback will come: account for the batch here. */
        c->writing = false;
        p->q_cost -= cost;
        p->q_frames -= n;
        count_lost(p, n);
        free_msgs(c->batch);
        c->batch = NULL;
        conn_fail(c, K_IO, rc, "write failed");
    }
}

static void flush_cb(uv_idle_t *idle) {
    br_transport *t = idle->data;
    t->flush_armed = false;
    uv_idle_stop(idle);
    for (struct peer *p = t->peers; p; p = p->next)
        peer_flush(p);
}

int br_transport_sendv(br_transport *t, uint64_t to, const struct iovec *iov, size_t n) {
    if (!t || t->closing || (n > 0 && !iov))
        return BR_EINVAL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].iov_len > SIZE_MAX - len)
            return -EMSGSIZE;
        len += iov[i].iov_len;
    }
    if (len == 0)
        return BR_EINVAL;
    struct peer *p = peer_find(t, to);
    if (!p)
        return BR_EINVAL;
    if (len > t->max_frame)
        return -EMSGSIZE;
    uint64_t cost = sizeof(struct msg) + FRAME_HDR + len;
    if (p->q_cost + cost > t->max_queue) {
        p->st.dropped++;
        t->st.c.dropped++;
        return -ENOBUFS;
    }
    struct msg *m = malloc(sizeof(*m) + FRAME_HDR + len);
    if (!m) {
        p->st.dropped++;
        t->st.c.dropped++;
        return BR_ENOMEM;
    }
    m->next = NULL;
    m->frame_len = FRAME_HDR + len;
    uint8_t *payload = m->frame + FRAME_HDR;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].iov_len) /* iov_base may be NULL for an empty piece */
            memcpy(payload + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    put32(m->frame, (uint32_t)len);
    put32(m->frame + 4, frame_sum(payload, len));
    if (p->qtail)
        p->qtail->next = m;
    else
        p->qhead = m;
    p->qtail = m;
    p->q_frames++;
    p->q_cost += cost;
    if (!t->flush_armed && p->connected) {
        t->flush_armed = true;
        uv_idle_start(&t->flusher, flush_cb);
    }
    return 0;
}

int br_transport_send(br_transport *t, uint64_t to, const void *bytes, size_t len) {
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = len};
    if (len > 0 && !bytes)
        return BR_EINVAL;
    return br_transport_sendv(t, to, &iov, 1);
}

/* ================================================================ peers */

static void peer_timer_closed(uv_handle_t *h) {
    struct peer *p = h->data;
    br_transport *t = p->t;
    if (--p->refs == 0) {
        free(p->host);
        free(p);
    }
    t_done(t);
}

int br_transport_add_peer(br_transport *t, uint64_t id, const char *host, uint16_t port) {
    if (!t || t->closing || id == 0 || id == t->self_id || !host || !*host || strlen(host) > 255)
        return BR_EINVAL;
    if (peer_find(t, id))
        return -EEXIST;
    struct peer *p = calloc(1, sizeof(*p));
    if (!p)
        return BR_ENOMEM;
    p->host = strdup(host);
    if (!p->host) {
        free(p);
        return BR_ENOMEM;
    }
    p->t = t;
    p->id = id;
    p->port = port;
    p->backoff_ms = t->backoff_min;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&p->addr) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&p->addr) == 0)
        p->have_addr = true;
    uv_timer_init(t->loop, &p->timer);
    p->timer.data = p;
    p->refs = 1;
    t->handles++;
    p->next = t->peers;
    t->peers = p;
    t->n_peers++;
    peer_dial(p);
    return 0;
}

/* Unlinks p from everything; it is freed once its handles have closed. */
static void peer_destroy(struct peer *p) {
    br_transport *t = p->t;
    struct peer **pp = &t->peers;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    t->n_peers--;
    p->removed = true;
    if (p->out)
        conn_close(p->out);
    if (p->in)
        conn_close(p->in);
    peer_discard_queue(p);
    if (p->resolving)
        uv_cancel((uv_req_t *)&p->gai); /* gai_cb runs either way and drops its ref */
    uv_close((uv_handle_t *)&p->timer, peer_timer_closed);
}

int br_transport_remove_peer(br_transport *t, uint64_t id) {
    if (!t || t->closing)
        return BR_EINVAL;
    struct peer *p = peer_find(t, id);
    if (!p)
        return BR_EINVAL;
    tlog(t, BR_TRANSPORT_LOG_INFO, "transport: removed peer %llu", (unsigned long long)id);
    peer_destroy(p);
    return 0;
}

bool br_transport_peer_connected(const br_transport *t, uint64_t id) {
    const struct peer *p = t ? peer_find(t, id) : NULL;
    return p && p->connected;
}

int br_transport_peer_stats(const br_transport *t, uint64_t id,
                            struct br_transport_peer_stats *out) {
    const struct peer *p = t ? peer_find(t, id) : NULL;
    if (!p || !out)
        return BR_EINVAL;
    out->connected = p->connected;
    out->inbound = p->in != NULL;
    out->queued_frames = p->q_frames;
    out->queued_bytes = p->q_cost;
    out->c = p->st;
    return 0;
}

void br_transport_stats(const br_transport *t, struct br_transport_stats *out) {
    *out = t->st;
    out->peers = t->n_peers;
    out->inbound_open = t->n_inbound_open;
    out->pending_open = t->n_pending;
}

uint16_t br_transport_port(const br_transport *t) {
    return t->port;
}

/* ================================================================ lifecycle */

static void t_handle_closed(uv_handle_t *h) {
    t_done(h->data);
}

/* Binds and listens on a plain socket first, so that every likely failure
 * happens before any libuv handle exists. Returns the fd or a negated
 * errno. */
static int listen_socket(const char *host, uint16_t port, uint16_t *bound) {
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0)
        return g == EAI_SYSTEM ? -errno : BR_EINVAL;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        rc = -errno;
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        rc = -errno;
        goto out;
    }
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
out:
    freeaddrinfo(res);
    if (rc < 0 && fd >= 0)
        close(fd);
    return rc < 0 ? rc : fd;
}

int br_transport_create(uv_loop_t *loop, const struct br_transport_config *cfg,
                        br_transport **out) {
    if (!out)
        return BR_EINVAL;
    *out = NULL;
    if (!loop || !cfg || cfg->self_id == 0 || !cfg->listen_host || !cfg->on_message)
        return BR_EINVAL;
    size_t tlen = cfg->cluster_token ? strlen(cfg->cluster_token) : 0;
    if (tlen > BR_TRANSPORT_MAX_TOKEN)
        return BR_EINVAL;
    uint32_t bmin = cfg->backoff_min_ms ? cfg->backoff_min_ms : 20;
    uint32_t bmax = cfg->backoff_max_ms ? cfg->backoff_max_ms : 1000;
    if (bmax < bmin)
        return BR_EINVAL;

    br_transport *t = calloc(1, sizeof(*t));
    if (!t)
        return BR_ENOMEM;
    t->loop = loop;
    t->self_id = cfg->self_id;
    memcpy(t->token, cfg->cluster_token ? cfg->cluster_token : "", tlen);
    t->token_len = tlen;
    t->max_frame = cfg->max_frame_bytes ? cfg->max_frame_bytes : BR_TRANSPORT_DEFAULT_MAX_FRAME;
    t->max_queue = cfg->max_queue_bytes ? cfg->max_queue_bytes : 2ull * t->max_frame;
    t->backoff_min = bmin;
    t->backoff_max = bmax;
    t->hs_timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 5000;
    t->keepalive_s = cfg->keepalive_s ? cfg->keepalive_s : 10;
    t->max_pending = cfg->max_pending ? cfg->max_pending : 64;
    t->on_message = cfg->on_message;
    t->on_peer_state = cfg->on_peer_state;
    t->ctx = cfg->ctx;
    t->log_fn = cfg->log_fn;
    t->log_ctx = cfg->log_ctx;
    t->rng = cfg->self_id ^ uv_hrtime();
    t->log_window = uv_now(loop);

    int fd = listen_socket(cfg->listen_host, cfg->listen_port, &t->port);
    if (fd < 0) {
        free(t);
        return fd;
    }
    uv_idle_init(loop, &t->flusher);
    t->flusher.data = t;
    uv_tcp_init(loop, &t->listener);
    t->listener.data = t;
    t->handles = 2;
    int rc = uv_tcp_open(&t->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        /* Not expected after the plain bind/listen succeeded; the memory
         * goes when the loop next runs the close callbacks. */
        if (uv_fileno((uv_handle_t *)&t->listener, &(uv_os_fd_t){0}) != 0)
            close(fd);
        t->closing = true;
        uv_close((uv_handle_t *)&t->listener, t_handle_closed);
        uv_close((uv_handle_t *)&t->flusher, t_handle_closed);
        return rc;
    }
    tlog(t, BR_TRANSPORT_LOG_INFO, "transport: node %llu listening on %s:%u",
         (unsigned long long)t->self_id, cfg->listen_host, t->port);
    *out = t;
    return 0;
}

void br_transport_close(br_transport *t, void (*cb)(void *arg), void *arg) {
    if (!t || t->closing)
        return;
    t->closing = true;
    t->close_cb = cb;
    t->close_arg = arg;
    while (t->peers)
        peer_destroy(t->peers);
    while (t->inbound)
        conn_close(t->inbound);
    uv_close((uv_handle_t *)&t->listener, t_handle_closed);
    uv_close((uv_handle_t *)&t->flusher, t_handle_closed);
}
