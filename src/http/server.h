/*
 * server.h - the HTTP front end (h2o on libuv) over a br_service.
 *
 * The API it serves is specified in docs/API.md. The server is thin: it
 * parses and validates a request, calls the service, and formats the
 * result. Writes complete on the service's threads: the request waits
 * while the write waits for its fdatasync, and the completion posts it back
 * to its HTTP thread, so an HTTP thread never blocks on the disk.
 */
#ifndef BR_HTTP_SERVER_H
#define BR_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "bitraft/service.h"

typedef struct br_http br_http;

typedef struct br_http_options {
    const char *bind;      /* IPv4 address to listen on (default "127.0.0.1") */
    uint16_t port;         /* 0 = any free port (see br_http_port) */
    unsigned threads;      /* HTTP threads, each a libuv loop (default: online cores) */
    unsigned conn_limit;   /* open connections at most (default 1024) */
    unsigned timeout_s;    /* idle connection timeout (default 60) */
    size_t max_key_size;   /* longest key accepted (default 64 KiB) */
    size_t max_value_size; /* largest PUT body (default 64 MiB) */
    size_t max_batch_size; /* largest batch body (default 64 MiB) */
    int verbose;           /* nonzero: one log line per request */
    int int_keys;          /* integer-key mode: keys on the wire are decimal numbers, stored as
                              8 bytes big-endian (see br_key_mode) */
    const char *version;   /* reported by /status */
    br_log_fn log;         /* optional */
    void *log_ctx;
} br_http_options;

void br_http_options_init(br_http_options *o);

/* Starts listening. svc stays the caller's and must outlive the server.
 * On failure *out is NULL and err holds a one-line reason. */
int br_http_start(br_service *svc, const br_http_options *o, br_http **out, char *err,
                  size_t errlen);

/* The port actually bound. */
uint16_t br_http_port(br_http *h);

/*
 * Graceful stop: stops accepting connections and answers new writes, even
 * on connections already open, with 503; waits up to timeout_ms for
 * requests in flight to complete (accepted writes always do), then closes
 * every connection and frees the server. Returns the number of requests still in
 * flight when it gave up (0 normally).
 */
unsigned br_http_stop(br_http *h, unsigned timeout_ms);

#endif /* BR_HTTP_SERVER_H */
