/* datafile.c - one data file: creation, mapping, sealing (see datafile.h). */
#include "engine/datafile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/error.h"
#include "engine/record.h"

int (*br_df_fdatasync)(int fd) = fdatasync;

void br_df_name(char *buf, size_t len, uint32_t id) {
    snprintf(buf, len, "%010u.data", id);
}

/* Reserves the blocks of [0, len) so later writes through the map cannot
 * fail for lack of space, and so an fdatasync after them does not have to
 * commit a file size change. Falls back to a plain size change where the
 * file system cannot preallocate. */
static int preallocate(int fd, uint64_t len) {
    if (fallocate(fd, 0, 0, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    return ftruncate(fd, (off_t)len) == 0 ? 0 : -errno;
}

static int map_file(br_datafile *f, int writable) {
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *m = mmap(NULL, f->map_len, prot, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED)
        return -errno;
    f->map = m;
    /* Point reads are random; do not let read-ahead pull in whole files. */
    madvise(m, f->map_len, MADV_RANDOM);
    return 0;
}

static br_datafile *df_alloc(uint32_t id) {
    br_datafile *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->id = id;
    f->fd = -1;
    atomic_init(&f->refs, 0);
    return f;
}

int br_df_create(int dirfd, uint32_t id, uint64_t cap, br_datafile **out) {
    char name[48], tmp[64];
    br_df_name(name, sizeof name, id);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    br_datafile *f = df_alloc(id);
    if (!f)
        return BR_ENOMEM;
    int rc = 0;
    f->fd = openat(dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = preallocate(f->fd, cap)) != 0)
        goto fail;
    uint8_t hdr[BR_FILE_HEADER_SIZE];
    br_file_header_encode(hdr, id, 0, 0);
    if (pwrite(f->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        rc = errno ? -errno : -EIO;
        goto fail;
    }
    if (fdatasync(f->fd) != 0 || renameat(dirfd, tmp, dirfd, name) != 0 || fsync(dirfd) != 0) {
        rc = -errno;
        goto fail;
    }
    f->map_len = cap;
    f->size = BR_FILE_HEADER_SIZE;
    if ((rc = map_file(f, 1)) != 0) {
        unlinkat(dirfd, name, 0);
        goto fail_closed;
    }
    *out = f;
    return 0;
fail:
    unlinkat(dirfd, tmp, 0);
fail_closed:
    if (f->fd >= 0)
        close(f->fd);
    free(f);
    return rc;
}

int br_df_open(int dirfd, uint32_t id, uint64_t cap, br_datafile **out) {
    char name[48];
    br_df_name(name, sizeof name, id);
    br_datafile *f = df_alloc(id);
    if (!f)
        return BR_ENOMEM;
    int rc = 0;
    f->fd = openat(dirfd, name, (cap ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    f->size = (uint64_t)st.st_size;
    f->map_len = (size_t)st.st_size;
    if (cap && f->map_len < cap) {
        if ((rc = preallocate(f->fd, cap)) != 0)
            goto fail;
        f->map_len = cap;
    }
    if (f->map_len == 0) { /* an empty file cannot be mapped; it has no header either */
        rc = BR_ECORRUPT;
        goto fail;
    }
    if ((rc = map_file(f, cap != 0)) != 0)
        goto fail;
    if (!cap) {
        close(f->fd);
        f->fd = -1;
    }
    *out = f;
    return 0;
fail:
    if (f->fd >= 0)
        close(f->fd);
    free(f);
    return rc;
}

int br_df_zero_tail(br_datafile *f) {
    if (f->size >= f->map_len)
        return 0;
    off_t off = (off_t)f->size, len = (off_t)(f->map_len - f->size);
    /* A metadata operation where supported: no page is touched. */
    if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE, off, len) != 0) {
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return -errno;
        memset(f->map + f->size, 0, f->map_len - f->size);
    }
    return br_df_sync(f);
}

int br_df_sync(br_datafile *f) {
    if (f->fd >= 0 && br_df_fdatasync(f->fd) != 0)
        return -errno;
    return 0;
}

int br_df_seal(br_datafile *f) {
    if (f->fd < 0)
        return 0;
    int rc = 0;
    if (br_df_fdatasync(f->fd) != 0 || ftruncate(f->fd, (off_t)f->size) != 0 ||
        br_df_fdatasync(f->fd) != 0)
        rc = -errno;
    close(f->fd);
    f->fd = -1;
    /* The map keeps its length; nothing past size is ever read. */
    mprotect(f->map, f->map_len, PROT_READ);
    return rc;
}

void br_df_free(br_datafile *f) {
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->fd >= 0)
        close(f->fd);
    free(f);
}
