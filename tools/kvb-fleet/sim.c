/*
 * tools/kvb-fleet/sim.c - one fleet simulation (discrete events, one thread,
 * deterministic for a seed; kvb-fleet.c's file comment gives the loop): W
 * worker pools whose KV events feed one kvb_index, in process (each pool's sink
 * converts its batches and calls kvb_index_apply) or over ZeroMQ ipc (one
 * publisher per pool, one subscriber, and a barrier that waits until the index
 * has applied every published batch); the routing policies; the requests'
 * lifecycle on the chosen pool (tools/common/request.c: match, fill, release
 * last block first when the request completes, or early when its worker needs
 * the room); and the end-of-run check that each stream holds exactly its pool's
 * cached-or-active blocks.
 */
#include "kvb-fleet/fleet.h"

#include "kvblock/publisher.h"
#include "kvblock/subscriber.h"

#include "common/request.h"

#include <math.h>
#include <unistd.h>

typedef struct fleet_sim fleet_sim;

typedef struct fleet_worker {
    fleet_sim *sim;
    uint32_t id;
    char name[16];
    kvb_pool *pool;
    kvb_event_config ev;
    /* in process */
    uint32_t stream;
    int64_t batch_seq; /* sequence number of the next batch applied */
    /* zmq */
    kvb_publisher *pub;
    bool dirty; /* published since the last barrier */
    /* load */
    uint32_t load;
    uint64_t work_tokens;
    uint64_t head, tail; /* in-flight requests in arrival order (doubly linked) */
} fleet_worker;

#define FLEET_NONE UINT64_MAX

struct fleet_sim {
    const fleet_opts *o;
    const fleet_load *L;
    fleet_pol pol;
    uint32_t W, C;
    fleet_worker *w;
    kvb_index *idx;
    kvb_subscriber *sub;
    char tmpdir[64];

    /* sink scratch (in process) */
    kvb_index_event *evs;
    uint32_t evs_cap;
    uint64_t *hs;
    size_t hs_cap;
    uint64_t apply_ns;

    /* requests */
    kvb_block **blk; /* per request: its held handles (NULL when not running) */
    uint32_t *req_worker;
    uint64_t *finish_us;
    uint64_t *prev, *next; /* per-worker in-flight lists */
    uint64_t *heap;        /* running requests by (finish, index) */
    uint64_t heap_n;

    /* routing */
    kvb_index_result *res;
    uint32_t *pred; /* per worker: predicted prefix of this request */
    uint32_t rr, ll_rot;

    /* results */
    uint64_t hits, refs, mispred, early, guard, affinity, lowmatch, entry_mismatch;
    double sum_max, sum_mean;
    uint32_t *lat_ns;
    uint64_t n_lat;
    uint64_t wall_ns;
    kvb_index_stats istats;
};

/* ---- heap of running requests ---- */

static bool fleet_before(const fleet_sim *s, uint64_t a, uint64_t b)
{
    return s->finish_us[a] < s->finish_us[b] || (s->finish_us[a] == s->finish_us[b] && a < b);
}

