/*
 * http_hop.c - what a thread hop per request costs under two HTTP stacks.
 *
 * A linearizable GET in cluster mode leaves the HTTP thread for the node
 * thread (the read barrier) and comes back. This program serves GET with a
 * 10-byte reply after such a round trip to a "node" thread (a libuv loop
 * woken by uv_async, which completes every request it is handed at once:
 * the heartbeat round's wait is not modelled, its CPU is not the question),
 * under:
 *
 *   mhd      libmicrohttpd 0.9.75, epoll, a pool of 2 threads: the handler
 *            suspends the connection, the node thread resumes it (what
 *            src/http/server.c does);
 *   h2o      h2o 2.2 on its own libuv loop thread: the handler hands the
 *            request over and returns; the node thread queues completions
 *            and wakes the HTTP loop once per batch (uv_async), which sends;
 *   h2o-one  h2o on the node's own loop: no thread hop at all, the reply is
 *            sent from a later phase of the same loop (uv_check), as a
 *            node that runs HTTP and Raft on one thread would.
 *   mhd-direct  libmicrohttpd answering in the handler (no hop): the floor.
 *
 * Usage: http_hop MODE PORT   (serves until killed; bench/http_hop/run.sh
 * drives it with wrk). Binds 127.0.0.1 only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <h2o.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char BODY[] = "0123456789";

/* ---- the node thread ------------------------------------------------ */

struct ticket {
    struct ticket *next;
    void *req; /* MHD connection or h2o request */
};

typedef void (*complete_fn)(struct ticket *list);

static struct {
    uv_loop_t loop;
    uv_async_t wake;
    pthread_mutex_t mu;
    struct ticket *head;
    complete_fn complete;
} node;

static void push(pthread_mutex_t *mu, struct ticket **head, struct ticket *t) {
    pthread_mutex_lock(mu);
    t->next = *head;
    *head = t;
    pthread_mutex_unlock(mu);
}

static struct ticket *take(pthread_mutex_t *mu, struct ticket **head) {
    pthread_mutex_lock(mu);
    struct ticket *t = *head;
    *head = NULL;
    pthread_mutex_unlock(mu);
    return t;
}

static void node_wake(uv_async_t *a) {
    (void)a;
    struct ticket *t = take(&node.mu, &node.head);
    if (t)
        node.complete(t);
}

