/*
 * test_subscriber.c - the ZeroMQ subscriber (include/kvblock/subscriber.h)
 * against a scripted publisher written here with raw libzmq and msgpack-c:
 * an XPUB socket (a PUB on the wire that also tells the test when the
 * subscription arrived) and a ROUTER replay socket that serves vLLM's replay
 * protocol (["", start] -> ["", seq, payload]..., ["", -1, ""]) from a buffer
 * the test controls (trimmed, silent, duplicated). Payloads are built with
 * msgpack-c in vLLM's current map layout, the legacy array layout and the
 * map batch, in turn. And against kvblock's own publisher end to end.
 *
 * The scripted publisher keeps the truth: which router hashes each rank holds.
 * Every scenario ends by comparing the index with it: nothing the worker no
 * longer holds may be matched (zero stale entries), and where the scenario
 * lets the subscriber know everything, the index holds exactly the truth.
 *
 * Waits: kvb_subscriber_sync() then a check, repeated until a deadline (10 s);
 * nothing is asserted after a fixed sleep. A test that hangs anyway is killed
 * by alarm() (SAFETY_S), which Criterion reports as a crash; Criterion's own
 * .timeout is not used: with --jobs 2 its runner leaks a 48-byte record per
 * suite under LeakSanitizer, which fails make asan. Time is the subject only in the
 * liveness tests (stale_after 0.3 s, drop_after 0.6 s), where the assertions
 * are again polled with a deadline.
 */
#include "testutil.h"
#include "kvblock/index.h"
#include "kvblock/subscriber.h"

#ifndef KVB_HAVE_ZMQ

Test(subscriber, unavailable_without_zmq)
{
    kvb_subscriber_config cfg;
    kvb_subscriber_config_init(&cfg);
    kvb_subscriber *s = NULL;
    cr_expect_not(kvb_subscriber_available());
    cr_expect_eq(kvb_subscriber_create(&cfg, &s), -ENOTSUP);
    cr_expect_null(s);
}

#else

#include "kvblock/publisher.h"
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "support/msgpack_build.h"

#define DEADLINE_MS 10000
#define SAFETY_S    60 /* alarm() per test */
#define H(i)        (0x9E3779B97F4A7C15ull * ((uint64_t)(i) + 1))

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_be64(uint64_t v, unsigned char *p)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- the scripted publisher ------------------------------------------------------ */

#define TP_BUF    1024
#define TRUTH_MAX 1024
#define TP_WIRE   1u /* send on the PUB socket */
#define TP_KEEP   2u /* keep in the replay buffer */
#define TP_BOTH   3u

typedef struct tp_ent {
    uint64_t seq;
    unsigned char *p;
    size_t n;
} tp_ent;

typedef struct tev {
    int type; /* KVB_INDEX_EV_* */
    uint64_t h[16];
    uint32_t n;
    bool has_parent;
    uint64_t parent;
    uint32_t tok[16 * 16];
    uint32_t ntok;
} tev;

typedef struct tp {
    char pub_ep[256], rep_ep[256]; /* bound endpoints (tcp: the real port) */
    bool replay;
    void *ctx, *pub, *router;
    pthread_t thr;
    atomic_bool stop;
    pthread_mutex_t mu;
    tp_ent buf[TP_BUF]; /* (mu) ascending seq */
    uint32_t nbuf;      /* (mu) */
    bool mute;          /* (mu) requests get no answer */
    bool dup;           /* (mu) every reply is sent twice */
    bool old;           /* (mu) the whole buffer is sent, whatever the start */
    uint32_t requests;  /* (mu) replay requests seen */
    bool hold;          /* (mu) a request waits until this is false again */
    uint64_t next_seq;
    uint32_t sends; /* batches built: rotates the three layouts */
    /* truth: copies held per (rank, hash); entries stay at 0 once removed */
    int64_t t_rank[TRUTH_MAX];
    uint64_t t_h[TRUTH_MAX];
    int t_cnt[TRUTH_MAX];
    uint32_t nt;
} tp;

static void *tp_replay_main(void *arg)
{
    tp *t = arg;
    while (!atomic_load(&t->stop)) {
        zmq_pollitem_t it = {t->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        zmq_msg_t part[4];
        int n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, t->router, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 4)
                part[n++] = m;
            else
                zmq_msg_close(&m);
        }
        /* vLLM's ROUTER: exactly [identity, "", start] */
        bool ok = n == 3 && zmq_msg_size(&part[1]) == 0 && zmq_msg_size(&part[2]) == 8;
        uint64_t start = ok ? be64(zmq_msg_data(&part[2])) : 0;
        tp_ent out[2 * TP_BUF];
        uint32_t no = 0;
        pthread_mutex_lock(&t->mu);
        while (t->hold && !atomic_load(&t->stop)) { /* the buffer is read after the wait */
            pthread_mutex_unlock(&t->mu);
            msleep(2);
            pthread_mutex_lock(&t->mu);
        }
        bool answer = ok && !t->mute;
        if (ok)
            t->requests++;
        for (uint32_t i = 0; answer && i < t->nbuf; i++) {
            if (t->buf[i].seq < start && !t->old)
                continue;
            for (int k = 0; k < (t->dup ? 2 : 1); k++) {
                out[no] = t->buf[i];
                out[no].p = malloc(t->buf[i].n ? t->buf[i].n : 1);
                memcpy(out[no].p, t->buf[i].p, t->buf[i].n);
                no++;
            }
        }
        pthread_mutex_unlock(&t->mu);
        if (answer) {
            const void *id = zmq_msg_data(&part[0]);
            size_t idn = zmq_msg_size(&part[0]);
            for (uint32_t i = 0; i < no; i++) {
                unsigned char sb[8];
                put_be64(out[i].seq, sb);
                zmq_send(t->router, id, idn, ZMQ_SNDMORE);
                zmq_send(t->router, "", 0, ZMQ_SNDMORE);
                zmq_send(t->router, sb, 8, ZMQ_SNDMORE);
                zmq_send(t->router, out[i].p, out[i].n, 0);
            }
            unsigned char end[8];
            memset(end, 0xff, 8);
            zmq_send(t->router, id, idn, ZMQ_SNDMORE);
            zmq_send(t->router, "", 0, ZMQ_SNDMORE);
            zmq_send(t->router, end, 8, ZMQ_SNDMORE);
            zmq_send(t->router, "", 0, 0);
        }
        for (uint32_t i = 0; i < no; i++)
            free(out[i].p);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&part[i]);
    }
    return NULL;
}

static void tp_bind(void *s, char *ep, size_t cap)
{
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) { /* a re-bound tcp port may need a moment */
        rc = zmq_bind(s, ep);
        if (rc != 0)
            msleep(10);
    }
    cr_assert_eq(rc, 0, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
    size_t n = cap;
    cr_assert_eq(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n), 0);
}

/* Bind the sockets on the endpoints already in t (set by tp_init or kept from a
 * previous run). */
static void tp_open(tp *t)
{
    t->ctx = zmq_ctx_new();
    t->pub = zmq_socket(t->ctx, ZMQ_XPUB);
    int one = 1, zero = 0;
    zmq_setsockopt(t->pub, ZMQ_XPUB_VERBOSE, &one, sizeof one);
    zmq_setsockopt(t->pub, ZMQ_LINGER, &zero, sizeof zero);
    tp_bind(t->pub, t->pub_ep, sizeof t->pub_ep);
    if (t->replay) {
        t->router = zmq_socket(t->ctx, ZMQ_ROUTER);
        zmq_setsockopt(t->router, ZMQ_LINGER, &zero, sizeof zero);
        tp_bind(t->router, t->rep_ep, sizeof t->rep_ep);
        atomic_store(&t->stop, false);
        cr_assert_eq(pthread_create(&t->thr, NULL, tp_replay_main, t), 0);
    }
}

/* transport "ipc" (under dir) or "tcp" (127.0.0.1, ephemeral ports). */
static void tp_init(tp *t, const char *transport, const char *dir, const char *tag, bool replay)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    t->replay = replay;
    if (!strcmp(transport, "ipc")) {
        snprintf(t->pub_ep, sizeof t->pub_ep, "ipc://%s/%s-pub", dir, tag);
        snprintf(t->rep_ep, sizeof t->rep_ep, "ipc://%s/%s-replay", dir, tag);
    } else {
        snprintf(t->pub_ep, sizeof t->pub_ep, "tcp://127.0.0.1:*");
        snprintf(t->rep_ep, sizeof t->rep_ep, "tcp://127.0.0.1:*");
    }
    tp_open(t);
}

/* Close both sockets: the process died (or the network went away). */
static void tp_close(tp *t)
{
    if (t->router) {
        atomic_store(&t->stop, true);
        pthread_join(t->thr, NULL);
        zmq_close(t->router);
        t->router = NULL;
    }
    zmq_close(t->pub);
    t->pub = NULL;
    zmq_ctx_term(t->ctx);
    t->ctx = NULL;
}

