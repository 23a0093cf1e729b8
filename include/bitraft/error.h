/*
 * bitraft error codes.
 *
 * Every bitraft function that can fail returns 0 on success or a negative
 * error code. Codes from the operating system pass through as negated errno
 * values (-ENOENT, -EIO, ...); bitraft's own codes live below BR_ERR_BASE so
 * that the two ranges never overlap. br_strerror() names both kinds.
 */
#ifndef BITRAFT_ERROR_H
#define BITRAFT_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define BR_ERR_BASE (-10000)

/* One table generates the codes and their messages. */
#define BR_ERRNO_MAP(X)                                                                            \
    X(NOTFOUND, "key not found")                                                                   \
    X(INVAL, "invalid argument")                                                                   \
    X(EMPTYKEY, "key is empty")                                                                    \
    X(KEYTOOBIG, "key is larger than the configured maximum")                                      \
    X(VALTOOBIG, "value is larger than the configured maximum")                                    \
    X(TOOBIG, "batch is larger than the store can write at once")                                  \
    X(CORRUPT, "data corruption detected")                                                         \
    X(LOCKED, "data directory is locked by another process")                                       \
    X(FORMAT, "unsupported on-disk format")                                                        \
    X(CLOSED, "store is closing")                                                                  \
    X(NOMEM, "out of memory")                                                                      \
    X(PROTOCOL, "protocol error")                                                                  \
    X(NOTLEADER, "not the leader")                                                                 \
    X(READONLY, "store is open read-only")

#define BR_OK 0

/* Position of each code in the table (internal; use the BR_E* names). */
#define BR_ERR_GEN(name, msg) BR_ERRIDX_##name,
enum br_err_index_ { BR_ERRNO_MAP(BR_ERR_GEN) BR_ERR_COUNT_ };
#undef BR_ERR_GEN

/* BR_ENOTFOUND == -10000, BR_EINVAL == -10001, ... */
#define BR_ERR_GEN(name, msg) BR_E##name = BR_ERR_BASE - BR_ERRIDX_##name,
enum { BR_ERRNO_MAP(BR_ERR_GEN) };
#undef BR_ERR_GEN

/*
 * Returns a static, human-readable message for a code returned by any
 * bitraft function: bitraft's own codes and negated errno values alike.
 * Never returns NULL.
 */
const char *br_strerror(int err);

/* Returns the symbolic name of a code ("BR_ENOTFOUND", "EIO", ...). */
const char *br_errname(int err);

#ifdef __cplusplus
}
#endif

#endif /* BITRAFT_ERROR_H */
