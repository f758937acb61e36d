/*
 * device.c - the device front end: backend selection, block-table shadows with
 * dirty-span tracking, argument and hazard checks, statistics.
 *
 * It sits in lib/ beside the eviction front end (inactive.c), and the backends
 * it drives sit in backends/device/ (cpu.c, vulkan/) beside the eviction
 * backends; the contract between them is device_backend.h.
 *
 * Dirty tracking. Every edit writes the host shadow at once and compares old
 * and new values, so only entries whose value really changed are marked: a
 * scheduler that rewrites whole rows each step (vLLM style) uploads only the
 * entries that differ. Per row the changed entries form one interval
 * [dirty_lo, dirty_hi); a bitmap lists the dirty rows and another the dirty
 * context lengths, so a sync costs O(max_seqs / 64 + dirty rows).
 *
 * Coalescing. At sync the dirty intervals are visited in image order and two
 * consecutive intervals are merged when the gap between them is at most
 * KVB__GAP_WORDS: copying a few unchanged words (equal on host and device, since
 * only dirty words differ) is cheaper than one more copy region. A full-table
 * rewrite therefore becomes one region, and scattered single entries stay
 * separate regions.
 *
 * Invariant: every word of the shadow that is not inside a dirty interval (or a
 * dirty context length) equals the device image.
 */
#include "device_backend.h"
#include "internal.h"
#include <stdlib.h>
#include <string.h>

/* Merge dirty intervals separated by at most this many unchanged words (see top). */
#define KVB__GAP_WORDS 64

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */
/* ------------------------------------------------------------------------ */

static const struct kvb_device_ops *kvb_device_ops_for(kvb_device_kind kind)
{
    switch (kind) {
    case KVB_DEVICE_CPU:
        return &kvb__device_cpu_ops;
    case KVB_DEVICE_VULKAN:
#ifdef KVB_HAVE_VULKAN
        return &kvb__device_vulkan_ops;
#else
        return NULL;
#endif
    default:
        return NULL;
    }
}

static int kvb_device_try(const struct kvb_device_ops *ops, bool require_gpu, kvb_device **out)
{
    kvb_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return -ENOMEM;
    dev->ops = ops;
    dev->kind = ops->kind;
    atomic_init(&dev->refs, 1);
    snprintf(dev->name, sizeof dev->name, "%s", ops->name);
    int rc = ops->open(dev, require_gpu);
    if (rc) {
        free(dev);
        return rc;
    }
    *out = dev;
    return 0;
}

int kvb_device_open(kvb_device_kind kind, kvb_device **out)
{
    if (!out)
        return -EINVAL;
    if (kind == KVB_DEVICE_CPU || kind == KVB_DEVICE_VULKAN) {
        const struct kvb_device_ops *ops = kvb_device_ops_for(kind);
        if (!ops)
            return -ENODEV;
        return kvb_device_try(ops, false, out);
    }
    if (kind != KVB_DEVICE_AUTO)
        return -EINVAL;

    const char *env = getenv("KVBLOCK_DEVICE");
    if (env && *env) {
        if (strcmp(env, "cpu") == 0)
            return kvb_device_open(KVB_DEVICE_CPU, out);
        if (strcmp(env, "vulkan") == 0)
            return kvb_device_open(KVB_DEVICE_VULKAN, out);
        return -EINVAL;
    }
    const struct kvb_device_ops *vk = kvb_device_ops_for(KVB_DEVICE_VULKAN);
    if (vk && kvb_device_try(vk, true, out) == 0)
        return 0;
    return kvb_device_try(&kvb__device_cpu_ops, false, out);
}

const char *kvb_device_name(const kvb_device *dev)
{
    return dev ? dev->name : "(null)";
}

kvb_device_kind kvb_device_get_kind(const kvb_device *dev)
{
    return dev ? dev->kind : KVB_DEVICE_AUTO;
}

static void kvb_device_get(kvb_device *dev)
{
    /* relaxed: the caller already holds a reference, nothing to order */
    atomic_fetch_add_explicit(&dev->refs, 1, memory_order_relaxed);
}

static void kvb_device_put(kvb_device *dev)
{
    /* acq_rel: pairs with the other puts so the last one sees all children freed */
    if (atomic_fetch_sub_explicit(&dev->refs, 1, memory_order_acq_rel) == 1) {
        dev->ops->close(dev);
        free(dev);
    }
}

