/*
 * subscriber.c - feed a kvb_index from the fleet's ZeroMQ KV-event streams
 * (include/kvblock/subscriber.h has the contract, FLEET.md section 4 the rules).
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
 * Wire (vllm/distributed/kv_events.py, ZmqEventPublisher; kvblock's
 * lib/publisher.c speaks the same):
 *   PUB:    [topic, 8-byte big-endian seq, msgpack payload]; anything else is
 *           counted (bad_messages) and dropped.
 *   replay: the DEALER sends ["", 8-byte big-endian start]; the ROUTER answers
 *           ["", seq, payload] for every buffered batch with seq >= start, then
 *           ["", -1 as 8 bytes, ""]. vLLM's ROUTER keeps its default send
 *           high-water mark, so a long replay may lose messages in the middle:
 *           a hole in a replay is handled as a gap that cannot be replayed.
 *
 * Sequence logic per worker endpoint (one sequence space; ranks ride inside
 * the batches). `expected` is the next sequence number wanted, or -1 ("any")
 * after a clear of unknown state, when the next batch simply starts a new
 * contiguous run. Every applied batch is remembered in a small ring (seq,
 * XXH3 of the payload, rank) for duplicate and restart detection.
 *  - seq == expected: apply; a RESYNCING worker becomes LIVE with the second
 *    batch applied in order after its clear (the first one restarts the run).
 *  - seq > expected (gap): replay [expected, seq) and apply it in order, then
 *    the triggering batch. A reply above the next wanted number (a hole: the
 *    buffer was trimmed, or the ROUTER dropped messages) clears every stream
 *    of the worker (RESYNCING) and the run restarts at that reply: after a
 *    clear any contiguous run is safe to apply (the index holds only what the
 *    run stored; a REMOVED of an earlier block is harmless). No replay
 *    endpoint, a timeout, or a tail the replay did not reach: clear, then
 *    apply the trigger.
 *  - seq < expected: a duplicate when the ring holds that number with that
 *    payload, or when the ring no longer remembers it but the message moves
 *    forward on a connection whose catch-up proved the incarnation (the
 *    replay got ahead of a busy PUB stream). Otherwise (the ring holds
 *    another payload, the sequence went backwards on one connection, no
 *    catch-up proved anything) a restart: clear (LIVE), then the new
 *    incarnation is read from 0: replayed when there is a replay endpoint, so
 *    the batches it published before we noticed are not lost.
 * Connections (socket monitor, ZMQ_EVENT_HANDSHAKE_SUCCEEDED / DISCONNECTED):
 *  - down: kvb_index_stream_heard(false) on the worker's streams; kvb_index_tick
 *    (every tick_ms) makes them STALE after stale_after_s and frees their
 *    entries after drop_after_s. The subscriber mirrors those deadlines for
 *    its notes (KVB_SUB_STALE, KVB_SUB_CLEAR with STALE) and for readiness.
 *  - up: heard(true); then a catch-up replay at once (not at the worker's next
 *    batch, which an idle engine may never send). When expected > 0 the replay
 *    starts at expected - 1 and proves the publisher is the same incarnation:
 *    it must hold that batch with the payload we applied (after a snapshot
 *    load the ring is empty and the number alone is taken). A different
 *    payload, or nothing at or above expected - 1 (a publisher always buffers
 *    its latest batch), is a restart. A buffer that starts above expected - 1
 *    cannot prove anything: clear (RESYNCING) and continue from there. With
 *    no replay endpoint, or when the catch-up fails, a reconnect clears the
 *    worker (RESYNCING, expected = any): its state is unknown. A cleared
 *    worker's catch-up takes everything the buffer holds.
 *    A connection that delivers nothing for SUB_FOLLOWUP_NS after its
 *    catch-up gets a second one (see SUB_FOLLOWUP_NS).
 *  - down: the SUB socket dials again at once (libzmq gives up on a session
 *    after a protocol error such as a message over ZMQ_MAXMSGSIZE).
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

#include <limits.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zmq.h>

#define SUB_RING        256         /* applied batches remembered per worker (power of two) */
#define SUB_MAX_RANKS   256         /* streams (data-parallel ranks) one worker may create */
#define SUB_BURST       256         /* messages read from one socket per poll round */
#define SUB_RCVHWM      10000       /* SUB receive queue, in messages: at most ... */
#define SUB_QUEUE_BYTES (4ll << 30) /* ... this many bytes of max-size messages ... */
#define SUB_RCVHWM_MIN  1000        /* ... but never fewer than ZeroMQ's default */
#define SUB_RANK_NONE   INT64_MIN   /* ring: the batch did not decode */
/* A connection that delivered nothing this long after its catch-up gets a
 * second one: a batch published while the new subscription was still on its
 * way to the publisher was dropped by the PUB socket, after the first catch-up
 * had been answered; with an idle publisher no later batch would show the gap. */