static void tp_buf_clear(tp *t)
{
    pthread_mutex_lock(&t->mu);
    for (uint32_t i = 0; i < t->nbuf; i++)
        free(t->buf[i].p);
    t->nbuf = 0;
    pthread_mutex_unlock(&t->mu);
}

static void tp_fini(tp *t)
{
    if (t->ctx)
        tp_close(t);
    tp_buf_clear(t);
    pthread_mutex_destroy(&t->mu);
}

/* A new incarnation on the same endpoints: empty cache, empty buffer, seq 0. */
static void tp_reincarnate(tp *t)
{
    tp_buf_clear(t);
    t->next_seq = 0;
    for (uint32_t i = 0; i < t->nt; i++)
        t->t_cnt[i] = 0;
    tp_open(t);
}

/* Drop buffered batches below seq (the ring moved on). */
static void tp_trim(tp *t, uint64_t seq)
{
    pthread_mutex_lock(&t->mu);
    uint32_t k = 0;
    for (uint32_t i = 0; i < t->nbuf; i++) {
        if (t->buf[i].seq < seq)
            free(t->buf[i].p);
        else
            t->buf[k++] = t->buf[i];
    }
    t->nbuf = k;
    pthread_mutex_unlock(&t->mu);
}

static uint32_t tp_requests(tp *t)
{
    pthread_mutex_lock(&t->mu);
    uint32_t n = t->requests;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* Wait until a subscription reaches the XPUB socket (the PUB side then
 * forwards what it sends). */
static void tp_wait_sub(tp *t)
{
    int64_t end = now_ms() + DEADLINE_MS;
    while (now_ms() < end) {
        zmq_pollitem_t it = {t->pub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        unsigned char m[256];
        int n = zmq_recv(t->pub, m, sizeof m, ZMQ_DONTWAIT);
        if (n >= 1 && m[0] == 1)
            return;
    }
    cr_assert_fail("no subscription reached the publisher");
}

static int truth_find(tp *t, int64_t rank, uint64_t h, bool add)
{
    for (uint32_t i = 0; i < t->nt; i++)
        if (t->t_rank[i] == rank && t->t_h[i] == h)
            return (int)i;
    if (!add)
        return -1;
    cr_assert_lt(t->nt, TRUTH_MAX);
    t->t_rank[t->nt] = rank;
    t->t_h[t->nt] = h;
    t->t_cnt[t->nt] = 0;
    return (int)t->nt++;
}

static void truth_apply(tp *t, int64_t rank, const tev *e)
{
    for (uint32_t j = 0; j < e->n; j++) {
        int i = truth_find(t, rank, e->h[j], true);
        if (e->type == KVB_INDEX_EV_STORED)
            t->t_cnt[i]++;
        else if (t->t_cnt[i] > 0)
            t->t_cnt[i]--;
    }
    if (e->type == KVB_INDEX_EV_CLEARED)
        for (uint32_t i = 0; i < t->nt; i++)
            if (t->t_rank[i] == rank)
                t->t_cnt[i] = 0;
}

/* One event: map (current vLLM) or tagged array (legacy). */
static void pk_event(pk *k, const tev *e, bool map)
{
    if (e->type == KVB_INDEX_EV_STORED)
        pk_stored(k, map, e->h, e->n, e->has_parent, e->parent, e->tok, 0, e->ntok, 16, "GPU", 0);
    else if (e->type == KVB_INDEX_EV_REMOVED)
        pk_removed(k, map, e->h, e->n, "GPU");
    else
        pk_cleared(k, map);
}

/* A batch: [ts, events, rank] with map events, with array events, or a map batch. */
static void tp_encode(tp *t, pk *k, int64_t rank, const tev *ev, uint32_t nev)
{
    int layout = (int)(t->sends++ % 3);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double ts = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 + 1e-6 * t->sends;
    pk_batch_begin(k, layout == 2, ts, nev);
    for (uint32_t i = 0; i < nev; i++)
        pk_event(k, &ev[i], layout != 1);
    pk_batch_end(k, layout == 2, rank);
}

static void tp_send_raw(tp *t, const void *const *part, const size_t *len, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(zmq_send(t->pub, part[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0), (int)len[i]);
}

/* Publish one batch under the next sequence number: on the wire, in the replay
 * buffer, or both (how). The truth follows every batch the engine produced. */
static uint64_t tp_batch(tp *t, int64_t rank, const tev *ev, uint32_t nev, unsigned how)
{
    pk k;
    pk_init(&k);
    tp_encode(t, &k, rank, ev, nev);
    uint64_t seq = t->next_seq++;
    for (uint32_t i = 0; i < nev; i++)
        truth_apply(t, rank, &ev[i]);
    if (how & TP_WIRE) {
        unsigned char sq[8];
        put_be64(seq, sq);
        const void *part[3] = {"kv", sq, k.sb.data};
        size_t len[3] = {2, 8, k.sb.size};
        tp_send_raw(t, part, len, 3);
    }
    if (how & TP_KEEP) {
        pthread_mutex_lock(&t->mu);
        cr_assert_lt(t->nbuf, TP_BUF);
        t->buf[t->nbuf].seq = seq;
        t->buf[t->nbuf].n = k.sb.size;
        t->buf[t->nbuf].p = (unsigned char *)msgpack_sbuffer_release(&k.sb);
        t->nbuf++;
        pthread_mutex_unlock(&t->mu);
    }
    pk_fini(&k);
    return seq;
}

static tev ev_stored(uint32_t first, uint32_t n)
{
    tev e;
    memset(&e, 0, sizeof e);
    e.type = KVB_INDEX_EV_STORED;
    e.n = n;
    for (uint32_t j = 0; j < n; j++)
        e.h[j] = H(first + j);
    e.has_parent = first > 0;
    e.parent = H(first - 1);
    return e;
}

static tev ev_removed(uint32_t first, uint32_t n)
{
    tev e;
    memset(&e, 0, sizeof e);
    e.type = KVB_INDEX_EV_REMOVED;
    e.n = n;
    for (uint32_t j = 0; j < n; j++)
        e.h[j] = H(first + j);
    return e;
}

static tev ev_cleared(void)
{
    tev e;
    memset(&e, 0, sizeof e);
    e.type = KVB_INDEX_EV_CLEARED;
    return e;
}

static uint64_t tp_store(tp *t, int64_t rank, uint32_t first, uint32_t n, unsigned how)
{
    tev e = ev_stored(first, n);
    return tp_batch(t, rank, &e, 1, how);
}

static uint64_t tp_remove(tp *t, int64_t rank, uint32_t first, uint32_t n, unsigned how)
{
    tev e = ev_removed(first, n);
    return tp_batch(t, rank, &e, 1, how);
}

/* ---- the subscriber side ------------------------------------------------------------- */

typedef struct notes {
    pthread_mutex_t mu;
    uint32_t n[4];           /* per kvb_sub_note */
    uint32_t clear_state[4]; /* CLEAR notes per state */
    int64_t last_seq;        /* last BATCH seq since the last CLEAR */
    bool order_broken;       /* a BATCH seq not above the previous one, no CLEAR between */
} notes;

typedef struct fx {
    char dir[64];
    kvb_index *idx;
    kvb_subscriber *sub;
    notes nt;
} fx;

static void on_note(void *user, kvb_sub_note note, const char *worker, int64_t seq,
                    const kvb_index_batch *batch, kvb_stream_state state)
{
    notes *n = user;
    (void)worker;
    pthread_mutex_lock(&n->mu);
    n->n[note]++;
    if (note == KVB_SUB_CLEAR) {
        n->clear_state[state]++;
        n->last_seq = -1;
    } else if (note == KVB_SUB_BATCH) {
        if (!batch || seq <= n->last_seq)
            n->order_broken = true;
        n->last_seq = seq;
    }
    pthread_mutex_unlock(&n->mu);
}

static notes notes_get(fx *f)
{
    pthread_mutex_lock(&f->nt.mu);
    notes n = f->nt;
    pthread_mutex_unlock(&f->nt.mu);
    return n;
}

typedef struct fx_opts {
    double stale_s, drop_s;
    uint32_t replay_timeout_ms;
    int64_t max_message_bytes;
    uint32_t heartbeat_ivl_ms;
} fx_opts;

static void fx_init(fx *f, const fx_opts *o)
{
    alarm(SAFETY_S);
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->nt.mu, NULL);
    f->nt.last_seq = -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/kvb-sub-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    kvb_index_config ic;
    kvb_index_config_init(&ic);
    ic.block_size = 16;
    if (o && o->stale_s > 0) {
        ic.stale_after_s = o->stale_s;
        ic.drop_after_s = o->drop_s;
    }
    cr_assert_eq(kvb_index_create(&ic, &f->idx), 0);
    kvb_subscriber_config sc;
    kvb_subscriber_config_init(&sc);
    sc.index = f->idx;
    sc.tick_ms = 20;
    sc.reconnect_ivl_ms = 20;
    sc.reconnect_ivl_max_ms = 100;
    sc.heartbeat_ivl_ms = o && o->heartbeat_ivl_ms ? o->heartbeat_ivl_ms : 1000;
    sc.replay_timeout_ms = o && o->replay_timeout_ms ? o->replay_timeout_ms : 3000;
    if (o && o->max_message_bytes)
        sc.max_message_bytes = o->max_message_bytes;
    sc.callback = on_note;
    sc.user = &f->nt;
    int rc = kvb_subscriber_create(&sc, &f->sub);
    cr_assert_eq(rc, 0, "kvb_subscriber_create: %s", kvb_strerror(rc));
}

static void fx_fini(fx *f)
{
    if (f->sub)
        cr_assert_eq(kvb_subscriber_destroy(f->sub), 0);
    notes n = notes_get(f);
    cr_expect_not(n.order_broken, "BATCH notes in ascending sequence between clears");
    cr_assert_eq(kvb_index_destroy(f->idx), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    cr_expect_eq(system(cmd), 0);
    pthread_mutex_destroy(&f->nt.mu);
}

static void fx_add(fx *f, const char *name, const tp *t, kvb_wire_kind kind)
{
    kvb_subscriber_worker w = {.name = name,
                               .endpoint = t->pub_ep,
                               .replay_endpoint = t->replay ? t->rep_ep : NULL,
                               .kind = kind,
                               .topic = "kv"};
    int rc = kvb_subscriber_add_worker(f->sub, &w);
    cr_assert_eq(rc, 0, "add_worker: %s", kvb_strerror(rc));
}

static kvb_subscriber_worker_info winfo(fx *f, const char *name)
{
    kvb_subscriber_worker_info in;
    cr_assert_eq(kvb_subscriber_worker_info_get(f->sub, name, &in), 0);
    return in;
}

static int sinfo(fx *f, const char *name, int64_t rank, kvb_index_stream_info *out)
{
    uint32_t sid;
    int rc = kvb_index_stream_find(f->idx, name, rank, &sid);
    if (rc == 0)
        rc = kvb_index_stream_info_get(f->idx, sid, out);
    return rc;
}

typedef bool (*pred_fn)(fx *f, const void *arg);

/* sync, check, repeat until DEADLINE_MS */
static bool wait_for(fx *f, pred_fn p, const void *arg)
{
    int64_t end = now_ms() + DEADLINE_MS;
    for (;;) {
        kvb_subscriber_sync(f->sub, 2000);
        if (p(f, arg))
            return true;
        if (now_ms() > end)
            return false;
        msleep(2);
    }
}

typedef struct seq_arg {
    const char *name;
    int64_t seq;
} seq_arg;

static bool p_expected(fx *f, const void *arg)
{
    const seq_arg *a = arg;
    return winfo(f, a->name).expected_seq == a->seq;
}

static bool p_ready_connected(fx *f, const void *arg)
{
    kvb_subscriber_worker_info in = winfo(f, arg);
    return in.connected && in.heard;
}

static bool p_connected(fx *f, const void *arg)
{
    return winfo(f, arg).connected;
}

static bool p_disconnected(fx *f, const void *arg)
{
    return !winfo(f, arg).connected;
}

static void wait_seq(fx *f, const char *name, int64_t seq)
{
    seq_arg a = {name, seq};
    cr_assert(wait_for(f, p_expected, &a), "expected_seq of %s never reached %lld (at %lld)", name,
              (long long)seq, (long long)winfo(f, name).expected_seq);
}

/* Subscriber connected and caught up; the publisher sees the subscription. */
static void wait_joined(fx *f, const char *name, tp *t)
{
    cr_assert(wait_for(f, t->replay ? p_ready_connected : p_connected, name), "%s never connected",
              name);
    tp_wait_sub(t);
}

/* Whether the index matches hash h for (name, rank). */
static bool holds(fx *f, const char *name, int64_t rank, uint64_t h)
{
    kvb_index_result r[64];
    int n = kvb_index_match(f->idx, &h, 1, r, 64);
    cr_assert_geq(n, 0);
    for (int i = 0; i < n && i < 64; i++)
        if (!strcmp(r[i].worker, name) && r[i].dp_rank == rank)
            return r[i].device + r[i].host + r[i].disk > 0;
    return false;
}

/* Zero stale entries: nothing the worker no longer holds is matched. With
 * exact, also nothing it holds is missing, and the streams' entry counts are
 * the truth's. */
static void check_truth(fx *f, const char *name, tp *t, bool exact)
{
    for (uint32_t i = 0; i < t->nt; i++) {
        bool in = holds(f, name, t->t_rank[i], t->t_h[i]);
        if (t->t_cnt[i] == 0)
            cr_assert_not(in, "stale entry: rank %lld hash #%u matched, the worker dropped it",
                          (long long)t->t_rank[i], i);
        else if (exact)
            cr_assert(in, "missing entry: rank %lld hash #%u", (long long)t->t_rank[i], i);
    }
    if (!exact)
        return;
    for (int64_t rank = -1; rank < 4; rank++) {
        uint64_t held = 0;
        bool any = false;
        for (uint32_t i = 0; i < t->nt; i++) {
            if (t->t_rank[i] != rank)
                continue;
            any = true;
            held += t->t_cnt[i] > 0;
        }
        kvb_index_stream_info si;
        if (sinfo(f, name, rank, &si) == 0)
            cr_assert_eq(si.entries, held, "rank %lld: %llu entries, the worker holds %llu",
                         (long long)rank, (unsigned long long)si.entries, (unsigned long long)held);
        else
            cr_assert(!any || held == 0, "rank %lld has no stream", (long long)rank);
    }
}

static kvb_stream_state sstate(fx *f, const char *name, int64_t rank)
{
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(f, name, rank, &si), 0);
    return si.state;
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static void in_order(const char *transport)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, transport, f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 4, TP_BOTH);  /* 0: blocks 0..3 */
    tp_store(&t, 0, 4, 2, TP_BOTH);  /* 1: blocks 4..5 */
    tp_remove(&t, 0, 1, 2, TP_BOTH); /* 2: blocks 1, 2 gone */
    tp_store(&t, 0, 1, 1, TP_BOTH);  /* 3: block 1 again */
    wait_seq(&f, "w1", 4);
    check_truth(&f, "w1", &t, true);
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.gaps, 0);
    cr_expect_eq(in.restarts, 0);
    cr_expect_eq(in.bad_messages, 0);
    cr_expect(in.connected);
    cr_expect(kvb_subscriber_ready(f.sub));
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_eq(si.last_seq, 3);
    cr_expect_eq(si.batches, 4);
    cr_expect_eq(si.hashes, KVB_INDEX_HASHES_ROUTER, "kvblock kind: router hashes");
    notes n = notes_get(&f);
    cr_expect_eq(n.n[KVB_SUB_BATCH], 4);
    cr_expect_eq(n.n[KVB_SUB_CLEAR], 0);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, in_order_ipc)
{
    in_order("ipc");
}

