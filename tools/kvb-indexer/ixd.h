/*
 * tools/kvb-indexer/ixd.h - what the parts of kvb-indexer share (the daemon is
 * tools/kvb-indexer.c, which has the design): options, the daemon state, the
 * request type, and the functions one part calls in another.
 */
#ifndef KVB_INDEXER_IXD_H
#define KVB_INDEXER_IXD_H

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/args.h"
#include "common/util.h"
#include "kvblock.h"
#include "kvblock/index.h"
#include "kvblock/redis.h"
#include "kvblock/subscriber.h"

#if MHD_VERSION < 0x00097002
typedef int ixd_mhd_result; /* before 0.9.71 handlers returned int */
#define IXD_MHD_YES MHD_YES
#define IXD_MHD_NO  MHD_NO
#else
typedef enum MHD_Result ixd_mhd_result;
#define IXD_MHD_YES MHD_YES
#define IXD_MHD_NO  MHD_NO
#endif

static const char *const prog = "kvb-indexer";

#define IXD_MAX_BODY       (8u << 20)   /* bytes of one request body */
#define IXD_BODY_BUDGET    (64u << 20)  /* bytes of request bodies held at once, all connections */
#define IXD_BIG_BODY       (1u << 20)   /* bodies above this are parsed one at a time */
#define IXD_CONN_MEMORY    (128u << 10) /* MHD per-connection pool: headers and read buffer */
#define IXD_DEFAULT_LISTEN "127.0.0.1:8181"
#define IXD_DRAIN_S        10.0 /* longest wait for in-flight requests at shutdown */

typedef struct ixd_worker {
    char *name, *endpoint, *replay, *topic;
    kvb_wire_kind kind;
    uint32_t block_size; /* 0 = the index's */
} ixd_worker;

typedef enum { IXD_STANDALONE = 0, IXD_RELAY, IXD_REPLICA } ixd_role;

typedef struct ixd_opts {
    char *listen;
    ixd_worker *workers;
    size_t n_workers;
    uint32_t block_size;
    uint64_t seed;
    char *snapshot;
    double stale_after, drop_after; /* < 0: the index's default */
    char *config;
    /* --redis, --role, --redis-prefix (FLEET.md section 8) */
    char *redis, *redis_prefix;
    ixd_role role;
    bool role_given;
    /* relay snapshot cadence: < 0 the library's default, 0 never */
    int64_t snapshot_batches;
    double snapshot_every_s;
} ixd_opts;

#define IXD_EXIT_FENCED 3 /* relay: another relay took the log over (FLEET.md section 8) */

enum { R_MATCH = 0, R_WORKERS, R_SNAPSHOT, R_METRICS, R_HEALTHZ, R_OTHER, R_COUNT };

static const struct {
    const char *path, *method, *label;
} ixd_routes[R_COUNT] = {
    {"/v1/match", "POST", "/v1/match"},       {"/v1/workers", "GET", "/v1/workers"},
    {"/v1/snapshot", "POST", "/v1/snapshot"}, {"/metrics", "GET", "/metrics"},
    {"/healthz", "GET", "/healthz"},          {NULL, NULL, "other"},
};

static const unsigned ixd_codes[] = {200, 400, 404, 405, 409, 413, 500, 503};
#define IXD_NCODES (sizeof ixd_codes / sizeof ixd_codes[0] + 1) /* + "other" */

static const double ixd_buckets[] = {0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002,
                                     0.005,   0.01,   0.05,   0.25,   1.0};
#define IXD_NBUCKETS (sizeof ixd_buckets / sizeof ixd_buckets[0])

