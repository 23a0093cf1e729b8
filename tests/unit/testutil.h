/* testutil.h - helpers shared by the unit tests. */
#ifndef BR_TESTUTIL_H
#define BR_TESTUTIL_H

#include <stddef.h>

/*
 * Creates a fresh, empty directory for one test and returns its path in a
 * malloc'd string the caller frees. Directories go under $BR_TEST_TMP, or
 * /tmp when it is unset.
 */
char *tu_tmpdir(const char *name);

/* Removes a directory tree (best effort). */
void tu_rmrf(const char *path);

/* Nonzero when the long variants of tests were asked for (BR_TEST_LONG=1). */
int tu_long(void);

/* Path of file `name` inside dir, in a malloc'd string the caller frees. */
char *tu_path(const char *dir, const char *name);

#endif
