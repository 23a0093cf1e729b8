/* error.c - one table of bitraft error codes and their messages. */
#include "bitraft/error.h"

#include <string.h>

static const char *const br_err_msgs[] = {
#define BR_ERR_GEN(name, msg) msg,
    BR_ERRNO_MAP(BR_ERR_GEN)
#undef BR_ERR_GEN
};

static const char *const br_err_names[] = {
#define BR_ERR_GEN(name, msg) "BR_E" #name,
    BR_ERRNO_MAP(BR_ERR_GEN)
#undef BR_ERR_GEN
};

static int br_err_index(int err) {
    int idx = BR_ERR_BASE - err;
    return (idx >= 0 && idx < BR_ERR_COUNT_) ? idx : -1;
}

const char *br_strerror(int err) {
    if (err == 0)
        return "success";
    int idx = br_err_index(err);
    if (idx >= 0)
        return br_err_msgs[idx];
    if (err < 0 && err > BR_ERR_BASE)
        return strerror(-err); /* glibc: static for known codes, thread-safe */
    return "unknown error";
}

const char *br_errname(int err) {
    if (err == 0)
        return "OK";
    int idx = br_err_index(err);
    if (idx >= 0)
        return br_err_names[idx];
    if (err < 0 && err > BR_ERR_BASE) {
        const char *n = strerrorname_np(-err);
        return n ? n : "E?";
    }
    return "E?";
}
