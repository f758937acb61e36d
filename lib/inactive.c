/*
 * inactive.c - the table of built-in eviction backends and the validation of
 * ops tables (kvblock/inactive.h).
 *
 * One table, builtin[], lists the built-in backends in kvb_evict_policy order:
 * kvb_inactive_builtin() indexes it by policy, kvb_inactive_policy() by
 * position (the same thing, for enumeration) and kvb_inactive_find() searches
 * it by name. An out-of-range policy or index gives NULL, which the pool
 * reports as -ENOTSUP. A new backend appends one entry (and its enum value).
 * No state: every function here is pure.
 */
#include "inactive_internal.h"
#include "internal.h"

#include <string.h>

static const kvb_inactive_ops *const builtin[] = {
    [KVB_EVICT_LRU] = &kvb_inactive_lru,
    [KVB_EVICT_FIFO] = &kvb_inactive_fifo,
    [KVB_EVICT_MULTI_LRU] = &kvb_inactive_multi_lru,
    [KVB_EVICT_TINYLFU] = &kvb_inactive_tinylfu,
    [KVB_EVICT_LINEAGE] = &kvb_inactive_lineage,
    [KVB_EVICT_LINEAGE_ARC] = &kvb_inactive_lineage_arc,
    [KVB_EVICT_ADAPTIVE] = &kvb_inactive_adaptive,
};

#define N_BUILTIN (sizeof builtin / sizeof builtin[0])

/* Every policy value has its backend: no gap for kvb_inactive_policy() to stop at. */
_Static_assert(N_BUILTIN == (size_t)KVB_EVICT_ADAPTIVE + 1,
               "one built-in backend per kvb_evict_policy value");

const kvb_inactive_ops *kvb_inactive_builtin(kvb_evict_policy policy)
{
    return (unsigned)policy < N_BUILTIN ? builtin[policy] : NULL;
}

const kvb_inactive_ops *kvb_inactive_policy(size_t i)
{
    return i < N_BUILTIN ? builtin[i] : NULL;
}

const kvb_inactive_ops *kvb_inactive_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N_BUILTIN; i++)
        if (strcmp(builtin[i]->name, name) == 0)
            return builtin[i];
    return NULL;
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
