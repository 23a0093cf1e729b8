/* testutil.c - helpers shared by the unit tests. */
#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

void tu_rmrf(const char *path) {
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_tmpdir(const char *name) {
    const char *base = getenv("BR_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    size_t n = strlen(base) + strlen(name) + 64;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s.%d.XXXXXX", base, name, (int)getpid());
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

int tu_long(void) {
    const char *v = getenv("BR_TEST_LONG");
    return v && *v && strcmp(v, "0") != 0;
}

char *tu_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}
