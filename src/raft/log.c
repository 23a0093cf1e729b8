/*
 * log.c - the raft log: an unstable tail in memory over a stable part read
 * through the driver's storage.
 *
 * From Figure 3.1 (Log Matching): "If two logs contain an entry with the
 * same index and term, then the logs are identical in all entries up
 * through the given index." Every rule here that compares terms at an
 * index relies on it.
 */
#include "raft_int.h"

#include "bitraft/error.h"

#include <stdlib.h>
#include <string.h>

/* Most entries copied into one slice; keeps one APPEND bounded in count. */
#define RF_SLICE_MAX 16384

int rf_log_init(struct rf_log *l, const struct br_raft_storage *st) {
    memset(l, 0, sizeof(*l));
    l->st = st;
    uint64_t fi = 0, li = 0;
    int rc = st->first_index(st->ctx, &fi);
    if (rc == 0)
        rc = st->last_index(st->ctx, &li);
    if (rc < 0)
        return rc;
    if (fi == 0 || li + 1 < fi)
        return BR_ECORRUPT;
    l->offset = li + 1;
    l->committed = fi - 1;
    l->applied = fi - 1;
    return 0;
}

static void free_range(struct br_raft_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(e[i].data);
}

void rf_log_free(struct rf_log *l) {
    free_range(l->u, l->n);
    free(l->u);
    l->u = NULL;
    l->n = l->cap = 0;
}

static uint64_t stable_first(const struct rf_log *l) {
    uint64_t fi = 0;
    if (l->st->first_index(l->st->ctx, &fi) < 0)
        return 0;
    return fi;
}

static uint64_t stable_last(const struct rf_log *l) {
    uint64_t li = 0;
    if (l->st->last_index(l->st->ctx, &li) < 0)
        return 0;
    return li;
}

uint64_t rf_log_first_index(const struct rf_log *l) {
    if (l->has_snap)
        return l->snap.index + 1;
    return stable_first(l);
}

uint64_t rf_log_last_index(const struct rf_log *l) {
    if (l->n > 0)
        return l->offset + l->n - 1;
    if (l->has_snap)
        return l->snap.index;
    return stable_last(l);
}

int rf_log_term(const struct rf_log *l, uint64_t i, uint64_t *t) {
    if (l->n > 0 && i >= l->offset && i < l->offset + l->n) {
        *t = l->u[i - l->offset].term;
        return 0;
    }
    if (l->has_snap) {
        if (i == l->snap.index) {
            *t = l->snap.term;
            return 0;
        }
        return 1;
    }
    if (i >= l->offset)
        return 1; /* past the end */
    uint64_t fi = stable_first(l);
    if (fi == 0 || i + 1 < fi)
        return 1; /* compacted */
    if (i > stable_last(l))
        return 1;
    int rc = l->st->term(l->st->ctx, i, t);
    return rc < 0 ? rc : 0;
}

uint64_t rf_log_term_or0(const struct rf_log *l, uint64_t i) {
    uint64_t t = 0;
    if (rf_log_term(l, i, &t) != 0)
        return 0;
    return t;
}

uint64_t rf_log_last_term(const struct rf_log *l) {
    return rf_log_term_or0(l, rf_log_last_index(l));
}

bool rf_log_match_term(const struct rf_log *l, uint64_t i, uint64_t t) {
    uint64_t have = 0;
    if (rf_log_term(l, i, &have) != 0)
        return false;
    return have == t;
}

/*
 * From §5.4.1: "Raft determines which of two logs is more up-to-date by
 * comparing the index and term of the last entries in the logs. If the logs
 * have last entries with different terms, then the log with the later term
 * is more up-to-date. If the logs end with the same term, then whichever
 * log is longer is more up-to-date."
 */
bool rf_log_up_to_date(const struct rf_log *l, uint64_t last, uint64_t term) {
    uint64_t lt = rf_log_last_term(l);
    return term > lt || (term == lt && last >= rf_log_last_index(l));
}

