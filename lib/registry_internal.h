/*
 * registry_internal.h - what pools call on their registry (private).
 * Never call these with a pool lock held (lock order: registry -> pool, checked
 * in debug builds by the lock witness, lock.h).
 */
#ifndef KVB_REGISTRY_INTERNAL_H
#define KVB_REGISTRY_INTERNAL_H

#include "internal.h"

struct kvb_sketch;

/* Attach a pool at create time: 0 and its index, -ENOSPC when the registry already
 * serves KVB_REGISTRY_MAX_POOLS pools. */
int kvb__registry_attach(kvb_registry *r, kvb_pool *p, uint32_t *index);
void kvb__registry_detach(kvb_registry *r, uint32_t index);
/* The registry's frequency sketch (lock-free; safe under a pool lock). */
struct kvb_sketch *kvb__registry_sketch(kvb_registry *r);
/* Presence updates for pool `index`: delta[i] (+1 or -1) for hashes[i]. */
void kvb__registry_presence(kvb_registry *r, uint32_t index, const kvb_hash *hashes,
                            const int8_t *delta, uint32_t n);

#endif
