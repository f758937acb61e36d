/*
 * kvblock/device.h - device block tables, slot mapping and KV block copies
 * (DESIGN.md section 8).
 *
 * Attention kernels in a serving runtime read, every step, a *block table*
 * (for each running sequence, the physical block id of each of its logical
 * blocks) and a *slot mapping* (for each token being written, its physical
 * slot). kvblock keeps the table on a device, uploads only what changed, and
 * runs the small kernels that go with it through a device backend chosen at
 * run time:
 *
 *   - "cpu": the reference, always built. Its "device memory" is a second host
 *     copy, so it has exactly the same visibility rules as a real device
 *     (edits are visible on the device only after kvb_table_sync).
 *   - "vulkan": GLSL compute shaders compiled to SPIR-V at build time and
 *     embedded; device-local buffers fed through a staging ring; one command
 *     buffer per sync from a small ring with fences. Built when the Vulkan
 *     headers and glslangValidator exist (make VULKAN=0 disables it).
 *
 * Both backends give identical results on identical inputs (tests/test_device.c
 * checks it). No Vulkan type appears in this header.
 *
 * Model:
 *   - A kvb_table is an int32 [max_seqs][max_blocks] block table plus int32
 *     context_lens[max_seqs]. The library keeps a host copy ("shadow") that
 *     every edit changes at once and tracks which spans changed; kvb_table_sync
 *     uploads the changed spans (coalesced) to the device in one submission.
 *   - Unset entries read as 0 (as in vLLM). Each row has a length: the number
 *     of entries set by set_row/append; clear_row makes it 0.
 *   - A kvb_kv_buffer is num_blocks x block_bytes of device memory standing for
 *     the KV cache of one layer (or all layers packed); blocks are copied
 *     inside it with kvb_kv_buffer_copy_blocks (copy-on-write, defragmentation).
 *
 * Errors follow kvblock.h: 0 or a negative errno; a failed call changes
 * nothing. Indexes past the table (row >= max_seqs, more than max_blocks
 * entries, a token position past its row's blocks) are -ERANGE; malformed
 * arguments (NULL pointers with n > 0, an id that does not fit int32) are
 * -EINVAL; a failing device is -EIO.
 *
 * Threads: a device may be shared by several threads; each table and each KV
 * buffer must be used by one thread at a time (callers serialise calls on the
 * same object). Submissions to the device queue are serialised inside.
 */
#ifndef KVBLOCK_DEVICE_H
#define KVBLOCK_DEVICE_H

#include "kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kvb_device kvb_device;

typedef enum { KVB_DEVICE_AUTO = 0, KVB_DEVICE_CPU, KVB_DEVICE_VULKAN } kvb_device_kind;

/**
 * @brief Open a device backend.
 * @param kind KVB_DEVICE_CPU or KVB_DEVICE_VULKAN for that backend (Vulkan: the best
 *        physical device, discrete > integrated > virtual > CPU, so Mesa's lavapipe
 *        is accepted when it is the only one). KVB_DEVICE_AUTO: the environment
 *        variable KVBLOCK_DEVICE ("cpu" or "vulkan") if set, else Vulkan on a real
 *        GPU (a CPU implementation such as lavapipe is not taken), else cpu.
 * @param out receives the device.
 * @return 0; -ENODEV when the requested backend is unavailable (Vulkan not built,
 *         no driver, no suitable device, or KVBLOCK_DEVICE=vulkan without one);
 *         -EINVAL for NULL out, an unknown kind or an unknown KVBLOCK_DEVICE value;
 *         -ENOMEM; -EIO when the driver fails while setting up.
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller until kvb_device_close.
 * Callbacks: none.
 */
KVB_API int kvb_device_open(kvb_device_kind kind, kvb_device **out);

/**
 * @brief Human-readable backend name: "cpu" or "vulkan: <physical device name>".
 * @return a string owned by the device, valid until it is freed; "(null)" for NULL.
 * Thread safety: safe from any thread.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API const char *kvb_device_name(const kvb_device *dev);

/**
 * @brief Which backend a device is (never KVB_DEVICE_AUTO for an open device).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API kvb_device_kind kvb_device_get_kind(const kvb_device *dev);

/**
 * @brief Close a device. Tables and KV buffers still alive keep the device's
 * resources until the last of them is destroyed (the close is then completed
 * by that destroy), so the order of close and destroy does not matter.
 * @param dev the device; NULL is a no-op.
 * Thread safety: no other thread may use dev itself during or after the call.
 * Ownership: consumes dev.
 * Callbacks: none.
 */
KVB_API void kvb_device_close(kvb_device *dev);

/**
 * @brief Wait until every submission made on the device has finished.
 * @return 0; -EIO when the device failed; -EINVAL for NULL.
 * Thread safety: safe from any thread.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_device_wait_idle(kvb_device *dev);

/** Counters of a device (all its tables and buffers), monotonic. */
typedef struct kvb_device_stats {
    uint64_t submissions;    /**< command submissions (cpu: one per operation that would submit) */
    uint64_t syncs;          /**< kvb_table_sync / slot-mapping flushes that uploaded something */
    uint64_t upload_bytes;   /**< table bytes copied host -> device */
    uint64_t upload_regions; /**< copy regions after coalescing */
    uint64_t dispatches;     /**< compute dispatches (slot mapping) */
    uint64_t tokens;         /**< tokens mapped by kvb_table_slot_mapping */
    uint64_t blocks_copied;  /**< KV blocks copied by kvb_kv_buffer_copy_blocks */
    uint64_t waits;          /**< host waits for device completion */
} kvb_device_stats;

