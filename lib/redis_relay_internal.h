/*
 * redis_relay_internal.h - the private layout of a kvb_redis_relay, shared by
 * lib/redis_relay.c (the subscriber callback, producer workers, the public
 * functions), lib/redis_relay_append.c (the queue, appends, verification of
 * the streams' heads) and lib/redis_relay_thread.c (lease, snapshots, the
 * relay thread's states). Included by those files only.
 */
#ifndef KVB_REDIS_RELAY_INTERNAL_H
#define KVB_REDIS_RELAY_INTERNAL_H

#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define RELAY_MAX_RANKS 64
#define RELAY_MY_INCS   16

struct relay_worker {
    char name[KVB_INDEX_NAME_MAX];
    struct relay_worker *next; /* r->workers list (r->mu) */
    /* producer side (subscriber thread, seeded at takeover) */
    struct kvb__rpos pos; /* position of the last entry queued */
    bool overflow;        /* a clear must precede the worker's next entry */
    struct kvb__rlog_rank ranks[RELAY_MAX_RANKS];
    uint32_t n_ranks;
    /* relay thread: grouping of one round */
    uint32_t round_group;
    uint64_t round_stamp;
};

struct relay_item {
    struct relay_worker *w;
    struct kvb__rpos pos;
    bool done;
    void *blob;
    size_t len;
};

/* An appended entry kept for re-appending after Redis lost it (relay thread). */
struct retained {
    char name[KVB_INDEX_NAME_MAX];
    struct kvb__rpos pos, prev; /* its position, and the stream's before it */
    bool have_prev;
    void *blob;
    size_t len;
};

struct kvb_redis_relay {
    kvb_redis_relay_config cfg; /* (c) strings point into url_copy / prefix_copy */
    char *url_copy, *prefix_copy;
    struct kvb__rconn rc; /* relay thread */
    struct kvb__rlog lg;  /* relay thread */
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;                 /* relay thread waits: work, stop */
    pthread_cond_t done_cv;            /* waiters: state changes, items done, snapshots */
    bool stop;                         /* (mu) */
    _Atomic int state;                 /* written under mu; the callback reads it lock-free */
    kvb_index *index;                  /* (mu) the relay's index once ACTIVE */
    struct relay_item *ring;           /* (mu) */
    uint32_t ring_cap, head, count;    /* (mu) */
    uint64_t bytes;                    /* (mu) */
    uint64_t enq_total, done_total;    /* (mu) items ever pushed / finished */
    struct relay_worker **wmap;        /* (mu) name -> worker, open addressing */
    uint32_t wmap_cap, n_workers;      /* (mu) */
    struct relay_worker *workers;      /* (mu) */
    uint64_t snap_requests, snap_done; /* (mu) */
    int snap_result;                   /* (mu) */
    kvb_redis_relay_stats st;          /* (mu) */

    /* relay thread only */
    struct retained *ret; /* ring of the last appended entries, oldest first */
    uint32_t ret_cap, ret_head, ret_count;
    uint64_t ret_bytes;
    uint64_t inc;
    uint64_t my_incs[RELAY_MY_INCS];
    uint32_t n_my_incs;
    int64_t renew_due_ms, lease_deadline_ms, acquire_due_ms, scan_due_ms;
    int64_t snap_last_ms;
    uint64_t since_snapshot;
    bool need_load, need_verify;
    uint64_t round;
};

/* The last entry of a stream, read back with its fields (relay thread). */
struct last_entry {
    bool exists;
    bool ok; /* fields parsed */
    struct kvb__rfields f;
};

/* Whether incarnation inc is this relay's, now or before (relay thread). */
static inline bool is_mine(const kvb_redis_relay *r, uint64_t inc)
{
    if (inc == r->inc)
        return true;
    for (uint32_t i = 0; i < r->n_my_incs; i++)
        if (r->my_incs[i] == inc)
            return true;
    return false;
}

/* ---- redis_relay.c --------------------------------------------------------- */

/* The producer worker of name, created on first sight (caller holds r->mu);
 * NULL for a bad name or out of memory. */
struct relay_worker *kvb__relay_pw_get_locked(kvb_redis_relay *r, const char *name);
/* Encode e into a new malloc'd blob of *len bytes; NULL on failure. */
void *kvb__relay_encode_alloc(const kvb_redis_entry *e, size_t *len);

/* ---- redis_relay_append.c (relay thread) ----------------------------------- */

/* Pop done items from the queue's head; all: every item (fenced, stopping). */
void kvb__relay_pop_done(kvb_redis_relay *r, bool all);
/* The last entry of every stream of r->lg into out[r->lg.n]: 0 or -errno. */
int kvb__relay_read_lasts(kvb_redis_relay *r, struct last_entry *out);
/* Is every stream's last entry ours and where we think it is? 0 yes (fixed
 * up), 1 fenced, negative errno. */
int kvb__relay_verify_streams(kvb_redis_relay *r);
/* One append round: 1 appended, 0 nothing to do, -EPERM not the holder,
 * negative errno. */
int kvb__relay_append_round(kvb_redis_relay *r);

/* ---- redis_relay_thread.c --------------------------------------------------- */

/* The keys of the lease and of the incarnation counter. */
void kvb__relay_lease_keys(kvb_redis_relay *r, char *lease, char *incr, size_t cap);
/* The relay thread (pthread_create's start routine, arg: the relay). */
void *kvb__relay_main(void *arg);

#endif /* KVB_HAVE_REDIS */
#endif /* KVB_REDIS_RELAY_INTERNAL_H */
