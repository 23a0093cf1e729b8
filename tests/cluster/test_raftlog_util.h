/* test_raftlog_util.h - helpers shared by the br_raftlog tests. */
#ifndef BR_TEST_RAFTLOG_UTIL_H
#define BR_TEST_RAFTLOG_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "raftlog.h"
#include "testutil.h"

/* Each test's directory, fresh and removed after the test: a suite gets it
 * with TestSuite(name, .init = rlt_dir_make, .fini = rlt_dir_remove). */
extern char *rlt_dir;
void rlt_dir_make(void);
void rlt_dir_remove(void);

/* Copies the regular files of directory src into dst (created). */
void rlt_copy_dir(const char *src, const char *dst);

/* Opens dir with the given segment size (0: default), asserting success;
 * WARN lines are counted in rlt_warns and the last kept in rlt_last_warn. */
br_raftlog *rlt_open(const char *dir, uint64_t segment_size);
/* Closes log (asserting success) and opens dir again with rlt_open. */
br_raftlog *rlt_reopen(br_raftlog *log, const char *dir, uint64_t segment_size);
/* Opens and returns the error code (log closed if it opened); err filled. */
int rlt_open_err(const char *dir, uint64_t segment_size, char *err, size_t errlen);
extern int rlt_warns;
extern char rlt_last_warn[512];

/* Deterministic content of entry (index, term): its length and bytes. */
uint32_t rlt_len(uint64_t index);
void rlt_data(uint64_t index, uint64_t term, uint8_t *buf, uint32_t len);
/* Fills e (data in buf, at least rlt_len(index) bytes). */
void rlt_entry(struct br_raft_entry *e, uint64_t index, uint64_t term, uint8_t *buf);
/* Appends entries [lo, hi] all with `term` (asserting success). */
void rlt_append_range(br_raftlog *log, uint64_t lo, uint64_t hi, uint64_t term);
/* Asserts that entry index has `term` and deterministic content. */
void rlt_check_entry(br_raftlog *log, uint64_t index, uint64_t term);

/* File helpers on "dir/name". */
uint64_t rlt_file_size(const char *dir, const char *name);
void rlt_pwrite(const char *dir, const char *name, const void *p, size_t len, uint64_t off);
void rlt_pread(const char *dir, const char *name, void *p, size_t len, uint64_t off);
/* Zeroes [off, off+len) of the file. */
void rlt_zero(const char *dir, const char *name, uint64_t off, uint64_t len);
/* Sorted segment file names of dir: returns how many, names in out[k]
 * (malloc'd; free with rlt_free_names). */
size_t rlt_segments(const char *dir, char ***out);
void rlt_free_names(char **names, size_t n);

#endif
