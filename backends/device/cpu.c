/*
 * cpu.c - the reference device backend: "device memory" is a second host copy
 * of each table image and a plain byte array per KV buffer.
 *
 * It is deliberately the simplest correct implementation of the ops contract
 * in lib/device_backend.h (the Vulkan backend is tested against it): an upload is a
 * memcpy per span, a slot mapping is a loop over the tokens reading the device
 * copy, a block copy is a memcpy per pair (the front end has rejected
 * overlapping pairs). Every operation completes before it returns, so
 * wait_idle has nothing to wait for. Submissions are counted as a device would
 * count them (one per sync, slot mapping, read, write and copy batch) so that
 * statistics compare across backends.
 */
#include "device_backend.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kvb_cpu_table {
    int32_t *img; /* device image: table then context lens */
};

struct kvb_cpu_kv {
    unsigned char *bytes;
};

static int kvb_cpu_open(kvb_device *dev, bool require_gpu)
{
    (void)require_gpu;
    snprintf(dev->name, sizeof dev->name, "cpu");
    dev->impl = NULL;
    return 0;
}

static void kvb_cpu_close(kvb_device *dev)
{
    (void)dev;
}

static int kvb_cpu_wait_idle(kvb_device *dev)
{
    (void)dev;
    return 0;
}

static int kvb_cpu_table_create(kvb_table *t)
{
    struct kvb_cpu_table *ct = malloc(sizeof *ct);
    if (!ct)
        return -ENOMEM;
    ct->img = calloc(t->image_words, sizeof *ct->img);
    if (!ct->img) {
        free(ct);
        return -ENOMEM;
    }
    t->impl = ct;
    return 0;
}

static void kvb_cpu_table_destroy(kvb_table *t)
{
    struct kvb_cpu_table *ct = t->impl;
    free(ct->img);
    free(ct);
}

static void kvb_cpu_copy_spans(kvb_table *t, const kvb__span *spans, uint32_t n)
{
    struct kvb_cpu_table *ct = t->impl;
    for (uint32_t i = 0; i < n; i++)
        memcpy(ct->img + spans[i].off, t->host + spans[i].off, spans[i].n * sizeof(int32_t));
}

static int kvb_cpu_table_upload(kvb_table *t, const kvb__span *spans, uint32_t n)
{
    kvb_cpu_copy_spans(t, spans, n);
    KVB__COUNT(t->dev, submissions, 1);
    return 0;
}

static int kvb_cpu_slot_mapping(kvb_table *t, const kvb__span *spans, uint32_t nspans,
                                const uint32_t *rows, const uint32_t *pos, uint32_t num_tokens,
                                uint32_t padded, int64_t *out)
{
    struct kvb_cpu_table *ct = t->impl;
    kvb_cpu_copy_spans(t, spans, nspans);
    const int32_t *img = ct->img;
    const uint64_t mb = t->max_blocks;
    const uint32_t bs = t->block_size;
    if ((bs & (bs - 1)) == 0) {
        const uint32_t shift = (uint32_t)__builtin_ctz(bs), mask = bs - 1;
        for (uint32_t i = 0; i < num_tokens; i++) {
            uint32_t p = pos[i];
            uint32_t blk = (uint32_t)img[rows[i] * mb + (p >> shift)];
            out[i] = (int64_t)(((uint64_t)blk << shift) | (p & mask));
        }
    } else {
        for (uint32_t i = 0; i < num_tokens; i++) {
            uint32_t p = pos[i];
            uint32_t blk = (uint32_t)img[rows[i] * mb + p / bs];
            out[i] = (int64_t)((uint64_t)blk * bs + p % bs);
        }
    }
    for (uint32_t i = num_tokens; i < padded; i++)
        out[i] = -1;
    KVB__COUNT(t->dev, submissions, 1);
    KVB__COUNT(t->dev, dispatches, 1);
    return 0;
}

static int kvb_cpu_table_read(kvb_table *t, uint64_t off, uint32_t n, int32_t *out)
{
    struct kvb_cpu_table *ct = t->impl;
    memcpy(out, ct->img + off, (size_t)n * sizeof *out);
    KVB__COUNT(t->dev, submissions, 1);
    KVB__COUNT(t->dev, waits, 1);
    return 0;
}

static int kvb_cpu_kv_create(kvb_kv_buffer *b)
{
    struct kvb_cpu_kv *k = malloc(sizeof *k);
    if (!k)
        return -ENOMEM;
    k->bytes = calloc(b->num_blocks, b->block_bytes);
    if (!k->bytes) {
        free(k);
        return -ENOMEM;
    }
    b->impl = k;
    return 0;
}

static void kvb_cpu_kv_destroy(kvb_kv_buffer *b)
{
    struct kvb_cpu_kv *k = b->impl;
    free(k->bytes);
    free(k);
}

static int kvb_cpu_kv_write(kvb_kv_buffer *b, uint32_t block, const void *src)
{
    struct kvb_cpu_kv *k = b->impl;
    memcpy(k->bytes + (size_t)block * b->block_bytes, src, b->block_bytes);
    KVB__COUNT(b->dev, submissions, 1);
    return 0;
}

static int kvb_cpu_kv_read(kvb_kv_buffer *b, uint32_t block, void *dst)
{
    struct kvb_cpu_kv *k = b->impl;
    memcpy(dst, k->bytes + (size_t)block * b->block_bytes, b->block_bytes);
    KVB__COUNT(b->dev, submissions, 1);
    KVB__COUNT(b->dev, waits, 1);
    return 0;
}

static int kvb_cpu_kv_copy(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n)
{
    struct kvb_cpu_kv *k = b->impl;
    const size_t bb = b->block_bytes;
    for (uint32_t i = 0; i < n; i++)
        memcpy(k->bytes + (size_t)pairs[i].dst * bb, k->bytes + (size_t)pairs[i].src * bb, bb);
    KVB__COUNT(b->dev, submissions, 1);
    return 0;
}

const struct kvb_device_ops kvb__device_cpu_ops = {
    .version = KVB_DEVICE_OPS_VERSION,
    .name = "cpu",
    .kind = KVB_DEVICE_CPU,
    .open = kvb_cpu_open,
    .close = kvb_cpu_close,
    .wait_idle = kvb_cpu_wait_idle,
    .table_create = kvb_cpu_table_create,
    .table_destroy = kvb_cpu_table_destroy,
    .table_upload = kvb_cpu_table_upload,
    .slot_mapping = kvb_cpu_slot_mapping,
    .table_read = kvb_cpu_table_read,
    .kv_create = kvb_cpu_kv_create,
    .kv_destroy = kvb_cpu_kv_destroy,
    .kv_write = kvb_cpu_kv_write,
    .kv_read = kvb_cpu_kv_read,
    .kv_copy = kvb_cpu_kv_copy,
};
