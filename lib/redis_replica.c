/*
 * redis_replica.c - a router replica fed from Redis (kvblock/redis.h, FLEET.md
 * section 8): one thread loads the newest snapshot into a new index, then
 * XREAD BLOCKs every worker's stream from the ids the snapshot covers (new
 * streams found by SCAN every scan_ms), applying entries through the log
 * follower (redis_log.c). Lookups never touch Redis.
 *
 * The index is swapped, never reloaded in place (kvb_index_load_mem creates a
 * new one): readers pin the current index with a writer-preferring rwlock
 * (kvb_redis_replica_acquire / _release); the replica thread takes it for
 * writing only for the pointer swap, so a match never sees a half-loaded
 * index, and the old index is destroyed after the swap, when no reader can
 * hold it. Entries are applied to the current index without that lock: the
 * index is thread safe and only this thread swaps it.
 *
 * Redis unreachable: every stream that is not STALE is marked LAGGING (still
 * matched), the thread reconnects with exponential backoff (backoff_min_ms ..
 * backoff_max_ms), checks each stream's head against what it read (a head
 * below it: Redis lost entries: reload the snapshot) and resumes from its last
 * ids; the streams get their states back once a read found every stream's end.
 */
#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

struct kvb_redis_replica {
    kvb_redis_replica_config cfg; /* (c) */
    char *url_copy, *prefix_copy;
    struct kvb__rconn rc; /* replica thread */
    struct kvb__rlog lg;  /* replica thread */
    pthread_t thread;
    bool thread_started;
    pthread_rwlock_t swap; /* readers pin cur; the thread swaps it */
    kvb_index *cur;        /* (swap) */
    _Atomic long pinned;   /* indexes acquired and not released */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                  /* (mu) */
    kvb_redis_replica_stats st; /* (mu) */
    int64_t created_ns;         /* (c) */
};

