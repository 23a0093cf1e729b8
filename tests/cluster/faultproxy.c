/*
 * bitraft-faultproxy: a TCP forwarder whose links can be cut, stalled,
 * delayed and healed while a cluster runs through it, for partition tests.
 *
 * Usage:
 *   bitraft-faultproxy [--control PORT] --link LISTEN=HOST:PORT [--link ...]
 *
 * Every link listens on 127.0.0.1:LISTEN (0 picks a free port) and forwards
 * each connection it accepts to HOST:PORT (an IPv4 address), bytes both ways.
 *
 * Startup: once every port is bound it prints, on stdout, one line per link
 * "link LISTEN -> HOST:PORT" (with the bound port), then "control PORT" when
 * --control is given, then "ready".
 *
 * Control: one command per line, from stdin (the default; replies go to
 * stdout) or, with --control PORT, from one TCP connection at a time on
 * 127.0.0.1:PORT (0 picks a free port; replies go back on the connection; a
 * second connection while one is open gets "err busy" and is closed). Every
 * command is answered with exactly one final line starting with "ok" or
 * "err"; `status` prints one "link ..." line per link before its "ok".
 *
 *   cut P         close the link's connections (TCP RST on both sides) and
 *                 accept-then-reset every new one until healed
 *   stall P       stop forwarding on the link's connections (bytes already
 *                 read are still delivered; new connections are accepted and
 *                 connected but nothing is read); nothing is lost, so a heal
 *                 resumes the streams where they stopped, as after a real
 *                 network partition that TCP survived
 *   heal P        back to forwarding (new connections too)
 *   cut-all, stall-all, heal-all    the same for every link
 *   delay P MS    hold every chunk of bytes MS ms before forwarding it (each
 *                 direction, so a round trip gains 2*MS); 0 turns it off
 *   status        per link: state, delay, open connections, connections
 *                 accepted and refused, bytes forwarded each way
 *   quit          exit
 *
 * P is a link's listening port. The proxy exits on SIGTERM/SIGINT, on
 * `quit`, when stdin reaches end of file (stdin mode) or when the control
 * connection closes (--control mode): it never outlives the test driving it.
 *
 * Memory is bounded: at most FP_MAX_LINKS links, FP_MAX_CONNS connections per
 * link, and FP_PIPE_LIMIT bytes buffered per direction of a connection (past
 * it the proxy stops reading from the sender until the receiver drains).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#define FP_MAX_LINKS  64
#define FP_MAX_CONNS  256
#define FP_CHUNK_SIZE (64 * 1024)
#define FP_PIPE_LIMIT (1024 * 1024)
#define FP_LINE_MAX   1024

enum fp_state { FP_UP, FP_CUT, FP_STALL };
static const char *const fp_state_names[] = {"up", "cut", "stalled"};

/* A chunk of bytes read from one side, waiting for its due time or for its
 * write to the other side to complete. */
struct fp_chunk {
    struct fp_chunk *next; /* FIFO order in the pipe's delay queue */
    struct fp_pipe *pipe;  /* the pipe that owns it */
    uint64_t due;          /* loop time (ms) at which it may be written */
    size_t len;            /* bytes in data */
    uv_write_t req;        /* the write carrying it, once issued */
    char data[FP_CHUNK_SIZE];
};

/* One direction of a proxied connection: bytes read from src are written to
 * dst, through the delay queue when the link has a delay. */
struct fp_pipe {
    struct fp_conn *conn;
    uv_tcp_t *src, *dst;
    int dir;               /* 0: client to target, 1: target to client */
    size_t queued;         /* bytes allocated for chunks not yet written */
    bool reading;          /* uv_read_start is in effect on src */
    bool eof;              /* src reached end of file */
    bool shut;             /* dst was shut down after eof and drain */
    struct fp_chunk *head; /* delay queue (not yet written) */
    struct fp_chunk *tail;
    uv_timer_t timer; /* fires when head is due */
    uv_shutdown_t shutdown_req;
};

