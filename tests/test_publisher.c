/*
 * test_publisher.c - the ZeroMQ publisher (include/kvblock/publisher.h) from a
 * C subscriber's side: the multipart framing, the msgpack payload decoded with
 * msgpack-c field by field against vLLM's KVEventBatch layout (events as
 * tagged maps, the default, and as legacy tagged arrays), sequence
 * numbers, the replay socket (REQ-style and bare DEALER requests, the end
 * marker, malformed requests), accounting under a burst with a tiny queue, and
 * create errors. The end-to-end check with a Python subscriber that rebuilds an
 * index is tests/test_publisher_consumer.py (make check-zmq).
 *
 * Without ZeroMQ at build time only the -ENOTSUP contract is tested.
 * Waits are bounded (receive timeouts of 10 s) and never asserted on.
 */
#include "testutil.h"
#include "kvblock/publisher.h"

#ifndef KVB_HAVE_ZMQ

Test(publisher, unavailable_without_zmq)
{
    kvb_publisher_config cfg;
    kvb_publisher_config_init(&cfg);
    cfg.endpoint = "ipc:///tmp/never";
    kvb_publisher *pub = NULL;
    cr_expect_not(kvb_publisher_available());
    cr_expect_eq(kvb_publisher_create(&cfg, &pub), -ENOTSUP);
    cr_expect_null(pub);
}

#else

#include <msgpack.h>
#include <stdio.h>
#include <unistd.h>
#include <zmq.h>

/* ---- endpoints and sockets --------------------------------------------------- */

typedef struct ends {
    char pub[128], replay[128];
} ends;

static void make_ends(ends *e, const char *tag)
{
    snprintf(e->pub, sizeof e->pub, "ipc:///tmp/kvb-test-%d-%s-pub", (int)getpid(), tag);
    snprintf(e->replay, sizeof e->replay, "ipc:///tmp/kvb-test-%d-%s-replay", (int)getpid(), tag);
}

static void unlink_ends(const ends *e)
{
    unlink(e->pub + 6);
    unlink(e->replay + 6);
}

static void *sock(void *ctx, int type, const char *ep)
{
    void *s = zmq_socket(ctx, type);
    cr_assert_not_null(s);
    int t = 10000, zero = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero); /* a whole replay may arrive at once */
    cr_assert_eq(zmq_connect(s, ep), 0);
    return s;
}

/* Receive one multipart message into frames (each malloc'ed); returns the count. */
typedef struct frame {
    unsigned char *p;
    size_t n;
} frame;

static int recv_multi(void *s, frame *f, int cap)
{
    int n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return n ? n : -1;
        }
        if (n < cap) {
            f[n].n = zmq_msg_size(&m);
            f[n].p = malloc(f[n].n + 1);
            memcpy(f[n].p, zmq_msg_data(&m), f[n].n);
            n++;
        }
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more)
            return n;
    }
}

