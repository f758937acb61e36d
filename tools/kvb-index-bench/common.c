/*
 * tools/kvb-index-bench/common.c - shared helpers of the sections (load
 * average, percentiles, index and stream setup, failure) and the event logs
 * recorded from kvblock pools (sections a and e) (tools/kvb-index-bench.c
 * has the manual and the method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

const char *bench_loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (!f || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(buf, sizeof buf, "load ?");
    else
        snprintf(buf, sizeof buf, "load %.2f %.2f %.2f", a, b, c);
    if (f)
        fclose(f);
    return buf;
}

int bench_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile p (0..1000, per mille) of a sorted array. */
uint32_t bench_pct(const uint32_t *v, uint64_t n, unsigned permille)
{
    if (!n)
        return 0;
    return v[(n - 1) * permille / 1000];
}

kvb_index *bench_index(uint32_t block_size, uint32_t max_streams, const kvb_allocator *al)
{
    kvb_index_config cfg;
    kvb_index *idx;
    kvb_index_config_init(&cfg);
    if (block_size)
        cfg.block_size = block_size;
    if (max_streams > cfg.max_streams)
        cfg.max_streams = max_streams;
    if (al)
        cfg.allocator = *al;
    int rc = kvb_index_create(&cfg, &idx);
    if (rc < 0)
        bench_fail("kvb_index_create", rc);
    return idx;
}

uint32_t bench_stream(kvb_index *idx, uint32_t w)
{
    char name[32];
    kvb_index_stream_config sc;
    uint32_t id;
    snprintf(name, sizeof name, "w%u", w);
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.dp_rank = KVB_INDEX_NO_RANK;
    sc.hashes = KVB_INDEX_HASHES_ROUTER;
    int rc = kvb_index_stream_add(idx, &sc, &id);
    if (rc < 0)
        bench_fail("kvb_index_stream_add", rc);
    return id;
}

KVBT_NORETURN void bench_fail(const char *what, int rc)
{
    kvbt_die(prog, "%s: %s", what, kvb_strerror(rc));
}
/* ------------------------------------------------------------------------ */
/* Event logs recorded from kvblock pools                                    */
/* ------------------------------------------------------------------------ */

void evlog_free(evlog *l)
{
    free(l->ev);
    free(l->h);
    free(l->b);
    free(l->ix);
    memset(l, 0, sizeof *l);
}

/* One sink call = one batch of the worker's stream. */
void rec_sink_fn(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    rec_sink *s = user;
    evlog *l = s->log;
    (void)pool;
    if (l->n_b == l->cap_b) {
        l->cap_b = l->cap_b ? l->cap_b * 2 : 1024;
        l->b = kvbt_xrealloc(l->b, l->cap_b * sizeof *l->b);
    }
    rec_batch *b = &l->b[l->n_b++];
    b->stream = s->stream;
    b->first = (uint32_t)l->n_ev;
    b->n = n;
    b->t_us = s->t_us;
    for (uint32_t i = 0; i < n; i++) {
        const kvb_event *e = &events[i];
        if (l->n_ev == l->cap_ev) {
            l->cap_ev = l->cap_ev ? l->cap_ev * 2 : 1024;
            l->ev = kvbt_xrealloc(l->ev, l->cap_ev * sizeof *l->ev);
        }
        while (l->n_h + e->n > l->cap_h) {
            l->cap_h = l->cap_h ? l->cap_h * 2 : 4096;
            l->h = kvbt_xrealloc(l->h, l->cap_h * sizeof *l->h);
        }
        rec_event *r = &l->ev[l->n_ev++];
        r->stream = s->stream;
        r->n = e->n;
        r->type = e->type == KVB_EVENT_STORED    ? KVB_INDEX_EV_STORED
                  : e->type == KVB_EVENT_REMOVED ? KVB_INDEX_EV_REMOVED
                                                 : KVB_INDEX_EV_CLEARED;
        r->has_parent = e->type == KVB_EVENT_STORED && e->has_parent;
        r->parent = r->has_parent ? kvb_hash_current(e->parent) : 0;
        r->off = l->n_h;
        for (uint32_t j = 0; j < e->n; j++)
            l->h[l->n_h++] = kvb_hash_current(e->hashes[j]);
        if (r->type == KVB_INDEX_EV_STORED)
            l->stored_blocks += e->n;
        else if (r->type == KVB_INDEX_EV_REMOVED)
            l->removed_blocks += e->n;
    }
}

/* The kvb_index_event form of every recorded event (pointers into l->h). */
void evlog_finish(evlog *l)
{
    l->ix = kvbt_xmalloc_array(l->n_ev + 1, sizeof *l->ix);
    for (size_t i = 0; i < l->n_ev; i++) {
        const rec_event *r = &l->ev[i];
        kvb_index_event *x = &l->ix[i];
        memset(x, 0, sizeof *x);
        x->type = (kvb_index_ev_type)r->type;
        x->tier = KVB_TIER_DEVICE;
        x->n_hashes = r->n;
        x->hashes = l->h + r->off;
        x->has_parent = r->has_parent;
        x->parent = r->parent;
    }
}
