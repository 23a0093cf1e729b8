/*
 * client.c - bitraft get|put|del|range|status|compact: a client of a bitraft server
 * over its REST API (docs/API.md), through libcurl.
 *
 *   bitraft get KEY                       value on stdout, as stored
 *   bitraft put KEY [VALUE]               VALUE defaults to standard input
 *   bitraft del KEY
 *   bitraft range [START [END]] [--limit N]   "key<TAB>value" lines, escaped
 *   bitraft status                        the server's /status JSON
 *   bitraft compact [MIN_DEAD_PCT]        start a compaction (POST /admin/compact)
 *   bitraft member list|add|remove ...    cluster membership (/admin/members)
 *   --server HOST:PORT (default 127.0.0.1:4000; in a cluster, any member)
 *
 * Cluster: a follower answers 307 with the leader's address; the client
 * follows it (a few hops at most; a 307 keeps the method and the body). A
 * 503 with Retry-After (no leader known yet, an election is running) is
 * retried a few times; other 503s (an unknown outcome, a server shutting
 * down) are reported, never retried, since the write may have happened.
 *
 * Exit codes: 0 ok, 1 not found, 2 usage (or the server rejected the input:
 * 400, 413), 3 server unreachable or server error. Errors go to stderr.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"
#include "codec.h"

typedef struct client_args {
    const char *server;
    const char *pos[2];
    int npos;
    uint64_t limit;
    int has_limit;
} client_args;

static int parse_client(int argc, char **argv, client_args *a) {
    a->server = "127.0.0.1:4000";
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--server") == 0 && i + 1 < argc) {
            a->server = argv[++i];
        } else if (strcmp(s, "--limit") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (br_parse_u64(v, strlen(v), &a->limit)) {
                fprintf(stderr, "bitraft: --limit wants a number, got '%s'\n", v);
                return -1;
            }
            a->has_limit = 1;
        } else if (s[0] == '-' && s[1] == '-' && s[2]) {
            fprintf(stderr, "bitraft: unknown option %s\n", s);
            return -1;
        } else if (a->npos < 2) {
            a->pos[a->npos++] = s;
        } else {
            fprintf(stderr, "bitraft: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

static size_t collect(char *p, size_t size, size_t n, void *ctx) {
    br_buf *b = ctx;
    return br_buf_add(b, p, size * n) ? 0 : size * n;
}

#define MAX_REDIRECTS 5 /* 307 hops: a follower to the leader, twice if it moves */
#define MAX_RETRIES   5 /* 503 with Retry-After: no leader known yet */

/* Performs one request. Returns the HTTP status, or -1 when the server
 * could not be reached (reported on stderr). The reply body lands in out. */
static long request_to(const char *method, const char *url, const void *body, size_t blen,
                       size_t (*writer)(char *, size_t, size_t, void *), void *out, CURL *c,
                       br_buf *reset);

static long request(const char *method, const char *url, const void *body, size_t blen,
                    br_buf *out) {
    return request_to(method, url, body, blen, collect, out, NULL, out);
}

/* Notes a Retry-After header (seconds) in *ctx. */
static size_t on_header(char *p, size_t size, size_t n, void *ctx) {
    long *retry_after = ctx;
    size_t len = size * n;
    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        long v = strtol(p + 12, NULL, 10);
        *retry_after = v < 0 ? 0 : v > 5 ? 5 : v;
    }
    return len;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Performs one request on c (or a new handle when NULL), the body going to
 * writer(out), following 307s and retrying 503s that carry Retry-After;
 * before a retry, reset (if not NULL) is emptied. Returns the status or
 * -1 as request(). */
static long request_to(const char *method, const char *url, const void *body, size_t blen,
                       size_t (*writer)(char *, size_t, size_t, void *), void *out, CURL *given,
                       br_buf *reset) {
    CURL *c = given ? given : curl_easy_init();
    if (!c) {
        fprintf(stderr, "bitraft: cannot start libcurl\n");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    long retry_after = -1;
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &retry_after);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
    curl_easy_setopt(c, CURLOPT_POSTREDIR, (long)CURL_REDIR_POST_ALL);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, writer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *hdr = NULL;
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
        hdr = curl_slist_append(hdr, "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    long status = -1;
    for (int attempt = 0;; attempt++) {
        retry_after = -1;
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) {
            fprintf(stderr, "bitraft: %s %s: %s\n", method, url,
                    errbuf[0] ? errbuf : curl_easy_strerror(rc));
            status = -1;
            break;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status != 503 || retry_after < 0 || attempt >= MAX_RETRIES)
            break;
        /* No leader known: an election is running; ask again shortly. */
        if (reset)
            reset->len = 0;
        sleep_ms(retry_after > 0 ? (retry_after * 1000 < 500 ? retry_after * 1000 : 500) : 200);
    }
    curl_slist_free_all(hdr);
    if (!given)
        curl_easy_cleanup(c);
    return status;
}

