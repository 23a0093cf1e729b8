/*
 * keydir.c - the in-memory key index, a B+tree of prefix-compressed slotted
 * pages (contract in keydir.h).
 *
 * Node layout (KD_NODE_SIZE bytes):
 *
 *   header | prefix (plen bytes) | slots (n x 6 bytes) -> free <- heap entries
 *
 * Slot i holds the offset in data[] of the i-th entry in key order and the
 * first four bytes of its suffix. Entries
 * grow down from the end of data[]:
 *
 *   u16 slen     suffix length, or KD_OOL for an out-of-line key
 *   payload      leaf: br_loc (12 bytes); internal: child pointer (8 bytes)
 *   suffix       slen bytes: the key minus the node prefix, or, for an
 *                out-of-line key, a pointer to a block {u32 klen, key bytes}
 *
 * An internal node with n entries has n + 1 children: child0 in the header
 * for keys below entry 0, and entry i's child for keys >= entry i's key.
 * Leaves are at level 0; the root is at level kd->height.
 *
 * Deleting an entry leaves a hole in the heap (counted in `dead`); a node is
 * rewritten when it needs the room. Every structural change (a new prefix,
 * a split) goes through one path: materialize the node's entries as whole
 * keys, add the new one, and write them back into as many nodes as they
 * need (kd_repack). Separators are inserted into the parent by descending
 * from the root again, which keeps the code free of parent pointers.
 */
#include "engine/keydir.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/error.h"

#define KD_NODE_SIZE   4096
#define KD_HDR_SIZE    32
#define KD_DATA        (KD_NODE_SIZE - KD_HDR_SIZE)
#define KD_OOL         0xFFFFu
#define KD_OOL_MIN     192 /* keys this long or longer are stored out of line */
#define KD_PREFIX_MAX  255
#define KD_MAX_ENTRIES (KD_DATA / 12 + 2)
#define KD_MAX_LEVELS  32
#define KD_LOC_SIZE    12
#define KD_PTR_SIZE    8

typedef struct kd_node {
    uint16_t n;    /* entries */
    uint16_t plen; /* prefix length */
    uint16_t heap; /* offset in data[] where the heap starts */
    uint16_t dead; /* bytes of deleted entries inside the heap */
    uint8_t leaf;
    uint8_t pad_[7];
    struct kd_node *a; /* leaf: previous leaf; internal: child0 */
    struct kd_node *b; /* leaf: next leaf; internal: unused */
    uint8_t data[KD_DATA];
} kd_node;

_Static_assert(sizeof(kd_node) == KD_NODE_SIZE, "node header size");

/* A whole key with its payload, as kd_repack handles it. */
typedef struct kd_item {
    const uint8_t *key;
    uint32_t klen;
    uint8_t pay[KD_LOC_SIZE];
    uint8_t *ool; /* out-of-line block owned by this entry, or NULL */
} kd_item;

struct br_keydir {
    kd_node *root;
    kd_node *tail; /* a leaf at or before the rightmost one, or NULL: lets
                      keys arriving in order skip the descent */
    int height;
    size_t count;
    size_t mem;
    size_t key_bytes;
    /* Scratch for kd_repack (writers only). */
    kd_item items[KD_MAX_ENTRIES + 1];
    uint8_t keybuf[(KD_MAX_ENTRIES + 1) * (KD_PREFIX_MAX + KD_OOL_MIN)];
};

/* ---- Entry access -------------------------------------------------------- */

static inline size_t pay_size(const kd_node *nd) {
    return nd->leaf ? KD_LOC_SIZE : KD_PTR_SIZE;
}

/* A slot: the entry's offset, and the first four bytes of its suffix
 * (big-endian, zero-padded) so that a binary search mostly compares slots
 * and touches few cache lines. */
#define KD_SLOT 6

static inline uint16_t slot(const kd_node *nd, int i) {
    uint16_t s;
    memcpy(&s, nd->data + nd->plen + KD_SLOT * i, 2);
    return s;
}

static inline uint32_t slot_head(const kd_node *nd, int i) {
    uint32_t h;
    memcpy(&h, nd->data + nd->plen + KD_SLOT * i + 2, 4);
    return h;
}

