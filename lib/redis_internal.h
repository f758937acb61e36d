/*
 * redis_internal.h - what the Redis modules share (kvblock/redis.h has the
 * contract): the connection (lib/redis_conn.c: URL, connect, scripts, reply
 * checks) and the log follower (lib/redis_log.c: reading streams, applying
 * entries to one or two indexes with the position / incarnation / ordinal
 * rules; lib/redis_snapshot.c: snapshot metadata), the thread plumbing of a
 * relay or replica, and the little-endian helpers of the entry encoding
 * (lib/redis_codec.c). Used by lib/redis_relay*.c and lib/redis_replica.c.
 * Everything here runs on one object's own thread (the
 * relay's or the replica's); nothing is shared between threads unless a field
 * says so.
 */
#ifndef KVB_REDIS_INTERNAL_H
#define KVB_REDIS_INTERNAL_H

#include "internal.h"
#include "kvblock/redis.h"

/* Little-endian stores and loads of the log entry encoding (redis_codec.c,
 * built with or without hiredis) and of the snapshot metadata
 * (redis_snapshot.c). */
static inline void kvb__rle_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kvb__rle_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t kvb__rle_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static inline uint64_t kvb__rle_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#ifdef KVB_HAVE_REDIS
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>
#include <time.h>

/* Monotonic milliseconds (the clock of every relay and replica timer). */
static inline int64_t kvb__redis_mono_ms(void)
{
    return kvb_index_now_ns() / 1000000;
}

/* The CLOCK_MONOTONIC instant ms from now, for pthread_cond_timedwait on the
 * relay's and replica's condition variables (created with that clock). */
static inline struct timespec kvb__redis_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* ---- the relay's and the replica's own thread ------------------------------ */
/* Each object has a mutex mu, a condition variable cv its thread waits on
 * (CLOCK_MONOTONIC, kvb__redis_cond_init) and a stop flag under mu. */

/* A condition variable on CLOCK_MONOTONIC (kvb__redis_deadline's clock). */
static inline void kvb__redis_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* The thread sleeps on cv for at most ms (not at all when ms <= 0 or *stop):
 * a signal of cv (work, stop) ends the wait early. */
static inline void kvb__redis_wait(pthread_mutex_t *mu, pthread_cond_t *cv, const bool *stop,
                                   int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = kvb__redis_deadline(ms);
    pthread_mutex_lock(mu);
    if (!*stop)
        pthread_cond_timedwait(cv, mu, &ts);
    pthread_mutex_unlock(mu);
}

/* *stop, read under mu. */
static inline bool kvb__redis_stopping(pthread_mutex_t *mu, const bool *stop)
{
    pthread_mutex_lock(mu);
    bool s = *stop;
    pthread_mutex_unlock(mu);
    return s;
}

/* Set *stop under mu, wake the thread and join it. */
static inline void kvb__redis_stop_join(pthread_mutex_t *mu, pthread_cond_t *cv, bool *stop,
                                        pthread_t thread)
{
    pthread_mutex_lock(mu);
    *stop = true;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    pthread_join(thread, NULL);
}

/* Start the object's thread fn(arg), named for top -H, perf and the bench:
 * 0, or a negative errno (nothing started). *started: whether destroy must
 * stop and join it. */
static inline int kvb__redis_thread_start(pthread_t *thread, bool *started, void *(*fn)(void *),
                                          void *arg, const char *name)
{
    int ret = pthread_create(thread, NULL, fn, arg);
    *started = ret == 0;
    if (ret != 0)
        return -ret;
    pthread_setname_np(*thread, name);
    return 0;
}

/* ---- connection (redis_conn.c) ------------------------------------------- */