static void set_rstate(kvb_redis_replica *r, kvb_redis_replica_state s)
{
    pthread_mutex_lock(&r->mu);
    if (s == KVB_REDIS_REPLICA_SYNCED && !r->st.synced_ns)
        r->st.synced_ns = kvb_index_now_ns() - r->created_ns;
    r->st.state = s;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Copy the follower's counters into the stats (replica thread). */
static void publish(kvb_redis_replica *r)
{
    uint64_t lag_e;
    double lag_ms;
    kvb__rlog_lag(&r->lg, &lag_e, &lag_ms);
    pthread_mutex_lock(&r->mu);
    kvb_redis_replica_stats *s = &r->st;
    s->connected = kvb__rconn_ok(&r->rc);
    s->streams = r->lg.n;
    s->entries = r->lg.entries;
    s->applied = r->lg.applied;
    s->duplicates = r->lg.duplicates;
    s->fenced = r->lg.fenced;
    s->corrupt = r->lg.corrupt;
    s->holes = r->lg.holes;
    s->regressions = r->lg.regressions;
    s->errors = r->rc.errors;
    s->reconnects = r->rc.reconnects;
    s->lag_entries = lag_e;
    s->lag_ms = lag_ms;
    s->apply_lag_ms = (double)r->lg.last_apply_lag_ns / 1e6;
    if ((double)r->lg.max_apply_lag_ns / 1e6 > s->apply_lag_ms_max)
        s->apply_lag_ms_max = (double)r->lg.max_apply_lag_ns / 1e6;
    r->lg.max_apply_lag_ns = 0;
    pthread_mutex_unlock(&r->mu);
}

/* Load the newest snapshot (or the empty state) and swap it in. */
static int rep_load(kvb_redis_replica *r)
{
    int64_t t0 = kvb_index_now_ns();
    kvb_index *old[KVB_RLOG_IDX] = {NULL, NULL};
    uint64_t bytes = 0;
    bool reload = r->lg.reload_wanted;
    int ret = kvb__rlog_fetch_snapshot(&r->lg, &r->rc, 1, r->cfg.snapshot_timeout_ms, old, &bytes);
    if (ret < 0)
        return ret;
    pthread_rwlock_wrlock(&r->swap);
    r->cur = r->lg.idx[0];
    pthread_rwlock_unlock(&r->swap);
    for (int x = 0; x < KVB_RLOG_IDX; x++)
        if (old[x])
            kvb_index_destroy(old[x]);
    pthread_mutex_lock(&r->mu);
    if (ret == 2)
        r->st.snapshots_refused++;
    if (ret == 1) {
        r->st.snapshot_loads++;
        r->st.snapshot_bytes = bytes;
        r->st.snapshot_seconds = (double)(kvb_index_now_ns() - t0) / 1e9;
    }
    if (reload)
        r->st.reloads++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void *rep_main(void *arg)
{
    kvb_redis_replica *r = arg;
    uint32_t backoff = r->cfg.backoff_min_ms;
    bool need_load = true, was_connected = false, caught_up = false;
    int64_t scan_due = 0;
    while (!kvb__redis_stopping(&r->mu, &r->stop)) {
        if (!kvb__rconn_ok(&r->rc)) {
            if (was_connected || r->lg.n) {
                kvb__rlog_set_lagging(&r->lg, true);
                set_rstate(r, KVB_REDIS_REPLICA_LAGGING);
            }
            caught_up = false;
            publish(r);
            if (kvb__rconn_connect(&r->rc) < 0) {
                kvb__redis_wait(&r->mu, &r->cv, &r->stop, backoff);
                backoff = backoff * 2 > r->cfg.backoff_max_ms ? r->cfg.backoff_max_ms : backoff * 2;
                continue;
            }
            backoff = r->cfg.backoff_min_ms;
            kvb__rconn_set_timeout(&r->rc, r->cfg.io_timeout_ms + r->cfg.block_ms);
            if (was_connected && kvb__rlog_heads(&r->lg, &r->rc) == 0 && r->lg.reload_wanted)
                need_load = true; /* Redis came back with less than we had read */
            was_connected = true;
            scan_due = 0;
            continue;
        }
        if (need_load || r->lg.reload_wanted) {
            if (rep_load(r) < 0) {
                kvb__redis_wait(&r->mu, &r->cv, &r->stop,
                                backoff); /* out of memory, or the connection broke */
                continue;
            }
            need_load = false;
            caught_up = false;
            scan_due = 0;
        }
        int64_t now = kvb__redis_mono_ms();
        if (now >= scan_due) {
            if (kvb__rlog_scan(&r->lg, &r->rc) < 0 || kvb__rlog_heads(&r->lg, &r->rc) < 0) {
                if (kvb__rconn_ok(&r->rc))
                    kvb__rconn_fail(&r->rc); /* reconnect with backoff */
                continue;
            }
            scan_due = now + r->cfg.scan_ms;
            publish(r);
            if (r->lg.reload_wanted)
                continue;
        }
        bool full = false;
        int got = kvb__rlog_read(&r->lg, &r->rc, r->cfg.read_count,
                                 caught_up || !r->lg.n ? r->cfg.block_ms : 0, &full);
        if (got < 0) {
            if (kvb__rconn_ok(&r->rc))
                kvb__rconn_fail(&r->rc);
            continue;
        }
        if (got > 0 && !r->lg.reload_wanted)
            r->lg.fresh_holes = 0;
        if (!r->lg.n)
            kvb__redis_wait(&r->mu, &r->cv, &r->stop, r->cfg.block_ms);
        if (got > 0 || caught_up)
            publish(r);
        if (!full && !r->lg.reload_wanted && !caught_up) {
            caught_up = true;
            kvb__rlog_set_lagging(&r->lg, false);
            publish(r); /* the counters of the sync, before it is announced */
            set_rstate(r, KVB_REDIS_REPLICA_SYNCED);
        }
    }
    set_rstate(r, KVB_REDIS_REPLICA_STOPPED);
    return NULL;
}

KVB_API int kvb_redis_replica_create(const kvb_redis_replica_config *cfg, kvb_redis_replica **out)
{
    if (!cfg || !out || !cfg->url)
        return -EINVAL;
    *out = NULL;
    kvb_redis_replica_config c = *cfg, d;
    kvb_redis_replica_config_init(&d);
#define DEF(f)                                                                                     \
    if (!c.f)                                                                                      \
    c.f = d.f
    DEF(block_ms);
    DEF(read_count);
    DEF(scan_ms);
    DEF(io_timeout_ms);
    DEF(snapshot_timeout_ms);
    DEF(backoff_min_ms);
    DEF(backoff_max_ms);
#undef DEF
    if (c.backoff_min_ms > c.backoff_max_ms)
        return -EINVAL;
    if (c.index.block_size == 0)
        kvb_index_config_init(&c.index);
    kvb_redis_replica *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int ret = kvb__rconn_init(&r->rc, c.url, c.prefix, c.io_timeout_ms);
    if (ret < 0) {
        free(r);
        return ret;
    }
    ret = kvb__rlog_init(&r->lg, &c.index);
    if (ret < 0) {
        free(r);
        return ret;
    }
    ret = kvb_index_create(&c.index, &r->lg.idx[0]);
    if (ret < 0) {
        kvb__rlog_fini(&r->lg);
        free(r);
        return ret;
    }
    r->cur = r->lg.idx[0];
    r->url_copy = strdup(c.url);
    r->prefix_copy = strdup(c.prefix ? c.prefix : "kvb:");
    if (!r->url_copy || !r->prefix_copy) {
        free(r->url_copy);
        free(r->prefix_copy);
        kvb_index_destroy(r->lg.idx[0]);
        kvb__rlog_fini(&r->lg);
        free(r);
        return -ENOMEM;
    }
    c.url = r->url_copy;
    c.prefix = r->prefix_copy;
    r->cfg = c;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&r->swap, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&r->mu, NULL);
    kvb__redis_cond_init(&r->cv);
    atomic_init(&r->pinned, 0);
    r->created_ns = kvb_index_now_ns();
    r->st.state = KVB_REDIS_REPLICA_CONNECTING;
    ret = kvb__redis_thread_start(&r->thread, &r->thread_started, rep_main, r, "kvb-replica");
    if (ret < 0) {
        kvb_redis_replica_destroy(r);
        return ret;
    }
    *out = r;
    return 0;
}

KVB_API int kvb_redis_replica_destroy(kvb_redis_replica *r)
{
    if (!r)
        return -EINVAL;
    if (atomic_load(&r->pinned) > 0)
        return -EBUSY;
    if (r->thread_started)
        kvb__redis_stop_join(&r->mu, &r->cv, &r->stop, r->thread);
    kvb__rconn_close(&r->rc);
    for (int x = 0; x < KVB_RLOG_IDX; x++)
        if (r->lg.idx[x])
            kvb_index_destroy(r->lg.idx[x]);
    kvb__rlog_fini(&r->lg);
    pthread_rwlock_destroy(&r->swap);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->url_copy);
    free(r->prefix_copy);
    free(r);
    return 0;
}

