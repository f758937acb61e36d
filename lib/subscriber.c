/*
 * subscriber.c - feed a kvb_index from the fleet's ZeroMQ KV-event streams
 * (include/kvblock/subscriber.h has the contract, FLEET.md section 4 the rules).
 * This file: the subscriber thread, its sockets, workers and commands, and the
 * public functions; the wire and the sequence logic per worker (apply, gaps,
 * replays, duplicates, restarts, connections) are subscriber_seq.c, the
 * shared layout subscriber_internal.h.
 *
 * Built with ZeroMQ and msgpack-c when mk/zmq.mk found them (KVB_HAVE_ZMQ);
 * otherwise the same functions exist and kvb_subscriber_create() is -ENOTSUP.
 *
 * Threads. One subscriber thread owns the ZeroMQ context and every socket
 * (ZeroMQ sockets are not thread safe). Per worker: a SUB socket on the PUB
 * endpoint, a PAIR socket reading the SUB socket's monitor (inproc), and, for
 * the duration of each replay, a DEALER on the replay (ROUTER) endpoint when
 * there is one. The thread
 * zmq_polls the SUB and monitor sockets of every worker plus an eventfd; other
 * threads talk to it through a command queue under s->mu (add, remove, sync)
 * and wake it with the eventfd. add/remove wait for the answer; sync waits at
 * most its timeout (an abandoned command is freed by the thread). Nothing of
 * the user's (the callback) ever runs under s->mu; the index's own locks are
 * taken inside kvb_index_* calls only.
 *
 * Bounds on what a peer can make us hold or do: ZMQ_MAXMSGSIZE on every socket
 * (a larger message drops the connection); the SUB receive queue sized from
 * it (sub_rcvhwm; an overflow is a gap);
 * the DEALER exists only during a replay, which accepts max_replay_batches
 * batches and lasts 10 x replay_timeout_ms at most (replay_timeout_ms between
 * replies); the duplicate ring is fixed; at most SUB_MAX_RANKS streams per
 * worker; SUB_BURST messages per socket per poll round (fairness).
 */
#include "internal.h"
#include "kvblock/subscriber.h"
#include <string.h>

KVB_API void kvb_subscriber_config_init(kvb_subscriber_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->replay_timeout_ms = 2000;
    cfg->heartbeat_ivl_ms = 1000;
    cfg->tick_ms = 100;
    cfg->max_message_bytes = 64ll << 20;
    cfg->max_replay_batches = 100000;
    cfg->reconnect_ivl_ms = 100;
    cfg->reconnect_ivl_max_ms = 5000;
}

#ifndef KVB_HAVE_ZMQ

KVB_API bool kvb_subscriber_available(void)
{
    return false;
}

KVB_API int kvb_subscriber_create(const kvb_subscriber_config *cfg, kvb_subscriber **out)
{
    (void)cfg;
    (void)out;
    return -ENOTSUP;
}

KVB_API int kvb_subscriber_destroy(kvb_subscriber *sub)
{
    return sub ? 0 : -EINVAL;
}

KVB_API int kvb_subscriber_add_worker(kvb_subscriber *sub, const kvb_subscriber_worker *w)
{
    (void)sub;
    (void)w;
    return -ENOTSUP;
}

KVB_API int kvb_subscriber_remove_worker(kvb_subscriber *sub, const char *name, bool drop)
{
    (void)sub;
    (void)name;
    (void)drop;
    return -ENOTSUP;
}

KVB_API int kvb_subscriber_worker_info_get(kvb_subscriber *sub, const char *name,
                                           kvb_subscriber_worker_info *out)
{
    (void)sub;
    (void)name;
    (void)out;
    return -ENOTSUP;
}

KVB_API bool kvb_subscriber_ready(kvb_subscriber *sub)
{
    (void)sub;
    return false;
}

KVB_API int kvb_subscriber_sync(kvb_subscriber *sub, uint32_t timeout_ms)
{
    (void)sub;
    (void)timeout_ms;
    return -ENOTSUP;
}

#else /* KVB_HAVE_ZMQ */

#include "subscriber_internal.h"

KVB_API bool kvb_subscriber_available(void)
{
    return true;
}

static int sub_zerr(void)
{
    int e = zmq_errno();
    return e > 0 && e < 4096 ? -e : -EINVAL; /* ZeroMQ's own codes are huge */
}

static char *sub_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- published counters (thread) ---------------------------------------------- */