Test(subscriber, in_order_tcp)
{
    in_order("tcp");
}

/* vLLM worker: engine hashes plus token ids; the index recomputes router hashes. */
Test(subscriber, in_order_vllm_engine_hashes)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "v", true);
    fx_add(&f, "vllm", &t, KVB_WIRE_VLLM);
    wait_joined(&f, "vllm", &t);
    uint32_t tokens[4 * 16];
    for (uint32_t i = 0; i < 64; i++)
        tokens[i] = 1000 + i * 7;
    tev e;
    memset(&e, 0, sizeof e);
    e.type = KVB_INDEX_EV_STORED;
    e.n = 3;
    for (uint32_t j = 0; j < 3; j++)
        e.h[j] = 0x5000 + j; /* the engine's own hashes */
    e.ntok = 48;
    memcpy(e.tok, tokens, 48 * sizeof *tokens);
    tp_batch(&t, 0, &e, 1, TP_BOTH);
    tev e2;
    memset(&e2, 0, sizeof e2);
    e2.type = KVB_INDEX_EV_STORED;
    e2.n = 1;
    e2.h[0] = 0x5003;
    e2.has_parent = true;
    e2.parent = 0x5002;
    e2.ntok = 16;
    memcpy(e2.tok, tokens + 48, 16 * sizeof *tokens);
    tp_batch(&t, 0, &e2, 1, TP_BOTH);
    wait_seq(&f, "vllm", 2);
    uint64_t rh[4];
    cr_assert_eq(kvb_index_hashes(f.idx, tokens, 64, NULL, NULL, rh, 4), 4);
    kvb_index_result r[4];
    cr_assert_eq(kvb_index_match(f.idx, rh, 4, r, 4), 1);
    cr_expect_str_eq(r[0].worker, "vllm");
    cr_expect_eq(r[0].device, 4, "the whole 4-block prefix, chained through the parent");
    /* BlockRemoved carries engine hashes only */
    tev rm;
    memset(&rm, 0, sizeof rm);
    rm.type = KVB_INDEX_EV_REMOVED;
    rm.n = 1;
    rm.h[0] = 0x5002;
    tp_batch(&t, 0, &rm, 1, TP_BOTH);
    wait_seq(&f, "vllm", 3);
    cr_assert_eq(kvb_index_match(f.idx, rh, 4, r, 4), 1);
    cr_expect_eq(r[0].device, 2, "block 2 removed: the prefix stops before it");
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "vllm", 0, &si), 0);
    cr_expect_eq(si.hashes, KVB_INDEX_HASHES_ENGINE);
    fx_fini(&f);
    tp_fini(&t);
}