static int reserve(struct rf_log *l, size_t extra) {
    if (l->n + extra <= l->cap)
        return 0;
    size_t cap = l->cap ? l->cap : 64;
    while (cap < l->n + extra)
        cap *= 2;
    struct br_raft_entry *u = realloc(l->u, cap * sizeof(*u));
    if (!u)
        return BR_ENOMEM;
    l->u = u;
    l->cap = cap;
    return 0;
}

/* Drops unstable entries at index >= from, or makes the unstable part
 * start at `from` if it lies below it. */
static void truncate_from(struct rf_log *l, uint64_t from) {
    if (from >= l->offset + l->n)
        return;
    if (from <= l->offset) {
        free_range(l->u, l->n);
        l->n = 0;
        l->offset = from;
        return;
    }
    size_t keep = (size_t)(from - l->offset);
    free_range(l->u + keep, l->n - keep);
    l->n = keep;
}

int rf_log_append(struct rf_log *l, const struct br_raft_entry *ents, size_t n) {
    if (n == 0)
        return 0;
    /* Copy first so that ENOMEM leaves the log unchanged. */
    uint8_t **copies = calloc(n, sizeof(*copies));
    if (!copies)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].len == 0)
            continue;
        copies[i] = malloc(ents[i].len);
        if (!copies[i])
            goto nomem;
        memcpy(copies[i], ents[i].data, ents[i].len);
    }
    uint64_t from = ents[0].index;
    size_t keep = from > l->offset ? (size_t)(from - l->offset) : 0;
    if (keep > l->n)
        keep = l->n;
    if (keep + n > l->cap) {
        size_t cap = l->cap ? l->cap : 64;
        while (cap < keep + n)
            cap *= 2;
        struct br_raft_entry *u = realloc(l->u, cap * sizeof(*u));
        if (!u)
            goto nomem;
        l->u = u;
        l->cap = cap;
    }
    truncate_from(l, from);
    for (size_t i = 0; i < n; i++) {
        l->u[l->n] = ents[i];
        l->u[l->n].data = copies[i];
        l->n++;
    }
    free(copies);
    return 0;
nomem:
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    free(copies);
    return BR_ENOMEM;
}

int rf_log_append_owned(struct rf_log *l, uint64_t term, uint32_t type, uint8_t *data, uint32_t len,
                        uint64_t *index) {
    int rc = reserve(l, 1);
    if (rc < 0)
        return rc;
    uint64_t idx = rf_log_last_index(l) + 1;
    if (l->n == 0)
        l->offset = idx;
    l->u[l->n++] =
        (struct br_raft_entry){.term = term, .index = idx, .type = type, .len = len, .data = data};
    if (index)
        *index = idx;
    return 0;
}

/*
 * From Figure 3.1, AppendEntries receiver: "2. Reply false if log doesn't
 * contain an entry at prevLogIndex whose term matches prevLogTerm. 3. If an
 * existing entry conflicts with a new one (same index but different
 * terms), delete the existing entry and all that follow it. 4. Append any
 * new entries not already in the log. 5. If leaderCommit > commitIndex, set
 * commitIndex = min(leaderCommit, index of last new entry)."
 */
int rf_log_maybe_append(struct rf_log *l, uint64_t prev_i, uint64_t prev_t, uint64_t commit,
                        const struct br_raft_entry *ents, size_t n, uint64_t *lastnew) {
    if (!rf_log_match_term(l, prev_i, prev_t))
        return 0;
    uint64_t last_new = prev_i + n;
    size_t first_new = n;
    for (size_t i = 0; i < n; i++) {
        if (!rf_log_match_term(l, ents[i].index, ents[i].term)) {
            first_new = i;
            break;
        }
    }
    if (first_new < n) {
        if (ents[first_new].index <= l->committed)
            return BR_EPROTOCOL; /* would rewrite a committed entry */
        int rc = rf_log_append(l, ents + first_new, n - first_new);
        if (rc < 0)
            return rc;
    }
    uint64_t c = commit < last_new ? commit : last_new;
    rf_log_commit_to(l, c);
    *lastnew = last_new;
    return 1;
}

