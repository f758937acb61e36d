/*
 * hash.c - content hashes (DESIGN.md section 4): the 128-bit positional lineage
 * hash kvb_hash, its accessors, and the token hashing that produces it.
 *
 * Layout. A kvb_hash is 128 bits, stored as {hi, lo} = (top 64 bits, low 64
 * bits). Most significant first:
 *
 *     [mode:2][position:P][current sequence hash:64][parent fragment:R]
 *
 *     mode 0: P =  8, R = 54   position < 256
 *     mode 1: P = 16, R = 46   position < 65536
 *     mode 2: P = 24, R = 38   position < 2^24 (KVB_HASH_MAX_POSITION + 1)
 *
 * so P = 8 * (mode + 1), R = 54 - 8 * mode and R + P = 62 in every mode. With
 * bit 0 the least significant bit of lo:
 *
 *     lo = fragment | current << R                   (fragment in bits [0, R))
 *     hi = current >> (64 - R) | position << R | mode << 62
 *
 * Every shift is in 10..62, never 0 or 64. The parent fragment is the low R bits
 * of the parent's 64-bit sequence hash (parent & (2^R - 1)), 0 for a first block.
 *
 * Invariants of every hash this file produces:
 *  - mode is the smallest mode whose position field holds the position; mode 3
 *    is never produced (a hash is "well formed" when this holds);
 *  - kvb_hash_current() returns the packed sequence hash unchanged, so the
 *    64-bit router projection of a block is exactly its sequence hash;
 *  - kvb_hash_extend(p, c) == kvb_hash_make(c, kvb_hash_current(p), true,
 *    kvb_hash_position(p) + 1).
 * Hashes built by callers from raw integers need not be well formed. The
 * accessors never fail on them: a mode-3 hash is decoded with the mode-2 field
 * widths, so kvb_hash_position() stays <= KVB_HASH_MAX_POSITION and
 * kvb_hash_fragment_bits() is always 54, 46 or 38. kvb_hash_is_parent() is
 * false and kvb_hash_extend() is -EINVAL when a hash is not well formed.
 *
 * Token hashing (XXH3-64 throughout, libxxhash), the scheme of NVIDIA Dynamo's
 * KV router:
 *  - salt hash  = XXH3-64(salt bytes, seed 0); an empty salt gives 0;
 *  - block hash = XXH3-64(token ids as little-endian u32, seed = salt hash);
 *  - sequence hash of block 0 = its block hash; of block i > 0 =
 *    XXH3-64(parent sequence hash as LE u64 || block hash as LE u64, seed 1337);
 *  - lineage hash of block i = kvb_hash_make(seq_i, seq_{i-1}, i > 0, i).
 * The chain step is byte-identical to Dynamo's compute_next_sequence_hash and
 * the block hash to its block hash for the same seed. Dynamo's router derives
 * that seed differently (1337 for an unsalted, non-LoRA request, not 0): pass
 * 1337 as salt_hash to reproduce its default block and sequence hashes.
 * Byte order is explicit: the chain input is assembled byte by byte; token
 * arrays are hashed in place only on little-endian hosts (checked at compile
 * time) and re-encoded through a small stack buffer and the XXH3 streaming API
 * otherwise (also forced with -DKVB_HASH_PORTABLE, which is how that path is
 * tested on little-endian machines).
 *
 * Functions returning uint64_t have no error channel: a NULL pointer with a
 * non-zero length is hashed as empty input (no crash).
 *
 * No global state: every function is pure and safe from any thread.
 */
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack (portable path) */
#include "internal.h"
#include "hash_layout.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

/* Seed of the sequence-hash chain step (Dynamo's XXH3_SEED). */
#define KVB_HASH_CHAIN_SEED 1337u

/* Largest number of blocks kvb_hash_tokens() may produce (positions 0..MAX). */
#define KVB_HASH_MAX_BLOCKS ((size_t)KVB_HASH_MAX_POSITION + 1)

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) &&                                 \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(KVB_HASH_PORTABLE)
/* The in-memory representation of a uint32_t array is its little-endian
 * encoding: hash token arrays in place. */
static const bool kvb_hash_le_host = true;
#else
static const bool kvb_hash_le_host = false;
#endif

_Static_assert(sizeof(kvb_hash) == 16, "kvb_hash must be two uint64_t without padding");
_Static_assert(KVB_HASH_MAX_POSITION == (1u << 24) - 1, "layout assumes a 24-bit position");

/* ---- layout: lib/hash_layout.h (shared with events.c's inlined decoding) ---- */

KVB_API uint64_t kvb_hash_child_fragment(uint64_t parent_seq, uint32_t child_position)
{
    return kvb__hash_child_fragment(parent_seq, child_position);
}

KVB_API int kvb_hash_make(uint64_t current, uint64_t parent, bool has_parent, uint32_t position,
                          kvb_hash *out)
{
    if (!out)
        return -EINVAL;
    if (position > KVB_HASH_MAX_POSITION)
        return -EOVERFLOW;
    uint32_t mode = kvb_hash_mode_for(position);
    uint32_t r = kvb_hash_r_bits(mode);
    uint64_t fragment = has_parent ? kvb_hash_fragment_of(parent, r) : 0;

    out->lo = fragment | current << r;
    out->hi = current >> (64 - r) | (uint64_t)position << r | (uint64_t)mode << 62;
    return 0;
}