/* Batches published before the subscriber connected come back by replay at once. */
Test(subscriber, slow_joiner_replayed)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    tp_store(&t, 0, 0, 3, TP_BOTH); /* nobody listens yet: lost on the wire */
    tp_store(&t, 0, 3, 3, TP_BOTH);
    tp_remove(&t, 0, 0, 1, TP_BOTH);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_seq(&f, "w1", 3); /* no further batch needed: the catch-up replay */
    check_truth(&f, "w1", &t, true);
    cr_expect(kvb_subscriber_ready(f.sub));
    tp_wait_sub(&t);
    tp_store(&t, 0, 6, 1, TP_BOTH);
    wait_seq(&f, "w1", 4);
    check_truth(&f, "w1", &t, true);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    /* 3, or 4 when a second catch-up of the silent connection took batch 3 first */
    cr_expect_geq(si.counters[KVB_COUNT_REPLAYS], 3);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_geq(tp_requests(&t), 1);
    fx_fini(&f);
    tp_fini(&t);
}

static void gap_replayed(const char *transport)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, transport, f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 2, TP_BOTH);
    tp_store(&t, 0, 2, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    uint32_t req0 = tp_requests(&t);
    tp_store(&t, 0, 4, 2, TP_KEEP);  /* 2: lost on the wire */
    tp_remove(&t, 0, 0, 1, TP_KEEP); /* 3: lost on the wire (a REMOVED: stale if missed) */
    tp_store(&t, 0, 6, 1, TP_BOTH);  /* 4: the gap shows */
    wait_seq(&f, "w1", 5);
    check_truth(&f, "w1", &t, true);
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.gaps, 1);
    cr_expect_eq(in.replay_failures, 0);
    cr_expect_eq(tp_requests(&t), req0 + 1);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_eq(si.counters[KVB_COUNT_GAPS], 1);
    cr_expect_eq(si.counters[KVB_COUNT_REPLAYS], 2);
    cr_expect_eq(si.last_seq, 4);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    tp_store(&t, 0, 7, 1, TP_BOTH);
    wait_seq(&f, "w1", 6);
    check_truth(&f, "w1", &t, true);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, gap_replayed_ipc)
{
    gap_replayed("ipc");
}

Test(subscriber, gap_replayed_tcp)
{
    gap_replayed("tcp");
}

/* The replay buffer no longer holds the start of the gap: clear, RESYNCING,
 * continue with what it still holds, LIVE again once current. */
Test(subscriber, gap_not_in_buffer_resyncs)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH); /* 0 */
    tp_store(&t, 0, 3, 3, TP_BOTH); /* 1 */
    wait_seq(&f, "w1", 2);
    tp_remove(&t, 0, 0, 2, TP_KEEP); /* 2: lost, and trimmed below */
    tp_store(&t, 0, 6, 2, TP_KEEP);  /* 3: lost, still buffered */
    tp_remove(&t, 0, 3, 1, TP_KEEP); /* 4: lost, still buffered */
    tp_trim(&t, 3);
    tp_store(&t, 0, 8, 1, TP_BOTH); /* 5: the gap */
    wait_seq(&f, "w1", 6);
    /* blocks 2, 4, 5 are still on the worker but were stored before the hole:
     * unknowable; 0, 1, 3 were removed (1 in the lost batch): must be gone */
    check_truth(&f, "w1", &t, false);
    cr_expect_not(holds(&f, "w1", 0, H(0)));
    cr_expect_not(holds(&f, "w1", 0, H(1)));
    cr_expect_not(holds(&f, "w1", 0, H(3)));
    cr_expect_not(holds(&f, "w1", 0, H(2)), "cleared");
    cr_expect(holds(&f, "w1", 0, H(6)), "replayed after the hole");
    cr_expect(holds(&f, "w1", 0, H(7)));
    cr_expect(holds(&f, "w1", 0, H(8)), "the triggering batch");
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_RESYNCING);
    notes n = notes_get(&f);
    cr_expect_eq(n.clear_state[KVB_STREAM_RESYNCING], 1);
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.gaps, 1);
    cr_expect_geq(in.replay_failures, 1);
    tp_store(&t, 0, 9, 1, TP_BOTH); /* 6: in order: current again */
    wait_seq(&f, "w1", 7);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    check_truth(&f, "w1", &t, false);
    cr_expect(holds(&f, "w1", 0, H(9)));
    fx_fini(&f);
    tp_fini(&t);
}

/* The replay socket does not answer: the gap cannot be replayed. */
Test(subscriber, gap_replay_timeout_resyncs)
{
    fx_opts o = {.replay_timeout_ms = 300};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, "tcp", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    wait_seq(&f, "w1", 1);
    pthread_mutex_lock(&t.mu);
    t.mute = true;
    pthread_mutex_unlock(&t.mu);
    tp_remove(&t, 0, 0, 3, TP_KEEP);
    tp_store(&t, 0, 3, 1, TP_BOTH);
    wait_seq(&f, "w1", 3);
    check_truth(&f, "w1", &t, true); /* the clear removed 0..2 as the lost batch did */
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_RESYNCING);
    cr_expect_eq(notes_get(&f).clear_state[KVB_STREAM_RESYNCING], 1);
    cr_expect_geq(winfo(&f, "w1").replay_failures, 1);
    pthread_mutex_lock(&t.mu);
    t.mute = false;
    pthread_mutex_unlock(&t.mu);
    tp_store(&t, 0, 4, 1, TP_BOTH);
    wait_seq(&f, "w1", 4);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    check_truth(&f, "w1", &t, true);
    fx_fini(&f);
    tp_fini(&t);
}

/* No replay endpoint: a gap clears the worker, then the triggering batch applies. */
Test(subscriber, gap_without_replay_endpoint_clears)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", false);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 0, 3, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    check_truth(&f, "w1", &t, true);
    tp_remove(&t, 0, 0, 1, 0); /* 2: never reaches anyone */
    tp_store(&t, 0, 5, 1, TP_BOTH);
    wait_seq(&f, "w1", 4);
    check_truth(&f, "w1", &t, false);
    cr_expect_not(holds(&f, "w1", 0, H(1)), "cleared");
    cr_expect(holds(&f, "w1", 0, H(5)), "then applied");
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_RESYNCING);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.entries, 1);
    cr_expect_eq(si.counters[KVB_COUNT_GAPS], 1);
    cr_expect_geq(si.counters[KVB_COUNT_CLEARS], 1);
    tp_store(&t, 0, 6, 1, TP_BOTH);
    wait_seq(&f, "w1", 5);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* A new publisher on the same endpoints, sequence back to 0. */
static void restart(const char *transport, bool publish_before_reconnect, uint32_t new_batches)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, transport, f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 4, TP_BOTH);
    tp_store(&t, 0, 4, 4, TP_BOTH);
    tp_remove(&t, 0, 4, 1, TP_BOTH);
    wait_seq(&f, "w1", 3);
    check_truth(&f, "w1", &t, true);
    tp_close(&t);
    cr_assert(wait_for(&f, p_disconnected, "w1"));
    tp_reincarnate(&t); /* empty cache, seq 0 */
    if (publish_before_reconnect) {
        for (uint32_t i = 0; i < new_batches; i++)
            tp_store(&t, 0, 100 + 2 * i, 2, TP_BOTH); /* maybe lost on the wire */
        wait_seq(&f, "w1", new_batches);
    } else {
        wait_joined(&f, "w1", &t);
        for (uint32_t i = 0; i < new_batches; i++)
            tp_store(&t, 0, 100 + 2 * i, 2, TP_BOTH);
        wait_seq(&f, "w1", new_batches);
    }
    check_truth(&f, "w1", &t, true); /* the old incarnation's blocks are gone */
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.restarts, 1);
    notes n = notes_get(&f);
    cr_expect_eq(n.clear_state[KVB_STREAM_LIVE], 1, "a restart clears (LIVE)");
    cr_expect_eq(n.clear_state[KVB_STREAM_RESYNCING], 0);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.counters[KVB_COUNT_RESTARTS], 1);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_eq(si.last_seq, (int64_t)new_batches - 1);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, restart_after_reconnect_ipc)
{
    restart("ipc", false, 2);
}

