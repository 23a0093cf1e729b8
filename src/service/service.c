/*
 * service.c - the public service calls, dispatched through the
 * implementation's table (service_int.h), and the KEYS file both
 * implementations use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service_int.h"

void br_service_options_init(br_service_options *o) {
    memset(o, 0, sizeof *o);
    o->write_threads = 32;
}

void br_service_cluster_options_init(br_service_cluster_options *o) {
    memset(o, 0, sizeof *o);
    o->listen_port = -1;
    o->log_level = BR_LOG_INFO;
}

br_key_mode br_service_key_mode(const br_service *s) {
    return s->key_mode;
}

int br_service_reads_inline(const br_service *s, unsigned flags) {
    return s->ops->reads_inline(s, flags);
}

int br_service_writes_inline(const br_service *s) {
    return s->ops->writes_inline(s);
}

void br_service_leader(br_service *s, uint64_t *self, uint64_t *leader, char *addr,
                       size_t addrlen) {
    s->ops->leader(s, self, leader, addr, addrlen);
}

int br_service_get(br_service *s, const void *key, size_t klen, unsigned flags,
                   br_service_get_fn cb, void *ctx) {
    return s->ops->get(s, key, klen, flags, cb, ctx);
}

int br_service_read_barrier(br_service *s, br_service_done_fn cb, void *ctx) {
    return s->ops->read_barrier(s, cb, ctx);
}

int br_service_put(br_service *s, const void *key, size_t klen, const void *val, size_t vlen,
                   br_service_done_fn cb, void *ctx) {
    return s->ops->put(s, key, klen, val, vlen, cb, ctx);
}

int br_service_delete(br_service *s, const void *key, size_t klen, br_service_done_fn cb,
                      void *ctx) {
    return s->ops->del(s, key, klen, cb, ctx);
}

br_service_batch *br_service_batch_new(br_service *s) {
    br_service_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->s = s;
    b->impl = s->ops->batch_new(s);
    if (!b->impl) {
        free(b);
        return NULL;
    }
    return b;
}

int br_service_batch_put(br_service_batch *b, const void *key, size_t klen, const void *val,
                         size_t vlen) {
    return b->s->ops->batch_put(b->impl, key, klen, val, vlen);
}

int br_service_batch_delete(br_service_batch *b, const void *key, size_t klen) {
    return b->s->ops->batch_delete(b->impl, key, klen);
}

void br_service_batch_free(br_service_batch *b) {
    if (!b)
        return;
    b->s->ops->batch_free(b->impl);
    free(b);
}

int br_service_write(br_service *s, const br_service_batch *b, br_service_done_fn cb, void *ctx) {
    if (b->s != s)
        return BR_EINVAL;
    return s->ops->write(s, b->impl, cb, ctx);
}

int br_service_range(br_service *s, const void *start, size_t slen, const void *end, size_t elen,
                     size_t limit, unsigned flags, br_service_range_fn cb, void *ctx) {
    return s->ops->range(s, start, slen, end, elen, limit, flags, cb, ctx);
}

int br_service_iter_next(br_service_iter *it, const void **key, size_t *klen, const void **val,
                         size_t *vlen) {
    return it->ops->next(it, key, klen, val, vlen);
}

void br_service_iter_free(br_service_iter *it) {
    if (it)
        it->ops->free(it);
}

void br_service_stats_get(br_service *s, br_service_stats *st) {
    s->ops->stats(s, st);
}

int br_service_compact(br_service *s, uint32_t min_dead_pct) {
    return s->ops->compact(s, min_dead_pct);
}

size_t br_service_members(br_service *s, br_service_member_info *out, size_t cap) {
    return s->ops->members ? s->ops->members(s, out, cap) : 0;
}

int br_service_add_member(br_service *s, const br_service_member *m, int learner,
                          br_service_done_fn cb, void *ctx) {
    return s->ops->add_member ? s->ops->add_member(s, m, learner, cb, ctx) : -EOPNOTSUPP;
}

int br_service_remove_member(br_service *s, uint64_t id, br_service_done_fn cb, void *ctx) {
    return s->ops->remove_member ? s->ops->remove_member(s, id, cb, ctx) : -EOPNOTSUPP;
}

int br_service_close(br_service *s) {
    return s ? s->ops->close(s) : 0;
}

/* ---- The KEYS file ------------------------------------------------------- */

int br_service_key_mode_load(const char *dir, int want_int, int has_data, br_key_mode *mode,
                             char *err, size_t errlen) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/KEYS", dir);
    snprintf(tmp, sizeof tmp, "%s/KEYS.tmp", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[16] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n == 4 && memcmp(buf, "int\n", 4) == 0) {
            *mode = BR_KEYS_INT;
            return 0;
        }
        if (err && errlen)
            snprintf(err, errlen, "%s: not a key mode this version knows", path);
        return BR_EFORMAT;
    }
    if (errno != ENOENT)
        return -errno;
    *mode = BR_KEYS_BYTES;
    if (!want_int)
        return 0;
    if (has_data) {
        if (want_int == 2)
            return 0; /* keep the byte keys already there */
        if (err && errlen)
            snprintf(err, errlen,
                     "%s holds byte keys; integer-key mode is chosen when a directory is "
                     "created",
                     dir);
        return BR_EINVAL;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    errno = 0;
    int rc = write(fd, "int\n", 4) == 4 && fsync(fd) == 0 ? 0 : (errno ? -errno : -EIO);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rc = -errno;
        if (dfd >= 0)
            close(dfd);
    }
    if (rc) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, br_strerror(rc));
        return rc;
    }
    *mode = BR_KEYS_INT;
    return 0;
}

#ifdef BR_NO_CLUSTER
int br_service_open_replicated(const char *dir, const br_engine_options *eo,
                               const br_service_options *so, const br_service_cluster_options *co,
                               br_service **out, char *err, size_t errlen) {
    (void)dir, (void)eo, (void)so, (void)co;
    *out = NULL;
    if (err && errlen)
        snprintf(err, errlen, "this build has no cluster support (BR_SKIP_CLUSTER)");
    return BR_EINVAL;
}
#endif
