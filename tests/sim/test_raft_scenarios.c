/*
 * test_raft_scenarios.c - one test per claim of the Raft paper (Figure
 * 3.1/3.2 of the thesis, §5.2-5.4, §6, §7) and per feature (pre-vote,
 * check-quorum, ReadIndex, leadership transfer, membership changes).
 *
 * Two styles, as in etcd-io/raft's raft_paper_test.go and raft_test.go: a
 * single node fed hand-written messages (struct tnode), and a simulated
 * cluster (sim.h) whose checker verifies the safety properties after every
 * step of every test.
 */
#include "sim.h"

#include "bitraft/error.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- one node */

struct tmsg {
    uint32_t type, flags;
    uint64_t to, term, index, log_term, commit, reject_hint, ctx;
    size_t n_entries;
    uint64_t first_index, first_term;
};

struct tnode {
    br_raft *r;
    br_raft_memstorage *ms;
    struct tmsg msgs[64];
    size_t n_msgs;
    uint64_t applied;
    struct br_raft_read_state reads[8];
    size_t n_reads;
};

/* A node `id` of a cluster of voters 1..n whose stored log holds, after the
 * bootstrap entry at index 1, entries 2.. with the given terms. */
static void tn_init(struct tnode *t, uint64_t id, int n, const uint64_t *terms, size_t n_terms,
                    uint64_t term, uint64_t vote, bool pre_vote, bool check_quorum) {
    memset(t, 0, sizeof(*t));
    cr_assert_eq(br_raft_memstorage_new(&t->ms), 0);
    struct br_raft_conf_state conf;
    memset(&conf, 0, sizeof(conf));
    for (int i = 1; i <= n; i++)
        conf.voters[conf.n_voters++] = (uint64_t)i;
    cr_assert_eq(br_raft_memstorage_bootstrap(t->ms, &conf), 0);
    for (size_t i = 0; i < n_terms; i++) {
        uint8_t d[8] = {(uint8_t)i};
        struct br_raft_entry e = {.term = terms[i], .index = 2 + i, .len = 8, .data = d};
        cr_assert_eq(br_raft_memstorage_append(t->ms, &e, 1), 0);
    }
    struct br_raft_hard_state hs = {.term = term ? term : 1, .vote = vote, .commit = 1};
    br_raft_memstorage_set_hard_state(t->ms, &hs);
    struct br_raft_config c = {.id = id,
                               .election_tick = 10,
                               .heartbeat_tick = 1,
                               .seed = id,
                               .pre_vote = pre_vote,
                               .check_quorum = check_quorum,
                               .storage = br_raft_memstorage_storage(t->ms)};
    cr_assert_eq(br_raft_new(&c, &t->r), 0);
}

static void tn_free(struct tnode *t) {
    br_raft_free(t->r);
    br_raft_memstorage_free(t->ms);
}

/* Handles every Ready like a driver; keeps the messages of the last call. */
static void tn_ready(struct tnode *t) {
    t->n_msgs = 0;
    t->n_reads = 0;
    while (br_raft_has_ready(t->r)) {
        struct br_raft_ready rd;
        cr_assert_eq(br_raft_ready(t->r, &rd), 0);
        if (rd.n_entries)
            cr_assert_eq(br_raft_memstorage_append(t->ms, rd.entries, rd.n_entries), 0);
        if (rd.has_hard_state)
            br_raft_memstorage_set_hard_state(t->ms, &rd.hard_state);
        for (size_t i = 0; i < rd.n_msgs && t->n_msgs < 64; i++) {
            const struct br_raft_msg *m = &rd.msgs[i];
            t->msgs[t->n_msgs++] = (struct tmsg){
                .type = m->type,
                .flags = m->flags,
                .to = m->to,
                .term = m->term,
                .index = m->index,
                .log_term = m->log_term,
                .commit = m->commit,
                .reject_hint = m->reject_hint,
                .ctx = m->ctx,
                .n_entries = m->n_entries,
                .first_index = m->n_entries ? m->entries[0].index : 0,
                .first_term = m->n_entries ? m->entries[0].term : 0,
            };
        }
        for (size_t i = 0; i < rd.n_reads && t->n_reads < 8; i++)
            t->reads[t->n_reads++] = rd.reads[i];
        for (size_t i = 0; i < rd.n_committed; i++) {
            cr_assert_eq(rd.committed[i].index,
                         t->applied ? t->applied + 1 : rd.committed[i].index);
            t->applied = rd.committed[i].index;
        }
        br_raft_advance(t->r);
    }
}

static void tn_step(struct tnode *t, struct br_raft_msg m) {
    m.to = 1;
    cr_assert_eq(br_raft_step(t->r, &m), 0);
    tn_ready(t);
}

static struct br_raft_status tn_status(struct tnode *t) {
    struct br_raft_status st;
    br_raft_get_status(t->r, &st);
    return st;
}

static const struct tmsg *tn_find(struct tnode *t, uint32_t type, uint64_t to) {
    for (size_t i = 0; i < t->n_msgs; i++)
        if (t->msgs[i].type == type && (to == 0 || t->msgs[i].to == to))
            return &t->msgs[i];
    return NULL;
}

/* Steps an APPEND_RESP (success) from `from` acknowledging up to index. */
static void tn_ack(struct tnode *t, uint64_t from, uint64_t term, uint64_t index) {
    tn_step(t, (struct br_raft_msg){
                   .type = BR_RAFT_MSG_APPEND_RESP, .from = from, .term = term, .index = index});
}

/* Steps a VOTE request from `from`; returns the answer to it (or NULL). */
static const struct tmsg *tn_vote(struct tnode *t, uint64_t from, uint64_t term, uint64_t index,
                                  uint64_t log_term) {
    tn_step(t, (struct br_raft_msg){.type = BR_RAFT_MSG_VOTE,
                                    .from = from,
                                    .term = term,
                                    .index = index,
                                    .log_term = log_term});
    return tn_find(t, BR_RAFT_MSG_VOTE_RESP, from);
}

/* Steps an APPEND from `from` after (index, log_term) with n entries;
 * returns the answer to it (or NULL). */
static const struct tmsg *tn_append(struct tnode *t, uint64_t from, uint64_t term, uint64_t index,
                                    uint64_t log_term, uint64_t commit,
                                    struct br_raft_entry *entries, size_t n) {
    tn_step(t, (struct br_raft_msg){.type = BR_RAFT_MSG_APPEND,
                                    .from = from,
                                    .term = term,
                                    .index = index,
                                    .log_term = log_term,
                                    .commit = commit,
                                    .n_entries = n,
                                    .entries = entries});
    return tn_find(t, BR_RAFT_MSG_APPEND_RESP, from);
}

/* Starts an election; returns the candidate's term. */
static uint64_t tn_campaign(struct tnode *t) {
    br_raft_campaign(t->r);
    tn_ready(t);
    return tn_status(t).term;
}

