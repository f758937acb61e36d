/*
 * redis_api.c - the parts of kvblock/redis.h that do not need hiredis
 * (configuration defaults, names, kvb_redis_available) and, in a build without
 * hiredis (mk/redis.mk did not find it), every other function as a stub that
 * returns -ENOTSUP (or NULL / nothing), so that programs link either way.
 */
#include "redis_internal.h"
#include <string.h>

KVB_API bool kvb_redis_available(void)
{
#ifdef KVB_HAVE_REDIS
    return true;
#else
    return false;
#endif
}

KVB_API void kvb_redis_relay_config_init(kvb_redis_relay_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->prefix = "kvb:";
    kvb_index_config_init(&cfg->index);
    cfg->lease_ms = 2000;
    cfg->renew_ms = 500;
    cfg->acquire_poll_ms = 250;
    cfg->snapshot_entries = 100000;
    cfg->snapshot_ms = 60000;
    cfg->queue_entries = 65536;
    cfg->queue_bytes = 256ull << 20;
    cfg->append_max_entries = 256;
    cfg->retain_bytes = 64ull << 20;
    cfg->io_timeout_ms = 1000;
    cfg->snapshot_timeout_ms = 30000;
    cfg->block_ms = 100;
    cfg->backoff_max_ms = 2000;
}

KVB_API void kvb_redis_replica_config_init(kvb_redis_replica_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->prefix = "kvb:";
    kvb_index_config_init(&cfg->index);
    cfg->block_ms = 100;
    cfg->read_count = 1000;
    cfg->scan_ms = 500;
    cfg->io_timeout_ms = 1000;
    cfg->snapshot_timeout_ms = 30000;
    cfg->backoff_min_ms = 50;
    cfg->backoff_max_ms = 2000;
}

KVB_API const char *kvb_redis_relay_state_name(kvb_redis_relay_state s)
{
    switch (s) {
    case KVB_REDIS_RELAY_STANDBY:
        return "standby";
    case KVB_REDIS_RELAY_ACTIVE:
        return "active";
    case KVB_REDIS_RELAY_LOST:
        return "lost";
    case KVB_REDIS_RELAY_FENCED:
        return "fenced";
    case KVB_REDIS_RELAY_STOPPED:
        return "stopped";
    }
    return "unknown";
}

KVB_API const char *kvb_redis_replica_state_name(kvb_redis_replica_state s)
{
    switch (s) {
    case KVB_REDIS_REPLICA_CONNECTING:
        return "connecting";
    case KVB_REDIS_REPLICA_SYNCED:
        return "synced";
    case KVB_REDIS_REPLICA_LAGGING:
        return "lagging";
    case KVB_REDIS_REPLICA_STOPPED:
        return "stopped";
    }
    return "unknown";
}

#ifndef KVB_HAVE_REDIS

KVB_API int kvb_redis_relay_create(const kvb_redis_relay_config *cfg, kvb_redis_relay **out)
{
    (void)cfg;
    if (out)
        *out = NULL;
    return -ENOTSUP;
}

KVB_API int kvb_redis_relay_destroy(kvb_redis_relay *relay)
{
    return relay ? -ENOTSUP : -EINVAL;
}

KVB_API int kvb_redis_relay_wait_active(kvb_redis_relay *relay, uint32_t timeout_ms)
{
    (void)relay;
    (void)timeout_ms;
    return -ENOTSUP;
}

KVB_API kvb_index *kvb_redis_relay_index(kvb_redis_relay *relay)
{
    (void)relay;
    return NULL;
}

KVB_API void kvb_redis_relay_subscriber_cb(void *user, kvb_sub_note note, const char *worker,
                                           int64_t seq, const kvb_index_batch *batch,
                                           kvb_stream_state state)
{
    (void)user;
    (void)note;
    (void)worker;
    (void)seq;
    (void)batch;
    (void)state;
}

KVB_API int kvb_redis_relay_worker_removed(kvb_redis_relay *relay, const char *worker)
{
    (void)relay;
    (void)worker;
    return -ENOTSUP;
}

KVB_API int kvb_redis_relay_flush(kvb_redis_relay *relay, uint32_t timeout_ms)
{
    (void)relay;
    (void)timeout_ms;
    return -ENOTSUP;
}

KVB_API int kvb_redis_relay_snapshot(kvb_redis_relay *relay, uint32_t timeout_ms, size_t *bytes)
{
    (void)relay;
    (void)timeout_ms;
    (void)bytes;
    return -ENOTSUP;
}

KVB_API int kvb_redis_relay_stats_get(kvb_redis_relay *relay, kvb_redis_relay_stats *out)
{
    (void)relay;
    (void)out;
    return -ENOTSUP;
}

KVB_API int kvb_redis_replica_create(const kvb_redis_replica_config *cfg, kvb_redis_replica **out)
{
    (void)cfg;
    if (out)
        *out = NULL;
    return -ENOTSUP;
}

KVB_API int kvb_redis_replica_destroy(kvb_redis_replica *rep)
{
    return rep ? -ENOTSUP : -EINVAL;
}

KVB_API kvb_index *kvb_redis_replica_acquire(kvb_redis_replica *rep)
{
    (void)rep;
    return NULL;
}

KVB_API void kvb_redis_replica_release(kvb_redis_replica *rep, kvb_index *idx)
{
    (void)rep;
    (void)idx;
}

KVB_API int kvb_redis_replica_match(kvb_redis_replica *rep, const uint64_t *hashes, uint32_t n,
                                    kvb_index_result *out, uint32_t k)
{
    (void)rep;
    (void)hashes;
    (void)n;
    (void)out;
    (void)k;
    return -ENOTSUP;
}

KVB_API int kvb_redis_replica_wait_synced(kvb_redis_replica *rep, uint32_t timeout_ms)
{
    (void)rep;
    (void)timeout_ms;
    return -ENOTSUP;
}

KVB_API int kvb_redis_replica_stats_get(kvb_redis_replica *rep, kvb_redis_replica_stats *out)
{
    (void)rep;
    (void)out;
    return -ENOTSUP;
}

#endif /* !KVB_HAVE_REDIS */
