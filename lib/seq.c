/*
 * seq.c - sequences (include/kvblock/seq.h): one request's logical -> physical
 * block list on top of the pool API, with the semantics of the Rust paged pool
 * (allocate ahead, register full blocks, release everything) and vLLM's prefix
 * caching (match the cached prefix, register blocks as they fill).
 *
 * Layout of a sequence with len tokens and block size bs:
 *   [0, n_full)         registered kvb_block references, n_full == len / bs
 *   [n_full, n_blocks)  kvb_mutable blocks; block n_full holds the partial tail
 *                       (its tokens are kept in seq->tail for hashing)
 * ids[] mirrors the block id of every held block.
 *
 * Failure atomicity: every mutating call computes everything that can fail
 * without side effects first (hashes, limits), then performs the pool calls in
 * an order that can be undone (allocate -> release; stage -> reset;
 * register is all-or-nothing in the pool), and commits its own fields last.
 */
#include "internal.h"
#include "kvblock/seq.h"
#include "pool_internal.h"
#include <string.h>

static bool kvb_seq_ok(const kvb_seq *s)
{
    return s && s->pool && s->blocks;
}

/* Every array of a sequence comes from its pool's allocator hook
 * (kvb_pool_config.allocator), sized by max_blocks or block_size. */
#define KVB_SEQ_ARRAYS(X)                                                                          \
    X(blocks, max_blocks)                                                                          \
    X(muts, max_blocks)                                                                            \
    X(ids, max_blocks)                                                                             \
    X(hashes, max_blocks)                                                                          \
    X(staged, max_blocks)                                                                          \
    X(tail, block_size)                                                                            \
    X(scratch, block_size)

/* Free the arrays (NULL ones too) and zero seq; a zeroed seq is a no-op. */
static void kvb_seq_free(kvb_seq *seq)
{
    if (seq->pool) {
        const kvb_allocator *a = kvb__pool_allocator(seq->pool);
#define KVB_SEQ_FREE(f, n) kvb__free(a, seq->f, (size_t)seq->n * sizeof *seq->f);
        KVB_SEQ_ARRAYS(KVB_SEQ_FREE)
#undef KVB_SEQ_FREE
    }
    memset(seq, 0, sizeof *seq);
}

int kvb_seq_init(kvb_seq *seq, kvb_pool *pool, uint32_t max_blocks)
{
    if (!seq || !pool || max_blocks == 0 || max_blocks > KVB_HASH_MAX_POSITION + 1u)
        return -EINVAL;
    memset(seq, 0, sizeof *seq);
    uint32_t bs = kvb_pool_block_size(pool);
    if (bs == 0)
        return -EINVAL;
    /* pool and sizes first: kvb_seq_fini frees through them if an allocation fails */
    seq->pool = pool;
    seq->max_blocks = max_blocks;
    seq->block_size = bs;
    const kvb_allocator *a = kvb__pool_allocator(pool);
    bool ok = true;
#define KVB_SEQ_ALLOC(f, n)                                                                        \
    seq->f = ok ? kvb__calloc(a, seq->n, sizeof *seq->f) : NULL;                                   \
    ok = ok && seq->f;
    KVB_SEQ_ARRAYS(KVB_SEQ_ALLOC)
#undef KVB_SEQ_ALLOC
    if (!ok) {
        kvb_seq_free(seq); /* holds nothing yet: no release */
        return -ENOMEM;
    }
    return 0;
}

void kvb_seq_fini(kvb_seq *seq)
{
    if (!seq)
        return;
    if (kvb_seq_ok(seq))
        (void)kvb_seq_release(seq);
    kvb_seq_free(seq);
}

int kvb_seq_release(kvb_seq *seq)
{
    if (!kvb_seq_ok(seq))
        return -EINVAL;
    int rc = 0;
    /* newest first: allocated-ahead blocks, then the registered ones (one lock) */
    for (uint32_t i = seq->n_blocks; i-- > seq->n_full;) {
        int r = kvb_mutable_release(&seq->muts[i]);
        if (r && !rc)
            rc = r;
    }
    if (seq->n_full) {
        /* deepest block first (one lock for the batch): under recency policies the
         * prefix then leaves the cache after its descendants, never before them */
        for (uint32_t i = 0, j = seq->n_full - 1; i < j; i++, j--) {
            kvb_block tmp = seq->blocks[i];
            seq->blocks[i] = seq->blocks[j];
            seq->blocks[j] = tmp;
        }
        int r = kvb_block_release_n(seq->blocks, seq->n_full);
        if (r && !rc)
            rc = r;
    }
    /* handles the pool refused (stale) are dropped: they no longer own anything */
    memset(seq->blocks, 0, (size_t)seq->max_blocks * sizeof *seq->blocks);
    memset(seq->muts, 0, (size_t)seq->max_blocks * sizeof *seq->muts);
    seq->n_blocks = seq->n_full = seq->len = 0;
    seq->salt_hash = seq->parent_seq = 0;
    return rc;
}