static void tn_elect(struct tnode *t, int n) {
    uint64_t term = tn_campaign(t);
    for (int i = 2; i <= n / 2 + 1; i++)
        tn_step(t, (struct br_raft_msg){
                       .type = BR_RAFT_MSG_VOTE_RESP, .from = (uint64_t)i, .term = term});
    cr_assert_eq(tn_status(t).role, BR_RAFT_LEADER);
}

/* ---------------------------------------------------------------- cluster */

static struct sim *mk(int n, bool pre_vote, bool check_quorum) {
    struct sim_config c = {.n = n, .pre_vote = pre_vote, .check_quorum = check_quorum, .seed = 42};
    struct sim *s = sim_new(&c);
    cr_assert_not_null(s);
    return s;
}

static void ok(struct sim *s) {
    cr_assert_null(sim_error(s), "invariant violated: %s", sim_error(s));
}

static int elect(struct sim *s, int id) {
    sim_campaign(s, id);
    sim_deliver_all(s, 100000);
    ok(s);
    cr_assert_eq(sim_leader(s), id);
    return id;
}

/* Proposes n entries at node id and delivers every message; returns the
 * index of the last one. */
static uint64_t propose_deliver(struct sim *s, int id, int n) {
    uint64_t idx = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(sim_propose(s, id, &idx), 0);
    sim_deliver_all(s, 100000);
    return idx;
}

static struct br_raft_status status_of(struct sim *s, int id) {
    struct br_raft_status st;
    sim_status(s, id, &st);
    return st;
}

static uint64_t commit_of(struct sim *s, int id) {
    return status_of(s, id).commit;
}

static uint64_t term_of(struct sim *s, int id) {
    return status_of(s, id).term;
}

/* ================================================================ §5.1 / Figure 3.1 rules for all
 * servers */

/* "If RPC request or response contains term T > currentTerm: set
 * currentTerm = T, convert to follower." */
Test(fig2_all_servers, higher_term_converts_to_follower) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 3);
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_APPEND_RESP, .from = 2, .term = 9});
    struct br_raft_status st = tn_status(&t);
    cr_assert_eq(st.role, BR_RAFT_FOLLOWER);
    cr_assert_eq(st.term, 9);
    cr_assert_eq(st.vote, 0);
    tn_free(&t);
}

/* "Reply false if term < currentTerm" (AppendEntries 1): the stale leader
 * learns the newer term from the answer. */
Test(fig2_append, stale_term_is_refused_and_answered) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 5, 0, false, true);
    const struct tmsg *m = tn_append(&t, 2, 3, 1, 1, 1, NULL, 0);
    cr_assert_not_null(m);
    cr_assert_eq(m->term, 5);
    cr_assert_eq(tn_status(&t).term, 5);
    cr_assert_eq(tn_status(&t).leader, 0);
    tn_free(&t);
}

/* ================================================================ §5.2 leader election */

/* "Each server will vote for at most one candidate in a given term, on a
 * first-come-first-served basis." */
Test(s5_2_election, one_vote_per_term) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    const struct tmsg *m = tn_vote(&t, 2, 2, 1, 1);
    cr_assert(m && !(m->flags & BR_RAFT_MSG_F_REJECT));
    m = tn_vote(&t, 3, 2, 1, 1);
    cr_assert(m && (m->flags & BR_RAFT_MSG_F_REJECT));
    /* the same candidate asking again gets the same answer */
    m = tn_vote(&t, 2, 2, 1, 1);
    cr_assert(m && !(m->flags & BR_RAFT_MSG_F_REJECT));
    tn_free(&t);
}

/* A vote survives a crash: it is in the hard state before the answer is
 * sent, and a restarted node does not vote twice. */
Test(s5_2_election, vote_is_persisted_across_restart) {
    struct sim *s = mk(3, false, false);
    sim_campaign(s, 2);
    sim_deliver_all(s, 100000);
    uint64_t t2 = term_of(s, 1);
    sim_crash(s, 1);
    sim_restart(s, 1);
    struct br_raft_status st = status_of(s, 1);
    cr_assert_eq(st.term, t2);
    cr_assert_eq(st.vote, 2);
    ok(s);
    sim_free(s);
}

/* "A candidate wins an election if it receives votes from a majority of
 * the servers in the full cluster for the same term." */
Test(s5_2_election, majority_wins) {
    struct tnode t;
    tn_init(&t, 1, 5, NULL, 0, 1, 0, false, false);
    br_raft_campaign(t.r);
    tn_ready(&t);
    cr_assert_eq(tn_status(&t).role, BR_RAFT_CANDIDATE);
    cr_assert_eq(t.n_msgs, 4, "a VOTE to each other server");
    uint64_t term = tn_status(&t).term;
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_VOTE_RESP, .from = 2, .term = term});
    cr_assert_eq(tn_status(&t).role, BR_RAFT_CANDIDATE, "2 of 5 is not a majority");
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_VOTE_RESP, .from = 3, .term = term});
    cr_assert_eq(tn_status(&t).role, BR_RAFT_LEADER);
    tn_free(&t);
}

/* "If the leader's term is at least as large as the candidate's current
 * term, then the candidate recognizes the leader as legitimate and returns
 * to follower state." */
Test(s5_2_election, candidate_yields_to_leader_of_same_term) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    uint64_t term = tn_campaign(&t);
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_HEARTBEAT, .from = 2, .term = term});
    cr_assert_eq(tn_status(&t).role, BR_RAFT_FOLLOWER);
    cr_assert_eq(tn_status(&t).leader, 2);
    tn_free(&t);
}

/* "If many followers become candidates at the same time, votes could be
 * split ... each candidate will time out and start a new election by
 * incrementing its term." Randomized timeouts then break the tie. */
Test(s5_2_election, split_vote_resolves) {
    struct sim *s = mk(4, false, false);
    sim_campaign(s, 1);
    sim_campaign(s, 2);
    sim_deliver_all(s, 100000);
    for (int i = 0; i < 200 && !sim_leader(s); i++)
        sim_tick_all(s, 1);
    ok(s);
    cr_assert_neq(sim_leader(s), 0);
    sim_free(s);
}

/* "Raft uses randomized election timeouts": nodes with different seeds
 * time out after different numbers of ticks, all in [et, 2*et). */
Test(s5_2_election, randomized_timeouts) {
    int first[6];
    for (int id = 1; id <= 5; id++) {
        struct tnode t;
        tn_init(&t, (uint64_t)id, 5, NULL, 0, 1, 0, false, false);
        int ticks = 0;
        while (tn_status(&t).role == BR_RAFT_FOLLOWER && ticks < 100) {
            br_raft_tick(t.r);
            ticks++;
        }
        cr_assert(ticks >= 10 && ticks < 20, "timeout %d outside [10, 20)", ticks);
        first[id] = ticks;
        tn_free(&t);
    }
    bool differ = false;
    for (int id = 2; id <= 5; id++)
        differ |= first[id] != first[1];
    cr_assert(differ, "every node drew the same timeout");
}

/* Figure 3.1, rules for candidates: "If election timeout elapses: start
 * new election" (with a new term). */