/* Maps a failed status to an exit code, printing the server's reason. */
static int fail(long status, const br_buf *body) {
    if (status < 0)
        return EXIT_STORE;
    if (status == 404 && body->len >= 13 && memcmp(body->p, "key not found", 13) == 0) {
        fprintf(stderr, "bitraft: key not found\n");
        return EXIT_NOTFOUND;
    }
    fprintf(stderr, "bitraft: server replied %ld: %.*s", status,
            (int)(body->len > 500 ? 500 : body->len), body->p ? body->p : "");
    if (!body->len || body->p[body->len - 1] != '\n')
        fputc('\n', stderr);
    return status == 400 || status == 413 ? EXIT_USAGE : EXIT_STORE;
}

/* Builds "http://server/kv/<key>" with the key percent-encoded. */
static int kv_url(br_buf *u, const char *server, const char *key) {
    if (strncmp(server, "http://", 7) != 0 && br_buf_adds(u, "http://"))
        return -1;
    return br_buf_adds(u, server) || br_buf_adds(u, "/kv/") || br_pct_encode(u, key, strlen(key)) ||
           br_buf_addc(u, 0);
}

/* Prints one range line as "key<TAB>value"; -1 if it is malformed. */
static int print_range_line(const char *line, size_t n) {
    char *scratch = malloc(n + 1);
    if (!scratch)
        return -1;
    const char *k, *v;
    size_t kl, vl;
    int next, rc = br_parse_range_line(line, n, scratch, &k, &kl, &v, &vl, &next);
    if (rc) {
        fprintf(stderr, "bitraft: malformed line from the server: %.*s\n", (int)(n > 200 ? 200 : n),
                line);
    } else if (next) {
        fputs("bitraft: more keys follow; continue with START = ", stderr);
        fwrite(k, 1, kl, stderr);
        fputc('\n', stderr);
    } else {
        cli_print_escaped(k, kl);
        putchar('\t');
        cli_print_escaped(v, vl);
        putchar('\n');
    }
    free(scratch);
    return rc;
}

/* The body of a 200 range reply, printed line by line as it streams in
 * (memory bounded by the longest line). Other replies are collected. */
typedef struct range_sink {
    CURL *c;
    br_buf buf;   /* the pending partial line, or a whole error reply */
    int printing; /* status 200 seen */
    int bad;      /* a malformed line was met */
} range_sink;

static size_t range_write(char *p, size_t size, size_t n, void *ctx) {
    range_sink *rs = ctx;
    size_t len = size * n;
    if (!rs->printing) {
        long status = 0;
        curl_easy_getinfo(rs->c, CURLINFO_RESPONSE_CODE, &status);
        rs->printing = status == 200;
    }
    if (br_buf_add(&rs->buf, p, len))
        return 0;
    if (!rs->printing)
        return len;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(rs->buf.p + start, '\n', rs->buf.len - start);
        if (!nl)
            break;
        size_t ll = (size_t)(nl - (rs->buf.p + start));
        if (ll && print_range_line(rs->buf.p + start, ll)) {
            rs->bad = 1;
            return 0; /* abort the transfer */
        }
        start += ll + 1;
    }
    memmove(rs->buf.p, rs->buf.p + start, rs->buf.len - start);
    rs->buf.len -= start;
    return len;
}

