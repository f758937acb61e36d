/*
 * tools/common/synth.c - a synthetic prefix-sharing workload for kvb-replay,
 * shaped like the Mooncake traces (one id per 512-token block; an id stands
 * for the whole prefix up to its block).
 *
 * Model (every number is a field of kvbt_synth_params; defaults in brackets):
 *
 *  - System prompts. `system_prompts` [8] shared prefixes of
 *    `system_min_blocks`..`system_max_blocks` [1..3] blocks (uniform). Every
 *    session starts with one of them, chosen with Zipf(`zipf_s` [1.0])
 *    popularity: prompt k (0-based) has weight 1/(k+1)^s.
 *
 *  - Sessions (multi-turn conversations). The popularity of a session, the
 *    number of requests (turns) it receives, is Zipf(`zipf_s`) over
 *    1..`turns_max` [8]: P(T = k) is proportional to 1/k^s (a third of the
 *    sessions have one turn, a few have eight; mean 2.9 with the defaults).
 *
 *  - Think time. After a turn, the session's next turn becomes due 2^e + U[0,
 *    2^e) requests later, e uniform in `think_min_log2`..`think_max_log2`
 *    [6..12], so 64 to 8191 requests (log-uniform): reuse distances spread
 *    over the whole range of cache sizes worth replaying (1,000 to 32,000
 *    blocks), which gives the hit ratio its gradual rise with capacity.
 *
 *  - Arrivals. Request i is the most overdue pending turn when one is due
 *    (ties by the order the turns were scheduled), else the first turn of a
 *    new session. The request rate is one per index; sessions start whenever
 *    no turn is waiting.
 *
 *  - Turns grow the prompt. Turn 1 is: system prompt + a new message. Turn
 *    t > 1 repeats turn t-1's prompt, then adds the previous answer
 *    (`answer_blocks` [1] new block) and a new message. With probability
 *    `partial_percent` [85%] turn t-1's prompt ended in a partial block: that
 *    block is re-sent completed, under a new id (so the repeated prefix is one
 *    block shorter), as happens with real 512-token blocks.
 *
 *  - Messages. A short message is 1 + Geometric(`message_mean` - 1) [mean 4]
 *    blocks; with probability `doc_percent` [25%] the user pastes a document
 *    of 1 + Geometric(`doc_mean` - 1) [mean 24] blocks instead.
 *
 *  - Length cap. A prompt never exceeds `max_blocks` [192] blocks: a turn that
 *    would exceed it ends its session and a new session takes the request; a
 *    first message longer than the room left is truncated.
 *
 *  - Ids. Block ids come from one counter in order of first use, so equal ids
 *    mean equal prefix content, exactly as in the Mooncake traces.
 *
 * With the defaults (12,000 requests, seed 1): 284,288 block refs, 122,083
 * unique blocks, 23.7 blocks per request (max 192, far below the default
 * capacity of 8000), infinite-cache prefix hit ratio 57.1% (Mooncake:
 * conversation 36.6%, synthetic 64.0%); LRU hit ratios rise from about 10%
 * at 1,000 blocks to 47% at 32,000 (seeds 2 and 3: 56.0% and 58.1%).
 *
 * Determinism: the PRNG is xoshiro256** (Blackman and Vigna, 2018) seeded
 * through splitmix64; geometric draws use integer comparisons only and the
 * Zipf tables sums of correctly rounded IEEE divisions (pow() only when
 * zipf_s != 1), so a seed gives the same trace on every machine. rand() is
 * never used.
 */
#include "synth.h"
#include "util.h"

#include <math.h>

/* ------------------------------------------------------------------------ */
/* PRNG: splitmix64 seeding, xoshiro256**                                   */
/* ------------------------------------------------------------------------ */

typedef struct kvbt_rng {
    uint64_t s[4];
} kvbt_rng;

static uint64_t kvbt_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void kvbt_rng_seed(kvbt_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = kvbt_splitmix64(&x);
}

