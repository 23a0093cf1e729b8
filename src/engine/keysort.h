/*
 * keysort.h - sorting many records by key, as open (recover.c) and the hint
 * writer (hint.c) do: an LSD radix sort, 16 bits a pass, on the 8 key bytes
 * after the prefix all keys share (so keys that all begin alike, "user:" or
 * "0000...", still spread), passes whose digit is the same for every record
 * skipped; then a comparison sort of each run of equal heads (keys longer
 * than prefix + 8 bytes, or a key and its zero-padded extension). The radix
 * passes are stable, so records of equal keys keep their input order
 * unless the comparison sort of their run reorders them.
 *
 * BR_KEYSORT_DEFINE(name, type, KEY, KLEN, cmp) defines
 *
 *   static int name(type **v, size_t n)
 *
 * for a type with a `uint64_t head` member, which it fills. KEY(x) and
 * KLEN(x) give the key bytes and length of record x (an lvalue of type);
 * cmp is a qsort comparator giving the full order. Returns 0 with *v
 * pointing at the sorted records (the array may have been replaced: the
 * other one is freed), or BR_ENOMEM with *v unchanged and unsorted.
 */
#ifndef BR_ENGINE_KEYSORT_H
#define BR_ENGINE_KEYSORT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/error.h"

#define BR_KEYSORT_DEFINE(name, type, KEY, KLEN, cmp)                                              \
    static int name(type **vp, size_t n) {                                                         \
        type *v = *vp;                                                                             \
        if (n < 2)                                                                                 \
            return 0;                                                                              \
        size_t p = KLEN(v[0]) < 64 ? KLEN(v[0]) : 64;                                              \
        for (size_t i = 1; i < n && p; i++) {                                                      \
            size_t l = KLEN(v[i]), j = 0, m = l < p ? l : p;                                       \
            while (j < m && KEY(v[i])[j] == KEY(v[0])[j])                                          \
                j++;                                                                               \
            p = j;                                                                                 \
        }                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            size_t l = KLEN(v[i]);                                                                 \
            uint64_t h = 0;                                                                        \
            for (size_t j = p; j < p + 8; j++)                                                     \
                h = (h << 8) | (j < l ? KEY(v[i])[j] : 0);                                         \
            v[i].head = h;                                                                         \
        }                                                                                          \
        type *tmp = malloc(n * sizeof *tmp);                                                       \
        size_t *cnt = malloc(65536 * sizeof *cnt);                                                 \
        if (!tmp || !cnt) {                                                                        \
            free(tmp);                                                                             \
            free(cnt);                                                                             \
            return BR_ENOMEM;                                                                      \
        }                                                                                          \
        for (int shift = 0; shift < 64; shift += 16) {                                             \
            memset(cnt, 0, 65536 * sizeof *cnt);                                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                cnt[(v[i].head >> shift) & 0xffff]++;                                              \
            if (cnt[(v[0].head >> shift) & 0xffff] == n)                                           \
                continue;                                                                          \
            size_t sum = 0;                                                                        \
            for (size_t d = 0; d < 65536; d++) {                                                   \
                size_t c = cnt[d];                                                                 \
                cnt[d] = sum;                                                                      \
                sum += c;                                                                          \
            }                                                                                      \
            for (size_t i = 0; i < n; i++)                                                         \
                tmp[cnt[(v[i].head >> shift) & 0xffff]++] = v[i];                                  \
            type *t = v;                                                                           \
            v = tmp;                                                                               \
            tmp = t;                                                                               \
        }                                                                                          \
        free(cnt);                                                                                 \
        free(tmp);                                                                                 \
        for (size_t i = 0; i < n;) {                                                               \
            size_t j = i + 1;                                                                      \
            while (j < n && v[j].head == v[i].head)                                                \
                j++;                                                                               \
            if (j - i > 1)                                                                         \
                qsort(v + i, j - i, sizeof *v, cmp);                                               \
            i = j;                                                                                 \
        }                                                                                          \
        *vp = v;                                                                                   \
        return 0;                                                                                  \
    }

#endif
