/*
 * lincheck — a linearizability checker for key-value histories.
 *
 * A history is what concurrent clients saw: for every operation, who issued
 * it, what it was, when it was called and when it returned (one monotonic
 * clock for all clients), whether it is known to have happened, and what it
 * returned. The checker answers whether some total order of the operations
 * exists that (a) respects real time — an operation that returned before
 * another was called comes first — and (b) is a legal sequential execution
 * of the model.
 *
 * The model is a map from keys to registers. Each key holds a value or is
 * absent (initially absent). Operations: put(k, v); get(k) -> v | absent;
 * del(k) -> found | absent. Keys are independent, so a history is
 * linearizable iff each key's sub-history is (P-compositionality,
 * Herlihy & Wing 1990); the checker splits per key and checks each alone.
 *
 * Per key it runs the Wing & Gong search with Lowe's improvements (the
 * approach of Knossos and Porcupine): a depth-first search over the list of
 * call and return events in time order, which may linearize any operation
 * whose call precedes the first return of a not yet linearized operation,
 * backtracks when it meets such a return, and remembers every (set of
 * linearized operations, register value) it has visited so that no state is
 * explored twice. A read of the current value is placed at once, with no
 * alternative tried (moving it there never breaks a linearization), which
 * keeps many concurrent reads from multiplying the states.
 *
 * Outcomes. An operation is `ok` (it happened; its result is what the
 * server said), `fail` (it definitely did not happen: dropped before the
 * search) or `unknown` (timeout, reset, 5xx: it may have taken effect at any
 * time after its call, or never). An unknown operation returns at +infinity:
 * it is never forced into the order, and a write linearized after every
 * completed operation is as good as one that never happened. An unknown get
 * observed nothing and is dropped.
 *
 * Limits. The search is exponential in the worst case (the number of
 * operations pending at once on one key is what matters); the memo table
 * keeps typical histories polynomial, and per-key splitting keeps each
 * search small. A budget (states explored, seconds) turns a search that
 * would run too long into an "inconclusive" verdict instead of a hang.
 *
 * ---------------------------------------------------------------------
 * History file format (text, one operation per line; `#` starts a comment
 * line; blank lines are skipped; fields separated by spaces or tabs):
 *
 *   <client> <op> <key> <value|-> <call_ns> <return_ns|-> <outcome> <result|->
 *
 *   client    decimal id of the client (a client runs one operation at a time)
 *   op        put | get | del
 *   key       printable ASCII (0x21..0x7e), no spaces
 *   value     put: the value written (printable, no spaces, not "-");
 *             get, del: "-"
 *   call_ns   decimal nanoseconds (CLOCK_MONOTONIC) when the call started
 *   return_ns decimal nanoseconds when the reply arrived; "-" (or any number,
 *             ignored) when the outcome is unknown; required otherwise, and
 *             >= call_ns
 *   outcome   ok | fail | unknown
 *   result    get: the value read, or "-" for absent;
 *             del: "found" (it removed a value), "absent" (nothing to
 *             remove: a 404), or "-" (not recorded);
 *             put: "-"
 *
 * Example:
 *   0 put k1 c0-1 1000 2000 ok -
 *   1 get k1 - 1500 2600 ok c0-1
 *   2 del k1 - 2700 2900 ok found
 *   1 get k1 - 3000 3100 ok -
 *   0 put k1 c0-2 3200 - unknown -
 *
 * Keys and values are opaque tokens compared bytewise; a client that
 * records values outside this alphabet must encode them (linclient
 * %-encodes every byte outside 0x21..0x7e and '%').
 */
#ifndef BR_LINCHECK_H
#define BR_LINCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Return time of an operation whose outcome is unknown. */
#define LC_INF INT64_MAX

typedef enum { LC_PUT, LC_GET, LC_DEL } lc_kind;

typedef enum { LC_OK, LC_FAIL, LC_UNKNOWN } lc_outcome;

/* What a del reported. */
enum { LC_DEL_UNSEEN = 0, LC_DEL_ABSENT = 1, LC_DEL_FOUND = 2 };

/* One operation. Strings are owned by the history that holds the op. */
typedef struct lc_op {
    uint32_t client;    /* the issuing client */
    lc_kind kind;       /* put, get or del */
    char *key;          /* never NULL */
    char *value;        /* put: the value written; NULL otherwise */
    char *result;       /* get: the value read; NULL = absent (and for put, del) */
    int del_result;     /* del: LC_DEL_UNSEEN, LC_DEL_ABSENT or LC_DEL_FOUND */
    int64_t call_ns;    /* call time */
    int64_t return_ns;  /* return time; LC_INF when the outcome is unknown */
    lc_outcome outcome; /* ok, fail or unknown */
    uint32_t line;      /* line in the file it was parsed from; 0 if none */
} lc_op;

/* A list of operations in any order. Zero-initialize before use. */
typedef struct lc_history {
    lc_op *ops; /* owned */
    size_t n;   /* operations */
    size_t cap; /* allocated */
} lc_history;

/*
 * Appends a copy of *op (strings copied) to h. return_ns is forced to
 * LC_INF when the outcome is unknown. Returns 0, BR_EINVAL when a string is
 * not a valid token (see the format) or a field is inconsistent (message in
 * err when err is not NULL), or BR_ENOMEM; h is unchanged on error.
 */