enum {
    KVB_RS_ACQUIRE = 0, /* KEYS lease incarnation; ARGV min_inc lease_ms -> inc | 0 */
    KVB_RS_RENEW,       /* KEYS lease; ARGV inc lease_ms -> 1 | 0 */
    KVB_RS_RELEASE,     /* KEYS lease; ARGV inc -> 1 | 0 */
    KVB_RS_APPEND,      /* KEYS lease stream; ARGV inc {ep seq sub batch}... */
    KVB_RS_SNAPSHOT,    /* KEYS lease snapshot; ARGV inc meta index -> 1 | -1 */
    KVB_RS_TRIM,        /* KEYS lease stream; ARGV inc minid -> removed | -1 */
    KVB_RS_COUNT
};

struct kvb__rconn {
    /* configuration (c) */
    char host[256];
    int port;
    int db;
    char user[128];
    char password[256];
    bool has_password;
    char prefix[64];
    size_t prefix_len;
    uint32_t io_timeout_ms;
    /* state (owner thread) */
    redisContext *c;
    char sha[KVB_RS_COUNT][48];
    char run_id[48];      /* of the current connection's server */
    char prev_run_id[48]; /* of the previous connection's server ("" before any) */
    uint64_t errors, reconnects, connects;
    char last_error[160];
};

int kvb__rconn_init(struct kvb__rconn *rc, const char *url, const char *prefix,
                    uint32_t io_timeout_ms);
/* Connect (closing any old context): AUTH, SELECT, INFO server (run_id), SCRIPT
 * LOAD of every script. 0 or a negative errno (the context is closed). */
int kvb__rconn_connect(struct kvb__rconn *rc);
void kvb__rconn_close(struct kvb__rconn *rc);
/* A reply we refuse (an error, a shape we do not know): counted, then closed. */
void kvb__rconn_fail(struct kvb__rconn *rc);
bool kvb__rconn_ok(const struct kvb__rconn *rc);
/* Whether the server restarted since the previous connection (run_id changed). */
bool kvb__rconn_server_changed(const struct kvb__rconn *rc);
int kvb__rconn_set_timeout(struct kvb__rconn *rc, uint32_t ms);
/* A command; NULL on a connection or protocol error (counted, context closed).
 * Error replies are returned (type REDIS_REPLY_ERROR). */
redisReply *kvb__rconn_cmd(struct kvb__rconn *rc, int argc, const char **argv, const size_t *lens);
/* Run a script: EVALSHA, then EVAL when the server answers NOSCRIPT. args are
 * KEYS then ARGV. NULL on a connection error. */
redisReply *kvb__rconn_script(struct kvb__rconn *rc, int script, int nkeys, int nargs,
                              const char **args, const size_t *lens);
/* Pipelined scripts: append n calls, then read n replies (NOSCRIPT answers are
 * re-run with EVAL one by one). replies[i] is NULL after a connection error.
 * Returns 0 or a negative errno (connection lost: every reply freed, NULL). */
int kvb__rconn_script_n(struct kvb__rconn *rc, int script, uint32_t n, const int *nkeys,
                        const int *nargs, const char *const *const *args, const size_t *const *lens,
                        redisReply **replies);
/* Key names: prefix + suffix (+ name). out has room for cap bytes; length or -1. */
int kvb__rconn_key(const struct kvb__rconn *rc, const char *suffix, const char *name, char *out,
                   size_t cap);

/* Reply checks: nothing a peer returns is trusted. */
bool kvb__rr_int(const redisReply *r, long long *out);
bool kvb__rr_str(const redisReply *r); /* STRING (bulk) or STATUS */
bool kvb__rr_arr(const redisReply *r, size_t min);
bool kvb__rr_err(const redisReply *r);
/* Strict decimal parse of a bulk string (optional '-', no spaces, no overflow). */
bool kvb__parse_i64(const char *s, size_t len, int64_t *out);
/* "ms-seq" stream ids. */
bool kvb__parse_id(const char *s, size_t len, uint64_t *ms, uint64_t *seq);
int kvb__fmt_id(uint64_t ms, uint64_t seq, char *out, size_t cap);

/* ---- positions ----------------------------------------------------------- */

struct kvb__rpos {
    uint64_t ep;
    int64_t seq;
    uint32_t sub;
};

