/*
 * metrics.c - a pool's statistics: the stats snapshot (kvb_pool_stats: gauges and
 * counters read under one lock), the bookkeeping memory (kvb_pool_memory), and
 * their Prometheus text exposition (format 0.0.4): one coherent snapshot, then
 * formatting without the lock. Every series carries pool="<name>" (label value
 * escaped).
 */
#include "pool.h"
#include "sketch.h"
#include <stdarg.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* statistics: one coherent snapshot under the pool lock                    */
/* ------------------------------------------------------------------------ */

int kvb_pool_stats(kvb_pool *p, kvb_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    bool timed = kvb__pool_timers_pending(p);
    uint64_t now = timed ? kvb__pool_clock_now(p) : 0;
    kvb__pool_lock(p);
    if (timed) /* the gauges show priorities as they are now */
        kvb__expire_locked(p, now);
    out->block_count = p->block_count;
    out->reset = p->count[KVB_S_RESET];
    out->mutable_ = p->count[KVB_S_MUTABLE];
    out->staged = p->count[KVB_S_STAGED];
    out->primary = p->count[KVB_S_PRIMARY];
    out->duplicate = p->count[KVB_S_DUPLICATE];
    out->inactive = p->count[KVB_S_INACTIVE];
    out->peak_in_use = p->peak_in_use;
    const struct kvb_counters *c = &p->c;
    out->allocations = c->allocations;
    out->allocations_from_reset = c->allocations_from_reset;
    out->evictions = c->evictions;
    out->registrations = c->registrations;
    out->duplicates = c->duplicates;
    out->dedups = c->dedups;
    out->stagings = c->stagings;
    out->match_requested = c->match_requested;
    out->match_returned = c->match_returned;
    out->eager_transitions = c->eager_transitions;
    out->allocate_rollbacks = c->allocate_rollbacks;
    out->release_noops = c->release_noops;
    out->lock_acquisitions = p->lock.acquisitions;
    out->lock_contended = p->lock.contended;
    out->lock_wait_ns = p->lock.wait_ns;
    out->resurrections = c->resurrections;
    out->scan_requested = c->scan_requested;
    out->scan_returned = c->scan_returned;
    if (p->hints) {
        out->hint_uses = p->hints->uses;
        out->hint_hashes = p->hints->n_ent;
        out->hint_protected = p->hints->heap_len;
    }
    out->hint_added = c->hint_added;
    out->hint_withdrawn = c->hint_withdrawn;
    out->hint_unmatched = c->hint_unmatched;
    out->hint_rejected = c->hint_rejected;
    out->hint_evictions = c->hint_evictions;
    if (p->prio) {
        out->retained = kvb__prio_retained(p->prio);
        out->retention_timers = p->prio->heap_len;
    }
    out->retention_expired = c->retention_expired;
    out->retained_evictions = c->retained_evictions;
    out->misuse = atomic_load_explicit(&p->misuse, memory_order_relaxed);
    kvb__pool_unlock(p);
    return 0;
}

