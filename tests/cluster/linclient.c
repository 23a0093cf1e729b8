/*
 * bitraft-linclient — records a key-value history against real servers for
 * bitraft-lincheck.
 *
 *   bitraft-linclient --urls http://127.0.0.1:P1,... --clients N --keys K
 *                     --seconds S --out FILE [--timeout-ms T] [--seed X]
 *                     [--get-percent G] [--del-percent D] [--key-prefix P]
 *
 * N threads, each one client with its own libcurl handle (keep-alive), run
 * operations back to back until S seconds have passed: a random key of K
 * (named <prefix>k<i>, the prefix fresh per run so a run starts from absent
 * keys even on a used store), a random URL per operation, and a random
 * kind: get (G%), del (D%) or put of a unique value "c<client>-<seq>". The
 * REST API of docs/API.md is used: PUT /kv/{key}, GET /kv/{key} (404 =
 * absent), DELETE /kv/{key} (204 found, 404 absent).
 *
 * Each operation is recorded with CLOCK_MONOTONIC ns just before the first
 * request is sent and just after the last reply arrives, and an outcome:
 *
 *   ok       the server answered 2xx (or 404 for a get or del);
 *   fail     it definitely did not happen: the connection was refused and
 *            no request was sent (see run_op on libcurl's silent resend),
 *            or the server answered 4xx, or 503 without
 *            `X-Bitraft-Outcome: unknown` (docs/API.md: a rejected
 *            request changes nothing; 503 = no leader known, shutting
 *            down before the write was accepted);
 *   unknown  anything else — timeout, reset, empty reply, a 503 with
 *            `X-Bitraft-Outcome: unknown` (a cluster leader lost its
 *            leadership, or closed, with the write pending), other 5xx,
 *            an unexpected status: it may or may not have taken effect,
 *            and the checker allows both.
 *
 * A 307/308 (a follower pointing at the leader) is followed to its Location,
 * at most 8 times; the operation's outcome is the last reply's.
 *
 * The history file (format in lincheck.h) is written at the end, sorted by
 * call time. A summary goes to stderr. Exit 0, or 2 on bad usage or when the
 * file cannot be written.
 */
#include "lincheck.h"

#include <curl/curl.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char **urls;
    int nurls;
    int clients;
    int keys;
    double seconds;
    const char *out;
    long timeout_ms;
    uint64_t seed;
    int get_pct, del_pct;
    char prefix[64];
    int64_t deadline_ns;
} config;

typedef struct {
    const config *cfg;
    int id;
    lc_history h;
    uint64_t rng;
    CURL *curl;
    int failed_alloc;
    bool have_conn; /* the handle may hold an open connection */
    /* Per-request buffers. */
    char *body;
    size_t blen, bcap;
    char location[1024];
    bool outcome_unknown; /* the reply said X-Bitraft-Outcome: unknown */
    /* Counters. */
    size_t ok, fail, unknown, redirects;
} client;

static int64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static uint64_t next_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
    client *c = arg;
    size_t len = size * n;
    if (c->blen + len + 1 > c->bcap) {
        size_t cap = c->bcap ? c->bcap * 2 : 256;
        while (cap < c->blen + len + 1)
            cap *= 2;
        char *b = realloc(c->body, cap);
        if (b == NULL)
            return 0; /* makes curl fail: recorded as unknown */
        c->body = b;
        c->bcap = cap;
    }
    memcpy(c->body + c->blen, p, len);
    c->blen += len;
    c->body[c->blen] = '\0';
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
    client *c = arg;
    size_t len = size * n;
    if (len >= 18 && strncasecmp(p, "x-bitraft-outcome:", 18) == 0)
        c->outcome_unknown = true;
    if (len > 9 && strncasecmp(p, "location:", 9) == 0) {
        const char *v = p + 9;
        size_t l = len - 9;
        while (l > 0 && (*v == ' ' || *v == '\t'))
            v++, l--;
        while (l > 0 && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
            l--;
        if (l < sizeof(c->location)) {
            memcpy(c->location, v, l);
            c->location[l] = '\0';
        }
    }
    return len;
}