static inline int kvb__rpos_cmp(struct kvb__rpos a, struct kvb__rpos b)
{
    if (a.ep != b.ep)
        return a.ep < b.ep ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    if (a.sub != b.sub)
        return a.sub < b.sub ? -1 : 1;
    return 0;
}

/* One stream entry's fields, parsed (redis_log.c). */
struct kvb__rfields {
    uint64_t id_ms, id_seq;
    bool have_pos, have_inc, have_n;
    struct kvb__rpos pos;
    uint64_t inc;
    int64_t n;
    const char *batch; /* borrowed from the reply */
    size_t batch_len;
};
/* Parse an entry [id, [field, value, ...]]: false when its shape is wrong. */
bool kvb__rlog_fields(const redisReply *entry, struct kvb__rfields *out);

/* ---- the log follower (redis_log.c) --------------------------------------- */

#define KVB_RLOG_IDX 2 /* indexes a follower applies to (replica: 1; standby relay: 2) */

struct kvb__rlog_rank {
    int64_t rank;
    kvb_index_hashes_kind hashes;
    uint32_t block_size;
};

struct kvb__rlog_worker {
    char name[KVB_INDEX_NAME_MAX];
    char key[KVB_INDEX_NAME_MAX + 80];
    size_t key_len;
    /* last entry read and applied (or covered by the snapshot) */
    uint64_t id_ms, id_seq;
    bool have_pos;
    struct kvb__rpos pos;
    int64_t n; /* ordinal of the last entry read; -1 none */
    /* position fields of the last entry read, applied or skipped (what the append
     * script compares with) */
    bool have_seen;
    struct kvb__rpos seen;
    uint64_t max_inc;
    /* true from a (re)load until the first entry is read: a hole then cannot be
     * cured by reloading again */
    bool fresh;
    bool n_unknown;         /* after a corrupt entry: accept the next ordinal */
    kvb_stream_state state; /* what the log says (LIVE, RESYNCING, STALE) */
    /* ranks seen (streams of the index) */
    struct kvb__rlog_rank *ranks;
    uint32_t n_ranks, cap_ranks;
    /* head of the stream at the last refresh (lag) */
    int64_t head_n;
    uint64_t head_ms;
    int64_t last_relay_ns;
    /* relay only: ids covered by the newest and the previous snapshot (trim) */
    uint64_t snap_ms, snap_seq, trim_ms, trim_seq;
    bool have_snap, have_trim;
};

struct kvb__rlog {
    kvb_index *idx[KVB_RLOG_IDX]; /* NULL entries are skipped */
    kvb_index_config icfg;
    struct kvb__rlog_worker **w; /* open addressing by name, cap a power of two */
    uint32_t cap, n;
    struct kvb__rlog_worker **list; /* insertion order, n entries */
    uint32_t list_cap;
    bool lagging; /* streams are marked LAGGING in the index(es) */
    /* counters */
    uint64_t entries, applied, duplicates, fenced, corrupt, holes, regressions;
    int64_t last_apply_lag_ns, max_apply_lag_ns;
    bool reload_wanted;   /* a hole or regression asks for a snapshot reload */
    uint32_t fresh_holes; /* reloads asked by holes right after a (re)load */
};

int kvb__rlog_init(struct kvb__rlog *lg, const kvb_index_config *icfg);
void kvb__rlog_fini(struct kvb__rlog *lg);  /* frees workers, not the indexes */
void kvb__rlog_reset(struct kvb__rlog *lg); /* forget every worker */
struct kvb__rlog_worker *kvb__rlog_find(struct kvb__rlog *lg, const char *name);
struct kvb__rlog_worker *kvb__rlog_get(struct kvb__rlog *lg, const struct kvb__rconn *rc,
                                       const char *name); /* find or add; NULL: ENOMEM */
