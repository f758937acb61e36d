/*
 * subscriber_internal.h - the private layout of a kvb_subscriber, shared by
 * lib/subscriber.c (the thread, its sockets, workers, commands, the public
 * functions) and lib/subscriber_seq.c (the sequence logic: applying batches,
 * gaps, replays, duplicates, restarts, connections). Included by those two
 * files only, and only when built with ZeroMQ (KVB_HAVE_ZMQ).
 *
 * Fields: (mu) under s->mu; (thread) touched by the subscriber thread only;
 * (const) written before the thread starts.
 */
#ifndef KVB_SUBSCRIBER_INTERNAL_H
#define KVB_SUBSCRIBER_INTERNAL_H

#include "internal.h"
#include "kvblock/subscriber.h"
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

/* Tell the user's callback (on the thread, never under s->mu). */
static inline void sub_note(kvb_subscriber *s, kvb_sub_note note, struct sub_worker *w, int64_t seq,
                            const kvb_index_batch *b, kvb_stream_state state)
{
    if (s->cfg.callback) /* never under s->mu */
        s->cfg.callback(s->cfg.user, note, w->st.name, seq, b, state);
}

/* ---- subscriber.c: sockets (thread) --------------------------------------- */

/* Close *sock if open and set it NULL. */
void kvb__sub_close(void **sock);
/* Open w's DEALER for one replay: 0 or a negative errno. */
int kvb__sub_dealer_open(kvb_subscriber *s, struct sub_worker *w);
/* Receive one whole multipart message without waiting, keeping its first 3
 * parts; returns the number of parts (0: nothing). kvb__sub_close_parts
 * closes what it kept. */
int kvb__sub_recv_parts(void *sock, zmq_msg_t part[3]);
void kvb__sub_close_parts(zmq_msg_t part[3], int n);
/* Wait for events on sock until deadline (kvb_index_now_ns clock); false on
 * timeout or when destroy stops the thread (then s->halt). */
bool kvb__sub_wait(kvb_subscriber *s, void *sock, short events, int64_t deadline);

/* ---- subscriber_seq.c: a worker's streams and sequence (thread) ------------ */

/* Forget every applied batch of w's duplicate ring. */
void kvb__sub_ring_reset(struct sub_worker *w);
/* Remember rank as one of w's streams: 0, -ENOSPC, -ENOMEM. */
int kvb__sub_add_rank(struct sub_worker *w, int64_t rank);
/* kvb_index_stream_heard on every stream of w. */
void kvb__sub_heard_all(kvb_subscriber *s, struct sub_worker *w, bool up, int64_t now);
/* Handle w's connection events (up: catch-up; down: dial again). */
void kvb__sub_drain_monitor(kvb_subscriber *s, struct sub_worker *w);
/* Read up to SUB_BURST messages of w's SUB socket. */
void kvb__sub_read(kvb_subscriber *s, struct sub_worker *w);
/* The second catch-up of a connection silent since it came up. */
void kvb__sub_followup(kvb_subscriber *s, struct sub_worker *w);

#endif /* KVB_SUBSCRIBER_INTERNAL_H */
