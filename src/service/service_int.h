/*
 * service_int.h - what the two service implementations share: the table of
 * functions every br_service starts with (service.c dispatches the public
 * calls through it), the batch and iterator bases, and the KEYS file.
 */
#ifndef BR_SERVICE_INT_H
#define BR_SERVICE_INT_H

#include "bitraft/service.h"

/* One implementation's functions; each has the contract of the public
 * function of the same name (bitraft/service.h). */
typedef struct br_service_ops {
    const char *mode; /* "standalone" or "cluster" */
    int (*reads_inline)(const br_service *s, unsigned flags);
    int (*writes_inline)(const br_service *s);
    void (*leader)(br_service *s, uint64_t *self, uint64_t *leader, char *addr, size_t addrlen);
    int (*get)(br_service *s, const void *key, size_t klen, unsigned flags, br_service_get_fn cb,
               void *ctx);
    int (*read_barrier)(br_service *s, br_service_done_fn cb, void *ctx);
    int (*put)(br_service *s, const void *key, size_t klen, const void *val, size_t vlen,
               br_service_done_fn cb, void *ctx);
    int (*del)(br_service *s, const void *key, size_t klen, br_service_done_fn cb, void *ctx);
    /* The batch's impl is what batch_new made. */
    void *(*batch_new)(br_service *s);
    int (*batch_put)(void *impl, const void *key, size_t klen, const void *val, size_t vlen);
    int (*batch_delete)(void *impl, const void *key, size_t klen);
    void (*batch_free)(void *impl);
    int (*write)(br_service *s, void *impl, br_service_done_fn cb, void *ctx);
    int (*range)(br_service *s, const void *start, size_t slen, const void *end, size_t elen,
                 size_t limit, unsigned flags, br_service_range_fn cb, void *ctx);
    void (*stats)(br_service *s, br_service_stats *st);
    int (*compact)(br_service *s, uint32_t min_dead_pct);
    /* Membership; NULL in standalone mode. */
    size_t (*members)(br_service *s, br_service_member_info *out, size_t cap);
    int (*add_member)(br_service *s, const br_service_member *m, int learner, br_service_done_fn cb,
                      void *ctx);
    int (*remove_member)(br_service *s, uint64_t id, br_service_done_fn cb, void *ctx);
    int (*close)(br_service *s);
} br_service_ops;

/* The head of every implementation's state. */
struct br_service {
    const br_service_ops *ops;
    br_key_mode key_mode; /* from the directory's KEYS file */
};

struct br_service_batch {
    br_service *s;
    void *impl;
};

/* The head of every implementation's iterator. */
typedef struct br_service_iter_ops {
    int (*next)(br_service_iter *it, const void **key, size_t *klen, const void **val,
                size_t *vlen);
    void (*free)(br_service_iter *it);
} br_service_iter_ops;

struct br_service_iter {
    const br_service_iter_ops *ops;
};

/*
 * Reads or creates dir's KEYS file (absent for byte keys, "int\n" for
 * integer keys) and returns the mode in *mode. want_int is
 * br_service_options.int_keys; has_data says whether the directory already
 * holds writes (then want_int 1 is refused, 2 keeps byte keys). Written
 * once: KEYS.tmp, fsync, rename, fsync of dir.
 */
int br_service_key_mode_load(const char *dir, int want_int, int has_data, br_key_mode *mode,
                             char *err, size_t errlen);

#endif /* BR_SERVICE_INT_H */