/**
 * @brief Snapshot of the device counters (each counter is read atomically; the
 * snapshot is not one instant when other threads are submitting).
 * @return 0; -EINVAL for NULL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_device_get_stats(const kvb_device *dev, kvb_device_stats *out);

/* ------------------------------------------------------------------------ */
/* Block tables                                                             */
/* ------------------------------------------------------------------------ */

typedef struct kvb_table kvb_table; /* int32 [max_seqs][max_blocks] + int32 context_lens */

/**
 * @brief Create a block table on a device; every entry and context length 0, all
 * rows empty, nothing dirty.
 * @param dev the device.
 * @param max_seqs number of rows, > 0.
 * @param max_blocks entries per row, > 0.
 * @param block_size tokens per block, 1..1024 (any value, not only powers of two).
 * @param out receives the table.
 * @return 0; -EINVAL (NULL, zero dimensions, block_size out of range);
 *         -E2BIG when the table does not fit the backend (Vulkan: larger than the
 *         device's storage-buffer range); -ENOMEM; -EIO.
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller until kvb_table_destroy; it holds a
 *            reference to dev.
 * Callbacks: none.
 */
KVB_API int kvb_table_create(kvb_device *dev, uint32_t max_seqs, uint32_t max_blocks,
                             uint32_t block_size, kvb_table **out);

/**
 * @brief Replace a row: entries [0, n) = ids, entries past n become unset (0);
 * the row's length becomes n. The context length is kept, so n = 0 equals
 * kvb_table_clear_row except that the context length stays.
 * @param ids n block ids, each <= INT32_MAX (may be NULL when n = 0).
 * @return 0; -ERANGE (row >= max_seqs or n > max_blocks); -EINVAL (NULL ids with
 *         n > 0, an id > INT32_MAX).
 * Thread safety: one thread at a time per table.
 * Ownership: none (ids is copied).
 * Callbacks: none.
 */
KVB_API int kvb_table_set_row(kvb_table *t, uint32_t row, const uint32_t *ids, uint32_t n);

/**
 * @brief Append n block ids after the row's last set entry.
 * @return 0 (n = 0: nothing changes); -ERANGE (row >= max_seqs, or the row would
 *         exceed max_blocks); -EINVAL (NULL ids with n > 0, an id > INT32_MAX).
 * Thread safety: one thread at a time per table.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_table_append(kvb_table *t, uint32_t row, const uint32_t *ids, uint32_t n);

/**
 * @brief Unset a row: every entry 0, length 0, context length 0.
 * @return 0; -ERANGE (row >= max_seqs); -EINVAL for NULL.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_table_clear_row(kvb_table *t, uint32_t row);

/**
 * @brief Move row `from` to row `to` (entries, length and context length); `to`'s
 * previous content is overwritten and `from` is cleared. move_row(a, a) is a no-op
 * returning 0. Used to keep live rows packed when a sequence finishes.
 * @return 0; -ERANGE (a row >= max_seqs); -EINVAL for NULL.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_table_move_row(kvb_table *t, uint32_t from, uint32_t to);

/**
 * @brief Exchange two rows (entries, lengths and context lengths). swap_rows(a, a)
 * is a no-op returning 0.
 * @return 0; -ERANGE (a row >= max_seqs); -EINVAL for NULL.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_table_swap_rows(kvb_table *t, uint32_t a, uint32_t b);

/**
 * @brief Set a row's context length (tokens the attention kernel reads).
 * Not checked against the row's blocks.
 * @return 0; -ERANGE (row >= max_seqs); -EINVAL (len > INT32_MAX, NULL).
 * Thread safety: one thread at a time per table.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_table_set_context_len(kvb_table *t, uint32_t row, uint32_t len);

/**
 * @brief Number of entries set in a row on the host side (pending edits included).
 * @return the length; 0 for a bad row or NULL.
 * Thread safety: one thread at a time per table. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_table_row_len(const kvb_table *t, uint32_t row);

/**
 * @brief Upload every pending edit (changed spans of rows and context lengths,
 * coalesced) to the device in one submission. Returns without waiting for the
 * device: later submissions on the device are ordered after it.
 * @return 0 (also when nothing is pending: no submission); -EIO; -EINVAL for NULL.
 *         On -EIO the edits stay pending.
 * Thread safety: one thread at a time per table.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_table_sync(kvb_table *t);

/**
 * @brief Slot mapping on the device. For token i < num_tokens:
 * out[i] = table[rows[i]][pos[i] / bs] * bs + pos[i] % bs (int64); out[i] = -1 for
 * i in [num_tokens, padded). Pending edits are uploaded first, in the same
 * submission, so the mapping always sees the current table. Every token is
 * validated before anything is dispatched. With num_tokens = 0 nothing is
 * submitted and out[0..padded) = -1.
 * @param rows, pos num_tokens row indexes and token positions (NULL only when
 *        num_tokens = 0).
 * @param padded total entries written to out, >= num_tokens.
 * @param out room for padded int64 (may be NULL when padded = 0).
 * @return 0; -ERANGE (a row >= max_seqs, or pos[i] / bs >= the row's length);
 *         -EINVAL (padded < num_tokens, NULL arrays); -ENOMEM; -EIO.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Waits for the device (the result is copied to out).
 * Callbacks: none.
 */
