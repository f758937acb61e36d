/*
 * tinylfu.c - the "tinylfu" inactive index: W-TinyLFU adapted to eviction on
 * demand.
 *
 * Source: Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient Cache
 * Admission Policy" (ACM ToS 2017), and Caffeine's BoundedLocalCache
 * (window, segmented main area, admission duel, hill-climbing window size).
 *
 * Structure: three LRU lists (an ilist.h list set) threaded through one link
 * array indexed by block id: the recency WINDOW, and the main area split into PROBATION and
 * PROTECTED (at most 80% of the main area). New content enters the window. A
 * hit takes a block out (the pool's rule: a cached block is never touched);
 * when it comes back (same content: its arrival number is unchanged) it goes
 * where Caffeine would move it on a hit: window -> window, probation ->
 * protected, protected -> protected; protected overflow is demoted to the
 * probation MRU end.
 *
 * Demand eviction: Caffeine evicts when an insertion overflows the cache; a
 * pool evicts when an allocation needs slots. evict(n) therefore runs
 * Caffeine's admission duel once per slot needed:
 *  - window over its target size: candidate = the window's LRU block,
 *    victim = the main area's (probation LRU, else protected LRU); the one
 *    with the lower frequency estimate (params->frequency) is evicted; the
 *    candidate, if it wins, moves to the probation MRU end. Ties evict the
 *    candidate, as Caffeine does (admit only when strictly hotter): measured
 *    on the Mooncake traces, evicting the victim on ties was worse (see
 *    docs/eviction.md);
 *  - window within its target: the main area's victim goes (the window's LRU
 *    block when the main area is empty).
 * After the call, whatever still overflows the window moves to the probation
 * MRU end, as Caffeine's evictFromWindow does before evicting.
 *
 * Window size: adaptive by hill climbing, as in Caffeine: it starts at 1% of
 * block_count; every sample of hits + misses (hits = remove calls, misses =
 * inserts of new content) the hit rate is compared with the previous
 * sample's; the window target moves by `step` in the direction that improved
 * it, the step decays by 0.98 and is reset to 6.25% of block_count after a
 * hit-rate change of 5 points or more. The sample is block_count events
 * (Caffeine uses 10 x the maximum size; a pool sees far fewer events per
 * slot than a key-value cache, and 10 x block_count never adapted within
 * the Mooncake traces at large capacities: docs/eviction.md).
 *
 * Prefix structure is ignored: this is the textbook policy, kept as a
 * reference and for workloads without prefix sharing (the classic block
 * traces). On prefix-sharing workloads it loses to LRU, because the duel
 * can evict a parent whose children stay cached; lineage_arc is the
 * prefix-aware policy (docs/eviction.md has the measurements).
 *
 * Rollback: evict logs what it did (evicted ids, window -> probation moves),
 * each call's entries marked as one segment; unevict(ids) undoes the log, last
 * entry first, back to the start of the segment that evicted ids[0]. That
 * restores the exact state, also when the pool hands the chunks of one
 * allocation back first chunk first. Any other call clears the log.
 *
 * Cost: every operation O(1) (one or two frequency reads per evicted block);
 * drain O(len); create O(block_count). Memory: 40 bytes per block (hash,
 * links, arrival, segment, log), allocated at create; nothing after. Bad calls
 * return an error or false and change nothing.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"

#include <string.h>

#define KVB_TLFU_WINDOW0         0.01   /* initial window target, x block_count */
#define KVB_TLFU_SAMPLE          1.0    /* hill-climber sample, x block_count events */
#define KVB_TLFU_STEP            0.0625 /* initial and restart step, x block_count */
#define KVB_TLFU_STEP_DECAY      0.98
#define KVB_TLFU_RESTART         0.05 /* hit-rate change that restarts the step */
#define KVB_TLFU_PROTECTED_SHARE 0.8  /* of the main area */

enum { KVB_TLFU_WINDOW = 0, KVB_TLFU_PROBATION, KVB_TLFU_PROTECTED, KVB_TLFU_NSEG };

