/*
 * device_backend.h - the contract between the device front end (lib/device.c)
 * and the device backends (backends/device/cpu.c, backends/device/vulkan/):
 * the ops table a backend implements and the handle structs both sides use.
 * Internal to the library (not installed); it lives in lib/ so that the front
 * end includes no backend's header, the backends include it through -Ilib as
 * they include internal.h: backends depend on lib, never the reverse.
 *
 * The front end owns everything that does not depend on the device: argument
 * checks, the host shadow of each block table, dirty-span tracking and
 * coalescing, the copy-hazard checks, the device reference count and the
 * statistics. A backend only moves words and bytes: upload given spans of the
 * table image, map tokens, read back, copy blocks. Because both backends see
 * exactly the same calls with exactly the same (already validated) arguments,
 * parity between them reduces to each of these few functions being right.
 *
 * Table image: the shadow and the device copy share one layout of int32 words,
 * the block table ([max_seqs][max_blocks], row-major) followed by the
 * context lengths ([max_seqs]). Spans are offsets and lengths in words of that
 * image.
 *
 * A backend is a versioned ops table (SQLite style): `version` first, methods
 * only ever appended.
 */
#ifndef KVB_DEVICE_BACKEND_H
#define KVB_DEVICE_BACKEND_H

#include "kvblock/device.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVB_DEVICE_OPS_VERSION 1

/** A run of changed words of the table image, [off, off + n). */
typedef struct kvb__span {
    uint64_t off;
    uint64_t n;
} kvb__span;

struct kvb_device_ops {
    uint32_t version; /**< KVB_DEVICE_OPS_VERSION */
    const char *name; /**< "cpu", "vulkan" */
    kvb_device_kind kind;

    /* ---- methods valid for version 1 ---- */
    /** Set dev->impl and dev->name. require_gpu: refuse a CPU implementation (used for
     * KVB_DEVICE_AUTO). 0, -ENODEV, -ENOMEM, -EIO. */
    int (*open)(kvb_device *dev, bool require_gpu);
    /** Free dev->impl; no table or buffer is alive. */
    void (*close)(kvb_device *dev);
    int (*wait_idle)(kvb_device *dev);

    /** Create the device side of t (dimensions set, shadow zeroed): the device
     * image must read as all zeros. 0, -E2BIG, -ENOMEM, -EIO. */
    int (*table_create)(kvb_table *t);
    /** Wait for pending work on t, free t->impl. */
    void (*table_destroy)(kvb_table *t);
    /** Copy the spans of the shadow (t->host) to the device image, one submission.
     * n > 0. */
    int (*table_upload)(kvb_table *t, const kvb__span *spans, uint32_t n);
    /** Upload nspans spans (may be 0), then map num_tokens > 0 validated tokens and
     * pad to `padded` with -1; one submission; waits and fills out. */
    int (*slot_mapping)(kvb_table *t, const kvb__span *spans, uint32_t nspans, const uint32_t *rows,
                        const uint32_t *pos, uint32_t num_tokens, uint32_t padded, int64_t *out);
    /** Read n > 0 words of the device image starting at off; waits. */
    int (*table_read)(kvb_table *t, uint64_t off, uint32_t n, int32_t *out);

    /** Create the device side of b, zero-filled. 0, -EINVAL, -ENOMEM, -EIO. */
    int (*kv_create)(kvb_kv_buffer *b);
    void (*kv_destroy)(kvb_kv_buffer *b);
    int (*kv_write)(kvb_kv_buffer *b, uint32_t block, const void *src);
    int (*kv_read)(kvb_kv_buffer *b, uint32_t block, void *dst);
    /** n > 0 pairs, hazard-free and in range (checked by the front end). */
    int (*kv_copy)(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n);
};

/* Counters are relaxed atomics: several threads may submit on one device and
 * nothing is ordered by them (they are statistics only). */
struct kvb__device_counters {
    _Atomic uint64_t submissions, syncs, upload_bytes, upload_regions, dispatches, tokens,
        blocks_copied, waits;
};

struct kvb_device {
    const struct kvb_device_ops *ops; /* immutable after open */
    kvb_device_kind kind;
    /* 1 for the open handle + 1 per live table or KV buffer; the device is freed
     * when it drops to 0 (acq_rel: the freeing thread sees every child's writes). */
    _Atomic uint32_t refs;
    char name[256];
    void *impl;
    struct kvb__device_counters ctr;
};

#define KVB__COUNT(dev, field, v)                                                                  \
    atomic_fetch_add_explicit(&(dev)->ctr.field, (uint64_t)(v), memory_order_relaxed)

struct kvb_table {
    kvb_device *dev;
    uint32_t max_seqs, max_blocks, block_size;
    uint64_t table_words; /* max_seqs * max_blocks */
    uint64_t image_words; /* table_words + max_seqs */
    int32_t *host;        /* shadow image: table then context lens */
    uint32_t *row_len;    /* entries set per row (host view) */
    uint32_t *dirty_lo;   /* per dirty row: changed entries [lo, hi) */
    uint32_t *dirty_hi;
    uint64_t *dirty_rows; /* bitmap over rows */
    uint64_t *dirty_ctx;  /* bitmap over context lengths */
    uint32_t bitmap_words;
    uint32_t n_dirty; /* set bits in both bitmaps */
    kvb__span *spans; /* scratch for coalescing, 2 * max_seqs + 1 entries */
    void *impl;       /* backend side */
};

struct kvb_kv_buffer {
    kvb_device *dev;
    uint32_t num_blocks;
    size_t block_bytes;
    uint32_t *src_mark, *dst_mark; /* hazard check stamps, num_blocks each */
    uint32_t epoch;
    void *impl;
};

extern const struct kvb_device_ops kvb__device_cpu_ops;
#ifdef KVB_HAVE_VULKAN
extern const struct kvb_device_ops kvb__device_vulkan_ops;
#endif

#endif /* KVB_DEVICE_BACKEND_H */