Test(subscriber, restart_published_before_reconnect_ipc)
{
    restart("ipc", true, 2); /* fewer batches than before: nothing at expected - 1 */
}

Test(subscriber, restart_overtaking_old_sequence_tcp)
{
    restart("tcp", true, 6); /* past the old sequence: the probe's payload differs */
}

/* Without a replay endpoint the reconnect itself clears (state unknown). */
Test(subscriber, restart_without_replay_endpoint)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", false);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 4, TP_BOTH);
    tp_store(&t, 0, 4, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    tp_close(&t);
    cr_assert(wait_for(&f, p_disconnected, "w1"));
    tp_reincarnate(&t);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 50, 1, TP_BOTH); /* seq 0 again */
    wait_seq(&f, "w1", 1);
    check_truth(&f, "w1", &t, true);
    tp_store(&t, 0, 51, 1, TP_BOTH);
    wait_seq(&f, "w1", 2);
    check_truth(&f, "w1", &t, true);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* A restart seen on the SUB socket: a message below expected that is not a
 * batch already applied (no reconnect in between is visible to the subscriber). */
Test(subscriber, backwards_sequence_is_a_restart)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 0, 3, 3, TP_BOTH);
    tp_store(&t, 0, 6, 3, TP_BOTH);
    wait_seq(&f, "w1", 3);
    /* the same sockets start over: new cache, new sequence */
    tp_buf_clear(&t);
    t.next_seq = 0;
    for (uint32_t i = 0; i < t.nt; i++)
        t.t_cnt[i] = 0;
    tp_store(&t, 0, 20, 1, TP_BOTH);
    wait_seq(&f, "w1", 1);
    check_truth(&f, "w1", &t, true);
    cr_expect_eq(winfo(&f, "w1").restarts, 1);
    cr_expect_eq(notes_get(&f).clear_state[KVB_STREAM_LIVE], 1);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, all_blocks_cleared)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 5, TP_BOTH);
    tp_store(&t, 0, 5, 5, TP_BOTH);
    tev ev[2] = {ev_cleared(), ev_stored(10, 2)}; /* clear, then store, one batch */
    tp_batch(&t, 0, ev, 2, TP_BOTH);
    wait_seq(&f, "w1", 3);
    check_truth(&f, "w1", &t, true);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.entries, 2);
    cr_expect_geq(si.counters[KVB_COUNT_CLEARS], 1);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* The replay answers more than asked: every batch twice, and the batches below
 * the start too. Only the missing ones apply; the rest count as duplicates. */
Test(subscriber, duplicates_in_replay)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 2, TP_BOTH);
    tp_store(&t, 0, 2, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    pthread_mutex_lock(&t.mu);
    t.dup = true;
    t.old = true;
    pthread_mutex_unlock(&t.mu);
    tp_store(&t, 0, 4, 1, TP_KEEP);  /* 2 */
    tp_remove(&t, 0, 0, 1, TP_KEEP); /* 3 */
    tp_store(&t, 0, 5, 1, TP_BOTH);  /* 4 */
    wait_seq(&f, "w1", 5);
    check_truth(&f, "w1", &t, true);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    /* replies 0,0,1,1 (below start), 2 (applied), 2, 3 (applied), 3, 4, 4 (>= trigger) */
    cr_expect_eq(si.dropped[KVB_DROP_DUPLICATE], 6);
    cr_expect_eq(si.counters[KVB_COUNT_REPLAYS], 2);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    cr_expect_eq(winfo(&f, "w1").restarts, 0);
    fx_fini(&f);
    tp_fini(&t);
}

/* A PUB message the catch-up replay already applied is a duplicate, not a restart. */
Test(subscriber, wire_duplicate_after_replay)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 2, TP_BOTH);
    uint64_t s1 = tp_store(&t, 0, 2, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    /* send batch 1 again, byte for byte */
    pthread_mutex_lock(&t.mu);
    tp_ent e = t.buf[t.nbuf - 1];
    unsigned char *copy = malloc(e.n);
    memcpy(copy, e.p, e.n);
    pthread_mutex_unlock(&t.mu);
    cr_assert_eq(e.seq, s1);
    unsigned char sq[8];
    put_be64(s1, sq);
    const void *part[3] = {"kv", sq, copy};
    size_t len[3] = {2, 8, e.n};
    tp_send_raw(&t, part, len, 3);
    free(copy);
    tp_store(&t, 0, 4, 1, TP_BOTH);
    wait_seq(&f, "w1", 3);
    check_truth(&f, "w1", &t, true);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.dropped[KVB_DROP_DUPLICATE], 1);
    cr_expect_eq(winfo(&f, "w1").restarts, 0);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, malformed_messages_counted_and_harmless)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    wait_seq(&f, "w1", 1);
    unsigned char sq[8];
    put_be64(1, sq);
    static const unsigned char junk[] = {0xc1, 0xde, 0xad, 0xbe, 0xef};
    { /* 2 frames */
        const void *p[2] = {"kv", sq};
        size_t l[2] = {2, 8};
        tp_send_raw(&t, p, l, 2);
    }
    { /* a 7-byte sequence number */
        const void *p[3] = {"kv", sq, junk};
        size_t l[3] = {2, 7, sizeof junk};
        tp_send_raw(&t, p, l, 3);
    }
    { /* 4 frames */
        const void *p[4] = {"kv", sq, junk, junk};
        size_t l[4] = {2, 8, sizeof junk, sizeof junk};
        tp_send_raw(&t, p, l, 4);
    }
    { /* the end marker's sequence number on the PUB socket */
        unsigned char m1[8];
        memset(m1, 0xff, 8);
        const void *p[3] = {"kv", m1, junk};
        size_t l[3] = {2, 8, sizeof junk};
        tp_send_raw(&t, p, l, 3);
    }
    { /* a garbage payload under the next sequence number: consumed, unusable */
        const void *p[3] = {"kv", sq, junk};
        size_t l[3] = {2, 8, sizeof junk};
        tp_send_raw(&t, p, l, 3);
        t.next_seq++;
    }
    tp_store(&t, 0, 3, 1, TP_BOTH); /* 2: in order after the garbage one */
    wait_seq(&f, "w1", 3);
    check_truth(&f, "w1", &t, true);
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.bad_messages, 4);
    cr_expect_eq(in.bad_payloads, 1);
    cr_expect_eq(in.messages, 7);
    cr_expect_eq(in.gaps, 0, "the garbage batch consumed its number");
    cr_expect_eq(in.restarts, 0);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.dropped[KVB_DROP_MALFORMED], 1);
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* A frame over max_message_bytes: ZeroMQ drops the connection; the subscriber
 * reconnects, proves by replay that nothing changed, and goes on. */
Test(subscriber, oversized_message_disconnects_then_resumes)
{
    fx_opts o = {.max_message_bytes = 4096};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    wait_seq(&f, "w1", 1);
    size_t big = 64 * 1024;
    unsigned char *p = calloc(1, big);
    unsigned char sq[8];
    put_be64(1, sq);
    const void *part[3] = {"kv", sq, p};
    size_t len[3] = {2, 8, big};
    tp_send_raw(&t, part, len, 3);
    free(p);
    tp_wait_sub(&t); /* the new connection's subscription */
    cr_assert(wait_for(&f, p_ready_connected, "w1"));
    tp_store(&t, 0, 3, 1, TP_BOTH);
    wait_seq(&f, "w1", 2);
    check_truth(&f, "w1", &t, true);
    cr_expect_eq(winfo(&f, "w1").restarts, 0);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* An idle but connected publisher stays LIVE, however long it says nothing. */
Test(subscriber, silence_stays_live)
{
    fx_opts o = {.stale_s = 0.3, .drop_s = 0.6};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    wait_seq(&f, "w1", 1);
    notes n0 = notes_get(&f); /* a slow first connection may have been noted stale */
    msleep(1500);             /* time is the subject: 5x stale_after, 2.5x drop_after */
    kvb_subscriber_sync(f.sub, 2000);
    check_truth(&f, "w1", &t, true);
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    cr_expect(winfo(&f, "w1").connected);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_STALE], n0.n[KVB_SUB_STALE]);
    fx_fini(&f);
    tp_fini(&t);
}

typedef struct state_arg {
    const char *name;
    kvb_stream_state state;
    int64_t entries; /* -1: any */
} state_arg;