Test(s5_2_election, candidate_times_out_into_new_term) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    uint64_t term = tn_campaign(&t);
    for (int i = 0; i < 20; i++)
        br_raft_tick(t.r);
    tn_ready(&t);
    cr_assert_eq(tn_status(&t).role, BR_RAFT_CANDIDATE);
    cr_assert_eq(tn_status(&t).term, term + 1);
    cr_assert_not_null(tn_find(&t, BR_RAFT_MSG_VOTE, 2));
    tn_free(&t);
}

/* Figure 3.1, rules for followers: the election timer restarts on hearing
 * from the current leader or granting a vote, and only then. A refused
 * vote request of a higher term does not restart it. */
Test(s5_2_election, timer_resets_only_on_leader_or_granted_vote) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    for (int i = 0; i < 100; i++) {
        br_raft_tick(t.r);
        if (i % 5 == 0)
            tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_HEARTBEAT, .from = 2, .term = 1});
    }
    cr_assert_eq(tn_status(&t).role, BR_RAFT_FOLLOWER, "heartbeats hold off elections");
    tn_free(&t);

    uint64_t terms[] = {1, 1};
    tn_init(&t, 1, 3, terms, 2, 1, 0, false, false);
    int ticks = 0;
    for (; ticks < 40; ticks++) {
        br_raft_tick(t.r);
        if (tn_status(&t).role != BR_RAFT_FOLLOWER)
            break;
        /* a candidate with a stale log keeps asking, with ever higher terms */
        tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_VOTE,
                                         .from = 3,
                                         .term = tn_status(&t).term + 1,
                                         .index = 1,
                                         .log_term = 1});
    }
    cr_assert_lt(ticks, 20, "refused votes must not hold off our own election");
    tn_free(&t);
}

/* Figure 3.1, rules for leaders: "Upon election: send initial empty
 * AppendEntries RPCs (heartbeat) to each server" (here with the no-op). */
Test(s5_2_election, new_leader_announces_itself) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    br_raft_campaign(t.r);
    tn_ready(&t);
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_VOTE_RESP, .from = 2, .term = tn_status(&t).term});
    cr_assert_not_null(tn_find(&t, BR_RAFT_MSG_APPEND, 2));
    cr_assert_not_null(tn_find(&t, BR_RAFT_MSG_APPEND, 3));
    tn_free(&t);
}

/* ================================================================ §5.3 log replication */

/* AppendEntries 2: "Reply false if log doesn't contain an entry at
 * prevLogIndex whose term matches prevLogTerm", with a hint for fast
 * backoff. */
Test(s5_3_replication, consistency_check_and_hint) {
    uint64_t terms[] = {1, 2, 2, 2};
    struct tnode t;
    tn_init(&t, 1, 3, terms, 4, 3, 0, false, false);
    /* the leader thinks our log has (5, term 3) */
    const struct tmsg *m = tn_append(&t, 2, 3, 5, 3, 1, NULL, 0);
    cr_assert(m && (m->flags & BR_RAFT_MSG_F_REJECT));
    cr_assert_eq(m->index, 5);
    cr_assert_eq(m->reject_hint, 5, "our index 5 has term 2 <= 3");
    cr_assert_eq(m->log_term, 2);
    /* beyond our log: the hint is our last index */
    m = tn_append(&t, 2, 3, 9, 3, 1, NULL, 0);
    cr_assert_eq(m->reject_hint, 5);
    tn_free(&t);
}

/* Figure 3.1, rules for leaders: "If AppendEntries fails because of log
 * inconsistency: decrement nextIndex and retry", here skipping a whole
 * term at once with the follower's hint. */
Test(s5_3_replication, leader_backs_off_to_the_match) {
    uint64_t terms[] = {1, 1, 2, 2, 2, 2};
    struct tnode t;
    tn_init(&t, 1, 3, terms, 6, 2, 0, false, false); /* log 1..7 */
    tn_elect(&t, 3);                                 /* term 3, no-op at 8 */
    uint64_t term = tn_status(&t).term;
    /* follower 2 has 1..3 (terms 1) and 4..9 of some old term 1 */
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_APPEND_RESP,
                                     .from = 2,
                                     .term = term,
                                     .flags = BR_RAFT_MSG_F_REJECT,
                                     .index = 7,
                                     .reject_hint = 7,
                                     .log_term = 1});
    const struct tmsg *m = tn_find(&t, BR_RAFT_MSG_APPEND, 2);
    cr_assert_not_null(m);
    cr_assert_eq(m->index, 3, "all of term 2 skipped in one step: probe after index 3");
    cr_assert_eq(m->log_term, 1);
    cr_assert_eq(m->first_index, 4);
    tn_free(&t);
}

/* AppendEntries 3-4: "If an existing entry conflicts with a new one (same
 * index but different terms), delete the existing entry and all that
 * follow it. Append any new entries not already in the log." */
Test(s5_3_replication, conflicting_suffix_is_replaced) {
    uint64_t terms[] = {1, 1, 2, 2};
    struct tnode t;
    tn_init(&t, 1, 3, terms, 4, 3, 0, false, false);
    uint8_t d = 7;
    struct br_raft_entry e[2] = {{.term = 3, .index = 4, .len = 1, .data = &d},
                                 {.term = 3, .index = 5, .len = 1, .data = &d}};
    const struct tmsg *m = tn_append(&t, 2, 3, 3, 1, 1, e, 2);
    cr_assert(m && !(m->flags & BR_RAFT_MSG_F_REJECT));
    cr_assert_eq(m->index, 5);
    cr_assert_eq(br_raft_memstorage_last_index(t.ms), 5);
    const struct br_raft_storage *st = br_raft_memstorage_storage(t.ms);
    uint64_t term = 0;
    cr_assert_eq(st->term(st->ctx, 4, &term), 0);
    cr_assert_eq(term, 3);
    tn_free(&t);
}

/* AppendEntries 5: "If leaderCommit > commitIndex, set commitIndex =
 * min(leaderCommit, index of last new entry)." */
Test(s5_3_replication, follower_commit_is_capped) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 2, 0, false, false);
    uint8_t d = 1;
    struct br_raft_entry e = {.term = 2, .index = 2, .len = 1, .data = &d};
    tn_append(&t, 2, 2, 1, 1, 10, &e, 1);
    cr_assert_eq(tn_status(&t).commit, 2);
    cr_assert_eq(t.applied, 2, "committed entries reach the state machine");
    tn_free(&t);
}

/* "The leader ... replicates entries in parallel": the pipeline holds at
 * most max_inflight APPENDs, each within max_msg_bytes. */