/* A connection accepted on a link and its connection to the target. */
struct fp_conn {
    struct fp_link *link;
    struct fp_conn *prev, *next; /* the link's list of open connections */
    uv_tcp_t client;             /* accepted from the link's listener */
    uv_tcp_t upstream;           /* dialed to the target */
    uv_connect_t connect_req;
    struct fp_pipe pipes[2]; /* 0: client to upstream, 1: upstream to client */
    bool connected;
    bool closing;
    int handles; /* handles not yet closed; the conn is freed at 0 */
};

struct fp_link {
    int port; /* bound listening port */
    char target_name[64];
    struct sockaddr_in target;
    uv_tcp_t server;
    enum fp_state state;
    uint64_t delay_ms;
    struct fp_conn *conns;
    int nconns;
    uint64_t accepted, refused;
    uint64_t bytes[2]; /* forwarded: client to target, target to client */
};

/* The control channel: stdin/stdout or one TCP connection. */
struct fp_control {
    bool tcp;
    uv_pipe_t in_pipe; /* stdin when it is a pipe or socket */
    uv_tty_t in_tty;   /* stdin when it is a terminal */
    uv_tcp_t server;   /* --control listener */
    uv_tcp_t conn;     /* the open control connection */
    bool conn_open;
    char line[FP_LINE_MAX];
    size_t len;
    bool overlong;
};

static uv_loop_t *loop;
static struct fp_link links[FP_MAX_LINKS];
static int nlinks;
static struct fp_control ctl;

static void pipe_update_reading(struct fp_pipe *p);
static void conn_close(struct fp_conn *c, bool reset);

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */

static void ctl_write_done(uv_write_t *req, int status) {
    free(req);
}