static void free_frames(frame *f, int n)
{
    for (int i = 0; i < n; i++)
        free(f[i].p);
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(uint64_t v, unsigned char *p)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* ---- decoding a payload against vLLM's layout ------------------------------- */

typedef struct dev {
    char tag[32];
    bool map; /* the event was a tagged map (else a tagged array) */
    uint32_t n;
    uint64_t hashes[64];
    bool has_parent;
    uint64_t parent;
    uint32_t ntok;
    uint64_t block_size;
    bool lora_nil;
    char medium[16];
    bool medium_nil;
} dev;

typedef struct dbatch {
    double ts;
    uint32_t nev;
    dev ev[64];
    bool rank_nil;
    int64_t rank;
} dbatch;

static void obj_str(const msgpack_object *o, char *out, size_t cap)
{
    cr_assert_eq(o->type, MSGPACK_OBJECT_STR);
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(out, o->via.str.ptr, n);
    out[n] = 0;
}

static bool obj_is(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           !memcmp(o->via.str.ptr, s, o->via.str.size);
}

/* Field pos (1-based after the tag) of an array event, or key of a map event. */
static const msgpack_object *field(const msgpack_object *e, uint32_t pos, const char *key)
{
    if (e->type == MSGPACK_OBJECT_ARRAY)
        return &e->via.array.ptr[pos];
    for (uint32_t i = 0; i < e->via.map.size; i++)
        if (obj_is(&e->via.map.ptr[i].key, key))
            return &e->via.map.ptr[i].val;
    cr_assert_fail("map event without key %s", key);
    return NULL;
}

/* Decode one payload against vLLM's layouts: the batch [ts, events, rank],
 * events as tagged maps (current vLLM) or tagged arrays (legacy), every field
 * present with vLLM's name or at its declaration position. */
static void decode(const frame *payload, dbatch *d)
{
    memset(d, 0, sizeof *d);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)payload->p, payload->n, &off),
                 MSGPACK_UNPACK_SUCCESS);
    cr_expect_eq(off, payload->n, "one msgpack object per payload");
    const msgpack_object *root = &u.data;
    cr_assert_eq(root->type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(root->via.array.size, 3, "[ts, events, data_parallel_rank]");
    const msgpack_object *a = root->via.array.ptr;
    cr_assert_eq(a[0].type, MSGPACK_OBJECT_FLOAT64, "timestamp is a float");
    d->ts = a[0].via.f64;
    cr_assert_eq(a[1].type, MSGPACK_OBJECT_ARRAY);
    d->nev = a[1].via.array.size;
    cr_assert_leq(d->nev, 64);
    for (uint32_t i = 0; i < d->nev; i++) {
        const msgpack_object *e = &a[1].via.array.ptr[i];
        dev *v = &d->ev[i];
        v->map = e->type == MSGPACK_OBJECT_MAP;
        cr_assert(v->map || e->type == MSGPACK_OBJECT_ARRAY, "events are tagged maps or arrays");
        if (v->map) {
            cr_assert_gt(e->via.map.size, 0);
            cr_assert(obj_is(&e->via.map.ptr[0].key, "type"), "the tag comes first");
            obj_str(&e->via.map.ptr[0].val, v->tag, sizeof v->tag);
        } else {
            cr_assert_gt(e->via.array.size, 0);
            obj_str(&e->via.array.ptr[0], v->tag, sizeof v->tag);
        }
        /* fields + the tag: the map layout also has lora_name */
        uint32_t want = !strcmp(v->tag, "BlockStored")        ? (v->map ? 8 : 7)
                        : !strcmp(v->tag, "BlockRemoved")     ? 3
                        : !strcmp(v->tag, "AllBlocksCleared") ? 1
                                                              : 0;
        cr_assert_neq(want, 0, "unknown tag %s", v->tag);
        cr_assert_eq(v->map ? e->via.map.size : e->via.array.size, want, "%s has %u fields", v->tag,
                     want);
        if (want == 1)
            continue;
        const msgpack_object *hs = field(e, 1, "block_hashes");
        cr_assert_eq(hs->type, MSGPACK_OBJECT_ARRAY);
        v->n = hs->via.array.size;
        cr_assert_leq(v->n, 64);
        for (uint32_t j = 0; j < v->n; j++) {
            cr_assert_eq(hs->via.array.ptr[j].type, MSGPACK_OBJECT_POSITIVE_INTEGER,
                         "hashes are unsigned integers");
            v->hashes[j] = hs->via.array.ptr[j].via.u64;
        }
        bool stored = !strcmp(v->tag, "BlockStored");
        const msgpack_object *med = field(e, stored ? 6 : 2, "medium");
        v->medium_nil = med->type == MSGPACK_OBJECT_NIL;
        if (!v->medium_nil)
            obj_str(med, v->medium, sizeof v->medium);
        if (!stored)
            continue;
        const msgpack_object *par = field(e, 2, "parent_block_hash");
        v->has_parent = par->type != MSGPACK_OBJECT_NIL;
        if (v->has_parent) {
            cr_assert_eq(par->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
            v->parent = par->via.u64;
        }
        const msgpack_object *tok = field(e, 3, "token_ids");
        cr_assert_eq(tok->type, MSGPACK_OBJECT_ARRAY, "token_ids is a list");
        v->ntok = tok->via.array.size;
        const msgpack_object *bs = field(e, 4, "block_size");
        cr_assert_eq(bs->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        v->block_size = bs->via.u64;
        v->lora_nil = field(e, 5, "lora_id")->type == MSGPACK_OBJECT_NIL;
        if (v->map)
            cr_expect_eq(field(e, 0, "lora_name")->type, MSGPACK_OBJECT_NIL);
    }
    d->rank_nil = a[2].type == MSGPACK_OBJECT_NIL;
    if (!d->rank_nil)
        d->rank = (int64_t)a[2].via.u64;
    msgpack_unpacked_destroy(&u);
}

/* ---- fixtures ---------------------------------------------------------------- */

static kvb_publisher *mk_pub_layout(const ends *e, const char *medium, int64_t rank, uint32_t qcap,
                                    kvb_publisher_layout layout)
{
    kvb_publisher_config cfg;
    kvb_publisher_config_init(&cfg);
    cr_assert_eq(cfg.layout, KVB_PUBLISHER_LAYOUT_MAP, "the map layout is the default");
    cfg.layout = layout;
    cfg.endpoint = e->pub;
    cfg.replay_endpoint = e->replay;
    cfg.topic = "kv";
    cfg.medium = medium;
    cfg.data_parallel_rank = rank;
    if (qcap)
        cfg.queue_batches = qcap;
    kvb_publisher *pub = NULL;
    int rc = kvb_publisher_create(&cfg, &pub);
    cr_assert_eq(rc, 0, "kvb_publisher_create: %s", kvb_strerror(rc));
    return pub;
}

static kvb_publisher *mk_pub(const ends *e, const char *medium, int64_t rank, uint32_t qcap)
{
    return mk_pub_layout(e, medium, rank, qcap, KVB_PUBLISHER_LAYOUT_MAP);
}

static kvb_pool *mk_pool(kvb_publisher *pub, const char *medium, uint32_t n)
{
    kvb_event_config ec;
    kvb_event_config_init(&ec);
    kvb_publisher_event_config(pub, &ec);
    ec.medium = medium;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.events = &ec;
    return tu_pool_cfg(&cfg);
}

/* Ask for a replay from start; collect every [seq, payload] until the end marker.
 * delim: REQ-style request with the empty delimiter frame. Returns the count. */
static int replay(void *dealer, uint64_t start, bool delim, uint64_t *seqs, frame *payloads,
                  int cap)
{
    unsigned char s[8];
    put_be64(start, s);
    if (delim)
        cr_assert_eq(zmq_send(dealer, "", 0, ZMQ_SNDMORE), 0);
    cr_assert_eq(zmq_send(dealer, s, 8, 0), 8);
    int n = 0;
    for (;;) {
        frame f[4];
        int nf = recv_multi(dealer, f, 4);
        cr_assert_eq(nf, delim ? 3 : 2, "replay reply frames: %d", nf);
        const frame *sq = &f[nf - 2];
        frame *pl = &f[nf - 1];
        if (delim)
            cr_expect_eq(f[0].n, 0, "the delimiter comes back");
        cr_assert_eq(sq->n, 8);
        if (be64(sq->p) == UINT64_MAX) {
            cr_expect_eq(pl->n, 0, "end marker: seq -1, empty payload");
            free_frames(f, nf);
            return n;
        }
        cr_assert_lt(n, cap);
        seqs[n] = be64(sq->p);
        payloads[n] = *pl;
        pl->p = NULL;
        n++;
        free_frames(f, nf);
    }
}

/* ---- tests ---------------------------------------------------------------------- */

static void wire_format_and_replay(kvb_publisher_layout layout)
{
    bool map = layout == KVB_PUBLISHER_LAYOUT_MAP;
    ends e;
    make_ends(&e, map ? "wire-map" : "wire-array");
    kvb_publisher *pub = mk_pub_layout(&e, "CPU", 3, 0, layout);
    kvb_pool *gpu = mk_pool(pub, "GPU", 4);
    kvb_pool *cpu = mk_pool(pub, NULL, 4); /* falls back to the publisher's medium */

    kvb_hash c[3];
    tu_chain(0xabcdef, 3, c);
    kvb_block b[3];
    tu_put(gpu, c, 2, b);         /* batch 0: STORED [c0 c1] */
    tu_put(gpu, c + 2, 1, b + 2); /* batch 1: STORED [c2] parent c1 */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kvb_block_release(&b[i]), 0);
    kvb_mutable m[2];
    cr_assert_eq(kvb_pool_allocate(gpu, 2, m, NULL, NULL), 0); /* batch 2: REMOVED [c0] */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    cr_assert_eq(kvb_pool_reset_inactive(gpu), 2); /* batch 3: CLEARED */
    kvb_block x;
    tu_put(cpu, c, 1, &x); /* batch 4: STORED [c0] medium CPU (publisher default) */
    cr_assert_eq(kvb_block_release(&x), 0);
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
    kvb_publisher_stats st;
    cr_assert_eq(kvb_publisher_stats_get(pub, &st), 0);
    cr_expect_eq(st.published, 5);
    cr_expect_eq(st.enqueued, 5);
    cr_expect_eq(st.dropped, 0);
    cr_expect_eq(st.last_seq, 4);

    void *ctx = zmq_ctx_new();
    void *dealer = sock(ctx, ZMQ_DEALER, e.replay);
    uint64_t seqs[16];
    frame pl[16];
    int n = replay(dealer, 0, true, seqs, pl, 16);
    cr_assert_eq(n, 5);
    dbatch d;
    for (int i = 0; i < n; i++)
        cr_expect_eq(seqs[i], (uint64_t)i, "sequence numbers start at 0, +1 per batch");
    decode(&pl[0], &d);
    cr_expect_gt(d.ts, 1.0e9, "wall-clock seconds");
    cr_expect_eq(d.ev[0].map, map, "events in the configured layout");
    cr_expect_not(d.rank_nil);
    cr_expect_eq(d.rank, 3);
    cr_assert_eq(d.nev, 1);
    cr_expect_str_eq(d.ev[0].tag, "BlockStored");
    cr_assert_eq(d.ev[0].n, 2);
    cr_expect_eq(d.ev[0].hashes[0], kvb_hash_current(c[0]), "hashes: kvb_hash_current");
    cr_expect_eq(d.ev[0].hashes[1], kvb_hash_current(c[1]));
    cr_expect_not(d.ev[0].has_parent);
    cr_expect_eq(d.ev[0].ntok, 0, "no tokens callback: []");
    cr_expect_eq(d.ev[0].block_size, 16);
    cr_expect(d.ev[0].lora_nil);
    cr_expect_str_eq(d.ev[0].medium, "GPU");
    decode(&pl[1], &d);
    cr_expect(d.ev[0].has_parent);
    cr_expect_eq(d.ev[0].parent, kvb_hash_current(c[1]));
    decode(&pl[2], &d);
    cr_expect_str_eq(d.ev[0].tag, "BlockRemoved");
    cr_assert_eq(d.ev[0].n, 1);
    cr_expect_eq(d.ev[0].hashes[0], kvb_hash_current(c[0]));
    cr_expect_str_eq(d.ev[0].medium, "GPU");
    decode(&pl[3], &d);
    cr_expect_str_eq(d.ev[0].tag, "AllBlocksCleared");
    decode(&pl[4], &d);
    cr_expect_str_eq(d.ev[0].medium, "CPU");
    for (int i = 0; i < n; i++)
        free(pl[i].p);

    /* from the middle, bare DEALER request (no delimiter) */
    n = replay(dealer, 3, false, seqs, pl, 16);
    cr_expect_eq(n, 2);
    cr_expect_eq(seqs[0], 3);
    for (int i = 0; i < n; i++)
        free(pl[i].p);
    /* past the end: just the end marker */
    n = replay(dealer, 99, true, seqs, pl, 16);
    cr_expect_eq(n, 0);
    /* a malformed request is ignored and counted */
    cr_assert_eq(zmq_send(dealer, "xy", 2, 0), 2);
    n = replay(dealer, 4, true, seqs, pl, 16); /* served after the bad one: ordered */
    cr_expect_eq(n, 1);
    free(pl[0].p);
    cr_assert_eq(kvb_publisher_stats_get(pub, &st), 0);
    cr_expect_eq(st.bad_requests, 1);
    cr_expect_eq(st.replay_requests, 4);
    cr_expect_eq(st.replayed, 5 + 2 + 0 + 1);

    zmq_close(dealer);
    zmq_ctx_term(ctx);
    tu_finish(gpu);
    tu_finish(cpu); /* CLEARED: c0 cached */
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    unlink_ends(&e);
}

Test(publisher, wire_format_and_replay_map_layout)
{
    wire_format_and_replay(KVB_PUBLISHER_LAYOUT_MAP);
}

Test(publisher, wire_format_and_replay_legacy_array_layout)
{
    wire_format_and_replay(KVB_PUBLISHER_LAYOUT_ARRAY);
}

Test(publisher, subscriber_sees_topic_seq_payload_in_order)
{
    ends e;
    make_ends(&e, "sub");
    kvb_publisher *pub = mk_pub(&e, NULL, KVB_PUBLISHER_NO_RANK, 0);
    kvb_pool *p = mk_pool(pub, "GPU", 64);
    void *ctx = zmq_ctx_new();
    void *sub = sock(ctx, ZMQ_SUB, e.pub);
    cr_assert_eq(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "kv", 2), 0);
    int t = 10;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &t, sizeof t);
    /* A subscriber misses what was sent before its subscription arrived (the
     * "slow joiner"): publish until one batch gets through (bounded). */
    uint64_t first = UINT64_MAX;
    frame f[4];
    uint64_t i;
    for (i = 0; i < 5000 && first == UINT64_MAX; i++) {
        kvb_hash h = tu_hash(i);
        kvb_block b;
        tu_put(p, &h, 1, &b);
        cr_assert_eq(kvb_block_release(&b), 0);
        cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
        int nf = recv_multi(sub, f, 4);
        if (nf > 0) {
            cr_assert_eq(nf, 3, "[topic, seq, payload]");
            cr_expect_eq(f[0].n, 2);
            cr_expect_eq(memcmp(f[0].p, "kv", 2), 0);
            cr_assert_eq(f[1].n, 8);
            first = be64(f[1].p);
            dbatch d;
            decode(&f[2], &d);
            cr_expect(d.rank_nil, "no rank: nil");
            free_frames(f, nf);
        }
    }
    cr_assert_neq(first, UINT64_MAX, "no batch reached the subscriber");
    t = 10000;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &t, sizeof t);
    /* from now on every batch arrives, in order */
    for (uint64_t k = 0; k < 50; k++) {
        kvb_hash h = tu_hash(100000 + k);
        kvb_block b;
        tu_put(p, &h, 1, &b);
        cr_assert_eq(kvb_block_release(&b), 0);
    }
    for (uint64_t k = 0; k < 50; k++) {
        int nf = recv_multi(sub, f, 4);
        cr_assert_eq(nf, 3);
        cr_expect_eq(be64(f[1].p), first + 1 + k, "consecutive sequence numbers");
        dbatch d;
        decode(&f[2], &d);
        cr_expect_eq(d.ev[0].hashes[0], kvb_hash_current(tu_hash(100000 + k)));
        free_frames(f, nf);
    }
    zmq_close(sub);
    zmq_ctx_term(ctx);
    tu_finish(p);
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    unlink_ends(&e);
}

