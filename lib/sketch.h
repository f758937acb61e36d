/*
 * sketch.h - TinyLFU frequency sketch (private).
 *
 * A count-min sketch of 4-bit counters, depth 4, with a doorkeeper bit filter
 * in front and periodic halving (aging). Lock-free: touches and estimates may
 * run from any thread, with or without a pool lock held, so a registry shared
 * by several pools can own one sketch without entering the lock order.
 */
#ifndef KVB_SKETCH_H
#define KVB_SKETCH_H

#include "internal.h"

struct kvb_sketch;

/* A sketch sized for `capacity` (usually block_count): width
 * 16 x next_pow2(max(capacity, 64)) counters per row (at most 2^26; sketch.c
 * says why 16), halving after 10 x width touches. 0, -EINVAL or -ENOMEM.
 * shared: touches may run concurrently (a registry's sketch, touched by
 * several pools): they use atomic read-modify-writes. Not shared: every touch
 * runs under one lock (a pool's private sketch, touched under the pool
 * mutex): plain relaxed loads and stores, no locked instructions; estimates
 * are the same. */
int kvb__sketch_create(uint32_t capacity, bool shared, const kvb_allocator *a,
                       struct kvb_sketch **out);
void kvb__sketch_destroy(struct kvb_sketch *s);
/* Count one occurrence of h. Lock-free. */
void kvb__sketch_touch(struct kvb_sketch *s, kvb_hash h);
/* Estimated frequency of h, 0..15. Lock-free, no side effect. */
uint32_t kvb__sketch_estimate(const struct kvb_sketch *s, kvb_hash h);
/* kvb_inactive_params.frequency adapter (ctx = the sketch). */
uint32_t kvb__sketch_frequency_cb(void *ctx, kvb_hash h);
/* Bytes held. */
size_t kvb__sketch_memory(const struct kvb_sketch *s);
/* Number of halvings performed so far (tests). */
uint64_t kvb__sketch_agings(const struct kvb_sketch *s);
/* Touches until the next halving (tests). */
uint64_t kvb__sketch_sample_size(const struct kvb_sketch *s);

/* ---- test-only accessors: the layout, for white-box tests ---- */
/* Counters per row (a power of two). */
uint32_t kvb__sketch_width(const struct kvb_sketch *s);
/* The counter index h uses in each of the 4 rows, and its doorkeeper bit. */
void kvb__sketch_slots(const struct kvb_sketch *s, kvb_hash h, uint32_t idx[4], uint32_t *door);
/* Value (0..15) of counter idx of row `row` (0 out of range). */
uint32_t kvb__sketch_counter(const struct kvb_sketch *s, uint32_t row, uint32_t idx);
/* Doorkeeper bit `bit` (false out of range). */
bool kvb__sketch_door_bit(const struct kvb_sketch *s, uint32_t bit);

#endif