/* Worker name of a stream key, or false when the key is not one of ours. */
bool kvb__rlog_name_of_key(const struct kvb__rconn *rc, const char *key, size_t len,
                           char name[KVB_INDEX_NAME_MAX]);
/* Rebuild every worker's ranks from the index's streams (after a load). */
int kvb__rlog_ranks_from_index(struct kvb__rlog *lg, kvb_index *idx);

/* Handle one stream entry read from w's stream: ordinal, incarnation and position
 * checks, decode, apply to every index. Returns 0, or 1 when it found a hole or a
 * regression that asks for a reload (lg->reload_wanted set; nothing applied). */
int kvb__rlog_entry(struct kvb__rlog *lg, struct kvb__rlog_worker *w, const redisReply *entry);
/* Apply an entry the caller already checked and decoded (the active relay's
 * shadow): advances w's position, ordinal, id. */
void kvb__rlog_apply_own(struct kvb__rlog *lg, struct kvb__rlog_worker *w, const kvb_redis_entry *e,
                         uint64_t inc, int64_t n, uint64_t id_ms, uint64_t id_seq);
/* Apply a decoded entry to the indexes only (no position bookkeeping). */
void kvb__rlog_apply_decoded(struct kvb__rlog *lg, struct kvb__rlog_worker *w,
                             const kvb_redis_entry *e);
/* Mark every stream LAGGING (not STALE ones) or restore the log's states. */
void kvb__rlog_set_lagging(struct kvb__rlog *lg, bool lagging);

/* Read every known stream once (XREAD, BLOCK block_ms when > 0, COUNT count):
 * returns the number of entries read (>= 0), or a negative errno (connection).
 * *full: some stream gave count entries (there may be more). */
int kvb__rlog_read(struct kvb__rlog *lg, struct kvb__rconn *rc, uint32_t count, uint32_t block_ms,
                   bool *full);
/* SCAN for stream keys and add the workers not known yet. Count added or errno. */
int kvb__rlog_scan(struct kvb__rlog *lg, struct kvb__rconn *rc);
/* Refresh every stream's head (last entry): lag figures; regression check
 * (a head below what was read: lg->reload_wanted). 0 or a negative errno. */
int kvb__rlog_heads(struct kvb__rlog *lg, struct kvb__rconn *rc);
/* Entries behind the heads, and the stream-clock ms span behind. */
void kvb__rlog_lag(const struct kvb__rlog *lg, uint64_t *entries, double *ms);

/* Snapshot metadata (redis_snapshot.c): every worker's covered id, position, ordinal, incarnation
 * and state, plus the index blob's length and checksum. malloc'd. */
int kvb__rlog_meta_encode(const struct kvb__rlog *lg, uint64_t inc, const void *index,
                          size_t index_len, void **out, size_t *out_len);
/* Load a snapshot (meta + index) into lg: indexes are created with load_mem
 * (count of them = n_idx, the same blob), workers replaced. On success the old
 * indexes are returned in old[] for the caller to retire. -EBADMSG, -ENOMEM,
 * -EINVAL (block size / seed mismatch). */
int kvb__rlog_load(struct kvb__rlog *lg, const struct kvb__rconn *rc, const void *meta,
                   size_t meta_len, const void *index, size_t index_len, int n_idx,
                   kvb_index *old[KVB_RLOG_IDX]);
/* Fetch the snapshot from Redis: 1 loaded; 0 none there, 2 one we refuse
 * (corrupt, another version, block size or seed): both then give the empty
 * state (new empty indexes, every worker forgotten, streams read from their
 * start); negative errno (nothing changed).
 * The replaced indexes come back in old[] for the caller to retire. */
int kvb__rlog_fetch_snapshot(struct kvb__rlog *lg, struct kvb__rconn *rc, int n_idx,
                             uint32_t timeout_ms, kvb_index *old[KVB_RLOG_IDX], uint64_t *bytes);

int64_t kvb__realtime_ns(void);
#endif /* KVB_HAVE_REDIS */

#endif /* KVB_REDIS_INTERNAL_H */
