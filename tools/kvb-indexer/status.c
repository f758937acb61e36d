/*
 * tools/kvb-indexer/status.c - kvb-indexer's JSON answers about the fleet:
 * GET /v1/workers (per stream state, counters, drops; the relay's or replica's
 * own state), POST /v1/snapshot and GET /healthz.
 */
#include "kvb-indexer/ixd.h"

/* ---- GET /v1/workers ------------------------------------------------------------ */

static uint32_t *ixd_stream_ids(kvb_index *idx, int *n_out)
{
    uint32_t cap = 64;
    for (;;) {
        uint32_t *ids = malloc(cap * sizeof *ids);
        if (!ids)
            return NULL;
        int n = kvb_index_streams(idx, ids, cap);
        if (n < 0) {
            free(ids);
            return NULL;
        }
        if ((uint32_t)n <= cap) {
            *n_out = n;
            return ids;
        }
        free(ids);
        cap = (uint32_t)n + 16;
    }
}

/* The relay's or the replica's state and counters (the "relay" / "replica" objects
 * of /v1/workers); NULL standalone. */
json_t *ixd_role_json(kvb_redis_replica_stats *rst_out)
{
    if (ixd.opts.role == IXD_RELAY) {
        kvb_redis_relay_stats s;
        if (kvb_redis_relay_stats_get(ixd.relay, &s) < 0)
            return NULL;
        json_t *j = json_object();
        if (!j)
            return NULL;
        json_object_set_new(j, "state", json_string(kvb_redis_relay_state_name(s.state)));
        json_object_set_new(j, "inc", json_integer((json_int_t)s.inc));
        json_object_set_new(j, "connected", json_boolean(s.connected));
        json_object_set_new(j, "subscribed", json_boolean(atomic_load(&ixd.sub) != NULL));
        const struct {
            const char *k;
            uint64_t v;
        } f[] = {{"queued", s.queued},
                 {"queued_bytes", s.queued_bytes},
                 {"enqueued", s.enqueued},
                 {"appended", s.appended},
                 {"append_calls", s.append_calls},
                 {"refused", s.refused},
                 {"discarded", s.discarded},
                 {"overflows", s.overflows},
                 {"overflow_clears", s.overflow_clears},
                 {"lost_clears", s.lost_clears},
                 {"reappended", s.reappended},
                 {"anomalies", s.anomalies},
                 {"snapshots", s.snapshots},
                 {"snapshot_bytes", s.snapshot_bytes},
                 {"trims", s.trims},
                 {"trimmed", s.trimmed},
                 {"errors", s.errors},
                 {"reconnects", s.reconnects},
                 {"lease_acquired", s.lease_acquired},
                 {"lease_lost", s.lease_lost},
                 {"followed", s.followed}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            json_object_set_new(j, f[i].k, json_integer((json_int_t)f[i].v));
        json_object_set_new(j, "snapshot_seconds", json_real(s.snapshot_seconds));
        json_object_set_new(j, "takeover_ms", json_real((double)s.takeover_ns / 1e6));
        return j;
    }
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        if (kvb_redis_replica_stats_get(ixd.replica, &s) < 0)
            return NULL;
        if (rst_out)
            *rst_out = s;
        json_t *j = json_object();
        if (!j)
            return NULL;
        json_object_set_new(j, "state", json_string(kvb_redis_replica_state_name(s.state)));
        json_object_set_new(j, "connected", json_boolean(s.connected));
        const struct {
            const char *k;
            uint64_t v;
        } f[] = {{"streams", s.streams},
                 {"snapshot_loads", s.snapshot_loads},
                 {"snapshot_bytes", s.snapshot_bytes},
                 {"snapshots_refused", s.snapshots_refused},
                 {"entries", s.entries},
                 {"applied", s.applied},
                 {"duplicates", s.duplicates},
                 {"fenced", s.fenced},
                 {"corrupt", s.corrupt},
                 {"holes", s.holes},
                 {"regressions", s.regressions},
                 {"reloads", s.reloads},
                 {"errors", s.errors},
                 {"reconnects", s.reconnects},
                 {"lag_entries", s.lag_entries}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            json_object_set_new(j, f[i].k, json_integer((json_int_t)f[i].v));
        json_object_set_new(j, "lag_ms", json_real(s.lag_ms));
        json_object_set_new(j, "apply_lag_ms", json_real(s.apply_lag_ms));
        json_object_set_new(j, "apply_lag_ms_max", json_real(s.apply_lag_ms_max));
        json_object_set_new(j, "snapshot_seconds", json_real(s.snapshot_seconds));
        json_object_set_new(j, "synced_ms",
                            s.synced_ns > 0 ? json_real((double)s.synced_ns / 1e6) : json_null());
        return j;
    }
    return NULL;
}

ixd_mhd_result ixd_workers(struct MHD_Connection *c, ixd_req *r)
{
    kvb_redis_replica_stats rst;
    memset(&rst, 0, sizeof rst);
    json_t *role = ixd_role_json(&rst); /* before the index: lag figures for every stream */
    kvb_index *idx = ixd_index_get();
    int n = 0;
    uint32_t *ids = idx ? ixd_stream_ids(idx, &n) : calloc(1, sizeof *ids);
    if (!ids) {
        ixd_index_put(idx);
        json_decref(role);
        return ixd_error(c, r, 500, "out of memory");
    }
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    json_t *ws = json_array();
    int64_t now = kvb_index_now_ns();
    for (int i = 0; ws && i < n; i++) {
        kvb_index_stream_info si;
        if (kvb_index_stream_info_get(idx, ids[i], &si) < 0)
            continue; /* removed meanwhile */
        json_t *drops = json_object();
        for (int d = 0; drops && d < KVB_DROP_COUNT; d++)
            json_object_set_new(drops, kvb_drop_reason_name((kvb_drop_reason)d),
                                json_integer((json_int_t)si.dropped[d]));
        json_t *w = json_pack(
            "{s:s,s:o,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I,s:I,s:s,s:o}", "worker",
            si.worker, "dp_rank", ixd_rank_json(si.dp_rank), "state",
            kvb_stream_state_name(si.state), "last_seq", (json_int_t)si.last_seq, "batches",
            (json_int_t)si.batches, "events", (json_int_t)si.events, "gaps",
            (json_int_t)si.counters[KVB_COUNT_GAPS], "replays",
            (json_int_t)si.counters[KVB_COUNT_REPLAYS], "restarts",
            (json_int_t)si.counters[KVB_COUNT_RESTARTS], "clears",
            (json_int_t)si.counters[KVB_COUNT_CLEARS], "dropped", drops ? drops : json_object(),
            "entries", (json_int_t)si.entries, "engine_map", (json_int_t)si.engine_map,
            "block_size", (json_int_t)si.block_size, "hashes",
            si.hashes == KVB_INDEX_HASHES_ROUTER ? "router" : "engine", "heard_s_ago",
            si.last_heard_ns > 0 ? json_real((double)(now - si.last_heard_ns) / 1e9) : json_null());
        kvb_subscriber_worker_info wi; /* the stream's connection, an extra field */
        if (w && sub && kvb_subscriber_worker_info_get(sub, si.worker, &wi) == 0)
            json_object_set_new(w, "connected", json_boolean(wi.connected));
        if (w && ixd.opts.role == IXD_REPLICA) {
            /* additive: the replica's lag behind the streams (one figure for all) */
            json_object_set_new(w, "lag_entries", json_integer((json_int_t)rst.lag_entries));
            json_object_set_new(w, "lag_ms", json_real(rst.lag_ms));
        }
        json_array_append_new(ws, w);
    }
    free(ids);
    ixd_index_put(idx);
    json_t *eps = json_array();
    for (size_t i = 0; eps && i < ixd.opts.n_workers; i++) {
        const ixd_worker *w = &ixd.opts.workers[i];
        json_t *e = json_pack("{s:s,s:s,s:o,s:s,s:o,s:I}", "name", w->name, "endpoint", w->endpoint,
                              "replay", w->replay ? json_string(w->replay) : json_null(), "kind",
                              ixd_kind_name(w->kind), "topic",
                              w->topic ? json_string(w->topic) : json_null(), "block_size",
                              (json_int_t)(w->block_size ? w->block_size : ixd.opts.block_size));
        kvb_subscriber_worker_info wi;
        if (e && sub && kvb_subscriber_worker_info_get(sub, w->name, &wi) == 0) {
            json_object_set_new(e, "connected", json_boolean(wi.connected));
            json_object_set_new(e, "heard", json_boolean(wi.heard));
            json_object_set_new(e, "expected_seq", json_integer(wi.expected_seq));
            json_object_set_new(e, "messages", json_integer((json_int_t)wi.messages));
            json_object_set_new(e, "bad_messages", json_integer((json_int_t)wi.bad_messages));
            json_object_set_new(e, "bad_payloads", json_integer((json_int_t)wi.bad_payloads));
            json_object_set_new(e, "gaps", json_integer((json_int_t)wi.gaps));
            json_object_set_new(e, "replays", json_integer((json_int_t)wi.replays));
            json_object_set_new(e, "replay_failures", json_integer((json_int_t)wi.replay_failures));
            json_object_set_new(e, "restarts", json_integer((json_int_t)wi.restarts));
        }
        json_array_append_new(eps, e);
    }
    json_t *out = json_pack("{s:o,s:o}", "workers", ws ? ws : json_array(), "endpoints",
                            eps ? eps : json_array());
    if (out && role)
        json_object_set_new(out, ixd.opts.role == IXD_RELAY ? "relay" : "replica", role);
    else
        json_decref(role);
    return ixd_send_json(c, r, 200, out);
}

/* ---- POST /v1/snapshot --------------------------------------------------------- */

int ixd_save(size_t *bytes)
{
    pthread_mutex_lock(&ixd.snapshot_lock);
    int rc = kvb_index_save(ixd.idx, ixd.opts.snapshot, bytes);
    pthread_mutex_unlock(&ixd.snapshot_lock);
    return rc;
}

ixd_mhd_result ixd_snapshot(struct MHD_Connection *c, ixd_req *r)
{
    if (ixd.opts.role == IXD_REPLICA)
        return ixd_error(c, r, 409,
                         "a replica writes no snapshot: the active relay writes %ssnapshot",
                         ixd.opts.redis_prefix ? ixd.opts.redis_prefix : "kvb:");
    if (ixd.opts.role == IXD_RELAY) {
        char key[128];
        snprintf(key, sizeof key, "%ssnapshot",
                 ixd.opts.redis_prefix ? ixd.opts.redis_prefix : "kvb:");
        size_t bytes = 0;
        int rc = kvb_redis_relay_snapshot(ixd.relay, 30000, &bytes);
        if (rc == -EAGAIN)
            return ixd_error(c, r, 503,
                             "this relay is not active (standby, lost or fenced): "
                             "the active relay writes the snapshot");
        if (rc < 0)
            return ixd_error(c, r, 500, "snapshot %s: %s", key, kvb_strerror(rc));
        return ixd_send_json(c, r, 200,
                             json_pack("{s:s,s:I}", "path", key, "bytes", (json_int_t)bytes));
    }
    if (!ixd.opts.snapshot)
        return ixd_error(c, r, 409, "no --snapshot path configured");
    size_t bytes = 0;
    int rc = ixd_save(&bytes);
    if (rc < 0)
        return ixd_error(c, r, 500, "snapshot %s: %s", ixd.opts.snapshot, kvb_strerror(rc));
    return ixd_send_json(
        c, r, 200, json_pack("{s:s,s:I}", "path", ixd.opts.snapshot, "bytes", (json_int_t)bytes));
}

/* ---- GET /healthz ------------------------------------------------------------ */

ixd_mhd_result ixd_healthz(struct MHD_Connection *c, ixd_req *r)
{
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        if (kvb_redis_replica_stats_get(ixd.replica, &s) == 0 && s.synced_ns > 0 &&
            (s.state == KVB_REDIS_REPLICA_SYNCED || s.state == KVB_REDIS_REPLICA_LAGGING))
            return ixd_send_json(c, r, 200,
                                 json_pack("{s:s}", "status",
                                           s.state == KVB_REDIS_REPLICA_SYNCED ? "ok" : "lagging"));
        return ixd_send_json(c, r, 503, json_pack("{s:s}", "status", "connecting"));
    }
    if (ixd.opts.role == IXD_RELAY) {
        kvb_redis_relay_stats s;
        if (kvb_redis_relay_stats_get(ixd.relay, &s) < 0 || s.state != KVB_REDIS_RELAY_ACTIVE ||
            !atomic_load(&ixd.sub))
            return ixd_send_json(c, r, 503,
                                 json_pack("{s:s}", "status",
                                           s.state == KVB_REDIS_RELAY_ACTIVE
                                               ? "starting"
                                               : kvb_redis_relay_state_name(s.state)));
    }
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (!sub || kvb_subscriber_ready(sub))
        return ixd_send_json(c, r, 200, json_pack("{s:s}", "status", "ok"));
    json_t *waiting = json_array();
    for (size_t i = 0; waiting && i < ixd.opts.n_workers; i++) {
        kvb_subscriber_worker_info wi;
        if (kvb_subscriber_worker_info_get(sub, ixd.opts.workers[i].name, &wi) == 0 && !wi.heard)
            json_array_append_new(waiting, json_string(ixd.opts.workers[i].name));
    }
    return ixd_send_json(
        c, r, 503,
        json_pack("{s:s,s:o}", "status", "waiting", "waiting", waiting ? waiting : json_array()));
}
