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

/*
 * Keys of the event module's parent index (events.c), decoded once per record.
 * A key is one 64-bit word: the child's mode m (2 bits, a function of the
 * position) on top, the position below it and the fragment in the low
 * r = 54 - 8m bits (a position below 2^(8m + 8) and a fragment below 2^r fill at
 * most 62 bits, so the packing is injective). h is the parent of c
 * (kvb__hash_is_parent) exactly when both are well formed and c's pkey equals
 * h's skey.
 */
/* One hash's index keys and well-formedness, decoded once (kvb_ev_keys). */
struct kvb_ev_keys {
    uint64_t skey; /* key h is indexed under: (position, fragment a child keeps) */
    uint64_t pkey; /* key of h's parent: (position - 1, h's parent fragment) */
    bool has_pkey; /* position > 0 and the fragment fits a well-formed parent's key */
    bool wf;       /* kvb__hash_well_formed(h) */
};

/* The key h is stored under, with its decoded mode, position and r. r <= 54,
 * so the masks below are plain shifts (no 64-bit special case). */
static inline uint64_t kvb_ev_skey(kvb_hash h, uint32_t *raw_out, uint32_t *pos_out,
                                   uint32_t *r_out)
{
    uint32_t raw = (uint32_t)(h.hi >> 62);
    uint32_t mode = raw > 2 ? 2 : raw;
    uint32_t r = 54 - 8 * mode;
    uint32_t pos = (uint32_t)((h.hi >> r) & (((uint64_t)1 << (8 * mode + 8)) - 1));
    *raw_out = raw;
    *pos_out = pos;
    *r_out = r;
    /* the fragment a child at pos + 1 keeps of h's sequence hash (none past the
     * last position); the high bits of hi shift out of the sequence hash */
    uint32_t cmode = kvb_hash_mode_for(pos + 1);
    uint32_t cr = 54 - 8 * cmode;
    uint64_t cur = h.lo >> r | h.hi << (64 - r);
    uint64_t frag = pos + 1 > KVB_HASH_MAX_POSITION ? 0 : cur & (((uint64_t)1 << cr) - 1);
    return (uint64_t)cmode << 62 | (uint64_t)pos << cr | frag;
}

/* Stored key only (REMOVED records, prefetch). */
static inline uint64_t kvb_ev_skey_of(kvb_hash h)
{
    uint32_t raw, pos, r;
    return kvb_ev_skey(h, &raw, &pos, &r);
}

/* Every key of a STORED record's hash. */
static inline struct kvb_ev_keys kvb_ev_keys(kvb_hash h)
{
    struct kvb_ev_keys k;
    uint32_t raw, pos, r;
    k.skey = kvb_ev_skey(h, &raw, &pos, &r);
    uint32_t pmode = kvb_hash_mode_for(pos);
    k.wf = raw == pmode;
    /* parent key: where a parent at pos - 1 is indexed; a fragment wider than
     * that key's (a malformed h) matches no stored hash */
    uint32_t pr = 54 - 8 * pmode;
    uint64_t pfrag = h.lo & (((uint64_t)1 << r) - 1);
    k.has_pkey = pos > 0 && pfrag >> pr == 0;
    k.pkey = (uint64_t)pmode << 62 | (uint64_t)(pos - 1) << pr | pfrag;
    return k;
}

#endif