/* The daemon (one per process). */
struct ixd_state {
    ixd_opts opts;
    kvb_index *idx; /* standalone only (ixd_index_get) */
    /* The subscriber. Standalone: set before the HTTP threads start. Relay: stored
     * by the activation thread once every worker was added, loaded by the HTTP
     * threads (seq_cst: the store publishes a subscriber that is fully set up);
     * NULL while a standby. */
    _Atomic(kvb_subscriber *) sub;
    kvb_redis_relay *relay;     /* --role relay: created before the HTTP threads start */
    kvb_redis_replica *replica; /* --role replica: likewise */
    /* Set (seq_cst) by the relay thread's on_state callback or the activation thread
     * when the relay is FENCED, before it sends SIGUSR2 to the process: main's
     * sigwait() then exits with IXD_EXIT_FENCED. A SIGUSR2 without it is ignored. */
    atomic_bool fenced;
    atomic_bool stopping; /* main -> the activation thread: give up waiting */
    struct MHD_Daemon *mhd;
    pthread_mutex_t snapshot_lock; /* serialises kvb_index_save calls */
    pthread_mutex_t big_lock;      /* one body over IXD_BIG_BODY parsed at a time */
    int64_t start_ns;
    /* Requests between their first handler call and ixd_completed(). Incremented
     * by a polling thread, decremented by one (possibly another) after the response
     * went out; the main thread's shutdown drain reads it: seq_cst, a handful per
     * request. */
    atomic_int_fast64_t inflight;
    /* Bytes allocated for request bodies (the budget; a counter, no ordering). */
    atomic_uint_fast64_t body_bytes;
    /* Statistics (relaxed: each counter is read on its own by /metrics). */
    atomic_uint_fast64_t requests[R_COUNT][IXD_NCODES];
    atomic_uint_fast64_t aborted[R_COUNT];
    atomic_uint_fast64_t latency[R_COUNT][IXD_NBUCKETS + 1];
    atomic_uint_fast64_t latency_ns_sum[R_COUNT];
};
extern struct ixd_state ixd;

typedef struct ixd_req {
    int64_t start_ns;
    int route;
    unsigned status; /* 0 until a response was queued */
    bool too_large;
    bool busy;     /* the body budget was spent: discard, answer 503 */
    size_t expect; /* Content-Length when given (<= IXD_MAX_BODY), else 0 */
    char *body;
    size_t len, cap;
} ixd_req;

/* ---- options.c ------------------------------------------------------------ */

/* strdup that exits on out of memory. */
char *ixd_strdup(const char *s);
/* The --worker kind's name (vllm, sglang, kvblock). */
const char *ixd_kind_name(kvb_wire_kind k);
/* --listen HOST:PORT into an address (exits 2 when it is not one). */
void ixd_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen, bool *v6);
/* The command line and --config file into o (exits on --help or a usage error). */
void ixd_parse(int argc, char **argv, ixd_opts *o);

/* ---- http.c: libmicrohttpd callbacks, responses, the index of a request ---- */

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t ixd_now_ns(void);
/* The index a request reads in this role, or NULL (a standby relay); every
 * ixd_index_get is paired with an ixd_index_put (the replica pins it). */
kvb_index *ixd_index_get(void);
void ixd_index_put(kvb_index *idx);
/* Queue a response (body malloc'd, taken over) / a JSON object (taken over) /
 * {"error": message}; IXD_MHD_NO when it could not be queued. */
ixd_mhd_result ixd_send(struct MHD_Connection *c, ixd_req *r, unsigned status, char *body,
                        size_t len, const char *ctype, const char *allow);
ixd_mhd_result ixd_send_json(struct MHD_Connection *c, ixd_req *r, unsigned status, json_t *j);
KVBT_PRINTF(4, 5)
ixd_mhd_result ixd_error(struct MHD_Connection *c, ixd_req *r, unsigned status, const char *fmt,
                         ...);
/* MHD's access handler and completion callback (MHD_start_daemon). */
ixd_mhd_result ixd_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                          const char *version, const char *upload_data, size_t *upload_data_size,
                          void **con_cls);
void ixd_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                   enum MHD_RequestTerminationCode toe);

/* ---- json.c: JSON requests ------------------------------------------------- */

/* A dp_rank as JSON (null for KVB_INDEX_NO_RANK). */
json_t *ixd_rank_json(int64_t rank);
/* POST /v1/match. */
ixd_mhd_result ixd_match(struct MHD_Connection *c, ixd_req *r);

/* ---- status.c: /v1/workers, /v1/snapshot, /healthz -------------------------- */

/* The relay's or replica's own state as JSON (and the replica's stats). */
json_t *ixd_role_json(kvb_redis_replica_stats *rst_out);
ixd_mhd_result ixd_workers(struct MHD_Connection *c, ixd_req *r);
/* Write --snapshot (serialised): 0 or a negative errno; *bytes written. */
int ixd_save(size_t *bytes);
ixd_mhd_result ixd_snapshot(struct MHD_Connection *c, ixd_req *r);
ixd_mhd_result ixd_healthz(struct MHD_Connection *c, ixd_req *r);

/* ---- metrics.c: /metrics ---------------------------------------------------- */

ixd_mhd_result ixd_metrics(struct MHD_Connection *c, ixd_req *r);

#endif /* KVB_INDEXER_IXD_H */
