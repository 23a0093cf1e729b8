/*
 * workload.h - the engine benchmark workload, shared by bitraft-bench and the
 * reference-engine benchmark so that both run exactly the same operations.
 *
 * N records; record i has key = the 16-digit zero-padded decimal of perm[i],
 * perm a permutation of 0..N-1 shuffled by a seeded PRNG, and a 100-byte
 * value derived from the key (so reads can verify what they got).
 */
#ifndef BR_BENCH_WORKLOAD_H
#define BR_BENCH_WORKLOAD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WL_KEY_LEN   16
#define WL_VALUE_LEN 100

/* splitmix64: a small, fast, seedable PRNG (the state is the caller's). */
static inline uint64_t wl_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Returns a malloc'd Fisher-Yates shuffle of 0..n-1. */
static inline uint64_t *wl_perm(uint64_t n, uint64_t seed) {
    uint64_t *p = malloc(n * sizeof *p);
    if (!p)
        abort();
    for (uint64_t i = 0; i < n; i++)
        p[i] = i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = wl_rand(&seed) % i;
        uint64_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
    return p;
}

/* Writes the 16-digit key for number k into out (no terminator). */
static inline void wl_key(uint64_t k, char out[WL_KEY_LEN]) {
    for (int i = WL_KEY_LEN - 1; i >= 0; i--) {
        out[i] = (char)('0' + k % 10);
        k /= 10;
    }
}

/* Writes the 100-byte value for number k: pseudo-random bytes seeded by k,
 * so values neither compress (LevelDB and RocksDB compress by default) nor
 * repeat, and a read can still verify what it got. */
static inline void wl_value(uint64_t k, char out[WL_VALUE_LEN]) {
    uint64_t st = k * 0x2545f4914f6cdd1dULL + 1;
    for (int i = 0; i < WL_VALUE_LEN; i += 8) {
        uint64_t r = wl_rand(&st);
        int n = WL_VALUE_LEN - i < 8 ? WL_VALUE_LEN - i : 8;
        memcpy(out + i, &r, (size_t)n);
    }
}

static inline double wl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resident set size of this process in bytes (from /proc/self/statm). */
static inline uint64_t wl_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * 4096u;
}

/* Peak resident set size in bytes (VmHWM). */
static inline uint64_t wl_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %lu kB", (unsigned long *)&kb) == 1)
                break;
        fclose(f);
    }
    return kb * 1024u;
}

/* Anonymous resident memory in bytes (RssAnon): the heap, without the
 * pages of mapped files, which RSS also counts. */
static inline uint64_t wl_rss_anon(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "RssAnon: %lu kB", (unsigned long *)&kb) == 1)
                break;
        fclose(f);
    }
    return kb * 1024u;
}

/* Prints one phase result as a JSON line. */
static inline void wl_report(const char *engine, const char *phase, uint64_t ops, double seconds) {
    printf("{\"engine\":\"%s\",\"phase\":\"%s\",\"ops\":%llu,\"seconds\":%.4f,"
           "\"ops_per_s\":%.0f}\n",
           engine, phase, (unsigned long long)ops, seconds, seconds > 0 ? ops / seconds : 0.0);
    fflush(stdout);
}

#endif