KVB_API kvb_index *kvb_redis_replica_acquire(kvb_redis_replica *r)
{
    if (!r)
        return NULL;
    pthread_rwlock_rdlock(&r->swap);
    atomic_fetch_add(&r->pinned, 1);
    return r->cur;
}

KVB_API void kvb_redis_replica_release(kvb_redis_replica *r, kvb_index *idx)
{
    if (!r || !idx)
        return;
    atomic_fetch_sub(&r->pinned, 1);
    pthread_rwlock_unlock(&r->swap);
}

KVB_API int kvb_redis_replica_match(kvb_redis_replica *r, const uint64_t *hashes, uint32_t n,
                                    kvb_index_result *out, uint32_t k)
{
    if (!r)
        return -EINVAL;
    kvb_index *idx = kvb_redis_replica_acquire(r);
    int ret = kvb_index_match(idx, hashes, n, out, k);
    kvb_redis_replica_release(r, idx);
    return ret;
}

KVB_API int kvb_redis_replica_wait_synced(kvb_redis_replica *r, uint32_t timeout_ms)
{
    if (!r)
        return -EINVAL;
    struct timespec dl = kvb__redis_deadline(timeout_ms);
    pthread_mutex_lock(&r->mu);
    int ret = 0;
    while (r->st.state != KVB_REDIS_REPLICA_SYNCED) {
        if (r->stop || pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT) {
            ret = r->st.state == KVB_REDIS_REPLICA_SYNCED ? 0 : -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

KVB_API int kvb_redis_replica_stats_get(kvb_redis_replica *r, kvb_redis_replica_stats *out)
{
    if (!r || !out)
        return -EINVAL;
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    r->st.apply_lag_ms_max = 0;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

#endif /* KVB_HAVE_REDIS */