Test(s5_3_replication, pipeline_window_and_message_size) {
    struct br_raft_memstorage *ms;
    cr_assert_eq(br_raft_memstorage_new(&ms), 0);
    struct br_raft_conf_state conf = {.n_voters = 2, .voters = {1, 2}};
    br_raft_memstorage_bootstrap(ms, &conf);
    struct br_raft_config c = {.id = 1,
                               .election_tick = 10,
                               .heartbeat_tick = 1,
                               .seed = 1,
                               .max_inflight = 3,
                               .max_msg_bytes = 100,
                               .storage = br_raft_memstorage_storage(ms)};
    br_raft *r;
    cr_assert_eq(br_raft_new(&c, &r), 0);
    struct tnode t = {.r = r, .ms = ms};
    tn_elect(&t, 2);
    /* the follower acknowledges the no-op: replicate state */
    uint64_t term = tn_status(&t).term;
    tn_ack(&t, 2, term, 2);
    uint8_t d[60] = {0};
    for (int i = 0; i < 20; i++)
        cr_assert_eq(br_raft_propose(r, d, sizeof(d), NULL, NULL), 0);
    tn_ready(&t);
    size_t appends = 0;
    for (size_t i = 0; i < t.n_msgs; i++) {
        if (t.msgs[i].type != BR_RAFT_MSG_APPEND || t.msgs[i].n_entries == 0)
            continue;
        appends++;
        cr_assert_eq(t.msgs[i].n_entries, 1, "60-byte entries, 100-byte messages");
    }
    cr_assert_eq(appends, 3, "window of 3");
    br_raft_free(r);
    br_raft_memstorage_free(ms);
}

/* The leader writes its log in parallel with replication (thesis
 * §10.2.1), but counts itself only for what the driver reported
 * persisted. */
Test(s5_3_replication, leader_counts_itself_only_when_persisted) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 3);
    uint64_t term = tn_status(&t).term;
    for (uint64_t f = 2; f <= 3; f++) /* the no-op reached both: replicate state */
        tn_ack(&t, f, term, 2);
    cr_assert_eq(tn_status(&t).commit, 2);
    uint64_t idx;
    cr_assert_eq(br_raft_propose(t.r, "x", 1, &idx, NULL), 0);
    /* take the Ready but do not advance: the entry is not yet persisted */
    struct br_raft_ready rd;
    cr_assert_eq(br_raft_ready(t.r, &rd), 0);
    cr_assert_eq(rd.n_entries, 1);
    bool sent = false;
    for (size_t i = 0; i < rd.n_msgs; i++)
        sent |= rd.msgs[i].type == BR_RAFT_MSG_APPEND && rd.msgs[i].n_entries == 1;
    cr_assert(sent, "the APPEND leaves in the same Ready as the local write");
    cr_assert_eq(br_raft_memstorage_append(t.ms, rd.entries, rd.n_entries), 0);
    br_raft_advance(t.r);
    cr_assert_eq(tn_status(&t).commit, 2, "the leader alone is not a majority");
    /* leader (persisted) + one follower = majority of 3 */
    tn_ack(&t, 2, term, idx);
    cr_assert_eq(tn_status(&t).commit, idx);
    tn_free(&t);

    /* In a 5-node cluster two followers' acks are not enough until the
     * leader's own write is reported. */
    tn_init(&t, 1, 5, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 5);
    term = tn_status(&t).term;
    cr_assert_eq(br_raft_propose(t.r, "y", 1, &idx, NULL), 0);
    for (uint64_t f = 2; f <= 3; f++) {
        struct br_raft_msg r2 = {
            .type = BR_RAFT_MSG_APPEND_RESP, .from = f, .to = 1, .term = term, .index = idx};
        cr_assert_eq(br_raft_step(t.r, &r2), 0);
    }
    cr_assert_lt(tn_status(&t).commit, idx, "2 followers without the leader's disk");
    tn_ready(&t);
    cr_assert_eq(tn_status(&t).commit, idx);
    tn_free(&t);
}

/* ================================================================ §5.4 safety */

/* §5.4.1 election restriction: "the voter denies its vote if its own log
 * is more up-to-date than that of the candidate." */
Test(s5_4_safety, vote_denied_to_stale_log) {
    uint64_t terms[] = {2, 3};
    struct tnode t;
    tn_init(&t, 1, 3, terms, 2, 3, 0, false, false);
    /* lower last term, longer log: refused */
    const struct tmsg *m = tn_vote(&t, 2, 4, 9, 2);
    cr_assert(m && (m->flags & BR_RAFT_MSG_F_REJECT));
    /* same last term, shorter log: refused */
    m = tn_vote(&t, 3, 5, 2, 3);
    cr_assert(m && (m->flags & BR_RAFT_MSG_F_REJECT));
    /* same last term, same length: granted */
    m = tn_vote(&t, 3, 6, 3, 3);
    cr_assert(m && !(m->flags & BR_RAFT_MSG_F_REJECT));
    tn_free(&t);
}

/* §5.4.2 / Figure 3.7: "Raft never commits log entries from previous terms
 * by counting replicas." A leader holding an entry of an older term that a
 * majority stores still does not commit it until an entry of its own term
 * is replicated. */
Test(s5_4_safety, no_commit_of_previous_term_by_counting) {
    uint64_t terms[] = {2};
    struct tnode t;
    tn_init(&t, 1, 3, terms, 1, 3, 0, false, false); /* log: (2, term 2) */
    tn_elect(&t, 3);                                 /* term 4, no-op at 3 */
    uint64_t term = tn_status(&t).term;
    cr_assert_eq(term, 4);
    /* follower 2 stores index 2 (term 2) but not yet the no-op */
    tn_ack(&t, 2, term, 2);
    cr_assert_eq(tn_status(&t).commit, 1, "index 2 (term 2) on a majority is not committed");
    tn_ack(&t, 2, term, 3);
    cr_assert_eq(tn_status(&t).commit, 3, "the no-op of term 4 commits both");
    tn_free(&t);
}

struct drop_arg {
    struct sim *s;
    uint64_t term;
};

/* An APPEND carrying an entry of the given term that its target would
 * accept (it holds the entry before it). */
static bool acceptable_with_term(const struct br_raft_msg *m, void *arg) {
    struct drop_arg *a = arg;
    struct br_raft_status st;
    sim_status(a->s, (int)m->to, &st);
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].term == a->term && st.last_index >= m->index)
            return true;
    return false;
}

/* Delivers one message at a time, dropping every APPEND that would give a
 * node an entry of term t. */
static void deliver_without_term(struct sim *s, uint64_t t) {
    struct drop_arg a = {s, t};
    for (int i = 0; i < 100000; i++) {
        sim_drop_if(s, acceptable_with_term, &a);
        if (sim_deliver_all(s, 1) == 0)
            break;
    }
}

static void campaign_until_leader(struct sim *s, int id, uint64_t drop_term) {
    for (int i = 0; i < 5 && sim_leader(s) != id; i++) {
        sim_campaign(s, id);
        deliver_without_term(s, drop_term);
    }
    ok(s);
    cr_assert_eq(sim_leader(s), id);
}

/* Figure 3.7 played in a cluster: S1 (term 4) spreads the term-2 entry at
 * index 3 to a majority but not its own term-4 entry, and crashes; S5,
 * holding (3, term 3), then wins and overwrites index 3 everywhere. That
 * is safe only because S1 never counted index 3 committed: with the rule
 * broken, the checker reports a committed entry replaced. */
