/*
 * memstorage.c - br_raft_memstorage, an in-memory br_raft_storage.
 *
 * ents[0] is a dummy entry holding the index and term of the compaction
 * point (the last index the log no longer holds); ents[1..n) are the log.
 * Every entry owns a malloc'd copy of its data.
 */
#include "bitraft/raft.h"

#include "bitraft/error.h"

#include <stdlib.h>
#include <string.h>

struct br_raft_memstorage {
    struct br_raft_storage st;
    struct br_raft_hard_state hs;
    struct br_raft_conf_state conf;
    struct br_raft_snapshot_meta snap;
    struct br_raft_entry *ents;
    size_t n, cap;
};

static uint64_t ms_first(const br_raft_memstorage *ms) {
    return ms->ents[0].index + 1;
}

static uint64_t ms_last(const br_raft_memstorage *ms) {
    return ms->ents[0].index + ms->n - 1;
}

static int cb_initial_state(void *ctx, struct br_raft_hard_state *hs,
                            struct br_raft_conf_state *conf) {
    br_raft_memstorage *ms = ctx;
    *hs = ms->hs;
    *conf = ms->conf;
    return 0;
}

static int cb_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                      struct br_raft_entry *out, size_t *n) {
    br_raft_memstorage *ms = ctx;
    *n = 0;
    if (lo < ms_first(ms) || hi > ms_last(ms) + 1 || lo >= hi)
        return BR_EINVAL;
    uint64_t bytes = 0;
    size_t base = (size_t)(lo - ms->ents[0].index);
    size_t k = 0;
    for (uint64_t i = lo; i < hi; i++, k++) {
        const struct br_raft_entry *e = &ms->ents[base + k];
        if (k > 0 && bytes + e->len > max_bytes)
            break;
        bytes += e->len;
        out[k] = *e;
    }
    *n = k;
    return 0;
}

static int cb_term(void *ctx, uint64_t index, uint64_t *term) {
    br_raft_memstorage *ms = ctx;
    if (index < ms->ents[0].index || index > ms_last(ms))
        return BR_EINVAL;
    *term = ms->ents[index - ms->ents[0].index].term;
    return 0;
}

static int cb_first_index(void *ctx, uint64_t *index) {
    *index = ms_first(ctx);
    return 0;
}

static int cb_last_index(void *ctx, uint64_t *index) {
    *index = ms_last(ctx);
    return 0;
}

static int cb_snapshot(void *ctx, struct br_raft_snapshot_meta *meta) {
    br_raft_memstorage *ms = ctx;
    *meta = ms->snap;
    return 0;
}

int br_raft_memstorage_new(br_raft_memstorage **out) {
    br_raft_memstorage *ms = calloc(1, sizeof(*ms));
    if (!ms)
        return BR_ENOMEM;
    ms->cap = 64;
    ms->ents = calloc(ms->cap, sizeof(*ms->ents));
    if (!ms->ents) {
        free(ms);
        return BR_ENOMEM;
    }
    ms->n = 1; /* the dummy at index 0, term 0 */
    ms->st = (struct br_raft_storage){.ctx = ms,
                                      .initial_state = cb_initial_state,
                                      .entries = cb_entries,
                                      .term = cb_term,
                                      .first_index = cb_first_index,
                                      .last_index = cb_last_index,
                                      .snapshot = cb_snapshot};
    *out = ms;
    return 0;
}

static void free_from(br_raft_memstorage *ms, size_t k) {
    for (size_t i = k; i < ms->n; i++)
        free(ms->ents[i].data);
    if (k < ms->n)
        ms->n = k;
}

void br_raft_memstorage_free(br_raft_memstorage *ms) {
    if (!ms)
        return;
    free_from(ms, 1);
    free(ms->ents);
    free(ms);
}

const struct br_raft_storage *br_raft_memstorage_storage(br_raft_memstorage *ms) {
    return &ms->st;
}

static void reset_to(br_raft_memstorage *ms, uint64_t index, uint64_t term) {
    free_from(ms, 1);
    ms->ents[0] = (struct br_raft_entry){.index = index, .term = term};
    ms->n = 1;
}