Test(publisher, burst_with_a_tiny_queue_drops_and_leaves_gaps)
{
    ends e;
    make_ends(&e, "burst");
    kvb_publisher *pub = mk_pub(&e, NULL, 0, 2);
    /* call the sink directly: 20000 one-event batches, as fast as possible */
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    uint32_t id = 0;
    kvb_event ev = {.type = KVB_EVENT_STORED,
                    .seq = 1,
                    .n = 1,
                    .hashes = &h,
                    .block_ids = &id,
                    .block_size = 16};
    for (int i = 0; i < 20000; i++)
        kvb_publisher_sink(pub, p, &ev, 1);
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);
    kvb_publisher_stats st;
    kvb_publisher_stats_get(pub, &st);
    cr_expect_eq(st.enqueued + st.dropped, 20000, "every batch accepted or counted as dropped");
    cr_expect_eq(st.published, st.enqueued);
    /* the replay buffer holds the last 10000 sent; their seqs are increasing and
     * the numbers of the dropped ones are missing */
    void *ctx = zmq_ctx_new();
    void *dealer = sock(ctx, ZMQ_DEALER, e.replay);
    static uint64_t seqs[10000];
    static frame pl[10000];
    int n = replay(dealer, 0, true, seqs, pl, 10000);
    cr_expect_eq((uint64_t)n, st.published < 10000 ? st.published : 10000);
    for (int i = 1; i < n; i++)
        cr_expect_gt(seqs[i], seqs[i - 1]);
    if (n)
        cr_expect_eq((int64_t)seqs[n - 1], st.last_seq);
    for (int i = 0; i < n; i++)
        free(pl[i].p);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
    tu_finish(p);
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    unlink_ends(&e);
}

