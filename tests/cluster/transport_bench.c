/*
 * transport_bench.c - throughput of the peer transport over loopback.
 *
 * Two transports on one loop (one thread, so the figure includes both the
 * sender's and the receiver's work): node 1 streams messages to node 2,
 * keeping its send queue topped up to a window, until the receiver has
 * them all. Prints messages/s and MB/s per message size; no pass/fail.
 *
 * Usage: transport_bench [total_mib_per_size]   (default 256)
 */
#include "transport.h"

#include "bitraft/error.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;

struct bench {
    br_transport *a, *b;
    size_t msg_len;
    uint64_t total, sent, received, window;
    uint8_t *payload;
    uv_idle_t pump;
    bool done;
};

static void on_msg(void *ctx, uint64_t from, const uint8_t *bytes, size_t len) {
    struct bench *bn = ctx;
    if (len != bn->msg_len) {
        fprintf(stderr, "bad length %zu\n", len);
        exit(1);
    }
    if (++bn->received == bn->total)
        bn->done = true;
}

/* Tops the queue up to the window, once per loop iteration. */
static void pump_cb(uv_idle_t *h) {
    struct bench *bn = h->data;
    struct br_transport_peer_stats ps;
    br_transport_peer_stats(bn->a, 2, &ps);
    while (bn->sent < bn->total && ps.queued_bytes < bn->window) {
        int rc = br_transport_send(bn->a, 2, bn->payload, bn->msg_len);
        if (rc < 0)
            break;
        bn->sent++;
        ps.queued_bytes += bn->msg_len + 64;
    }
    if (bn->done)
        uv_idle_stop(h);
}

static void closed(void *arg) {}

static br_transport *make(uint64_t id, struct bench *bn) {
    struct br_transport_config cfg = {
        .self_id = id,
        .listen_host = "127.0.0.1",
        .cluster_token = "bench",
        .max_queue_bytes = 256u << 20,
        .on_message = on_msg,
        .ctx = bn,
    };
    br_transport *t;
    int rc = br_transport_create(&loop, &cfg, &t);
    if (rc < 0) {
        fprintf(stderr, "create: %s\n", br_strerror(rc));
        exit(1);
    }
    return t;
}

static void run(size_t msg_len, uint64_t total_bytes) {
    struct bench bn = {.msg_len = msg_len};
    bn.total = total_bytes / msg_len;
    if (bn.total == 0)
        bn.total = 1;
    bn.window = msg_len < (1u << 20) ? (4u << 20) : 8 * (uint64_t)msg_len;
    bn.payload = malloc(msg_len);
    for (size_t i = 0; i < msg_len; i++)
        bn.payload[i] = (uint8_t)(i * 131);
    bn.a = make(1, &bn);
    bn.b = make(2, &bn);
    br_transport_add_peer(bn.a, 2, "127.0.0.1", br_transport_port(bn.b));
    br_transport_add_peer(bn.b, 1, "127.0.0.1", br_transport_port(bn.a));
    while (!br_transport_peer_connected(bn.a, 2))
        uv_run(&loop, UV_RUN_ONCE);

    uv_idle_init(&loop, &bn.pump);
    bn.pump.data = &bn;
    uint64_t t0 = uv_hrtime();
    uv_idle_start(&bn.pump, pump_cb);
    while (!bn.done)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    struct br_transport_stats st;
    br_transport_stats(bn.a, &st);
    printf("%9zu-byte messages: %10.0f msg/s  %8.1f MB/s  (%llu messages, %.2f s, %llu dropped)\n",
           msg_len, (double)bn.total / secs, (double)bn.total * (double)msg_len / secs / 1e6,
           (unsigned long long)bn.total, secs, (unsigned long long)st.c.dropped);
    uv_close((uv_handle_t *)&bn.pump, NULL);
    br_transport_close(bn.a, closed, NULL);
    br_transport_close(bn.b, closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    free(bn.payload);
}

int main(int argc, char **argv) {
    uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 256;
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    size_t sizes[] = {100, 1024, 16 << 10, 1 << 20, 8 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t total = mib << 20;
        if (sizes[i] == 100)
            total /= 4; /* 100-byte messages: enough for a steady rate */
        run(sizes[i], total);
    }
    uv_loop_close(&loop);
    return 0;
}
