/* test_server.c - the HTTP server in-process, where the store can be made
 * to fail or slow: a store error is a 500 with its reason, and the store
 * then refuses writes while reads go on; writes in flight at a shutdown
 * finish; a client that goes away while its write waits. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitraft/service.h"
#include "engine/datafile.h"
#include "server.h"
#include "testutil.h"

typedef struct resp {
    long code;
    char body[512];
    size_t len;
} resp;

static size_t sink(char *p, size_t sz, size_t n, void *ctx) {
    resp *r = ctx;
    size_t m = sz * n, room = sizeof r->body - 1 - r->len;
    memcpy(r->body + r->len, p, m < room ? m : room);
    r->len += m < room ? m : room;
    r->body[r->len] = 0;
    return m;
}

static resp request(uint16_t port, const char *method, const char *path, const char *body) {
    resp r = {0};
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_cleanup(c);
    return r;
}

/* A standalone service on dir and the server over it, on a port the
 * kernel picks (127.0.0.1). Returns the port. */
static uint16_t start(const char *dir, br_service **svc, br_http **h) {
    char err[256] = "";
    cr_assert_eq(br_service_open_standalone(dir, NULL, NULL, svc, err, sizeof err), 0, "%s", err);
    br_http_options ho;
    br_http_options_init(&ho);
    ho.port = 0;
    cr_assert_eq(br_http_start(*svc, &ho, h, err, sizeof err), 0, "%s", err);
    return br_http_port(*h);
}

static int failing_fdatasync(int fd) {
    (void)fd;
    errno = EIO;
    return -1;
}

Test(server, store_error_is_500_and_the_store_turns_read_only) {
    char *dir = tu_tmpdir("server");
    br_service *svc;
    br_http *h;
    uint16_t port = start(dir, &svc, &h);

    resp r = request(port, "PUT", "/kv/before", "1");
    cr_assert(r.code == 200 || r.code == 204, "PUT: %ld %s", r.code, r.body);

    br_df_fdatasync = failing_fdatasync;
    r = request(port, "PUT", "/kv/lost", "2");
    cr_assert_eq(r.code, 500, "a failed sync: %ld %s", r.code, r.body);
    cr_assert(strstr(r.body, "store error") != NULL, "the reason is given: %s", r.body);
    br_df_fdatasync = fdatasync;
    r = request(port, "PUT", "/kv/after", "3");
    cr_assert_eq(r.code, 500, "writes stay refused after a failed sync: %ld", r.code);
    r = request(port, "POST", "/", "key:9,value:9");
    cr_assert_eq(r.code, 500, "the original's form too: %ld", r.code);
    r = request(port, "GET", "/kv/before", NULL);
    cr_assert_eq(r.code, 200, "reads go on: %ld", r.code);
    cr_assert_str_eq(r.body, "1");
    r = request(port, "GET", "/kv/after", NULL);
    cr_assert_eq(r.code, 404);

    cr_assert_eq(br_http_stop(h, 5000), 0);
    br_service_close(svc);
    tu_rmrf(dir);
    free(dir);
}

/* ---- Shutdown -------------------------------------------------------------- */

#include <pthread.h>

static int slow_fdatasync(int fd) {
    sleep(2); /* keeps one write in flight while the server stops */
    return fdatasync(fd);
}

typedef struct put_arg {
    uint16_t port;
    resp r;
} put_arg;

static void *slow_put(void *p) {
    put_arg *a = p;
    a->r = request(a->port, "PUT", "/kv/slow", "s");
    return NULL;
}

typedef struct stop_arg {
    br_http *h;
    unsigned left;
} stop_arg;

static void *stopper(void *p) {
    stop_arg *a = p;
    a->left = br_http_stop(a->h, 20000);
    return NULL;
}