#define KVB_TLFU_HIT   0x40        /* tag flag (absent blocks): taken out by a hit */
#define KVB_TLFU_MOVED 0x80000000u /* log flag: window -> probation move */
#define KVB_TLFU_SEG   0x40000000u /* log flag: first entry of an evict call (ids < 2^30) */
#define KVB_TLFU_ID(e) ((e) & ~(KVB_TLFU_MOVED | KVB_TLFU_SEG))

/* Every field is protected by the owning pool's mutex. */
struct kvb_tlfu {
    /* the segments: links (block_count + 3, sentinels at block_count + seg) and
     * tags (per block: segment, or KVB_ILIST_SET_OFF | (HIT) | last segment) */
    struct kvb_ilist_set sg;
    kvb_hash *hash;    /* per block: its content (frequency queries) */
    uint32_t *arrival; /* per block: arrival at its last insert */
    uint32_t *log;     /* evict log: ids, MOVED flag for window -> probation */
    uint32_t nlog;
    uint32_t block_count, len;
    /* window target and hill climbing */
    double window_max, step, prev_rate;
    uint64_t sample_hits, sample_events, sample_size;
    uint32_t (*frequency)(void *ctx, kvb_hash hash);
    void *frequency_ctx;
    kvb_allocator allocator;
};

static size_t kvb_tlfu_bytes(uint32_t bc)
{
    size_t n = bc;
    return (n + KVB_TLFU_NSEG) * sizeof(struct kvb_ilink) + n * sizeof(kvb_hash) +
           n * sizeof(uint32_t) + n + 2 * n * sizeof(uint32_t);
}

static void kvb_tlfu_free(struct kvb_tlfu *t)
{
    kvb_allocator a = t->allocator;
    size_t n = t->block_count;
    kvb__free(&a, t->sg.link, (n + KVB_TLFU_NSEG) * sizeof *t->sg.link);
    kvb__free(&a, t->hash, n * sizeof *t->hash);
    kvb__free(&a, t->arrival, n * sizeof *t->arrival);
    kvb__free(&a, t->sg.tag, n);
    kvb__free(&a, t->log, 2 * n * sizeof *t->log);
    kvb__free(&a, t, sizeof *t);
}

static int kvb_tlfu_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);
    size_t n = params->block_count;
    struct kvb_tlfu *t = kvb__calloc(&a, 1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->allocator = a;
    t->block_count = params->block_count;
    t->sg.link = kvb__alloc(&a, (n + KVB_TLFU_NSEG) * sizeof *t->sg.link);
    t->hash = kvb__alloc(&a, n * sizeof *t->hash);
    t->arrival = kvb__alloc(&a, n * sizeof *t->arrival);
    t->sg.tag = kvb__alloc(&a, n);
    t->log = kvb__alloc(&a, 2 * n * sizeof *t->log);
    if (!t->sg.link || !t->hash || !t->arrival || !t->sg.tag || !t->log) {
        kvb_tlfu_free(t);
        return -ENOMEM;
    }
    kvb_ilist_set_init(&t->sg, t->sg.link, t->sg.tag, t->block_count, KVB_TLFU_NSEG);
    t->frequency = params->frequency;
    t->frequency_ctx = params->frequency_ctx;
    t->window_max = (double)n * KVB_TLFU_WINDOW0;
    if (t->window_max < 1)
        t->window_max = 1;
    t->step = (double)n * KVB_TLFU_STEP;
    t->prev_rate = -1;
    t->sample_size = (uint64_t)((double)n * KVB_TLFU_SAMPLE);
    if (t->sample_size < 64)
        t->sample_size = 64;
    *out = t;
    return 0;
}

static void kvb_tlfu_destroy(void *self)
{
    if (self)
        kvb_tlfu_free(self);
}

static bool kvb_tlfu_present(const struct kvb_tlfu *t, uint32_t id)
{
    return kvb_ilist_set_on(&t->sg, id);
}

static uint32_t kvb_tlfu_freq(const struct kvb_tlfu *t, uint32_t id)
{
    return t->frequency ? t->frequency(t->frequency_ctx, t->hash[id]) : 0;
}

