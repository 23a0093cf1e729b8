/*
 * bitraft-lincheck — checks a recorded key-value history for
 * linearizability (the format and the model: lincheck.h, docs/LINCHECK.md).
 *
 *   bitraft-lincheck [--keys] [--max-states N] [--max-seconds S] [--no-shrink] FILE
 *
 * Exit codes: 0 linearizable; 1 not linearizable (the offending key's
 * sub-history, shrunk to a 1-minimal one, is printed); 2 bad usage or bad
 * input (the line is named); 3 inconclusive (the search budget ran out).
 */
#include "lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: bitraft-lincheck [--keys] [--max-states N] [--max-seconds S] [--no-shrink] "
            "HISTORY_FILE\n"
            "Checks a key-value history for linearizability ('-' reads stdin).\n"
            "  --keys           print one line per key (ops, states, verdict)\n"
            "  --max-states N   states a key's search may explore (default %llu)\n"
            "  --max-seconds S  wall-time budget for the check (default none)\n"
            "  --no-shrink      print the whole offending sub-history, not a minimal one\n"
            "Exit: 0 linearizable, 1 violation, 2 bad input, 3 inconclusive.\n",
            (unsigned long long)LC_DEFAULT_MAX_STATES);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const char *verdict_name(lc_verdict v) {
    return v == LC_LINEARIZABLE ? "linearizable"
           : v == LC_VIOLATION  ? "NOT linearizable"
                                : "inconclusive";
}

/* For each read in the witness of a value that no put (but failed ones)
 * wrote, says so, and names the failed put that carried it, if any: the
 * usual sign of a client that misclassified an outcome. */
static void explain_phantoms(const lc_history *h, const lc_report *rep, const size_t *w, size_t m) {
    for (size_t i = 0; i < m; i++) {
        const lc_op *g = &h->ops[w[i]];
        if (g->kind != LC_GET || g->outcome != LC_OK || g->result == NULL)
            continue;
        const lc_op *failed = NULL;
        bool written = false;
        for (size_t j = 0; j < rep->bad_n && !written; j++) {
            const lc_op *p = &h->ops[rep->bad_ops[j]];
            if (p->kind == LC_PUT && strcmp(p->value, g->result) == 0)
                written = true;
        }
        for (size_t j = 0; j < h->n && !written && !failed; j++) {
            const lc_op *p = &h->ops[j];
            if (p->kind == LC_PUT && p->outcome == LC_FAIL && strcmp(p->key, g->key) == 0 &&
                strcmp(p->value, g->result) == 0)
                failed = p;
        }
        if (written)
            continue;
        if (failed)
            printf("\nThe value %s read by op at line %" PRIu32 " was written only by a put "
                   "recorded as failed (line %" PRIu32 "): the put took effect, or the read "
                   "is wrong.\n",
                   g->result, g->line, failed->line);
        else
            printf("\nThe value %s read by op at line %" PRIu32 " was never written to this "
                   "key.\n",
                   g->result, g->line);
    }
}

int main(int argc, char **argv) {
    bool per_key = false, shrink = true;
    lc_limits lim = {.max_states = LC_DEFAULT_MAX_STATES};
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (strcmp(a, "--keys") == 0) {
            per_key = true;
        } else if (strcmp(a, "--no-shrink") == 0) {
            shrink = false;
        } else if (strcmp(a, "--max-states") == 0 && i + 1 < argc) {
            errno = 0;
            lim.max_states = strtoull(argv[++i], &end, 10);
            if (errno || *end || end == argv[i]) {
                fprintf(stderr, "bitraft-lincheck: bad --max-states '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--max-seconds") == 0 && i + 1 < argc) {
            errno = 0;
            lim.max_seconds = strtod(argv[++i], &end);
            if (errno || *end || end == argv[i] || lim.max_seconds < 0) {
                fprintf(stderr, "bitraft-lincheck: bad --max-seconds '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "bitraft-lincheck: unknown flag '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (path == NULL) {
            path = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL) {
        usage(stderr);
        return 2;
    }

    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "bitraft-lincheck: %s: %s\n", path, strerror(errno));
        return 2;
    }
    lc_history h = {0};
    char err[256] = "";
    int rc = lc_history_parse(f, &h, err, sizeof(err));
    if (f != stdin)
        fclose(f);
    if (rc != 0) {
        fprintf(stderr, "bitraft-lincheck: %s: %s\n", path, err);
        lc_history_free(&h);
        return 2;
    }

    double t0 = now_s();
    lc_report rep;
    lc_verdict v = lc_check(&h, &lim, &rep);
    double dt = now_s() - t0;
    size_t clients = 0;
    for (size_t i = 0; i < h.n; i++)
        if (h.ops[i].client + 1 > clients)
            clients = h.ops[i].client + 1;

    if (per_key)
        for (size_t k = 0; k < rep.nkeys; k++)
            printf("key %-24s %8zu ops %12" PRIu64 " states  %s\n", rep.keys[k].key,
                   rep.keys[k].ops, rep.keys[k].states, verdict_name(rep.keys[k].verdict));
    printf("%s: %zu ops (%zu failed or unanswered reads dropped), %zu keys, %zu clients, "
           "%" PRIu64 " states, %.3f s\n",
           verdict_name(v), h.n, rep.ops_dropped, rep.nkeys, clients, rep.states, dt);

    int code = 0;
    if (v == LC_VIOLATION) {
        code = 1;
        printf("\nkey '%s' has no linearization (%zu ops).\n", rep.bad_key, rep.bad_n);
        size_t *min = malloc((rep.bad_n + 1) * sizeof(*min));
        size_t m = 0;
        if (shrink && min != NULL) {
            double s0 = now_s();
            m = lc_shrink(h.ops, rep.bad_ops, rep.bad_n, &lim, min);
            if (m > 0)
                printf("A minimal failing sub-history (%zu ops, shrunk in %.3f s): removing any "
                       "one op makes it linearizable.\n"
                       "Times are ms from the first call; 'line' is the line in %s.\n\n",
                       m, now_s() - s0, path);
        }
        if (m == 0) {
            printf("The whole sub-history of the key (times in ms from its first call):\n\n");
            lc_print_table(stdout, h.ops, rep.bad_ops, rep.bad_n);
        } else {
            lc_print_table(stdout, h.ops, min, m);
            explain_phantoms(&h, &rep, min, m);
        }
        free(min);
    } else if (v == LC_INCONCLUSIVE) {
        code = 3;
        if (rep.bad_key)
            printf("key '%s' (%zu ops) ran out of budget (--max-states %" PRIu64
                   ", --max-seconds %g): too many operations pending at once to decide; record a "
                   "shorter run or more keys.\n",
                   rep.bad_key, rep.bad_n, lim.max_states, lim.max_seconds);
        else
            printf("out of memory\n");
    }
    lc_report_free(&rep);
    lc_history_free(&h);
    return code;
}