static inline uint32_t head_of(const uint8_t *s, size_t len) {
    uint32_t h = 0;
    for (size_t i = 0; i < 4; i++)
        h = (h << 8) | (i < len ? s[i] : 0);
    return h;
}

static inline uint8_t *entry(kd_node *nd, int i) {
    return nd->data + slot(nd, i);
}

static inline const uint8_t *centry(const kd_node *nd, int i) {
    return nd->data + slot(nd, i);
}

static inline uint16_t e_slen(const uint8_t *e) {
    uint16_t v;
    memcpy(&v, e, 2);
    return v;
}

static inline uint8_t *e_ool(const uint8_t *e, size_t pay) {
    uint8_t *p;
    memcpy(&p, e + 2 + pay, sizeof p);
    return p;
}

static inline uint32_t ool_klen(const uint8_t *blk) {
    uint32_t v;
    memcpy(&v, blk, 4);
    return v;
}

static inline size_t e_size(const uint8_t *e, size_t pay) {
    uint16_t s = e_slen(e);
    return 2 + pay + (s == KD_OOL ? KD_PTR_SIZE : s);
}

/* The suffix (key minus node prefix) of entry i. */
static inline void suffix(const kd_node *nd, int i, const uint8_t **p, size_t *len) {
    const uint8_t *e = centry(nd, i);
    uint16_t s = e_slen(e);
    size_t pay = pay_size(nd);
    if (s == KD_OOL) {
        const uint8_t *blk = e_ool(e, pay);
        *p = blk + 4 + nd->plen;
        *len = ool_klen(blk) - nd->plen;
    } else {
        *p = e + 2 + pay;
        *len = s;
    }
}

static inline kd_node *e_child(const uint8_t *e) {
    kd_node *c;
    memcpy(&c, e + 2, sizeof c);
    return c;
}

static inline int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    size_t m = al < bl ? al : bl;
    if (m <= 8) { /* short suffixes are the common case: no call */
        for (size_t i = 0; i < m; i++)
            if (a[i] != b[i])
                return a[i] < b[i] ? -1 : 1;
    } else {
        int c = memcmp(a, b, m);
        if (c)
            return c;
    }
    return al < bl ? -1 : al > bl;
}

static inline size_t node_free(const kd_node *nd) {
    return nd->heap - nd->plen - (size_t)KD_SLOT * nd->n;
}

/*
 * Lower bound: the first entry >= key. *eq says whether it equals key;
 * *in_prefix whether key starts with the node's prefix (a plain insert is
 * possible only then).
 */
static int lower_bound(const kd_node *nd, const uint8_t *key, size_t klen, int *eq,
                       int *in_prefix) {
    *eq = 0;
    *in_prefix = 0;
    size_t plen = nd->plen;
    if (plen) {
        size_t m = klen < plen ? klen : plen;
        int c = memcmp(key, nd->data, m);
        if (c < 0 || (c == 0 && klen < plen))
            return 0;
        if (c > 0)
            return nd->n;
    }
    *in_prefix = 1;
    const uint8_t *s = key + plen;
    size_t sl = klen - plen;
    uint32_t sh = head_of(s, sl);
    int lo = 0, hi = nd->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        uint32_t h = slot_head(nd, mid);
        int c;
        if (h != sh) {
            c = h < sh ? -1 : 1;
        } else {
            const uint8_t *p;
            size_t len;
            suffix(nd, mid, &p, &len);
            c = cmp_bytes(p, len, s, sl);
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < nd->n) {
        const uint8_t *p;
        size_t len;
        suffix(nd, lo, &p, &len);
        *eq = cmp_bytes(p, len, s, sl) == 0;
    }
    return lo;
}

/* Index (0..n) of the child of internal node nd that covers key. */
static int child_index(const kd_node *nd, const uint8_t *key, size_t klen) {
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    return i + eq;
}

static kd_node *child_at(const kd_node *nd, int ci) {
    return ci == 0 ? nd->a : e_child(centry(nd, ci - 1));
}

/* Descends from the root to the node at `level` whose range covers key.
 * *rightmost (if not NULL) says whether that node is the last of its level. */
