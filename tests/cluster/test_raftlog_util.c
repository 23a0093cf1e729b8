/* test_raftlog_util.c - helpers shared by the br_raftlog tests. */
#include "test_raftlog_util.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/error.h"

int rlt_warns;
char rlt_last_warn[512];
char *rlt_dir;

void rlt_dir_make(void) {
    rlt_dir = tu_tmpdir(criterion_current_test->name);
}

void rlt_dir_remove(void) {
    tu_rmrf(rlt_dir);
    free(rlt_dir);
}

void rlt_copy_dir(const char *src, const char *dst) {
    mkdir(dst, 0755);
    DIR *d = opendir(src);
    cr_assert(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *a = tu_path(src, de->d_name), *b = tu_path(dst, de->d_name);
        int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert(in >= 0 && out >= 0);
        char buf[65536];
        ssize_t r;
        while ((r = read(in, buf, sizeof buf)) > 0)
            cr_assert(write(out, buf, (size_t)r) == r);
        close(in);
        close(out);
        free(a);
        free(b);
    }
    closedir(d);
}

static void capture(void *ctx, int level, const char *msg) {
    (void)ctx;
    if (level >= BR_RAFT_LOG_WARN) {
        rlt_warns++;
        snprintf(rlt_last_warn, sizeof rlt_last_warn, "%s", msg);
    }
}

int rlt_open_err(const char *dir, uint64_t segment_size, char *err, size_t errlen) {
    struct br_raftlog_options o;
    br_raftlog_options_init(&o);
    if (segment_size)
        o.segment_size = segment_size;
    o.log_fn = capture;
    br_raftlog *log;
    int rc = br_raftlog_open(dir, &o, &log, err, errlen);
    if (rc == 0)
        br_raftlog_close(log);
    return rc;
}

br_raftlog *rlt_open(const char *dir, uint64_t segment_size) {
    struct br_raftlog_options o;
    br_raftlog_options_init(&o);
    if (segment_size)
        o.segment_size = segment_size;
    o.log_fn = capture;
    br_raftlog *log;
    char err[256];
    int rc = br_raftlog_open(dir, &o, &log, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s: %s", dir, br_strerror(rc), err);
    return log;
}

br_raftlog *rlt_reopen(br_raftlog *log, const char *dir, uint64_t segment_size) {
    cr_assert_eq(br_raftlog_close(log), 0);
    return rlt_open(dir, segment_size);
}

uint32_t rlt_len(uint64_t index) {
    return (uint32_t)((index * 2654435761u) % 300); /* 0 .. 299 */
}

void rlt_data(uint64_t index, uint64_t term, uint8_t *buf, uint32_t len) {
    uint64_t x = index * 0x9E3779B97F4A7C15ull ^ (term + 1) * 0xC2B2AE3D27D4EB4Full;
    for (uint32_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

void rlt_entry(struct br_raft_entry *e, uint64_t index, uint64_t term, uint8_t *buf) {
    uint32_t len = rlt_len(index);
    rlt_data(index, term, buf, len);
    *e = (struct br_raft_entry){.term = term,
                                .index = index,
                                .type = (uint32_t)(index % 2),
                                .len = len,
                                .data = len ? buf : NULL};
}

void rlt_append_range(br_raftlog *log, uint64_t lo, uint64_t hi, uint64_t term) {
    enum { B = 32 };
    static uint8_t bufs[B][300];
    struct br_raft_entry e[B];
    for (uint64_t i = lo; i <= hi;) {
        size_t n = 0;
        for (; n < B && i <= hi; n++, i++)
            rlt_entry(&e[n], i, term, bufs[n]);
        int rc = br_raftlog_append(log, e, n);
        cr_assert_eq(rc, 0, "append at %llu: %s", (unsigned long long)e[0].index, br_strerror(rc));
    }
}

void rlt_check_entry(br_raftlog *log, uint64_t index, uint64_t term) {
    const struct br_raft_storage *st = br_raftlog_storage(log);
    struct br_raft_entry e;
    size_t n = 0;
    int rc = st->entries(st->ctx, index, index + 1, 0, &e, &n);
    cr_assert_eq(rc, 0, "entries(%llu): %s", (unsigned long long)index, br_strerror(rc));
    cr_assert_eq(n, 1);
    cr_assert_eq(e.index, index);
    cr_assert_eq(e.term, term, "entry %llu: term %llu, want %llu", (unsigned long long)index,
                 (unsigned long long)e.term, (unsigned long long)term);
    cr_assert_eq(e.type, index % 2);
    uint8_t want[300];
    uint32_t len = rlt_len(index);
    rlt_data(index, term, want, len);
    cr_assert_eq(e.len, len, "entry %llu: len %u, want %u", (unsigned long long)index, e.len, len);
    cr_assert(len == 0 ? e.data == NULL : memcmp(e.data, want, len) == 0,
              "entry %llu: content differs", (unsigned long long)index);
}

uint64_t rlt_file_size(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    struct stat st;
    cr_assert(stat(p, &st) == 0, "stat %s", p);
    free(p);
    return (uint64_t)st.st_size;
}

void rlt_pwrite(const char *dir, const char *name, const void *buf, size_t len, uint64_t off) {
    char *p = tu_path(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    cr_assert(fd >= 0, "open %s", p);
    cr_assert(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
    close(fd);
    free(p);
}

void rlt_pread(const char *dir, const char *name, void *buf, size_t len, uint64_t off) {
    char *p = tu_path(dir, name);
    int fd = open(p, O_RDONLY);
    cr_assert(fd >= 0, "open %s", p);
    cr_assert(pread(fd, buf, len, (off_t)off) == (ssize_t)len);
    close(fd);
    free(p);
}

void rlt_zero(const char *dir, const char *name, uint64_t off, uint64_t len) {
    uint8_t *z = calloc(1, len ? len : 1);
    rlt_pwrite(dir, name, z, len, off);
    free(z);
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t rlt_segments(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    cr_assert(d);
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(*v));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 4, ".seg") != 0)
            continue;
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof(*v));
        v[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(v, n, sizeof(*v), name_cmp);
    *out = v;
    return n;
}

void rlt_free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