/* Keep protected within 80% of the main area: demote its LRU to probation. */
static void kvb_tlfu_balance(struct kvb_tlfu *t)
{
    double main_max = (double)t->block_count - t->window_max;
    while (t->sg.count[KVB_TLFU_PROTECTED] > 0 &&
           (double)t->sg.count[KVB_TLFU_PROTECTED] > KVB_TLFU_PROTECTED_SHARE * main_max) {
        uint32_t id = kvb_ilist_set_head(&t->sg, KVB_TLFU_PROTECTED);
        kvb_ilist_set_unlink(&t->sg, id);
        kvb_ilist_set_link(&t->sg, id, KVB_TLFU_PROBATION, false);
    }
}

/* One hit or miss for the hill climber; adapts the window target per sample. */
static void kvb_tlfu_climb(struct kvb_tlfu *t, bool hit)
{
    t->sample_hits += hit;
    if (++t->sample_events < t->sample_size)
        return;
    double rate = (double)t->sample_hits / (double)t->sample_events;
    t->sample_hits = t->sample_events = 0;
    if (t->prev_rate < 0) { /* first sample: nothing to compare with */
        t->prev_rate = rate;
        return;
    }
    double change = rate - t->prev_rate;
    double amount = change >= 0 ? t->step : -t->step;
    double restart = KVB_TLFU_STEP * (double)t->block_count;
    t->step = (change >= KVB_TLFU_RESTART || change <= -KVB_TLFU_RESTART)
                  ? (amount >= 0 ? restart : -restart)
                  : KVB_TLFU_STEP_DECAY * amount;
    t->prev_rate = rate;
    t->window_max += amount;
    if (t->window_max < 1)
        t->window_max = 1;
    if (t->window_max > t->block_count)
        t->window_max = t->block_count;
}

static int kvb_tlfu_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_tlfu *t = self;
    if (id >= t->block_count)
        return -EINVAL;
    if (kvb_tlfu_present(t, id))
        return -EEXIST;
    t->nlog = 0;
    uint8_t old = t->sg.tag[id];
    uint32_t s = KVB_TLFU_WINDOW;
    if ((old & KVB_TLFU_HIT) && t->arrival[id] == arrival && kvb_hash_equal(t->hash[id], hash)) {
        uint32_t from = KVB_ILIST_SET_LIST(old); /* back from a hit: Caffeine's on-access move */
        s = from == KVB_TLFU_WINDOW ? KVB_TLFU_WINDOW : KVB_TLFU_PROTECTED;
    } else {
        kvb_tlfu_climb(t, false); /* new content: a miss */
    }
    t->hash[id] = hash;
    t->arrival[id] = arrival;
    kvb_ilist_set_link(&t->sg, id, s, false);
    t->len++;
    if (s == KVB_TLFU_PROTECTED)
        kvb_tlfu_balance(t);
    return 0;
}

static bool kvb_tlfu_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_tlfu *t = self;
    (void)hash;
    if (!kvb_tlfu_present(t, id))
        return false;
    t->nlog = 0;
    kvb_ilist_set_unlink(&t->sg, id);
    t->sg.tag[id] |= KVB_TLFU_HIT;
    t->len--;
    kvb_tlfu_climb(t, true);
    return true;
}

static bool kvb_tlfu_contains(const void *self, uint32_t id)
{
    return kvb_tlfu_present(self, id);
}

/* The main area's victim: probation LRU, else protected LRU; KVB_ILIST_NONE if empty. */
static uint32_t kvb_tlfu_main_victim(const struct kvb_tlfu *t)
{
    uint32_t v = kvb_ilist_set_head(&t->sg, KVB_TLFU_PROBATION);
    return v != KVB_ILIST_NONE ? v : kvb_ilist_set_head(&t->sg, KVB_TLFU_PROTECTED);
}