/* Publish the thread's counters of w to the readers. */
static void sub_info_sync(kvb_subscriber *s, struct sub_worker *w)
{
    w->st.expected_seq = w->expected;
    w->st.connected = w->up;
    pthread_mutex_lock(&s->mu);
    w->info = w->st;
    pthread_mutex_unlock(&s->mu);
}

/* ---- sockets (thread) ---------------------------------------------------------- */

static void sub_opt(void *sock, int opt, int v)
{
    zmq_setsockopt(sock, opt, &v, sizeof v);
}

static void sub_common_opts(kvb_subscriber *s, void *sock)
{
    int64_t max = s->cfg.max_message_bytes;
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max);
    sub_opt(sock, ZMQ_LINGER, 0);
    sub_opt(sock, ZMQ_RECONNECT_IVL, s->cfg.reconnect_ivl_ms);
    sub_opt(sock, ZMQ_RECONNECT_IVL_MAX, s->cfg.reconnect_ivl_max_ms);
}

void kvb__sub_close(void **sock)
{
    if (*sock)
        zmq_close(*sock);
    *sock = NULL;
}

/* The SUB socket's receive queue, which fills only while the thread is busy
 * elsewhere (another worker's replay): deep enough to ride that out (an
 * overflow drops messages: a gap, replayed), and no deeper than SUB_QUEUE_BYTES
 * of max-size messages, down to ZeroMQ's own default of 1000 messages. With
 * the default 64 MiB limit the floor wins (a peer could make ZeroMQ hold up to
 * 1000 x 64 MiB while the thread is busy): real batches are kilobytes, and a
 * lower max_message_bytes tightens the bound. */
static int sub_rcvhwm(const kvb_subscriber *s)
{
    int64_t n = SUB_QUEUE_BYTES / s->cfg.max_message_bytes;
    return n > SUB_RCVHWM ? SUB_RCVHWM : n < SUB_RCVHWM_MIN ? SUB_RCVHWM_MIN : (int)n;
}

/* Open the DEALER for one replay. It lives only as long as the replay: a
 * fresh socket never sees what an earlier, timed-out request still delivers,
 * and nothing a ROUTER sends unasked can pile up between replays. */
int kvb__sub_dealer_open(kvb_subscriber *s, struct sub_worker *w)
{
    kvb__sub_close(&w->dealer);
    void *d = zmq_socket(s->ctx, ZMQ_DEALER);
    if (!d)
        return sub_zerr();
    sub_common_opts(s, d);
    uint32_t hwm = s->cfg.max_replay_batches + 16u;
    sub_opt(d, ZMQ_RCVHWM, hwm > INT_MAX ? INT_MAX : (int)hwm);
    sub_opt(d, ZMQ_IMMEDIATE, 1); /* a request waits for a connection, never queues blind */
    if (zmq_connect(d, w->replay_endpoint) != 0) {
        int rc = sub_zerr();
        zmq_close(d);
        return rc;
    }
    w->dealer = d;
    return 0;
}

/* Receive one whole multipart message without waiting; keeps the first 3 parts.
 * Returns the number of parts (0: nothing was there). */
int kvb__sub_recv_parts(void *sock, zmq_msg_t part[3])
{
    int n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return n; /* the parts of a message arrive together: only at n == 0 */
        }
        bool more = zmq_msg_more(&m);
        if (n < 3)
            part[n] = m;
        else
            zmq_msg_close(&m);
        n++;
        if (!more)
            return n;
    }
}

void kvb__sub_close_parts(zmq_msg_t part[3], int n)
{
    for (int i = 0; i < n && i < 3; i++)
        zmq_msg_close(&part[i]);
}

