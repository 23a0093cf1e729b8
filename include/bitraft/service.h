/*
 * bitraft service: the one interface the front ends (HTTP, the CLI's future
 * binary protocol) call to read and write, whatever the node's mode.
 *
 * Design
 * ------
 * Every operation completes through a callback, so a front end never
 * blocks one of its own threads on the disk or on consensus. Two
 * implementations are planned: "standalone" (this file's only one so far:
 * the engine directly) and "replicated" (a write is proposed to the Raft
 * node and completes when committed and applied). A front end never
 * branches on the mode.
 *
 * The standalone service runs writes on a small pool of its own threads:
 * the engine's write calls block until the data is durable (fdatasync
 * under the default policy), and concurrent writers share one sync, so the
 * more writes wait at once, the more share one flush. Reads never wait for
 * a flush: the standalone service runs them on the caller's thread and
 * calls the callback before returning (br_service_reads_inline() says so).
 *
 * Callback contract
 * -----------------
 * A call that returns 0 has accepted the operation: its callback is called
 * exactly once, from any thread (possibly the caller's, before the call
 * returns). A call that returns a negative error (BR_ECLOSED when the
 * service is closing, BR_ENOMEM) has not: its callback is never called.
 * The buffers passed to a write (key, value, batch) must stay valid and
 * unchanged until its callback has been called.
 *
 * Threads
 * -------
 * Every function may be called from any number of threads at once, except
 * br_service_close(), which must be the last call.
 */
#ifndef BITRAFT_SERVICE_H
#define BITRAFT_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "bitraft/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_service br_service;

/* Completion of a write: rc is 0 or a negative code (BR_ENOTFOUND for a
 * delete of an absent key, the engine's input and I/O errors). */
typedef void (*br_service_done_fn)(void *ctx, int rc);

/* Completion of a get: on rc == 0, val is a malloc'd copy of the value
 * (non-NULL even when empty) that the callback now owns; otherwise NULL. */
typedef void (*br_service_get_fn)(void *ctx, int rc, void *val, size_t vlen);

/* Completion of a range: on rc == 0, it is an open iterator the callback
 * now owns (free it with br_iter_free() before br_service_close()). */
typedef void (*br_service_range_fn)(void *ctx, int rc, br_iter *it);

/* How the front ends read keys on the wire (a property of the directory). */
typedef enum br_key_mode {
    BR_KEYS_BYTES = 0, /* keys are byte strings, compared bytewise */
    BR_KEYS_INT = 1,   /* keys are decimal numbers 0..2^64-1, stored as 8 bytes
                          big-endian so that ranges are numeric (the original's keys) */
} br_key_mode;

typedef struct br_service_options {
    unsigned write_threads; /* standalone: threads running writes (default 32, 1..1024) */
    int inline_writes;      /* standalone: nonzero runs writes on the caller's thread and
                               calls back before returning, when the engine's sync policy
                               is not BR_SYNC_ALWAYS (a write then never waits for a
                               flush, so a thread hop would only cost). Default 0. */
    int int_keys;           /* integer-key mode for a directory without a KEYS file:
                               0 no; 1 yes, refusing a directory that holds keys
                               (BR_EINVAL); 2 only if the directory is empty (else
                               byte keys). A directory's mode is fixed when it is
                               created and recorded in its KEYS file. */
} br_service_options;

/* Figures for /status and /metrics. */
typedef struct br_service_stats {
    const char *mode; /* "standalone"; static */
    br_key_mode key_mode;
    br_engine_stats engine;   /* the local engine's figures */
    uint64_t writes_queued;   /* writes waiting for a pool thread now */
    uint64_t writes_inflight; /* writes accepted and not yet completed */
} br_service_stats;

void br_service_options_init(br_service_options *o);

/*
 * Opens the engine on dir (eo may be NULL for the engine's defaults) and
 * starts the write pool. On failure *out is NULL, the engine is closed, and
 * err (if not NULL) holds a one-line reason; BR_ELOCKED means another
 * process holds the directory.
 */
int br_service_open_standalone(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, br_service **out, char *err,
                               size_t errlen);

/* The directory's key mode. */
br_key_mode br_service_key_mode(const br_service *s);

/* Nonzero when get and range always call back before returning. */
int br_service_reads_inline(const br_service *s);

/* Nonzero when put, delete and write always call back before returning
 * (see br_service_options.inline_writes). */
int br_service_writes_inline(const br_service *s);

int br_service_get(br_service *s, const void *key, size_t klen, br_service_get_fn cb, void *ctx);

int br_service_put(br_service *s, const void *key, size_t klen, const void *val, size_t vlen,
                   br_service_done_fn cb, void *ctx);

int br_service_delete(br_service *s, const void *key, size_t klen, br_service_done_fn cb,
                      void *ctx);

/* Applies b atomically (see br_engine_write). b stays the caller's. */
int br_service_write(br_service *s, const br_batch *b, br_service_done_fn cb, void *ctx);

/* Keys start <= k <= end, at most limit (0 = all); NULL bounds are open. */
int br_service_range(br_service *s, const void *start, size_t slen, const void *end, size_t elen,
                     size_t limit, br_service_range_fn cb, void *ctx);

void br_service_stats_get(br_service *s, br_service_stats *st);

/* Starts a compaction of the local store in the background (see
 * br_engine_compact_start); its progress shows in the stats. */
int br_service_compact(br_service *s, uint32_t min_dead_pct);

/*
 * Refuses new operations (BR_ECLOSED), waits for every accepted write to
 * complete (callbacks included), stops the pool, closes the engine (which
 * syncs). Returns the engine's close result; s is freed in every case.
 * NULL is a no-op.
 */
int br_service_close(br_service *s);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_SERVICE_H */