KVB_API int kvb_table_slot_mapping(kvb_table *t, const uint32_t *rows, const uint32_t *pos,
                                   uint32_t num_tokens, uint32_t padded, int64_t *out);

/**
 * @brief Read entries [0, n) of a row back from the device (what the last sync
 * uploaded; pending edits are not included).
 * @return 0; -ERANGE (row >= max_seqs or n > max_blocks); -EINVAL (NULL out with
 *         n > 0); -EIO.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Waits for the device.
 * Callbacks: none.
 */
KVB_API int kvb_table_read_row(kvb_table *t, uint32_t row, int32_t *out, uint32_t n);

/**
 * @brief Read context lengths of rows [first, first + n) back from the device.
 * @return 0; -ERANGE (past max_seqs); -EINVAL; -EIO.
 * Thread safety: one thread at a time per table.
 * Ownership: none. Waits for the device. Callbacks: none.
 */
KVB_API int kvb_table_read_context_lens(kvb_table *t, uint32_t first, uint32_t n, int32_t *out);

/**
 * @brief Destroy a table; waits for submissions still using it first.
 * @param t the table; NULL is a no-op.
 * Thread safety: no other thread may use t during or after the call.
 * Ownership: consumes t and its reference to the device.
 * Callbacks: none.
 */
KVB_API void kvb_table_destroy(kvb_table *t);

/* ------------------------------------------------------------------------ */
/* KV buffers and block copies                                              */
/* ------------------------------------------------------------------------ */

typedef struct kvb_kv_buffer kvb_kv_buffer; /* num_blocks x block_bytes on the device */

/**
 * @brief Create a KV buffer of num_blocks blocks of block_bytes bytes, zero-filled.
 * The Vulkan backend never binds it to a shader (copies use vkCmdCopyBuffer) and
 * splits it into several device allocations when it exceeds the device's
 * allocation limit, so its size is bounded only by device memory.
 * @return 0; -EINVAL (NULL, zero sizes, a block larger than one device allocation);
 *         -ENOMEM (host or device memory); -EIO.
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller until kvb_kv_buffer_destroy; it holds a
 *            reference to dev.
 * Callbacks: none.
 */
KVB_API int kvb_kv_buffer_create(kvb_device *dev, uint32_t num_blocks, size_t block_bytes,
                                 kvb_kv_buffer **out);

/**
 * @brief Write block_bytes bytes from src into a block (ordered after earlier
 * submissions, before later ones).
 * @return 0; -ERANGE (block >= num_blocks); -EINVAL (NULL); -EIO.
 * Thread safety: one thread at a time per buffer.
 * Ownership: none (src is copied before the call returns).
 * Callbacks: none.
 */
KVB_API int kvb_kv_buffer_write(kvb_kv_buffer *b, uint32_t block, const void *src);

/**
 * @brief Read a block into dst (block_bytes bytes), after every earlier submission.
 * @return 0; -ERANGE; -EINVAL; -EIO.
 * Thread safety: one thread at a time per buffer.
 * Ownership: none. Waits for the device. Callbacks: none.
 */
KVB_API int kvb_kv_buffer_read(kvb_kv_buffer *b, uint32_t block, void *dst);

typedef struct kvb_copy_pair {
    uint32_t src, dst;
} kvb_copy_pair;

/**
 * @brief Copy whole blocks pairs[i].src -> pairs[i].dst in one submission. A source
 * may feed several destinations. Returns without waiting; later reads and copies
 * are ordered after it.
 * @return 0 (n = 0: nothing submitted); -EINVAL when a destination is also a source
 *         in the batch, a destination appears twice, an id is >= num_blocks, or
 *         pairs is NULL with n > 0 (checked before anything is submitted); -EIO.
 * Thread safety: one thread at a time per buffer.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_kv_buffer_copy_blocks(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n);

/**
 * @brief Number of blocks of a buffer (0 for NULL).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_kv_buffer_num_blocks(const kvb_kv_buffer *b);

/**
 * @brief Bytes per block of a buffer (0 for NULL).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API size_t kvb_kv_buffer_block_bytes(const kvb_kv_buffer *b);

/**
 * @brief Destroy a KV buffer; waits for submissions still using it first.
 * @param b the buffer; NULL is a no-op.
 * Thread safety: no other thread may use b during or after the call.
 * Ownership: consumes b and its reference to the device.
 * Callbacks: none.
 */
KVB_API void kvb_kv_buffer_destroy(kvb_kv_buffer *b);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KVBLOCK_DEVICE_H */