/*
 * %-encodes the bytes outside 0x21..0x7e and '%' itself, so that any value
 * read back is a token of the history format. An empty value becomes the
 * token "%" alone, and "-" (the token for absent) becomes "%2D"; no put
 * writes either, so reading one is a violation.
 */
static char *encode_value(const char *p, size_t n) {
    char *s = malloc(3 * n + 2);
    if (s == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        if (b < 0x21 || b > 0x7e || b == '%')
            k += (size_t)sprintf(s + k, "%%%02X", b);
        else
            s[k++] = (char)b;
    }
    if (n == 0)
        s[k++] = '%';
    else if (n == 1 && p[0] == '-') /* "-" is the token for absent */
        k = (size_t)sprintf(s, "%%2D");
    s[k] = '\0';
    return s;
}

/* Resolves a Location against the URL it came from (absolute or /path). */
static void resolve(const char *base, const char *loc, char *out, size_t len) {
    if (strncmp(loc, "http://", 7) == 0 || strncmp(loc, "https://", 8) == 0) {
        snprintf(out, len, "%s", loc);
        return;
    }
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;
    const char *path = strchr(host, '/');
    int hl = path ? (int)(path - base) : (int)strlen(base);
    snprintf(out, len, "%.*s%s%s", hl, base, loc[0] == '/' ? "" : "/", loc);
}

/*
 * Runs one operation: fills o's times, outcome and result. key and value
 * (put only) are tokens.
 */
static void run_op(client *c, lc_op *o) {
    const config *cfg = c->cfg;
    char url[2048];
    const char *base = cfg->urls[next_rand(&c->rng) % (uint64_t)cfg->nurls];
    snprintf(url, sizeof(url), "%s/kv/%s", base, o->key);
    o->call_ns = mono_ns();
    o->outcome = LC_UNKNOWN;
    for (int hop = 0; hop < 9; hop++) {
        CURL *h = c->curl;
        curl_easy_reset(h);
        c->blen = 0;
        c->location[0] = '\0';
        c->outcome_unknown = false;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, cfg->timeout_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                         cfg->timeout_ms < 1000 ? cfg->timeout_ms : 1000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
        if (o->kind == LC_PUT) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, o->value);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(o->value));
        } else if (o->kind == LC_DEL) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
        }
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        o->return_ns = mono_ns();
        if (rc != CURLE_OK) {
            /* Refused or unresolvable: nothing was sent, nothing happened —
             * but only if no open connection was tried first. libcurl
             * silently resends a request whose reused connection died
             * before any reply, and a refused reconnect then hides that the
             * first copy may have been applied (a server killed after the
             * write, before the reply). Anything else may have reached the
             * server. */
            bool refused = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
            o->outcome = refused && !c->have_conn && hop == 0 ? LC_FAIL : LC_UNKNOWN;
            c->have_conn = false; /* libcurl closed it */
            if (refused)
                usleep(2000); /* a server that is down: do not spin */
            return;
        }
        c->have_conn = true; /* a reply came: the connection may stay open */
        if ((code == 307 || code == 308) && c->location[0]) {
            char next[2048];
            resolve(url, c->location, next, sizeof(next));
            snprintf(url, sizeof(url), "%s", next);
            c->redirects++;
            continue;
        }
        if (code >= 200 && code < 300) {
            o->outcome = LC_OK;
            if (o->kind == LC_GET) {
                o->result = encode_value(c->body ? c->body : "", c->blen);
                if (o->result == NULL)
                    o->outcome = LC_UNKNOWN;
            } else if (o->kind == LC_DEL) {
                o->del_result = LC_DEL_FOUND;
            }
        } else if (code == 404 && o->kind != LC_PUT) {
            o->outcome = LC_OK;
            if (o->kind == LC_DEL)
                o->del_result = LC_DEL_ABSENT;
        } else if ((code >= 400 && code < 500) || (code == 503 && !c->outcome_unknown)) {
            o->outcome = LC_FAIL;
        } else {
            o->outcome = LC_UNKNOWN;
        }
        return;
    }
    o->outcome = LC_FAIL; /* every hop was a redirect: nobody applied it */
}