int cmd_client(const char *cmd, int argc, char **argv) {
    client_args a;
    memset(&a, 0, sizeof a);
    if (parse_client(argc, argv, &a)) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    int is_put = strcmp(cmd, "put") == 0, is_range = strcmp(cmd, "range") == 0,
        is_status = strcmp(cmd, "status") == 0, is_compact = strcmp(cmd, "compact") == 0;
    int need = is_range || is_status || is_compact ? 0 : 1;
    int most = is_put || is_range ? 2 : is_compact ? 1 : need;
    if (a.npos < need || a.npos > most || (a.has_limit && !is_range) ||
        (need && a.pos[0][0] == 0)) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "bitraft: cannot start libcurl\n");
        return EXIT_STORE;
    }
    br_buf url = {0}, body = {0};
    char *input = NULL;
    int code = 0;
    long status;
    const char *prefix = strncmp(a.server, "http://", 7) == 0 ? "" : "http://";
    if (is_status || is_range || is_compact) {
        int err = br_buf_adds(&url, prefix) || br_buf_adds(&url, a.server);
        if (is_status) {
            err = err || br_buf_adds(&url, "/status");
        } else if (is_compact) {
            /* bitraft compact [MIN_DEAD_PCT]: starts a compaction on the server. */
            err = err || br_buf_adds(&url, "/admin/compact");
            if (a.npos)
                err = err || br_buf_adds(&url, "?min_dead_pct=") ||
                      br_pct_encode(&url, a.pos[0], strlen(a.pos[0]));
        } else {
            err = err || br_buf_adds(&url, "/kv?");
            if (a.npos >= 1)
                err = err || br_buf_adds(&url, "start=") ||
                      br_pct_encode(&url, a.pos[0], strlen(a.pos[0])) || br_buf_addc(&url, '&');
            if (a.npos >= 2)
                err = err || br_buf_adds(&url, "end=") ||
                      br_pct_encode(&url, a.pos[1], strlen(a.pos[1])) || br_buf_addc(&url, '&');
            if (a.has_limit) {
                char l[32];
                snprintf(l, sizeof l, "limit=%llu", (unsigned long long)a.limit);
                err = err || br_buf_adds(&url, l);
            }
        }
        if (err || br_buf_addc(&url, 0)) {
            code = EXIT_STORE;
            goto out;
        }
        if (is_status || is_compact) {
            status = request(is_status ? "GET" : "POST", url.p, NULL, 0, &body);
            if (status != (is_status ? 200 : 202))
                code = fail(status, &body);
            else
                fwrite(body.p, 1, body.len, stdout);
            goto out;
        }
        range_sink rs = {0};
        rs.c = curl_easy_init();
        status = rs.c ? request_to("GET", url.p, NULL, 0, range_write, &rs, rs.c, &rs.buf) : -1;
        if (rs.bad)
            code = EXIT_STORE;
        else if (status >= 0 && status != 200)
            code = fail(status, &rs.buf);
        else if (status < 0)
            code = EXIT_STORE;
        else if (rs.buf.len && print_range_line(rs.buf.p, rs.buf.len))
            code = EXIT_STORE;
        if (rs.c)
            curl_easy_cleanup(rs.c);
        free(rs.buf.p);
        goto out;
    }
    if (kv_url(&url, a.server, a.pos[0])) {
        code = EXIT_STORE;
        goto out;
    }
    if (is_put) {
        size_t vl;
        const char *v = a.pos[1];
        if (a.npos < 2) {
            v = input = cli_read_stdin(&vl);
            if (!v) {
                fprintf(stderr, "bitraft: cannot read the value from standard input\n");
                code = EXIT_STORE;
                goto out;
            }
        } else {
            vl = strlen(v);
        }
        status = request("PUT", url.p, v, vl, &body);
        if (status != 204 && status != 200)
            code = fail(status, &body);
    } else if (strcmp(cmd, "get") == 0) {
        status = request("GET", url.p, NULL, 0, &body);
        if (status != 200)
            code = fail(status, &body);
        else
            fwrite(body.p ? body.p : "", 1, body.len, stdout);
    } else {
        status = request("DELETE", url.p, NULL, 0, &body);
        if (status != 204 && status != 200)
            code = fail(status, &body);
    }
out:
    free(input);
    free(url.p);
    free(body.p);
    curl_global_cleanup();
    return code;
}

/* ---- bitraft member ------------------------------------------------------ */

/* Nonzero when the /admin/members JSON in body lists id with role. The
 * server writes each member as {"id":N,"role":"R",...}. */
static int has_member(const br_buf *body, const char *id, const char *role) {
    char pat[96];
    snprintf(pat, sizeof pat, "{\"id\":%s,\"role\":\"%s\"", id, role);
    return body->p && memmem(body->p, body->len, pat, strlen(pat)) != NULL;
}

/*
 * bitraft member list                     the members as the server knows them
 * bitraft member add ID RAFT_HOST:PORT [CLIENT_HOST:PORT] [--learner] [--wait S]
 * bitraft member remove ID
 * --server HOST:PORT as for the other commands (any member: a follower
 * redirects to the leader). add prints the members once the new one is in
 * the configuration as a learner; the leader promotes it to voter when it
 * has caught up, which --wait S waits for (up to S seconds).
 */
