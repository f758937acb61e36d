/*
 * sketch.c - TinyLFU frequency sketch: count-min with 4-bit counters, depth 4,
 * conservative update, a doorkeeper, and periodic halving.
 *
 * Source: Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient Cache
 * Admission Policy" (ACM ToS 2017); the layout follows Caffeine's
 * FrequencySketch with the corrections DESIGN.md section 10 asks for:
 *  - independent indexes: row i uses counter (a + i*b) mod width, where a and b
 *    come from two different mixes of the key (Kirsch-Mitzenmacher double
 *    hashing), so every counter of every row is reachable (Dynamo's sketch
 *    reaches one counter in sixteen);
 *  - conservative update: only the counters equal to the current minimum are
 *    incremented, which keeps over-estimation from collisions low;
 *  - a doorkeeper bit filter: the first occurrence of a key only sets its bit;
 *    the estimate is min(counters) + doorkeeper bit, capped at 15, so one-hit
 *    wonders never reach the counters;
 *  - aging: after sample_size = 10 x width touches every counter is halved and
 *    the doorkeeper is cleared, so past popularity fades.
 *
 * Sizing: width = 16 x next_pow2(max(capacity, 64)) counters per row (at most
 * 2^26), i.e. 32 bytes of counters and 2 bits of doorkeeper per unit of
 * capacity. Caffeine uses about one counter per cached entry, which suits a
 * key-value cache whose misses mostly bring back known keys; a prefix cache
 * sees mostly new content (63% of the block references of the Mooncake
 * conversation trace are first references), so the distinct keys between two
 * agings outnumber the capacity several times and a one-counter-per-slot row
 * saturates: every estimate drifts to the same high value. Measured on the
 * Mooncake prefix replay with multi_lru (whose levels read absolute
 * estimates): widths 1x / 8x / 16x / 32x capacity give 4.67 / 5.44 / 6.42 /
 * 6.89% at 1000 blocks on the conversation trace and 3.44 / 5.47 / 6.60 /
 * 7.61% on the synthetic one (docs/eviction.md). 16x is where the gains
 * flatten relative to the memory.
 *
 * Concurrency: counters live in 64-bit words (16 nibbles). A shared sketch
 * updates them with relaxed CAS, the doorkeeper with fetch_or and the touch
 * count with fetch_add. Relaxed is enough: the sketch is a statistic, no other
 * memory is published through it. A halving races with touches word by word
 * (each word is halved atomically), which at worst loses or keeps one
 * increment. A private sketch (shared false: its one writer holds the pool
 * mutex) does the same with relaxed loads and stores: the locked instructions
 * were 64% of a touch and 15% of the tinylfu and multi_lru replays.
 */
#include "sketch.h"
#include "annotate.h"
#include <stdatomic.h>

#define KVB_SKETCH_DEPTH         4
#define KVB_SKETCH_WIDTH_PER_KEY 16u /* counters per row per unit of capacity */
#define KVB_SKETCH_MAX_WIDTH     (1u << 26)

struct kvb_sketch {
    kvb_allocator alloc;
    bool shared;          /* touches may be concurrent: atomic read-modify-writes */
    uint32_t width;       /* counters per row, power of two */
    uint32_t width_shift; /* 64 - log2(width) */
    uint64_t sample_size;
    _Atomic uint64_t additions; /* touches since the last halving (relaxed: a counter) */
    _Atomic uint64_t agings;    /* relaxed: a statistic */
    _Atomic uint64_t *table;    /* DEPTH rows of width/16 words */
    _Atomic uint64_t *door;     /* width bits */
    size_t bytes;
};