static void *client_main(void *arg) {
    client *c = arg;
    const config *cfg = c->cfg;
    uint64_t seq = 0;
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        c->failed_alloc = 1;
        return NULL;
    }
    while (mono_ns() < cfg->deadline_ns) {
        char key[128], value[64];
        snprintf(key, sizeof(key), "%sk%d", cfg->prefix,
                 (int)(next_rand(&c->rng) % (uint64_t)cfg->keys));
        int r = (int)(next_rand(&c->rng) % 100);
        lc_op o = {.client = (uint32_t)c->id, .key = key};
        if (r < cfg->get_pct) {
            o.kind = LC_GET;
        } else if (r < cfg->get_pct + cfg->del_pct) {
            o.kind = LC_DEL;
        } else {
            o.kind = LC_PUT;
            snprintf(value, sizeof(value), "c%d-%" PRIu64, c->id, ++seq);
            o.value = value;
        }
        run_op(c, &o);
        if (o.outcome == LC_OK)
            c->ok++;
        else if (o.outcome == LC_FAIL)
            c->fail++;
        else
            c->unknown++;
        if (o.outcome != LC_OK) { /* nothing was observed */
            free(o.result);
            o.result = NULL;
            o.del_result = LC_DEL_UNSEEN;
        }
        char err[128];
        int rc = lc_history_add(&c->h, &o, err, sizeof(err));
        free(o.result);
        if (rc != 0) {
            fprintf(stderr, "bitraft-linclient: client %d: cannot record: %s\n", c->id, err);
            c->failed_alloc = 1;
            break;
        }
    }
    curl_easy_cleanup(c->curl);
    free(c->body);
    return NULL;
}

