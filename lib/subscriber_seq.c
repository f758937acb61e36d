/*
 * subscriber_seq.c - the sequence logic of the ZeroMQ subscriber
 * (subscriber.c has the threads and the sockets, FLEET.md section 4 the
 * rules): a worker's streams, applying one batch, replays, the messages of
 * the SUB socket and the connection events. Everything here runs on the
 * subscriber thread.
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
 */
#ifdef KVB_HAVE_ZMQ

#include "subscriber_internal.h"

#include <string.h>

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

/* ---- the worker's streams (thread) ------------------------------------------ */

static bool sub_has_rank(const struct sub_worker *w, int64_t rank)
{
    for (uint32_t i = 0; i < w->n_ranks; i++)
        if (w->ranks[i] == rank)
            return true;
    return false;
}

int kvb__sub_add_rank(struct sub_worker *w, int64_t rank)
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
        (void)kvb__sub_add_rank(w, rank); /* on failure still usable: the index knows it */
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
    rc = kvb__sub_add_rank(w, rank);
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

void kvb__sub_heard_all(kvb_subscriber *s, struct sub_worker *w, bool up, int64_t now)
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

void kvb__sub_ring_reset(struct sub_worker *w)
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
    kvb__sub_ring_reset(w);
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
    if (!kvb__sub_wait(s, w->dealer, ZMQ_POLLOUT, deadline) ||
        zmq_send(w->dealer, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) != 0 ||
        zmq_send(w->dealer, sb, 8, ZMQ_DONTWAIT) != 8)
        return SUB_RP_FAIL;
    bool verified = !verify;
    uint32_t accepted = 0;
    for (;;) {
        if (!kvb__sub_wait(s, w->dealer, ZMQ_POLLIN, deadline < hard ? deadline : hard))
            return SUB_RP_FAIL;
        np = kvb__sub_recv_parts(w->dealer, part);
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
            kvb__sub_close_parts(part, np);
            continue;
        }
        uint64_t useq = sub_be64(zmq_msg_data(&part[at]));
        const void *p = zmq_msg_data(&part[at + 1]);
        size_t len = zmq_msg_size(&part[at + 1]);
        if (useq == UINT64_MAX) { /* the end marker */
            kvb__sub_close_parts(part, np);
            break;
        }
        if (useq >= (uint64_t)INT64_MAX) {
            w->st.bad_messages++;
            kvb__sub_close_parts(part, np);
            continue;
        }
        int64_t seq = (int64_t)useq;
        uint64_t hash = XXH3_64bits(p, len);
        if (!verified) {
            if (seq < start) { /* not asked for */
                sub_count_dup(s, w, seq, hash, p, len);
                kvb__sub_close_parts(part, np);
                continue;
            }
            verified = true;
            if (seq == start) {
                const struct sub_seen *e = &w->ring[(uint64_t)seq & (SUB_RING - 1)];
                kvb__sub_close_parts(part, np);
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
            kvb__sub_close_parts(part, np);
            continue;
        }
        if (w->expected >= 0 && seq < w->expected) {
            sub_count_dup(s, w, seq, hash, p, len);
            kvb__sub_close_parts(part, np);
            continue;
        }
        if (w->expected >= 0 && seq > w->expected) { /* a hole: trimmed buffer, lost replies */
            w->st.replay_failures++;
            sub_clear(s, w, KVB_STREAM_RESYNCING, seq);
        }
        if (accepted == s->cfg.max_replay_batches) {
            kvb__sub_close_parts(part, np);
            return SUB_RP_FAIL;
        }
        accepted++;
        sub_apply(s, w, seq, p, len, hash, SUB_PATH_REPLAY);
        kvb__sub_close_parts(part, np);
    }
    return verified ? SUB_RP_DONE : SUB_RP_UNVERIFIED;
}

static int sub_replay(kvb_subscriber *s, struct sub_worker *w, int64_t limit, bool verify)
{
    if (kvb__sub_dealer_open(s, w) < 0) {
        w->st.replays++;
        return SUB_RP_FAIL;
    }
    int rc = sub_replay_run(s, w, limit, verify);
    kvb__sub_close(&w->dealer);
    return rc;
}

