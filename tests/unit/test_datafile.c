/* test_datafile.c - creating, mapping, sealing and zeroing data files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitraft/error.h"
#include "engine/datafile.h"
#include "engine/record.h"
#include "testutil.h"

static off_t file_size(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    struct stat st;
    off_t sz = stat(p, &st) == 0 ? st.st_size : -1;
    free(p);
    return sz;
}

Test(datafile, create_preallocates_writes_header_and_leaves_no_tmp) {
    char *dir = tu_tmpdir("datafile");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    br_datafile *f;
    cr_assert_eq(br_df_create(dfd, 7, 1 << 20, &f), 0);
    cr_assert_eq(file_size(dir, "0000000007.data"), 1 << 20, "preallocated to the cap");
    cr_assert_eq(file_size(dir, "0000000007.data.tmp"), -1, "the temporary name is gone");
    cr_assert_eq(f->size, BR_FILE_HEADER_SIZE);
    cr_assert_eq(br_file_header_check(f->map, f->map_len, 7, NULL, NULL), 0);
    cr_assert(f->fd >= 0);
    br_df_free(f);
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}

Test(datafile, seal_truncates_to_data_and_keeps_map_readable) {
    char *dir = tu_tmpdir("datafile");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    br_datafile *f;
    cr_assert_eq(br_df_create(dfd, 1, 1 << 20, &f), 0);
    br_rec_encode(f->map + f->size, 1, 0, "key", 3, "value", 5);
    f->size += br_rec_size(3, 5);
    cr_assert_eq(br_df_seal(f), 0);
    cr_assert_eq(f->fd, -1);
    cr_assert_eq(file_size(dir, "0000000001.data"), (off_t)f->size);
    br_rec_hdr h;
    cr_assert_eq(br_rec_decode(f->map + BR_FILE_HEADER_SIZE, br_rec_size(3, 5), &h), 0);
    br_df_free(f);
    /* Reopened read-only, it maps exactly its data. */
    cr_assert_eq(br_df_open(dfd, 1, 0, &f), 0);
    cr_assert_eq(f->map_len, BR_FILE_HEADER_SIZE + br_rec_size(3, 5));
    cr_assert_eq(f->fd, -1, "a closed file keeps no descriptor");
    br_df_free(f);
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}

Test(datafile, open_for_writing_grows_to_the_cap) {
    char *dir = tu_tmpdir("datafile");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    br_datafile *f;
    cr_assert_eq(br_df_create(dfd, 1, 8192, &f), 0);
    f->size = BR_FILE_HEADER_SIZE;
    cr_assert_eq(br_df_seal(f), 0);
    br_df_free(f);
    cr_assert_eq(br_df_open(dfd, 1, 65536, &f), 0);
    cr_assert_eq(f->map_len, 65536);
    cr_assert_eq(file_size(dir, "0000000001.data"), 65536);
    br_df_free(f);
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}

Test(datafile, zero_tail_clears_bytes_past_the_data) {
    char *dir = tu_tmpdir("datafile");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    br_datafile *f;
    cr_assert_eq(br_df_create(dfd, 1, 1 << 16, &f), 0);
    memset(f->map + 100, 0xab, 5000);
    f->size = 200;
    cr_assert_eq(br_df_zero_tail(f), 0);
    for (size_t i = 100; i < 200; i++)
        cr_assert_eq(f->map[i], 0xab, "data before size is kept");
    for (size_t i = 200; i < 5100; i++)
        cr_assert_eq(f->map[i], 0, "byte %zu past size not zeroed", i);
    br_df_free(f);
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}

Test(datafile, missing_and_empty_files_are_errors) {
    char *dir = tu_tmpdir("datafile");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    br_datafile *f;
    cr_assert_eq(br_df_open(dfd, 3, 0, &f), -ENOENT);
    char *p = tu_path(dir, "0000000003.data");
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    close(fd);
    cr_assert_eq(br_df_open(dfd, 3, 0, &f), BR_ECORRUPT, "an empty file has no header");
    free(p);
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}
