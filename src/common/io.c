/*
 * io.c - see br_io.h.
 */
#include <errno.h>
#include <unistd.h>

#include "br_io.h"

int br_write_all(int fd, const void *p, size_t len) {
    const char *c = p;
    while (len > 0) {
        ssize_t w = write(fd, c, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        c += w;
        len -= (size_t)w;
    }
    return 0;
}

int br_pwrite_all(int fd, const void *p, size_t len, uint64_t off) {
    const char *c = p;
    while (len > 0) {
        ssize_t w = pwrite(fd, c, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        c += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}