void kvb_device_close(kvb_device *dev)
{
    if (dev)
        kvb_device_put(dev);
}

int kvb_device_wait_idle(kvb_device *dev)
{
    if (!dev)
        return -EINVAL;
    return dev->ops->wait_idle(dev);
}

int kvb_device_get_stats(const kvb_device *dev, kvb_device_stats *out)
{
    if (!dev || !out)
        return -EINVAL;
    kvb_device *d = (kvb_device *)dev; /* atomic loads need a non-const object */
#define KVB__LOAD(f) out->f = atomic_load_explicit(&d->ctr.f, memory_order_relaxed)
    KVB__LOAD(submissions);
    KVB__LOAD(syncs);
    KVB__LOAD(upload_bytes);
    KVB__LOAD(upload_regions);
    KVB__LOAD(dispatches);
    KVB__LOAD(tokens);
    KVB__LOAD(blocks_copied);
    KVB__LOAD(waits);
#undef KVB__LOAD
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tables: shadow and dirty tracking                                        */
/* ------------------------------------------------------------------------ */

static void kvb_table_free(kvb_table *t)
{
    free(t->host);
    free(t->row_len);
    free(t->dirty_lo);
    free(t->dirty_hi);
    free(t->dirty_rows);
    free(t->dirty_ctx);
    free(t->spans);
    free(t);
}

int kvb_table_create(kvb_device *dev, uint32_t max_seqs, uint32_t max_blocks, uint32_t block_size,
                     kvb_table **out)
{
    if (!dev || !out || max_seqs == 0 || max_blocks == 0 || block_size == 0 || block_size > 1024)
        return -EINVAL;
    uint64_t words = (uint64_t)max_seqs * max_blocks;
    /* the image must be addressable with 32-bit word offsets by the shaders */
    if (words + max_seqs > UINT32_MAX)
        return -E2BIG;
    kvb_table *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->dev = dev;
    t->max_seqs = max_seqs;
    t->max_blocks = max_blocks;
    t->block_size = block_size;
    t->table_words = words;
    t->image_words = words + max_seqs;
    t->bitmap_words = (max_seqs + 63) / 64;
    t->host = calloc(t->image_words, sizeof *t->host);
    t->row_len = calloc(max_seqs, sizeof *t->row_len);
    t->dirty_lo = calloc(max_seqs, sizeof *t->dirty_lo);
    t->dirty_hi = calloc(max_seqs, sizeof *t->dirty_hi);
    t->dirty_rows = calloc(t->bitmap_words, sizeof *t->dirty_rows);
    t->dirty_ctx = calloc(t->bitmap_words, sizeof *t->dirty_ctx);
    t->spans = calloc(2 * (size_t)max_seqs + 1, sizeof *t->spans);
    if (!t->host || !t->row_len || !t->dirty_lo || !t->dirty_hi || !t->dirty_rows ||
        !t->dirty_ctx || !t->spans) {
        kvb_table_free(t);
        return -ENOMEM;
    }
    int rc = dev->ops->table_create(t);
    if (rc) {
        kvb_table_free(t);
        return rc;
    }
    kvb_device_get(dev);
    *out = t;
    return 0;
}

void kvb_table_destroy(kvb_table *t)
{
    if (!t)
        return;
    kvb_device *dev = t->dev;
    dev->ops->table_destroy(t);
    kvb_table_free(t);
    kvb_device_put(dev);
}

static inline int32_t *kvb_row(kvb_table *t, uint32_t row)
{
    return t->host + (uint64_t)row * t->max_blocks;
}

static void kvb_mark_row(kvb_table *t, uint32_t row, uint32_t lo, uint32_t hi)
{
    if (lo >= hi)
        return;
    uint64_t bit = 1ull << (row & 63);
    uint64_t *w = &t->dirty_rows[row >> 6];
    if (!(*w & bit)) {
        *w |= bit;
        t->dirty_lo[row] = lo;
        t->dirty_hi[row] = hi;
        t->n_dirty++;
        return;
    }
    if (lo < t->dirty_lo[row])
        t->dirty_lo[row] = lo;
    if (hi > t->dirty_hi[row])
        t->dirty_hi[row] = hi;
}

static void kvb_set_ctx(kvb_table *t, uint32_t row, int32_t v)
{
    int32_t *c = &t->host[t->table_words + row];
    if (*c == v)
        return;
    *c = v;
    uint64_t bit = 1ull << (row & 63);
    uint64_t *w = &t->dirty_ctx[row >> 6];
    if (!(*w & bit)) {
        *w |= bit;
        t->n_dirty++;
    }
}

/* Write entries [from, from + n) of a row (vals NULL: zeros), marking what changed. */
static void kvb_write_entries(kvb_table *t, uint32_t row, uint32_t from, const uint32_t *vals,
                              uint32_t n)
{
    int32_t *r = kvb_row(t, row);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = vals ? (int32_t)vals[i] : 0;
        if (r[from + i] != v) {
            r[from + i] = v;
            if (lo == UINT32_MAX)
                lo = from + i;
            hi = from + i + 1;
        }
    }
    if (lo != UINT32_MAX)
        kvb_mark_row(t, row, lo, hi);
}

