/* test_readonly.c - read-only opens (offline tools) and verification. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/engine.h"
#include "engine/hint.h"
#include "engine/record.h"
#include "testutil.h"

static br_engine_options opts(int read_only, int verify) {
    br_engine_options o;
    br_engine_options_init(&o);
    o.max_file_size = 4096;
    o.compact_dead_pct = 0; /* the tests look at particular files */
    o.sync = BR_SYNC_NEVER;
    o.read_only = read_only;
    o.verify = verify;
    o.repair = verify; /* a checker goes on past damage to report all of it */
    return o;
}

static br_engine *open_ok(const char *dir, br_engine_options o) {
    br_engine *e;
    char err[256] = "";
    int rc = br_engine_open(dir, &o, &e, err, sizeof err);
    cr_assert_eq(rc, 0, "open: %s (%s)", br_strerror(rc), err);
    return e;
}

static void fill(const char *dir) {
    br_engine *e = open_ok(dir, opts(0, 0));
    char k[32];
    for (int i = 0; i < 600; i++) {
        snprintf(k, sizeof k, "key%04d", i % 250);
        cr_assert_eq(br_engine_put(e, k, strlen(k), k, strlen(k)), 0);
    }
    cr_assert_eq(br_engine_close(e), 0);
}

/* A checksum of every file's bytes and size in the directory. */
static uint64_t dir_fingerprint(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t h = 1469598103934665603ULL;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p = tu_path(dir, de->d_name);
        int fd = open(p, O_RDONLY);
        struct stat st;
        fstat(fd, &st);
        uint8_t buf[4096];
        ssize_t n;
        h = (h ^ (uint64_t)st.st_size) * 1099511628211ULL;
        for (const char *c = de->d_name; *c; c++)
            h = (h ^ (uint8_t)*c) * 1099511628211ULL;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            for (ssize_t i = 0; i < n; i++)
                h = (h ^ buf[i]) * 1099511628211ULL;
        close(fd);
        free(p);
    }
    closedir(d);
    return h;
}

Test(readonly, reads_work_writes_refused_nothing_changes) {
    char *dir = tu_tmpdir("ro");
    fill(dir);
    uint64_t before = dir_fingerprint(dir);
    br_engine *a = open_ok(dir, opts(1, 0));
    br_engine *b = open_ok(dir, opts(1, 0)); /* readers share the store */
    char v[32];
    size_t vl;
    cr_assert_eq(br_engine_get_into(a, "key0007", 7, v, sizeof v, &vl), 0);
    cr_assert_eq(vl, 7);
    cr_assert_eq(br_engine_put(a, "x", 1, "y", 1), BR_EREADONLY);
    cr_assert_eq(br_engine_delete(b, "key0007", 7), BR_EREADONLY);
    br_engine *w;
    br_engine_options wo = opts(0, 0);
    cr_assert_eq(br_engine_open(dir, &wo, &w, NULL, 0), BR_ELOCKED, "no writer beside readers");
    cr_assert_eq(br_engine_close(a), 0);
    cr_assert_eq(br_engine_close(b), 0);
    cr_assert_eq(dir_fingerprint(dir), before, "a read-only open changed the directory");
    /* And no reader beside a writer. */
    w = open_ok(dir, wo);
    br_engine_options ro = opts(1, 0);
    cr_assert_eq(br_engine_open(dir, &ro, &a, NULL, 0), BR_ELOCKED);
    br_engine_close(w);
    tu_rmrf(dir);
    free(dir);
}

Test(readonly, missing_directory_is_not_created) {
    char *dir = tu_tmpdir("ro");
    char *sub = tu_path(dir, "none");
    br_engine_options o = opts(1, 0);
    br_engine *e;
    cr_assert_lt(br_engine_open(sub, &o, &e, NULL, 0), 0);
    cr_assert_eq(access(sub, F_OK), -1, "a read-only open created the directory");
    free(sub);
    tu_rmrf(dir);
    free(dir);
}