static inline uint64_t kvbt_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t kvbt_rng_next(kvbt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = kvbt_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = kvbt_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift with rejection: unbiased). */
static uint32_t kvbt_rng_below(kvbt_rng *r, uint32_t n)
{
    uint64_t m = (kvbt_rng_next(r) >> 32) * (uint64_t)n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t thr = (uint32_t)(-n) % n;
        while (lo < thr) {
            m = (kvbt_rng_next(r) >> 32) * (uint64_t)n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* True with probability percent/100. */
static bool kvbt_rng_percent(kvbt_rng *r, uint32_t percent)
{
    return kvbt_rng_below(r, 100) < percent;
}

/* Geometric: failures before the first success with p = 1 / (mean + 1), so the
 * mean is `mean`; integer comparisons only; capped at `cap`. */
static uint32_t kvbt_rng_geometric(kvbt_rng *r, uint32_t mean, uint32_t cap)
{
    if (mean == 0)
        return 0;
    uint64_t thr = UINT64_MAX / ((uint64_t)mean + 1) * mean; /* P(continue) = mean/(mean+1) */
    uint32_t k = 0;
    while (k < cap && kvbt_rng_next(r) < thr)
        k++;
    return k;
}

/* ------------------------------------------------------------------------ */
/* Zipf by inverse CDF                                                      */
/* ------------------------------------------------------------------------ */

typedef struct kvbt_zipf {
    double *cdf; /* cdf[k] = P(rank <= k) */
    uint32_t n;
} kvbt_zipf;

static void kvbt_zipf_init(kvbt_zipf *z, uint32_t n, double s)
{
    z->n = n;
    z->cdf = kvbt_xmalloc_array(n, sizeof *z->cdf);
    double sum = 0;
    for (uint32_t k = 0; k < n; k++) {
        sum += s == 1.0 ? 1.0 / (double)(k + 1) : 1.0 / pow((double)(k + 1), s);
        z->cdf[k] = sum;
    }
    for (uint32_t k = 0; k < n; k++)
        z->cdf[k] /= sum;
    z->cdf[n - 1] = 1.0;
}

static uint32_t kvbt_zipf_draw(const kvbt_zipf *z, kvbt_rng *r)
{
    double u = (double)(kvbt_rng_next(r) >> 11) * 0x1.0p-53; /* [0, 1) */
    uint32_t lo = 0, hi = z->n - 1;
    while (lo < hi) { /* first k with cdf[k] > u */
        uint32_t mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ------------------------------------------------------------------------ */
/* The workload                                                             */
/* ------------------------------------------------------------------------ */

void kvbt_synth_defaults(kvbt_synth_params *p)
{
    memset(p, 0, sizeof *p);
    p->seed = 1;
    p->requests = 12000;
    p->system_prompts = 8;
    p->system_min_blocks = 1;
    p->system_max_blocks = 3;
    p->zipf_s = 1.0;
    p->turns_max = 8;
    p->think_min_log2 = 6;
    p->think_max_log2 = 12;
    p->message_mean = 4;
    p->doc_percent = 25;
    p->doc_mean = 24;
    p->answer_blocks = 1;
    p->partial_percent = 85;
    p->max_blocks = 192;
}

int kvbt_synth_validate(const kvbt_synth_params *p, char *err, size_t errcap)
{
    const char *bad = NULL;
    if (p->requests == 0)
        bad = "requests must be > 0";
    else if (p->system_prompts == 0 || p->turns_max == 0)
        bad = "system_prompts and turns_max must be > 0";
    else if (p->system_min_blocks == 0 || p->system_min_blocks > p->system_max_blocks)
        bad = "system prompt lengths must satisfy 1 <= min <= max";
    else if (!(p->zipf_s >= 0 && p->zipf_s <= 10))
        bad = "zipf_s must be in [0, 10]";
    else if (p->think_min_log2 > p->think_max_log2 || p->think_max_log2 > 30)
        bad = "think time exponents must satisfy min <= max <= 30";
    else if (p->message_mean == 0 || p->doc_mean == 0)
        bad = "message_mean and doc_mean must be >= 1";
    else if (p->doc_percent > 100 || p->partial_percent > 100)
        bad = "percentages must be <= 100";
    else if (p->max_blocks <= p->system_max_blocks || p->max_blocks > KVB_HASH_MAX_POSITION)
        bad = "max_blocks must exceed the longest system prompt (and stay below 2^24)";
    if (bad) {
        snprintf(err, errcap, "synthetic workload: %s", bad);
        return -1;
    }
    return 0;
}

int kvbt_synth_describe(const kvbt_synth_params *p, char *buf, size_t cap)
{
    return snprintf(buf, cap,
                    "seed %llu, %llu requests; %u system prompts of %u-%u blocks (Zipf %.2f); "
                    "turns/session Zipf %.2f over 1..%u, think time %u-%u requests "
                    "(log-uniform); message mean %u blocks, %u%% documents of mean %u blocks, "
                    "answer %u block(s), %u%% partial last blocks; prompts <= %u blocks",
                    (unsigned long long)p->seed, (unsigned long long)p->requests, p->system_prompts,
                    p->system_min_blocks, p->system_max_blocks, p->zipf_s, p->zipf_s, p->turns_max,
                    1u << p->think_min_log2, (2u << p->think_max_log2) - 1, p->message_mean,
                    p->doc_percent, p->doc_mean, p->answer_blocks, p->partial_percent,
                    p->max_blocks);
}

/* A session: its last prompt (the context of its next turn) and turns to go. */
typedef struct kvbt_session {
    uint64_t *ctx;
    uint32_t len;
    uint32_t turns_left;
} kvbt_session;

/* Pending turns, a binary min-heap on (due request index, sequence number): the
 * sequence number breaks ties, so the order never depends on the heap's layout. */
typedef struct kvbt_pending {
    uint64_t due, seq;
    kvbt_session *s;
} kvbt_pending;

typedef struct kvbt_heap {
    kvbt_pending *a;
    size_t n, cap;
} kvbt_heap;

static bool kvbt_pending_before(const kvbt_pending *x, const kvbt_pending *y)
{
    return x->due < y->due || (x->due == y->due && x->seq < y->seq);
}

static void kvbt_heap_push(kvbt_heap *h, kvbt_pending v)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 256;
        h->a = kvbt_xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0 && kvbt_pending_before(&v, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = v;
}

static kvbt_pending kvbt_heap_pop(kvbt_heap *h)
{
    kvbt_pending top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && kvbt_pending_before(&h->a[c + 1], &h->a[c]))
            c++;
        if (!kvbt_pending_before(&h->a[c], &last))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

/* Think time in requests: an octave e uniform in [min, max], then uniform in
 * [2^e, 2^(e+1)): log-uniform, integer arithmetic only. */
static uint64_t kvbt_think(const kvbt_synth_params *p, kvbt_rng *r)
{
    uint32_t e = p->think_min_log2 + kvbt_rng_below(r, p->think_max_log2 - p->think_min_log2 + 1);
    return ((uint64_t)1 << e) + kvbt_rng_below(r, 1u << e);
}

/* Blocks of the message a turn adds. */
static uint32_t kvbt_message(const kvbt_synth_params *p, kvbt_rng *r)
{
    bool doc = kvbt_rng_percent(r, p->doc_percent);
    return 1 + kvbt_rng_geometric(r, (doc ? p->doc_mean : p->message_mean) - 1, p->max_blocks);
}

int kvbt_synth_generate(const kvbt_synth_params *p, kvbt_trace *t, char *err, size_t errcap)
{
    if (kvbt_synth_validate(p, err, errcap) < 0)
        return -1;

    char desc[512];
    kvbt_synth_describe(p, desc, sizeof desc);
    kvbt_trace_init(t, "synthetic", desc);

    kvbt_rng rng;
    kvbt_rng_seed(&rng, p->seed);
    uint64_t next_id = 0, next_seq = 0;

    /* System prompts: lengths and ids first, so they do not depend on traffic. */
    uint32_t *sys_len = kvbt_xmalloc_array(p->system_prompts, sizeof *sys_len);
    uint64_t *sys_first = kvbt_xmalloc_array(p->system_prompts, sizeof *sys_first);
    for (uint32_t s = 0; s < p->system_prompts; s++) {
        sys_len[s] = p->system_min_blocks +
                     kvbt_rng_below(&rng, p->system_max_blocks - p->system_min_blocks + 1);
        sys_first[s] = next_id;
        next_id += sys_len[s];
    }

    kvbt_zipf zsys, zturns;
    kvbt_zipf_init(&zsys, p->system_prompts, p->zipf_s);
    kvbt_zipf_init(&zturns, p->turns_max, p->zipf_s);
    kvbt_heap pending = {0};

    for (uint64_t r = 0; r < p->requests; r++) {
        kvbt_session *s = NULL;
        uint32_t msg = kvbt_message(p, &rng);
        bool partial = kvbt_rng_percent(&rng, p->partial_percent);

        /* The most overdue pending turn, if one is due; else a new session. */
        if (pending.n > 0 && pending.a[0].due <= r) {
            s = kvbt_heap_pop(&pending).s;
            uint32_t keep = s->len - (partial ? 1 : 0);
            uint32_t add = (partial ? 1 : 0) + p->answer_blocks + msg;
            if (keep + add > p->max_blocks) {
                free(s->ctx); /* too long: the session ends, a new one takes the slot */
                free(s);
                s = NULL;
            } else {
                s->len = keep;
                for (uint32_t i = 0; i < add - msg; i++) /* completed block + answer */
                    s->ctx[s->len++] = next_id++;
            }
        }
        if (!s) {
            s = kvbt_xmalloc(sizeof *s);
            s->ctx = kvbt_xmalloc_array(p->max_blocks, sizeof *s->ctx);
            uint32_t k = kvbt_zipf_draw(&zsys, &rng);
            for (uint32_t i = 0; i < sys_len[k]; i++)
                s->ctx[i] = sys_first[k] + i;
            s->len = sys_len[k];
            s->turns_left = 1 + kvbt_zipf_draw(&zturns, &rng);
        }
        for (uint32_t i = 0; i < msg && s->len < p->max_blocks; i++)
            s->ctx[s->len++] = next_id++;

        kvbt_trace_begin(t);
        for (uint32_t i = 0; i < s->len; i++)
            kvbt_trace_push(t, s->ctx[i]);
        kvbt_trace_end(t);

        if (--s->turns_left > 0) {
            kvbt_pending v = {r + kvbt_think(p, &rng), next_seq++, s};
            kvbt_heap_push(&pending, v);
        } else {
            free(s->ctx);
            free(s);
        }
    }

    while (pending.n > 0) {
        kvbt_session *s = kvbt_heap_pop(&pending).s;
        free(s->ctx);
        free(s);
    }
    free(pending.a);
    free(zsys.cdf);
    free(zturns.cdf);
    free(sys_len);
    free(sys_first);
    kvbt_trace_finish(t);
    return 0;
}
