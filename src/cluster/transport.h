/*
 * transport.h - the peer transport: raft messages between nodes over TCP.
 *
 * Design
 * ------
 * A transport carries opaque byte strings (encoded raft messages, see
 * br_raft_encode()) between the members of a cluster. It listens on the
 * raft port (by default the client port + BR_TRANSPORT_PORT_OFFSET) and
 * knows its peers by id and address.
 *
 * Connection model: for every configured peer the transport dials ONE
 * outbound connection and sends all its messages to that peer on it; the
 * peer's messages to us arrive on the peer's own outbound connection, which
 * we accept on the raft port. A connection therefore carries data in one
 * direction only, so there is no simultaneous-dial race to settle, and
 * messages to one peer are delivered in the order they were sent for as
 * long as that connection lives. At most one authenticated inbound
 * connection per peer is kept: a newer one (the peer reconnected) replaces
 * the older.
 *
 * Handshake: the dialer sends a hello frame (magic, protocol version, its
 * id, the id it means to reach, the cluster token); the acceptor checks
 * all of them (the token in constant time) and that the sender is a
 * configured peer, and answers with its own hello, which the dialer checks
 * the same way. Only then does the dialer send messages. Any mismatch closes
 * that connection and is logged; nothing is delivered. The wire format is
 * specified at the top of transport.c and in docs/TRANSPORT.md.
 *
 * Failures: garbage, a bad checksum, a frame longer than the maximum, a
 * malformed or wrong hello, a hello that never comes: the connection is
 * closed, a counter is raised, a rate-limited line is logged, and nothing
 * else changes. A peer that cannot be reached is redialled with exponential
 * backoff and jitter. Nothing here aborts or blocks.
 *
 * Delivery: best effort, like the network Raft assumes. A message is lost
 * when the send queue is full (br_transport_send() says so), when the
 * connection it was written to fails (it may or may not have arrived), and
 * when a dial fails while it waits (queued messages are not kept for a peer
 * that is down: Raft retransmits, and stale messages only cost bandwidth).
 * The driver reports such peers with br_raft_report_unreachable().
 *
 * Memory: bounded per peer: the send queue by max_queue_bytes, the receive
 * buffer by max_frame_bytes (grown only as bytes really arrive, so a large
 * length costs nothing until the bytes follow), unauthenticated inbound
 * connections by max_pending and a hello of at most a few hundred bytes.
 *
 * Threading: the transport runs on a uv_loop_t owned by the caller. Every
 * function here must be called on the thread that runs that loop, and the
 * callbacks run on it too. Callbacks may call any function of this API,
 * including br_transport_remove_peer() and br_transport_close(). libuv
 * writes with writev(), so the process must ignore SIGPIPE (bitraft serve
 * does); otherwise a peer that closes its end mid-write kills it.
 *
 * Errors: functions return 0 or a negative code from bitraft/error.h;
 * errors of the operating system and of libuv pass through as negated
 * errno values.
 */
#ifndef BITRAFT_TRANSPORT_H
#define BITRAFT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The raft port is the client port plus this, unless configured. */
#define BR_TRANSPORT_PORT_OFFSET 10000

/* Longest cluster token, in bytes. */
#define BR_TRANSPORT_MAX_TOKEN 256

/* Default largest payload: a 64 MiB snapshot chunk plus room for the raft
 * message around it. */
#define BR_TRANSPORT_DEFAULT_MAX_FRAME ((64u << 20) + (64u << 10))

/* Log levels; the same values as enum br_raft_log_level, so one sink can
 * serve both. */
enum br_transport_log_level {
    BR_TRANSPORT_LOG_DEBUG = 0,
    BR_TRANSPORT_LOG_INFO = 1,
    BR_TRANSPORT_LOG_WARN = 2
};

typedef struct br_transport br_transport;

struct br_transport_config {
    uint64_t self_id;              /* this node, nonzero */
    const char *listen_host;       /* address to bind, e.g. "127.0.0.1"; required */
    uint16_t listen_port;          /* 0 = any free port, see br_transport_port() */
    const char *cluster_token;     /* shared secret, NUL-terminated, copied; NULL or "" = none
                                      (then peers must have none either); at most
                                      BR_TRANSPORT_MAX_TOKEN bytes */
    uint32_t max_frame_bytes;      /* largest payload sent or accepted; 0 = default */
    uint64_t max_queue_bytes;      /* per-peer send queue bound, counting each message's
                                      bytes plus a small overhead; 0 = 2 * max_frame_bytes */
    uint32_t backoff_min_ms;       /* first redial delay; 0 = 20 */
    uint32_t backoff_max_ms;       /* redial delay cap; 0 = 1000 */
    uint32_t handshake_timeout_ms; /* connect + hello exchange must finish within; 0 = 5000 */
    uint32_t keepalive_s;          /* TCP keepalive idle time; 0 = 10 */
    uint32_t max_pending;          /* inbound connections not yet past the hello; 0 = 64 */

    /* A message arrived from peer `from` (a configured peer that passed the
     * handshake). `bytes` is valid during the call only. Required. */
    void (*on_message)(void *ctx, uint64_t from, const uint8_t *bytes, size_t len);
    /* Optional: our outbound connection to `peer` completed its handshake
     * (connected = true) or was lost (false). Not called from
     * br_transport_remove_peer() or br_transport_close(). */
    void (*on_peer_state)(void *ctx, uint64_t peer, bool connected);
    void *ctx;