uint64_t rf_log_find_conflict_by_term(const struct rf_log *l, uint64_t i, uint64_t t,
                                      uint64_t *term_out) {
    for (; i > 0; i--) {
        uint64_t have = 0;
        if (rf_log_term(l, i, &have) != 0) {
            *term_out = 0;
            return i;
        }
        if (have <= t) {
            *term_out = have;
            return i;
        }
    }
    *term_out = 0;
    return 0;
}

int rf_log_slice(const struct rf_log *l, struct rf_arena *a, uint64_t lo, uint64_t hi,
                 uint64_t max_bytes, struct br_raft_entry **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (lo >= hi)
        return 0;
    if (lo < rf_log_first_index(l))
        return 1;
    uint64_t last = rf_log_last_index(l);
    if (hi > last + 1)
        hi = last + 1;
    if (lo >= hi)
        return 0;
    if (hi - lo > RF_SLICE_MAX)
        hi = lo + RF_SLICE_MAX;
    struct br_raft_entry *e = rf_arena_alloc(a, (size_t)(hi - lo) * sizeof(*e));
    if (!e)
        return BR_ENOMEM;
    size_t cnt = 0;
    uint64_t bytes = 0;
    uint64_t i = lo;
    if (!l->has_snap && i < l->offset) {
        uint64_t shi = hi < l->offset ? hi : l->offset;
        size_t got = 0;
        int rc = l->st->entries(l->st->ctx, i, shi, max_bytes, e, &got);
        if (rc < 0)
            return rc;
        if (got == 0 || got > shi - i)
            return BR_ECORRUPT;
        for (size_t k = 0; k < got; k++) {
            if (e[k].index != i + k)
                return BR_ECORRUPT;
            bytes += e[k].len;
        }
        cnt = got;
        i += got;
        if (i < shi || bytes >= max_bytes)
            goto copy;
    }
    for (; i < hi; i++) {
        if (cnt > 0 && bytes + l->u[i - l->offset].len > max_bytes)
            break;
        e[cnt] = l->u[i - l->offset];
        bytes += e[cnt].len;
        cnt++;
    }
copy:
    for (size_t k = 0; k < cnt; k++) {
        if (e[k].len == 0) {
            e[k].data = NULL;
            continue;
        }
        uint8_t *d = rf_arena_alloc(a, e[k].len);
        if (!d)
            return BR_ENOMEM;
        memcpy(d, e[k].data, e[k].len);
        e[k].data = d;
    }
    *out = e;
    *n = cnt;
    return 0;
}

void rf_log_commit_to(struct rf_log *l, uint64_t i) {
    if (i > l->committed)
        l->committed = i;
}

/*
 * From §5.4.2: "Raft never commits log entries from previous terms by
 * counting replicas. Only log entries from the leader's current term are
 * committed by counting replicas."
 */
bool rf_log_maybe_commit(struct rf_log *l, uint64_t i, uint64_t term) {
    if (i > l->committed && rf_log_term_or0(l, i) == term) {
        l->committed = i;
        return true;
    }
    return false;
}

void rf_log_restore(struct rf_log *l, const struct br_raft_snapshot_meta *snap) {
    free_range(l->u, l->n);
    l->n = 0;
    l->has_snap = true;
    l->snap = *snap;
    l->offset = snap->index + 1;
    l->committed = snap->index;
    l->applied = snap->index;
}

void rf_log_stable_all(struct rf_log *l) {
    uint64_t last = rf_log_last_index(l);
    free_range(l->u, l->n);
    l->n = 0;
    l->has_snap = false;
    l->offset = last + 1;
}

int rf_log_snapshot(const struct rf_log *l, struct br_raft_snapshot_meta *meta) {
    if (l->has_snap) {
        *meta = l->snap;
        return 0;
    }
    return l->st->snapshot(l->st->ctx, meta);
}
