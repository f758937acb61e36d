/*
 * inactive.c - the table of built-in eviction backends and the validation of
 * ops tables (kvblock/inactive.h).
 *
 * kvb_inactive_builtin() maps a kvb_evict_policy to its ops table; a policy
 * whose backend is not built yet (or an out-of-range value) gives NULL, which
 * the pool reports as -ENOTSUP. A new backend adds one case to the switch.
 * No state: every function here is pure.
 */
#include "inactive_internal.h"
#include "internal.h"

const kvb_inactive_ops *kvb_inactive_builtin(kvb_evict_policy policy)
{
    switch (policy) {
    case KVB_EVICT_LRU:
        return &kvb_inactive_lru;
    case KVB_EVICT_FIFO:
        return &kvb_inactive_fifo;
    case KVB_EVICT_MULTI_LRU:
        return &kvb_inactive_multi_lru;
    case KVB_EVICT_TINYLFU:
        return &kvb_inactive_tinylfu;
    case KVB_EVICT_LINEAGE:
        return &kvb_inactive_lineage;
    case KVB_EVICT_LINEAGE_ARC:
        return &kvb_inactive_lineage_arc;
    case KVB_EVICT_ADAPTIVE:
        return &kvb_inactive_adaptive;
    default:
        return NULL;
    }
}

int kvb__inactive_ops_validate(const kvb_inactive_ops *ops)
{
    /* A table from a newer header (version > KVB_INACTIVE_OPS_VERSION) is accepted:
     * methods are only ever appended, and the core calls the version-1 ones. */
    if (!ops || ops->version < 1 || !ops->name)
        return -EINVAL;
    /* Methods valid for version 1; unevict and memory are optional. */
    if (!ops->create || !ops->destroy || !ops->insert || !ops->remove || !ops->contains ||
        !ops->evict || !ops->len || !ops->drain)
        return -EINVAL;
    return 0;
}