static void *node_main(void *arg) {
    (void)arg;
    uv_run(&node.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void node_init(complete_fn complete) {
    uv_loop_init(&node.loop);
    uv_async_init(&node.loop, &node.wake, node_wake);
    pthread_mutex_init(&node.mu, NULL);
    node.complete = complete;
}

static void node_submit(struct ticket *t) {
    push(&node.mu, &node.head, t);
    uv_async_send(&node.wake);
}

/* ---- libmicrohttpd ---------------------------------------------------- */

static struct MHD_Response *mhd_resp;

struct mhd_req {
    struct ticket t;
    int state; /* 0 new, 1 suspended, 2 resumed */
};

static void mhd_complete(struct ticket *t) {
    while (t) {
        struct ticket *next = t->next;
        struct mhd_req *r = (struct mhd_req *)t;
        r->state = 2;
        MHD_resume_connection(r->t.req);
        t = next;
    }
}

static enum MHD_Result mhd_handler(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls) {
    (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    int direct = cls != NULL;
    struct mhd_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        *con_cls = r;
        return MHD_YES; /* a reply queued in the first call closes keep-alive */
    }
    if (direct || r->state == 2)
        return MHD_queue_response(c, 200, mhd_resp);
    r->state = 1;
    r->t.req = c;
    MHD_suspend_connection(c);
    node_submit(&r->t);
    return MHD_YES;
}

static void mhd_done(void *cls, struct MHD_Connection *c, void **con_cls,
                     enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static int run_mhd(unsigned port, int direct) {
    mhd_resp =
        MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    node_init(mhd_complete);
    pthread_t th;
    pthread_create(&th, NULL, node_main, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, (uint16_t)port, NULL, NULL,
        mhd_handler, direct ? (void *)1 : NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
        MHD_OPTION_NOTIFY_COMPLETED, mhd_done, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "libmicrohttpd did not start\n");
        return 1;
    }
    pthread_join(th, NULL);
    return 0;
}

/* ---- h2o ---------------------------------------------------------------- */

static h2o_globalconf_t h2o_config;
static h2o_context_t h2o_ctx;
static h2o_accept_ctx_t h2o_accept_ctx;
static uv_loop_t *http_loop;
static int h2o_same_loop;

static struct {
    uv_async_t wake;  /* HTTP loop: completions are ready */
    uv_check_t check; /* h2o-one: replies sent after the poll phase */
    pthread_mutex_t mu;
    struct ticket *head;
} http;

/* The spike does not track a request whose client goes away while the node
 * thread holds it (the real server must: h2o_mem_alloc_shared's dispose
 * callback); the node here answers at once, so wrk's own close at the end
 * of a run is the only such case. */
struct h2o_ticket {
    struct ticket t;
};

static void h2o_reply(struct ticket *t) {
    while (t) {
        struct ticket *next = t->next;
        h2o_req_t *req = t->req;
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_send_inline(req, BODY, sizeof BODY - 1);
        t = next;
    }
}

static void http_wake(uv_async_t *a) {
    (void)a;
    h2o_reply(take(&http.mu, &http.head));
}

/* The node thread hands completions back to the HTTP loop: one wake-up per
 * batch. */
static void h2o_complete(struct ticket *t) {
    pthread_mutex_lock(&http.mu);
    while (t) {
        struct ticket *next = t->next;
        t->next = http.head;
        http.head = t;
        t = next;
    }
    pthread_mutex_unlock(&http.mu);
    uv_async_send(&http.wake);
}

static void same_check(uv_check_t *c) {
    (void)c;
    h2o_reply(take(&http.mu, &http.head));
}

static int h2o_on_req(h2o_handler_t *self, h2o_req_t *req) {
    (void)self;
    struct h2o_ticket *t = h2o_mem_alloc_shared(&req->pool, sizeof *t, NULL);
    memset(t, 0, sizeof *t);
    t->t.req = req;
    if (h2o_same_loop)
        push(&http.mu, &http.head, &t->t); /* answered by same_check */
    else
        node_submit(&t->t);
    return 0;
}

static void h2o_on_accept(uv_stream_t *listener, int status) {
    if (status != 0)
        return;
    uv_tcp_t *conn = h2o_mem_alloc(sizeof *conn);
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    h2o_accept(&h2o_accept_ctx, sock);
}

static int run_h2o(unsigned port, int same) {
    h2o_same_loop = same;
    pthread_mutex_init(&http.mu, NULL);
    node_init(h2o_complete);
    static uv_loop_t own;
    if (same) {
        http_loop = &node.loop; /* HTTP and "Raft" on one loop */
    } else {
        uv_loop_init(&own);
        http_loop = &own;
    }
    uv_async_init(http_loop, &http.wake, http_wake);
    uv_check_init(http_loop, &http.check);
    if (same)
        uv_check_start(&http.check, same_check);
    h2o_config_init(&h2o_config);
    h2o_hostconf_t *host =
        h2o_config_register_host(&h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof *h);
    h->on_req = h2o_on_req;
    h2o_context_init(&h2o_ctx, http_loop, &h2o_config);
    h2o_accept_ctx.ctx = &h2o_ctx;
    h2o_accept_ctx.hosts = h2o_config.hosts;
    static uv_tcp_t listener;
    uv_tcp_init(http_loop, &listener);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", (int)port, &sa);
    if (uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 128, h2o_on_accept) != 0) {
        fprintf(stderr, "cannot listen on %u\n", port);
        return 1;
    }
    if (same) {
        uv_run(&node.loop, UV_RUN_DEFAULT);
    } else {
        pthread_t th;
        pthread_create(&th, NULL, node_main, NULL);
        uv_run(http_loop, UV_RUN_DEFAULT);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: http_hop mhd|mhd-direct|h2o|h2o-one PORT\n");
        return 2;
    }
    unsigned port = (unsigned)atoi(argv[2]);
    if (!strcmp(argv[1], "mhd"))
        return run_mhd(port, 0);
    if (!strcmp(argv[1], "mhd-direct"))
        return run_mhd(port, 1);
    if (!strcmp(argv[1], "h2o"))
        return run_h2o(port, 0);
    if (!strcmp(argv[1], "h2o-one"))
        return run_h2o(port, 1);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