static kd_node *descend_rm(const br_keydir *kd, const uint8_t *key, size_t klen, int level,
                           bool *rightmost) {
    kd_node *nd = kd->root;
    bool rm = true;
    for (int l = kd->height; l > level; l--) {
        int ci = child_index(nd, key, klen);
        rm = rm && ci == nd->n;
        nd = child_at(nd, ci);
    }
    if (rightmost)
        *rightmost = rm;
    return nd;
}

static kd_node *descend(const br_keydir *kd, const uint8_t *key, size_t klen, int level) {
    return descend_rm(kd, key, klen, level, NULL);
}

/* ---- Node writing --------------------------------------------------------- */

/* The index cannot stay consistent through a failed allocation in the
 * middle of a split, and the data it indexes is safe on disk: like Redis,
 * bitraft treats running out of memory here as fatal. */
static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static kd_node *node_new(br_keydir *kd, int leaf) {
    kd_node *nd = xmalloc(sizeof *nd);
    memset(nd, 0, KD_HDR_SIZE);
    nd->leaf = (uint8_t)leaf;
    nd->heap = KD_DATA;
    kd->mem += sizeof *nd;
    return nd;
}

static void node_free_mem(br_keydir *kd, kd_node *nd) {
    if (kd->tail == nd)
        kd->tail = NULL;
    kd->mem -= sizeof *nd;
    free(nd);
}

static size_t lcp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    size_t m = al < bl ? al : bl, i = 0;
    if (m > KD_PREFIX_MAX)
        m = KD_PREFIX_MAX;
    while (i < m && a[i] == b[i])
        i++;
    return i;
}

/* Bytes an item takes in a node with prefix plen (slot included). */
static inline size_t item_size(const kd_item *it, size_t plen, size_t pay) {
    return KD_SLOT + 2 + pay + (it->ool ? KD_PTR_SIZE : it->klen - plen);
}

/* Places an item as entry i of nd (slots i..n-1 move up one). nd must have
 * room and the item's key must start with nd's prefix. */
static void place(kd_node *nd, int i, const kd_item *it) {
    size_t pay = pay_size(nd);
    size_t esz = item_size(it, nd->plen, pay) - KD_SLOT;
    nd->heap = (uint16_t)(nd->heap - esz);
    uint8_t *e = nd->data + nd->heap;
    uint16_t sl = it->ool ? (uint16_t)KD_OOL : (uint16_t)(it->klen - nd->plen);
    memcpy(e, &sl, 2);
    memcpy(e + 2, it->pay, pay);
    if (it->ool)
        memcpy(e + 2 + pay, &it->ool, sizeof it->ool);
    else
        memcpy(e + 2 + pay, it->key + nd->plen, sl);
    uint8_t *slots = nd->data + nd->plen;
    memmove(slots + KD_SLOT * (i + 1), slots + KD_SLOT * i, (size_t)KD_SLOT * (nd->n - i));
    uint16_t off = nd->heap;
    uint32_t h = head_of(it->key + nd->plen, it->klen - nd->plen);
    memcpy(slots + KD_SLOT * i, &off, 2);
    memcpy(slots + KD_SLOT * i + 2, &h, 4);
    nd->n++;
}

/* Writes items[a..b) into nd from scratch with the prefix they share. */
static void write_node(kd_node *nd, const kd_item *items, int a, int b) {
    nd->n = 0;
    nd->dead = 0;
    nd->heap = KD_DATA;
    nd->plen = 0;
    if (b > a) {
        const kd_item *f = &items[a], *l = &items[b - 1];
        nd->plen = (uint16_t)lcp(f->key, f->klen, l->key, l->klen);
        memcpy(nd->data, f->key, nd->plen);
    }
    for (int i = a; i < b; i++)
        place(nd, i - a, &items[i]);
}

/* Copies nd's entries into kd->items as whole keys, leaving a gap at index
 * `gap` (or none when gap < 0). Returns the number of items (gap counted). */
