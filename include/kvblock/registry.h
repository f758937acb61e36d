/*
 * kvblock/registry.h - a registry shared by the pools of several memory tiers
 * (DESIGN.md section 5). Included by kvblock.h.
 *
 * A registry maps a content hash to a record that lives while anything refers
 * to the hash. It holds, per attached pool, a presence counter (raised when a
 * block of that hash becomes PRIMARY or DUPLICATE in the pool, lowered when
 * such a block is evicted or reset), so offload logic can ask "is this content
 * already in tier X?"; and the TinyLFU frequency sketch that frequency-aware
 * eviction policies of the attached pools read.
 *
 * Lock order: registry -> pool, never the reverse. Pools deliver presence
 * updates after dropping their own lock.
 */
#ifndef KVBLOCK_REGISTRY_H
#define KVBLOCK_REGISTRY_H

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
 * @brief Fill cfg with defaults.
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_registry_config_init(kvb_registry_config *cfg);

/**
 * @brief Create a registry (cfg may be NULL for defaults).
 * @return 0; -EINVAL; -ENOMEM.
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller; pass it in kvb_pool_config.registry; it must
 *            outlive every pool attached to it.
 * Callbacks: none.
 */
KVB_API int kvb_registry_create(const kvb_registry_config *cfg, kvb_registry **out);

/**
 * @brief Destroy a registry.
 * @return 0; -EBUSY while a pool is still attached (destroy the pools first); -EINVAL.
 * Thread safety: no other thread may use the registry during or after the call.
 * Ownership: frees every record.
 * Callbacks: none.
 */
KVB_API int kvb_registry_destroy(kvb_registry *reg);

/**
 * @brief Which of the hashes have a PRIMARY or DUPLICATE block in pool.
 * @param out nullable; out[i] receives the answer for hashes[i].
 * @return the number present (>= 0); -EINVAL (NULL arguments with n > 0, or a pool not
 *         attached to this registry).
 * Thread safety: takes the registry lock once for the batch; safe from any thread.
 *                Answers reflect presence updates delivered so far (a pool delivers its
 *                updates right after the call that caused them returns the lock).
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_registry_present(kvb_registry *reg, const kvb_hash *hashes, uint32_t n,
                                 const kvb_pool *pool, bool *out);

/**
 * @brief The frequency estimate (0..15) the registry's TinyLFU sketch holds for h.
 * Thread safety: lock-free. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_registry_frequency(kvb_registry *reg, kvb_hash h);

/**
 * @brief Count one access of h in the frequency sketch (pools do this themselves on
 * registration and match hits; call it for accesses kvblock cannot see).
 * Thread safety: lock-free. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_registry_touch(kvb_registry *reg, kvb_hash h);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_REGISTRY_H */