Test(s5_4_safety, figure_8) {
    struct sim_config c = {.n = 5,
                           .seed = 42,
                           .max_msg_bytes = 1,
                           .max_inflight = 1,
                           .trace = getenv("BR_SIM_TRACE") != NULL};
    struct sim *s = sim_new(&c);
    elect(s, 1); /* term 2: no-op (2, t2) everywhere */
    sim_cut(s, 1, 3);
    sim_cut(s, 1, 4);
    sim_cut(s, 1, 5);
    uint64_t idx;
    cr_assert_eq(sim_propose(s, 1, &idx), 0);
    cr_assert_eq(idx, 3);
    sim_deliver_all(s, 100000); /* (3, t2) on S1 and S2 */
    sim_crash(s, 1);
    sim_heal(s);
    sim_isolate(s, 2);
    campaign_until_leader(s, 5, 3); /* term 3 with S3, S4; its no-op (3, t3) stays on S5 */
    sim_crash(s, 5);
    sim_heal(s);
    sim_restart(s, 1);
    campaign_until_leader(s, 1, 4); /* term 4; its term-4 entries never leave */
    cr_assert_eq(term_of(s, 1), 4);
    for (int i = 0; i < 3; i++) {
        sim_tick(s, 1);
        deliver_without_term(s, 4);
    }
    cr_assert_eq(commit_of(s, 1), 2, "(3, t2) is on S1, S2, S3 but must not count committed");
    sim_crash(s, 1);
    sim_restart(s, 5);
    campaign_until_leader(s, 5, 0); /* S3 and S4 vote: (3, t3) beats (3, t2) */
    sim_tick_all(s, 3);
    ok(s);
    cr_assert_eq(sim_applied(s, 2), sim_applied(s, 5));
    cr_assert_eq(sim_sm_hash(s, 2), sim_sm_hash(s, 5));
    sim_free(s);
}

/* Leader completeness and state machine safety over leader changes: every
 * committed proposal survives every later election. */
Test(s5_4_safety, committed_entries_survive_leader_changes) {
    struct sim *s = mk(5, true, false);
    for (int round = 0; round < 10; round++) {
        int l = elect(s, 1 + round % 5);
        uint64_t idx;
        cr_assert_eq(sim_propose(s, l, &idx), 0);
        sim_deliver_all(s, 100000);
        cr_assert_geq(commit_of(s, l), idx);
        sim_crash(s, l);
        sim_restart(s, l);
        ok(s);
    }
    sim_tick_all(s, 5);
    for (int i = 2; i <= 5; i++)
        cr_assert_eq(sim_sm_hash(s, i), sim_sm_hash(s, 1));
    sim_free(s);
}

/* ================================================================ proposals */

/* A follower refuses a proposal and names the leader it knows. */
Test(proposals, follower_refuses_and_names_leader) {
    struct sim *s = mk(3, false, false);
    elect(s, 2);
    uint64_t leader = 0;
    cr_assert_eq(br_raft_propose(sim_raft(s, 3), "x", 1, NULL, &leader), BR_ENOTLEADER);
    cr_assert_eq(leader, 2);
    sim_free(s);
}

/* Proposals made between two Readys leave in one APPEND per follower. */
Test(proposals, batched_into_one_append) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    br_raft *r = sim_raft(s, 1);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(br_raft_propose(r, "abc", 3, NULL, NULL), 0);
    struct br_raft_ready rd;
    cr_assert_eq(br_raft_ready(r, &rd), 0);
    size_t n = 0;
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].type == BR_RAFT_MSG_APPEND) {
            n++;
            cr_assert_eq(rd.msgs[i].n_entries, 10);
        }
    cr_assert_eq(n, 2);
    br_raft_advance(r); /* the sim never saw these: drop them */
    sim_free(s);
}

/* ================================================================ §6 / §9.6 pre-vote and
 * check-quorum */

/* Three nodes, 1 leading in term *t; 3 is cut off for 100 of its ticks. */
static struct sim *node_3_cut_off(bool pre_vote, uint64_t *t) {
    struct sim *s = mk(3, pre_vote, false);
    elect(s, 1);
    *t = term_of(s, 1);
    sim_isolate(s, 3);
    for (int i = 0; i < 100; i++) {
        sim_tick(s, 3);
        sim_deliver_all(s, 1000);
    }
    return s;
}

/* Thesis §9.6: a node cut off from the cluster does not raise its term
 * with pre-vote, so it does not depose the leader when it returns. */
Test(prevote, partitioned_node_does_not_disrupt) {
    uint64_t t;
    struct sim *s = node_3_cut_off(true, &t);
    cr_assert_eq(term_of(s, 3), t, "pre-candidate must not bump its term");
    sim_heal(s);
    sim_tick_all(s, 30);
    cr_assert_eq(sim_leader(s), 1);
    cr_assert_eq(term_of(s, 1), t);
    ok(s);
    sim_free(s);
}

/* Without pre-vote the same node does disrupt: the test above can fail. */
Test(prevote, without_it_the_returning_node_disrupts) {
    uint64_t t;
    struct sim *s = node_3_cut_off(false, &t);
    cr_assert_gt(term_of(s, 3), t);
    sim_heal(s);
    sim_tick_all(s, 30);
    cr_assert_gt(term_of(s, 1), t);
    ok(s);
    sim_free(s);
}

/* Thesis §6.2: "a leader steps down if an election timeout elapses without
 * a successful round of heartbeats to a majority of its cluster." */
Test(check_quorum, isolated_leader_steps_down) {
    struct sim *s = mk(3, false, true);
    elect(s, 1);
    sim_isolate(s, 1);
    for (int i = 0; i < 25; i++)
        sim_tick(s, 1);
    struct br_raft_status st = status_of(s, 1);
    cr_assert_neq(st.role, BR_RAFT_LEADER);
    ok(s);
    sim_free(s);
}

/* Thesis §4.2.3: with check-quorum, a follower that heard from a leader
 * within the election timeout ignores a vote request of a higher term. */
Test(check_quorum, leader_lease_ignores_votes) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 2, 0, false, true);
    tn_step(&t, (struct br_raft_msg){.type = BR_RAFT_MSG_HEARTBEAT, .from = 2, .term = 2});
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_VOTE, .from = 3, .term = 3, .index = 9, .log_term = 9});
    cr_assert_eq(tn_status(&t).term, 2);
    cr_assert_null(tn_find(&t, BR_RAFT_MSG_VOTE_RESP, 3));
    tn_free(&t);
}

/* ================================================================ §6.4 ReadIndex */

Test(read_index, confirmed_by_heartbeat_round) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    uint64_t idx = propose_deliver(s, 1, 1);
    cr_assert_eq(br_raft_read_index(sim_raft(s, 1), 77, NULL), 0);
    sim_tick(s, 1); /* process */
    cr_assert_eq(sim_reads_done(s, 1), 0, "not before a majority answered");
    sim_deliver_all(s, 100000);
    cr_assert_eq(sim_reads_done(s, 1), 1);
    cr_assert_geq(sim_last_read_index(s, 1), idx);
    ok(s);
    sim_free(s);
}

