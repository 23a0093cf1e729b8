/* hint.c - writing and reading hint files (format in hint.h). */
#include "br_io.h"
#include "engine/hint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitraft/error.h"
#include "engine/keysort.h"
#include "engine/record.h"

void br_hint_name(char *buf, size_t len, uint32_t id) {
    snprintf(buf, len, "%010u.hint", id);
}

/* A growing output buffer. */
typedef struct obuf {
    uint8_t *p;
    size_t len, cap;
} obuf;

static int obuf_reserve(obuf *b, size_t more) {
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *np = realloc(b->p, cap);
    if (!np)
        return BR_ENOMEM;
    b->p = np;
    b->cap = cap;
    return 0;
}

/* One record of the file being hinted, for sorting. */
typedef struct hrec {
    uint64_t head; /* key bytes [prefix, prefix + 8) big-endian: the radix sort key */
    const uint8_t *key;
    uint32_t klen; /* top bit: tombstone */
    uint32_t vlen;
    uint32_t offset;
    uint64_t seq;
} hrec;

static int hrec_cmp(const void *a, const void *b) {
    const hrec *x = a, *y = b;
    int c =
        br_hint_keycmp(x->key, x->klen & ~BR_HINT_TOMBSTONE, y->key, y->klen & ~BR_HINT_TOMBSTONE);
    return c ? c : (x->offset > y->offset) - (x->offset < y->offset);
}

#define HREC_KEY(x)  ((x).key)
#define HREC_KLEN(x) ((x).klen & ~BR_HINT_TOMBSTONE)
/* sort_hrecs: by key, then offset (keysort.h); a million-record file sorts
 * in tens of milliseconds where qsort took ~0.5 s, which close waits for. */
BR_KEYSORT_DEFINE(sort_hrecs, hrec, HREC_KEY, HREC_KLEN, hrec_cmp)

int br_hint_write(int dirfd, const br_datafile *f) {
    /* The hint names the data file's size on disk, which open compares: a
     * file a crash left untruncated keeps zeros after its data. */
    char dname[48];
    br_df_name(dname, sizeof dname, f->id);
    struct stat dst;
    if (fstatat(dirfd, dname, &dst, 0) != 0)
        return -errno;
    /* Every record (checked), then sorted by key. */
    hrec *v = NULL;
    size_t n = 0, cap = 0, bytes = BR_HINT_HEADER_SIZE;
    int rc = 0;
    for (uint64_t off = BR_FILE_HEADER_SIZE; off < f->size;) {
        br_rec_hdr h;
        if (br_rec_decode(f->map + off, f->size - off, &h) != 0) {
            free(v);
            return BR_ECORRUPT;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            hrec *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                return BR_ENOMEM;
            }
            v = nv;
        }
        v[n++] = (hrec){0,
                        f->map + off + BR_REC_HEADER_SIZE,
                        h.klen | ((h.flags & BR_REC_TOMBSTONE) ? BR_HINT_TOMBSTONE : 0),
                        h.vlen,
                        (uint32_t)off,
                        h.seq};
        bytes += BR_HINT_ENTRY_SIZE + h.klen;
        off += br_rec_size(h.klen, h.vlen);
    }
    if ((rc = sort_hrecs(&v, n)) != 0) {
        free(v);
        return rc;
    }
    obuf b = {0};
    if ((rc = obuf_reserve(&b, bytes)) != 0) {
        free(v);
        return rc;
    }
    b.len = BR_HINT_HEADER_SIZE;
    uint64_t max_seq = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].seq > max_seq)
            max_seq = v[i].seq;
        uint8_t *e = b.p + b.len;
        uint32_t klen = v[i].klen & ~BR_HINT_TOMBSTONE;
        br_put32(e, v[i].klen);
        br_put32(e + 4, v[i].vlen);
        br_put32(e + 8, v[i].offset);
        br_put64(e + 12, v[i].seq);
        memcpy(e + BR_HINT_ENTRY_SIZE, v[i].key, klen);
        b.len += BR_HINT_ENTRY_SIZE + klen;
    }
    free(v);
    uint8_t *hd = b.p;
    memset(hd, 0, BR_HINT_HEADER_SIZE);
    memcpy(hd, BR_HINT_MAGIC, 8);
    br_put32(hd + 8, BR_HINT_VERSION);
    br_put32(hd + 12, f->id);
    br_put64(hd + 16, (uint64_t)dst.st_size);
    br_put64(hd + 24, (uint64_t)n);
    br_put64(hd + 32, max_seq);
    br_put32(hd + 40,
             (uint32_t)XXH3_64bits(b.p + BR_HINT_HEADER_SIZE, b.len - BR_HINT_HEADER_SIZE));
    br_put32(hd + 44, (uint32_t)XXH3_64bits(hd, 44));

    char name[48], tmp[64];
    br_hint_name(name, sizeof name, f->id);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = br_write_all(fd, b.p, b.len)) == 0 && fdatasync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && (renameat(dirfd, tmp, dirfd, name) != 0 || fsync(dirfd) != 0))
        rc = -errno;
    if (rc)
        unlinkat(dirfd, tmp, 0);