#define SUB_FOLLOWUP_NS 1000000000ll

/* One applied batch, remembered for duplicate and restart detection. */
struct sub_seen {
    int64_t seq; /* -1: empty slot */
    uint64_t hash;
    int64_t rank;
};

struct sub_worker {
    struct sub_worker *next;         /* (mu) written by the thread only */
    kvb_subscriber_worker_info info; /* (mu) the readers' copy of st */
    /* ---- (thread) everything below ---- */
    kvb_subscriber_worker_info st;
    char *endpoint, *replay_endpoint, *topic;
    kvb_wire_kind kind;
    uint32_t block_size;
    void *sub, *mon, *dealer;
    char mon_ep[96];
    int64_t expected;      /* next sequence number wanted; -1: any */
    bool resyncing;        /* cleared after a gap; LIVE again once current */
    bool resync_armed;     /* a batch was applied since the clear */
    bool up;               /* transport up (handshake done) */
    bool was_up;           /* it has been up before: the next up is a reconnect */
    bool stale_noted;      /* KVB_SUB_STALE was sent for this down period */
    bool drop_noted;       /* the drop_after clear was noted for this down period */
    int64_t down_since;    /* kvb_index_now_ns() when the transport went down */
    int64_t followup_at;   /* a second catch-up if nothing arrives until then; 0: none */
    bool conn_verified;    /* this connection's catch-up proved the incarnation */
    int64_t last_wire_seq; /* last sequence number read on this connection; -1: none */
    int64_t *ranks;        /* ranks of the worker's streams, n_ranks of cap_ranks */
    uint32_t n_ranks, cap_ranks;
    struct sub_seen ring[SUB_RING];
};

enum { SUB_CMD_ADD = 1, SUB_CMD_REMOVE, SUB_CMD_SYNC };

struct sub_cmd {
    struct sub_cmd *next;
    int type;
    const kvb_subscriber_worker *w; /* ADD: the caller's, valid while it waits */
    const char *name;               /* REMOVE */
    bool drop;                      /* REMOVE */
    int result;
    bool done;      /* (mu) answered */
    bool abandoned; /* (mu) the caller gave up waiting: the thread frees it */
};

struct kvb_subscriber {
    /* (const) */
    kvb_subscriber_config cfg;
    kvb_index *idx;
    int64_t stale_after_ns, drop_after_ns;
    int efd;
    void *ctx;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;          /* (mu) commands answered */
    struct sub_cmd *cq_head;    /* (mu) command queue */
    struct sub_cmd *cq_tail;    /* (mu) */
    bool stop;                  /* (mu) */
    struct sub_worker *workers; /* (mu) list; the thread is its only writer */

    /* (thread) */
    zmq_pollitem_t *items; /* [eventfd, (sub, mon) per worker] */
    struct sub_worker **item_w;
    uint32_t n_items, cap_items;
    bool items_dirty;
    bool halt; /* destroy interrupted a replay: change nothing more */
    uint32_t mon_counter;
    int64_t next_tick;
};

/* How a batch reached sub_apply. */
enum { SUB_PATH_INORDER, SUB_PATH_TRIGGER, SUB_PATH_REPLAY };

/* Outcomes of one replay request. */
enum {
    SUB_RP_DONE,       /* the end marker arrived */
    SUB_RP_FAIL,       /* no answer (unreachable, timeout) or cut short (cap, time) */
    SUB_RP_RESTART,    /* the probe proved another incarnation */
    SUB_RP_UNVERIFIED, /* the end marker came before anything at or above the probe */
};

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