static bool sub_stopping(kvb_subscriber *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Wait until sock has events or deadline (kvb_index_now_ns clock) passes, or
 * destroy asks the thread to stop (the eventfd; other commands wait for the
 * main loop, which looks at the queue every round anyway). */
bool kvb__sub_wait(kvb_subscriber *s, void *sock, short events, int64_t deadline)
{
    bool watch = true;
    for (;;) {
        int64_t left = deadline - kvb_index_now_ns();
        if (left < 0)
            left = 0;
        zmq_pollitem_t it[2] = {{sock, 0, events, 0}, {NULL, s->efd, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(it, watch ? 2 : 1, (long)((left + 999999) / 1000000));
        if (rc > 0 && it[0].revents)
            return true;
        if (rc > 0 && watch && it[1].revents) {
            if (sub_stopping(s)) {
                s->halt = true;
                return false;
            }
            watch = false; /* a command: left queued, not consumed */
            continue;
        }
        if (rc < 0 && zmq_errno() == EINTR)
            continue;
        if (left == 0 || rc < 0)
            return false;
    }
}

/* ---- workers (thread) ------------------------------------------------------------------- */

static void sub_worker_free(struct sub_worker *w)
{
    if (w->sub && w->mon)
        zmq_socket_monitor(w->sub, NULL, 0);
    kvb__sub_close(&w->mon);
    kvb__sub_close(&w->sub);
    kvb__sub_close(&w->dealer);
    free(w->endpoint);
    free(w->replay_endpoint);
    free(w->topic);
    free(w->ranks);
    free(w);
}

/* The index's existing streams of w (after a snapshot load): their ranks, and
 * the sequence to resume from. */
static int sub_adopt_streams(kvb_subscriber *s, struct sub_worker *w)
{
    uint32_t cap = 64, *ids = NULL;
    int n;
    for (;;) {
        uint32_t *nids = realloc(ids, cap * sizeof *ids);
        if (!nids) {
            free(ids);
            return -ENOMEM;
        }
        ids = nids;
        n = kvb_index_streams(s->idx, ids, cap);
        if (n < 0) {
            free(ids);
            return n;
        }
        if ((uint32_t)n <= cap)
            break;
        cap = (uint32_t)n + 64;
    }
    int64_t last = -1, now = kvb_index_now_ns();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        kvb_index_stream_info in;
        if (kvb_index_stream_info_get(s->idx, ids[i], &in) != 0 ||
            strcmp(in.worker, w->st.name) != 0)
            continue;
        rc = kvb__sub_add_rank(w, in.dp_rank);
        if (in.last_seq > last)
            last = in.last_seq;
        kvb_index_stream_heard(s->idx, ids[i], false, now); /* down until connected */
    }
    free(ids);
    w->expected = last + 1;
    return rc < 0 ? rc : 0;
}

static int sub_worker_add(kvb_subscriber *s, const kvb_subscriber_worker *cfg)
{
    for (struct sub_worker *o = s->workers; o; o = o->next)
        if (!strcmp(o->st.name, cfg->name))
            return -EEXIST;
    struct sub_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    snprintf(w->st.name, sizeof w->st.name, "%s", cfg->name);
    w->kind = cfg->kind;
    w->block_size = cfg->block_size;
    w->endpoint = sub_strdup(cfg->endpoint);
    w->replay_endpoint = cfg->replay_endpoint ? sub_strdup(cfg->replay_endpoint) : NULL;
    w->topic = sub_strdup(cfg->topic ? cfg->topic : "");
    kvb__sub_ring_reset(w);
    int rc = -ENOMEM;
    if (!w->endpoint || (cfg->replay_endpoint && !w->replay_endpoint) || !w->topic)
        goto fail;
    rc = sub_adopt_streams(s, w);
    if (rc < 0)
        goto fail;
    w->sub = zmq_socket(s->ctx, ZMQ_SUB);
    if (!w->sub)
        goto zfail;
    sub_common_opts(s, w->sub);
    sub_opt(w->sub, ZMQ_RCVHWM, sub_rcvhwm(s));
    if (s->cfg.heartbeat_ivl_ms) {
        uint32_t ivl =
            s->cfg.heartbeat_ivl_ms > INT_MAX / 3 ? INT_MAX / 3 : s->cfg.heartbeat_ivl_ms;
        sub_opt(w->sub, ZMQ_HEARTBEAT_IVL, (int)ivl);
        sub_opt(w->sub, ZMQ_HEARTBEAT_TIMEOUT, (int)ivl * 3);
        sub_opt(w->sub, ZMQ_HEARTBEAT_TTL, ivl * 3 > 6553599 ? 6553599 : (int)ivl * 3);
    }
    if (zmq_setsockopt(w->sub, ZMQ_SUBSCRIBE, w->topic, strlen(w->topic)) != 0)
        goto zfail;
    snprintf(w->mon_ep, sizeof w->mon_ep, "inproc://kvb-sub-mon-%p-%u", (void *)s,
             s->mon_counter++);
    if (zmq_socket_monitor(w->sub, w->mon_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0)
        goto zfail;
    w->mon = zmq_socket(s->ctx, ZMQ_PAIR);
    if (!w->mon)
        goto zfail;
    sub_opt(w->mon, ZMQ_LINGER, 0);
    if (zmq_connect(w->mon, w->mon_ep) != 0)
        goto zfail;
    if (zmq_connect(w->sub, w->endpoint) != 0)
        goto zfail;
    if (w->replay_endpoint && (rc = kvb__sub_dealer_open(s, w)) < 0)
        goto fail; /* a bad replay endpoint is refused now, not at the first replay */
    kvb__sub_close(&w->dealer);
    w->down_since = kvb_index_now_ns();
    sub_info_sync(s, w);
    pthread_mutex_lock(&s->mu);
    w->next = s->workers;
    s->workers = w;
    pthread_mutex_unlock(&s->mu);
    s->items_dirty = true;
    return 0;
zfail:
    rc = sub_zerr();
fail:
    sub_worker_free(w);
    return rc;
}

static int sub_worker_remove(kvb_subscriber *s, const char *name, bool drop)
{
    struct sub_worker **pp = &s->workers;
    while (*pp && strcmp((*pp)->st.name, name) != 0)
        pp = &(*pp)->next;
    struct sub_worker *w = *pp;
    if (!w)
        return -ENOENT;
    pthread_mutex_lock(&s->mu);
    *pp = w->next;
    pthread_mutex_unlock(&s->mu);
    s->items_dirty = true;
    if (drop)
        kvb_index_worker_remove(s->idx, w->st.name);
    else /* nobody follows it any more: let the liveness timeouts retire it */
        kvb__sub_heard_all(s, w, false, kvb_index_now_ns());
    sub_worker_free(w);
    return 0;
}

/* ---- the loop (thread) -------------------------------------------------------------------- */

static int sub_items(kvb_subscriber *s)
{
    if (!s->items_dirty)
        return 0;
    uint32_t n = 1;
    for (struct sub_worker *w = s->workers; w; w = w->next)
        n += 2;
    if (n > s->cap_items) {
        zmq_pollitem_t *it = realloc(s->items, n * sizeof *it);
        if (!it)
            return -ENOMEM;
        s->items = it;
        struct sub_worker **iw = realloc(s->item_w, n * sizeof *iw);
        if (!iw)
            return -ENOMEM;
        s->item_w = iw;
        s->cap_items = n;
    }
    s->items[0] = (zmq_pollitem_t){NULL, s->efd, ZMQ_POLLIN, 0};
    s->item_w[0] = NULL;
    uint32_t i = 1;
    for (struct sub_worker *w = s->workers; w; w = w->next) {
        s->items[i] = (zmq_pollitem_t){w->sub, 0, ZMQ_POLLIN, 0};
        s->item_w[i++] = w;
        s->items[i] = (zmq_pollitem_t){w->mon, 0, ZMQ_POLLIN, 0};
        s->item_w[i++] = w;
    }
    s->n_items = n;
    s->items_dirty = false;
    return 0;
}

/* Handle what zmq_poll reported readable (items[1..]). */
static void sub_service(kvb_subscriber *s)
{
    for (uint32_t i = 1; i + 1 < s->n_items; i += 2) {
        struct sub_worker *w = s->item_w[i];
        bool data = s->items[i].revents & ZMQ_POLLIN;
        bool mon = s->items[i + 1].revents & ZMQ_POLLIN;
        if (!data && !mon)
            continue;
        /* connection events first: a message of a new connection must not be
         * read as one of the old */
        kvb__sub_drain_monitor(s, w);
        if (data)
            kvb__sub_read(s, w);
        sub_info_sync(s, w);
    }
}

static void sub_tick(kvb_subscriber *s, int64_t now)
{
    kvb_index_tick(s->idx, now);
    for (struct sub_worker *w = s->workers; w; w = w->next) {
        if (w->up && w->followup_at && now >= w->followup_at) {
            kvb__sub_drain_monitor(s, w);
            kvb__sub_read(s, w); /* what already arrived cancels it */
            if (w->up && w->followup_at) {
                w->followup_at = 0;
                kvb__sub_followup(s, w);
            }
            sub_info_sync(s, w);
        }
        if (w->up)
            continue;
        bool changed = false;
        if (!w->stale_noted && now - w->down_since >= s->stale_after_ns) {
            w->stale_noted = changed = true;
            w->st.heard = true; /* marked: /healthz need not wait for it */
            sub_note(s, KVB_SUB_STALE, w, -1, NULL, KVB_STREAM_STALE);
        }
        if (w->stale_noted && !w->drop_noted && now - w->down_since >= s->drop_after_ns) {
            w->drop_noted = changed = true;
            w->resyncing = false;
            sub_note(s, KVB_SUB_CLEAR, w, -1, NULL, KVB_STREAM_STALE);
        }
        if (changed)
            sub_info_sync(s, w);
    }
}

/* Poll without waiting until nothing is readable (bounded), for sync. */
static void sub_drain(kvb_subscriber *s)
{
    for (int round = 0; round < 100000; round++) {
        if (sub_items(s) < 0 || s->n_items < 2)
            return;
        int rc = zmq_poll(s->items + 1, (int)s->n_items - 1, 0);
        if (rc <= 0)
            return;
        sub_service(s); /* reads the revents of items[1..] */
    }
}

static void sub_run_cmd(kvb_subscriber *s, struct sub_cmd *c)
{
    switch (c->type) {
    case SUB_CMD_ADD:
        c->result = sub_worker_add(s, c->w);
        break;
    case SUB_CMD_REMOVE:
        c->result = sub_worker_remove(s, c->name, c->drop);
        break;
    case SUB_CMD_SYNC:
        sub_drain(s);
        c->result = 0;
        break;
    default:
        c->result = -EINVAL;
    }
}

/* Run the queued commands; returns whether the thread must stop. */
static bool sub_commands(kvb_subscriber *s)
{
    pthread_mutex_lock(&s->mu);
    struct sub_cmd *c = s->cq_head;
    s->cq_head = s->cq_tail = NULL;
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    while (c) {
        struct sub_cmd *next = c->next;
        if (stop)
            c->result = -ECANCELED;
        else
            sub_run_cmd(s, c);
        pthread_mutex_lock(&s->mu);
        c->done = true;
        bool gone = c->abandoned;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (gone)
            free(c); /* the caller stopped waiting; the command is ours */
        c = next;
    }
    return stop;
}

static void *sub_main(void *arg)
{
    kvb_subscriber *s = arg;
    s->next_tick = kvb_index_now_ns() + (int64_t)s->cfg.tick_ms * 1000000;
    for (;;) {
        if (sub_items(s) < 0) {
            struct timespec ts = {0, 10000000}; /* out of memory: retry shortly */
            nanosleep(&ts, NULL);
            continue;
        }
        int64_t now = kvb_index_now_ns();
        int64_t wait = s->next_tick > now ? (s->next_tick - now + 999999) / 1000000 : 0;
        int rc = zmq_poll(s->items, (int)s->n_items, (long)wait);
        if (rc > 0) {
            if (s->items[0].revents & ZMQ_POLLIN) {
                uint64_t v;
                ssize_t r = read(s->efd, &v, sizeof v);
                (void)r;
            }
            sub_service(s);
        }
        if (sub_commands(s))
            break;
        now = kvb_index_now_ns();
        if (now >= s->next_tick) {
            sub_tick(s, now);
            s->next_tick = now + (int64_t)s->cfg.tick_ms * 1000000;
        }
    }
    /* stop: close every socket; the context is terminated by destroy */
    pthread_mutex_lock(&s->mu);
    struct sub_worker *w = s->workers;
    s->workers = NULL;
    pthread_mutex_unlock(&s->mu);
    while (w) {
        struct sub_worker *next = w->next;
        sub_worker_free(w);
        w = next;
    }
    return NULL;
}

/* ---- the public functions ------------------------------------------------------------------ */

static void sub_free(kvb_subscriber *s)
{
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    if (s->efd >= 0)
        close(s->efd);
    free(s->items);
    free(s->item_w);
    free(s);
}

KVB_API int kvb_subscriber_create(const kvb_subscriber_config *cfg, kvb_subscriber **out)
{
    if (!cfg || !out || !cfg->index || cfg->replay_timeout_ms == 0 || cfg->tick_ms == 0 ||
        cfg->max_message_bytes <= 0 || cfg->max_replay_batches == 0 || cfg->reconnect_ivl_ms < 0 ||
        cfg->reconnect_ivl_max_ms < 0)
        return -EINVAL;
    kvb_index_config icfg;
    int rc = kvb_index_config_get(cfg->index, &icfg);
    if (rc < 0)
        return rc;
    kvb_subscriber *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->idx = cfg->index;
    s->stale_after_ns = (int64_t)(icfg.stale_after_s * 1e9);
    s->drop_after_ns = (int64_t)(icfg.drop_after_s * 1e9);
    s->items_dirty = true;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        rc = -errno;
        sub_free(s);
        return rc;
    }
    s->ctx = zmq_ctx_new();
    if (!s->ctx) {
        sub_free(s);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        sub_free(s);
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&s->mu);
        sub_free(s);
        return -ENOMEM;
    }
    /* pthread_create orders everything above before the thread's first access */
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        sub_free(s);
        return -EAGAIN;
    }
    *out = s;
    return 0;
}

