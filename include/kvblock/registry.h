/*
 * kvblock/registry.h - a registry shared by the pools of several memory tiers
 * (DESIGN.md section 5). Included by kvblock.h.
 *
 * A registry maps a content hash to a record that lives while anything refers
 * to the hash. It holds:
 *  - presence: per attached pool, a counter raised when a block of that hash
 *    becomes PRIMARY or DUPLICATE in the pool and lowered when such a block
 *    leaves the pool (eviction, DUPLICATE -> RESET, PRIMARY -> RESET). A cached
 *    (INACTIVE) block still counts: its content is in the tier. It is a counter,
 *    not a flag, so a late "absent" never erases a fresh "present". Offload
 *    logic asks kvb_registry_present() "is this content already in tier X?";
 *  - attachments: the runtime's own per-content metadata, `void *` values with
 *    destructors stored under a caller-chosen key (any address that names the
 *    kind of metadata, e.g. that of a static object), either one value per key
 *    (kvb_registry_attach_unique) or a list of them (kvb_registry_attach). A
 *    record lives while it has attachments, whatever the pools do;
 *  - the TinyLFU frequency sketch that frequency-aware eviction policies of the
 *    attached pools read (one touch per registration and per match hit).
 *
 * Lock order: registry -> pool, never the reverse. Pools deliver presence
 * updates after dropping their own lock. Attachment destructors run after the
 * registry lock is dropped, by the thread that removed the value (or by
 * kvb_registry_destroy), never under any kvblock lock: a destructor may call
 * back into the registry or a pool.
 */
#ifndef KVBLOCK_REGISTRY_H
#define KVBLOCK_REGISTRY_H

/* the core types and KVB_API (kvblock.h includes this header at its end, so either
 * may be included first) */
#include "../kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Most pools one registry can serve. */
#define KVB_REGISTRY_MAX_POOLS 8

typedef struct kvb_registry_config {
    /** Expected number of distinct hot hashes (sizes the frequency sketch);
     * default 65536. */
    uint32_t capacity;
    kvb_allocator allocator; /**< as in kvb_pool_config; NULL members = malloc/free */
} kvb_registry_config;

/**
 * @brief Fill cfg with defaults (capacity 65536, malloc/free).
 * @param cfg the configuration to fill; NULL is ignored.
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_registry_config_init(kvb_registry_config *cfg);

/**
 * @brief Create a registry.
 * @param cfg nullable (defaults); capacity 0 means the default.
 * @param out receives the registry.
 * @return 0; -EINVAL (NULL out, or an allocator with only one of alloc/free); -ENOMEM.
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller; pass it in kvb_pool_config.registry; it must
 *            outlive every pool attached to it.
 * Callbacks: none.
 */
KVB_API int kvb_registry_create(const kvb_registry_config *cfg, kvb_registry **out);

/**
 * @brief Destroy a registry.
 * @return 0; -EBUSY while a pool is still attached (destroy the pools first; nothing
 *         changes, no destructor runs); -EINVAL for NULL.
 * Thread safety: no other thread may use the registry during or after the call.
 * Ownership: frees every record; every attachment still present is destroyed.
 * Callbacks: the destructor of every remaining attachment, once each, in no
 *            particular order (no lock held).
 */
KVB_API int kvb_registry_destroy(kvb_registry *reg);

/**
 * @brief Which of the hashes are present in pool: a block of the hash is PRIMARY,
 * DUPLICATE or cached (INACTIVE) there.
 * @param out nullable; out[i] receives the answer for hashes[i].
 * @return the number present (>= 0); -EINVAL (NULL arguments with n > 0, or a pool not
 *         attached to this registry).
 * Thread safety: takes the registry lock once for the batch; safe from any thread.
 *                Answers reflect presence updates delivered so far (a pool delivers its
 *                updates right after the call that caused them returns the lock). If the
 *                registry's table cannot grow (out of memory), an update that would add a
 *                record is dropped: a hash may then read absent while present, never the
 *                reverse.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_registry_present(kvb_registry *reg, const kvb_hash *hashes, uint32_t n,
                                 const kvb_pool *pool, bool *out);

/**
 * @brief The frequency estimate the registry's TinyLFU sketch holds for h: about the
 * number of touches of h since the last agings (each aging halves every count), capped
 * at 15; 0 for a hash never touched or for NULL reg.
 * @return 0..15.
 * Thread safety: lock-free; safe from any thread, even with a pool lock held.
 * Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_registry_frequency(kvb_registry *reg, kvb_hash h);

/**
 * @brief Count one access of h in the frequency sketch (pools do this themselves on
 * registration and match hits; call it for accesses kvblock cannot see). No-op for NULL.
 * Thread safety: lock-free; safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_registry_touch(kvb_registry *reg, kvb_hash h);

/* ---- attachments ---------------------------------------------------------- */