Test(readonly, torn_tail_is_reported_not_cut) {
    char *dir = tu_tmpdir("ro");
    fill(dir);
    /* Tear the last record of the newest file: cut into it. */
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned newest = 0;
    while ((de = readdir(d)) != NULL) {
        unsigned id;
        if (sscanf(de->d_name, "%10u.data", &id) == 1 && strstr(de->d_name, ".data") &&
            !strstr(de->d_name, ".tmp") && id > newest)
            newest = id;
    }
    closedir(d);
    char name[32];
    snprintf(name, sizeof name, "%010u.data", newest);
    char *p = tu_path(dir, name);
    struct stat st;
    stat(p, &st);
    /* The newest file is preallocated: find the end of its data. */
    int fd = open(p, O_RDONLY);
    uint8_t *img = malloc((size_t)st.st_size);
    cr_assert_eq(read(fd, img, (size_t)st.st_size), st.st_size);
    close(fd);
    size_t off = BR_FILE_HEADER_SIZE, last = off;
    br_rec_hdr h;
    while (br_rec_decode(img + off, (size_t)st.st_size - off, &h) == 0) {
        last = off;
        off += br_rec_size(h.klen, h.vlen);
    }
    free(img);
    cr_assert_eq(truncate(p, (off_t)(last + BR_REC_HEADER_SIZE + 1)), 0);
    uint64_t before = dir_fingerprint(dir);
    br_engine *e = open_ok(dir, opts(1, 1));
    br_engine_stats s;
    br_engine_stats_get(e, &s);
    cr_assert_geq(s.problems, 1, "the torn record is counted");
    br_engine_close(e);
    cr_assert_eq(dir_fingerprint(dir), before, "read-only must not cut the tail");
    free(p);
    tu_rmrf(dir);
    free(dir);
}

Test(readonly, verify_finds_nothing_in_a_clean_store) {
    char *dir = tu_tmpdir("ro");
    fill(dir);
    br_engine *e = open_ok(dir, opts(1, 1));
    br_engine_stats s;
    br_engine_stats_get(e, &s);
    cr_assert_eq(s.problems, 0);
    cr_assert_eq(s.keys, 250);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}

Test(readonly, verify_catches_a_hint_that_disagrees_with_its_data) {
    char *dir = tu_tmpdir("ro");
    fill(dir);
    /* Rewrite hint 1 with a wrong key byte in its first entry and valid
     * checksums: only a comparison with the data file can tell. */
    char *p = tu_path(dir, "0000000001.hint");
    int fd = open(p, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t *img = malloc((size_t)st.st_size);
    cr_assert_eq(read(fd, img, (size_t)st.st_size), st.st_size);
    uint8_t *e0 = img + BR_HINT_HEADER_SIZE;
    uint32_t klen = br_get32(e0) & ~BR_HINT_TOMBSTONE;
    e0[BR_HINT_ENTRY_SIZE + klen - 1] ^= 1;
    br_put32(img + 40,
             br_checksum(img + BR_HINT_HEADER_SIZE, (size_t)st.st_size - BR_HINT_HEADER_SIZE));
    br_put32(img + 44, br_checksum(img, 44));
    cr_assert_eq(pwrite(fd, img, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    free(img);
    br_engine *e = open_ok(dir, opts(1, 1));
    br_engine_stats s;
    br_engine_stats_get(e, &s);
    cr_assert_geq(s.problems, 1, "verify must compare the hint with the data");
    br_engine_close(e);
    free(p);
    tu_rmrf(dir);
    free(dir);
}

Test(readonly, verify_reports_every_damaged_record_and_goes_on) {
    char *dir = tu_tmpdir("ro");
    fill(dir);
    /* Flip a value byte in two closed files. */
    for (unsigned id = 1; id <= 2; id++) {
        char name[32];
        snprintf(name, sizeof name, "%010u.data", id);
        char *p = tu_path(dir, name);
        int fd = open(p, O_RDWR);
        uint8_t b;
        off_t at = BR_FILE_HEADER_SIZE + BR_REC_HEADER_SIZE + 7 + 2; /* first record's value */
        cr_assert_eq(pread(fd, &b, 1, at), 1);
        b ^= 0x20;
        cr_assert_eq(pwrite(fd, &b, 1, at), 1);
        close(fd);
        free(p);
    }
    br_engine *e = open_ok(dir, opts(1, 1));
    br_engine_stats s;
    br_engine_stats_get(e, &s);
    cr_assert_geq(s.problems, 2, "both damaged records are reported (%llu)",
                  (unsigned long long)s.problems);
    br_engine_close(e);
    tu_rmrf(dir);
    free(dir);
}