int kvb_pool_memory(kvb_pool *p, kvb_memory_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->slots = (size_t)p->block_count * sizeof *p->slots;
    out->hash_index = (size_t)p->ix.cap * sizeof *p->ix.map;
    out->pool = sizeof *p;
    if (p->own_sketch)
        out->sketch = kvb__sketch_memory(p->sketch);
    if (p->hints)
        out->hints = kvb__hints_memory(p->hints);
    if (p->prio)
        out->priorities = kvb__prio_memory(p->prio);
    kvb__pool_lock(p);
    if (p->ops->memory)
        out->backend = p->ops->memory(p->backend);
    kvb__pool_unlock(p);
    out->total = out->slots + out->hash_index + out->backend + out->sketch + out->pool +
                 out->hints + out->priorities;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Prometheus text                                                          */
/* ------------------------------------------------------------------------ */

int kvb_pool_metrics_text(kvb_pool *p, char *buf, size_t cap)
{
    if (!p || (cap && !buf))
        return -EINVAL;
    kvb_stats s;
    int rc = kvb_pool_stats(p, &s);
    if (rc)
        return rc;
    char name[2 * sizeof p->name + 1];
    kvb__prom_escape(p->name, name, sizeof name);
    struct kvb__out o = {.buf = buf, .cap = cap, .len = 0};
    if (cap)
        buf[0] = 0;

    kvb__out_printf(&o, "# HELP kvblock_blocks Blocks by slot state.\n"
                        "# TYPE kvblock_blocks gauge\n");
    const struct {
        const char *state;
        uint32_t v;
    } g[] = {{"reset", s.reset},     {"mutable", s.mutable_},    {"staged", s.staged},
             {"primary", s.primary}, {"duplicate", s.duplicate}, {"inactive", s.inactive}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        kvb__out_printf(&o, "kvblock_blocks{pool=\"%s\",state=\"%s\"} %u\n", name, g[i].state,
                        g[i].v);
    kvb__out_printf(&o,
                    "# HELP kvblock_block_count Blocks managed by the pool.\n"
                    "# TYPE kvblock_block_count gauge\n"
                    "kvblock_block_count{pool=\"%s\"} %u\n"
                    "# HELP kvblock_peak_in_use High watermark of blocks held.\n"
                    "# TYPE kvblock_peak_in_use gauge\n"
                    "kvblock_peak_in_use{pool=\"%s\"} %u\n",
                    name, s.block_count, name, s.peak_in_use);

    const struct {
        const char *metric, *help;
        uint64_t v;
    } c[] = {
        {"allocations", "Blocks allocated.", s.allocations},
        {"allocations_from_reset", "Blocks allocated from the free list.",
         s.allocations_from_reset},
        {"evictions", "Cached blocks evicted.", s.evictions},
        {"registrations", "Blocks registered.", s.registrations},
        {"duplicates", "Registrations that made a duplicate.", s.duplicates},
        {"dedups", "Registrations answered with the existing primary.", s.dedups},
        {"stagings", "Blocks staged.", s.stagings},
        {"match_requested", "Hashes asked of match calls.", s.match_requested},
        {"match_returned", "Blocks returned by match calls.", s.match_returned},
        {"scan_requested", "Hashes asked of scan calls.", s.scan_requested},
        {"scan_returned", "Blocks returned by scan calls.", s.scan_returned},
        {"resurrections", "Cached blocks brought back to use.", s.resurrections},
        {"misuse", "Handle misuse detected (stale, released or foreign handles).", s.misuse},
        {"eager_transitions", "Last-release transitions performed by a lookup.",
         s.eager_transitions},
        {"allocate_rollbacks", "Allocations rolled back after a backend under-delivered.",
         s.allocate_rollbacks},
        {"release_noops", "Last releases that found their transition already done.",
         s.release_noops},
        {"lock_acquisitions", "Pool mutex acquisitions.", s.lock_acquisitions},
        {"lock_contended", "Pool mutex acquisitions that had to wait.", s.lock_contended},
        {"hint_added", "Expected uses added by lookahead hints.", s.hint_added},
        {"hint_withdrawn", "Expected uses withdrawn by lookahead hints.", s.hint_withdrawn},
        {"hint_unmatched", "Withdrawn uses that were not outstanding.", s.hint_unmatched},
        {"hint_rejected", "Hint calls refused for lack of hint capacity.", s.hint_rejected},
        {"hint_evictions", "Evictions that had to take a block protected by hints.",
         s.hint_evictions},
        {"retention_expired", "Retention durations that ran out.", s.retention_expired},
        {"retained_evictions", "Evictions of a block above the default retention priority.",
         s.retained_evictions},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        kvb__out_printf(&o,
                        "# HELP kvblock_%s_total %s\n# TYPE kvblock_%s_total counter\n"
                        "kvblock_%s_total{pool=\"%s\"} %llu\n",
                        c[i].metric, c[i].help, c[i].metric, c[i].metric, name,
                        (unsigned long long)c[i].v);
    kvb__out_printf(
        &o,
        "# HELP kvblock_lock_wait_seconds_total Time spent waiting for the pool mutex.\n"
        "# TYPE kvblock_lock_wait_seconds_total counter\n"
        "kvblock_lock_wait_seconds_total{pool=\"%s\"} %.9f\n",
        name, (double)s.lock_wait_ns / 1e9);
    kvb__out_printf(&o,
                    "# HELP kvblock_hint_uses Expected uses outstanding from lookahead hints.\n"
                    "# TYPE kvblock_hint_uses gauge\n"
                    "kvblock_hint_uses{pool=\"%s\"} %llu\n"
                    "# HELP kvblock_hint_hashes Hashes with outstanding lookahead hints.\n"
                    "# TYPE kvblock_hint_hashes gauge\n"
                    "kvblock_hint_hashes{pool=\"%s\"} %u\n"
                    "# HELP kvblock_hint_protected Cached blocks set apart by lookahead hints.\n"
                    "# TYPE kvblock_hint_protected gauge\n"
                    "kvblock_hint_protected{pool=\"%s\"} %u\n",
                    name, (unsigned long long)s.hint_uses, name, s.hint_hashes, name,
                    s.hint_protected);
    kvb__out_printf(&o,
                    "# HELP kvblock_retained Cached blocks at a priority other than the default.\n"
                    "# TYPE kvblock_retained gauge\n"
                    "kvblock_retained{pool=\"%s\"} %u\n"
                    "# HELP kvblock_retention_timers Retention durations pending.\n"
                    "# TYPE kvblock_retention_timers gauge\n"
                    "kvblock_retention_timers{pool=\"%s\"} %u\n",
                    name, s.retained, name, s.retention_timers);
    kvb_memory_stats m;
    if (kvb_pool_memory(p, &m) == 0) {
        kvb__out_printf(&o, "# HELP kvblock_bookkeeping_bytes Bookkeeping memory by component.\n"
                            "# TYPE kvblock_bookkeeping_bytes gauge\n");
        const struct {
            const char *component;
            size_t v;
        } b[] = {{"slots", m.slots},
                 {"hash_index", m.hash_index},
                 {"backend", m.backend},
                 {"sketch", m.sketch},
                 {"pool", m.pool},
                 {"hints", m.hints},
                 {"priorities", m.priorities},
                 {"total", m.total}};
        for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
            kvb__out_printf(&o, "kvblock_bookkeeping_bytes{pool=\"%s\",component=\"%s\"} %zu\n",
                            name, b[i].component, b[i].v);
    }
    if (o.len > (size_t)INT32_MAX)
        return -EOVERFLOW;
    return (int)o.len;
}