/** Destructor of an attached value: called exactly once per successful attach, when the
 * value is detached or at kvb_registry_destroy, never with a kvblock lock held. NULL:
 * nothing to destroy. */
typedef void (*kvb_attach_dtor)(void *value);

/**
 * @brief Attach the single value of key to hash h (creating h's record if needed).
 * @param key any non-NULL address naming the kind of metadata; compared by address.
 * @param value stored as is (may be NULL).
 * @param dtor nullable; runs on value when it is detached or the registry is destroyed.
 * @return 0; -EEXIST when key already holds a value on h, unique or multiple (nothing
 *         changes, dtor is not called); -EINVAL for NULL reg or key; -ENOMEM.
 * Thread safety: takes the registry lock; safe from any thread (not with a pool lock
 *                held by the caller, like every registry call).
 * Ownership: on success the registry owns value until it is detached or taken back.
 * Callbacks: none.
 */
KVB_API int kvb_registry_attach_unique(kvb_registry *reg, kvb_hash h, const void *key, void *value,
                                       kvb_attach_dtor dtor);

/**
 * @brief Attach one more value under key to hash h: a key used this way holds a list of
 * values, kept in attach order (the same value may appear twice).
 * @return 0; -EEXIST when key holds a unique value on h (nothing changes); -EINVAL for NULL
 *         reg or key; -ENOMEM.
 * Thread safety: takes the registry lock; safe from any thread.
 * Ownership: on success the registry owns value until it is detached.
 * Callbacks: none.
 */
KVB_API int kvb_registry_attach(kvb_registry *reg, kvb_hash h, const void *key, void *value,
                                kvb_attach_dtor dtor);

/**
 * @brief The value attached to h under a unique key.
 * @param out receives the value.
 * @return 0; -ENOENT when no unique value is attached under key; -EEXIST when key holds
 *         multiple values on h (use kvb_registry_get); -EINVAL for NULL arguments.
 * Thread safety: takes the registry lock; safe from any thread. The pointer is returned
 *                as stored: a caller that may race a detach of the same value must
 *                synchronise the value's lifetime itself.
 * Ownership: none (the registry keeps the value).
 * Callbacks: none.
 */
KVB_API int kvb_registry_get_unique(kvb_registry *reg, kvb_hash h, const void *key, void **out);

/**
 * @brief The values attached to h under key (unique or multiple), in attach order.
 * @param out nullable when cap is 0; receives the first min(count, cap) values.
 * @return the number of values under key (>= 0; may exceed cap); -EINVAL for NULL reg or
 *         key, or NULL out with cap > 0.
 * Thread safety: takes the registry lock; safe from any thread (see get_unique on the
 *                lifetime of the returned pointers).
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_registry_get(kvb_registry *reg, kvb_hash h, const void *key, void **out,
                             uint32_t cap);

/**
 * @brief Detach every value attached to h under key and destroy them. The record goes
 * away when nothing else (presence, other keys) keeps it.
 * @return the number of values removed (> 0); -ENOENT when key holds nothing on h;
 *         -EINVAL for NULL reg or key.
 * Thread safety: takes the registry lock; safe from any thread.
 * Ownership: the values are gone when it returns.
 * Callbacks: each value's destructor, once, in attach order, after the registry lock is
 *            dropped, on the calling thread.
 */
KVB_API int kvb_registry_detach(kvb_registry *reg, kvb_hash h, const void *key);

/**
 * @brief Detach one value (the first equal to value) attached to h under key, and destroy
 * it.
 * @return 0; -ENOENT when key holds no such value on h; -EINVAL for NULL reg or key.
 * Thread safety: takes the registry lock; safe from any thread.
 * Ownership: the value is gone when it returns.
 * Callbacks: its destructor, once, after the registry lock is dropped.
 */
KVB_API int kvb_registry_detach_value(kvb_registry *reg, kvb_hash h, const void *key, void *value);

/**
 * @brief Take back the unique value attached to h under key without destroying it.
 * @param out receives the value.
 * @return 0; -ENOENT when no unique value is attached under key; -EEXIST when key holds
 *         multiple values; -EINVAL for NULL arguments.
 * Thread safety: takes the registry lock; safe from any thread.
 * Ownership: the caller owns the value again; its destructor will never run.
 * Callbacks: none.
 */
KVB_API int kvb_registry_take_unique(kvb_registry *reg, kvb_hash h, const void *key, void **out);

/**
 * @brief Number of records the registry holds (hashes with presence in some pool or
 * with attachments).
 * @return the count; 0 for NULL.
 * Thread safety: takes the registry lock; safe from any thread. Ownership: none.
 * Callbacks: none.
 */
KVB_API uint32_t kvb_registry_record_count(kvb_registry *reg);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_REGISTRY_H */
