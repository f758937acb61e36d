/*
 * publisher.c - the ZeroMQ publisher of KV events in vLLM's wire format
 * (include/kvblock/publisher.h has the format and the threading model).
 *
 * Built with ZeroMQ and msgpack-c when mk/zmq.mk found them (KVB_HAVE_ZMQ);
 * otherwise the same functions exist and kvb_publisher_create() is -ENOTSUP.
 *
 * Structure:
 *  - sink (any thread): copy the events of one sink call into one allocation
 *    (a pub_batch: header, event descriptors, 64-bit hashes, token ids), then
 *    under pub->mu take the next wire sequence number and push the batch on a
 *    bounded ring of pointers, or drop it (full queue) and count it; the number
 *    is consumed either way so that subscribers see a gap for a drop. The
 *    number and the push must be one step across producers (several pools may
 *    share a publisher), which is why this is a mutex-protected ring rather
 *    than a lock-free MPSC ring: the critical section is a few stores and
 *    never waits. The publisher thread is woken through an eventfd only when
 *    the queue goes from empty to non-empty (write() outside the mutex).
 *  - publisher thread (owns both sockets: ZeroMQ sockets are not thread safe):
 *    pops batches, encodes them with msgpack-c (events as tagged maps, or as
 *    tagged arrays in the legacy layout), sends [topic, seq, payload] on
 *    the PUB socket (which never blocks: at its high-water mark ZeroMQ drops),
 *    keeps the last buffer_batches payloads in a ring for replay, and serves
 *    ROUTER replay requests between batches. zmq_poll on the eventfd and the
 *    ROUTER socket with a 100 ms timeout as a safety net.
 *  - flush: waits on pub->cv until the thread has sent everything queued
 *    before the call. destroy: sets stop, wakes the thread, which sends what is
 *    queued and exits; sockets close with the configured linger.
 * Fields marked (mu) are protected by pub->mu; (thread) fields belong to the
 * publisher thread after create; (const) are set at create.
 */
#include "internal.h"
#include "kvblock/publisher.h"
#include <stdio.h>
#include <string.h>

KVB_API void kvb_publisher_config_init(kvb_publisher_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->data_parallel_rank = KVB_PUBLISHER_NO_RANK;
    cfg->lora_id = -1;
    cfg->queue_batches = 4096;
    cfg->buffer_batches = 10000;
    cfg->hwm = 100000;
    cfg->linger_ms = 1000;
}

KVB_API int kvb_publisher_offset_endpoint(const char *endpoint, int64_t rank, char *out,
                                          size_t out_size)
{
    if (!endpoint || !out || rank < 0)
        return -EINVAL;
    char suffix[32] = "";
    size_t keep = strlen(endpoint); /* bytes of endpoint kept before the suffix */
    if (rank == 0) {
        /* unchanged, whatever the scheme (as vLLM does) */
    } else if (!strncmp(endpoint, "inproc://", 9) || !strncmp(endpoint, "ipc://", 6)) {
        snprintf(suffix, sizeof suffix, "_dp%lld", (long long)rank);
    } else if (!strncmp(endpoint, "tcp://", 6)) {
        const char *colon = strrchr(endpoint + 6, ':');
        if (!colon || !colon[1] || strlen(colon + 1) > 5)
            return -EINVAL;
        long port = 0;
        for (const char *c = colon + 1; *c; c++) {
            if (*c < '0' || *c > '9')
                return -EINVAL;
            port = port * 10 + (*c - '0');
        }
        if (port > 65535 || rank > 65535 - port)
            return -EINVAL;
        keep = (size_t)(colon + 1 - endpoint);
        snprintf(suffix, sizeof suffix, "%ld", port + (long)rank);
    } else {
        return -EINVAL;
    }
    size_t n = keep + strlen(suffix);
    if (n >= out_size || n > INT32_MAX)
        return -ENOSPC;
    memmove(out, endpoint, keep); /* out may be endpoint itself */
    memcpy(out + keep, suffix, strlen(suffix) + 1);
    return (int)n;
}