int kvb_seq_set_salt(kvb_seq *seq, uint64_t salt_hash)
{
    if (!kvb_seq_ok(seq))
        return -EINVAL;
    if (seq->n_blocks || seq->len)
        return -EBUSY;
    seq->salt_hash = salt_hash;
    return 0;
}

int kvb_seq_set_retention(kvb_seq *seq, const kvb_retention *r)
{
    if (!kvb_seq_ok(seq))
        return -EINVAL;
    if (r) {
        uint32_t pr, d;
        if (kvb_retention_lookup(r, 0, &pr, &d) != 0)
            return -EINVAL;
    }
    seq->retention = r;
    return 0;
}

int kvb_seq_match_prefix(kvb_seq *seq, const uint32_t *tokens, uint32_t n_tokens)
{
    if (!kvb_seq_ok(seq) || (n_tokens && !tokens))
        return -EINVAL;
    if (seq->n_blocks || seq->len)
        return -EBUSY;
    uint32_t nb = n_tokens / seq->block_size;
    if (nb > seq->max_blocks)
        nb = seq->max_blocks;
    if (nb == 0)
        return 0;
    int n = kvb_hash_tokens(tokens, (size_t)nb * seq->block_size, seq->block_size, seq->salt_hash,
                            seq->hashes, nb);
    if (n < 0)
        return n;
    int k = kvb_pool_match(seq->pool, seq->hashes, (uint32_t)n, seq->blocks);
    if (k <= 0)
        return k;
    for (int i = 0; seq->retention && i < k; i++) { /* the adopted prefix is this request's too */
        uint32_t pr, d;
        kvb_retention_lookup(seq->retention, (uint64_t)i * seq->block_size, &pr, &d);
        int rc = kvb_block_set_priority(&seq->blocks[i], pr, d);
        if (rc < 0) {
            kvb_block_release_n(seq->blocks, (uint32_t)k);
            return rc;
        }
    }
    for (int i = 0; i < k; i++)
        seq->ids[i] = seq->blocks[i].id;
    seq->n_full = seq->n_blocks = (uint32_t)k;
    seq->len = (uint32_t)k * seq->block_size;
    seq->parent_seq = kvb_hash_current(seq->hashes[k - 1]);
    return (int)seq->len;
}

int kvb_seq_ensure_capacity(kvb_seq *seq, uint32_t target_len)
{
    if (!kvb_seq_ok(seq))
        return -EINVAL;
    uint64_t need = ((uint64_t)target_len + seq->block_size - 1) / seq->block_size;
    if (need > seq->max_blocks)
        return -E2BIG;
    if (need <= seq->n_blocks)
        return 0;
    uint32_t add = (uint32_t)need - seq->n_blocks;
    int rc = kvb_pool_allocate(seq->pool, add, &seq->muts[seq->n_blocks], NULL, NULL);
    if (rc)
        return rc;
    for (uint32_t i = seq->n_blocks; i < need; i++)
        seq->ids[i] = seq->muts[i].id;
    seq->n_blocks = (uint32_t)need;
    return (int)add;
}

/* Give back blocks [from, n_blocks) allocated by a call that is failing. */
static void kvb_seq_shrink(kvb_seq *seq, uint32_t from)
{
    for (uint32_t i = seq->n_blocks; i-- > from;)
        (void)kvb_mutable_release(&seq->muts[i]);
    seq->n_blocks = from;
}