static int kvb_check_ids(const uint32_t *ids, uint32_t n)
{
    if (n && !ids)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] > INT32_MAX)
            return -EINVAL;
    return 0;
}

int kvb_table_set_row(kvb_table *t, uint32_t row, const uint32_t *ids, uint32_t n)
{
    if (!t)
        return -EINVAL;
    if (row >= t->max_seqs || n > t->max_blocks)
        return -ERANGE;
    int rc = kvb_check_ids(ids, n);
    if (rc)
        return rc;
    uint32_t old = t->row_len[row];
    kvb_write_entries(t, row, 0, ids, n);
    if (old > n)
        kvb_write_entries(t, row, n, NULL, old - n);
    t->row_len[row] = n;
    return 0;
}

int kvb_table_append(kvb_table *t, uint32_t row, const uint32_t *ids, uint32_t n)
{
    if (!t)
        return -EINVAL;
    if (row >= t->max_seqs || n > t->max_blocks - t->row_len[row])
        return -ERANGE;
    int rc = kvb_check_ids(ids, n);
    if (rc)
        return rc;
    kvb_write_entries(t, row, t->row_len[row], ids, n);
    t->row_len[row] += n;
    return 0;
}

int kvb_table_clear_row(kvb_table *t, uint32_t row)
{
    if (!t)
        return -EINVAL;
    if (row >= t->max_seqs)
        return -ERANGE;
    kvb_write_entries(t, row, 0, NULL, t->row_len[row]);
    t->row_len[row] = 0;
    kvb_set_ctx(t, row, 0);
    return 0;
}

int kvb_table_move_row(kvb_table *t, uint32_t from, uint32_t to)
{
    if (!t)
        return -EINVAL;
    if (from >= t->max_seqs || to >= t->max_seqs)
        return -ERANGE;
    if (from == to)
        return 0;
    uint32_t lf = t->row_len[from], lt = t->row_len[to];
    kvb_write_entries(t, to, 0, (const uint32_t *)kvb_row(t, from), lf);
    if (lt > lf)
        kvb_write_entries(t, to, lf, NULL, lt - lf);
    t->row_len[to] = lf;
    kvb_set_ctx(t, to, t->host[t->table_words + from]);
    kvb_write_entries(t, from, 0, NULL, lf);
    t->row_len[from] = 0;
    kvb_set_ctx(t, from, 0);
    return 0;
}

int kvb_table_swap_rows(kvb_table *t, uint32_t a, uint32_t b)
{
    if (!t)
        return -EINVAL;
    if (a >= t->max_seqs || b >= t->max_seqs)
        return -ERANGE;
    if (a == b)
        return 0;
    uint32_t la = t->row_len[a], lb = t->row_len[b];
    uint32_t n = la > lb ? la : lb;
    int32_t *ra = kvb_row(t, a), *rb = kvb_row(t, b);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t va = ra[i], vb = rb[i];
        if (va != vb) {
            ra[i] = vb;
            rb[i] = va;
            if (lo == UINT32_MAX)
                lo = i;
            hi = i + 1;
        }
    }
    if (lo != UINT32_MAX) {
        kvb_mark_row(t, a, lo, hi);
        kvb_mark_row(t, b, lo, hi);
    }
    t->row_len[a] = lb;
    t->row_len[b] = la;
    int32_t ca = t->host[t->table_words + a], cb = t->host[t->table_words + b];
    kvb_set_ctx(t, a, cb);
    kvb_set_ctx(t, b, ca);
    return 0;
}