Test(publisher, create_errors)
{
    kvb_publisher_config cfg;
    kvb_publisher_config_init(&cfg);
    kvb_publisher *pub = NULL, *pub2 = NULL;
    cr_expect(kvb_publisher_available());
    cr_expect_eq(kvb_publisher_create(&cfg, &pub), -EINVAL, "no endpoint");
    cr_expect_eq(kvb_publisher_create(NULL, &pub), -EINVAL);
    cfg.endpoint = "nonsense://x";
    cr_expect_lt(kvb_publisher_create(&cfg, &pub), 0);
    cfg.endpoint = "ipc:///tmp/x";
    cfg.medium = "a-medium-name-much-longer-than-31-characters";
    cr_expect_eq(kvb_publisher_create(&cfg, &pub), -EINVAL);
    cfg.medium = NULL;
    cfg.layout = (kvb_publisher_layout)2;
    cr_expect_eq(kvb_publisher_create(&cfg, &pub), -EINVAL, "no such layout");
    cfg.layout = KVB_PUBLISHER_LAYOUT_MAP;
    cfg.endpoint = "tcp://127.0.0.1:*";
    cr_assert_eq(kvb_publisher_create(&cfg, &pub), 0, "bind to an ephemeral port");
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    cfg.attach = (kvb_publisher_attach)9;
    cr_expect_eq(kvb_publisher_create(&cfg, &pub), -EINVAL);
    cfg.attach = KVB_PUBLISHER_CONNECT;
    cfg.endpoint = "tcp://127.0.0.1:45714";
    cr_assert_eq(kvb_publisher_create(&cfg, &pub), 0, "connect to a port nobody serves: fine");
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    /* the same TCP port twice */
    cfg.endpoint = "tcp://127.0.0.1:45713";
    cfg.attach = KVB_PUBLISHER_BIND; /* the AUTO rule would connect to it */
    if (kvb_publisher_create(&cfg, &pub) == 0) {
        cr_expect_eq(kvb_publisher_create(&cfg, &pub2), -EADDRINUSE);
        cr_assert_eq(kvb_publisher_destroy(pub), 0);
    }
    cr_expect_eq(kvb_publisher_destroy(NULL), -EINVAL);
    cr_expect_eq(kvb_publisher_flush(NULL, 0), -EINVAL);
    (void)pub2;
}