static int materialize(br_keydir *kd, const kd_node *nd, int gap) {
    size_t pay = pay_size(nd);
    uint8_t *kb = kd->keybuf;
    int k = 0;
    for (int i = 0; i < nd->n; i++) {
        if (k == gap)
            k++;
        kd_item *it = &kd->items[k++];
        const uint8_t *e = centry(nd, i);
        memset(it->pay, 0, sizeof it->pay);
        memcpy(it->pay, e + 2, pay);
        uint16_t s = e_slen(e);
        if (s == KD_OOL) {
            it->ool = e_ool(e, pay);
            it->key = it->ool + 4;
            it->klen = ool_klen(it->ool);
        } else {
            it->ool = NULL;
            memcpy(kb, nd->data, nd->plen);
            memcpy(kb + nd->plen, e + 2 + pay, s);
            it->key = kb;
            it->klen = (uint32_t)(nd->plen + s);
            kb += it->klen;
        }
    }
    if (k == gap)
        k++;
    return k;
}

/*
 * Splits items[0..cnt) (sorted) over nd and as many new nodes as they need.
 * Returns the number of nodes k (>= 1) and the nodes in out[0..k), out[0] ==
 * nd; starts[j] is the index of the first item of node j. For internal
 * nodes, item starts[j] (j >= 1) is not stored: its child becomes node j's
 * child0 and its key the separator the caller pushes up.
 */
#define KD_MAX_SPLIT 24
static int repack(br_keydir *kd, kd_node *nd, int cnt, bool append, kd_node **out, int *starts) {
    kd_item *items = kd->items;
    size_t pay = pay_size(nd);
    size_t p = lcp(items[0].key, items[0].klen, items[cnt - 1].key, items[cnt - 1].klen);
    size_t total = p;
    for (int i = 0; i < cnt; i++)
        total += item_size(&items[i], p, pay);
    int k = 1;
    starts[0] = 0;
    if (total > KD_DATA && append) {
        /* Appending past the last key of the rightmost node: keep the old
         * node full and start a new one, so that keys inserted in order
         * (a bulk load, a counter) fill their nodes instead of half. */
        starts[k++] = cnt - 1;
    } else if (total > KD_DATA) {
        /* Greedy cut into k nearly equal parts, each within a node. */
        size_t room = KD_DATA - KD_PREFIX_MAX;
        int parts = (int)((total + room - 1) / room);
        if (parts < 2)
            parts = 2;
        size_t target = total / parts + 1, acc = 0, in_node = p;
        for (int i = 0; i < cnt; i++) {
            size_t sz = item_size(&items[i], p, pay);
            int last_node_full = in_node + sz > KD_DATA;
            if (i > 0 && (acc + sz > target * k || last_node_full) && k < KD_MAX_SPLIT) {
                starts[k++] = i;
                in_node = p;
            }
            acc += sz;
            in_node += sz;
        }
        assert(in_node <= KD_DATA);
    }
    out[0] = nd;
    for (int j = 1; j < k; j++)
        out[j] = node_new(kd, nd->leaf);
    for (int j = 0; j < k; j++) {
        int a = starts[j], b = j + 1 < k ? starts[j + 1] : cnt;
        if (!nd->leaf && j > 0) {
            memcpy(&out[j]->a, items[a].pay, sizeof(kd_node *));
            a++;
        }
        write_node(out[j], items, a, b);
    }
    if (nd->leaf) {
        kd_node *next = nd->b;
        for (int j = 1; j < k; j++) {
            out[j]->a = out[j - 1];
            out[j - 1]->b = out[j];
        }
        out[k - 1]->b = next;
        if (next)
            next->a = out[k - 1];
    }
    return k;
}

/* Makes an item for key (allocating its out-of-line block if it needs one). */
static void make_item(br_keydir *kd, kd_item *it, const uint8_t *key, size_t klen, const void *pay,
                      size_t paylen) {
    it->key = key;
    it->klen = (uint32_t)klen;
    memset(it->pay, 0, sizeof it->pay);
    memcpy(it->pay, pay, paylen);
    it->ool = NULL;
    if (klen >= KD_OOL_MIN) {
        it->ool = xmalloc(4 + klen);
        uint32_t l = (uint32_t)klen;
        memcpy(it->ool, &l, 4);
        memcpy(it->ool + 4, key, klen);
        it->key = it->ool + 4;
        kd->mem += 4 + klen;
    }
}

static void free_ool(br_keydir *kd, uint8_t *blk) {
    if (blk) {
        kd->mem -= 4 + ool_klen(blk);
        free(blk);
    }
}