/* An isolated (deposed) leader never answers a read. */
Test(read_index, stale_leader_cannot_read) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    sim_isolate(s, 1);
    elect(s, 2);
    cr_assert_eq(br_raft_read_index(sim_raft(s, 1), 5, NULL), 0, "1 still thinks it leads");
    sim_tick(s, 1);
    sim_deliver_all(s, 100000);
    cr_assert_eq(sim_reads_done(s, 1), 0);
    ok(s);
    sim_free(s);
}

/* "If the leader has not yet marked an entry from its current term
 * committed, it waits until it has done so." */
Test(read_index, new_leader_waits_for_its_term) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 3);
    cr_assert_eq(br_raft_read_index(t.r, 9, NULL), 0);
    tn_ready(&t);
    cr_assert_null(tn_find(&t, BR_RAFT_MSG_HEARTBEAT, 0), "no round before the no-op commits");
    uint64_t term = tn_status(&t).term;
    tn_ack(&t, 2, term, 2);
    const struct tmsg *hb = tn_find(&t, BR_RAFT_MSG_HEARTBEAT, 2);
    cr_assert_not_null(hb);
    cr_assert_neq(hb->ctx, 0, "the round has an id");
    uint64_t round = hb->ctx;
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_HEARTBEAT_RESP, .from = 3, .term = term, .ctx = round});
    cr_assert_eq(t.n_reads, 1);
    cr_assert_eq(t.reads[0].ctx, 9);
    cr_assert_eq(t.reads[0].index, 2);
    tn_free(&t);
}

/* A late acknowledgement of an earlier round must not confirm a request
 * that arrived after that round started: round ids are never reused, even
 * when the requests' own contexts are. */
Test(read_index, old_round_ack_does_not_confirm_newer_request) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 3);
    uint64_t term = tn_status(&t).term;
    tn_ack(&t, 2, term, 2);
    cr_assert_eq(br_raft_read_index(t.r, 9, NULL), 0);
    tn_ready(&t);
    const struct tmsg *hb = tn_find(&t, BR_RAFT_MSG_HEARTBEAT, 2);
    cr_assert_not_null(hb);
    uint64_t first = hb->ctx;
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_HEARTBEAT_RESP, .from = 2, .term = term, .ctx = first});
    cr_assert_eq(t.n_reads, 1, "the first request is confirmed");
    /* the same context again, from a new request */
    cr_assert_eq(br_raft_read_index(t.r, 9, NULL), 0);
    tn_ready(&t);
    hb = tn_find(&t, BR_RAFT_MSG_HEARTBEAT, 2);
    cr_assert_not_null(hb);
    cr_assert_neq(hb->ctx, first, "a new round id");
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_HEARTBEAT_RESP, .from = 3, .term = term, .ctx = first});
    cr_assert_eq(t.n_reads, 0, "a duplicate ack of the old round confirms nothing");
    tn_free(&t);
}

/* Thesis §6.4: a follower asks the leader for the read index and serves
 * the read itself once it has applied that far. */
Test(read_index, follower_forwards_to_leader) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    uint64_t idx = propose_deliver(s, 1, 1);
    uint64_t leader = 0;
    cr_assert_eq(br_raft_read_index(sim_raft(s, 2), 41, &leader), 0);
    cr_assert_eq(leader, 1);
    sim_tick(s, 2); /* hands the READ_INDEX over */
    cr_assert_eq(sim_reads_done(s, 2), 0, "not before the leader's round");
    sim_deliver_all(s, 100000);
    cr_assert_eq(sim_reads_done(s, 2), 1);
    cr_assert_eq(sim_reads_done(s, 1), 0, "the leader answers, it does not read");
    cr_assert_geq(sim_last_read_index(s, 2), idx);
    ok(s);
    sim_free(s);
}

/* A follower cut off with a deposed leader gets no read point from it. */
Test(read_index, follower_of_deposed_leader_gets_no_answer) {
    struct sim *s = mk(5, false, false);
    elect(s, 1);
    for (int a = 1; a <= 2; a++)
        for (int b = 3; b <= 5; b++) {
            sim_cut(s, a, b);
            sim_cut(s, b, a);
        }
    elect(s, 3);
    cr_assert_eq(br_raft_read_index(sim_raft(s, 2), 7, NULL), 0, "2 still follows 1");
    for (int i = 0; i < 5; i++) {
        sim_tick(s, 2);
        sim_tick(s, 1);
        sim_deliver_all(s, 100000);
    }
    cr_assert_eq(sim_reads_done(s, 2), 0);
    ok(s);
    sim_free(s);
}

/* A leader refuses a read index to a node outside its configuration (a
 * removed node that has not applied its removal) instead of leaving it to
 * time out; the asker gets a refused read state, not a read point. */
Test(read_index, non_member_is_refused) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    tn_elect(&t, 3);
    uint64_t term = tn_status(&t).term;
    tn_ack(&t, 2, term, 2);
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_READ_INDEX, .from = 9, .term = term, .ctx = 5});
    const struct tmsg *a = tn_find(&t, BR_RAFT_MSG_READ_INDEX_RESP, 9);
    cr_assert_not_null(a, "the non-member gets an answer");
    cr_assert(a->flags & BR_RAFT_MSG_F_REJECT, "a refusal");
    cr_assert_eq(a->ctx, 5);
    cr_assert_eq(a->index, UINT64_MAX, "an older node would wait on it, never read at 0");
    tn_step(&t, (struct br_raft_msg){
                    .type = BR_RAFT_MSG_READ_INDEX, .from = 2, .term = term, .ctx = 6});
    cr_assert_null(tn_find(&t, BR_RAFT_MSG_READ_INDEX_RESP, 2),
                   "a member's request waits for its heartbeat round");
    tn_free(&t);

    struct tnode f; /* the asker: node 1, following 2 */
    tn_init(&f, 1, 3, NULL, 0, 1, 0, false, false);
    tn_step(&f, (struct br_raft_msg){.type = BR_RAFT_MSG_HEARTBEAT, .from = 2, .term = 2});
    uint64_t leader = 0;
    cr_assert_eq(br_raft_read_index(f.r, 7, &leader), 0);
    cr_assert_eq(leader, 2);
    tn_ready(&f);
    tn_step(&f, (struct br_raft_msg){.type = BR_RAFT_MSG_READ_INDEX_RESP,
                                     .from = 2,
                                     .term = 2,
                                     .ctx = 7,
                                     .index = 99,
                                     .flags = BR_RAFT_MSG_F_REJECT});
    cr_assert_eq(f.n_reads, 1);
    cr_assert_eq(f.reads[0].ctx, 7);
    cr_assert(f.reads[0].refused, "refused, not a read point");
    cr_assert_eq(f.reads[0].index, 0);
    tn_free(&f);
}