Test(publisher, offset_by_rank_gives_each_rank_its_endpoints)
{
    /* vLLM's data-parallel convention: one configuration, one publisher per
     * rank, each on its own endpoints; a router finds rank 2's with
     * kvb_publisher_offset_endpoint. */
    ends e;
    make_ends(&e, "dp");
    kvb_publisher_config cfg;
    kvb_publisher_config_init(&cfg);
    cfg.endpoint = e.pub;
    cfg.replay_endpoint = e.replay;
    cfg.topic = "kv";
    cfg.offset_by_rank = true;
    kvb_publisher *r[3] = {NULL, NULL, NULL};
    for (int64_t k = 0; k < 3; k++) {
        cfg.data_parallel_rank = k;
        int rc = kvb_publisher_create(&cfg, &r[k]);
        cr_assert_eq(rc, 0, "rank %lld: %s", (long long)k, kvb_strerror(rc));
    }
    kvb_pool *p = mk_pool(r[2], NULL, 8);
    kvb_hash h = tu_hash(77);
    kvb_block b;
    tu_put(p, &h, 1, &b);
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_assert_eq(kvb_publisher_flush(r[2], 10000), 0);
    char rep2[160];
    cr_assert_gt(kvb_publisher_offset_endpoint(e.replay, 2, rep2, sizeof rep2), 0);
    void *ctx = zmq_ctx_new();
    void *dealer = sock(ctx, ZMQ_DEALER, rep2);
    uint64_t seqs[4];
    frame pl[4];
    int n = replay(dealer, 0, true, seqs, pl, 4);
    cr_assert_eq(n, 1, "rank 2's batch, from rank 2's replay endpoint");
    dbatch d;
    decode(&pl[0], &d);
    cr_expect_not(d.rank_nil);
    cr_expect_eq(d.rank, 2);
    cr_expect_eq(d.ev[0].hashes[0], kvb_hash_current(h));
    free(pl[0].p);
    void *dealer0 = sock(ctx, ZMQ_DEALER, e.replay);
    cr_expect_eq(replay(dealer0, 0, true, seqs, pl, 4), 0, "rank 0 published nothing");
    zmq_close(dealer0);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
    tu_finish(p);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(kvb_publisher_destroy(r[k]), 0);
    unlink_ends(&e);
    for (int k = 1; k < 3; k++) {
        char buf[320];
        snprintf(buf, sizeof buf, "%s_dp%d", e.pub + 6, k);
        unlink(buf);
        snprintf(buf, sizeof buf, "%s_dp%d", e.replay + 6, k);
        unlink(buf);
    }
}