static uint64_t sub_be64(const void *p)
{
    const unsigned char *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static void sub_put_be64(uint64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

/* ---- callback and published counters (thread) ------------------------------ */

static void sub_note(kvb_subscriber *s, kvb_sub_note note, struct sub_worker *w, int64_t seq,
                     const kvb_index_batch *b, kvb_stream_state state)
{
    if (s->cfg.callback) /* never under s->mu */
        s->cfg.callback(s->cfg.user, note, w->st.name, seq, b, state);
}

/* Publish the thread's counters of w to the readers. */
static void sub_info_sync(kvb_subscriber *s, struct sub_worker *w)
{
    w->st.expected_seq = w->expected;
    w->st.connected = w->up;
    pthread_mutex_lock(&s->mu);
    w->info = w->st;
    pthread_mutex_unlock(&s->mu);
}

/* ---- the worker's streams (thread) ------------------------------------------ */

static bool sub_has_rank(const struct sub_worker *w, int64_t rank)
{
    for (uint32_t i = 0; i < w->n_ranks; i++)
        if (w->ranks[i] == rank)
            return true;
    return false;
}

static int sub_add_rank(struct sub_worker *w, int64_t rank)
{
    if (sub_has_rank(w, rank))
        return 0;
    if (w->n_ranks == SUB_MAX_RANKS)
        return -ENOSPC;
    if (w->n_ranks == w->cap_ranks) {
        uint32_t cap = w->cap_ranks ? w->cap_ranks * 2 : 4;
        int64_t *r = realloc(w->ranks, cap * sizeof *r);
        if (!r)
            return -ENOMEM;
        w->ranks = r;
        w->cap_ranks = cap;
    }
    w->ranks[w->n_ranks++] = rank;
    return 0;
}

/* The stream of (w, rank), created on first sight. */
static int sub_stream(kvb_subscriber *s, struct sub_worker *w, int64_t rank, uint32_t *sid)
{
    int rc = kvb_index_stream_find(s->idx, w->st.name, rank, sid);
    if (rc == 0) {
        (void)sub_add_rank(w, rank); /* on failure still usable: the index knows it */
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    if (!sub_has_rank(w, rank) && w->n_ranks == SUB_MAX_RANKS)
        return -ENOSPC;
    kvb_index_stream_config c = {
        .name = w->st.name,
        .dp_rank = rank,
        .hashes = w->kind == KVB_WIRE_KVBLOCK ? KVB_INDEX_HASHES_ROUTER : KVB_INDEX_HASHES_ENGINE,
        .block_size = w->block_size,
    };
    rc = kvb_index_stream_add(s->idx, &c, sid);
    if (rc == -EEXIST)
        rc = 0; /* added meanwhile by someone else: *sid is it */
    if (rc < 0)
        return rc;
    rc = sub_add_rank(w, rank);
    if (rc < 0)
        return rc; /* -ENOMEM: the stream exists, it will be found next time */
    kvb_index_stream_heard(s->idx, *sid, w->up, kvb_index_now_ns());
    return 0;
}

/* Ids of the existing streams of w; returns their number. */
static uint32_t sub_ids(kvb_subscriber *s, const struct sub_worker *w, uint32_t ids[SUB_MAX_RANKS])
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->n_ranks; i++)
        if (kvb_index_stream_find(s->idx, w->st.name, w->ranks[i], &ids[n]) == 0)
            n++;
    return n;
}

static void sub_count_all(kvb_subscriber *s, struct sub_worker *w, kvb_stream_counter c)
{
    uint32_t ids[SUB_MAX_RANKS], n = sub_ids(s, w, ids);
    for (uint32_t i = 0; i < n; i++)
        kvb_index_stream_count(s->idx, ids[i], c, 1);
}

static void sub_drop_one(kvb_subscriber *s, uint32_t sid, kvb_drop_reason r)
{
    uint32_t d[KVB_DROP_COUNT] = {0};
    d[r] = 1;
    kvb_index_stream_drop(s->idx, sid, d);
}

/* Count a drop on the stream of rank, or on the worker's first stream when the
 * rank is unknown (a payload that did not decode). */
static void sub_drop_rank(kvb_subscriber *s, struct sub_worker *w, int64_t rank, kvb_drop_reason r)
{
    uint32_t sid;
    if (rank != SUB_RANK_NONE && kvb_index_stream_find(s->idx, w->st.name, rank, &sid) == 0) {
        sub_drop_one(s, sid, r);
        return;
    }
    uint32_t ids[SUB_MAX_RANKS];
    if (sub_ids(s, w, ids) > 0)
        sub_drop_one(s, ids[0], r);
}

static void sub_heard_all(kvb_subscriber *s, struct sub_worker *w, bool up, int64_t now)
{
    uint32_t ids[SUB_MAX_RANKS], n = sub_ids(s, w, ids);
    for (uint32_t i = 0; i < n; i++)
        kvb_index_stream_heard(s->idx, ids[i], up, now);
}

static void sub_set_state_all(kvb_subscriber *s, struct sub_worker *w, kvb_stream_state state)
{
    uint32_t ids[SUB_MAX_RANKS], n = sub_ids(s, w, ids);
    for (uint32_t i = 0; i < n; i++)
        kvb_index_stream_set_state(s->idx, ids[i], state);
}

static kvb_stream_state sub_state(const struct sub_worker *w)
{
    return w->resyncing ? KVB_STREAM_RESYNCING : KVB_STREAM_LIVE;
}

/* Clear every stream of w: LIVE for a restart, RESYNCING for a gap or an
 * unknown state. seq: the message that caused it, or -1. */
static void sub_clear(kvb_subscriber *s, struct sub_worker *w, kvb_stream_state state, int64_t seq)
{
    uint32_t ids[SUB_MAX_RANKS], n = sub_ids(s, w, ids);
    for (uint32_t i = 0; i < n; i++)
        kvb_index_stream_clear(s->idx, ids[i], state);
    w->resyncing = state == KVB_STREAM_RESYNCING;
    w->resync_armed = false;
    sub_note(s, KVB_SUB_CLEAR, w, seq, NULL, state);
}

static void sub_ring_reset(struct sub_worker *w)
{
    for (uint32_t i = 0; i < SUB_RING; i++)
        w->ring[i].seq = -1;
}

/* A restart: count it, clear (LIVE), read the new incarnation from 0. */
static void sub_restart(kvb_subscriber *s, struct sub_worker *w, int64_t seq)
{
    w->st.restarts++;
    sub_count_all(s, w, KVB_COUNT_RESTARTS);
    sub_clear(s, w, KVB_STREAM_LIVE, seq);
    sub_ring_reset(w);
    w->expected = 0;
}

/* ---- applying one batch (thread) --------------------------------------------- */

static void sub_apply(kvb_subscriber *s, struct sub_worker *w, int64_t seq, const void *p,
                      size_t len, uint64_t hash, int path)
{
    struct sub_seen *e = &w->ring[(uint64_t)seq & (SUB_RING - 1)];
    e->seq = seq;
    e->hash = hash;
    e->rank = SUB_RANK_NONE;
    w->expected = seq + 1;
    w->st.heard = true;

    kvb_index_batch b;
    memset(&b, 0, sizeof b);
    int rc = kvb_index_decode(p, len, w->kind, &b);
    if (rc == -ENOMEM) {
        /* the batch is lost: the worker's state is unknown from here */
        sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
        return;
    }
    if (rc < 0) { /* consumed, unusable: the sequence still advances */
        w->st.bad_payloads++;
        sub_drop_rank(s, w, SUB_RANK_NONE, KVB_DROP_MALFORMED);
        return;
    }
    e->rank = b.dp_rank;
    uint32_t sid;
    rc = sub_stream(s, w, b.dp_rank, &sid);
    if (rc < 0) {
        /* no stream for this rank (index full, too many ranks): nothing of it
         * is held, so nothing can go stale; counted as a bad payload */
        w->st.bad_payloads++;
        kvb_index_batch_fini(&b);
        return;
    }
    rc = kvb_index_apply(s->idx, sid, b.events, b.n_events, seq);
    if (rc == -ENOMEM) {
        kvb_index_batch_fini(&b);
        sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
        return;
    }
    if (rc < 0) { /* -EINVAL (an event the decoder should not have produced), -ENOENT */
        sub_drop_one(s, sid, KVB_DROP_MALFORMED);
        kvb_index_batch_fini(&b);
        return;
    }
    bool any = false;
    for (int r = 0; r < KVB_DROP_COUNT; r++)
        any |= b.dropped[r] != 0;
    if (any)
        kvb_index_stream_drop(s->idx, sid, b.dropped);
    if (path == SUB_PATH_REPLAY)
        kvb_index_stream_count(s->idx, sid, KVB_COUNT_REPLAYS, 1);
    if (w->resyncing) {
        if (w->resync_armed && path == SUB_PATH_INORDER) {
            /* current again: the second batch in order since the clear */
            w->resyncing = false;
            sub_set_state_all(s, w, KVB_STREAM_LIVE);
        } else {
            w->resync_armed = true;
        }
    }
    sub_note(s, KVB_SUB_BATCH, w, seq, &b, sub_state(w));
    kvb_index_batch_fini(&b);
}

/* Count a duplicate on its rank's stream: the rank the ring remembers for it,
 * or the one its payload names. */
static void sub_count_dup(kvb_subscriber *s, struct sub_worker *w, int64_t seq, uint64_t hash,
                          const void *p, size_t len)
{
    const struct sub_seen *e = &w->ring[(uint64_t)seq & (SUB_RING - 1)];
    int64_t rank = SUB_RANK_NONE;
    if (e->seq == seq && e->hash == hash) {
        rank = e->rank;
    } else {
        kvb_index_batch b;
        memset(&b, 0, sizeof b);
        if (kvb_index_decode(p, len, w->kind, &b) == 0) {
            rank = b.dp_rank;
            kvb_index_batch_fini(&b);
        }
    }
    sub_drop_rank(s, w, rank, KVB_DROP_DUPLICATE);
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

static void sub_close(void **sock)
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
static int sub_dealer_open(kvb_subscriber *s, struct sub_worker *w)
{
    sub_close(&w->dealer);
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
static int sub_recv_parts(void *sock, zmq_msg_t part[3])
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

static void sub_close_parts(zmq_msg_t part[3], int n)
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
static bool sub_wait(kvb_subscriber *s, void *sock, short events, int64_t deadline)
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

/* ---- replay (thread) ---------------------------------------------------------------- */

/*
 * One replay request. verify: start at expected - 1 and prove the incarnation
 * (file comment); otherwise start at expected. Applies in order the replies in
 * [expected, limit); a hole clears the worker (RESYNCING) and the run restarts
 * at the reply.
 */
static int sub_replay_run(kvb_subscriber *s, struct sub_worker *w, int64_t limit, bool verify)
{
    zmq_msg_t part[3];
    int np;
    int64_t start = verify ? w->expected - 1 : w->expected;
    int64_t tmo = (int64_t)s->cfg.replay_timeout_ms * 1000000;
    int64_t t0 = kvb_index_now_ns(), hard = t0 + 10 * tmo, deadline = t0 + tmo;
    w->st.replays++;
    unsigned char sb[8];
    sub_put_be64((uint64_t)start, sb);
    if (!sub_wait(s, w->dealer, ZMQ_POLLOUT, deadline) ||
        zmq_send(w->dealer, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) != 0 ||
        zmq_send(w->dealer, sb, 8, ZMQ_DONTWAIT) != 8)
        return SUB_RP_FAIL;
    bool verified = !verify;
    uint32_t accepted = 0;
    for (;;) {
        if (!sub_wait(s, w->dealer, ZMQ_POLLIN, deadline < hard ? deadline : hard))
            return SUB_RP_FAIL;
        np = sub_recv_parts(w->dealer, part);
        if (np == 0)
            continue;
        deadline = kvb_index_now_ns() + tmo;
        /* ["", seq, payload] (vLLM, kvblock); [seq, payload] tolerated */
        int at = -1;
        if (np == 3 && zmq_msg_size(&part[0]) == 0 && zmq_msg_size(&part[1]) == 8)
            at = 1;
        else if (np == 2 && zmq_msg_size(&part[0]) == 8)
            at = 0;
        if (at < 0) {
            w->st.bad_messages++;
            sub_close_parts(part, np);
            continue;
        }
        uint64_t useq = sub_be64(zmq_msg_data(&part[at]));
        const void *p = zmq_msg_data(&part[at + 1]);
        size_t len = zmq_msg_size(&part[at + 1]);
        if (useq == UINT64_MAX) { /* the end marker */
            sub_close_parts(part, np);
            break;
        }
        if (useq >= (uint64_t)INT64_MAX) {
            w->st.bad_messages++;
            sub_close_parts(part, np);
            continue;
        }
        int64_t seq = (int64_t)useq;
        uint64_t hash = XXH3_64bits(p, len);
        if (!verified) {
            if (seq < start) { /* not asked for */
                sub_count_dup(s, w, seq, hash, p, len);
                sub_close_parts(part, np);
                continue;
            }
            verified = true;
            if (seq == start) {
                const struct sub_seen *e = &w->ring[(uint64_t)seq & (SUB_RING - 1)];
                sub_close_parts(part, np);
                if (e->seq == seq && e->hash != hash)
                    return SUB_RP_RESTART; /* the rest belongs to the new incarnation */
                continue; /* the same batch (or no record of it, after a snapshot load) */
            }
            /* the buffer starts above the probe: nothing proves the incarnation */
            w->st.replay_failures++;
            sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
            w->expected = seq;
        }
        if (seq >= limit) { /* the SUB socket delivers it */
            sub_close_parts(part, np);
            continue;
        }
        if (w->expected >= 0 && seq < w->expected) {
            sub_count_dup(s, w, seq, hash, p, len);
            sub_close_parts(part, np);
            continue;
        }
        if (w->expected >= 0 && seq > w->expected) { /* a hole: trimmed buffer, lost replies */
            w->st.replay_failures++;
            sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
        }
        if (accepted == s->cfg.max_replay_batches) {
            sub_close_parts(part, np);
            return SUB_RP_FAIL;
        }
        accepted++;
        sub_apply(s, w, seq, p, len, hash, SUB_PATH_REPLAY);
        sub_close_parts(part, np);
    }
    return verified ? SUB_RP_DONE : SUB_RP_UNVERIFIED;
}

static int sub_replay(kvb_subscriber *s, struct sub_worker *w, int64_t limit, bool verify)
{
    if (sub_dealer_open(s, w) < 0) {
        w->st.replays++;
        return SUB_RP_FAIL;
    }
    int rc = sub_replay_run(s, w, limit, verify);
    sub_close(&w->dealer);
    return rc;
}

/* Whether the index holds streams of w (state that a reconnect makes unknown). */
static bool sub_has_streams(kvb_subscriber *s, struct sub_worker *w)
{
    uint32_t ids[SUB_MAX_RANKS];
    return sub_ids(s, w, ids) > 0;
}

/* The transport came up: resume by replay, or clear. */
static void sub_catch_up(kvb_subscriber *s, struct sub_worker *w, bool reconnect)
{
    bool known = reconnect || w->expected > 0; /* state that may be stale */
    if (!w->replay_endpoint) {
        if (reconnect && w->expected >= 0 && sub_has_streams(s, w)) {
            sub_clear(s, w, KVB_STREAM_RESYNCING, -1);
            w->expected = -1;
        }
        return;
    }
    bool any = w->expected < 0;
    if (any)
        w->expected = 0; /* cleared, nothing to prove: take all the buffer holds */
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = sub_replay(s, w, INT64_MAX, w->expected > 0);
        if (s->halt)
            return;
        if (rc == SUB_RP_RESTART || rc == SUB_RP_UNVERIFIED) {
            sub_restart(s, w, -1);
            continue; /* read the new incarnation from 0 */
        }
        if (rc == SUB_RP_DONE) {
            w->st.heard = true;
            w->conn_verified = true;
        } else {
            w->st.replay_failures++;
            if (known && sub_has_streams(s, w)) {
                sub_clear(s, w, KVB_STREAM_RESYNCING, -1);
                w->expected = -1;
            } else if (any && w->expected == 0) {
                w->expected = -1; /* nothing came: still any */
            }
        }
        return;
    }
}

/* The second catch-up of a connection that has been silent since it came up
 * (SUB_FOLLOWUP_NS). The connection was proven at the first one: a failure
 * now changes nothing. */
static void sub_followup(kvb_subscriber *s, struct sub_worker *w)
{
    bool any = w->expected < 0;
    if (any)
        w->expected = 0; /* cleared after a failed catch-up: take what the buffer holds */
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = sub_replay(s, w, INT64_MAX, w->expected > 0);
        if (s->halt)
            return;
        if (rc == SUB_RP_RESTART || rc == SUB_RP_UNVERIFIED) {
            sub_restart(s, w, -1);
            continue;
        }
        if (rc == SUB_RP_DONE)
            w->conn_verified = true;
        if (rc == SUB_RP_FAIL) {
            w->st.replay_failures++;
            if (any && w->expected == 0)
                w->expected = -1; /* nothing came: still any */
        }
        return;
    }
}

/* ---- one message from the SUB socket (thread) --------------------------------------- */

static void sub_gap(kvb_subscriber *s, struct sub_worker *w, int64_t seq, const void *p, size_t len,
                    uint64_t hash)
{
    w->st.gaps++;
    uint64_t failures = w->st.replay_failures;
    if (w->replay_endpoint) {
        sub_replay(s, w, seq, false);
        if (s->halt)
            return; /* shutting down: the index keeps what it had */
        if (w->expected != seq && w->st.replay_failures == failures)
            w->st.replay_failures++; /* counted once per gap */
    }
    if (w->expected != seq) { /* the replay did not reach the trigger */
        sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
        w->expected = seq;
    }
    sub_apply(s, w, seq, p, len, hash, SUB_PATH_TRIGGER);
    sub_count_all(s, w, KVB_COUNT_GAPS);
}

/* A PUB message below expected. The ring decides when it remembers the
 * number. Otherwise, on a connection whose catch-up proved the incarnation, a
 * message that moves forward on that connection is one the replay got ahead
 * of (a busy publisher during a long catch-up): a duplicate. A sequence that
 * goes backwards on one connection, or one the ring knows with another
 * payload, is a restart. */
static bool sub_wire_duplicate(kvb_subscriber *s, struct sub_worker *w, int64_t seq, uint64_t hash,
                               const void *p, size_t len)
{
    const struct sub_seen *e = &w->ring[(uint64_t)seq & (SUB_RING - 1)];
    if (e->seq == seq ? e->hash != hash : !w->conn_verified || seq <= w->last_wire_seq)
        return false;
    sub_count_dup(s, w, seq, hash, p, len);
    return true;
}

static void sub_on_message(kvb_subscriber *s, struct sub_worker *w, int64_t seq, const void *p,
                           size_t len)
{
    if (s->halt)
        return;
    uint64_t hash = XXH3_64bits(p, len);
    if (w->expected < 0)
        w->expected = seq; /* any: this batch starts the run */
    if (seq == w->expected) {
        sub_apply(s, w, seq, p, len, hash, SUB_PATH_INORDER);
    } else if (seq > w->expected) {
        sub_gap(s, w, seq, p, len, hash);
    } else if (!sub_wire_duplicate(s, w, seq, hash, p, len)) {
        sub_restart(s, w, seq);
        if (!w->replay_endpoint)
            w->expected = seq; /* nothing to read the start from */
        if (seq == w->expected)
            sub_apply(s, w, seq, p, len, hash, SUB_PATH_TRIGGER);
        else
            sub_gap(s, w, seq, p, len, hash);
    }
}

/* ---- connections (thread) ------------------------------------------------------------- */

static void sub_up(kvb_subscriber *s, struct sub_worker *w)
{
    if (w->up || s->halt)
        return;
    w->up = true;
    w->conn_verified = false;
    w->last_wire_seq = -1;
    sub_heard_all(s, w, true, kvb_index_now_ns());
    if (w->resyncing) /* the index made them LIVE; keep saying what we know */
        sub_set_state_all(s, w, KVB_STREAM_RESYNCING);
    if (w->stale_noted) {
        w->stale_noted = false;
        sub_note(s, KVB_SUB_LIVE, w, -1, NULL, sub_state(w));
    }
    bool reconnect = w->was_up;
    w->was_up = true;
    sub_catch_up(s, w, reconnect);
    w->followup_at = w->replay_endpoint ? kvb_index_now_ns() + SUB_FOLLOWUP_NS : 0;
}

static void sub_read(kvb_subscriber *s, struct sub_worker *w);

static void sub_down(kvb_subscriber *s, struct sub_worker *w)
{
    if (!w->up || s->halt)
        return;
    /* what the old connection delivered first, then dial again: libzmq ends a
     * session for good after a protocol error (a message over ZMQ_MAXMSGSIZE,
     * a bad frame), and the worker would never come back */
    for (int k = 0; k < SUB_RCVHWM / SUB_BURST + 1; k++) {
        uint64_t before = w->st.messages;
        sub_read(s, w);
        if (w->st.messages - before < SUB_BURST)
            break;
    }
    if (zmq_disconnect(w->sub, w->endpoint) == 0)
        zmq_connect(w->sub, w->endpoint);
    w->up = false;
    w->followup_at = 0;
    w->down_since = kvb_index_now_ns();
    w->drop_noted = false;
    sub_heard_all(s, w, false, w->down_since);
}

static void sub_drain_monitor(kvb_subscriber *s, struct sub_worker *w)
{
    zmq_msg_t part[3];
    int np;
    while ((np = sub_recv_parts(w->mon, part)) > 0) {
        uint16_t ev = 0;
        if (zmq_msg_size(&part[0]) >= 2)
            memcpy(&ev, zmq_msg_data(&part[0]), 2); /* native byte order */
        sub_close_parts(part, np);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            sub_up(s, w);
        else if (ev == ZMQ_EVENT_DISCONNECTED)
            sub_down(s, w);
    }
}

/* Read up to SUB_BURST messages of w's SUB socket. */
static void sub_read(kvb_subscriber *s, struct sub_worker *w)
{
    for (int k = 0; k < SUB_BURST; k++) {
        zmq_msg_t part[3];
        int np = sub_recv_parts(w->sub, part);
        if (np == 0)
            return;
        w->st.messages++;
        w->followup_at = 0; /* the subscription is in place: a gap would show */
        uint64_t useq =
            np == 3 && zmq_msg_size(&part[1]) == 8 ? sub_be64(zmq_msg_data(&part[1])) : UINT64_MAX;
        if (useq >= (uint64_t)INT64_MAX) { /* not [topic, 8-byte seq, payload] */
            w->st.bad_messages++;
        } else {
            sub_on_message(s, w, (int64_t)useq, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
            w->last_wire_seq = (int64_t)useq;
        }
        sub_close_parts(part, np);
    }
}

/* ---- workers (thread) ------------------------------------------------------------------- */

static void sub_worker_free(struct sub_worker *w)
{
    if (w->sub && w->mon)
        zmq_socket_monitor(w->sub, NULL, 0);
    sub_close(&w->mon);
    sub_close(&w->sub);
    sub_close(&w->dealer);
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
        rc = sub_add_rank(w, in.dp_rank);
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
    sub_ring_reset(w);
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
    if (w->replay_endpoint && (rc = sub_dealer_open(s, w)) < 0)
        goto fail; /* a bad replay endpoint is refused now, not at the first replay */
    sub_close(&w->dealer);
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
        sub_heard_all(s, w, false, kvb_index_now_ns());
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
        sub_drain_monitor(s, w);
        if (data)
            sub_read(s, w);
        sub_info_sync(s, w);
    }
}

static void sub_tick(kvb_subscriber *s, int64_t now)
{
    kvb_index_tick(s->idx, now);
    for (struct sub_worker *w = s->workers; w; w = w->next) {
        if (w->up && w->followup_at && now >= w->followup_at) {
            sub_drain_monitor(s, w);
            sub_read(s, w); /* what already arrived cancels it */
            if (w->up && w->followup_at) {
                w->followup_at = 0;
                sub_followup(s, w);
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