Test(read_index, no_leader_refuses) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    uint64_t leader = 9;
    cr_assert_eq(br_raft_read_index(t.r, 1, &leader), BR_ENOTLEADER);
    cr_assert_eq(leader, 0);
    tn_free(&t);
}

/* ================================================================ §3.10 leadership transfer */

Test(transfer, hands_over_to_caught_up_follower) {
    struct sim *s = mk(3, true, true);
    elect(s, 1);
    sim_crash(s, 3);
    propose_deliver(s, 1, 5);
    sim_restart(s, 3); /* behind: must be caught up first */
    cr_assert_eq(br_raft_transfer_leadership(sim_raft(s, 1), 3), 0);
    uint64_t leader = 0;
    cr_assert_eq(br_raft_propose(sim_raft(s, 1), "x", 1, NULL, &leader), BR_ENOTLEADER,
                 "no proposals during a transfer");
    sim_tick(s, 1);
    sim_deliver_all(s, 100000);
    cr_assert_eq(sim_leader(s), 3);
    ok(s);
    sim_free(s);
}

Test(transfer, gives_up_after_election_timeout) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    sim_isolate(s, 2);
    cr_assert_eq(br_raft_transfer_leadership(sim_raft(s, 1), 2), 0);
    for (int i = 0; i < 12; i++) {
        sim_tick(s, 1);
        sim_deliver_all(s, 1000);
    }
    struct br_raft_status st = status_of(s, 1);
    cr_assert_eq(st.role, BR_RAFT_LEADER);
    cr_assert_eq(st.lead_transferee, 0);
    cr_assert_eq(sim_propose(s, 1, NULL), 0);
    sim_free(s);
}

/* ================================================================ §7 snapshots */

/* A follower that needs compacted entries gets the snapshot, installs it
 * and continues from there. */
Test(snapshot, lagging_follower_catches_up_by_snapshot) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    sim_crash(s, 3);
    propose_deliver(s, 1, 20);
    sim_compact(s, 1);
    sim_compact(s, 2);
    uint64_t before = sim_delivered(s, BR_RAFT_MSG_SNAPSHOT);
    sim_restart(s, 3);
    sim_tick_all(s, 5);
    ok(s);
    cr_assert_gt(sim_delivered(s, BR_RAFT_MSG_SNAPSHOT), before);
    cr_assert_eq(sim_applied(s, 3), sim_applied(s, 1));
    cr_assert_eq(sim_sm_hash(s, 3), sim_sm_hash(s, 1));
    sim_free(s);
}

/* ================================================================ §4 membership */

/* Thesis §4.2.1: a new server joins as a learner, catches up (by snapshot
 * here), then is promoted; it votes only after promotion. */
Test(membership, add_learner_then_promote) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    propose_deliver(s, 1, 5);
    sim_compact(s, 1);
    int id = sim_add_node(s);
    cr_assert_eq(id, 4);
    br_raft *l = sim_raft(s, 1);
    struct br_raft_conf_change cc = {.type = BR_RAFT_CC_ADD_VOTER, .node_id = 4};
    cr_assert_eq(br_raft_propose_conf_change(l, &cc, NULL, 0, NULL, NULL), BR_EINVAL,
                 "a new node must be a learner first");
    cc.type = BR_RAFT_CC_ADD_LEARNER;
    cr_assert_eq(br_raft_propose_conf_change(l, &cc, "addr", 4, NULL, NULL), 0);
    cc.node_id = 5;
    cr_assert_eq(br_raft_propose_conf_change(l, &cc, NULL, 0, NULL, NULL), BR_EINVAL,
                 "one change at a time");
    sim_tick_all(s, 5);
    ok(s);
    cr_assert_eq(sim_applied(s, 4), sim_applied(s, 1), "the learner caught up");
    /* a learner never campaigns */
    for (int i = 0; i < 50; i++)
        sim_tick(s, 4);
    struct br_raft_status st = status_of(s, 4);
    cr_assert_eq(st.role, BR_RAFT_FOLLOWER);
    cc = (struct br_raft_conf_change){.type = BR_RAFT_CC_ADD_VOTER, .node_id = 4};
    cr_assert_eq(br_raft_propose_conf_change(sim_raft(s, 1), &cc, NULL, 0, NULL, NULL), 0);
    sim_tick_all(s, 5);
    struct br_raft_conf_state conf;
    br_raft_get_conf(sim_raft(s, 4), &conf);
    cr_assert_eq(conf.n_voters, 4);
    /* now 4 voters: the leader needs 3 */
    sim_isolate(s, 2);
    sim_isolate(s, 3);
    uint64_t idx = propose_deliver(s, 1, 1);
    cr_assert_lt(commit_of(s, 1), idx, "1 and 4 are not a majority of 4");
    sim_heal(s);
    sim_tick_all(s, 3);
    cr_assert_geq(commit_of(s, 1), idx);
    ok(s);
    sim_free(s);
}

/* Removing the leader: it steps down once the change applies, and the
 * rest elect a new one. */
Test(membership, remove_leader) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    struct br_raft_conf_change cc = {.type = BR_RAFT_CC_REMOVE, .node_id = 1};
    sim_tick_all(s, 2); /* let the no-op apply */
    cr_assert_eq(br_raft_propose_conf_change(sim_raft(s, 1), &cc, NULL, 0, NULL, NULL), 0);
    sim_tick_all(s, 3);
    struct br_raft_status st = status_of(s, 1);
    cr_assert_neq(st.role, BR_RAFT_LEADER);
    for (int i = 0; i < 100 && !(sim_leader(s) == 2 || sim_leader(s) == 3); i++)
        sim_tick_all(s, 1);
    int l = sim_leader(s);
    cr_assert(l == 2 || l == 3);
    uint64_t idx;
    cr_assert_eq(sim_propose(s, l, &idx), 0);
    sim_crash(s, 1);
    sim_tick_all(s, 3);
    cr_assert_geq(commit_of(s, l), idx, "2 of the remaining 2 voters");
    ok(s);
    sim_free(s);
}

/* The leader removes itself and hands over at once; the target learns of
 * the commit with the TIMEOUT_NOW and must not wait an election timeout
 * (it campaigns once it has applied the change). */
Test(membership, remove_leader_hands_over_without_timeout) {
    struct sim *s = mk(3, false, false);
    elect(s, 1);
    sim_tick_all(s, 2);
    struct br_raft_conf_change cc = {.type = BR_RAFT_CC_REMOVE, .node_id = 1};
    cr_assert_eq(br_raft_propose_conf_change(sim_raft(s, 1), &cc, NULL, 0, NULL, NULL), 0);
    sim_tick(s, 1);             /* hands the Ready over; the followers never tick, */
    sim_deliver_all(s, 100000); /* so no election timeout can fire */
    int l = sim_leader(s);
    cr_assert(l == 2 || l == 3, "a new leader without any tick (leader %d)", l);
    ok(s);
    sim_free(s);
}

/* In a real node the commit of the leader's removal and its TIMEOUT_NOW
 * often arrive together, before the follower has applied the change: it
 * must campaign as soon as it has, not let the transfer time out. */