int kvb_table_set_context_len(kvb_table *t, uint32_t row, uint32_t len)
{
    if (!t || len > INT32_MAX)
        return -EINVAL;
    if (row >= t->max_seqs)
        return -ERANGE;
    kvb_set_ctx(t, row, (int32_t)len);
    return 0;
}

uint32_t kvb_table_row_len(const kvb_table *t, uint32_t row)
{
    if (!t || row >= t->max_seqs)
        return 0;
    return t->row_len[row];
}

/* Append [off, off + n) to the span list, merging with the last span across small gaps. */
static inline void kvb_span_push(kvb__span *spans, uint32_t *count, uint64_t off, uint64_t n)
{
    if (*count) {
        kvb__span *last = &spans[*count - 1];
        uint64_t end = last->off + last->n;
        if (off <= end + KVB__GAP_WORDS) {
            uint64_t nend = off + n > end ? off + n : end;
            last->n = nend - last->off;
            return;
        }
    }
    spans[*count].off = off;
    spans[*count].n = n;
    (*count)++;
}

/* Coalesced dirty spans of the image, in increasing order. */
static uint32_t kvb_table_spans(kvb_table *t)
{
    uint32_t count = 0;
    if (!t->n_dirty)
        return 0;
    for (uint32_t w = 0; w < t->bitmap_words; w++) {
        uint64_t bits = t->dirty_rows[w];
        while (bits) {
            uint32_t row = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            uint64_t base = (uint64_t)row * t->max_blocks;
            kvb_span_push(t->spans, &count, base + t->dirty_lo[row],
                          t->dirty_hi[row] - t->dirty_lo[row]);
        }
    }
    for (uint32_t w = 0; w < t->bitmap_words; w++) {
        uint64_t bits = t->dirty_ctx[w];
        while (bits) {
            uint32_t row = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            kvb_span_push(t->spans, &count, t->table_words + row, 1);
        }
    }
    return count;
}

static void kvb_table_clean(kvb_table *t, uint32_t nspans)
{
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < nspans; i++)
        bytes += t->spans[i].n * sizeof(int32_t);
    memset(t->dirty_rows, 0, t->bitmap_words * sizeof *t->dirty_rows);
    memset(t->dirty_ctx, 0, t->bitmap_words * sizeof *t->dirty_ctx);
    t->n_dirty = 0;
    KVB__COUNT(t->dev, syncs, 1);
    KVB__COUNT(t->dev, upload_bytes, bytes);
    KVB__COUNT(t->dev, upload_regions, nspans);
}

int kvb_table_sync(kvb_table *t)
{
    if (!t)
        return -EINVAL;
    uint32_t n = kvb_table_spans(t);
    if (n == 0)
        return 0;
    int rc = t->dev->ops->table_upload(t, t->spans, n);
    if (rc)
        return rc;
    kvb_table_clean(t, n);
    return 0;
}

int kvb_table_slot_mapping(kvb_table *t, const uint32_t *rows, const uint32_t *pos,
                           uint32_t num_tokens, uint32_t padded, int64_t *out)
{
    if (!t || padded < num_tokens || (num_tokens && (!rows || !pos)) || (padded && !out))
        return -EINVAL;
    const uint32_t max_seqs = t->max_seqs, bs = t->block_size;
    const uint32_t *row_len = t->row_len;
    for (uint32_t i = 0; i < num_tokens; i++) {
        uint32_t r = rows[i];
        if (r >= max_seqs || (uint64_t)pos[i] >= (uint64_t)row_len[r] * bs)
            return -ERANGE;
    }
    if (num_tokens == 0) {
        for (uint32_t i = 0; i < padded; i++)
            out[i] = -1;
        return 0;
    }
    uint32_t n = kvb_table_spans(t);
    int rc = t->dev->ops->slot_mapping(t, t->spans, n, rows, pos, num_tokens, padded, out);
    if (rc)
        return rc;
    if (n)
        kvb_table_clean(t, n);
    KVB__COUNT(t->dev, tokens, num_tokens);
    return 0;
}

