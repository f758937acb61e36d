/*
 * hash_layout.h - the kvb_hash bit layout as inline decoders (private). The
 * layout itself is described at the top of hash.c; hash.c's public accessors
 * (kvb_hash_position, kvb_hash_current, kvb_hash_is_parent, ...) are these
 * functions, and the event module (events.c) uses them inline on its per-block
 * path, where an out-of-line call per accessor cost more than the work.
 */
#ifndef KVB_HASH_LAYOUT_H
#define KVB_HASH_LAYOUT_H

#include "kvblock.h"

#include <stdbool.h>
#include <stdint.h>

static inline uint64_t kvb_hash_mask(uint32_t bits)
{
    return bits >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
}

/* Mode of a position (must be <= KVB_HASH_MAX_POSITION). */
static inline uint32_t kvb_hash_mode_for(uint32_t position)
{
    return position < (1u << 8) ? 0 : position < (1u << 16) ? 1 : 2;
}

/* Decoded mode; mode 3 (never produced) is read with mode 2's field widths. */
static inline uint32_t kvb_hash_mode(kvb_hash h)
{
    uint32_t mode = (uint32_t)(h.hi >> 62);
    return mode > 2 ? 2 : mode;
}

static inline uint32_t kvb_hash_r_bits(uint32_t mode)
{
    return 54 - 8 * mode;
}

static inline uint32_t kvb_hash_p_bits(uint32_t mode)
{
    return 8 * (mode + 1);
}

/* Low R bits of a 64-bit sequence hash: the fragment a child stores. Low, not
 * top: real sequence hashes are uniform in every bit, but hashes built from
 * small integers (trace ids) differ only in their low bits, and with the top
 * bits every such block would look like the child of every block one position
 * up (prefix-aware eviction and event parents could not tell them apart). */
static inline uint64_t kvb_hash_fragment_of(uint64_t seq, uint32_t r)
{
    return seq & kvb_hash_mask(r);
}

static inline uint32_t kvb__hash_position(kvb_hash h)
{
    uint32_t mode = kvb_hash_mode(h);
    return (uint32_t)((h.hi >> kvb_hash_r_bits(mode)) & kvb_hash_mask(kvb_hash_p_bits(mode)));
}

static inline uint64_t kvb__hash_current(kvb_hash h)
{
    uint32_t r = kvb_hash_r_bits(kvb_hash_mode(h));
    return h.lo >> r | (h.hi & kvb_hash_mask(r)) << (64 - r);
}

static inline uint64_t kvb__hash_parent_fragment(kvb_hash h)
{
    return h.lo & kvb_hash_mask(kvb_hash_r_bits(kvb_hash_mode(h)));
}

static inline uint64_t kvb__hash_child_fragment(uint64_t parent_seq, uint32_t child_position)
{
    if (child_position > KVB_HASH_MAX_POSITION)
        return 0;
    return kvb_hash_fragment_of(parent_seq, kvb_hash_r_bits(kvb_hash_mode_for(child_position)));
}

/* Produced by kvb_hash_make(): mode not 3 and minimal for the position. */
static inline bool kvb__hash_well_formed(kvb_hash h)
{
    uint32_t raw_mode = (uint32_t)(h.hi >> 62);
    return raw_mode != 3 && raw_mode == kvb_hash_mode_for(kvb__hash_position(h));
}

static inline bool kvb__hash_is_parent(kvb_hash parent, kvb_hash child)
{
    if (!kvb__hash_well_formed(parent) || !kvb__hash_well_formed(child))
        return false;
    /* Positions are <= 2^24 - 1 here, so + 1 cannot wrap. */
    if (kvb__hash_position(child) != kvb__hash_position(parent) + 1)
        return false;
    /* The child's mode decides how many bits of the parent it kept (the two
     * modes differ across 255 -> 256 and 65535 -> 65536). */
    uint32_t r = kvb_hash_r_bits(kvb_hash_mode(child));
    return kvb__hash_parent_fragment(child) == kvb_hash_fragment_of(kvb__hash_current(parent), r);
}

#endif