Test(membership, timeout_now_with_the_removal_unapplied) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 1, 0, false, false);
    uint8_t cc[12] = {BR_RAFT_CC_REMOVE, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}; /* remove node 2 */
    struct br_raft_entry e = {
        .term = 1, .index = 2, .type = BR_RAFT_ENTRY_CONF_CHANGE, .len = 12, .data = cc};
    struct br_raft_msg app = {.type = BR_RAFT_MSG_APPEND,
                              .from = 2,
                              .to = 1,
                              .term = 1,
                              .index = 1,
                              .log_term = 1,
                              .commit = 2,
                              .n_entries = 1,
                              .entries = &e};
    cr_assert_eq(br_raft_step(t.r, &app), 0);
    struct br_raft_msg tn = {.type = BR_RAFT_MSG_TIMEOUT_NOW, .from = 2, .to = 1, .term = 1};
    cr_assert_eq(br_raft_step(t.r, &tn), 0); /* both before any Ready */
    tn_ready(&t);                            /* applies the removal, then campaigns */
    const struct tmsg *v = tn_find(&t, BR_RAFT_MSG_VOTE, 3);
    cr_assert_not_null(v, "no election after the change was applied");
    cr_assert(v->flags & BR_RAFT_MSG_F_TRANSFER);
    cr_assert_null(tn_find(&t, BR_RAFT_MSG_VOTE, 2), "the removed leader is not asked");
    tn_free(&t);
}

/* Two voters, the leader removes itself: it keeps leading without
 * counting itself, hands over to the other, which ends up alone. */
Test(membership, two_nodes_remove_leader) {
    struct sim *s = mk(2, false, false);
    elect(s, 1);
    sim_tick_all(s, 2);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sim_propose(s, 1, NULL), 0);
    struct br_raft_conf_change cc = {.type = BR_RAFT_CC_REMOVE, .node_id = 1};
    cr_assert_eq(br_raft_propose_conf_change(sim_raft(s, 1), &cc, NULL, 0, NULL, NULL), 0);
    sim_tick_all(s, 10);
    ok(s);
    cr_assert_eq(sim_leader(s), 2);
    struct br_raft_conf_state conf;
    br_raft_get_conf(sim_raft(s, 2), &conf);
    cr_assert_eq(conf.n_voters, 1);
    cr_assert_eq(conf.voters[0], 2);
    sim_crash(s, 1);
    uint64_t idx;
    cr_assert_eq(sim_propose(s, 2, &idx), 0);
    sim_tick_all(s, 2);
    cr_assert_geq(commit_of(s, 2), idx);
    sim_free(s);
}

/* ================================================================ robustness */

/* Malformed messages are refused with BR_EPROTOCOL and change nothing. */
Test(robustness, malformed_messages_refused) {
    struct tnode t;
    tn_init(&t, 1, 3, NULL, 0, 2, 0, false, false);
    struct br_raft_msg m = {.type = 99, .from = 2, .to = 1, .term = 3};
    cr_assert_eq(br_raft_step(t.r, &m), BR_EPROTOCOL);
    uint8_t d = 0;
    struct br_raft_entry e = {.term = 2, .index = 7, .len = 1, .data = &d}; /* gap */
    m = (struct br_raft_msg){.type = BR_RAFT_MSG_APPEND,
                             .from = 2,
                             .to = 1,
                             .term = 3,
                             .index = 1,
                             .log_term = 1,
                             .n_entries = 1,
                             .entries = &e};
    cr_assert_eq(br_raft_step(t.r, &m), BR_EPROTOCOL);
    m.from = 1; /* from itself */
    cr_assert_eq(br_raft_step(t.r, &m), BR_EPROTOCOL);
    cr_assert_eq(tn_status(&t).term, 2);
    tn_free(&t);
}

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Arbitrary (well-formed or not) messages from a confused or malicious
 * peer never crash the core or make it hand the driver an inconsistent
 * Ready (the driver helper asserts in-order application). Safety is not
 * claimed against such peers, only robustness. */
Test(robustness, random_messages_never_crash) {
    uint64_t rng = 12345;
    for (int node = 0; node < 20; node++) {
        uint64_t terms[] = {1, 2, 2, 3};
        struct tnode t;
        tn_init(&t, 1, 3, terms, 4, 3, 0, node & 1, node & 2);
        if ((node & 4) && !(node & 1))
            tn_elect(&t, 3);
        for (int i = 0; i < 2000; i++) {
            struct br_raft_entry e[3];
            uint8_t d[4] = {1, 2, 3, 4};
            struct br_raft_msg m = {
                .type = 1 + (uint32_t)(lcg(&rng) % 11),
                .flags = (uint32_t)(lcg(&rng) % 4),
                .from = 1 + lcg(&rng) % 4,
                .to = 1,
                .term = lcg(&rng) % 8,
                .log_term = lcg(&rng) % 8,
                .index = lcg(&rng) % 12,
                .commit = lcg(&rng) % 14,
                .reject_hint = lcg(&rng) % 12,
                .ctx = lcg(&rng) % 3,
            };
            if (lcg(&rng) % 50 == 0)
                m.index = UINT64_MAX - lcg(&rng) % 3;
            if (m.type == BR_RAFT_MSG_APPEND && lcg(&rng) % 2) {
                m.n_entries = 1 + lcg(&rng) % 3;
                uint64_t et = m.log_term;
                for (size_t k = 0; k < m.n_entries; k++) {
                    et += lcg(&rng) % 2;
                    e[k] = (struct br_raft_entry){.term = et,
                                                  .index = m.index + 1 + k,
                                                  .len = (uint32_t)(lcg(&rng) % 5),
                                                  .data = d};
                }
                m.entries = e;
            }
            if (m.type == BR_RAFT_MSG_SNAPSHOT) {
                m.snapshot.index = lcg(&rng) % 14;
                m.snapshot.term = lcg(&rng) % 8;
                m.snapshot.conf = (struct br_raft_conf_state){.n_voters = 3, .voters = {1, 2, 3}};
            }
            int rc = br_raft_step(t.r, &m);
            cr_assert(rc == 0 || rc == BR_EPROTOCOL, "step returned %d", rc);
            while (br_raft_has_ready(t.r)) {
                struct br_raft_ready rd;
                cr_assert_eq(br_raft_ready(t.r, &rd), 0);
                if (rd.has_snapshot)
                    br_raft_memstorage_apply_snapshot(t.ms, &rd.snapshot);
                if (rd.n_entries)
                    cr_assert_eq(br_raft_memstorage_append(t.ms, rd.entries, rd.n_entries), 0);
                if (rd.has_hard_state)
                    br_raft_memstorage_set_hard_state(t.ms, &rd.hard_state);
                for (size_t k = 1; k < rd.n_committed; k++)
                    cr_assert_eq(rd.committed[k].index, rd.committed[k - 1].index + 1);
                br_raft_advance(t.r);
            }
            if (i % 7 == 0)
                br_raft_tick(t.r);
        }
        tn_free(&t);
    }
}