/* Sends one line (a newline is added) to whoever sent the command. */
static void reply(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    if (!ctl.tcp) {
        fwrite(buf, 1, (size_t)n, stdout);
        fflush(stdout);
        return;
    }
    if (!ctl.conn_open)
        return;
    /* One allocation holds the request and its bytes. */
    uv_write_t *req = malloc(sizeof *req + (size_t)n);
    if (!req)
        return;
    char *copy = (char *)(req + 1);
    memcpy(copy, buf, (size_t)n);
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    if (uv_write(req, (uv_stream_t *)&ctl.conn, &b, 1, ctl_write_done) != 0)
        free(req);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

static void conn_handle_closed(uv_handle_t *h) {
    struct fp_conn *c = h->data;
    if (--c->handles > 0)
        return;
    for (int d = 0; d < 2; d++) {
        struct fp_chunk *ch = c->pipes[d].head;
        while (ch) {
            struct fp_chunk *next = ch->next;
            free(ch);
            ch = next;
        }
    }
    free(c);
}

static void timer_closed(uv_handle_t *h) {
    struct fp_pipe *p = h->data;
    h->data = p->conn;
    conn_handle_closed(h);
}

static void close_tcp(uv_tcp_t *t, bool reset) {
    if (uv_is_closing((uv_handle_t *)t))
        return;
    if (reset && uv_tcp_close_reset(t, conn_handle_closed) == 0)
        return;
    uv_close((uv_handle_t *)t, conn_handle_closed);
}

/* Closes both sides of c (with a reset when asked) and unlinks it; c is
 * freed once libuv has closed its handles. Pending writes end with
 * UV_ECANCELED and free their chunks. */
static void conn_close(struct fp_conn *c, bool reset) {
    if (c->closing)
        return;
    c->closing = true;
    struct fp_link *l = c->link;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    close_tcp(&c->client, reset);
    close_tcp(&c->upstream, reset);
    uv_close((uv_handle_t *)&c->pipes[0].timer, timer_closed);
    uv_close((uv_handle_t *)&c->pipes[1].timer, timer_closed);
}

/* Closes c once both directions have ended and drained. */
static void conn_maybe_done(struct fp_conn *c) {
    if (c->pipes[0].shut && c->pipes[1].shut)
        conn_close(c, false);
}

static void pipe_shutdown_done(uv_shutdown_t *req, int status) {
    struct fp_pipe *p = req->data;
    if (status == UV_ECANCELED)
        return;
    if (status < 0) {
        conn_close(p->conn, true);
        return;
    }
    conn_maybe_done(p->conn);
}

/* After src's end of file and once everything read is written, passes the
 * end of file on to dst. */
static void pipe_maybe_shutdown(struct fp_pipe *p) {
    if (!p->eof || p->shut || p->queued > 0 || p->conn->closing)
        return;
    p->shut = true;
    p->shutdown_req.data = p;
    if (uv_shutdown(&p->shutdown_req, (uv_stream_t *)p->dst, pipe_shutdown_done) != 0)
        conn_close(p->conn, true);
}

static void chunk_written(uv_write_t *req, int status) {
    struct fp_chunk *ch = req->data;
    struct fp_pipe *p = ch->pipe;
    p->queued -= sizeof *ch;
    free(ch);
    if (status == UV_ECANCELED || p->conn->closing)
        return;
    if (status < 0) {
        conn_close(p->conn, true);
        return;
    }
    pipe_update_reading(p);
    pipe_maybe_shutdown(p);
}

static void chunk_write(struct fp_pipe *p, struct fp_chunk *ch) {
    ch->req.data = ch;
    uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
    p->conn->link->bytes[p->dir] += ch->len;
    int rc = uv_write(&ch->req, (uv_stream_t *)p->dst, &b, 1, chunk_written);
    if (rc != 0) {
        p->queued -= sizeof *ch;
        free(ch);
        conn_close(p->conn, true);
    }
}

/* Writes every chunk whose time has come and re-arms the timer for the
 * next one. */
static void pipe_timer_fired(uv_timer_t *t) {
    struct fp_pipe *p = t->data;
    uint64_t now = uv_now(loop);
    while (p->head && p->head->due <= now && !p->conn->closing) {
        struct fp_chunk *ch = p->head;
        p->head = ch->next;
        if (!p->head)
            p->tail = NULL;
        chunk_write(p, ch);
    }
    if (p->head && !p->conn->closing)
        uv_timer_start(&p->timer, pipe_timer_fired, p->head->due - now, 0);
}

static void pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct fp_chunk *ch = malloc(sizeof *ch);
    if (!ch) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(ch->data, sizeof ch->data);
}

static void pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    struct fp_conn *c = s->data;
    struct fp_pipe *p = (s == (uv_stream_t *)&c->client) ? &c->pipes[0] : &c->pipes[1];
    struct fp_chunk *ch =
        buf->base ? (struct fp_chunk *)(buf->base - offsetof(struct fp_chunk, data)) : NULL;
    if (nread <= 0 || c->closing) {
        free(ch);
        if (nread == UV_EOF) {
            p->eof = true;
            pipe_update_reading(p);
            pipe_maybe_shutdown(p);
        } else if (nread < 0) {
            conn_close(c, true);
        }
        return;
    }
    ch->pipe = p;
    ch->len = (size_t)nread;
    ch->next = NULL;
    ch->due = uv_now(loop) + c->link->delay_ms;
    p->queued += sizeof *ch;
    if (c->link->delay_ms == 0 && !p->head) {
        chunk_write(p, ch);
    } else {
        if (p->tail)
            p->tail->next = ch;
        else
            p->head = ch;
        p->tail = ch;
        if (!uv_is_active((uv_handle_t *)&p->timer)) {
            uint64_t now = uv_now(loop);
            uv_timer_start(&p->timer, pipe_timer_fired, p->head->due > now ? p->head->due - now : 0,
                           0);
        }
    }
    if (!c->closing)
        pipe_update_reading(p);
}

/* Reads from p's source exactly when the link forwards, the connection is
 * up, the source has not ended and the buffered bytes are under the limit
 * (which bounds memory and passes back-pressure on to the sender). */