static uint32_t kvb_tlfu_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_tlfu *t = self;
    if (!out)
        return 0;
    uint32_t k = 0, seg = KVB_TLFU_SEG;
    while (k < n && t->len > 0) {
        uint32_t victim = kvb_tlfu_main_victim(t), x;
        if ((double)t->sg.count[KVB_TLFU_WINDOW] > t->window_max && victim != KVB_ILIST_NONE) {
            uint32_t cand = kvb_ilist_set_head(&t->sg, KVB_TLFU_WINDOW);
            uint32_t fc = kvb_tlfu_freq(t, cand), fv = kvb_tlfu_freq(t, victim);
            if (fc > fv) { /* admit the candidate: strictly hotter */
                kvb_ilist_set_unlink(&t->sg, cand);
                kvb_ilist_set_link(&t->sg, cand, KVB_TLFU_PROBATION, false);
                t->log[t->nlog++] = cand | KVB_TLFU_MOVED | seg;
                seg = 0;
                x = victim;
            } else {
                x = cand;
            }
        } else {
            x = victim != KVB_ILIST_NONE ? victim : kvb_ilist_set_head(&t->sg, KVB_TLFU_WINDOW);
        }
        kvb_ilist_set_unlink(&t->sg, x);
        t->len--;
        t->log[t->nlog++] = x | seg;
        seg = 0;
        out[k++] = x;
    }
    /* the window's overflow moves to probation (Caffeine's evictFromWindow) */
    while ((double)t->sg.count[KVB_TLFU_WINDOW] > t->window_max) {
        uint32_t id = kvb_ilist_set_head(&t->sg, KVB_TLFU_WINDOW);
        kvb_ilist_set_unlink(&t->sg, id);
        kvb_ilist_set_link(&t->sg, id, KVB_TLFU_PROBATION, false);
        t->log[t->nlog++] = id | KVB_TLFU_MOVED | seg;
        seg = 0;
    }
    return k;
}

static uint32_t kvb_tlfu_len(const void *self)
{
    const struct kvb_tlfu *t = self;
    return t->len;
}

static void kvb_tlfu_drain(void *self)
{
    struct kvb_tlfu *t = self;
    kvb_ilist_set_drain(&t->sg);
    t->len = 0;
    t->nlog = 0;
}

/* Undo the log back to the segment that evicted ids[0] (see the file
 * comment); ids that are not in the log are ignored. */
static void kvb_tlfu_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                             const uint32_t *arrivals, uint32_t n)
{
    struct kvb_tlfu *t = self;
    (void)hashes;
    (void)arrivals;
    if (!ids || n == 0)
        return;
    uint32_t i = t->nlog;
    while (i > 0 && (t->log[i - 1] != ids[0] && t->log[i - 1] != (ids[0] | KVB_TLFU_SEG)))
        i--;
    if (i == 0)
        return; /* not evicted by us since the last other call */
    while (i > 1 && !(t->log[i - 1] & KVB_TLFU_SEG))
        i--; /* back to its segment's start (the log's first entry is always one) */
    uint32_t start = i - 1;
    while (t->nlog > start) {
        uint32_t e = t->log[--t->nlog];
        uint32_t id = KVB_TLFU_ID(e);
        if (e & KVB_TLFU_MOVED) { /* back from the probation MRU end to the window LRU end */
            kvb_ilist_set_unlink(&t->sg, id);
            kvb_ilist_set_link(&t->sg, id, KVB_TLFU_WINDOW, true);
        } else { /* back at the LRU end of its segment */
            kvb_ilist_set_link(&t->sg, id, KVB_ILIST_SET_LIST(t->sg.tag[id]), true);
            t->len++;
        }
    }
}

static size_t kvb_tlfu_memory(const void *self)
{
    const struct kvb_tlfu *t = self;
    return sizeof *t + kvb_tlfu_bytes(t->block_count);
}

const kvb_inactive_ops kvb_inactive_tinylfu = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "tinylfu",
    .create = kvb_tlfu_create,
    .destroy = kvb_tlfu_destroy,
    .insert = kvb_tlfu_insert,
    .remove = kvb_tlfu_remove,
    .contains = kvb_tlfu_contains,
    .evict = kvb_tlfu_evict,
    .len = kvb_tlfu_len,
    .drain = kvb_tlfu_drain,
    .unevict = kvb_tlfu_unevict,
    .memory = kvb_tlfu_memory,
    .flags = KVB_INACTIVE_F_FREQUENCY,
};
