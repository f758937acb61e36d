/*
 * tools/kvb-indexer/metrics.c - GET /metrics of kvb-indexer: the index's
 * Prometheus text plus the daemon's HTTP counters and latency histograms and
 * the relay's or replica's counters, written into a growing text buffer.
 */
#include "kvb-indexer/ixd.h"

/* ---- text buffer (metrics) -------------------------------------------------------- */

typedef struct ixd_buf {
    char *p;
    size_t len, cap;
    bool oom;
} ixd_buf;

static bool ixd_buf_reserve(ixd_buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static KVBT_PRINTF(2, 3) void ixd_buf_printf(ixd_buf *b, const char *fmt, ...)
{
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap > b->len ? b->cap - b->len : 0;
        int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (!ixd_buf_reserve(b, (size_t)n))
            return;
    }
}

/* ---- GET /metrics ------------------------------------------------------------ */

static void ixd_prom_label(ixd_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            ixd_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            ixd_buf_printf(b, "\\n");
        else
            ixd_buf_printf(b, "%c", *s);
    }
}

/* What kvb_indexer_ready reports: standalone, every worker heard from or marked;
 * relay, that and the lease held; replica, synced once. */
static bool ixd_ready(void)
{
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        return kvb_redis_replica_stats_get(ixd.replica, &s) == 0 && s.synced_ns > 0;
    }
    if (ixd.opts.role == IXD_RELAY && !sub)
        return false;
    return !sub || kvb_subscriber_ready(sub);
}

/* The relay's or the replica's counters in Prometheus text. */
static void ixd_role_metrics(ixd_buf *b)
{
    const char *kind = ixd.opts.role == IXD_RELAY ? "relay" : "replica";
    json_t *j = ixd_role_json(NULL);
    if (!j)
        return;
    ixd_buf_printf(b,
                   "# HELP kvb_redis_%s_state 1 for the %s's current state.\n"
                   "# TYPE kvb_redis_%s_state gauge\n",
                   kind, kind, kind);
    static const char *const relay_states[] = {"standby", "active", "lost", "fenced", "stopped"};
    static const char *const replica_states[] = {"connecting", "synced", "lagging", "stopped"};
    const char *now = json_string_value(json_object_get(j, "state"));
    const char *const *names = ixd.opts.role == IXD_RELAY ? relay_states : replica_states;
    size_t nn = ixd.opts.role == IXD_RELAY ? 5 : 4;
    for (size_t i = 0; i < nn; i++)
        ixd_buf_printf(b, "kvb_redis_%s_state{state=\"%s\"} %d\n", kind, names[i],
                       now && !strcmp(now, names[i]));
    /* every other number: counters end in _total, the rest are gauges */
    static const char *const gauges[] = {"inc",          "connected",        "subscribed",
                                         "queued",       "queued_bytes",     "snapshot_bytes",
                                         "streams",      "lag_entries",      "lag_ms",
                                         "apply_lag_ms", "apply_lag_ms_max", "snapshot_seconds",
                                         "takeover_ms",  "synced_ms"};
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        if (!strcmp(key, "state") || json_is_null(v))
            continue;
        bool gauge = false;
        for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
            gauge = gauge || !strcmp(key, gauges[i]);
        double x = json_is_true(v)      ? 1
                   : json_is_false(v)   ? 0
                   : json_is_integer(v) ? (double)json_integer_value(v)
                                        : json_real_value(v);
        ixd_buf_printf(b, "# TYPE kvb_redis_%s_%s%s %s\nkvb_redis_%s_%s%s %.17g\n", kind, key,
                       gauge ? "" : "_total", gauge ? "gauge" : "counter", kind, key,
                       gauge ? "" : "_total", x);
    }
    json_decref(j);
}

