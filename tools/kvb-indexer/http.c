/*
 * tools/kvb-indexer/http.c - kvb-indexer's HTTP plumbing (libmicrohttpd): the
 * access handler (routing, request bodies within IXD_MAX_BODY and the body
 * budget, 405/404/413/503), the completion callback (in-flight count, request
 * counters, latency), responses, and the index a request reads in each role.
 */
#include "kvb-indexer/ixd.h"

/* Free a request's body and give its bytes back to the budget. */
static void ixd_body_free(ixd_req *r)
{
    if (r->cap)
        atomic_fetch_sub_explicit(&ixd.body_bytes, r->cap, memory_order_relaxed);
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

int64_t ixd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the index a request reads -------------------------------------------------- */

/* Standalone: the daemon's index. Relay: the relay's once it has been ACTIVE (NULL
 * before: a standby has no index to serve; the relay keeps it until it is
 * destroyed, after the HTTP threads stopped). Replica: the replica's current index,
 * pinned (kvb_redis_replica_acquire) until ixd_index_put: a snapshot reload waits
 * for it, so a request holds it only around its index calls. */
kvb_index *ixd_index_get(void)
{
    switch (ixd.opts.role) {
    case IXD_RELAY:
        return kvb_redis_relay_index(ixd.relay);
    case IXD_REPLICA:
        return kvb_redis_replica_acquire(ixd.replica);
    default:
        return ixd.idx;
    }
}

void ixd_index_put(kvb_index *idx)
{
    if (ixd.opts.role == IXD_REPLICA && idx)
        kvb_redis_replica_release(ixd.replica, idx);
}

/* ---- responses ---------------------------------------------------------------- */

/* Queue body (malloc'd, taken over and freed by MHD) with the status. */
ixd_mhd_result ixd_send(struct MHD_Connection *c, ixd_req *r, unsigned status, char *body,
                        size_t len, const char *ctype, const char *allow)
{
    if (!body)
        return IXD_MHD_NO; /* out of memory: MHD closes the connection */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return IXD_MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    ixd_mhd_result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (rc == IXD_MHD_YES)
        r->status = status;
    return rc;
}

ixd_mhd_result ixd_send_json(struct MHD_Connection *c, ixd_req *r, unsigned status, json_t *j)
{
    if (!j)
        return IXD_MHD_NO;
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    return ixd_send(c, r, status, s, s ? strlen(s) : 0, "application/json", NULL);
}

KVBT_PRINTF(4, 5)
ixd_mhd_result ixd_error(struct MHD_Connection *c, ixd_req *r, unsigned status, const char *fmt,
                         ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ixd_send_json(c, r, status, json_pack("{s:s}", "error", msg));
}

/* ---- libmicrohttpd callbacks ---------------------------------------------------- */

static int ixd_route_of(const char *url)
{
    for (int i = 0; i < R_OTHER; i++)
        if (!strcmp(url, ixd_routes[i].path))
            return i;
    return R_OTHER;
}

ixd_mhd_result ixd_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                          const char *version, const char *upload_data, size_t *upload_data_size,
                          void **con_cls)
{
    (void)cls;
    (void)version;
    ixd_req *r = *con_cls;
    if (!r) { /* first call: headers only */
        r = calloc(1, sizeof *r);
        if (!r)
            return IXD_MHD_NO;
        r->start_ns = ixd_now_ns();
        r->route = ixd_route_of(url ? url : "");
        atomic_fetch_add(&ixd.inflight, 1);
        *con_cls = r;
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t clen;
        if (cl && kvbt_parse_u64(cl, 0, UINT64_MAX, &clen)) {
            if (clen > IXD_MAX_BODY) {
                r->too_large = true;
                return ixd_error(c, r, 413, "request body over %u bytes", IXD_MAX_BODY);
            }
            r->expect = (size_t)clen;
        }
        return IXD_MHD_YES;
    }
    if (*upload_data_size) { /* body data: accumulate up to the cap */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->status)
            return IXD_MHD_YES; /* answered already (413): discard */
        if (r->too_large || r->busy)
            return IXD_MHD_YES;
        if (n > IXD_MAX_BODY - r->len) {
            /* over the cap without a Content-Length (chunked): keep nothing, read and
             * discard the rest (libmicrohttpd 0.9.75 refuses a response queued in
             * the middle of an upload), answer 413 at its end */
            r->too_large = true;
            ixd_body_free(r);
            return IXD_MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : r->expect ? r->expect + 1 : 1024;
            while (cap < r->len + n + 1)
                cap *= 2;
            if (cap > IXD_MAX_BODY + 1)
                cap = IXD_MAX_BODY + 1;
            size_t more = cap - r->cap;
            uint64_t held = atomic_fetch_add_explicit(&ixd.body_bytes, more, memory_order_relaxed);
            if (held + more > IXD_BODY_BUDGET) {
                atomic_fetch_sub_explicit(&ixd.body_bytes, more, memory_order_relaxed);
                r->busy = true;
                ixd_body_free(r);
                return IXD_MHD_YES;
            }
            char *p = realloc(r->body, cap);
            if (!p) {
                atomic_fetch_sub_explicit(&ixd.body_bytes, more, memory_order_relaxed);
                return IXD_MHD_NO;
            }
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return IXD_MHD_YES;
    }
    if (r->status)
        return IXD_MHD_YES; /* a response is queued already */
    if (r->too_large)
        return ixd_error(c, r, 413, "request body over %u bytes", IXD_MAX_BODY);
    if (r->busy)
        return ixd_error(c, r, 503, "request bodies in flight exceed %u bytes in all: retry later",
                         IXD_BODY_BUDGET);

    if (r->route == R_OTHER)
        return ixd_error(c, r, 404,
                         "no such endpoint: %s %s (endpoints: POST /v1/match, "
                         "GET /v1/workers, POST /v1/snapshot, GET /metrics, "
                         "GET /healthz)",
                         method, url);
    const char *want = ixd_routes[r->route].method;
    bool ok = !strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"));
    if (!ok) {
        char *msg = NULL;
        json_t *j = json_object();
        char text[200];
        snprintf(text, sizeof text, "method %s not allowed on %s: use %s", method,
                 ixd_routes[r->route].path, want);
        if (j && json_object_set_new(j, "error", json_string(text)) == 0)
            msg = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return ixd_send(c, r, 405, msg, msg ? strlen(msg) : 0, "application/json",
                        !strcmp(want, "GET") ? "GET, HEAD" : want);
    }
    switch (r->route) {
    case R_MATCH:
        return ixd_match(c, r);
    case R_WORKERS:
        return ixd_workers(c, r);
    case R_SNAPSHOT:
        return ixd_snapshot(c, r);
    case R_METRICS:
        return ixd_metrics(c, r);
    case R_HEALTHZ:
        return ixd_healthz(c, r);
    default:
        return ixd_error(c, r, 404, "no such endpoint");
    }
}

void ixd_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                   enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    ixd_req *r = *con_cls;
    if (!r)
        return;
    int e = r->route;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status) {
        size_t k = 0;
        while (k < IXD_NCODES - 1 && ixd_codes[k] != r->status)
            k++;
        atomic_fetch_add_explicit(&ixd.requests[e][k], 1, memory_order_relaxed);
        uint64_t ns = (uint64_t)(ixd_now_ns() - r->start_ns);
        size_t bkt = 0;
        while (bkt < IXD_NBUCKETS && (double)ns / 1e9 > ixd_buckets[bkt])
            bkt++;
        atomic_fetch_add_explicit(&ixd.latency[e][bkt], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ixd.latency_ns_sum[e], ns, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&ixd.aborted[e], 1, memory_order_relaxed);
    }
    ixd_body_free(r);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&ixd.inflight, 1); /* pairs with the shutdown drain's load */
}
