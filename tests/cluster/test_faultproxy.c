/*
 * The fault proxy (bitraft-faultproxy, path in $BR_FAULTPROXY) as a real
 * process between this test's clients and an echo server on 127.0.0.1:
 * bytes flow both ways, intact, under back-pressure; `cut` kills a link's
 * connections and new ones, `heal` restores it, `stall` holds bytes without
 * losing them, `delay` adds latency, and a fault on one link leaves the
 * others alone. The proxy exits with its driver (stdin or control
 * connection closed) and on SIGTERM. Every socket read here has a timeout.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* An echo server: one thread per connection, sends back what it reads and
 * closes after the client's end of file. */

static void *echo_conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *echo_accept(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
    return NULL;
}

static int listen_local(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(listen(fd, 64) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static int echo_start(void) {
    int port;
    int lfd = listen_local(&port);
    pthread_t t;
    pthread_create(&t, NULL, echo_accept, (void *)(intptr_t)lfd);
    pthread_detach(t);
    return port;
}

/* ------------------------------------------------------------------------ */
/* The proxy process, driven through its stdin; replies read from stdout. */

struct proxy {
    pid_t pid;
    FILE *in, *out;
    int ports[8];
    int nports;
    int control; /* the control port in --control mode */
};

static const char *proxy_bin(void) {
    const char *b = getenv("BR_FAULTPROXY");
    cr_assert(b, "BR_FAULTPROXY must name the bitraft-faultproxy binary");
    return b;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts the proxy with nlinks links (free ports) to target, plus extra
 * arguments; returns once it printed "ready". */
static void proxy_start(struct proxy *p, int nlinks, int target, const char *extra) {
    int to[2], from[2];
    cr_assert(pipe(to) == 0 && pipe(from) == 0);
    char specs[8][64];
    char *argv[24];
    int argc = 0;
    argv[argc++] = (char *)proxy_bin();
    for (int i = 0; i < nlinks; i++) {
        snprintf(specs[i], sizeof specs[i], "0=127.0.0.1:%d", target);
        argv[argc++] = "--link";
        argv[argc++] = specs[i];
    }
    if (extra) {
        argv[argc++] = "--control";
        argv[argc++] = (char *)extra;
    }
    argv[argc] = NULL;
    p->pid = fork();
    cr_assert(p->pid >= 0);
    if (p->pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[1]);
        close(from[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    p->in = fdopen(to[1], "w");
    p->out = fdopen(from[0], "r");
    p->nports = 0;
    p->control = -1;
    char line[256];
    while (fgets(line, sizeof line, p->out)) {
        int port;
        if (sscanf(line, "link %d ->", &port) == 1)
            p->ports[p->nports++] = port;
        else if (sscanf(line, "control %d", &port) == 1)
            p->control = port;
        else if (strncmp(line, "ready", 5) == 0)
            break;
    }
    cr_assert_eq(p->nports, nlinks, "the proxy did not start");
}

/* Sends a command; returns its final line ("ok ..." / "err ...") in a static
 * buffer, and the lines before it appended to `before` when given. */
static const char *proxy_cmd(struct proxy *p, char *before, size_t cap, const char *fmt, ...) {
    static char line[512];
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->in, fmt, ap);
    va_end(ap);
    fputc('\n', p->in);
    fflush(p->in);
    if (before)
        before[0] = '\0';
    while (fgets(line, sizeof line, p->out)) {
        if (strncmp(line, "ok", 2) == 0 || strncmp(line, "err", 3) == 0)
            return line;
        if (before)
            strncat(before, line, cap - strlen(before) - 1);
    }
    cr_assert_fail("the proxy closed its stdout");
    return NULL;
}

static void proxy_stop(struct proxy *p) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
}

/* Waits up to secs for the proxy to exit; returns whether it did. */
static bool proxy_exits_within(struct proxy *p, double secs) {
    double end = now_s() + secs;
    while (now_s() < end) {
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
            return true;
        usleep(10000);
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Clients */

static void set_timeout(int fd, int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_timeout(fd, 2000);
    return fd;
}

static int read_full(int fd, char *buf, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t r = read(fd, buf + off, n - off);
        if (r <= 0)
            return -1;
        off += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const char *buf, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Sends n pattern bytes and expects them echoed back; returns 0 if so. */
static int roundtrip(int fd, size_t n) {
    char out[4096], in[4096];
    cr_assert(n <= sizeof out);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(rand() & 0xff);
    if (write_full(fd, out, n) != 0 || read_full(fd, in, n) != 0)
        return -1;
    return memcmp(out, in, n) == 0 ? 0 : -1;
}

/* True when fd's connection is dead: a read sees end of file or an error
 * (a reset), rather than data or a timeout. Writes first so a reset shows. */
static bool is_dead(int fd) {
    char b = 'x';
    (void)!write(fd, &b, 1);
    ssize_t r = read(fd, &b, 1);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static int echo_port;
static struct proxy px;

static void setup(void) {
    signal(SIGPIPE, SIG_IGN);
    echo_port = echo_start();
}

static void teardown(void) {
    if (px.pid > 0)
        proxy_stop(&px);
}

TestSuite(faultproxy, .init = setup, .fini = teardown, .timeout = 30);

/* ------------------------------------------------------------------------ */

struct sender {
    int fd;
    const char *data;
    size_t n;
    int rc;
};

static void *send_all(void *arg) {
    struct sender *s = arg;
    s->rc = write_full(s->fd, s->data, s->n);
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

Test(faultproxy, bytes_flow_both_ways_intact_with_backpressure) {
    proxy_start(&px, 2, echo_port, NULL);
    /* 8 MiB streamed while reading the echo: more than the proxy buffers,
     * so its back-pressure is on the path; then the client's end of file
     * goes through, the echo server closes and that end of file comes back. */
    size_t n = 8u << 20;
    char *out = malloc(n), *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(i * 2654435761u >> 13);
    int fd = dial(px.ports[1]);
    struct sender s = {.fd = fd, .data = out, .n = n};
    pthread_t t;
    pthread_create(&t, NULL, send_all, &s);
    cr_assert_eq(read_full(fd, in, n), 0, "echo incomplete");
    pthread_join(t, NULL);
    cr_assert_eq(s.rc, 0);
    cr_assert(memcmp(out, in, n) == 0, "bytes changed on the way");
    char b;
    cr_assert_eq(read(fd, &b, 1), 0, "no end of file after the echo server closed");
    close(fd);
    free(out);
    free(in);

    /* The proxy closes its side once both shutdowns completed: soon. */
    char st[2048];
    bool closed = false;
    for (int i = 0; i < 100 && !closed; i++) {
        cr_assert_str_eq(proxy_cmd(&px, st, sizeof st, "status"), "ok\n");
        closed = strstr(st, "up delay=0 conns=0 accepted=1 refused=0 bytes=8388608/8388608");
        if (!closed)
            usleep(10000);
    }
    cr_assert(closed, "status: %s", st);
}

Test(faultproxy, cut_kills_connections_heal_restores_others_untouched) {
    proxy_start(&px, 3, echo_port, NULL);
    int a = dial(px.ports[0]), b = dial(px.ports[1]);
    cr_assert_eq(roundtrip(a, 100), 0);
    cr_assert_eq(roundtrip(b, 100), 0);

    char want[64];
    snprintf(want, sizeof want, "ok cut %d\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "cut %d", px.ports[0]), want);
    cr_assert(is_dead(a), "an open connection survived the cut");
    int a2 = dial(px.ports[0]); /* the kernel completes it; the proxy resets it */
    cr_assert(is_dead(a2), "a new connection on a cut link forwarded");
    cr_assert_eq(roundtrip(b, 1000), 0, "cutting one link broke another's connection");
    int b2 = dial(px.ports[1]);
    cr_assert_eq(roundtrip(b2, 1000), 0, "cutting one link broke another's new connection");

    char st[2048];
    proxy_cmd(&px, st, sizeof st, "status");
    char line[128];
    snprintf(line, sizeof line, "link %d -> 127.0.0.1:%d cut", px.ports[0], echo_port);
    cr_assert(strstr(st, line), "status: %s", st);
    cr_assert(strstr(st, "refused=1"), "status: %s", st);

    snprintf(want, sizeof want, "ok heal %d\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "heal %d", px.ports[0]), want);
    int a3 = dial(px.ports[0]);
    cr_assert_eq(roundtrip(a3, 1000), 0, "heal did not restore the link");
    cr_assert_eq(roundtrip(b, 100), 0);

    /* cut-all and heal-all */
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "cut-all"), "ok cut-all\n");
    cr_assert(is_dead(a3) && is_dead(b) && is_dead(b2));
    int c = dial(px.ports[2]);
    cr_assert(is_dead(c));
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "heal-all"), "ok heal-all\n");
    for (int i = 0; i < 3; i++) {
        int fd = dial(px.ports[i]);
        cr_assert_eq(roundtrip(fd, 500), 0, "link %d not healed", i);
        close(fd);
    }
}

Test(faultproxy, stall_holds_bytes_and_heal_delivers_them) {
    proxy_start(&px, 2, echo_port, NULL);
    int a = dial(px.ports[0]), b = dial(px.ports[1]);
    cr_assert_eq(roundtrip(a, 10), 0);
    char want[64];
    snprintf(want, sizeof want, "ok stall %d\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "stall %d", px.ports[0]), want);
    cr_assert_eq(write_full(a, "0123456789", 10), 0);
    set_timeout(a, 300);
    char buf[16];
    errno = 0;
    cr_assert_eq(read(a, buf, sizeof buf), -1, "bytes went through a stalled link");
    cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "the stalled connection died: %s",
              strerror(errno));
    cr_assert_eq(roundtrip(b, 100), 0, "stalling one link stalled another");
    int a2 = dial(px.ports[0]); /* accepted, but nothing flows */
    cr_assert_eq(write_full(a2, "abc", 3), 0);
    set_timeout(a2, 300);
    cr_assert_eq(read(a2, buf, sizeof buf), -1);

    snprintf(want, sizeof want, "ok heal %d\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "heal %d", px.ports[0]), want);
    set_timeout(a, 2000);
    set_timeout(a2, 2000);
    cr_assert_eq(read_full(a, buf, 10), 0, "the held bytes were not delivered");
    cr_assert(memcmp(buf, "0123456789", 10) == 0);
    cr_assert_eq(read_full(a2, buf, 3), 0);
    cr_assert(memcmp(buf, "abc", 3) == 0);
    cr_assert_eq(roundtrip(a, 100), 0);
}

Test(faultproxy, delay_adds_latency_each_way) {
    proxy_start(&px, 2, echo_port, NULL);
    int a = dial(px.ports[0]), b = dial(px.ports[1]);
    char want[64];
    snprintf(want, sizeof want, "ok delay %d 150\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "delay %d 150", px.ports[0]), want);
    double t0 = now_s();
    cr_assert_eq(roundtrip(a, 100), 0);
    double rtt = now_s() - t0;
    cr_assert(rtt >= 0.29 && rtt < 1.5, "round trip %.3f s with 150 ms each way", rtt);
    t0 = now_s();
    cr_assert_eq(roundtrip(b, 100), 0);
    cr_assert(now_s() - t0 < 0.1, "a delay on one link slowed another");
    /* Several writes in a row keep their order under a delay. */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(write_full(a, (char[1]){(char)('a' + i)}, 1), 0);
    char buf[5];
    cr_assert_eq(read_full(a, buf, 5), 0);
    cr_assert(memcmp(buf, "abcde", 5) == 0);
    snprintf(want, sizeof want, "ok delay %d 0\n", px.ports[0]);
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "delay %d 0", px.ports[0]), want);
    t0 = now_s();
    cr_assert_eq(roundtrip(a, 100), 0);
    cr_assert(now_s() - t0 < 0.1, "delay 0 did not turn the delay off");
}

Test(faultproxy, bad_commands_are_errors) {
    proxy_start(&px, 1, echo_port, NULL);
    cr_assert(strncmp(proxy_cmd(&px, NULL, 0, "cut 1"), "err ", 4) == 0);
    cr_assert(strncmp(proxy_cmd(&px, NULL, 0, "cut"), "err ", 4) == 0);
    cr_assert(strncmp(proxy_cmd(&px, NULL, 0, "delay %d -5", px.ports[0]), "err ", 4) == 0);
    cr_assert(strncmp(proxy_cmd(&px, NULL, 0, "frobnicate"), "err ", 4) == 0);
    char longline[3000];
    memset(longline, 'x', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "%s", longline), "err line too long\n");
    cr_assert_str_eq(proxy_cmd(&px, NULL, 0, "status"), "ok\n");
}

Test(faultproxy, exits_when_stdin_closes_or_on_sigterm) {
    proxy_start(&px, 1, echo_port, NULL);
    fclose(px.in);
    cr_assert(proxy_exits_within(&px, 3), "still running after its stdin closed");
    px.pid = 0;
    proxy_start(&px, 1, echo_port, NULL);
    kill(px.pid, SIGTERM);
    cr_assert(proxy_exits_within(&px, 3), "still running after SIGTERM");
    px.pid = 0;
}

Test(faultproxy, control_port_one_connection_exits_when_it_closes) {
    proxy_start(&px, 2, echo_port, "0");
    cr_assert(px.control > 0);
    int c = dial(px.control);
    FILE *in = fdopen(dup(c), "r");
    char cmd[64], line[256];
    snprintf(cmd, sizeof cmd, "cut %d\n", px.ports[1]);
    cr_assert_eq(write_full(c, cmd, strlen(cmd)), 0);
    cr_assert(fgets(line, sizeof line, in));
    snprintf(cmd, sizeof cmd, "ok cut %d\n", px.ports[1]);
    cr_assert_str_eq(line, cmd);
    int l1 = dial(px.ports[1]);
    cr_assert(is_dead(l1));
    int l0 = dial(px.ports[0]);
    cr_assert_eq(roundtrip(l0, 100), 0);

    int other = dial(px.control);
    cr_assert_eq(read(other, line, sizeof line), 9, "a second control connection was served");
    cr_assert(strncmp(line, "err busy\n", 9) == 0);
    close(other);

    /* stdin is ignored in this mode: closing it changes nothing. */
    fclose(px.in);
    cr_assert(!proxy_exits_within(&px, 0.3));
    cr_assert_eq(write_full(c, "status\n", 7), 0);
    cr_assert(fgets(line, sizeof line, in) && strncmp(line, "link ", 5) == 0);
    cr_assert(fgets(line, sizeof line, in) && strncmp(line, "link ", 5) == 0);
    cr_assert(fgets(line, sizeof line, in));
    cr_assert_str_eq(line, "ok\n");
    fclose(in);
    close(c);
    cr_assert(proxy_exits_within(&px, 3), "still running after its control connection closed");
    px.pid = 0;
}