KVB_API int kvb_subscriber_destroy(kvb_subscriber *sub)
{
    if (!sub)
        return -EINVAL;
    pthread_mutex_lock(&sub->mu);
    sub->stop = true;
    pthread_mutex_unlock(&sub->mu);
    uint64_t one = 1;
    ssize_t w = write(sub->efd, &one, sizeof one);
    (void)w;
    pthread_join(sub->thread, NULL);
    /* commands left in the queue were answered -ECANCELED by the thread; any
     * still queued now (none: no call may run concurrently) would leak */
    pthread_cond_destroy(&sub->cv);
    pthread_mutex_destroy(&sub->mu);
    sub_free(sub);
    return 0;
}

/* Queue c and wait for its answer (timeout_ms < 0: no limit). A command that
 * times out is left to the thread, which frees it. */
static int sub_submit(kvb_subscriber *s, struct sub_cmd *c, int64_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms >= 0) {
        uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
        dl.tv_sec += (time_t)(ns / 1000000000ull);
        dl.tv_nsec = (long)(ns % 1000000000ull);
    }
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return -ECANCELED;
    }
    c->next = NULL;
    if (s->cq_tail)
        s->cq_tail->next = c;
    else
        s->cq_head = c;
    s->cq_tail = c;
    pthread_mutex_unlock(&s->mu);
    uint64_t one = 1;
    ssize_t wr = write(s->efd, &one, sizeof one);
    (void)wr; /* EAGAIN only when the counter is saturated: already awake */
    pthread_mutex_lock(&s->mu);
    while (!c->done) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT && !c->done) {
            c->abandoned = true;
            pthread_mutex_unlock(&s->mu);
            return -ETIMEDOUT;
        }
    }
    int rc = c->result;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