static void fleet_heap_push(fleet_sim *s, uint64_t r)
{
    uint64_t i = s->heap_n++;
    while (i > 0) {
        uint64_t p = (i - 1) / 2;
        if (!fleet_before(s, r, s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = r;
}

static uint64_t fleet_heap_pop(fleet_sim *s)
{
    uint64_t top = s->heap[0], last = s->heap[--s->heap_n], i = 0;
    for (;;) {
        uint64_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && fleet_before(s, s->heap[c + 1], s->heap[c]))
            c++;
        if (!fleet_before(s, s->heap[c], last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n)
        s->heap[i] = last;
    return top;
}

/* ---- event sinks ---- */

static void fleet_sink_inproc(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    fleet_worker *w = user;
    fleet_sim *s = w->sim;
    size_t nh = 0;
    (void)pool;
    for (uint32_t i = 0; i < n; i++)
        nh += events[i].n;
    if (n > s->evs_cap) {
        s->evs_cap = n * 2;
        s->evs = kvbt_xrealloc(s->evs, s->evs_cap * sizeof *s->evs);
    }
    if (nh > s->hs_cap) {
        s->hs_cap = nh * 2;
        s->hs = kvbt_xrealloc(s->hs, s->hs_cap * sizeof *s->hs);
    }
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const kvb_event *e = &events[i];
        kvb_index_event *x = &s->evs[i];
        memset(x, 0, sizeof *x);
        x->type = e->type == KVB_EVENT_STORED    ? KVB_INDEX_EV_STORED
                  : e->type == KVB_EVENT_REMOVED ? KVB_INDEX_EV_REMOVED
                                                 : KVB_INDEX_EV_CLEARED;
        x->tier = KVB_TIER_DEVICE;
        x->n_hashes = e->n;
        x->hashes = s->hs + at;
        for (uint32_t j = 0; j < e->n; j++)
            s->hs[at++] = kvb_hash_current(e->hashes[j]);
        x->has_parent = e->type == KVB_EVENT_STORED && e->has_parent;
        x->parent = x->has_parent ? kvb_hash_current(e->parent) : 0;
        x->block_size = 0; /* the stream's */
    }
    uint64_t t0 = kvbt_now_ns();
    int rc = kvb_index_apply(s->idx, w->stream, s->evs, n, w->batch_seq++);
    s->apply_ns += kvbt_now_ns() - t0;
    if (rc < 0)
        kvbt_die(prog, "kvb_index_apply (worker %s): %s", w->name, kvb_strerror(rc));
}

static void fleet_sink_zmq(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    fleet_worker *w = user;
    w->dirty = true;
    kvb_publisher_sink(w->pub, pool, events, n);
}

/* ---- zmq barrier ---- */

static bool fleet_stream_caught_up(fleet_sim *s, fleet_worker *w, int64_t want)
{
    uint32_t sid;
    kvb_index_stream_info info;
    if (kvb_index_stream_find(s->idx, w->name, KVB_INDEX_NO_RANK, &sid) != 0)
        return false;
    if (kvb_index_stream_info_get(s->idx, sid, &info) != 0)
        return false;
    return info.last_seq >= want;
}

static void fleet_zmq_barrier(fleet_sim *s)
{
    int64_t *want = kvbt_xmalloc_array(s->W, sizeof *want);
    bool any = false;
    for (uint32_t i = 0; i < s->W; i++) {
        fleet_worker *w = &s->w[i];
        want[i] = -1;
        if (!w->dirty)
            continue;
        int rc = kvb_publisher_flush(w->pub, 10000);
        if (rc < 0)
            kvbt_die(prog, "kvb_publisher_flush (%s): %s", w->name, kvb_strerror(rc));
        kvb_publisher_stats ps;
        kvb_publisher_stats_get(w->pub, &ps);
        if (ps.dropped)
            kvbt_die(prog, "publisher %s dropped %llu batches", w->name,
                     (unsigned long long)ps.dropped);
        want[i] = ps.last_seq;
        w->dirty = false;
        any = true;
    }
    uint64_t deadline = kvbt_now_ns() + 10000000000ull;
    while (any) {
        int rc = kvb_subscriber_sync(s->sub, 1000);
        if (rc < 0 && rc != -ETIMEDOUT)
            kvbt_die(prog, "kvb_subscriber_sync: %s", kvb_strerror(rc));
        bool all = true;
        for (uint32_t i = 0; i < s->W && all; i++)
            if (want[i] >= 0 && !fleet_stream_caught_up(s, &s->w[i], want[i]))
                all = false;
        if (all)
            break;
        if (kvbt_now_ns() > deadline)
            kvbt_die(prog, "the subscriber did not apply the published batches within 10 s");
        usleep(50);
    }
    free(want);
}

/* ---- setup and teardown ---- */

static void fleet_sim_init(fleet_sim *s, const fleet_opts *o, const fleet_load *L, fleet_pol pol,
                           uint32_t W, uint32_t C)
{
    int rc;
    uint64_t n = L->t.n_requests;
    memset(s, 0, sizeof *s);
    s->o = o;
    s->L = L;
    s->pol = pol;
    s->W = W;
    s->C = C;

    kvb_index_config ic;
    kvb_index_config_init(&ic);
    ic.block_size = o->block_size;
    rc = kvb_index_create(&ic, &s->idx);
    if (rc < 0)
        kvbt_die(prog, "kvb_index_create: %s", kvb_strerror(rc));

    bool zmq = o->transport == TR_ZMQ;
    if (zmq) {
        snprintf(s->tmpdir, sizeof s->tmpdir, "/tmp/kvb-fleet-XXXXXX");
        if (!mkdtemp(s->tmpdir))
            kvbt_die(prog, "mkdtemp: %s", strerror(errno));
        kvb_subscriber_config sc;
        kvb_subscriber_config_init(&sc);
        sc.index = s->idx;
        rc = kvb_subscriber_create(&sc, &s->sub);
        if (rc < 0)
            kvbt_die(prog, "kvb_subscriber_create: %s%s", kvb_strerror(rc),
                     rc == -ENOTSUP ? " (kvblock built without ZeroMQ)" : "");
    }

    s->w = calloc(W, sizeof *s->w);
    if (!s->w)
        kvbt_die(prog, "out of memory");
    for (uint32_t i = 0; i < W; i++) {
        fleet_worker *w = &s->w[i];
        w->sim = s;
        w->id = i;
        w->head = w->tail = FLEET_NONE;
        snprintf(w->name, sizeof w->name, "w%u", i);
        kvb_event_config_init(&w->ev);
        w->ev.user = w;
        if (zmq) {
            char ep[128], rep[128];
            snprintf(ep, sizeof ep, "ipc://%s/%s.pub", s->tmpdir, w->name);
            snprintf(rep, sizeof rep, "ipc://%s/%s.replay", s->tmpdir, w->name);
            kvb_publisher_config pc;
            kvb_publisher_config_init(&pc);
            pc.endpoint = ep;
            pc.replay_endpoint = rep;
            pc.topic = "kv";
            rc = kvb_publisher_create(&pc, &w->pub);
            if (rc < 0)
                kvbt_die(prog, "kvb_publisher_create (%s): %s", ep, kvb_strerror(rc));
            w->ev.sink = fleet_sink_zmq;
            kvb_subscriber_worker sw;
            memset(&sw, 0, sizeof sw);
            sw.name = w->name;
            sw.endpoint = ep;
            sw.replay_endpoint = rep;
            sw.kind = KVB_WIRE_KVBLOCK;
            sw.topic = "kv";
            rc = kvb_subscriber_add_worker(s->sub, &sw);
            if (rc < 0)
                kvbt_die(prog, "kvb_subscriber_add_worker (%s): %s", ep, kvb_strerror(rc));
        } else {
            kvb_index_stream_config sc;
            memset(&sc, 0, sizeof sc);
            sc.name = w->name;
            sc.dp_rank = KVB_INDEX_NO_RANK;
            sc.hashes = KVB_INDEX_HASHES_ROUTER;
            rc = kvb_index_stream_add(s->idx, &sc, &w->stream);
            if (rc < 0)
                kvbt_die(prog, "kvb_index_stream_add: %s", kvb_strerror(rc));
            w->ev.sink = fleet_sink_inproc;
        }
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = C;
        cfg.block_size = o->block_size;
        cfg.evict = o->evict;
        cfg.name = w->name;
        cfg.events = &w->ev;
        rc = kvb_pool_create(&cfg, &w->pool);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_create (%u blocks): %s", C, kvb_strerror(rc));
    }
    if (zmq) {
        /* Every SUB socket connected, then a pause for the subscriptions to reach the
         * publishers (ZeroMQ's slow joiner); a batch lost anyway is replayed. */
        uint64_t deadline = kvbt_now_ns() + 10000000000ull;
        for (uint32_t i = 0; i < W; i++) {
            kvb_subscriber_worker_info wi;
            while (kvb_subscriber_worker_info_get(s->sub, s->w[i].name, &wi) != 0 ||
                   !wi.connected) {
                if (kvbt_now_ns() > deadline)
                    kvbt_die(prog, "the subscriber did not connect to %s within 10 s",
                             s->w[i].name);
                usleep(1000);
            }
        }
        usleep(200000);
    }

    s->blk = calloc(n + 1, sizeof *s->blk);
    s->req_worker = kvbt_xmalloc_array(n + 1, sizeof *s->req_worker);
    s->finish_us = kvbt_xmalloc_array(n + 1, sizeof *s->finish_us);
    s->prev = kvbt_xmalloc_array(n + 1, sizeof *s->prev);
    s->next = kvbt_xmalloc_array(n + 1, sizeof *s->next);
    s->heap = kvbt_xmalloc_array(n + 1, sizeof *s->heap);
    s->res = kvbt_xmalloc_array(W, sizeof *s->res);
    s->pred = kvbt_xmalloc_array(W, sizeof *s->pred);
    s->lat_ns = kvbt_xmalloc_array(n + 1, sizeof *s->lat_ns);
    if (!s->blk)
        kvbt_die(prog, "out of memory");
}

static void fleet_sim_fini(fleet_sim *s)
{
    int rc;
    for (uint32_t i = 0; i < s->W; i++) {
        rc = kvb_pool_destroy(s->w[i].pool);
        if (rc != 0)
            kvbt_die(prog, "kvb_pool_destroy (%s): %s", s->w[i].name, kvb_strerror(rc));
    }
    if (s->sub)
        kvb_subscriber_destroy(s->sub);
    for (uint32_t i = 0; i < s->W; i++)
        if (s->w[i].pub)
            kvb_publisher_destroy(s->w[i].pub);
    kvb_index_destroy(s->idx);
    if (s->tmpdir[0]) {
        char path[160];
        for (uint32_t i = 0; i < s->W; i++) {
            snprintf(path, sizeof path, "%s/%s.pub", s->tmpdir, s->w[i].name);
            unlink(path);
            snprintf(path, sizeof path, "%s/%s.replay", s->tmpdir, s->w[i].name);
            unlink(path);
        }
        rmdir(s->tmpdir);
    }
    free(s->w);
    free(s->evs);
    free(s->hs);
    free(s->blk);
    free(s->req_worker);
    free(s->finish_us);
    free(s->prev);
    free(s->next);
    free(s->heap);
    free(s->res);
    free(s->pred);
    free(s->lat_ns);
}

/* ---- request lifecycle ---- */

/* Release request r's blocks (last block first) and take it off its worker. */
static void fleet_release(fleet_sim *s, uint64_t r)
{
    fleet_worker *w = &s->w[s->req_worker[r]];
    uint32_t n = (uint32_t)kvbt_trace_len(&s->L->t, r);
    kvb_block *b = s->blk[r];
    int rc = kvbt_request_release(b, n);
    if (rc < 0)
        kvbt_die(prog, "kvb_block_release_n: %s", kvb_strerror(rc));
    free(b);
    s->blk[r] = NULL;
    /* unlink */
    if (s->prev[r] != FLEET_NONE)
        s->next[s->prev[r]] = s->next[r];
    else
        w->head = s->next[r];
    if (s->next[r] != FLEET_NONE)
        s->prev[s->next[r]] = s->prev[r];
    else
        w->tail = s->prev[r];
    w->load--;
}

/* make_room of the request lifecycle on worker w: too much held, the oldest of
 * its requests goes early. */
typedef struct fleet_room {
    fleet_sim *s;
    fleet_worker *w;
} fleet_room;

static bool fleet_make_room(void *ctx)
{
    fleet_room *x = ctx;
    if (x->w->head == FLEET_NONE)
        return false;
    fleet_release(x->s, x->w->head);
    return true;
}

static void fleet_complete_until(fleet_sim *s, uint64_t t_us)
{
    while (s->heap_n && s->finish_us[s->heap[0]] <= t_us) {
        uint64_t r = fleet_heap_pop(s);
        if (s->blk[r]) /* not released early */
            fleet_release(s, r);
    }
}

/* Least loaded worker; ties: the first at or after the rotation point. */
static uint32_t fleet_least_loaded(fleet_sim *s)
{
    uint32_t best = s->ll_rot % s->W;
    for (uint32_t k = 1; k < s->W; k++) {
        uint32_t i = (s->ll_rot + k) % s->W;
        if (s->w[i].load < s->w[best].load)
            best = i;
    }
    s->ll_rot = best + 1;
    return best;
}

static uint32_t fleet_worker_of(const kvb_index_result *x)
{
    return (uint32_t)strtoul(x->worker + 1, NULL, 10);
}

static uint32_t fleet_route(fleet_sim *s, uint32_t n, int nres)
{
    switch (s->pol) {
    case POL_ROUND_ROBIN:
        return s->rr++ % s->W;
    case POL_LEAST_LOADED:
        return fleet_least_loaded(s);
    case POL_KV_AWARE: {
        uint32_t mn = UINT32_MAX, mx = 0;
        for (uint32_t i = 0; i < s->W; i++) {
            mn = s->w[i].load < mn ? s->w[i].load : mn;
            mx = s->w[i].load > mx ? s->w[i].load : mx;
        }
        if (!s->o->guard_target && mx - mn > s->o->balance_abs &&
            (double)mx > (double)mn * s->o->balance_rel) {
            s->guard++;
            return fleet_least_loaded(s);
        }
        uint32_t k = (uint32_t)(nres < (int)s->W ? nres : (int)s->W);
        uint32_t best = k ? s->res[0].device : 0;
        if (n && (double)best / n > s->o->cache_threshold) {
            uint32_t pick = fleet_worker_of(&s->res[0]);
            for (uint32_t j = 1; j < k && s->res[j].device == best; j++) {
                uint32_t c = fleet_worker_of(&s->res[j]);
                if (s->w[c].load < s->w[pick].load)
                    pick = c;
            }
            uint32_t pl = s->w[pick].load;
            if (s->o->guard_target && pl - mn > s->o->balance_abs &&
                (double)pl > (double)mn * s->o->balance_rel) {
                s->guard++;
                return fleet_least_loaded(s);
            }
            s->affinity++;
            return pick;
        }
        s->lowmatch++;
        return fleet_least_loaded(s);
    }
    default:
        return 0;
    }
}

static int fleet_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void fleet_run(fleet_sim *s, kvbt_progress *prog_bar, fleet_result *out)
{
    const fleet_load *L = s->L;
    const kvbt_trace *t = &L->t;
    const fleet_opts *o = s->o;
    bool zmq = o->transport == TR_ZMQ;
    uint64_t n_req = t->n_requests;
    size_t maxn = (size_t)t->max_request_blocks + 1;
    kvb_mutable *mut = kvbt_xmalloc_array(maxn, sizeof *mut);
    kvb_complete *cmp = kvbt_xmalloc_array(maxn, sizeof *cmp);
    /* make_room: the chosen worker's oldest request goes early (counted in early) */
    kvbt_request_fill_args fill = {.mut = mut, .cmp = cmp, .make_room = fleet_make_room};
    int rc;

    uint64_t t_start = kvbt_now_ns();
    for (uint64_t r = 0; r < n_req; r++) {
        const uint32_t n = (uint32_t)kvbt_trace_len(t, r);
        const uint64_t off = t->off[r];

        fleet_complete_until(s, L->arrival_us[r]);
        if (zmq && o->sync_every && r % o->sync_every == 0)
            fleet_zmq_barrier(s);

        /* load sample */
        uint32_t mx = 0, tot = 0;
        for (uint32_t i = 0; i < s->W; i++) {
            mx = s->w[i].load > mx ? s->w[i].load : mx;
            tot += s->w[i].load;
        }
        s->sum_max += mx;
        s->sum_mean += (double)tot / s->W;

        /* the index's view */
        uint64_t t0 = kvbt_now_ns();
        int nres = kvb_index_match(s->idx, L->rh + off, n, s->res, s->W);
        uint64_t dt = kvbt_now_ns() - t0;
        if (nres < 0)
            kvbt_die(prog, "kvb_index_match: %s", kvb_strerror(nres));
        s->lat_ns[s->n_lat++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        memset(s->pred, 0, s->W * sizeof *s->pred);
        for (int j = 0; j < nres && j < (int)s->W; j++) {
            uint32_t wi = fleet_worker_of(&s->res[j]);
            if (wi < s->W)
                s->pred[wi] = s->res[j].device;
        }

        uint32_t wi = s->pol == POL_SINGLE ? 0 : fleet_route(s, n, nres);
        fleet_worker *w = &s->w[wi];

        /* serve on w */
        kvb_block *blk = kvbt_xmalloc_array(n + 1, sizeof *blk);
        rc = kvb_pool_match(w->pool, L->lin + off, n, blk);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_match: %s", kvb_strerror(rc));
        uint32_t k = (uint32_t)rc;
        if (k != s->pred[wi])
            s->mispred++;
        s->hits += k;
        s->refs += n;
        fleet_room room = {s, w};
        fill.room_ctx = &room;
        rc = kvbt_request_fill(w->pool, L->lin + off, n, k, blk, &fill);
        if (rc < 0)
            kvbt_die(prog, "%s (%u blocks on %s): %s", fill.failed, n - k, w->name,
                     kvb_strerror(rc));
        s->blk[r] = blk;
        s->req_worker[r] = wi;

        /* service time */
        uint64_t cached_tok = (uint64_t)k * o->block_tokens;
        uint64_t prefill_tok = L->in_tok[r] > cached_tok ? L->in_tok[r] - cached_tok : 0;
        double svc_us = (double)prefill_tok * 1e6 / o->prefill_tps +
                        (double)L->out_tok[r] * o->tpot_ms * 1000.0;
        s->finish_us[r] = L->arrival_us[r] + (uint64_t)llround(svc_us);
        w->work_tokens += prefill_tok + L->out_tok[r];
        fleet_heap_push(s, r);
        s->prev[r] = w->tail;
        s->next[r] = FLEET_NONE;
        if (w->tail != FLEET_NONE)
            s->next[w->tail] = r;
        else
            w->head = r;
        w->tail = r;
        w->load++;

        if ((r & 255) == 255)
            kvbt_progress_add(prog_bar, 256);
    }
    s->early = fill.early;
    fleet_complete_until(s, UINT64_MAX);
    if (zmq)
        fleet_zmq_barrier(s);
    s->wall_ns = kvbt_now_ns() - t_start;

    /* End check: each stream holds exactly its pool's cached-or-active blocks. */
    for (uint32_t i = 0; i < s->W; i++) {
        kvb_stats st;
        kvb_index_stream_info info;
        uint32_t sid;
        if (kvb_pool_stats(s->w[i].pool, &st) != 0)
            kvbt_die(prog, "kvb_pool_stats failed");
        uint64_t have = 0;
        if (kvb_index_stream_find(s->idx, s->w[i].name, KVB_INDEX_NO_RANK, &sid) == 0 &&
            kvb_index_stream_info_get(s->idx, sid, &info) == 0)
            have = info.entries;
        if (have != (uint64_t)st.primary + st.inactive)
            s->entry_mismatch++;
    }
    kvb_index_stats_get(s->idx, &s->istats);

    memset(out, 0, sizeof *out);
    out->hits = s->hits;
    out->refs = s->refs;
    out->mispred = s->mispred;
    out->early = s->early;
    out->guard = s->guard;
    out->affinity = s->affinity;
    out->lowmatch = s->lowmatch;
    out->entry_mismatch = s->entry_mismatch;
    out->load_ratio = s->sum_mean > 0 ? s->sum_max / s->sum_mean : 1.0;
    out->load_avg = n_req ? s->sum_mean / (double)n_req : 0.0;
    uint64_t wmax = 0, wsum = 0;
    for (uint32_t i = 0; i < s->W; i++) {
        wmax = s->w[i].work_tokens > wmax ? s->w[i].work_tokens : wmax;
        wsum += s->w[i].work_tokens;
    }
    out->work_ratio = wsum ? (double)wmax * s->W / (double)wsum : 1.0;
    out->events = s->istats.events;
    if (zmq)
        out->ev_per_s = s->wall_ns ? (double)out->events * 1e9 / (double)s->wall_ns : 0;
    else
        out->ev_per_s = s->apply_ns ? (double)out->events * 1e9 / (double)s->apply_ns : 0;
    qsort(s->lat_ns, s->n_lat, sizeof *s->lat_ns, fleet_cmp_u32);
    if (s->n_lat) {
        out->p50 = s->lat_ns[(s->n_lat - 1) * 50 / 100];
        out->p99 = s->lat_ns[(s->n_lat - 1) * 99 / 100];
    }
    free(mut);
    free(cmp);
}

void fleet_one(const fleet_opts *o, const fleet_load *L, fleet_pol pol, uint32_t W, uint32_t C,
               kvbt_progress *bar, fleet_result *res)
{
    fleet_sim s;
    if (L->t.max_request_blocks > C)
        kvbt_die(prog, "a request of %llu blocks does not fit a worker of %u blocks",
                 (unsigned long long)L->t.max_request_blocks, C);
    fleet_sim_init(&s, o, L, pol, W, C);
    fleet_run(&s, bar, res);
    fleet_sim_fini(&s);
}