out:
    free(b.p);
    return rc;
}

/* Checks every entry lies inside the data file's records, the entries are
 * in order, and they fill the hint exactly. */
static int check_entries(br_hint *h, uint64_t rec_end) {
    size_t pos = BR_HINT_HEADER_SIZE;
    const uint8_t *pk = NULL;
    uint32_t pklen = 0, poff = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        if (h->len - pos < BR_HINT_ENTRY_SIZE)
            return BR_ECORRUPT;
        const uint8_t *e = h->map + pos;
        uint32_t klen = br_get32(e) & ~BR_HINT_TOMBSTONE, vlen = br_get32(e + 4);
        uint32_t off = br_get32(e + 8);
        if (klen == 0 || h->len - pos - BR_HINT_ENTRY_SIZE < klen || off < BR_FILE_HEADER_SIZE ||
            off + br_rec_size(klen, vlen) > rec_end)
            return BR_ECORRUPT;
        const uint8_t *k = e + BR_HINT_ENTRY_SIZE;
        if (pk) {
            int c = br_hint_keycmp(pk, pklen, k, klen);
            if (c > 0 || (c == 0 && poff >= off))
                return BR_ECORRUPT; /* out of order */
        }
        pk = k;
        pklen = klen;
        poff = off;
        pos += BR_HINT_ENTRY_SIZE + klen;
    }
    h->last_key = pk;
    h->last_klen = pklen;
    return pos == h->len ? 0 : BR_ECORRUPT;
}

int br_hint_open(int dirfd, uint32_t id, uint64_t data_size, uint64_t rec_end, br_hint *h) {
    memset(h, 0, sizeof *h);
    char name[48];
    br_hint_name(name, sizeof name, id);
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if ((uint64_t)st.st_size < BR_HINT_HEADER_SIZE) {
        close(fd);
        return BR_ECORRUPT;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -errno;
    madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
    h->map = m;
    h->len = (size_t)st.st_size;
    const uint8_t *hd = h->map;
    if (memcmp(hd, BR_HINT_MAGIC, 8) != 0 || br_get32(hd + 44) != (uint32_t)XXH3_64bits(hd, 44) ||
        br_get32(hd + 8) != BR_HINT_VERSION || br_get32(hd + 12) != id ||
        br_get64(hd + 16) != data_size ||
        br_get32(hd + 40) !=
            (uint32_t)XXH3_64bits(hd + BR_HINT_HEADER_SIZE, h->len - BR_HINT_HEADER_SIZE)) {
        rc = BR_ECORRUPT;
    } else {
        h->n = br_get64(hd + 24);
        h->max_seq = br_get64(hd + 32);
        rc = check_entries(h, rec_end);
    }
    if (rc)
        br_hint_close(h);
    return rc;
}

void br_hint_close(br_hint *h) {
    if (h->map)
        munmap((void *)h->map, h->len);
    memset(h, 0, sizeof *h);
}

int br_hint_next(const br_hint *h, size_t *pos, br_hint_entry *e) {
    if (*pos >= h->len)
        return 0;
    const uint8_t *p = h->map + *pos;
    uint32_t k = br_get32(p);
    e->klen = k & ~BR_HINT_TOMBSTONE;
    e->tombstone = (k & BR_HINT_TOMBSTONE) != 0;
    e->vlen = br_get32(p + 4);
    e->offset = br_get32(p + 8);
    e->seq = br_get64(p + 12);
    e->key = p + BR_HINT_ENTRY_SIZE;
    *pos += BR_HINT_ENTRY_SIZE + e->klen;
    return 1;
}