int br_raft_memstorage_bootstrap(br_raft_memstorage *ms, const struct br_raft_conf_state *conf) {
    if (conf->n_voters == 0 || conf->n_voters + conf->n_learners > BR_RAFT_MAX_MEMBERS)
        return BR_EINVAL;
    reset_to(ms, 1, 1);
    ms->snap = (struct br_raft_snapshot_meta){.index = 1, .term = 1, .conf = *conf};
    ms->conf = *conf;
    ms->hs = (struct br_raft_hard_state){.term = 1, .vote = 0, .commit = 1};
    return 0;
}

void br_raft_memstorage_set_hard_state(br_raft_memstorage *ms,
                                       const struct br_raft_hard_state *hs) {
    ms->hs = *hs;
}

void br_raft_memstorage_set_conf(br_raft_memstorage *ms, const struct br_raft_conf_state *conf) {
    ms->conf = *conf;
}

int br_raft_memstorage_append(br_raft_memstorage *ms, const struct br_raft_entry *ents, size_t n) {
    /* Skip what compaction already covers. */
    while (n > 0 && ents[0].index <= ms->ents[0].index) {
        ents++;
        n--;
    }
    if (n == 0)
        return 0;
    for (size_t i = 1; i < n; i++)
        if (ents[i].index != ents[0].index + i)
            return BR_EINVAL;
    if (ents[0].index > ms_last(ms) + 1)
        return BR_EINVAL;
    size_t at = (size_t)(ents[0].index - ms->ents[0].index);
    if (at + n > ms->cap) {
        size_t cap = ms->cap;
        while (cap < at + n)
            cap *= 2;
        struct br_raft_entry *e = realloc(ms->ents, cap * sizeof(*e));
        if (!e)
            return BR_ENOMEM;
        ms->ents = e;
        ms->cap = cap;
    }
    /* Copy the data before touching the log so ENOMEM changes nothing. */
    uint8_t *stack[64];
    uint8_t **copies = n <= 64 ? stack : calloc(n, sizeof(*copies));
    if (!copies)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        copies[i] = NULL;
        if (ents[i].len == 0)
            continue;
        copies[i] = malloc(ents[i].len);
        if (!copies[i]) {
            for (size_t k = 0; k < i; k++)
                free(copies[k]);
            if (copies != stack)
                free(copies);
            return BR_ENOMEM;
        }
        memcpy(copies[i], ents[i].data, ents[i].len);
    }
    free_from(ms, at);
    for (size_t i = 0; i < n; i++) {
        ms->ents[at + i] = ents[i];
        ms->ents[at + i].data = copies[i];
    }
    ms->n = at + n;
    if (copies != stack)
        free(copies);
    return 0;
}

int br_raft_memstorage_apply_snapshot(br_raft_memstorage *ms,
                                      const struct br_raft_snapshot_meta *meta) {
    if (meta->index < ms->snap.index)
        return BR_EINVAL;
    reset_to(ms, meta->index, meta->term);
    ms->snap = *meta;
    ms->conf = meta->conf;
    return 0;
}

int br_raft_memstorage_create_snapshot(br_raft_memstorage *ms, uint64_t index,
                                       const struct br_raft_conf_state *conf) {
    if (index < ms->snap.index || index < ms->ents[0].index || index > ms_last(ms))
        return BR_EINVAL;
    ms->snap.index = index;
    ms->snap.term = ms->ents[index - ms->ents[0].index].term;
    ms->snap.conf = *conf;
    return 0;
}

int br_raft_memstorage_compact(br_raft_memstorage *ms, uint64_t index) {
    if (index <= ms->ents[0].index)
        return 0;
    if (index > ms->snap.index || index > ms_last(ms))
        return BR_EINVAL;
    size_t k = (size_t)(index - ms->ents[0].index);
    for (size_t i = 1; i <= k; i++)
        free(ms->ents[i].data);
    ms->ents[0] = (struct br_raft_entry){.index = index, .term = ms->ents[k].term};
    memmove(ms->ents + 1, ms->ents + k + 1, (ms->n - k - 1) * sizeof(*ms->ents));
    ms->n -= k;
    return 0;
}

uint64_t br_raft_memstorage_first_index(const br_raft_memstorage *ms) {
    return ms_first(ms);
}

uint64_t br_raft_memstorage_last_index(const br_raft_memstorage *ms) {
    return ms_last(ms);
}