#endif

/* Available with or without ZeroMQ. */
Test(publisher, offset_endpoint_follows_vllm)
{
    char out[64];
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://*:5557", 0, out, sizeof out), 12);
    cr_expect_str_eq(out, "tcp://*:5557", "rank 0 keeps the endpoint");
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://*:5557", 3, out, sizeof out), 12);
    cr_expect_str_eq(out, "tcp://*:5560");
    cr_expect_gt(kvb_publisher_offset_endpoint("tcp://[::1]:9", 991, out, sizeof out), 0);
    cr_expect_str_eq(out, "tcp://[::1]:1000", "the last colon is the port's");
    cr_expect_gt(kvb_publisher_offset_endpoint("inproc://cache", 2, out, sizeof out), 0);
    cr_expect_str_eq(out, "inproc://cache_dp2");
    cr_expect_gt(kvb_publisher_offset_endpoint("ipc:///tmp/kv", 11, out, sizeof out), 0);
    cr_expect_str_eq(out, "ipc:///tmp/kv_dp11");
    cr_expect_gt(kvb_publisher_offset_endpoint("weird://x", 0, out, sizeof out), 0,
                 "rank 0: any scheme, unchanged");
    strcpy(out, "tcp://h:65535");
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:65535", 1, out, sizeof out), -EINVAL);
    cr_expect_str_eq(out, "tcp://h:65535", "errors leave out untouched");
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:*", 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h", 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:", 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:123456", 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("udp://h:1", 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:1", -1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint(NULL, 1, out, sizeof out), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:1", 1, NULL, 8), -EINVAL);
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:9", 1, out, 10), -ENOSPC, "needs 11");
    cr_expect_eq(kvb_publisher_offset_endpoint("tcp://h:9", 1, out, 11), 10);
    cr_expect_str_eq(out, "tcp://h:10");
    strcpy(out, "ipc://a");
    cr_expect_eq(kvb_publisher_offset_endpoint(out, 4, out, sizeof out), 11, "in place");
    cr_expect_str_eq(out, "ipc://a_dp4");
}