KVB_API void kvb_publisher_event_config(kvb_publisher *pub, kvb_event_config *cfg)
{
    if (!cfg)
        return;
    cfg->sink = kvb_publisher_sink;
    cfg->user = pub;
}

#ifndef KVB_HAVE_ZMQ

KVB_API bool kvb_publisher_available(void)
{
    return false;
}

KVB_API int kvb_publisher_create(const kvb_publisher_config *cfg, kvb_publisher **out)
{
    (void)cfg;
    (void)out;
    return -ENOTSUP;
}

KVB_API int kvb_publisher_destroy(kvb_publisher *pub)
{
    return pub ? 0 : -EINVAL;
}

KVB_API void kvb_publisher_sink(void *user, const kvb_pool *pool, const kvb_event *events,
                                uint32_t n)
{
    (void)user;
    (void)pool;
    (void)events;
    (void)n;
}

KVB_API int kvb_publisher_flush(kvb_publisher *pub, uint32_t timeout_ms)
{
    (void)timeout_ms;
    return pub ? 0 : -EINVAL;
}

KVB_API int kvb_publisher_stats_get(kvb_publisher *pub, kvb_publisher_stats *out)
{
    (void)pub;
    (void)out;
    return -EINVAL;
}

#else /* KVB_HAVE_ZMQ */

#include <msgpack.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* One event, as copied by the sink. 16 bytes: keeps the hashes after it aligned. */
struct pub_ev {
    uint8_t type;
    uint8_t has_parent;
    uint8_t has_tokens;
    uint8_t pad_;
    uint32_t n;
    uint64_t parent;
};

/* One sink call: allocated as a whole, freed by the publisher thread. */
struct pub_batch {
    uint64_t seq;
    double ts;
    uint32_t nev, block_size;
    uint64_t nh, ntok;
    bool has_medium;
    char medium[KVB_EVENT_MEDIUM_MAX + 1];
    struct pub_ev *ev; /* nev */
    uint64_t *h;       /* nh: kvb_hash_current of every block, event after event */
    uint32_t *tok;     /* ntok: tokens of the events that have them */
    size_t size;
};

struct kvb_publisher {
    /* (const) */
    char *topic;
    size_t topic_len;
    char *medium;
    int64_t rank, lora_id;
    kvb_publisher_layout layout;
    uint32_t qcap, bcap;
    int efd;
    void *ctx, *pub_sock, *replay_sock; /* the sockets belong to the thread */
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* (mu) progress of the thread, for flush */
    /* (mu) */
    struct pub_batch **q;
    uint32_t qhead, qn;
    uint64_t next_seq;
    uint64_t accepted, sent; /* batches accepted by the sink / handled by the thread */
    bool stop;
    kvb_publisher_stats st;

    /* (thread) replay buffer: oldest at rhead */
    uint64_t *rseq;
    char **rdata;
    size_t *rlen;
    uint32_t rhead, rn;
};

KVB_API bool kvb_publisher_available(void)
{
    return true;
}

static int kvb_pub_zerr(void)
{
    int e = zmq_errno();
    return e > 0 && e < 4096 ? -e : -EINVAL; /* ZeroMQ's own codes are huge */
}

static char *kvb_pub_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- sink ------------------------------------------------------------------- */