static bool p_state(fx *f, const void *arg)
{
    const state_arg *a = arg;
    kvb_index_stream_info si;
    if (sinfo(f, a->name, 0, &si) != 0)
        return false;
    return si.state == a->state && (a->entries < 0 || si.entries == (uint64_t)a->entries);
}

/* The publisher dies: STALE after stale_after (not matched, entries kept), the
 * entries freed after drop_after; it comes back: LIVE, resumed by replay. */
static void killed(const char *transport)
{
    fx_opts o = {.stale_s = 0.3, .drop_s = 0.6};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, transport, f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 0, 3, 3, TP_BOTH);
    wait_seq(&f, "w1", 2);
    check_truth(&f, "w1", &t, true);
    /* notes from here on: on a loaded machine the first connection may itself
     * have taken longer than stale_after (a STALE note, then LIVE) */
    notes n0 = notes_get(&f);
    int64_t t0 = now_ms();
    tp_close(&t); /* buffer and sequence kept: the same process comes back later */
    state_arg stale = {"w1", KVB_STREAM_STALE, -1};
    cr_assert(wait_for(&f, p_state, &stale), "never went stale");
    cr_expect_geq(now_ms() - t0, 250, "not stale before stale_after");
    cr_expect_not(holds(&f, "w1", 0, H(0)), "a stale worker is not matched");
    state_arg dropped = {"w1", KVB_STREAM_STALE, 0};
    cr_assert(wait_for(&f, p_state, &dropped), "entries never dropped");
    cr_expect_geq(now_ms() - t0, 550, "not dropped before drop_after");
    notes n = notes_get(&f);
    cr_expect_eq(n.n[KVB_SUB_STALE] - n0.n[KVB_SUB_STALE], 1);
    cr_expect_eq(n.clear_state[KVB_STREAM_STALE] - n0.clear_state[KVB_STREAM_STALE], 1);
    cr_expect(kvb_subscriber_ready(f.sub));
    /* it comes back, having published one more batch meanwhile */
    tp_open(&t);
    tp_store(&t, 0, 6, 1, TP_KEEP);
    state_arg live = {"w1", KVB_STREAM_LIVE, -1};
    cr_assert(wait_for(&f, p_state, &live), "never live again");
    wait_seq(&f, "w1", 3); /* the missed batch came by replay */
    cr_expect(holds(&f, "w1", 0, H(6)));
    check_truth(&f, "w1", &t, false); /* blocks 0..5 were dropped: nothing stale */
    cr_expect_eq(notes_get(&f).n[KVB_SUB_LIVE] - n0.n[KVB_SUB_LIVE], 1);
    cr_expect_eq(winfo(&f, "w1").restarts, 0);
    tp_wait_sub(&t);
    tp_store(&t, 0, 7, 1, TP_BOTH);
    wait_seq(&f, "w1", 4);
    cr_expect(holds(&f, "w1", 0, H(7)));
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, killed_stale_dropped_reconnect_ipc)
{
    killed("ipc");
}

Test(subscriber, killed_stale_dropped_reconnect_tcp)
{
    killed("tcp");
}

/* The same publisher comes back after missing batches the subscriber cannot
 * recover: its buffer no longer holds where the subscriber stopped (trim), or
 * its replay socket does not answer (mute). Either way the worker is cleared
 * (RESYNCING) at the reconnect, not left with what it held before. */
static void reconnect_unrecoverable(bool mute)
{
    fx_opts o = {.replay_timeout_ms = mute ? 300 : 3000};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 0, 3, 3, TP_BOTH);
    wait_seq(&f, "w1", 2);
    tp_close(&t);
    cr_assert(wait_for(&f, p_disconnected, "w1"));
    tp_remove(&t, 0, 0, 3, TP_KEEP); /* 2: while nobody listened */
    tp_store(&t, 0, 6, 1, TP_KEEP);  /* 3 */
    if (mute) {
        t.mute = true; /* no thread runs yet */
    } else {
        tp_trim(&t, 3);
    }
    tp_open(&t);
    tp_wait_sub(&t);
    cr_assert(wait_for(&f, p_connected, "w1"));
    state_arg resync = {"w1", KVB_STREAM_RESYNCING, -1};
    cr_assert(wait_for(&f, p_state, &resync));
    check_truth(&f, "w1", &t, false);
    cr_expect_not(holds(&f, "w1", 0, H(4)), "held before the reconnect: cleared");
    cr_expect_eq(notes_get(&f).clear_state[KVB_STREAM_RESYNCING], 1);
    cr_expect_eq(winfo(&f, "w1").restarts, 0);
    if (!mute)
        cr_expect(holds(&f, "w1", 0, H(6)), "what the buffer still held was applied");
    tp_store(&t, 0, 7, 1, TP_BOTH); /* 4 */
    tp_store(&t, 0, 8, 1, TP_BOTH); /* 5 */
    wait_seq(&f, "w1", 6);
    check_truth(&f, "w1", &t, false);
    cr_expect(holds(&f, "w1", 0, H(7)));
    cr_expect(holds(&f, "w1", 0, H(8)));
    cr_expect_eq(sstate(&f, "w1", 0), KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

Test(subscriber, reconnect_buffer_trimmed_resyncs)
{
    reconnect_unrecoverable(false);
}

Test(subscriber, reconnect_replay_silent_resyncs)
{
    reconnect_unrecoverable(true);
}

/* A busy publisher during a slow catch-up: the replay gets ahead of the PUB
 * stream by more than the 256 batches the ring remembers. Those PUB messages
 * are duplicates (the connection's catch-up proved the incarnation), not a
 * restart. */
Test(subscriber, busy_publisher_during_catch_up)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 2, TP_BOTH);
    tp_store(&t, 0, 2, 2, TP_BOTH);
    wait_seq(&f, "w1", 2);
    tp_close(&t); /* the network goes away and comes back: same process */
    cr_assert(wait_for(&f, p_disconnected, "w1"));
    t.hold = true; /* no replay thread runs yet */
    tp_open(&t);
    tp_wait_sub(&t);
    for (uint32_t i = 0; i < 600; i++) /* while the catch-up waits for its answer */
        tp_store(&t, 0, 4 + (i % 100), 1, TP_BOTH);
    pthread_mutex_lock(&t.mu);
    t.hold = false;
    pthread_mutex_unlock(&t.mu);
    wait_seq(&f, "w1", 602);
    check_truth(&f, "w1", &t, true);
    kvb_subscriber_worker_info in = winfo(&f, "w1");
    cr_expect_eq(in.restarts, 0);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_gt(si.dropped[KVB_DROP_DUPLICATE], 256, "the PUB copies of replayed batches");
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    fx_fini(&f);
    tp_fini(&t);
}

/* A publisher process that hangs with its connection open (SIGSTOP): only the
 * ZMTP heartbeats notice. It runs in a child process forked before this
 * process has any ZeroMQ context or thread. */
static void hung_child(const char *ep)
{
    void *ctx = zmq_ctx_new();
    void *pub = zmq_socket(ctx, ZMQ_XPUB);
    int one = 1;
    zmq_setsockopt(pub, ZMQ_XPUB_VERBOSE, &one, sizeof one);
    if (zmq_bind(pub, ep) != 0)
        _exit(2);
    unsigned char m[64];
    while (zmq_recv(pub, m, sizeof m, 0) < 1 || m[0] != 1) {
    }
    tp t; /* only for its encoder */
    memset(&t, 0, sizeof t);
    pk k;
    pk_init(&k);
    tev e = ev_stored(0, 3);
    tp_encode(&t, &k, 0, &e, 1);
    unsigned char sq[8] = {0};
    zmq_send(pub, "kv", 2, ZMQ_SNDMORE);
    zmq_send(pub, sq, 8, ZMQ_SNDMORE);
    zmq_send(pub, k.sb.data, k.sb.size, 0);
    for (;;) { /* keep serving (heartbeats, resubscriptions) until killed */
        zmq_pollitem_t it = {pub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) > 0)
            zmq_recv(pub, m, sizeof m, ZMQ_DONTWAIT);
    }
}

static bool p_not_stale(fx *f, const void *arg)
{
    kvb_index_stream_info si;
    return winfo(f, arg).connected && sinfo(f, arg, 0, &si) == 0 && si.state != KVB_STREAM_STALE;
}