static void insert_sep(br_keydir *kd, int level, const uint8_t *key, size_t klen, kd_node *child);

/* Whether `it`, going after every key of nd, fits in nd, counting the
 * prefix nd would have to shorten to (an upper bound: every entry is
 * assumed to lengthen). */
static bool append_fits(const kd_node *nd, const kd_item *it) {
    size_t plen = nd->plen, np = 0;
    while (np < plen && np < it->klen && it->key[np] == nd->data[np])
        np++;
    size_t entries = KD_DATA - nd->heap - nd->dead;
    size_t total = np + (size_t)KD_SLOT * nd->n + entries + (size_t)nd->n * (plen - np) +
                   item_size(it, np, pay_size(nd));
    return total <= KD_DATA;
}

/* Starts a new rightmost node at `level` holding just `it` (a leaf), or
 * with it.child as child0 (an internal node: its key goes up), leaving nd
 * as full as it is. Keys inserted in order thus fill their nodes without
 * the rewrite a split does. */
static void append_node(br_keydir *kd, kd_node *nd, int level, const kd_item *it) {
    kd_node *nn = node_new(kd, nd->leaf);
    if (nd->leaf) {
        write_node(nn, it, 0, 1);
        nn->a = nd;
        nd->b = nn;
    } else {
        memcpy(&nn->a, it->pay, sizeof(kd_node *));
    }
    uint8_t *key = xmalloc(it->klen);
    memcpy(key, it->key, it->klen);
    if (!nd->leaf)
        free_ool(kd, it->ool); /* the pushed-up key leaves this level */
    insert_sep(kd, level + 1, key, it->klen, nn);
    free(key);
}

/* Inserts `it` as entry i of nd at `level`, splitting as needed and pushing
 * separators up. */
static void insert_item(br_keydir *kd, kd_node *nd, int level, int i, int in_prefix, bool rightmost,
                        const kd_item *it) {
    size_t need = item_size(it, nd->plen, pay_size(nd));
    if (in_prefix && need <= node_free(nd)) {
        place(nd, i, it);
        return;
    }
    if (rightmost && i == nd->n && nd->n > 0 && !append_fits(nd, it)) {
        append_node(kd, nd, level, it);
        return;
    }
    int cnt = materialize(kd, nd, i);
    kd->items[i] = *it;
    kd_node *out[KD_MAX_SPLIT];
    int starts[KD_MAX_SPLIT];
    /* The new item goes after every key of the rightmost node of its level. */
    bool append = i == cnt - 1 && cnt > 1 && rightmost;
    int k = repack(kd, nd, cnt, append, out, starts);
    if (k == 1)
        return;
    /* Copy the separators out first: the recursive inserts reuse kd->items
     * and kd->keybuf. An internal node's pushed-up entry leaves its level,
     * so its out-of-line block goes. */
    uint8_t *sep[KD_MAX_SPLIT];
    size_t sepl[KD_MAX_SPLIT];
    for (int j = 1; j < k; j++) {
        const kd_item *s = &kd->items[starts[j]];
        sepl[j] = s->klen;
        sep[j] = xmalloc(s->klen);
        memcpy(sep[j], s->key, s->klen);
        if (!nd->leaf)
            free_ool(kd, s->ool);
    }
    for (int j = 1; j < k; j++) {
        insert_sep(kd, level + 1, sep[j], sepl[j], out[j]);
        free(sep[j]);
    }
}

/* Inserts separator key -> child into the internal level `level`. */
static void insert_sep(br_keydir *kd, int level, const uint8_t *key, size_t klen, kd_node *child) {
    kd_item it;
    make_item(kd, &it, key, klen, &child, sizeof child);
    if (level > kd->height) {
        kd_node *root = node_new(kd, 0);
        root->a = kd->root;
        write_node(root, &it, 0, 1);
        kd->root = root;
        kd->height++;
        return;
    }
    bool rm;
    kd_node *nd = descend_rm(kd, key, klen, level, &rm);
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    assert(!eq);
    insert_item(kd, nd, level, i, inp, rm, &it);
}

/* ---- Removal -------------------------------------------------------------- */