KVB_API void kvb_publisher_sink(void *user, const kvb_pool *pool, const kvb_event *events,
                                uint32_t n)
{
    kvb_publisher *pub = user;
    if (!pub || !events || n == 0)
        return;
    uint64_t nh = 0, ntok = 0;
    uint32_t bs = kvb_pool_block_size(pool);
    for (uint32_t i = 0; i < n; i++) {
        nh += events[i].n;
        if (events[i].type == KVB_EVENT_STORED && events[i].token_ids)
            ntok += (uint64_t)events[i].n * events[i].block_size;
    }
    size_t size = sizeof(struct pub_batch) + (size_t)n * sizeof(struct pub_ev) +
                  (size_t)nh * sizeof(uint64_t) + (size_t)ntok * sizeof(uint32_t);
    struct pub_batch *b = malloc(size);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (b) {
        b->ts = (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
        b->nev = n;
        b->block_size = bs;
        b->nh = nh;
        b->ntok = ntok;
        b->size = size;
        b->ev = (struct pub_ev *)(b + 1);
        b->h = (uint64_t *)(b->ev + n);
        b->tok = (uint32_t *)(b->h + nh);
        b->has_medium = events[0].medium != NULL;
        if (b->has_medium)
            snprintf(b->medium, sizeof b->medium, "%s", events[0].medium);
        uint64_t hi = 0, ti = 0;
        for (uint32_t i = 0; i < n; i++) {
            const kvb_event *e = &events[i];
            bool tokens = e->type == KVB_EVENT_STORED && e->token_ids;
            b->ev[i] = (struct pub_ev){.type = (uint8_t)e->type,
                                       .has_parent = e->has_parent,
                                       .has_tokens = tokens,
                                       .n = e->n,
                                       .parent = kvb_hash_current(e->parent)};
            for (uint32_t j = 0; j < e->n; j++)
                b->h[hi++] = kvb_hash_current(e->hashes[j]);
            if (tokens) {
                memcpy(b->tok + ti, e->token_ids, (size_t)e->n * e->block_size * sizeof *b->tok);
                ti += (uint64_t)e->n * e->block_size;
            }
        }
    }
    bool wake = false;
    pthread_mutex_lock(&pub->mu);
    uint64_t seq = pub->next_seq++; /* consumed even by a drop: a visible gap */
    if (!b || pub->qn == pub->qcap || pub->stop) {
        pub->st.dropped++;
        pthread_mutex_unlock(&pub->mu);
        free(b);
        return;
    }
    b->seq = seq;
    pub->q[(pub->qhead + pub->qn) % pub->qcap] = b;
    wake = pub->qn++ == 0;
    pub->accepted++;
    pub->st.enqueued++;
    pthread_mutex_unlock(&pub->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(pub->efd, &one, sizeof one);
        (void)w; /* EAGAIN only when the counter is saturated: already awake */
    }
}

/* ---- encoding (publisher thread) ---------------------------------------------- */

static void kvb_pub_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* A map key, or (array layout) nothing: fields go in declaration order. */
static void kvb_pub_key(msgpack_packer *pk, bool map, const char *key)
{
    if (map)
        kvb_pub_str(pk, key);
}

/* The start of an event of nfields fields (the tag not counted): a map with its
 * "type" key, or an array with the tag first. */
static void kvb_pub_event(msgpack_packer *pk, bool map, const char *tag, uint32_t nfields)
{
    if (map) {
        msgpack_pack_map(pk, nfields + 1);
        kvb_pub_str(pk, "type");
    } else {
        msgpack_pack_array(pk, nfields + 1);
    }
    kvb_pub_str(pk, tag);
}

static void kvb_pub_medium(msgpack_packer *pk, const char *medium)
{
    if (medium)
        kvb_pub_str(pk, medium);
    else
        msgpack_pack_nil(pk);
}

static void kvb_pub_encode(const kvb_publisher *pub, const struct pub_batch *b, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const char *medium = b->has_medium ? b->medium : pub->medium;
    bool map = pub->layout == KVB_PUBLISHER_LAYOUT_MAP;
    msgpack_pack_array(&pk, 3);
    msgpack_pack_double(&pk, b->ts);
    msgpack_pack_array(&pk, b->nev);
    uint64_t hi = 0, ti = 0;
    for (uint32_t i = 0; i < b->nev; i++) {
        const struct pub_ev *e = &b->ev[i];
        switch (e->type) {
        case KVB_EVENT_STORED:
            /* vLLM's BlockStored; the map layout also has lora_name (nil) */
            kvb_pub_event(&pk, map, "BlockStored", map ? 7 : 6);
            kvb_pub_key(&pk, map, "block_hashes");
            msgpack_pack_array(&pk, e->n);
            for (uint32_t j = 0; j < e->n; j++)
                msgpack_pack_uint64(&pk, b->h[hi + j]);
            kvb_pub_key(&pk, map, "parent_block_hash");
            if (e->has_parent)
                msgpack_pack_uint64(&pk, e->parent);
            else
                msgpack_pack_nil(&pk);
            kvb_pub_key(&pk, map, "token_ids");
            if (e->has_tokens) {
                uint64_t nt = (uint64_t)e->n * b->block_size;
                msgpack_pack_array(&pk, (size_t)nt);
                for (uint64_t t = 0; t < nt; t++)
                    msgpack_pack_uint32(&pk, b->tok[ti + t]);
                ti += nt;
            } else {
                msgpack_pack_array(&pk, 0);
            }
            kvb_pub_key(&pk, map, "block_size");
            msgpack_pack_uint32(&pk, b->block_size);
            kvb_pub_key(&pk, map, "lora_id");
            if (pub->lora_id >= 0)
                msgpack_pack_int64(&pk, pub->lora_id);
            else
                msgpack_pack_nil(&pk);
            kvb_pub_key(&pk, map, "medium");
            kvb_pub_medium(&pk, medium);
            if (map) {
                kvb_pub_str(&pk, "lora_name");
                msgpack_pack_nil(&pk);
            }
            break;
        case KVB_EVENT_REMOVED:
            kvb_pub_event(&pk, map, "BlockRemoved", 2);
            kvb_pub_key(&pk, map, "block_hashes");
            msgpack_pack_array(&pk, e->n);
            for (uint32_t j = 0; j < e->n; j++)
                msgpack_pack_uint64(&pk, b->h[hi + j]);
            kvb_pub_key(&pk, map, "medium");
            kvb_pub_medium(&pk, medium);
            break;
        default:
            kvb_pub_event(&pk, map, "AllBlocksCleared", 0);
            break;
        }
        hi += e->n;
    }
    if (pub->rank >= 0)
        msgpack_pack_int64(&pk, pub->rank);
    else
        msgpack_pack_nil(&pk);
}

static void kvb_pub_be64(uint64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

/* Keep payload for replay (takes ownership of data). */
static void kvb_pub_keep(kvb_publisher *pub, uint64_t seq, char *data, size_t len)
{
    if (pub->bcap == 0) {
        free(data);
        return;
    }
    uint32_t at;
    if (pub->rn == pub->bcap) {
        at = pub->rhead;
        free(pub->rdata[at]);
        pub->rhead = (pub->rhead + 1) % pub->bcap;
    } else {
        at = (pub->rhead + pub->rn++) % pub->bcap;
    }
    pub->rseq[at] = seq;
    pub->rdata[at] = data;
    pub->rlen[at] = len;
}

static void kvb_pub_send_batch(kvb_publisher *pub, struct pub_batch *b)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    kvb_pub_encode(pub, b, &sb);
    unsigned char seqb[8];
    kvb_pub_be64(b->seq, seqb);
    /* PUB never blocks: past the high-water mark ZeroMQ drops for that subscriber */
    zmq_send(pub->pub_sock, pub->topic, pub->topic_len, ZMQ_SNDMORE);
    zmq_send(pub->pub_sock, seqb, 8, ZMQ_SNDMORE);
    zmq_send(pub->pub_sock, sb.data ? sb.data : "", sb.size, 0);
    size_t len = sb.size;
    char *data = msgpack_sbuffer_release(&sb);
    kvb_pub_keep(pub, b->seq, data, len);
}

/* ---- replay (publisher thread) -------------------------------------------------- */

static void kvb_pub_serve_replay(kvb_publisher *pub)
{
    for (int served = 0; served < 64; served++) {
        unsigned char fr[4][256];
        size_t len[4];
        int nf = 0;
        bool more = true, overlong = false;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, pub->replay_sock, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&m);
                if (nf == 0)
                    return; /* nothing waiting */
                break;
            }
            more = zmq_msg_more(&m);
            if (nf < 4 && zmq_msg_size(&m) <= sizeof fr[0]) {
                len[nf] = zmq_msg_size(&m);
                memcpy(fr[nf], zmq_msg_data(&m), len[nf]);
            } else {
                overlong = true;
            }
            nf++;
            zmq_msg_close(&m);
        }
        /* [identity, "", start] (REQ) or [identity, start] (bare DEALER) */
        bool delim = nf == 3 && len[1] == 0 && len[2] == 8;
        bool bare = nf == 2 && len[1] == 8;
        if (overlong || (!delim && !bare)) {
            pthread_mutex_lock(&pub->mu);
            pub->st.bad_requests++;
            pthread_mutex_unlock(&pub->mu);
            continue;
        }
        const unsigned char *s = fr[nf - 1];
        uint64_t start = 0;
        for (int i = 0; i < 8; i++)
            start = start << 8 | s[i];
        uint64_t replayed = 0;
        for (uint32_t k = 0; k < pub->rn; k++) {
            uint32_t at = (pub->rhead + k) % pub->bcap;
            if (pub->rseq[at] < start)
                continue;
            unsigned char seqb[8];
            kvb_pub_be64(pub->rseq[at], seqb);
            zmq_send(pub->replay_sock, fr[0], len[0], ZMQ_SNDMORE | ZMQ_DONTWAIT);
            if (delim)
                zmq_send(pub->replay_sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(pub->replay_sock, seqb, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(pub->replay_sock, pub->rdata[at], pub->rlen[at], ZMQ_DONTWAIT);
            replayed++;
        }
        /* counted before the end marker leaves, so a client that got it sees them */
        pthread_mutex_lock(&pub->mu);
        pub->st.replay_requests++;
        pub->st.replayed += replayed;
        pthread_mutex_unlock(&pub->mu);
        static const unsigned char end[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        zmq_send(pub->replay_sock, fr[0], len[0], ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (delim)
            zmq_send(pub->replay_sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(pub->replay_sock, end, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(pub->replay_sock, "", 0, ZMQ_DONTWAIT);
    }
}

/* ---- the thread ------------------------------------------------------------------ */

static void *kvb_pub_main(void *arg)
{
    kvb_publisher *pub = arg;
    struct pub_batch *batch[64];
    for (;;) {
        pthread_mutex_lock(&pub->mu);
        uint32_t k = pub->qn < 64 ? pub->qn : 64;
        for (uint32_t i = 0; i < k; i++) {
            batch[i] = pub->q[pub->qhead];
            pub->qhead = (pub->qhead + 1) % pub->qcap;
        }
        pub->qn -= k;
        bool stopping = pub->stop;
        pthread_mutex_unlock(&pub->mu);

        uint64_t events = 0;
        int64_t last = -1;
        for (uint32_t i = 0; i < k; i++) {
            kvb_pub_send_batch(pub, batch[i]);
            events += batch[i]->nev;
            last = (int64_t)batch[i]->seq;
            free(batch[i]);
        }
        if (k) {
            pthread_mutex_lock(&pub->mu);
            pub->sent += k;
            pub->st.published += k;
            pub->st.events += events;
            pub->st.last_seq = last;
            pthread_cond_broadcast(&pub->cv);
            pthread_mutex_unlock(&pub->mu);
        }
        if (stopping && k == 0)
            break;

        zmq_pollitem_t items[2] = {{NULL, pub->efd, ZMQ_POLLIN, 0},
                                   {pub->replay_sock, 0, ZMQ_POLLIN, 0}};
        int ni = pub->replay_sock ? 2 : 1;
        if (zmq_poll(items, ni, k ? 0 : 100) > 0) {
            if (items[0].revents & ZMQ_POLLIN) {
                uint64_t v;
                ssize_t r = read(pub->efd, &v, sizeof v);
                (void)r;
            }
            if (ni == 2 && (items[1].revents & ZMQ_POLLIN))
                kvb_pub_serve_replay(pub);
        }
    }
    return NULL;
}

/* ---- create / destroy / flush / stats -------------------------------------------- */

static bool kvb_pub_binds(const char *ep)
{
    return strchr(ep, '*') || strstr(ep, "::") || !strncmp(ep, "ipc://", 6) ||
           !strncmp(ep, "inproc://", 9);
}

static void kvb_pub_free(kvb_publisher *pub)
{
    if (pub->pub_sock)
        zmq_close(pub->pub_sock);
    if (pub->replay_sock)
        zmq_close(pub->replay_sock);
    if (pub->ctx)
        zmq_ctx_term(pub->ctx);
    if (pub->efd >= 0)
        close(pub->efd);
    for (uint32_t k = 0; k < pub->rn; k++)
        free(pub->rdata[(pub->rhead + k) % pub->bcap]);
    for (uint32_t i = 0; i < pub->qn; i++)
        free(pub->q[(pub->qhead + i) % pub->qcap]);
    free(pub->rseq);
    free(pub->rdata);
    free(pub->rlen);
    free(pub->q);
    free(pub->topic);
    free(pub->medium);
    free(pub);
}

/* *ep shifted for cfg's rank when cfg->offset_by_rank asks for it (into
 * buf[512]); NULL stays NULL. 0 or -EINVAL. */
static int kvb_pub_rank_endpoint(const kvb_publisher_config *cfg, const char **ep, char *buf)
{
    if (!*ep || !cfg->offset_by_rank || cfg->data_parallel_rank <= 0)
        return 0;
    int n = kvb_publisher_offset_endpoint(*ep, cfg->data_parallel_rank, buf, 512);
    if (n < 0)
        return -EINVAL; /* -ENOSPC too: the endpoint is too long to be real */
    *ep = buf;
    return 0;
}

KVB_API int kvb_publisher_create(const kvb_publisher_config *cfg, kvb_publisher **out)
{
    if (!cfg || !out || !cfg->endpoint || !cfg->endpoint[0] || cfg->queue_batches == 0 ||
        (cfg->attach != KVB_PUBLISHER_AUTO && cfg->attach != KVB_PUBLISHER_BIND &&
         cfg->attach != KVB_PUBLISHER_CONNECT) ||
        cfg->hwm < 0 || (cfg->medium && strlen(cfg->medium) > KVB_EVENT_MEDIUM_MAX) ||
        (cfg->layout != KVB_PUBLISHER_LAYOUT_MAP && cfg->layout != KVB_PUBLISHER_LAYOUT_ARRAY))
        return -EINVAL;
    /* vLLM's per-rank endpoints, checked before anything is allocated */
    char ep[512], rep[512];
    const char *endpoint = cfg->endpoint, *replay_endpoint = cfg->replay_endpoint;
    int rc = kvb_pub_rank_endpoint(cfg, &endpoint, ep);
    if (rc == 0)
        rc = kvb_pub_rank_endpoint(cfg, &replay_endpoint, rep);
    if (rc < 0)
        return rc;
    kvb_publisher *pub = calloc(1, sizeof *pub);
    if (!pub)
        return -ENOMEM;
    pub->efd = -1;
    pub->rank = cfg->data_parallel_rank >= 0 ? cfg->data_parallel_rank : -1;
    pub->lora_id = cfg->lora_id;
    pub->layout = cfg->layout;
    pub->qcap = cfg->queue_batches;
    pub->bcap = cfg->buffer_batches;
    pub->st.last_seq = -1;
    pub->topic = kvb_pub_strdup(cfg->topic ? cfg->topic : "");
    pub->medium = cfg->medium ? kvb_pub_strdup(cfg->medium) : NULL;
    pub->q = calloc(pub->qcap, sizeof *pub->q);
    if (pub->bcap) {
        pub->rseq = calloc(pub->bcap, sizeof *pub->rseq);
        pub->rdata = calloc(pub->bcap, sizeof *pub->rdata);
        pub->rlen = calloc(pub->bcap, sizeof *pub->rlen);
    }
    if (!pub->topic || (cfg->medium && !pub->medium) || !pub->q ||
        (pub->bcap && (!pub->rseq || !pub->rdata || !pub->rlen))) {
        kvb_pub_free(pub);
        return -ENOMEM;
    }
    pub->topic_len = strlen(pub->topic);
    pub->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pub->efd < 0) {
        int e = -errno;
        kvb_pub_free(pub);
        return e;
    }
    rc = 0;
    int linger = cfg->linger_ms;
    pub->ctx = zmq_ctx_new();
    if (!pub->ctx) {
        kvb_pub_free(pub);
        return -ENOMEM;
    }
    pub->pub_sock = zmq_socket(pub->ctx, ZMQ_PUB);
    if (!pub->pub_sock)
        goto zfail;
    zmq_setsockopt(pub->pub_sock, ZMQ_SNDHWM, &cfg->hwm, sizeof cfg->hwm);
    zmq_setsockopt(pub->pub_sock, ZMQ_LINGER, &linger, sizeof linger);
    bool bind = cfg->attach == KVB_PUBLISHER_BIND ||
                (cfg->attach == KVB_PUBLISHER_AUTO && kvb_pub_binds(endpoint));
    rc = bind ? zmq_bind(pub->pub_sock, endpoint) : zmq_connect(pub->pub_sock, endpoint);
    if (rc != 0)
        goto zfail;
    if (replay_endpoint) {
        pub->replay_sock = zmq_socket(pub->ctx, ZMQ_ROUTER);
        if (!pub->replay_sock)
            goto zfail;
        /* No send limit on the replay socket: past it ROUTER would silently drop
         * replies (and the end marker) to a client that reads slower than we
         * send. Bounded anyway: one request queues at most buffer_batches + 1
         * messages, and a disconnected client's queue is discarded. */
        int hwm = 0;
        zmq_setsockopt(pub->replay_sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(pub->replay_sock, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_bind(pub->replay_sock, replay_endpoint) != 0)
            goto zfail;
    }
    if (pthread_mutex_init(&pub->mu, NULL) != 0) {
        kvb_pub_free(pub);
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&pub->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&pub->mu);
        kvb_pub_free(pub);
        return -ENOMEM;
    }
    /* pthread_create orders everything above before the thread's first access */
    if (pthread_create(&pub->thread, NULL, kvb_pub_main, pub) != 0) {
        pthread_cond_destroy(&pub->cv);
        pthread_mutex_destroy(&pub->mu);
        kvb_pub_free(pub);
        return -EAGAIN;
    }
    *out = pub;
    return 0;
zfail:
    rc = kvb_pub_zerr();
    kvb_pub_free(pub);
    return rc;
}

KVB_API int kvb_publisher_destroy(kvb_publisher *pub)
{
    if (!pub)
        return -EINVAL;
    pthread_mutex_lock(&pub->mu);
    pub->stop = true;
    pthread_mutex_unlock(&pub->mu);
    uint64_t one = 1;
    ssize_t w = write(pub->efd, &one, sizeof one);
    (void)w;
    pthread_join(pub->thread, NULL);
    pthread_cond_destroy(&pub->cv);
    pthread_mutex_destroy(&pub->mu);
    kvb_pub_free(pub);
    return 0;
}

KVB_API int kvb_publisher_flush(kvb_publisher *pub, uint32_t timeout_ms)
{
    if (!pub)
        return -EINVAL;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
    dl.tv_sec += (time_t)(ns / 1000000000ull);
    dl.tv_nsec = (long)(ns % 1000000000ull);
    int rc = 0;
    pthread_mutex_lock(&pub->mu);
    uint64_t target = pub->accepted;
    while (pub->sent < target && rc == 0)
        if (pthread_cond_timedwait(&pub->cv, &pub->mu, &dl) == ETIMEDOUT && pub->sent < target)
            rc = -ETIMEDOUT;
    pthread_mutex_unlock(&pub->mu);
    return rc;
}

KVB_API int kvb_publisher_stats_get(kvb_publisher *pub, kvb_publisher_stats *out)
{
    if (!pub || !out)
        return -EINVAL;
    pthread_mutex_lock(&pub->mu);
    *out = pub->st;
    pthread_mutex_unlock(&pub->mu);
    return 0;
}

#endif /* KVB_HAVE_ZMQ */
