/*
 * events.c - KV cache events: from the pool's per-block records to kvb_event
 * batches delivered to the sink (DESIGN.md section 7).
 *
 * First version: records of one public call are coalesced (consecutive
 * STORED records that form a chain become one event whose parent is known;
 * consecutive REMOVED records become one event) and delivered by the calling
 * thread right after the pool lock is dropped. Deliveries of different
 * threads are serialised by a per-pool delivery mutex; they are in sequence
 * order within a call. (Strict cross-thread order, batching by count and time
 * and the power-of-two emission policy are the next step.)
 */
#include "events_internal.h"
#include <string.h>

struct kvb_events {
    kvb_event_config cfg;
    kvb_allocator alloc;
    pthread_mutex_t mu; /* serialises sink calls for one pool */
};

int kvb__events_create(const kvb_event_config *cfg, const kvb_allocator *a,
                       struct kvb_events **out)
{
    if (!cfg->sink)
        return -EINVAL;
    struct kvb_events *ev = kvb__calloc(a, 1, sizeof *ev);
    if (!ev)
        return -ENOMEM;
    ev->cfg = *cfg;
    ev->alloc = *a;
    if (pthread_mutex_init(&ev->mu, NULL) != 0) {
        kvb__free(a, ev, sizeof *ev);
        return -ENOMEM;
    }
    *out = ev;
    return 0;
}

void kvb__events_destroy(struct kvb_events *ev)
{
    kvb_allocator a = ev->alloc;
    pthread_mutex_destroy(&ev->mu);
    kvb__free(&a, ev, sizeof *ev);
}

static bool kvb_is_event(uint32_t kind)
{
    return kind == KVB_CB_STORED || kind == KVB_CB_REMOVED || kind == KVB_CB_CLEARED;
}

void kvb__events_deliver(kvb_pool *p, const struct kvb_cb_ev *recs, uint32_t n)
{
    struct kvb_events *ev = p->events;
    kvb_hash hs[64];
    uint32_t ids[64];
    pthread_mutex_lock(&ev->mu);
    for (uint32_t i = 0; i < n;) {
        if (!kvb_is_event(recs[i].kind)) {
            i++;
            continue;
        }
        kvb_event e = {.type = (kvb_event_type)(recs[i].kind - KVB_CB_STORED + 1),
                       .seq = recs[i].seq,
                       .block_size = p->block_size};
        uint32_t k = 0;
        if (recs[i].kind != KVB_CB_CLEARED) {
            uint32_t kind = recs[i].kind;
            while (i < n && k < 64 && recs[i].kind == kind &&
                   (k == 0 || kind != KVB_CB_STORED || kvb_hash_is_parent(hs[k - 1], recs[i].hash))) {
                hs[k] = recs[i].hash;
                ids[k++] = recs[i].id;
                i++;
                /* skip non-event records interleaved in the same call */
                while (i < n && !kvb_is_event(recs[i].kind))
                    i++;
            }
            e.n = k;
            e.hashes = hs;
            e.block_ids = ids;
        } else {
            i++;
        }
        ev->cfg.sink(ev->cfg.user, p, &e, 1);
    }
    pthread_mutex_unlock(&ev->mu);
}

void kvb__events_flush(kvb_pool *p)
{
    (void)p;
}