Test(server, writes_during_shutdown_get_503_and_writes_in_flight_finish) {
    char *dir = tu_tmpdir("server");
    br_service *svc;
    br_http *h;
    uint16_t port = start(dir, &svc, &h);

    /* A keep-alive connection opened before the stop. */
    CURL *c = curl_easy_init();
    char url[128];
    resp r = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%u/health", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);

    br_df_fdatasync = slow_fdatasync;
    put_arg pa = {.port = port};
    pthread_t tp, ts;
    pthread_create(&tp, NULL, slow_put, &pa);
    usleep(300000); /* the slow PUT is waiting for its sync */
    stop_arg sa = {.h = h};
    pthread_create(&ts, NULL, stopper, &sa);
    usleep(300000); /* the server is draining */

    /* A new write on the open connection: refused, 503. */
    r = (resp){0};
    snprintf(url, sizeof url, "http://127.0.0.1:%u/kv/late", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x");
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    cr_assert_eq(cc, CURLE_OK, "the open connection is served while draining: %s",
                 curl_easy_strerror(cc));
    cr_assert_eq(code, 503, "a write during shutdown: %ld %s", code, r.body);

    pthread_join(tp, NULL);
    pthread_join(ts, NULL);
    br_df_fdatasync = fdatasync;
    cr_assert(pa.r.code == 200 || pa.r.code == 204, "the write in flight finished: %ld", pa.r.code);
    cr_assert_eq(sa.left, 0, "nothing was cut off");
    br_service_close(svc);

    /* The finished write is on disk; the refused one is not. */
    br_engine *e;
    char err[256] = "";
    cr_assert_eq(br_engine_open(dir, NULL, &e, err, sizeof err), 0, "%s", err);
    char v[8];
    size_t vl;
    cr_assert_eq(br_engine_get_into(e, "slow", 4, v, sizeof v, &vl), 0);
    cr_assert_eq(br_engine_get_into(e, "late", 4, v, sizeof v, &vl), BR_ENOTFOUND);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

/* The client goes away while its write waits for the disk (HTTP/2: its
 * connection closes, and h2o disposes of the request at once): the write
 * still completes, the server frees the request when the completion comes
 * back (under ASan a use after free would show here), counts it as
 * abandoned, and serves on. */
Test(server, a_client_that_goes_away_while_its_write_waits) {
    char *dir = tu_tmpdir("server");
    br_service *svc;
    br_http *h;
    uint16_t port = start(dir, &svc, &h);

    br_df_fdatasync = slow_fdatasync;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/kv/gone", port);
    long versions[] = {CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE, CURL_HTTP_VERSION_1_1};
    for (int i = 0; i < 2; i++) {
        CURL *c = curl_easy_init();
        resp r = {0};
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, versions[i]);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, i ? "v1" : "v2");
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        CURLcode cc = curl_easy_perform(c);
        curl_easy_cleanup(c); /* closes the connection */
        cr_assert_eq(cc, CURLE_OPERATION_TIMEDOUT, "the client gave up: %s",
                     curl_easy_strerror(cc));
    }
    /* both writes complete (each waits 2 s for its slow sync) */
    resp r = {0};
    for (int t = 0; t < 100; t++) {
        usleep(100000);
        br_df_fdatasync = fdatasync;
        r = request(port, "GET", "/kv/gone", NULL);
        if (r.code == 200 && strcmp(r.body, "v1") == 0)
            break;
    }
    cr_assert_eq(r.code, 200, "the abandoned write was applied: %ld %s", r.code, r.body);
    cr_assert_str_eq(r.body, "v1", "the later of the two abandoned writes is the value");
    CURL *c = curl_easy_init();
    char murl[128];
    snprintf(murl, sizeof murl, "http://127.0.0.1:%u/metrics", port);
    char *big = calloc(1, 1 << 16);
    FILE *f = fmemopen(big, 1 << 16, "w");
    curl_easy_setopt(c, CURLOPT_URL, murl);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    fclose(f);
    const char *line = strstr(big, "\nbitraft_http_requests_abandoned_total ");
    cr_assert_not_null(line, "the metric is there");
    unsigned long long n =
        strtoull(line + strlen("\nbitraft_http_requests_abandoned_total "), NULL, 10);
    cr_assert_geq(n, 1, "the HTTP/2 request was disposed of while it waited (%llu)", n);
    free(big);
    cr_assert_eq(br_http_stop(h, 20000), 0, "nothing left in flight");
    br_service_close(svc);
    tu_rmrf(dir);
    free(dir);
}
