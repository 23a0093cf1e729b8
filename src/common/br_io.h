/*
 * br_io.h - small I/O helpers every layer needs (not a public header).
 */
#ifndef BR_COMMON_IO_H
#define BR_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>

/* Writes all of p[0, len) to fd at its offset, resuming after short writes
 * and EINTR. 0 or -errno (-EIO if the kernel wrote nothing). */
int br_write_all(int fd, const void *p, size_t len);

/* The same with pwrite at offset off. */
int br_pwrite_all(int fd, const void *p, size_t len, uint64_t off);

#endif /* BR_COMMON_IO_H */