/* Whether the index holds streams of w (state that a reconnect makes unknown). */
static bool sub_has_streams(kvb_subscriber *s, struct sub_worker *w)
{
    uint32_t ids[SUB_MAX_RANKS];
    return sub_ids(s, w, ids) > 0;
}

/* The catch-up replay of everything the buffer holds from expected (proving
 * the incarnation when expected > 0); a proven restart reads the new
 * incarnation from 0, once. Returns SUB_RP_DONE or SUB_RP_FAIL for the last
 * replay, or -1 when there is nothing more to do (stopping, a second
 * restart). */
static int sub_replay_all(kvb_subscriber *s, struct sub_worker *w)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = sub_replay(s, w, INT64_MAX, w->expected > 0);
        if (s->halt)
            return -1;
        if (rc != SUB_RP_RESTART && rc != SUB_RP_UNVERIFIED)
            return rc;
        sub_restart(s, w, -1); /* read the new incarnation from 0 */
    }
    return -1;
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
    int rc = sub_replay_all(s, w);
    if (rc == SUB_RP_DONE) {
        w->st.heard = true;
        w->conn_verified = true;
    } else if (rc == SUB_RP_FAIL) {
        w->st.replay_failures++;
        if (known && sub_has_streams(s, w)) {
            sub_clear(s, w, KVB_STREAM_RESYNCING, -1);
            w->expected = -1;
        } else if (any && w->expected == 0) {
            w->expected = -1; /* nothing came: still any */
        }
    }
}

/* The second catch-up of a connection that has been silent since it came up
 * (SUB_FOLLOWUP_NS). The connection was proven at the first one: a failure
 * now changes nothing. */
void kvb__sub_followup(kvb_subscriber *s, struct sub_worker *w)
{
    bool any = w->expected < 0;
    if (any)
        w->expected = 0; /* cleared after a failed catch-up: take what the buffer holds */
    int rc = sub_replay_all(s, w);
    if (rc == SUB_RP_DONE)
        w->conn_verified = true;
    if (rc == SUB_RP_FAIL) {
        w->st.replay_failures++;
        if (any && w->expected == 0)
            w->expected = -1; /* nothing came: still any */
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
    kvb__sub_heard_all(s, w, true, kvb_index_now_ns());
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

static void sub_down(kvb_subscriber *s, struct sub_worker *w)
{
    if (!w->up || s->halt)
        return;
    /* what the old connection delivered first, then dial again: libzmq ends a
     * session for good after a protocol error (a message over ZMQ_MAXMSGSIZE,
     * a bad frame), and the worker would never come back */
    for (int k = 0; k < SUB_RCVHWM / SUB_BURST + 1; k++) {
        uint64_t before = w->st.messages;
        kvb__sub_read(s, w);
        if (w->st.messages - before < SUB_BURST)
            break;
    }
    if (zmq_disconnect(w->sub, w->endpoint) == 0)
        zmq_connect(w->sub, w->endpoint);
    w->up = false;
    w->followup_at = 0;
    w->down_since = kvb_index_now_ns();
    w->drop_noted = false;
    kvb__sub_heard_all(s, w, false, w->down_since);
}

void kvb__sub_drain_monitor(kvb_subscriber *s, struct sub_worker *w)
{
    zmq_msg_t part[3];
    int np;
    while ((np = kvb__sub_recv_parts(w->mon, part)) > 0) {
        uint16_t ev = 0;
        if (zmq_msg_size(&part[0]) >= 2)
            memcpy(&ev, zmq_msg_data(&part[0]), 2); /* native byte order */
        kvb__sub_close_parts(part, np);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            sub_up(s, w);
        else if (ev == ZMQ_EVENT_DISCONNECTED)
            sub_down(s, w);
    }
}

/* Read up to SUB_BURST messages of w's SUB socket. */
void kvb__sub_read(kvb_subscriber *s, struct sub_worker *w)
{
    for (int k = 0; k < SUB_BURST; k++) {
        zmq_msg_t part[3];
        int np = kvb__sub_recv_parts(w->sub, part);
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
        kvb__sub_close_parts(part, np);
    }
}

#endif /* KVB_HAVE_ZMQ */