KVB_API int kvb_subscriber_add_worker(kvb_subscriber *sub, const kvb_subscriber_worker *w)
{
    if (!sub || !w || !w->name || !w->name[0] || strlen(w->name) >= KVB_INDEX_NAME_MAX ||
        !w->endpoint || !w->endpoint[0] || (w->replay_endpoint && !w->replay_endpoint[0]) ||
        (w->kind != KVB_WIRE_VLLM && w->kind != KVB_WIRE_SGLANG && w->kind != KVB_WIRE_KVBLOCK))
        return -EINVAL;
    struct sub_cmd c = {.type = SUB_CMD_ADD, .w = w};
    return sub_submit(sub, &c, -1);
}

KVB_API int kvb_subscriber_remove_worker(kvb_subscriber *sub, const char *name, bool drop)
{
    if (!sub || !name)
        return -EINVAL;
    struct sub_cmd c = {.type = SUB_CMD_REMOVE, .name = name, .drop = drop};
    return sub_submit(sub, &c, -1);
}

KVB_API int kvb_subscriber_sync(kvb_subscriber *sub, uint32_t timeout_ms)
{
    if (!sub)
        return -EINVAL;
    struct sub_cmd *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->type = SUB_CMD_SYNC;
    int rc = sub_submit(sub, c, timeout_ms);
    if (rc != -ETIMEDOUT)
        free(c); /* answered (or never queued): still ours */
    return rc;
}

KVB_API int kvb_subscriber_worker_info_get(kvb_subscriber *sub, const char *name,
                                           kvb_subscriber_worker_info *out)
{
    if (!sub || !name || !out)
        return -EINVAL;
    int rc = -ENOENT;
    pthread_mutex_lock(&sub->mu);
    for (struct sub_worker *w = sub->workers; w; w = w->next) {
        if (!strcmp(w->info.name, name)) {
            *out = w->info;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&sub->mu);
    return rc;
}

KVB_API bool kvb_subscriber_ready(kvb_subscriber *sub)
{
    if (!sub)
        return false;
    bool ready = true;
    pthread_mutex_lock(&sub->mu);
    for (struct sub_worker *w = sub->workers; w; w = w->next)
        ready &= w->info.heard;
    pthread_mutex_unlock(&sub->mu);
    return ready;
}

#endif /* KVB_HAVE_ZMQ */