Test(subscriber, hung_peer_detected_by_heartbeats)
{
    alarm(SAFETY_S);
    char dir[] = "/tmp/kvb-sub-hung-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/pub", dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        hung_child(ep); /* never returns */
    fx_opts o = {.stale_s = 0.3, .drop_s = 60, .heartbeat_ivl_ms = 200};
    fx f;
    fx_init(&f, &o);
    kvb_subscriber_worker w = {.name = "w1", .endpoint = ep, .kind = KVB_WIRE_KVBLOCK};
    cr_assert_eq(kvb_subscriber_add_worker(f.sub, &w), 0);
    int64_t end = now_ms() + DEADLINE_MS;
    while (!holds(&f, "w1", 0, H(0)) && now_ms() < end) { /* the child binds when it can */
        kvb_subscriber_sync(f.sub, 2000);
        msleep(5);
    }
    cr_assert(holds(&f, "w1", 0, H(0)), "the child's batch never arrived");
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    state_arg stale = {"w1", KVB_STREAM_STALE, -1};
    bool went_stale = wait_for(&f, p_state, &stale);
    cr_expect(went_stale, "a hung peer (connection open, silent) never went stale");
    cr_expect_not(holds(&f, "w1", 0, H(0)), "a stale worker is not matched");
    cr_expect_not(winfo(&f, "w1").connected);
    cr_assert_eq(kill(pid, SIGCONT), 0);
    cr_expect(wait_for(&f, p_not_stale, "w1"), "never came back");
    /* back without a replay endpoint: what it holds is unknown, so cleared */
    cr_expect_not(holds(&f, "w1", 0, H(0)));
    cr_expect_geq(notes_get(&f).n[KVB_SUB_STALE], 1);
    cr_expect_geq(notes_get(&f).n[KVB_SUB_LIVE], 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fx_fini(&f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Two data-parallel ranks on one endpoint: one sequence space, two streams. */
Test(subscriber, two_dp_ranks_one_endpoint)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 1, 10, 3, TP_BOTH);
    tp_store(&t, 1, 0, 2, TP_BOTH);  /* rank 1 holds 0, 1 too */
    tp_remove(&t, 0, 1, 1, TP_KEEP); /* lost on the wire, replayed */
    tp_store(&t, 0, 20, 1, TP_BOTH);
    wait_seq(&f, "w1", 5);
    check_truth(&f, "w1", &t, true);
    cr_expect(holds(&f, "w1", 1, H(1)), "rank 1 keeps its own copy");
    cr_expect_not(holds(&f, "w1", 0, H(1)));
    kvb_index_stream_info s0, s1;
    cr_assert_eq(sinfo(&f, "w1", 0, &s0), 0);
    cr_assert_eq(sinfo(&f, "w1", 1, &s1), 0);
    cr_expect_eq(s0.last_seq, 4);
    cr_expect_eq(s1.last_seq, 2);
    cr_expect_neq(s0.stream, s1.stream);
    /* a restart clears both ranks */
    tp_buf_clear(&t);
    t.next_seq = 0;
    for (uint32_t i = 0; i < t.nt; i++)
        t.t_cnt[i] = 0;
    tp_store(&t, 1, 30, 1, TP_BOTH);
    wait_seq(&f, "w1", 1);
    check_truth(&f, "w1", &t, true);
    cr_assert_eq(sinfo(&f, "w1", 0, &s0), 0);
    cr_expect_eq(s0.entries, 0);
    cr_expect_eq(s0.counters[KVB_COUNT_RESTARTS], 1);
    fx_fini(&f);
    tp_fini(&t);
}

/* After a snapshot load the subscriber resumes from the streams' watermarks. */
Test(subscriber, resumes_from_existing_streams)
{
    fx f;
    fx_init(&f, NULL);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    tp_store(&t, 0, 3, 3, TP_BOTH);
    wait_seq(&f, "w1", 2);
    void *snap;
    size_t snap_len;
    cr_assert_eq(kvb_index_save_mem(f.idx, &snap, &snap_len), 0);
    /* a second router process: loads the snapshot, subscribes later */
    kvb_index *idx2;
    cr_assert_eq(kvb_index_load_mem(snap, snap_len, NULL, &idx2), 0);
    free(snap);
    tp_remove(&t, 0, 0, 2, TP_BOTH);
    tp_store(&t, 0, 6, 1, TP_BOTH);
    wait_seq(&f, "w1", 4);
    kvb_subscriber_config sc;
    kvb_subscriber_config_init(&sc);
    sc.index = idx2;
    sc.tick_ms = 20;
    sc.reconnect_ivl_ms = 20;
    sc.reconnect_ivl_max_ms = 100;
    kvb_subscriber *sub2;
    cr_assert_eq(kvb_subscriber_create(&sc, &sub2), 0);
    kvb_subscriber_worker w = {
        .name = "w1", .endpoint = t.pub_ep, .replay_endpoint = t.rep_ep, .kind = KVB_WIRE_KVBLOCK};
    cr_assert_eq(kvb_subscriber_add_worker(sub2, &w), 0);
    kvb_subscriber_worker_info in;
    int64_t end = now_ms() + DEADLINE_MS;
    do {
        kvb_subscriber_sync(sub2, 2000);
        cr_assert_eq(kvb_subscriber_worker_info_get(sub2, "w1", &in), 0);
    } while (in.expected_seq != 4 && now_ms() < end && (msleep(2), true));
    cr_assert_eq(in.expected_seq, 4, "resumed at the watermark + 1 and caught up");
    uint32_t sid;
    cr_assert_eq(kvb_index_stream_find(idx2, "w1", 0, &sid), 0);
    kvb_index_stream_info si;
    cr_assert_eq(kvb_index_stream_info_get(idx2, sid, &si), 0);
    cr_expect_eq(si.counters[KVB_COUNT_REPLAYS], 2, "only the two missed batches");
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    for (uint32_t i = 0; i < t.nt; i++) {
        kvb_index_result r[4];
        uint64_t h = t.t_h[i];
        int n = kvb_index_match(idx2, &h, 1, r, 4);
        cr_expect_eq(n, t.t_cnt[i] > 0 ? 1 : 0, "hash #%u", i);
    }
    cr_assert_eq(kvb_subscriber_destroy(sub2), 0);
    cr_assert_eq(kvb_index_destroy(idx2), 0);
    fx_fini(&f);
    tp_fini(&t);
}

/* destroy while the thread waits for a replay that will not come: it returns
 * at once, not after the 30 s replay timeout, and leaves the index as it was
 * (no clear for the replay it cut short). */
Test(subscriber, destroy_interrupts_a_replay)
{
    fx_opts o = {.replay_timeout_ms = 30000};
    fx f;
    fx_init(&f, &o);
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 3, TP_BOTH);
    wait_seq(&f, "w1", 1);
    pthread_mutex_lock(&t.mu);
    t.mute = true;
    uint32_t req = t.requests;
    pthread_mutex_unlock(&t.mu);
    tp_store(&t, 0, 3, 1, TP_KEEP);
    tp_store(&t, 0, 4, 1, TP_BOTH); /* a gap: the thread asks, nobody answers */
    int64_t end = now_ms() + DEADLINE_MS;
    while (tp_requests(&t) == req && now_ms() < end)
        msleep(2);
    cr_assert_gt(tp_requests(&t), req, "no replay request");
    int64_t t0 = now_ms();
    cr_assert_eq(kvb_subscriber_destroy(f.sub), 0);
    f.sub = NULL;
    cr_expect_lt(now_ms() - t0, 15000, "destroy waited for the 30 s replay timeout");
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "w1", 0, &si), 0);
    cr_expect_eq(si.entries, 3, "not cleared on the way out");
    cr_expect_eq(si.state, KVB_STREAM_LIVE);
    cr_expect_eq(si.last_seq, 0);
    cr_expect_eq(notes_get(&f).n[KVB_SUB_CLEAR], 0);
    fx_fini(&f);
    tp_fini(&t);
}

/* ---- kvblock's own publisher, end to end --------------------------------------------------- */

static void put_blocks(kvb_pool *p, const kvb_hash *h, uint32_t n)
{
    kvb_mutable m[16];
    kvb_complete c[16];
    kvb_block b[16];
    cr_assert_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], h[i], &c[i]), 0);
    cr_assert_eq(kvb_pool_register(p, c, n, b), 0);
    cr_assert_eq(kvb_block_release_n(b, n), 0); /* cached, still indexed */
}

static uint32_t match_prefix(fx *f, const char *name, const uint64_t *h, uint32_t n)
{
    kvb_index_result r[8];
    int k = kvb_index_match(f->idx, h, n, r, 8);
    for (int i = 0; i < k && i < 8; i++)
        if (!strcmp(r[i].worker, name))
            return r[i].device;
    return 0;
}