    /* Optional log sink; msg is valid during the call only. Lines caused
     * by remote input (rejected connections, bad frames) are rate-limited. */
    void (*log_fn)(void *log_ctx, int level, const char *msg);
    void *log_ctx;
};

/* Counters kept per peer and, summed over all peers ever configured, per
 * transport. */
struct br_transport_counters {
    uint64_t frames_sent;     /* messages written to a socket */
    uint64_t bytes_sent;      /* their payload bytes */
    uint64_t frames_received; /* messages delivered to on_message */
    uint64_t bytes_received;  /* their payload bytes */
    uint64_t dropped;         /* refused by br_transport_send(): queue full (or no memory) */
    uint64_t lost;            /* accepted by send but discarded: in flight on a connection
                                 that failed, queued when a dial failed, or at removal/close */
    uint64_t dials;           /* outbound connection attempts */
    uint64_t connects;        /* outbound handshakes completed (reconnects = connects - 1) */
};

struct br_transport_peer_stats {
    bool connected;         /* our outbound connection is past the handshake */
    bool inbound;           /* an authenticated connection from the peer is open */
    uint64_t queued_frames; /* accepted by send, not yet written (including in flight) */
    uint64_t queued_bytes;  /* what counts against max_queue_bytes */
    struct br_transport_counters c;
};

struct br_transport_stats {
    struct br_transport_counters c; /* totals over all peers, removed ones included */
    /* Inbound connections closed before or during the hello, by reason: */
    uint64_t rejected_protocol; /* bad bytes, bad checksum, wrong length, malformed
                                   hello, or closed before a complete hello */
    uint64_t rejected_token;    /* cluster token mismatch */
    uint64_t rejected_peer;     /* sender not configured, or hello meant for another node */
    uint64_t rejected_timeout;  /* no hello within handshake_timeout_ms */
    uint64_t rejected_overload; /* max_pending reached */
    uint64_t protocol_errors;   /* authenticated connections (either direction) closed
                                   for a bad frame */
    uint32_t peers;             /* configured now */
    uint32_t inbound_open;      /* authenticated inbound connections now */
    uint32_t pending_open;      /* inbound connections waiting for their hello now */
};

/*
 * Creates a transport on `loop`, binds cfg->listen_host:listen_port and
 * starts accepting. A host name in listen_host is resolved synchronously
 * (pass an address to avoid that). The configuration is copied. On success
 * *out is the transport, to be released with br_transport_close(). On error
 * *out is NULL and nothing is left behind (no handle on the loop, no
 * memory): BR_EINVAL (bad config), a negated errno (-EADDRINUSE, ...), or
 * BR_ENOMEM. (One unexpected case, libuv refusing the socket after bind and
 * listen succeeded, leaves two closing handles that the loop's next run
 * releases.)
 */
int br_transport_create(uv_loop_t *loop, const struct br_transport_config *cfg, br_transport **out);

/* The port the transport listens on (useful with listen_port = 0). */
uint16_t br_transport_port(const br_transport *t);

/*
 * Adds peer `id` at host:port and starts dialling it. `host` is an address
 * or a name (resolved asynchronously on every dial). Also authorizes
 * inbound connections from `id`. BR_EINVAL for id 0, our own id, or a bad
 * host; -EEXIST if the id is configured already (remove it first to change
 * its address); BR_ENOMEM. On error nothing changes.
 */
int br_transport_add_peer(br_transport *t, uint64_t id, const char *host, uint16_t port);

/*
 * Forgets peer `id`: closes both connections with it, discards its queue
 * (counted as lost) and from now on rejects its connections. BR_EINVAL if
 * not configured.
 */
int br_transport_remove_peer(br_transport *t, uint64_t id);

/*
 * Queues a copy of bytes[0, len) for peer `to` and returns; never blocks.
 * The caller keeps its buffer. Returns 0 if queued (delivery is still best
 * effort, see above), -ENOBUFS if the peer's queue is full (the message is
 * dropped and counted), -EMSGSIZE if len exceeds max_frame_bytes, BR_EINVAL
 * if len is 0 or `to` is not a configured peer, BR_ENOMEM.
 */
int br_transport_send(br_transport *t, uint64_t to, const void *bytes, size_t len);

/* As br_transport_send(), gathering the message from iov[0, n) (for
 * example a raft header and a snapshot chunk) into one frame. */
int br_transport_sendv(br_transport *t, uint64_t to, const struct iovec *iov, size_t n);

/* True if our outbound connection to `id` is past the handshake. */
bool br_transport_peer_connected(const br_transport *t, uint64_t id);

/* Fills *out for peer `id`. BR_EINVAL if not configured. */
int br_transport_peer_stats(const br_transport *t, uint64_t id,
                            struct br_transport_peer_stats *out);

/* Fills *out with the transport's counters. */
void br_transport_stats(const br_transport *t, struct br_transport_stats *out);

/*
 * Closes every connection and the listener, discards queued messages
 * (counted as lost, no callbacks) and frees the transport once libuv has
 * closed all its handles, which happens while the loop runs; then calls
 * cb(arg) if cb is not NULL. `t` must not be used after this call. To shut
 * down, the caller keeps running the loop until cb has run (a loop holding
 * nothing else: until uv_run() returns 0).
 */
void br_transport_close(br_transport *t, void (*cb)(void *arg), void *arg);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_TRANSPORT_H */