int lc_history_add(lc_history *h, const lc_op *op, char *err, size_t errlen);

/*
 * Parses a history file (the format above) and appends its operations to h.
 * Returns 0; BR_EINVAL on a malformed line, with "line N: reason" in err;
 * BR_ENOMEM; or a negated errno on a read error. On error, h may hold the
 * operations of the lines before the bad one; free it with
 * lc_history_free().
 */
int lc_history_parse(FILE *f, lc_history *h, char *err, size_t errlen);

/* As lc_history_parse(), from a NUL-terminated string. */
int lc_history_parse_str(const char *text, lc_history *h, char *err, size_t errlen);

/* Frees the operations and their strings; leaves h empty and reusable. */
void lc_history_free(lc_history *h);

/* Writes one operation as a line of the history format (with "\n"). */
void lc_op_write(FILE *f, const lc_op *op);

/* Bounds on one search; 0 means no bound. */
typedef struct lc_limits {
    uint64_t max_states; /* states explored per key */
    double max_seconds;  /* wall time for the whole check */
} lc_limits;

/* Default budget: 20 million states per key, no time limit. */
#define LC_DEFAULT_MAX_STATES 20000000ULL

typedef enum {
    LC_LINEARIZABLE = 0, /* a linearization exists */
    LC_VIOLATION = 1,    /* no linearization exists */
    LC_INCONCLUSIVE = 3  /* the budget ran out first */
} lc_verdict;

/* Figures for one key. */
typedef struct lc_key_report {
    const char *key;    /* borrowed from the history */
    size_t ops;         /* operations checked (after dropping failed ones) */
    uint64_t states;    /* search states explored */
    lc_verdict verdict; /* for this key */
} lc_key_report;

/* What lc_check() found. Free with lc_report_free(). */
typedef struct lc_report {
    lc_verdict verdict;  /* violation if any key has one, else inconclusive
                            if any key ran out of budget, else linearizable */
    const char *bad_key; /* the first key with a violation (or inconclusive
                            when none has a violation); borrowed; NULL if none */
    size_t *bad_ops;     /* indexes into the history of that key's ops; owned */
    size_t bad_n;        /* count of bad_ops */
    lc_key_report *keys; /* per key, in order of first appearance; owned */
    size_t nkeys;        /* count of keys */
    uint64_t states;     /* total states explored */
    size_t ops_dropped;  /* failed ops and unknown gets, not searched */
} lc_report;

/*
 * Checks a whole history, key by key. Fills *rep (which the caller frees
 * with lc_report_free()) and returns its verdict. lim may be NULL (default
 * budget). On allocation failure returns LC_INCONCLUSIVE with rep->nkeys 0.
 */
lc_verdict lc_check(const lc_history *h, const lc_limits *lim, lc_report *rep);

/* Frees what lc_check() allocated in rep. */
void lc_report_free(lc_report *rep);

/*
 * Checks the operations ops[idx[0..n-1]] as one key's history (their keys
 * are not compared: the caller picked them). states, when not NULL, gets
 * the number of states explored. Returns the verdict.
 */
lc_verdict lc_check_ops(const lc_op *ops, const size_t *idx, size_t n, const lc_limits *lim,
                        uint64_t *states);

/*
 * As lc_check_ops(), but the ops idx[n_kept..n-1] are taken as unknown
 * (failed ones stay failed): they may have happened at any time after
 * their call, or never. This is how the shrinker checks that what it keeps
 * violates whatever the ops it dropped did.
 */
lc_verdict lc_check_mixed(const lc_op *ops, const size_t *idx, size_t n, size_t n_kept,
                          const lc_limits *lim, uint64_t *states);

/*
 * Shrinks a violating single-key history ops[idx[0..n-1]] to a small
 * witness. Failed ops and unknown gets are left out first; then the window
 * around the violation is found by binary search (shortest violating
 * prefix, then suffix), then chunks of ops (halving sizes) and single ops
 * are dropped, as long as what is kept still violates when every dropped
 * op is taken as unknown (lc_check_mixed). So the result is a faithful
 * witness: the kept ops violate whatever the dropped ops did (and on their
 * own). A put whose value a kept get read is never dropped while the get
 * stays (each read shown has its write). It is 1-minimal in that sense:
 * dropping any one more op that is not such a put makes it linearizable —
 * unless the shrink's own budget (500,000 states per check, 20 s in all,
 * or less if lim says so) ran out, in which case it may be larger.
 *
 * Writes the chosen indexes (a subset of idx, in call order) to out (room
 * for n entries) and returns their count. Returns 0 if the input is not a
 * violation. A search that runs out of budget counts as "not a violation",
 * so the result is always a proven violation.
 */
size_t lc_shrink(const lc_op *ops, const size_t *idx, size_t n, const lc_limits *lim, size_t *out);

/*
 * Prints ops[idx[0..n-1]] as a table, in call order, times relative to the
 * earliest call, with a timeline bar per operation when n is small.
 */
void lc_print_table(FILE *f, const lc_op *ops, const size_t *idx, size_t n);

#endif /* BR_LINCHECK_H */
