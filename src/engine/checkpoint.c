/*
 * checkpoint.c - a store's closed files hard-linked into another directory
 * (contract in engine.h): what a replicated node streams to a follower as
 * a snapshot, and a cheap backup.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/hint.h"
#include "engine/internal.h"

/* Removes what a failed checkpoint left in dirfd, then the directory. */
static void remove_dir(const char *dir, int dirfd) {
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd, de->d_name, 0);
        closedir(d);
    } else if (fd >= 0) {
        close(fd);
    }
    rmdir(dir);
}

int br_engine_checkpoint(br_engine *e, const char *dir, uint64_t *seq) {
    if (e->o.read_only)
        return BR_EREADONLY;
    if (mkdir(dir, 0755) != 0)
        return -errno;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int rc = -errno;
        rmdir(dir);
        return rc;
    }
    /* Close the active file: from here on every write up to seq_out lies
     * in files whose ids are below roll_id, or in merge outputs. */
    br_writer w = {.roll = true};
    int rc = br_engine_submit_writer(e, &w);
    br_datafile **files = NULL;
    size_t n = 0;
    if (rc == 0) {
        pthread_rwlock_rdlock(&e->lock);
        files = malloc((e->nfiles ? e->nfiles : 1) * sizeof *files);
        for (uint32_t i = 0; files && i < e->files_cap; i++) {
            br_datafile *f = e->files[i];
            /* Later closed files hold only later writes: leave them out. */
            if (!f || f == e->active || (!f->merged && f->id >= w.roll_id))
                continue;
            atomic_fetch_add_explicit(&f->refs, 1, memory_order_acquire); /* not deleted */
            files[n++] = f;
        }
        pthread_rwlock_unlock(&e->lock);
        if (!files)
            rc = BR_ENOMEM;
    }
    uint32_t max_id = 0;
    for (size_t i = 0; i < n; i++) {
        br_datafile *f = files[i];
        char name[48];
        if (rc == 0) {
            br_df_name(name, sizeof name, f->id);
            if (linkat(e->dirfd, name, dfd, name, 0) != 0)
                rc = -errno;
            br_hint_name(name, sizeof name, f->id);
            if (rc == 0 && linkat(e->dirfd, name, dfd, name, 0) != 0 && errno != ENOENT)
                rc = -errno; /* no hint yet: the checkpoint's open scans the file */
            if (f->id > max_id)
                max_id = f->id;
        }
        atomic_fetch_sub_explicit(&f->refs, 1, memory_order_release);
    }
    free(files);
    /* Its own active file and LOCK, so that opening dir writes nothing
     * into an inode it shares with this store. */
    if (rc == 0) {
        br_datafile *f;
        uint32_t id = max_id >= w.roll_id ? max_id + 1 : w.roll_id;
        if ((rc = br_df_create(dfd, id, 4096, &f)) == 0)
            br_df_free(f);
    }
    if (rc == 0) {
        int lfd = openat(dfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lfd < 0)
            rc = -errno;
        else
            close(lfd);
    }
    if (rc == 0 && fsync(dfd) != 0)
        rc = -errno;
    if (rc) {
        remove_dir(dir, dfd);
        close(dfd);
        return rc;
    }
    close(dfd);
    *seq = w.seq_out;
    return 0;
}