KVB_API uint32_t kvb_hash_position(kvb_hash h)
{
    return kvb__hash_position(h);
}

KVB_API uint64_t kvb_hash_current(kvb_hash h)
{
    return kvb__hash_current(h);
}

KVB_API uint64_t kvb_hash_parent_fragment(kvb_hash h)
{
    return kvb__hash_parent_fragment(h);
}

KVB_API uint32_t kvb_hash_fragment_bits(kvb_hash h)
{
    return kvb_hash_r_bits(kvb_hash_mode(h));
}

KVB_API bool kvb_hash_equal(kvb_hash a, kvb_hash b)
{
    return a.hi == b.hi && a.lo == b.lo;
}

KVB_API bool kvb_hash_is_parent(kvb_hash parent, kvb_hash child)
{
    return kvb__hash_is_parent(parent, child);
}

KVB_API int kvb_hash_extend(kvb_hash parent, uint64_t current, kvb_hash *out)
{
    if (!out || !kvb__hash_well_formed(parent))
        return -EINVAL;
    uint32_t position = kvb_hash_position(parent);
    if (position >= KVB_HASH_MAX_POSITION)
        return -EOVERFLOW;
    return kvb_hash_make(current, kvb_hash_current(parent), true, position + 1, out);
}

KVB_API int kvb_hash_format(kvb_hash h, char *buf, size_t cap)
{
    if (!buf && cap > 0)
        return -EINVAL;
    /* At most 6 + 1 + 16 + 1 + 14 = 38 characters: the int return cannot overflow. */
    return snprintf(buf, cap, "%" PRIx32 ":%016" PRIx64 ":%" PRIx64, kvb_hash_position(h),
                    kvb_hash_current(h), kvb_hash_parent_fragment(h));
}

/* ---- token hashing --------------------------------------------------------- */

static inline void kvb_hash_store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void kvb_hash_store_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

KVB_API uint64_t kvb_hash_salt(const void *salt, size_t len)
{
    if (len == 0 || !salt)
        return 0;
    return XXH3_64bits_withSeed(salt, len, 0);
}

/* Any host: encode the tokens little-endian in chunks and stream them. */
static uint64_t kvb_hash_block_portable(const uint32_t *tokens, size_t n, uint64_t seed)
{
    enum { CHUNK = 64 }; /* tokens per update: a 256-byte stack buffer */
    unsigned char buf[CHUNK * 4];
    XXH3_state_t state;

    XXH3_INITSTATE(&state);
    /* With a valid state pointer, reset/update/digest cannot fail. */
    (void)XXH3_64bits_reset_withSeed(&state, seed);
    while (n > 0) {
        size_t k = n < CHUNK ? n : CHUNK;
        for (size_t i = 0; i < k; i++)
            kvb_hash_store_le32(buf + 4 * i, tokens[i]);
        (void)XXH3_64bits_update(&state, buf, 4 * k);
        tokens += k;
        n -= k;
    }
    return XXH3_64bits_digest(&state);
}

KVB_API uint64_t kvb_hash_block(const uint32_t *tokens, size_t n, uint64_t salt_hash)
{
    if (!tokens || n > SIZE_MAX / sizeof(uint32_t))
        n = 0;
    if (kvb_hash_le_host)
        return XXH3_64bits_withSeed(tokens, n * sizeof(uint32_t), salt_hash);
    return kvb_hash_block_portable(tokens, n, salt_hash);
}

KVB_API uint64_t kvb_hash_chain(uint64_t parent_seq, uint64_t block_hash)
{
    unsigned char buf[16];
    kvb_hash_store_le64(buf, parent_seq);
    kvb_hash_store_le64(buf + 8, block_hash);
    return XXH3_64bits_withSeed(buf, sizeof buf, KVB_HASH_CHAIN_SEED);
}

KVB_API int kvb_hash_tokens(const uint32_t *tokens, size_t n_tokens, uint32_t block_size,
                            uint64_t salt_hash, kvb_hash *out, size_t out_cap)
{
    if (block_size == 0 || block_size > 1024 || (block_size & (block_size - 1)) != 0)
        return -EINVAL;
    if ((!tokens && n_tokens > 0) || (!out && out_cap > 0))
        return -EINVAL;

    size_t n_blocks = n_tokens / block_size; /* a trailing partial block gets no hash */
    if (n_blocks > out_cap)
        n_blocks = out_cap;
    /* Checked before anything is written: a failed call changes nothing. */
    if (n_blocks > KVB_HASH_MAX_BLOCKS)
        return -EOVERFLOW;

    uint64_t parent = 0;
    for (size_t i = 0; i < n_blocks; i++) {
        uint64_t block = kvb_hash_block(tokens + i * block_size, block_size, salt_hash);
        uint64_t seq = i == 0 ? block : kvb_hash_chain(parent, block);
        int rc = kvb_hash_make(seq, parent, i > 0, (uint32_t)i, &out[i]);
        kvb_assert(rc == 0);
        (void)rc;
        parent = seq;
    }
    return (int)n_blocks;
}