ixd_mhd_result ixd_metrics(struct MHD_Connection *c, ixd_req *r)
{
    ixd_buf b = {0};
    kvb_index *idx = ixd_index_get(); /* NULL on a standby relay: no index metrics */
    /* the index's exposition, like snprintf: grown and retried when it did not fit */
    for (size_t want = 16384; idx;) {
        if (!ixd_buf_reserve(&b, want))
            break;
        int n = kvb_index_metrics_text(idx, b.p, b.cap);
        if (n < 0)
            break;
        if ((size_t)n < b.cap) {
            b.len = (size_t)n;
            break;
        }
        want = (size_t)n + 4096;
    }
    ixd_index_put(idx);
    if (b.len && b.p[b.len - 1] != '\n')
        ixd_buf_printf(&b, "\n");
    if (ixd.opts.role != IXD_STANDALONE)
        ixd_role_metrics(&b);

    ixd_buf_printf(&b, "# HELP kvb_http_requests_total HTTP requests answered, by endpoint "
                       "and status code.\n# TYPE kvb_http_requests_total counter\n");
    for (int e = 0; e < R_COUNT; e++)
        for (size_t k = 0; k < IXD_NCODES; k++) {
            uint64_t v = atomic_load_explicit(&ixd.requests[e][k], memory_order_relaxed);
            char code[16];
            if (k < IXD_NCODES - 1)
                snprintf(code, sizeof code, "%u", ixd_codes[k]);
            else
                snprintf(code, sizeof code, "other");
            if (v || k == 0)
                ixd_buf_printf(&b,
                               "kvb_http_requests_total{endpoint=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                               ixd_routes[e].label, code, v);
        }
    ixd_buf_printf(&b, "# HELP kvb_http_requests_aborted_total HTTP requests whose connection "
                       "ended before a response was sent.\n"
                       "# TYPE kvb_http_requests_aborted_total counter\n");
    for (int e = 0; e < R_COUNT; e++)
        ixd_buf_printf(&b, "kvb_http_requests_aborted_total{endpoint=\"%s\"} %" PRIu64 "\n",
                       ixd_routes[e].label,
                       (uint64_t)atomic_load_explicit(&ixd.aborted[e], memory_order_relaxed));
    ixd_buf_printf(&b, "# HELP kvb_http_request_duration_seconds Time from a request's "
                       "headers to its response sent.\n"
                       "# TYPE kvb_http_request_duration_seconds histogram\n");
    for (int e = 0; e < R_COUNT; e++) {
        uint64_t cum = 0;
        for (size_t k = 0; k <= IXD_NBUCKETS; k++) {
            cum += atomic_load_explicit(&ixd.latency[e][k], memory_order_relaxed);
            if (k < IXD_NBUCKETS)
                ixd_buf_printf(&b,
                               "kvb_http_request_duration_seconds_bucket{endpoint=\"%s\","
                               "le=\"%g\"} %" PRIu64 "\n",
                               ixd_routes[e].label, ixd_buckets[k], cum);
            else
                ixd_buf_printf(&b,
                               "kvb_http_request_duration_seconds_bucket{endpoint=\"%s\","
                               "le=\"+Inf\"} %" PRIu64 "\n",
                               ixd_routes[e].label, cum);
        }
        ixd_buf_printf(&b, "kvb_http_request_duration_seconds_sum{endpoint=\"%s\"} %.9f\n",
                       ixd_routes[e].label,
                       (double)atomic_load_explicit(&ixd.latency_ns_sum[e], memory_order_relaxed) /
                           1e9);
        ixd_buf_printf(&b, "kvb_http_request_duration_seconds_count{endpoint=\"%s\"} %" PRIu64 "\n",
                       ixd_routes[e].label, cum);
    }

    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (sub && ixd.opts.n_workers) {
        static const struct {
            const char *name, *help;
        } sm[] = {
            {"kvb_subscriber_connected", "1 when the worker's SUB connection is up"},
            {"kvb_subscriber_messages_total", "messages received on the SUB socket"},
            {"kvb_subscriber_bad_messages_total",
             "messages that were not [topic, 8-byte seq, payload]"},
            {"kvb_subscriber_gaps_total", "sequence gaps seen"},
            {"kvb_subscriber_replays_total", "batches applied from replays"},
            {"kvb_subscriber_replay_failures_total", "gaps the replay could not cover"},
            {"kvb_subscriber_restarts_total", "publisher restarts detected"},
        };
        kvb_subscriber_worker_info *wi = calloc(ixd.opts.n_workers, sizeof *wi);
        bool *ok = calloc(ixd.opts.n_workers, sizeof *ok);
        if (wi && ok) {
            for (size_t i = 0; i < ixd.opts.n_workers; i++)
                ok[i] = kvb_subscriber_worker_info_get(sub, ixd.opts.workers[i].name, &wi[i]) == 0;
            for (size_t m = 0; m < sizeof sm / sizeof sm[0]; m++) {
                ixd_buf_printf(&b, "# HELP %s Per worker endpoint: %s.\n# TYPE %s %s\n", sm[m].name,
                               sm[m].help, sm[m].name, m ? "counter" : "gauge");
                for (size_t i = 0; i < ixd.opts.n_workers; i++) {
                    if (!ok[i])
                        continue;
                    uint64_t v = m == 0   ? wi[i].connected
                                 : m == 1 ? wi[i].messages
                                 : m == 2 ? wi[i].bad_messages
                                 : m == 3 ? wi[i].gaps
                                 : m == 4 ? wi[i].replays
                                 : m == 5 ? wi[i].replay_failures
                                          : wi[i].restarts;
                    ixd_buf_printf(&b, "%s{worker=\"", sm[m].name);
                    ixd_prom_label(&b, ixd.opts.workers[i].name);
                    ixd_buf_printf(&b, "\"} %" PRIu64 "\n", v);
                }
            }
        }
        free(wi);
        free(ok);
    }
    ixd_buf_printf(&b,
                   "# HELP kvb_indexer_uptime_seconds Seconds since the daemon started.\n"
                   "# TYPE kvb_indexer_uptime_seconds gauge\nkvb_indexer_uptime_seconds %.3f\n",
                   (double)(ixd_now_ns() - ixd.start_ns) / 1e9);
    ixd_buf_printf(&b,
                   "# HELP kvb_indexer_ready 1 once every configured worker was heard from or "
                   "marked.\n# TYPE kvb_indexer_ready gauge\nkvb_indexer_ready %d\n",
                   ixd_ready());
    if (b.oom) {
        free(b.p);
        return ixd_error(c, r, 500, "out of memory");
    }
    return ixd_send(c, r, 200, b.p, b.len, "text/plain; version=0.0.4; charset=utf-8", NULL);
}