static void pipe_update_reading(struct fp_pipe *p) {
    struct fp_conn *c = p->conn;
    if (c->closing)
        return;
    bool want = c->connected && c->link->state == FP_UP && !p->eof && p->queued < FP_PIPE_LIMIT;
    if (want && !p->reading) {
        if (uv_read_start((uv_stream_t *)p->src, pipe_alloc, pipe_read) != 0) {
            conn_close(c, true);
            return;
        }
        p->reading = true;
    } else if (!want && p->reading) {
        uv_read_stop((uv_stream_t *)p->src);
        p->reading = false;
    }
}

static void conn_connected(uv_connect_t *req, int status) {
    struct fp_conn *c = req->data;
    if (status == UV_ECANCELED || c->closing)
        return;
    if (status < 0) {
        conn_close(c, true);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->upstream, 1);
    pipe_update_reading(&c->pipes[0]);
    pipe_update_reading(&c->pipes[1]);
}

static void refused_closed(uv_handle_t *h) {
    free(h);
}

static void link_accept(uv_stream_t *server, int status) {
    struct fp_link *l = server->data;
    if (status < 0)
        return;
    if (l->state == FP_CUT || l->nconns >= FP_MAX_CONNS) {
        /* Accept and reset at once: the dialer sees its connection die. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0)
            l->refused++;
        if (uv_tcp_close_reset(t, refused_closed) != 0)
            uv_close((uv_handle_t *)t, refused_closed);
        return;
    }
    struct fp_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->link = l;
    uv_tcp_init(loop, &c->client);
    uv_tcp_init(loop, &c->upstream);
    c->client.data = c->upstream.data = c;
    for (int d = 0; d < 2; d++) {
        struct fp_pipe *p = &c->pipes[d];
        p->conn = c;
        p->dir = d;
        p->src = d == 0 ? &c->client : &c->upstream;
        p->dst = d == 0 ? &c->upstream : &c->client;
        uv_timer_init(loop, &p->timer);
        p->timer.data = p;
    }
    c->handles = 4;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->client) != 0) {
        conn_close(c, false);
        return;
    }
    l->accepted++;
    uv_tcp_nodelay(&c->client, 1);
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->upstream, (const struct sockaddr *)&l->target,
                       conn_connected) != 0)
        conn_close(c, true);
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

static void link_set_state(struct fp_link *l, enum fp_state st) {
    l->state = st;
    if (st == FP_CUT) {
        while (l->conns)
            conn_close(l->conns, true);
        return;
    }
    for (struct fp_conn *c = l->conns, *next; c; c = next) {
        next = c->next; /* pipe_update_reading may close c */
        pipe_update_reading(&c->pipes[0]);
        if (!c->closing)
            pipe_update_reading(&c->pipes[1]);
    }
}

static struct fp_link *find_link(const char *arg) {
    char *end;
    long port = arg ? strtol(arg, &end, 10) : -1;
    if (!arg || *end != '\0')
        return NULL;
    for (int i = 0; i < nlinks; i++)
        if (links[i].port == port)
            return &links[i];
    return NULL;
}