/* Removes entry i of nd (freeing its out-of-line block). */
static void remove_entry(br_keydir *kd, kd_node *nd, int i) {
    size_t pay = pay_size(nd);
    uint8_t *e = entry(nd, i);
    if (e_slen(e) == KD_OOL)
        free_ool(kd, e_ool(e, pay));
    nd->dead = (uint16_t)(nd->dead + e_size(e, pay));
    uint8_t *slots = nd->data + nd->plen;
    memmove(slots + KD_SLOT * i, slots + KD_SLOT * (i + 1), (size_t)KD_SLOT * (nd->n - i - 1));
    nd->n--;
    if (nd->n == 0) {
        nd->heap = KD_DATA;
        nd->dead = 0;
    }
}

/* Removes nd, the node at `level` that covers key and has just become
 * empty (a leaf with no entries, or an internal node with no children), from
 * its parent and frees it. Parents left without children go in turn. */
static void remove_node(br_keydir *kd, int level, const uint8_t *key, size_t klen, kd_node *nd) {
    if (level == kd->height) {
        if (!nd->leaf) { /* the whole tree is empty again */
            node_free_mem(kd, nd);
            kd->root = node_new(kd, 1);
            kd->height = 0;
        }
        return;
    }
    kd_node *parent = descend(kd, key, klen, level + 1);
    int ci = child_index(parent, key, klen);
    assert(child_at(parent, ci) == nd);
    if (nd->leaf) {
        if (nd->a)
            nd->a->b = nd->b;
        if (nd->b)
            nd->b->a = nd->a;
    }
    node_free_mem(kd, nd);
    if (ci == 0) {
        if (parent->n == 0) {
            parent->a = NULL;
            remove_node(kd, level + 1, key, klen, parent);
            return;
        }
        parent->a = e_child(centry(parent, 0));
        remove_entry(kd, parent, 0);
    } else {
        remove_entry(kd, parent, ci - 1);
    }
    /* Collapse a root left with a single child. */
    while (kd->height > 0 && kd->root->n == 0) {
        kd_node *old = kd->root;
        kd->root = old->a;
        kd->height--;
        node_free_mem(kd, old);
    }
}

/* ---- Public API ----------------------------------------------------------- */

br_keydir *br_kd_new(void) {
    br_keydir *kd = calloc(1, sizeof *kd);
    if (!kd)
        abort();
    kd->root = node_new(kd, 1);
    return kd;
}

static void free_subtree(br_keydir *kd, kd_node *nd) {
    size_t pay = pay_size(nd);
    for (int i = 0; i < nd->n; i++) {
        const uint8_t *e = centry(nd, i);
        if (!nd->leaf)
            free_subtree(kd, e_child(e));
        if (e_slen(e) == KD_OOL)
            free_ool(kd, e_ool(e, pay));
    }
    if (!nd->leaf && nd->a)
        free_subtree(kd, nd->a);
    node_free_mem(kd, nd);
}

void br_kd_free(br_keydir *kd) {
    if (!kd)
        return;
    free_subtree(kd, kd->root);
    free(kd);
}

int br_kd_get(const br_keydir *kd, const void *key, size_t klen, br_loc *loc) {
    const kd_node *nd = descend(kd, key, klen, 0);
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    if (!eq)
        return 0;
    memcpy(loc, centry(nd, i) + 2, sizeof *loc);
    return 1;
}

/* Compares key with the last key of non-empty leaf nd; *in_prefix says
 * whether key starts with nd's prefix. */
static int cmp_last(const kd_node *nd, const uint8_t *key, size_t klen, int *in_prefix) {
    size_t m = klen < nd->plen ? klen : nd->plen;
    int c = m ? memcmp(key, nd->data, m) : 0;
    *in_prefix = c == 0 && klen >= nd->plen;
    if (!*in_prefix)
        return c ? c : -1;
    const uint8_t *s;
    size_t sl;
    suffix(nd, nd->n - 1, &s, &sl);
    return cmp_bytes(key + nd->plen, klen - nd->plen, s, sl);
}