static int cmp_call(const void *a, const void *b) {
    const lc_op *x = *(const lc_op *const *)a, *y = *(const lc_op *const *)b;
    if (x->call_ns != y->call_ns)
        return x->call_ns < y->call_ns ? -1 : 1;
    return x->client < y->client ? -1 : x->client > y->client ? 1 : 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bitraft-linclient --urls http://127.0.0.1:P1,... --clients N --keys K\n"
               "                         --seconds S --out FILE [--timeout-ms T] [--seed X]\n"
               "                         [--get-percent G] [--del-percent D] [--key-prefix P]\n"
               "Records a history of concurrent puts, gets and deletes for bitraft-lincheck.\n"
               "Defaults: --clients 8 --keys 3 --seconds 5 --timeout-ms 2000 --get-percent 50\n"
               "--del-percent 10, a random seed and key prefix.\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    config cfg = {
        .clients = 8, .keys = 3, .seconds = 5, .timeout_ms = 2000, .get_pct = 50, .del_pct = 10};
    char *urls = NULL;
    bool seeded = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL)
            goto bad;
        i++;
        if (strcmp(a, "--urls") == 0) {
            urls = strdup(v);
        } else if (strcmp(a, "--clients") == 0 && parse_long(v, 1, 1024, &n)) {
            cfg.clients = (int)n;
        } else if (strcmp(a, "--keys") == 0 && parse_long(v, 1, 1000000, &n)) {
            cfg.keys = (int)n;
        } else if (strcmp(a, "--seconds") == 0) {
            char *end;
            cfg.seconds = strtod(v, &end);
            if (*end || end == v || cfg.seconds <= 0)
                goto bad;
        } else if (strcmp(a, "--out") == 0) {
            cfg.out = v;
        } else if (strcmp(a, "--timeout-ms") == 0 && parse_long(v, 1, 3600000, &n)) {
            cfg.timeout_ms = n;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            cfg.seed = strtoull(v, &end, 0);
            if (*end || end == v)
                goto bad;
            seeded = true;
        } else if (strcmp(a, "--get-percent") == 0 && parse_long(v, 0, 100, &n)) {
            cfg.get_pct = (int)n;
        } else if (strcmp(a, "--del-percent") == 0 && parse_long(v, 0, 100, &n)) {
            cfg.del_pct = (int)n;
        } else if (strcmp(a, "--key-prefix") == 0 && strlen(v) < 48) {
            snprintf(cfg.prefix, sizeof(cfg.prefix), "%s", v);
        } else {
            goto bad;
        }
        continue;
    bad:
        fprintf(stderr, "bitraft-linclient: bad or incomplete argument '%s'\n", a);
        usage(stderr);
        return 2;
    }
    if (urls == NULL || cfg.out == NULL || cfg.get_pct + cfg.del_pct > 100) {
        usage(stderr);
        free(urls);
        return 2;
    }
    for (const char *p = cfg.prefix; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == ':')) {
            fprintf(stderr, "bitraft-linclient: --key-prefix takes [A-Za-z0-9._:-] only\n");
            free(urls);
            return 2;
        }
    }
    if (!seeded)
        cfg.seed = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);
    if (cfg.prefix[0] == '\0') {
        uint64_t s = cfg.seed;
        snprintf(cfg.prefix, sizeof(cfg.prefix), "lin%08" PRIx64 "-",
                 (uint64_t)(next_rand(&s) & 0xffffffffU));
    }
    /* Split the URL list, trimming any trailing '/'. */
    cfg.urls = calloc(strlen(urls) + 1, sizeof(char *));
    char *save = NULL;
    for (char *t = strtok_r(urls, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t l = strlen(t);
        while (l > 0 && t[l - 1] == '/')
            t[--l] = '\0';
        if (l > 0)
            cfg.urls[cfg.nurls++] = t;
    }
    if (cfg.nurls == 0) {
        fprintf(stderr, "bitraft-linclient: --urls is empty\n");
        free(cfg.urls);
        free(urls);
        return 2;
    }
    FILE *out = fopen(cfg.out, "w");
    if (out == NULL) {
        fprintf(stderr, "bitraft-linclient: %s: %s\n", cfg.out, strerror(errno));
        free(cfg.urls);
        free(urls);
        return 2;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    client *cl = calloc((size_t)cfg.clients, sizeof(*cl));
    pthread_t *th = calloc((size_t)cfg.clients, sizeof(*th));
    int64_t t0 = mono_ns();
    cfg.deadline_ns = t0 + (int64_t)(cfg.seconds * 1e9);
    int started = 0;
    for (int i = 0; cl && th && i < cfg.clients; i++) {
        uint64_t s = cfg.seed + (uint64_t)i * 0x632be59bd9b4e019ULL;
        cl[i] = (client){.cfg = &cfg, .id = i, .rng = next_rand(&s)};
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0)
            break;
        started++;
    }
    size_t total = 0, ok = 0, fail = 0, unknown = 0, redirects = 0;
    int bad = started < cfg.clients;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].h.n;
        ok += cl[i].ok;
        fail += cl[i].fail;
        unknown += cl[i].unknown;
        redirects += cl[i].redirects;
        bad |= cl[i].failed_alloc;
    }
    double dt = (double)(mono_ns() - t0) / 1e9;

    /* Write every op in call order. */
    const lc_op **all = malloc((total + 1) * sizeof(*all));
    if (all != NULL) {
        size_t k = 0;
        for (int i = 0; i < started; i++)
            for (size_t j = 0; j < cl[i].h.n; j++)
                all[k++] = &cl[i].h.ops[j];
        qsort(all, total, sizeof(*all), cmp_call);
        fprintf(out,
                "# bitraft-linclient: %d clients, %d keys (prefix %s), %.1f s, seed 0x%" PRIx64
                "\n# client op key value call_ns return_ns outcome result\n",
                cfg.clients, cfg.keys, cfg.prefix, cfg.seconds, cfg.seed);
        for (size_t i = 0; i < total; i++)
            lc_op_write(out, all[i]);
        free(all);
    } else {
        bad = 1;
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "bitraft-linclient: %s: %s\n", cfg.out, strerror(errno));
        bad = 1;
    }
    fprintf(stderr,
            "bitraft-linclient: %zu ops in %.2f s (%.0f/s): %zu ok, %zu failed, %zu unknown, "
            "%zu redirects followed\n",
            total, dt, (double)total / dt, ok, fail, unknown, redirects);
    for (int i = 0; i < started; i++)
        lc_history_free(&cl[i].h);
    free(cl);
    free(th);
    free(cfg.urls);
    free(urls);
    curl_global_cleanup();
    return bad ? 2 : 0;
}