static void command(char *line) {
    char *argv[4] = {0};
    int argc = 0;
    for (char *tok = strtok(line, " \t\r"); tok && argc < 4; tok = strtok(NULL, " \t\r"))
        argv[argc++] = tok;
    if (argc == 0)
        return;
    const char *cmd = argv[0];
    if (strcmp(cmd, "status") == 0) {
        for (int i = 0; i < nlinks; i++) {
            struct fp_link *l = &links[i];
            reply("link %d -> %s %s delay=%llu conns=%d accepted=%llu refused=%llu "
                  "bytes=%llu/%llu",
                  l->port, l->target_name, fp_state_names[l->state],
                  (unsigned long long)l->delay_ms, l->nconns, (unsigned long long)l->accepted,
                  (unsigned long long)l->refused, (unsigned long long)l->bytes[0],
                  (unsigned long long)l->bytes[1]);
        }
        reply("ok");
    } else if (strcmp(cmd, "cut-all") == 0 || strcmp(cmd, "stall-all") == 0 ||
               strcmp(cmd, "heal-all") == 0) {
        enum fp_state st = cmd[0] == 'c' ? FP_CUT : cmd[0] == 's' ? FP_STALL : FP_UP;
        for (int i = 0; i < nlinks; i++)
            link_set_state(&links[i], st);
        reply("ok %s", cmd);
    } else if (strcmp(cmd, "cut") == 0 || strcmp(cmd, "stall") == 0 || strcmp(cmd, "heal") == 0) {
        struct fp_link *l = find_link(argv[1]);
        if (!l || argc != 2) {
            reply("err usage: %s LISTEN-PORT (a link's port)", cmd);
            return;
        }
        link_set_state(l, cmd[0] == 'c' ? FP_CUT : cmd[0] == 's' ? FP_STALL : FP_UP);
        reply("ok %s %d", cmd, l->port);
    } else if (strcmp(cmd, "delay") == 0) {
        struct fp_link *l = find_link(argv[1]);
        char *end = NULL;
        long ms = argv[2] ? strtol(argv[2], &end, 10) : -1;
        if (!l || argc != 3 || *end != '\0' || ms < 0 || ms > 600000) {
            reply("err usage: delay LISTEN-PORT MS (0..600000)");
            return;
        }
        l->delay_ms = (uint64_t)ms;
        reply("ok delay %d %ld", l->port, ms);
    } else if (strcmp(cmd, "quit") == 0) {
        reply("ok quit");
        exit(0);
    } else {
        reply("err unknown command '%s' (cut, stall, heal, cut-all, stall-all, heal-all, "
              "delay, status, quit)",
              cmd);
    }
}

/* Splits the control input into lines; a line longer than FP_LINE_MAX is
 * answered with an error and skipped. */
static void control_bytes(const char *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char ch = data[i];
        if (ch != '\n') {
            if (ctl.len < FP_LINE_MAX - 1)
                ctl.line[ctl.len++] = ch;
            else
                ctl.overlong = true;
            continue;
        }
        ctl.line[ctl.len] = '\0';
        if (ctl.overlong)
            reply("err line too long");
        else
            command(ctl.line);
        ctl.len = 0;
        ctl.overlong = false;
    }
}

static void control_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char space[4096];
    *buf = uv_buf_init(space, sizeof space);
}

static void control_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    if (nread > 0) {
        control_bytes(buf->base, (size_t)nread);
        return;
    }
    if (nread < 0) {
        /* The driver is gone (end of file or error): so are we. */
        exit(0);
    }
}

static void control_busy_closed(uv_handle_t *h) {
    free(h);
}

static void control_accept(uv_stream_t *server, int status) {
    if (status < 0)
        return;
    if (ctl.conn_open) {
        static const char busy[] = "err busy\n";
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0) {
            uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
            uv_try_write((uv_stream_t *)t, &b, 1);
        }
        uv_close((uv_handle_t *)t, control_busy_closed);
        return;
    }
    uv_tcp_init(loop, &ctl.conn);
    if (uv_accept(server, (uv_stream_t *)&ctl.conn) != 0) {
        uv_close((uv_handle_t *)&ctl.conn, NULL);
        return;
    }
    ctl.conn_open = true;
    ctl.len = 0;
    ctl.overlong = false;
    uv_read_start((uv_stream_t *)&ctl.conn, control_alloc, control_read);
}

/* ------------------------------------------------------------------------ */
/* Startup                                                                   */

static void on_signal(uv_signal_t *s, int signum) {
    exit(0);
}

static int bind_listener(uv_tcp_t *t, int port, uv_connection_cb cb, int *bound) {
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, t);
    int rc = uv_tcp_bind(t, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 128, cb);
    if (rc != 0)
        return rc;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    rc = uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len);
    if (rc == 0)
        *bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return rc;
}