Test(subscriber, kvblock_publisher_end_to_end)
{
    fx f;
    fx_init(&f, NULL);
    char pub_ep[128], rep_ep[128];
    snprintf(pub_ep, sizeof pub_ep, "ipc://%s/kvb-pub", f.dir);
    snprintf(rep_ep, sizeof rep_ep, "ipc://%s/kvb-replay", f.dir);
    kvb_publisher_config pc;
    kvb_publisher_config_init(&pc);
    pc.endpoint = pub_ep;
    pc.replay_endpoint = rep_ep;
    pc.topic = "kv";
    kvb_publisher *pub;
    cr_assert_eq(kvb_publisher_create(&pc, &pub), 0);
    kvb_event_config ec;
    kvb_event_config_init(&ec);
    kvb_publisher_event_config(pub, &ec);
    ec.medium = "GPU";
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.block_size = 16;
    cfg.events = &ec;
    kvb_pool *pool = tu_pool_cfg(&cfg);

    /* two requests of 4 blocks each, token ids as a router would see them */
    uint32_t tok_a[64], tok_b[64];
    for (uint32_t i = 0; i < 64; i++) {
        tok_a[i] = 7 + i;
        tok_b[i] = 900000 + 3 * i;
    }
    kvb_hash ha[4], hb[4];
    cr_assert_eq(kvb_hash_tokens(tok_a, 64, 16, 0, ha, 4), 4);
    cr_assert_eq(kvb_hash_tokens(tok_b, 64, 16, 0, hb, 4), 4);
    uint64_t ra[4], rb[4];
    for (int i = 0; i < 4; i++) {
        ra[i] = kvb_hash_current(ha[i]);
        rb[i] = kvb_hash_current(hb[i]);
    }
    put_blocks(pool, ha, 4); /* before the subscriber exists: slow joiner */
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);

    kvb_subscriber_worker w = {.name = "pool0",
                               .endpoint = pub_ep,
                               .replay_endpoint = rep_ep,
                               .kind = KVB_WIRE_KVBLOCK,
                               .topic = "kv"};
    cr_assert_eq(kvb_subscriber_add_worker(f.sub, &w), 0);
    kvb_publisher_stats ps;
    cr_assert_eq(kvb_publisher_stats_get(pub, &ps), 0);
    wait_seq(&f, "pool0", ps.last_seq + 1);
    cr_expect_eq(match_prefix(&f, "pool0", ra, 4), 4, "a request's kvb_hash_current values");

    put_blocks(pool, hb, 4); /* the pool is full now */
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
    cr_assert_eq(kvb_publisher_stats_get(pub, &ps), 0);
    wait_seq(&f, "pool0", ps.last_seq + 1);
    cr_expect_eq(match_prefix(&f, "pool0", rb, 4), 4);
    cr_expect_eq(match_prefix(&f, "pool0", ra, 4), 4);

    /* evict 2 blocks (LRU: request A's first two): REMOVED */
    kvb_mutable m[2];
    cr_assert_eq(kvb_pool_allocate(pool, 2, m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_release(&m[0]), 0);
    cr_assert_eq(kvb_mutable_release(&m[1]), 0);
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
    cr_assert_eq(kvb_publisher_stats_get(pub, &ps), 0);
    wait_seq(&f, "pool0", ps.last_seq + 1);
    /* the index holds exactly what the pool holds */
    uint32_t held = 0;
    for (int i = 0; i < 4; i++) {
        kvb_block out;
        bool hit = false;
        uint64_t hi[1] = {ra[i]};
        cr_assert_geq(kvb_pool_scan(pool, &ha[i], 1, false, &out, &hit), 0);
        bool in_pool = hit;
        if (hit)
            cr_assert_eq(kvb_block_release(&out), 0);
        cr_expect_eq(match_prefix(&f, "pool0", hi, 1) == 1, in_pool, "block a%d", i);
        held += in_pool;
    }
    cr_expect_eq(held, 2, "two of A's blocks were evicted");
    cr_expect_eq(match_prefix(&f, "pool0", ra, 4), 0, "A's prefix starts with an evicted block");
    cr_expect_eq(match_prefix(&f, "pool0", rb, 4), 4);

    /* the pool drains its cache: CLEARED */
    cr_assert_gt(kvb_pool_reset_inactive(pool), 0);
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
    cr_assert_eq(kvb_publisher_stats_get(pub, &ps), 0);
    wait_seq(&f, "pool0", ps.last_seq + 1);
    cr_expect_eq(match_prefix(&f, "pool0", rb, 4), 0);
    kvb_index_stream_info si;
    cr_assert_eq(sinfo(&f, "pool0", KVB_INDEX_NO_RANK, &si), 0);
    cr_expect_eq(si.entries, 0);
    cr_expect_eq(si.hashes, KVB_INDEX_HASHES_ROUTER);
    kvb_subscriber_worker_info in = winfo(&f, "pool0");
    cr_expect_eq(in.bad_messages, 0);
    cr_expect_eq(in.bad_payloads, 0);
    cr_expect_eq(in.restarts, 0);

    tu_finish(pool);
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    fx_fini(&f);
}

/* ---- API --------------------------------------------------------------------------------- */

Test(subscriber, api_errors_and_workers)
{
    fx f;
    fx_init(&f, NULL);
    cr_expect(kvb_subscriber_available());
    kvb_subscriber_config sc;
    kvb_subscriber_config_init(&sc);
    kvb_subscriber *s = NULL;
    cr_expect_eq(kvb_subscriber_create(&sc, &s), -EINVAL, "no index");
    cr_expect_eq(kvb_subscriber_create(NULL, &s), -EINVAL);
    sc.index = f.idx;
    sc.tick_ms = 0;
    cr_expect_eq(kvb_subscriber_create(&sc, &s), -EINVAL);
    cr_expect_eq(kvb_subscriber_destroy(NULL), -EINVAL);

    cr_expect(kvb_subscriber_ready(f.sub), "no workers: nothing to wait for");
    kvb_subscriber_worker w = {.name = "a", .endpoint = "tcp://127.0.0.1:1"};
    cr_expect_eq(kvb_subscriber_add_worker(f.sub, NULL), -EINVAL);
    w.name = "";
    cr_expect_eq(kvb_subscriber_add_worker(f.sub, &w), -EINVAL);
    char longname[KVB_INDEX_NAME_MAX + 1];
    memset(longname, 'x', sizeof longname - 1);
    longname[KVB_INDEX_NAME_MAX] = 0;
    w.name = longname;
    cr_expect_eq(kvb_subscriber_add_worker(f.sub, &w), -EINVAL);
    w.name = "a";
    w.endpoint = "bogus://x";
    cr_expect_lt(kvb_subscriber_add_worker(f.sub, &w), 0, "a bad endpoint");
    w.endpoint = "tcp://127.0.0.1:1"; /* nobody there: connecting forever is fine */
    cr_expect_eq(kvb_subscriber_add_worker(f.sub, &w), 0);
    cr_expect_eq(kvb_subscriber_add_worker(f.sub, &w), -EEXIST);
    cr_expect_not(kvb_subscriber_ready(f.sub), "a never heard of");
    kvb_subscriber_worker_info in;
    cr_assert_eq(kvb_subscriber_worker_info_get(f.sub, "a", &in), 0);
    cr_expect_str_eq(in.name, "a");
    cr_expect_not(in.connected);
    cr_expect_eq(in.expected_seq, 0);
    cr_expect_eq(kvb_subscriber_worker_info_get(f.sub, "b", &in), -ENOENT);
    cr_expect_eq(kvb_subscriber_worker_info_get(f.sub, NULL, &in), -EINVAL);
    cr_expect_eq(kvb_subscriber_sync(f.sub, 5000), 0);

    /* a worker with streams; remove with drop removes them from the index */
    tp t;
    tp_init(&t, "ipc", f.dir, "w", true);
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_joined(&f, "w1", &t);
    tp_store(&t, 0, 0, 2, TP_BOTH);
    wait_seq(&f, "w1", 1);
    cr_expect_eq(kvb_subscriber_remove_worker(f.sub, "w1", true), 0);
    cr_expect_eq(kvb_subscriber_remove_worker(f.sub, "w1", true), -ENOENT);
    uint32_t sid;
    cr_expect_eq(kvb_index_stream_find(f.idx, "w1", 0, &sid), -ENOENT);
    cr_expect_eq(kvb_subscriber_worker_info_get(f.sub, "w1", &in), -ENOENT);
    pthread_mutex_lock(&f.nt.mu);
    f.nt.last_seq = -1; /* a new subscription: its sequence starts over */
    pthread_mutex_unlock(&f.nt.mu);
    /* subscribe again: a new subscription starts at 0 and catches up by replay */
    fx_add(&f, "w1", &t, KVB_WIRE_KVBLOCK);
    wait_seq(&f, "w1", 1);
    check_truth(&f, "w1", &t, true);
    /* remove without drop: the streams stay, reported disconnected */
    cr_expect_eq(kvb_subscriber_remove_worker(f.sub, "w1", false), 0);
    cr_expect_eq(kvb_index_stream_find(f.idx, "w1", 0, &sid), 0);
    cr_expect_eq(kvb_subscriber_remove_worker(f.sub, "a", false), 0);
    cr_expect(kvb_subscriber_ready(f.sub));
    fx_fini(&f);
    tp_fini(&t);
}

#endif /* KVB_HAVE_ZMQ */
