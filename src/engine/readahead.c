/* readahead.c - asking the kernel for the records of cold ranges ahead of
 * use (see readahead.h). */
#include "engine/readahead.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

static uintptr_t page_mask(void) {
    static uintptr_t mask;
    if (!mask)
        mask = ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
    return mask;
}

void br_ra_willneed(const br_datafile *f, uint64_t offset, size_t len) {
    uintptr_t a = (uintptr_t)(f->map + offset) & page_mask();
    uintptr_t z = (uintptr_t)(f->map + offset + len);
    madvise((void *)a, z - a, MADV_WILLNEED); /* advice: a failure costs nothing */
}

int br_ra_resident(const br_datafile *f, uint64_t offset) {
    uintptr_t a = (uintptr_t)(f->map + offset) & page_mask();
    unsigned char vec = 0;
    if (mincore((void *)a, ~page_mask() + 1, &vec) != 0)
        return 1; /* cannot tell: read as if hot */
    return vec & 1;
}