int kvb_table_read_row(kvb_table *t, uint32_t row, int32_t *out, uint32_t n)
{
    if (!t || (n && !out))
        return -EINVAL;
    if (row >= t->max_seqs || n > t->max_blocks)
        return -ERANGE;
    if (n == 0)
        return 0;
    return t->dev->ops->table_read(t, (uint64_t)row * t->max_blocks, n, out);
}

int kvb_table_read_context_lens(kvb_table *t, uint32_t first, uint32_t n, int32_t *out)
{
    if (!t || (n && !out))
        return -EINVAL;
    if (first > t->max_seqs || n > t->max_seqs - first)
        return -ERANGE;
    if (n == 0)
        return 0;
    return t->dev->ops->table_read(t, t->table_words + first, n, out);
}

/* ------------------------------------------------------------------------ */
/* KV buffers                                                               */
/* ------------------------------------------------------------------------ */

int kvb_kv_buffer_create(kvb_device *dev, uint32_t num_blocks, size_t block_bytes,
                         kvb_kv_buffer **out)
{
    if (!dev || !out || num_blocks == 0 || block_bytes == 0)
        return -EINVAL;
    if (block_bytes > SIZE_MAX / num_blocks)
        return -ENOMEM;
    kvb_kv_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->dev = dev;
    b->num_blocks = num_blocks;
    b->block_bytes = block_bytes;
    b->src_mark = calloc(num_blocks, sizeof *b->src_mark);
    b->dst_mark = calloc(num_blocks, sizeof *b->dst_mark);
    int rc = (b->src_mark && b->dst_mark) ? dev->ops->kv_create(b) : -ENOMEM;
    if (rc) {
        free(b->src_mark);
        free(b->dst_mark);
        free(b);
        return rc;
    }
    kvb_device_get(dev);
    *out = b;
    return 0;
}

void kvb_kv_buffer_destroy(kvb_kv_buffer *b)
{
    if (!b)
        return;
    kvb_device *dev = b->dev;
    dev->ops->kv_destroy(b);
    free(b->src_mark);
    free(b->dst_mark);
    free(b);
    kvb_device_put(dev);
}

uint32_t kvb_kv_buffer_num_blocks(const kvb_kv_buffer *b)
{
    return b ? b->num_blocks : 0;
}

size_t kvb_kv_buffer_block_bytes(const kvb_kv_buffer *b)
{
    return b ? b->block_bytes : 0;
}

int kvb_kv_buffer_write(kvb_kv_buffer *b, uint32_t block, const void *src)
{
    if (!b || !src)
        return -EINVAL;
    if (block >= b->num_blocks)
        return -ERANGE;
    return b->dev->ops->kv_write(b, block, src);
}

int kvb_kv_buffer_read(kvb_kv_buffer *b, uint32_t block, void *dst)
{
    if (!b || !dst)
        return -EINVAL;
    if (block >= b->num_blocks)
        return -ERANGE;
    return b->dev->ops->kv_read(b, block, dst);
}

/* Hazards in O(n) with epoch stamps (no clearing between calls): first stamp every
 * source, then check each destination against the sources and earlier destinations. */
static int kvb_copy_check(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n)
{
    if (++b->epoch == 0) {
        memset(b->src_mark, 0, b->num_blocks * sizeof *b->src_mark);
        memset(b->dst_mark, 0, b->num_blocks * sizeof *b->dst_mark);
        b->epoch = 1;
    }
    const uint32_t e = b->epoch;
    for (uint32_t i = 0; i < n; i++) {
        if (pairs[i].src >= b->num_blocks || pairs[i].dst >= b->num_blocks)
            return -EINVAL;
        b->src_mark[pairs[i].src] = e;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t d = pairs[i].dst;
        if (b->src_mark[d] == e || b->dst_mark[d] == e)
            return -EINVAL;
        b->dst_mark[d] = e;
    }
    return 0;
}

int kvb_kv_buffer_copy_blocks(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n)
{
    if (!b || (n && !pairs))
        return -EINVAL;
    if (n == 0)
        return 0;
    int rc = kvb_copy_check(b, pairs, n);
    if (rc)
        return rc;
    rc = b->dev->ops->kv_copy(b, pairs, n);
    if (rc == 0)
        KVB__COUNT(b->dev, blocks_copied, n);
    return rc;
}
