/*
 * sim.h - a simulated cluster of raft cores for tests.
 *
 * Nodes 1..n run br_raft over br_raft_memstorage. Every message goes
 * through the codec (encoded at the sender, decoded at delivery) and a
 * simulated network that can delay, drop, duplicate, reorder, corrupt and
 * cut links. A node can crash (its core and everything not persisted are
 * lost; storage, hard state and the persisted state machine survive) and
 * restart.
 *
 * After every Ready a node handles, a checker verifies the safety
 * properties of the Raft paper (Figure 3.2): election safety, leader
 * append-only, log matching, leader completeness and state machine safety,
 * plus that every ReadIndex answer is at least the commit index known when
 * the read was asked. The first violation is kept in sim_error().
 *
 * Two ways to drive it: by hand (scenario tests: tick, deliver, cut,
 * crash), or sim_run_schedule(), which plays one random fault schedule
 * from a seed and then checks liveness.
 */
#ifndef BR_SIM_H
#define BR_SIM_H

#include "bitraft/raft.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_NODES 7

struct sim_config {
    int n;          /* nodes 1..n, all voters of the bootstrap configuration */
    int n_learners; /* the last n_learners of them start as learners */
    bool pre_vote;
    bool check_quorum;
    uint32_t election_tick;  /* default 10 */
    uint32_t heartbeat_tick; /* default 1 */
    uint32_t max_inflight;   /* default 0 (core default) */
    uint64_t max_msg_bytes;  /* default 0 (core default) */
    uint64_t seed;
    bool trace; /* print events and core logs to stderr */
};

struct sim;

struct sim *sim_new(const struct sim_config *cfg);
void sim_free(struct sim *s);

/* The first invariant violation, or NULL. */
const char *sim_error(const struct sim *s);

br_raft *sim_raft(struct sim *s, int id); /* NULL if the node is down */
void sim_status(struct sim *s, int id, struct br_raft_status *st);

/* Manual driving. Messages wait in the network until delivered. */
void sim_tick(struct sim *s, int id);
void sim_tick_all(struct sim *s, int times); /* ticks every up node, delivering in between */
void sim_campaign(struct sim *s, int id);
size_t sim_pending(const struct sim *s);
/* Delivers pending messages (and those they cause) until none is left or
 * max deliveries happened; returns how many were delivered. */
size_t sim_deliver_all(struct sim *s, size_t max);
/* Drops every pending message for which filter returns true. */
size_t sim_drop_if(struct sim *s, bool (*filter)(const struct br_raft_msg *m, void *arg),
                   void *arg);
void sim_cut(struct sim *s, int from, int to); /* one direction */
void sim_isolate(struct sim *s, int id);
void sim_heal(struct sim *s);
void sim_crash(struct sim *s, int id);
void sim_restart(struct sim *s, int id);
/* Makes node `id` create a snapshot at its applied index and compact its
 * log up to it. */
void sim_compact(struct sim *s, int id);
/* Adds a node that is in no configuration yet (empty storage); returns its
 * id or -1. */
int sim_add_node(struct sim *s);

/* Proposes a unique command through node id; returns 0 or the core's
 * error, *index its index on success. */
int sim_propose(struct sim *s, int id, uint64_t *index);
/* The leader among up nodes with the highest term, or 0. */
int sim_leader(struct sim *s);
/* Applied index and state-machine hash of a node's persisted state. */
uint64_t sim_applied(struct sim *s, int id);
uint64_t sim_sm_hash(struct sim *s, int id);
/* Read states a node has released so far (ctx values), newest last. */
size_t sim_reads_done(struct sim *s, int id);
uint64_t sim_last_read_index(struct sim *s, int id);
/* Messages of a type delivered so far (for assertions). */
uint64_t sim_delivered(const struct sim *s, uint32_t type);

/* Totals over every cluster this process ran (to show what was exercised). */
struct sim_stats {
    uint64_t messages, snapshots, applied, conf_changes, elections, reads, reads_refused, crashes;
};
void sim_stats_get(struct sim_stats *out);

/*
 * Plays one random schedule from seed: a random cluster (1-7 nodes,
 * pre-vote/check-quorum on or off, small windows and messages), a phase
 * of faults (delay, loss, duplication, reordering, corruption, partitions
 * full/asymmetric/leader-isolated, crashes and restarts, clock skew,
 * proposals, reads, transfers, compaction), then a quiet phase that must
 * elect a leader and commit new proposals within bounded ticks. Returns
 * 0, or -1 with a message in err.
 */
int sim_run_schedule(uint64_t seed, bool trace, char *err, size_t errlen);

#endif