static int parse_port(const char *s, int *port) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* Parses "LISTEN=HOST:PORT" into l (not yet bound). */
static int parse_link(const char *spec, struct fp_link *l, int *listen_port) {
    char buf[128];
    if (strlen(spec) >= sizeof buf)
        return -1;
    strcpy(buf, spec);
    char *eq = strchr(buf, '=');
    char *colon = eq ? strrchr(eq + 1, ':') : NULL;
    if (!eq || !colon)
        return -1;
    *eq = '\0';
    *colon = '\0';
    int tport;
    if (parse_port(buf, listen_port) != 0 || parse_port(colon + 1, &tport) != 0 || tport == 0)
        return -1;
    if (uv_ip4_addr(eq + 1, tport, &l->target) != 0)
        return -1;
    snprintf(l->target_name, sizeof l->target_name, "%s:%d", eq + 1, tport);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bitraft-faultproxy [--control PORT] --link LISTEN=HOST:PORT "
                    "[--link ...]\n"
                    "  commands (stdin, or the --control connection): cut P, stall P, heal P,\n"
                    "  cut-all, stall-all, heal-all, delay P MS, status, quit\n");
    exit(2);
}

int main(int argc, char **argv) {
    int listen_ports[FP_MAX_LINKS];
    int control_port = -1;
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--link") == 0 && i + 1 < argc) {
            if (nlinks == FP_MAX_LINKS) {
                fprintf(stderr, "faultproxy: at most %d links\n", FP_MAX_LINKS);
                return 2;
            }
            if (parse_link(argv[++i], &links[nlinks], &listen_ports[nlinks]) != 0) {
                fprintf(stderr, "faultproxy: bad link '%s' (want LISTEN=IPV4:PORT)\n", argv[i]);
                return 2;
            }
            nlinks++;
        } else if (strcmp(argv[i], "--control") == 0 && i + 1 < argc) {
            if (parse_port(argv[++i], &control_port) != 0)
                usage();
        } else {
            usage();
        }
    }
    if (nlinks == 0)
        usage();

    for (int i = 0; i < nlinks; i++) {
        struct fp_link *l = &links[i];
        l->server.data = l;
        int rc = bind_listener(&l->server, listen_ports[i], link_accept, &l->port);
        if (rc != 0) {
            fprintf(stderr, "faultproxy: cannot listen on 127.0.0.1:%d: %s\n", listen_ports[i],
                    uv_strerror(rc));
            return 1;
        }
        l->server.data = l;
        printf("link %d -> %s\n", l->port, l->target_name);
    }
    if (control_port >= 0) {
        ctl.tcp = true;
        int bound;
        int rc = bind_listener(&ctl.server, control_port, control_accept, &bound);
        if (rc != 0) {
            fprintf(stderr, "faultproxy: cannot listen on 127.0.0.1:%d: %s\n", control_port,
                    uv_strerror(rc));
            return 1;
        }
        printf("control %d\n", bound);
    } else {
        uv_stream_t *in;
        uv_handle_type kind = uv_guess_handle(0);
        int rc;
        if (kind == UV_TTY) {
            rc = uv_tty_init(loop, &ctl.in_tty, 0, 1);
            in = (uv_stream_t *)&ctl.in_tty;
        } else if (kind == UV_NAMED_PIPE || kind == UV_TCP) {
            rc = uv_pipe_init(loop, &ctl.in_pipe, 0);
            if (rc == 0)
                rc = uv_pipe_open(&ctl.in_pipe, 0);
            in = (uv_stream_t *)&ctl.in_pipe;
        } else {
            fprintf(stderr, "faultproxy: stdin must be a pipe, socket or terminal "
                            "(or use --control PORT)\n");
            return 2;
        }
        if (rc == 0)
            rc = uv_read_start(in, control_alloc, control_read);
        if (rc != 0) {
            fprintf(stderr, "faultproxy: cannot read stdin: %s\n", uv_strerror(rc));
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);

    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    return uv_run(loop, UV_RUN_DEFAULT);
}