int cmd_member(int argc, char **argv) {
    const char *server = "127.0.0.1:4000", *pos[4];
    int npos = 0, learner = 0;
    uint64_t wait_s = 0, id = 0;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--server") == 0 && i + 1 < argc) {
            server = argv[++i];
        } else if (strcmp(s, "--learner") == 0) {
            learner = 1;
        } else if (strcmp(s, "--wait") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (br_parse_u64(v, strlen(v), &wait_s) || wait_s > 86400) {
                fprintf(stderr, "bitraft: --wait wants seconds (0..86400), got '%s'\n", v);
                return EXIT_USAGE;
            }
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "bitraft: unknown option %s\n", s);
            return EXIT_USAGE;
        } else if (npos < 4) {
            pos[npos++] = s;
        } else {
            fprintf(stderr, "bitraft: too many arguments\n");
            return EXIT_USAGE;
        }
    }
    const char *sub = npos ? pos[0] : "list"; /* bare "bitraft members" lists */
    int is_list = strcmp(sub, "list") == 0, is_add = strcmp(sub, "add") == 0,
        is_remove = strcmp(sub, "remove") == 0;
    if ((!is_list && !is_add && !is_remove) || (is_list && npos > 1) ||
        (is_add && (npos < 3 || npos > 4)) || (is_remove && npos != 2) ||
        ((learner || wait_s) && !is_add) || (learner && wait_s)) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    if (npos > 1 && (br_parse_u64(pos[1], strlen(pos[1]), &id) || id == 0)) {
        fprintf(stderr, "bitraft: a member id is a whole number above 0, got '%s'\n", pos[1]);
        return EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "bitraft: cannot start libcurl\n");
        return EXIT_STORE;
    }
    br_buf url = {0}, list = {0}, body = {0};
    int code = 0;
    const char *prefix = strncmp(server, "http://", 7) == 0 ? "" : "http://";
    int err = br_buf_adds(&url, prefix) || br_buf_adds(&url, server) ||
              br_buf_adds(&url, "/admin/members");
    err = err || br_buf_adds(&list, prefix) || br_buf_adds(&list, server) ||
          br_buf_adds(&list, "/admin/members") || br_buf_addc(&list, 0);
    if (is_add)
        err = err || br_buf_adds(&url, "?id=") || br_buf_adds(&url, pos[1]) ||
              br_buf_adds(&url, "&raft=") || br_pct_encode(&url, pos[2], strlen(pos[2])) ||
              (npos == 4 &&
               (br_buf_adds(&url, "&client=") || br_pct_encode(&url, pos[3], strlen(pos[3])))) ||
              (learner && br_buf_adds(&url, "&learner=true"));
    if (is_remove)
        err = err || br_buf_addc(&url, '/') || br_buf_adds(&url, pos[1]);
    if (err || br_buf_addc(&url, 0)) {
        code = EXIT_STORE;
        goto out;
    }
    const char *method = is_list ? "GET" : is_add ? "POST" : "DELETE";
    long status = request(method, url.p, NULL, 0, &body);
    if (status != 200) {
        code = status == 404 && is_remove ? EXIT_NOTFOUND : fail(status, &body);
        if (code == EXIT_NOTFOUND)
            fprintf(stderr, "bitraft: %.*s", (int)body.len, body.p ? body.p : "");
        goto out;
    }
    if (is_add && wait_s) {
        /* Poll until the member is a voter (the leader promotes it once
         * its log has caught up). */
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            if (has_member(&body, pos[1], "voter"))
                break;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((uint64_t)(t.tv_sec - t0.tv_sec) >= wait_s) {
                fprintf(stderr,
                        "bitraft: member %s is not a voter after %llu s (still catching "
                        "up?); the leader promotes it once it has caught up\n",
                        pos[1], (unsigned long long)wait_s);
                code = EXIT_STORE;
                break;
            }
            sleep_ms(200);
            body.len = 0;
            status = request("GET", list.p, NULL, 0, &body);
            if (status != 200) {
                code = fail(status, &body);
                goto out;
            }
        }
    }
    fwrite(body.p ? body.p : "", 1, body.len, stdout);
out:
    free(url.p);
    free(list.p);
    free(body.p);
    curl_global_cleanup();
    return code;
}