int br_kd_put(br_keydir *kd, const void *key, size_t klen, br_loc loc, br_loc *old) {
    /* Past the last key (a bulk load, a counter): straight to the rightmost
     * leaf. tail may lag behind it after splits; follow the links. */
    kd_node *t = kd->tail;
    if (t) {
        while (t->b)
            t = t->b;
        kd->tail = t;
        int inp;
        if (t->n > 0 && cmp_last(t, key, klen, &inp) > 0) {
            kd_item it;
            make_item(kd, &it, key, klen, &loc, sizeof loc);
            insert_item(kd, t, 0, t->n, inp, true, &it);
            kd->count++;
            kd->key_bytes += klen;
            return 0;
        }
    }
    kd_node *nd = descend(kd, key, klen, 0);
    if (!nd->b)
        kd->tail = nd;
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    if (eq) {
        uint8_t *e = entry(nd, i);
        if (old)
            memcpy(old, e + 2, sizeof *old);
        memcpy(e + 2, &loc, sizeof loc);
        return 1;
    }
    kd_item it;
    make_item(kd, &it, key, klen, &loc, sizeof loc);
    insert_item(kd, nd, 0, i, inp, nd->b == NULL, &it);
    kd->count++;
    kd->key_bytes += klen;
    return 0;
}

void br_kd_prefetch(const br_keydir *kd, const void *key, size_t klen) {
    const kd_node *nd = descend(kd, key, klen, 0);
    size_t end = nd->plen + (size_t)KD_SLOT * nd->n;
    for (size_t o = 0; o < end; o += 64)
        __builtin_prefetch(nd->data + o);
}

int br_kd_replace_if(br_keydir *kd, const void *key, size_t klen, br_loc expect, br_loc loc) {
    kd_node *nd = descend(kd, key, klen, 0);
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    if (!eq)
        return 0;
    uint8_t *e = entry(nd, i);
    br_loc cur;
    memcpy(&cur, e + 2, sizeof cur);
    if (cur.file_id != expect.file_id || cur.offset != expect.offset)
        return 0;
    memcpy(e + 2, &loc, sizeof loc);
    return 1;
}

int br_kd_del(br_keydir *kd, const void *key, size_t klen, br_loc *old) {
    kd_node *nd = descend(kd, key, klen, 0);
    int eq, inp;
    int i = lower_bound(nd, key, klen, &eq, &inp);
    if (!eq)
        return 0;
    if (old)
        memcpy(old, centry(nd, i) + 2, sizeof *old);
    remove_entry(kd, nd, i);
    kd->count--;
    kd->key_bytes -= klen;
    if (nd->n == 0)
        remove_node(kd, 0, key, klen, nd);
    return 1;
}

size_t br_kd_scan(const br_keydir *kd, const void *start, size_t slen, int exclusive,
                  const void *end, size_t elen, size_t max, br_kd_visit_fn fn, void *ctx) {
    const kd_node *nd;
    int i = 0;
    if (start) {
        nd = descend(kd, start, slen, 0);
        int eq, inp;
        i = lower_bound(nd, start, slen, &eq, &inp);
        if (eq && exclusive)
            i++;
    } else {
        nd = kd->root;
        for (int l = kd->height; l > 0; l--)
            nd = nd->a;
    }
    uint8_t buf[KD_PREFIX_MAX + KD_OOL_MIN];
    size_t visited = 0;
    for (; nd; nd = nd->b, i = 0) {
        for (; i < nd->n; i++) {
            const uint8_t *e = centry(nd, i);
            const uint8_t *key;
            size_t klen;
            if (e_slen(e) == KD_OOL) {
                const uint8_t *blk = e_ool(e, KD_LOC_SIZE);
                key = blk + 4;
                klen = ool_klen(blk);
            } else {
                memcpy(buf, nd->data, nd->plen);
                memcpy(buf + nd->plen, e + 2 + KD_LOC_SIZE, e_slen(e));
                key = buf;
                klen = nd->plen + e_slen(e);
            }
            if (end && cmp_bytes(key, klen, end, elen) > 0)
                return visited;
            br_loc loc;
            memcpy(&loc, e + 2, sizeof loc);
            visited++;
            if (fn(ctx, key, klen, loc) || (max && visited >= max))
                return visited;
        }
    }
    return visited;
}

size_t br_kd_count(const br_keydir *kd) {
    return kd->count;
}