int kvb_seq_append_tokens(kvb_seq *seq, const uint32_t *tokens, uint32_t n)
{
    if (!kvb_seq_ok(seq) || (n && !tokens))
        return -EINVAL;
    if (n == 0)
        return 0;
    const uint32_t bs = seq->block_size;
    uint64_t new_len = (uint64_t)seq->len + n;
    if (new_len > (uint64_t)seq->max_blocks * bs || new_len > UINT32_MAX)
        return -E2BIG;
    const uint32_t old_blocks = seq->n_blocks;
    int rc = kvb_seq_ensure_capacity(seq, (uint32_t)new_len);
    if (rc < 0)
        return rc;

    /* 1. hashes of the blocks this call completes (no side effects) */
    const uint32_t first = seq->n_full, p = seq->len % bs;
    const uint32_t nc = (uint32_t)(new_len / bs) - first;
    uint64_t parent = seq->parent_seq;
    for (uint32_t j = 0; j < nc; j++) {
        const uint32_t *content;
        if (j == 0 && p) {
            memcpy(seq->scratch, seq->tail, p * sizeof *seq->scratch);
            memcpy(seq->scratch + p, tokens, (bs - p) * sizeof *seq->scratch);
            content = seq->scratch;
        } else {
            content = tokens + (size_t)j * bs - p;
        }
        uint32_t pos = first + j;
        uint64_t bh = kvb_hash_block(content, bs, seq->salt_hash);
        uint64_t cur = pos == 0 ? bh : kvb_hash_chain(parent, bh);
        rc = kvb_hash_make(cur, parent, pos > 0, pos, &seq->hashes[j]);
        if (rc) {
            kvb_seq_shrink(seq, old_blocks);
            return rc;
        }
        parent = cur;
    }

    /* 2. stage and register them (undone on failure) */
    if (nc) {
        uint32_t j = 0;
        for (; j < nc; j++) {
            rc = kvb_mutable_stage(&seq->muts[first + j], seq->hashes[j], &seq->staged[j]);
            if (rc)
                break;
        }
        if (!rc)
            rc = kvb_pool_register_retained(seq->pool, seq->staged, nc, seq->retention,
                                            &seq->blocks[first]);
        if (rc) {
            for (uint32_t i = 0; i < j; i++)
                (void)kvb_complete_reset(&seq->staged[i], &seq->muts[first + i]);
            kvb_seq_shrink(seq, old_blocks);
            return rc;
        }
        for (uint32_t i = 0; i < nc; i++) {
            memset(&seq->muts[first + i], 0, sizeof seq->muts[first + i]);
            seq->ids[first + i] = seq->blocks[first + i].id;
        }
        seq->parent_seq = parent;
    }

    /* 3. commit: length and the partial tail */
    uint32_t r = (uint32_t)(new_len % bs);
    if (nc == 0)
        memcpy(seq->tail + p, tokens, n * sizeof *tokens);
    else
        memcpy(seq->tail, tokens + n - r, r * sizeof *tokens);
    seq->n_full = first + nc;
    seq->len = (uint32_t)new_len;
    return (int)nc;
}

int kvb_seq_fork(const kvb_seq *src, kvb_seq *dst, uint32_t *copy_src, uint32_t *copy_dst)
{
    if (!kvb_seq_ok(src) || !kvb_seq_ok(dst) || src == dst || src->pool != dst->pool || !copy_src ||
        !copy_dst)
        return -EINVAL;
    if (dst->n_blocks || dst->len)
        return -EBUSY;
    const uint32_t bs = src->block_size, r = src->len % bs;
    const uint32_t need = src->n_full + (r ? 1 : 0);
    if (need > dst->max_blocks)
        return -E2BIG;
    if (r) {
        int rc = kvb_pool_allocate(dst->pool, 1, &dst->muts[src->n_full], NULL, NULL);
        if (rc)
            return rc;
    }
    for (uint32_t i = 0; i < src->n_full; i++) {
        int rc = kvb_block_clone(&src->blocks[i], &dst->blocks[i]);
        if (rc) {
            if (i)
                (void)kvb_block_release_n(dst->blocks, i);
            if (r)
                (void)kvb_mutable_release(&dst->muts[src->n_full]);
            return rc;
        }
        dst->ids[i] = dst->blocks[i].id;
    }
    dst->n_full = src->n_full;
    dst->n_blocks = need;
    dst->len = src->len;
    dst->salt_hash = src->salt_hash;
    dst->parent_seq = src->parent_seq;
    if (!r)
        return 0;
    memcpy(dst->tail, src->tail, r * sizeof *dst->tail);
    dst->ids[src->n_full] = dst->muts[src->n_full].id;
    *copy_src = src->ids[src->n_full];
    *copy_dst = dst->ids[src->n_full];
    return 1;
}

uint32_t kvb_seq_len(const kvb_seq *seq)
{
    return seq ? seq->len : 0;
}

uint32_t kvb_seq_num_blocks(const kvb_seq *seq)
{
    return seq ? seq->n_blocks : 0;
}

uint32_t kvb_seq_num_registered(const kvb_seq *seq)
{
    return seq ? seq->n_full : 0;
}

uint32_t kvb_seq_capacity(const kvb_seq *seq)
{
    return seq ? seq->n_blocks * seq->block_size : 0;
}

const uint32_t *kvb_seq_block_ids(const kvb_seq *seq)
{
    return seq ? seq->ids : NULL;
}

int kvb_seq_block_hash(const kvb_seq *seq, uint32_t i, kvb_hash *out)
{
    if (!kvb_seq_ok(seq) || !out)
        return -EINVAL;
    if (i >= seq->n_full)
        return -ERANGE;
    *out = seq->blocks[i].hash;
    return 0;
}

const kvb_block *kvb_seq_blocks(const kvb_seq *seq)
{
    return seq ? seq->blocks : NULL;
}