int kvb__sketch_create(uint32_t capacity, bool shared, const kvb_allocator *a,
                       struct kvb_sketch **out)
{
    if (!a || !out)
        return -EINVAL;
    uint32_t c = kvb__next_pow2(capacity < 64 ? 64 : capacity);
    uint32_t w = c > (KVB_SKETCH_MAX_WIDTH / KVB_SKETCH_WIDTH_PER_KEY)
                     ? KVB_SKETCH_MAX_WIDTH
                     : c * KVB_SKETCH_WIDTH_PER_KEY;
    struct kvb_sketch *s = kvb__calloc(a, 1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->alloc = *a;
    s->shared = shared;
    s->width = w;
    s->width_shift = 64 - (uint32_t)__builtin_ctz(w);
    s->sample_size = 10ull * w;
    size_t twords = (size_t)KVB_SKETCH_DEPTH * (w / 16);
    size_t dwords = w / 64;
    s->table = kvb__calloc(a, twords, sizeof *s->table);
    s->door = kvb__calloc(a, dwords, sizeof *s->door);
    if (!s->table || !s->door) {
        kvb__sketch_destroy(s);
        return -ENOMEM;
    }
    s->bytes = sizeof *s + twords * 8 + dwords * 8;
    KVB_ATOMIC_VAR(s->table, twords * 8);
    KVB_ATOMIC_VAR(s->door, dwords * 8);
    KVB_ATOMIC_VAR(&s->additions, sizeof s->additions);
    KVB_ATOMIC_VAR(&s->agings, sizeof s->agings);
    *out = s;
    return 0;
}

void kvb__sketch_destroy(struct kvb_sketch *s)
{
    if (!s)
        return;
    kvb_allocator a = s->alloc;
    if (s->table)
        KVB_ATOMIC_VAR_END(s->table, (size_t)KVB_SKETCH_DEPTH * (s->width / 16) * 8);
    if (s->door)
        KVB_ATOMIC_VAR_END(s->door, (size_t)(s->width / 64) * 8);
    KVB_ATOMIC_VAR_END(&s->additions, sizeof s->additions);
    KVB_ATOMIC_VAR_END(&s->agings, sizeof s->agings);
    kvb__free(&a, (void *)s->table, (size_t)KVB_SKETCH_DEPTH * (s->width / 16) * 8);
    kvb__free(&a, (void *)s->door, (size_t)(s->width / 64) * 8);
    kvb__free(&a, s, sizeof *s);
}

/* Counter index of key in row i: (a + i*b) mod width, top bits. */
static inline void kvb_sketch_index(const struct kvb_sketch *s, kvb_hash h,
                                    uint32_t idx[KVB_SKETCH_DEPTH], uint32_t *door)
{
    uint64_t a = kvb__hash_mix(h);
    uint64_t b = (a ^ (a >> 31)) * 0xd6e8feb86659fd93ull;
    b = (b ^ (b >> 32)) | 1; /* odd: the four probes are distinct */
    const uint32_t shift = s->width_shift;
    _Static_assert(KVB_SKETCH_DEPTH == 4, "the rows are written out");
    idx[0] = (uint32_t)(a >> shift);
    idx[1] = (uint32_t)((a + b) >> shift);
    idx[2] = (uint32_t)((a + 2 * b) >> shift);
    idx[3] = (uint32_t)((a + 3 * b) >> shift);
    *door = (uint32_t)((b * 0x9E3779B97F4A7C15ull) >> shift);
}

static inline uint32_t kvb_sketch_get(const struct kvb_sketch *s, uint32_t row, uint32_t idx)
{
    const _Atomic uint64_t *w = &s->table[(size_t)row * (s->width / 16) + (idx >> 4)];
    uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
    return (uint32_t)(v >> ((idx & 15) * 4)) & 15u;
}

/* Increment a counter if it still equals `expect` (conservative update). */
static inline void kvb_sketch_inc(struct kvb_sketch *s, uint32_t row, uint32_t idx, uint32_t expect)
{
    _Atomic uint64_t *w = &s->table[(size_t)row * (s->width / 16) + (idx >> 4)];
    uint32_t sh = (idx & 15) * 4;
    uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
    if (!s->shared) { /* the one writer: no other store can come between */
        uint32_t c = (uint32_t)(v >> sh) & 15u;
        if (c == expect && c != 15)
            atomic_store_explicit(w, v + (1ull << sh), memory_order_relaxed);
        return;
    }
    for (;;) {
        uint32_t c = (uint32_t)(v >> sh) & 15u;
        if (c != expect || c == 15)
            return;
        if (atomic_compare_exchange_weak_explicit(w, &v, v + (1ull << sh), memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

static void kvb_sketch_halve(struct kvb_sketch *s)
{
    size_t twords = (size_t)KVB_SKETCH_DEPTH * (s->width / 16);
    for (size_t i = 0; i < twords; i++) {
        uint64_t v = atomic_load_explicit(&s->table[i], memory_order_relaxed);
        if (!s->shared) {
            atomic_store_explicit(&s->table[i], (v >> 1) & 0x7777777777777777ull,
                                  memory_order_relaxed);
            continue;
        }
        while (!atomic_compare_exchange_weak_explicit(&s->table[i], &v,
                                                      (v >> 1) & 0x7777777777777777ull,
                                                      memory_order_relaxed, memory_order_relaxed))
            ;
    }
    for (size_t i = 0; i < s->width / 64; i++)
        atomic_store_explicit(&s->door[i], 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->agings, 1, memory_order_relaxed);
}

void kvb__sketch_touch(struct kvb_sketch *s, kvb_hash h)
{
    uint32_t idx[KVB_SKETCH_DEPTH], d;
    kvb_sketch_index(s, h, idx, &d);
    uint64_t bit = 1ull << (d & 63);
    _Atomic uint64_t *dw = &s->door[d >> 6];
    uint64_t old;
    if (s->shared) {
        old = atomic_fetch_or_explicit(dw, bit, memory_order_relaxed);
    } else {
        old = atomic_load_explicit(dw, memory_order_relaxed);
        if (!(old & bit))
            atomic_store_explicit(dw, old | bit, memory_order_relaxed);
    }
    if ((old & bit) && !s->shared) {
        /* The one writer: each row's word read once (the rows are apart, so the
         * four words are distinct) and the counters at the minimum incremented in
         * place, as kvb_sketch_inc would find them. Locals, rows written out: the
         * stores below must not make the compiler reload the layout. */
        _Atomic uint64_t *const t = s->table;
        const size_t stride = s->width / 16;
        _Atomic uint64_t *w0 = &t[idx[0] >> 4], *w1 = &t[stride + (idx[1] >> 4)],
                         *w2 = &t[2 * stride + (idx[2] >> 4)], *w3 = &t[3 * stride + (idx[3] >> 4)];
        const uint32_t s0 = (idx[0] & 15) * 4, s1 = (idx[1] & 15) * 4, s2 = (idx[2] & 15) * 4,
                       s3 = (idx[3] & 15) * 4;
        uint64_t v0 = atomic_load_explicit(w0, memory_order_relaxed),
                 v1 = atomic_load_explicit(w1, memory_order_relaxed),
                 v2 = atomic_load_explicit(w2, memory_order_relaxed),
                 v3 = atomic_load_explicit(w3, memory_order_relaxed);
        uint32_t c0 = (uint32_t)(v0 >> s0) & 15u, c1 = (uint32_t)(v1 >> s1) & 15u,
                 c2 = (uint32_t)(v2 >> s2) & 15u, c3 = (uint32_t)(v3 >> s3) & 15u;
        uint32_t m = c0 < c1 ? c0 : c1, m2 = c2 < c3 ? c2 : c3;
        m = m < m2 ? m : m2;
        if (m < 15) {
            if (c0 == m)
                atomic_store_explicit(w0, v0 + (1ull << s0), memory_order_relaxed);
            if (c1 == m)
                atomic_store_explicit(w1, v1 + (1ull << s1), memory_order_relaxed);
            if (c2 == m)
                atomic_store_explicit(w2, v2 + (1ull << s2), memory_order_relaxed);
            if (c3 == m)
                atomic_store_explicit(w3, v3 + (1ull << s3), memory_order_relaxed);
        }
    } else if (old & bit) {
        uint32_t m = 15;
        for (uint32_t i = 0; i < KVB_SKETCH_DEPTH; i++) {
            uint32_t c = kvb_sketch_get(s, i, idx[i]);
            if (c < m)
                m = c;
        }
        if (m < 15)
            for (uint32_t i = 0; i < KVB_SKETCH_DEPTH; i++)
                kvb_sketch_inc(s, i, idx[i], m);
    }
    uint64_t n;
    if (s->shared) {
        n = atomic_fetch_add_explicit(&s->additions, 1, memory_order_relaxed) + 1;
    } else {
        n = atomic_load_explicit(&s->additions, memory_order_relaxed) + 1;
        atomic_store_explicit(&s->additions, n, memory_order_relaxed);
    }
    if (n == s->sample_size) {
        /* exactly one toucher sees the threshold: it resets the count and ages */
        atomic_fetch_sub_explicit(&s->additions, n, memory_order_relaxed);
        kvb_sketch_halve(s);
    }
}

uint32_t kvb__sketch_estimate(const struct kvb_sketch *s, kvb_hash h)
{
    uint32_t idx[KVB_SKETCH_DEPTH], d;
    kvb_sketch_index(s, h, idx, &d);
    uint64_t door = atomic_load_explicit(&s->door[d >> 6], memory_order_relaxed);
    const _Atomic uint64_t *const t = s->table;
    const size_t stride = s->width / 16;
    uint64_t v0 = atomic_load_explicit(&t[idx[0] >> 4], memory_order_relaxed),
             v1 = atomic_load_explicit(&t[stride + (idx[1] >> 4)], memory_order_relaxed),
             v2 = atomic_load_explicit(&t[2 * stride + (idx[2] >> 4)], memory_order_relaxed),
             v3 = atomic_load_explicit(&t[3 * stride + (idx[3] >> 4)], memory_order_relaxed);
    uint32_t c0 = (uint32_t)(v0 >> ((idx[0] & 15) * 4)) & 15u,
             c1 = (uint32_t)(v1 >> ((idx[1] & 15) * 4)) & 15u,
             c2 = (uint32_t)(v2 >> ((idx[2] & 15) * 4)) & 15u,
             c3 = (uint32_t)(v3 >> ((idx[3] & 15) * 4)) & 15u;
    uint32_t m = c0 < c1 ? c0 : c1, m2 = c2 < c3 ? c2 : c3;
    m = m < m2 ? m : m2;
    m += (uint32_t)((door >> (d & 63)) & 1);
    return m > 15 ? 15 : m;
}

uint32_t kvb__sketch_frequency_cb(void *ctx, kvb_hash h)
{
    return kvb__sketch_estimate(ctx, h);
}

size_t kvb__sketch_memory(const struct kvb_sketch *s)
{
    return s ? s->bytes : 0;
}

uint64_t kvb__sketch_agings(const struct kvb_sketch *s)
{
    return atomic_load_explicit(&s->agings, memory_order_relaxed);
}

uint64_t kvb__sketch_sample_size(const struct kvb_sketch *s)
{
    return s->sample_size;
}

/* ---- test-only accessors (sketch.h) ---- */

uint32_t kvb__sketch_width(const struct kvb_sketch *s)
{
    return s->width;
}

void kvb__sketch_slots(const struct kvb_sketch *s, kvb_hash h, uint32_t idx[4], uint32_t *door)
{
    kvb_sketch_index(s, h, idx, door);
}

uint32_t kvb__sketch_counter(const struct kvb_sketch *s, uint32_t row, uint32_t idx)
{
    if (row >= KVB_SKETCH_DEPTH || idx >= s->width)
        return 0;
    return kvb_sketch_get(s, row, idx);
}

bool kvb__sketch_door_bit(const struct kvb_sketch *s, uint32_t bit)
{
    if (bit >= s->width)
        return false;
    uint64_t w = atomic_load_explicit(&s->door[bit >> 6], memory_order_relaxed);
    return (w >> (bit & 63)) & 1;
}