size_t br_kd_mem_bytes(const br_keydir *kd) {
    return kd->mem;
}

size_t br_kd_key_bytes(const br_keydir *kd) {
    return kd->key_bytes;
}

/* ---- Invariant check (tests) ---------------------------------------------- */

typedef struct kd_check {
    size_t count;
    const kd_node *prev_leaf;
    uint8_t *last;
    size_t last_len;
    int have_last;
} kd_check;

static int check_node(const kd_node *nd, int level, const uint8_t *lo, size_t lol,
                      const uint8_t *hi, size_t hil, kd_check *st) {
    if ((level == 0) != (nd->leaf != 0))
        return BR_ECORRUPT;
    if (nd->plen + (size_t)KD_SLOT * nd->n > nd->heap || nd->heap > KD_DATA)
        return BR_ECORRUPT;
    size_t pay = pay_size(nd);
    size_t used = 0;
    for (int i = 0; i < nd->n; i++) {
        const uint8_t *e = centry(nd, i);
        if (slot(nd, i) < nd->heap || slot(nd, i) + e_size(e, pay) > KD_DATA)
            return BR_ECORRUPT;
        used += e_size(e, pay);
        const uint8_t *s;
        size_t sl;
        suffix(nd, i, &s, &sl);
        if (e_slen(e) == KD_OOL && memcmp(e_ool(e, pay) + 4, nd->data, nd->plen) != 0)
            return BR_ECORRUPT;
        if (slot_head(nd, i) != head_of(s, sl))
            return BR_ECORRUPT;
        size_t kl = nd->plen + sl;
        uint8_t *kb = xmalloc(kl + 1);
        memcpy(kb, nd->data, nd->plen);
        memcpy(kb + nd->plen, s, sl);
        int bad = (lo && cmp_bytes(kb, kl, lo, lol) < 0) || (hi && cmp_bytes(kb, kl, hi, hil) >= 0);
        if (!bad && nd->leaf) {
            bad = st->have_last && cmp_bytes(st->last, st->last_len, kb, kl) >= 0;
            free(st->last);
            st->last = kb;
            st->last_len = kl;
            st->have_last = 1;
            st->count++;
            kb = NULL;
        }
        free(kb);
        if (bad)
            return BR_ECORRUPT;
    }
    if (used + nd->dead != (size_t)(KD_DATA - nd->heap))
        return BR_ECORRUPT;
    if (nd->leaf) {
        if (nd->a != st->prev_leaf)
            return BR_ECORRUPT;
        st->prev_leaf = nd;
        return 0;
    }
    /* Children: child i covers [sep(i-1), sep(i)). */
    for (int ci = 0; ci <= nd->n; ci++) {
        uint8_t *clo = NULL, *chi = NULL;
        size_t clol = 0, chil = 0;
        const uint8_t *s;
        size_t sl;
        if (ci > 0) {
            suffix(nd, ci - 1, &s, &sl);
            clol = nd->plen + sl;
            clo = xmalloc(clol + 1);
            memcpy(clo, nd->data, nd->plen);
            memcpy(clo + nd->plen, s, sl);
        }
        if (ci < nd->n) {
            suffix(nd, ci, &s, &sl);
            chil = nd->plen + sl;
            chi = xmalloc(chil + 1);
            memcpy(chi, nd->data, nd->plen);
            memcpy(chi + nd->plen, s, sl);
        }
        const kd_node *c = child_at(nd, ci);
        int rc = c ? check_node(c, level - 1, clo ? clo : lo, clo ? clol : lol, chi ? chi : hi,
                                chi ? chil : hil, st)
                   : BR_ECORRUPT;
        free(clo);
        free(chi);
        if (rc)
            return rc;
    }
    return 0;
}

int br_kd_check(const br_keydir *kd) {
    kd_check *st = calloc(1, sizeof *st);
    if (!st)
        return BR_ENOMEM;
    int rc = check_node(kd->root, kd->height, NULL, 0, NULL, 0, st);
    if (rc == 0 && st->count != kd->count)
        rc = BR_ECORRUPT;
    if (rc == 0 && st->prev_leaf && st->prev_leaf->b != NULL)
        rc = BR_ECORRUPT;
    free(st->last);
    free(st);
    return rc;
}
