/*
 * tools/kvb-indexer.c - the fleet index daemon (FLEET.md section 7).
 *
 * Subscribes to every configured engine's KV-event stream (kvblock/subscriber.h:
 * ZeroMQ SUB per worker, sequence tracking, gap replay, liveness), keeps one
 * kvb_index of the fleet (kvblock/index.h) and answers HTTP/JSON with
 * libmicrohttpd and jansson (no hand-written HTTP or JSON parser):
 *
 *   POST /v1/match     prefix match of one request, from its tokens or router hashes
 *   GET  /v1/workers   per stream: state, last_seq, counters, drops by reason, entries
 *   POST /v1/snapshot  write the snapshot (--snapshot FILE)
 *   GET  /metrics      Prometheus text: the index's metrics plus HTTP counters/latency
 *   GET  /healthz      200 once every configured worker was heard from or marked
 *
 * Threads. The main thread parses the options, starts everything, then waits in
 * sigwait() for SIGTERM/SIGINT. Those signals are blocked before any thread
 * starts (SIGUSR2 too: the relay's fenced notice), so every thread inherits the
 * mask and no signal handler ever runs:
 * nothing async-signal-unsafe can happen in one. The subscriber owns one thread
 * and its sockets. libmicrohttpd runs a small pool of polling threads that call
 * ixd_access() and ixd_completed(); those share only the index (thread safe by
 * contract), the subscriber's info calls (thread safe), the snapshot mutex and
 * relaxed atomic counters (statistics: each is read on its own, nothing is
 * ordered by them, except ixd.inflight whose ordering is documented there).
 *
 * Shutdown (SIGTERM, SIGINT): MHD_quiesce_daemon() stops accepting; requests
 * already being received or answered run to completion (bounded wait on the
 * in-flight count, which ixd_completed() decrements once a response is sent or
 * the connection died); MHD_stop_daemon() then closes idle keep-alive
 * connections; the subscriber is destroyed so the index no longer changes; the
 * snapshot is written when --snapshot is configured; exit 0 (1 when the
 * snapshot cannot be written).
 *
 * Router replicas on Redis (--redis URL --role relay|replica, FLEET.md section 8;
 * the relay and the replica are libkvblock's, kvblock/redis.h):
 *  - relay: kvb_redis_relay_create (a standby that follows the streams), the HTTP
 *    threads, then an activation thread that waits in kvb_redis_relay_wait_active
 *    (200 ms steps, so SIGTERM is noticed) and, once the relay holds the lease with
 *    its index caught up, creates the subscriber on kvb_redis_relay_index() with
 *    kvb_redis_relay_subscriber_cb and stores it in ixd.sub. Until then the daemon
 *    answers /healthz 503 {"status": "standby"} and /v1/match 503 (the library
 *    does not expose the standby's following index). FENCED (the on_state callback
 *    on the relay's thread, or wait_active -ECANCELED) sets ixd.fenced and sends
 *    SIGUSR2 to the process: main leaves sigwait(), shuts down like SIGTERM and
 *    exits IXD_EXIT_FENCED (3). Shutdown: the activation thread is joined, then the
 *    subscriber destroyed, then the relay.
 *  - replica: kvb_redis_replica_create; each request pins the current index with
 *    kvb_redis_replica_acquire around its index calls only (a snapshot reload
 *    waits for pinned indexes) and releases it before the answer is sent.
 *  Requests reach the index through ixd_index_get()/ixd_index_put() in every role.
 *
 * Request bodies are accumulated per connection up to IXD_MAX_BODY (8 MiB);
 * larger ones get 413 (at once when Content-Length says so; a chunked body is
 * read to its end and discarded once it passes the limit, then answered 413).
 * Memory is bounded across connections too: bodies held at once are capped at
 * IXD_BODY_BUDGET (64 MiB; past it a request is read, discarded and answered
 * 503), and bodies over IXD_BIG_BODY (1 MiB) are parsed one at a time, so at most
 * one large jansson tree (about 40 bytes per array element) exists at any time.
 * Every answer, errors included, is a JSON object (metrics: Prometheus text);
 * errors are {"error": "..."} with 400 (bad JSON, wrong types, missing fields,
 * negative or oversize numbers), 404, 405, 409, 413, 500 or 503.
 *
 * 64-bit hashes in JSON. jansson's json_int_t is a signed 64-bit integer and it
 * refuses larger literals ("too big integer"); JSON_DECODE_INT_AS_REAL would lose
 * bits. The rule, documented in --help: a hash is a JSON integer in
 * 0..18446744073709551615, a negative JSON integer -2^63..-1 read as its 64-bit
 * two's complement (SGLang's signed hashes, so -1 == 18446744073709551615), or a
 * decimal string "0".."18446744073709551615". Literals above 2^63-1 are accepted
 * exactly: when the body has a run of 19 or more digits, it is copied once so that
 * every non-negative integer literal in 2^63..2^64-1 becomes the decimal string of
 * the same digits (ixd_quote_big_ints: a lexical pass that tracks strings and
 * escapes, it parses nothing) before jansson parses it. Anything that is still out
 * of range is a 400.
 */
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

static const char *prog = "kvb-indexer";

#define IXD_MAX_BODY       (8u << 20)   /* bytes of one request body */
#define IXD_BODY_BUDGET    (64u << 20)  /* bytes of request bodies held at once, all connections */
#define IXD_BIG_BODY       (1u << 20)   /* bodies above this are parsed one at a time */
#define IXD_CONN_MEMORY    (128u << 10) /* MHD per-connection pool: headers and read buffer */
#define IXD_DEFAULT_LISTEN "127.0.0.1:8181"
#define IXD_DRAIN_S        10.0 /* longest wait for in-flight requests at shutdown */

/* ---- options ---------------------------------------------------------------- */

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

static void ixd_help(FILE *f)
{
    fprintf(f,
            "NAME\n"
            "    kvb-indexer - the fleet KV-cache index daemon: which engine caches which prefix\n"
            "\n"
            "SYNOPSIS\n"
            "    kvb-indexer [--listen HOST:PORT] [--worker SPEC]... [--config FILE]\n"
            "                [--block-size N] [--seed S] [--snapshot FILE]\n"
            "                [--stale-after S] [--drop-after S]\n"
            "    kvb-indexer --redis URL --role relay --worker SPEC... [--listen HOST:PORT]\n"
            "                [--redis-prefix P] [--snapshot-every-batches N]\n"
            "                [--snapshot-every S] [--block-size N] [--seed S]\n"
            "                [--stale-after S] [--drop-after S] [--config FILE]\n"
            "    kvb-indexer --redis URL --role replica [--listen HOST:PORT]\n"
            "                [--redis-prefix P] [--block-size N] [--seed S] [--config FILE]\n"
            "    kvb-indexer -h | --help\n"
            "\n"
            "DESCRIPTION\n"
            "    Subscribes to the KV-event streams (ZeroMQ PUB, vLLM's wire format, both\n"
            "    msgpack layouts) of every configured worker, keeps one index of the\n"
            "    fleet's cached blocks (kvblock/index.h) and answers routers over HTTP/JSON.\n"
            "    Keys are router hashes: kvblock's Dynamo-compatible XXH3 chain of the\n"
            "    request's tokens at --block-size and --seed; vLLM and SGLang events are\n"
            "    re-hashed from their token ids. Per worker endpoint the sequence numbers\n"
            "    are tracked: a gap is replayed from the worker's replay (ROUTER) socket,\n"
            "    a gap that cannot be replayed or a restart clears the worker (its state\n"
            "    says so), AllBlocksCleared clears that rank. A worker whose connection is\n"
            "    down for --stale-after seconds is stale (not matched); after --drop-after\n"
            "    seconds its entries are freed. An idle worker stays live.\n"
            "\n"
            "    Router replicas through Redis (--redis, FLEET.md section 8). A relay\n"
            "    (--role relay) subscribes to the workers as above and appends every\n"
            "    batch it accepts, and every clear, stale and live decision, to one Redis\n"
            "    Stream per worker (PREFIXstream:NAME), under a lease (PREFIXlease, 2 s,\n"
            "    renewed every 0.5 s) and fencing: only the holder's incarnation may\n"
            "    append. Any number of relays run the same command: the first to take\n"
            "    the lease is active, the others are standbys that follow the streams and\n"
            "    take over within about 3 s of the active one's lapse, resuming every\n"
            "    worker from the streams' last sequence number by replay. A relay that\n"
            "    was frozen or cut off past its lease while another took over is fenced:\n"
            "    it never appends again and exits with status 3 (restart it: it comes\n"
            "    back as a standby). The active relay writes the snapshot (PREFIXsnapshot)\n"
            "    every --snapshot-every-batches entries or --snapshot-every seconds and\n"
            "    trims the streams behind it. A replica (--role replica) takes no\n"
            "    --worker: it loads the newest snapshot, follows every stream and serves\n"
            "    /v1/match from memory; cut off from Redis it keeps serving and reports\n"
            "    its streams as lagging (still matched), then catches up.\n"
            "\n"
            "OPTIONS\n"
            "    --listen HOST:PORT\n"
            "        HTTP address (default " IXD_DEFAULT_LISTEN "). HOST is an IPv4 or\n"
            "        [IPv6] address, a name, or * for every address; PORT 0 lets the\n"
            "        system choose (the address is printed on stderr at start).\n"
            "    --worker NAME=ENDPOINT[,replay=ENDPOINT][,kind=KIND][,block-size=N][,topic=T]\n"
            "        Subscribe to a worker (repeatable). ENDPOINT is the engine's ZeroMQ\n"
            "        PUB endpoint (tcp://host:port, ipc://path); replay= its ROUTER\n"
            "        endpoint for gap replay; kind= vllm (default: events carry token ids,\n"
            "        router hashes are recomputed; kvblock publishers that carry tokens\n"
            "        are read the same way), sglang, or kvblock (block hashes are router\n"
            "        hashes already); block-size= the engine's block size (vllm and\n"
            "        sglang: must equal --block-size); topic= subscription prefix\n"
            "        (default: every topic). NAME: 1 to %d bytes of printable ASCII\n"
            "        without ',', '=' or blanks.\n"
            "    --config FILE\n"
            "        Read options from FILE, one per line: `name value` or `--name value`\n"
            "        (e.g. `worker w1=tcp://10.0.0.1:5557`); blank lines and lines\n"
            "        starting with '#' are ignored, as is the rest of a line after ' #'.\n"
            "        Options given on the command line apply after the file's (a value\n"
            "        given twice: the last wins; workers accumulate).\n"
            "    --block-size N\n"
            "        Router block size in tokens, a power of two 1..1024 (default 16).\n"
            "    --seed S\n"
            "        Chain seed of unsalted blocks, 0..2^64-1 (default %u, Dynamo's).\n"
            "    --snapshot FILE\n"
            "        Loaded at start when it exists (a corrupt, truncated or\n"
            "        incompatible one is refused: exit status 1, nothing half-loaded);\n"
            "        written atomically on POST /v1/snapshot and at SIGTERM/SIGINT.\n"
            "        After a load every stream resumes by replay from its watermark.\n"
            "    --stale-after S\n"
            "        Seconds a worker's connection may be down before it is stale\n"
            "        (default 30).\n"
            "    --drop-after S\n"
            "        Seconds after which a stale worker's entries are freed (default\n"
            "        300; at least --stale-after).\n"
            "    --redis URL\n"
            "        redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]: share the index through\n"
            "        Redis; needs --role (and --role needs --redis). --snapshot is refused\n"
            "        with --redis (exit status 2): Redis holds the snapshot, written by\n"
            "        the active relay.\n"
            "    --role relay|replica\n"
            "        relay: needs at least one --worker; a standby until it holds the\n"
            "        lease (then it serves the API like a standalone daemon). replica:\n"
            "        takes no --worker (exit status 2 if given), nor the relay's snapshot\n"
            "        options; --stale-after and --drop-after are the relay's (the streams\n"
            "        carry its decisions). --block-size and --seed must be the relay's\n"
            "        (a snapshot written with others is refused: the streams are read\n"
            "        from their start instead).\n"
            "    --redis-prefix P\n"
            "        Prefix of every Redis key (default kvb:); relays and replicas of one\n"
            "        fleet use the same.\n"
            "    --snapshot-every-batches N\n"
            "        Relay: write the snapshot to Redis after N entries appended (default\n"
            "        100000; 0: never by count).\n"
            "    --snapshot-every S\n"
            "        Relay: write the snapshot after S seconds with appends (default 60;\n"
            "        0: never by time). The streams are trimmed behind the snapshot\n"
            "        before the newest, so a replica's cold start reads one snapshot and\n"
            "        a short tail.\n"
            "    -h, --help\n"
            "        This text.\n"
            "\n"
            "ENDPOINTS\n"
            "    POST /v1/match\n"
            "        {\"tokens\": [t, ...], \"block_size\": 16, \"lora_name\": null,\n"
            "         \"cache_salt\": null, \"top_k\": null}\n"
            "        or {\"hashes\": [h, ...], \"top_k\": null}\n"
            "        -> {\"blocks\": n, \"workers\": [{\"worker\": \"w1\", \"dp_rank\": 0,\n"
            "            \"device\": k, \"host\": k2, \"disk\": k3, \"score\": s}, ...]}\n"
            "        tokens: integers 0..4294967295; block_size (optional) must equal\n"
            "        --block-size; lora_name, cache_salt: strings or null (tokens only).\n"
            "        hashes: router hashes, each a JSON integer 0..18446744073709551615, a\n"
            "        negative JSON integer -9223372036854775808..-1 read as its 64-bit\n"
            "        two's complement (-1 is 18446744073709551615), or a decimal string\n"
            "        \"0\"..\"18446744073709551615\"; integers above 2^63-1 are read exactly\n"
            "        (never through a double). top_k: integer >= 1, or null for all.\n"
            "        blocks: full blocks of the request. workers: every live (worker,\n"
            "        dp_rank) holding a non-empty prefix, sorted by score (device + 0.8 host\n"
            "        + 0.5 disk), then fewest entries, then name and rank; device = longest\n"
            "        prefix on device, host = longest on device or host minus device, disk\n"
            "        = longest on any tier minus both. dp_rank is null when the engine\n"
            "        sends none.\n"
            "    GET /v1/workers\n"
            "        {\"workers\": [per stream: worker, dp_rank, state\n"
            "        (live|resyncing|lagging|stale), last_seq, batches, events, gaps,\n"
            "        replays, restarts, clears, dropped {reason: count}, entries,\n"
            "        engine_map, block_size, hashes, heard_s_ago, connected],\n"
            "        \"endpoints\": [per --worker: name, endpoint, replay, kind, topic,\n"
            "        block_size, connected, heard, expected_seq, messages, bad_messages,\n"
            "        bad_payloads, gaps, replays, replay_failures, restarts]}\n"
            "        With --redis, additive fields: each worker object also has lag_entries\n"
            "        and lag_ms (replica: how far the replica is behind the streams; the\n"
            "        library measures it for all streams together, every stream shows the\n"
            "        same figures), and a top-level \"relay\" object (state standby|active|\n"
            "        lost|fenced, inc, connected, queued, appended, refused, snapshots,\n"
            "        lease_acquired, lease_lost, takeover_ms, ...) or \"replica\" object\n"
            "        (state connecting|synced|lagging, connected, streams, applied,\n"
            "        duplicates, fenced, holes, reloads, snapshot_loads, lag_entries,\n"
            "        lag_ms, apply_lag_ms, ...). A standby relay answers an empty list.\n"
            "    POST /v1/snapshot\n"
            "        Write the snapshot: {\"path\": FILE, \"bytes\": n}; 409 when no\n"
            "        --snapshot is configured, 500 when it cannot be written. Active\n"
            "        relay: the Redis snapshot now, {\"path\": \"PREFIXsnapshot\", \"bytes\":\n"
            "        n}; 503 on a standby; 409 on a replica.\n"
            "    GET /metrics\n"
            "        Prometheus text: the index's metrics, per worker endpoint subscriber\n"
            "        counters, kvb_http_requests_total{endpoint,code} and the histogram\n"
            "        kvb_http_request_duration_seconds{endpoint}; with --redis the relay's\n"
            "        (kvb_redis_relay_*) or the replica's (kvb_redis_replica_*) counters.\n"
            "    GET /healthz\n"
            "        200 {\"status\": \"ok\"} once every configured worker has been heard from\n"
            "        or marked stale; 503 {\"status\": \"waiting\", \"waiting\": [names]} before.\n"
            "        Relay: 503 {\"status\": \"standby\"} until it holds the lease (a standby\n"
            "        answers /v1/match with 503 too: ask the active relay or a replica),\n"
            "        503 \"lost\" or \"fenced\" when it no longer holds it. Replica: 503\n"
            "        {\"status\": \"connecting\"} until it has loaded the snapshot and read\n"
            "        every stream to its end, then 200 \"ok\", or 200 \"lagging\" while cut off\n"
            "        from Redis (it still serves from memory).\n"
            "    Errors: {\"error\": \"...\"} with 400 (bad JSON, wrong types, missing fields,\n"
            "    negative or oversize numbers), 404 (unknown path), 405 (wrong method),\n"
            "    413 (body over 8 MiB), 409, 500, 503.\n"
            "\n"
            "EXAMPLES\n"
            "    kvb-indexer --listen 127.0.0.1:8181 \\\n"
            "        --worker w1=tcp://10.0.0.1:5557,replay=tcp://10.0.0.1:5558 \\\n"
            "        --worker w2=ipc:///run/w2.sock,kind=vllm,block-size=16 \\\n"
            "        --snapshot /var/lib/kvb/index.snap --stale-after 10\n"
            "    curl -s localhost:8181/v1/match -d '{\"tokens\": [1, 2, 3]}'\n"
            "    curl -s localhost:8181/v1/match -d '{\"hashes\": [\"18446744073709551615\"]}'\n"
            "    curl -s localhost:8181/v1/workers; curl -s -X POST localhost:8181/v1/snapshot\n"
            "\n"
            "    Router replicas on Redis: a relay and a standby (the same command, on two\n"
            "    hosts; under a supervisor that restarts them, exit status 3 included),\n"
            "    and replicas next to the routers:\n"
            "    kvb-indexer --redis redis://10.0.0.9:6379/0 --role relay \\\n"
            "        --listen 0.0.0.0:8181 --snapshot-every-batches 50000 --snapshot-every 30 \\\n"
            "        --worker w1=tcp://10.0.0.1:5557,replay=tcp://10.0.0.1:5558 \\\n"
            "        --worker w2=tcp://10.0.0.2:5557,replay=tcp://10.0.0.2:5558\n"
            "    kvb-indexer --redis redis://10.0.0.9:6379/0 --role relay \\\n"
            "        --listen 0.0.0.0:8181 --snapshot-every-batches 50000 --snapshot-every 30 \\\n"
            "        --worker w1=tcp://10.0.0.1:5557,replay=tcp://10.0.0.1:5558 \\\n"
            "        --worker w2=tcp://10.0.0.2:5557,replay=tcp://10.0.0.2:5558   # standby\n"
            "    kvb-indexer --redis redis://10.0.0.9:6379/0 --role replica --listen 127.0.0.1:8182\n"
            "    kvb-indexer --redis redis://10.0.0.9:6379/0 --role replica --listen 127.0.0.1:8183\n"
            "    curl -s localhost:8182/v1/match -d '{\"tokens\": [1, 2, 3]}'\n"
            "\n"
            "EXIT STATUS\n"
            "    0  stopped by SIGTERM or SIGINT (snapshot written when configured), or --help\n"
            "    1  runtime error: the snapshot could not be loaded (corrupt, truncated,\n"
            "       another block size or seed) or written at shutdown, the address could\n"
            "       not be bound, the subscriber could not start, the relay or replica\n"
            "       could not be created (this build has no hiredis)\n"
            "    2  bad usage: unknown option, bad value, unsupported option or\n"
            "       combination (--role without --redis, --redis without --role, a replica\n"
            "       with --worker, a relay without one, --snapshot with --redis)\n"
            "    3  relay fenced: another relay appended to the log after this one lost\n"
            "       its lease (frozen, cut off); it never appends again. Restart it: it\n"
            "       comes back as a standby.\n",
            KVB_INDEX_NAME_MAX - 1, (unsigned)KVB_HASH_DYNAMO_SEED);
}

static KVBT_NORETURN KVBT_PRINTF(1, 2) void ixd_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
    exit(2);
}

static char *ixd_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = kvbt_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static bool ixd_pow2_block(uint64_t v)
{
    return v >= 1 && v <= 1024 && (v & (v - 1)) == 0;
}

static bool ixd_parse_seconds(const char *s, double *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v <= 0 || v > 1e9)
        return false;
    *out = v;
    return true;
}

static const char *ixd_kind_name(kvb_wire_kind k)
{
    switch (k) {
    case KVB_WIRE_VLLM:
        return "vllm";
    case KVB_WIRE_SGLANG:
        return "sglang";
    case KVB_WIRE_KVBLOCK:
        return "kvblock";
    }
    return "unknown";
}

/* Printable ASCII (0x21..0x7e, plus the space when allowed): what the JSON and
 * Prometheus answers can carry as they are. */
static bool ixd_printable(const char *s, bool space)
{
    for (; *s; s++)
        if ((unsigned char)*s > 0x7e || (unsigned char)*s < (space ? 0x20 : 0x21))
            return false;
    return true;
}

/* NAME=ENDPOINT[,replay=ENDPOINT][,kind=K][,block-size=N][,topic=T] */
static void ixd_parse_worker(ixd_opts *o, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec)
        ixd_usage_error("--worker '%s': expected NAME=ENDPOINT[,replay=...][,kind=...]"
                        "[,block-size=N][,topic=T]",
                        spec);
    size_t nlen = (size_t)(eq - spec);
    if (nlen >= KVB_INDEX_NAME_MAX)
        ixd_usage_error("--worker '%s': name longer than %d bytes", spec, KVB_INDEX_NAME_MAX - 1);
    ixd_worker w;
    memset(&w, 0, sizeof w);
    w.kind = KVB_WIRE_VLLM;
    w.name = kvbt_xmalloc(nlen + 1);
    memcpy(w.name, spec, nlen);
    w.name[nlen] = '\0';
    if (strchr(w.name, ',') || !ixd_printable(w.name, false))
        ixd_usage_error("--worker '%s': a name is printable ASCII without ',', '=' or blanks",
                        spec);
    if (!ixd_printable(eq + 1, true))
        ixd_usage_error("--worker '%s': endpoints and topic are printable ASCII", spec);
    char *rest = ixd_strdup(eq + 1);
    char *save = NULL;
    bool first = true, have_kind = false, have_bs = false;
    for (char *tok = strtok_r(rest, ",", &save); tok || first; tok = strtok_r(NULL, ",", &save)) {
        if (first) {
            if (!tok || eq[1] == ',' || !strstr(tok, "://") || strstr(tok, "://") == tok ||
                !strstr(tok, "://")[3])
                ixd_usage_error("--worker '%s': '%s' is not a ZeroMQ endpoint "
                                "(tcp://HOST:PORT, ipc://PATH, ...)",
                                spec, tok ? tok : "");
            w.endpoint = ixd_strdup(tok);
            first = false;
            continue;
        }
        char *v = strchr(tok, '=');
        if (!v)
            ixd_usage_error("--worker '%s': '%s' is not KEY=VALUE", spec, tok);
        *v++ = '\0';
        if (!strcmp(tok, "replay")) {
            if (w.replay || !strstr(v, "://") || strstr(v, "://") == v || !strstr(v, "://")[3])
                ixd_usage_error("--worker '%s': bad or repeated replay endpoint '%s'", spec, v);
            w.replay = ixd_strdup(v);
        } else if (!strcmp(tok, "kind")) {
            if (have_kind)
                ixd_usage_error("--worker '%s': kind given twice", spec);
            have_kind = true;
            if (!strcmp(v, "vllm"))
                w.kind = KVB_WIRE_VLLM;
            else if (!strcmp(v, "sglang"))
                w.kind = KVB_WIRE_SGLANG;
            else if (!strcmp(v, "kvblock"))
                w.kind = KVB_WIRE_KVBLOCK;
            else
                ixd_usage_error("--worker '%s': kind '%s' is not vllm, sglang or kvblock", spec, v);
        } else if (!strcmp(tok, "block-size")) {
            uint64_t bs;
            if (have_bs || !kvbt_parse_u64(v, 1, 1024, &bs) || !ixd_pow2_block(bs))
                ixd_usage_error("--worker '%s': block-size '%s' is not a power of two "
                                "in 1..1024 (or given twice)",
                                spec, v);
            have_bs = true;
            w.block_size = (uint32_t)bs;
        } else if (!strcmp(tok, "topic")) {
            if (w.topic)
                ixd_usage_error("--worker '%s': topic given twice", spec);
            w.topic = ixd_strdup(v);
        } else {
            ixd_usage_error("--worker '%s': unknown key '%s' (replay, kind, block-size, topic)",
                            spec, tok);
        }
    }
    free(rest);
    for (size_t i = 0; i < o->n_workers; i++)
        if (!strcmp(o->workers[i].name, w.name))
            ixd_usage_error("--worker '%s': worker '%s' given twice", spec, w.name);
    o->workers = kvbt_xrealloc(o->workers, (o->n_workers + 1) * sizeof *o->workers);
    o->workers[o->n_workers++] = w;
}

/* HOST:PORT -> address (getaddrinfo); exits 2 on a bad value. */
static void ixd_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen,
                             bool *v6)
{
    const char *colon = strrchr(spec, ':');
    if (!colon)
        ixd_usage_error("--listen '%s': expected HOST:PORT", spec);
    uint64_t port;
    if (!kvbt_parse_u64(colon + 1, 0, 65535, &port))
        ixd_usage_error("--listen '%s': port '%s' is not 0..65535", spec, colon + 1);
    size_t hlen = (size_t)(colon - spec);
    char host[256];
    if (hlen >= sizeof host)
        ixd_usage_error("--listen '%s': host name too long", spec);
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    } else if (strchr(host, ':')) {
        ixd_usage_error("--listen '%s': write an IPv6 address in brackets ([::1]:8181)", spec);
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    const char *h = (!host[0] || !strcmp(host, "*")) ? NULL : host;
    if (!h)
        hints.ai_family = AF_INET;
    int rc = getaddrinfo(h, portstr, &hints, &res);
    if (rc != 0 || !res)
        ixd_usage_error("--listen '%s': %s", spec, gai_strerror(rc));
    if (res->ai_addrlen > sizeof *ss) {
        freeaddrinfo(res);
        ixd_usage_error("--listen '%s': unsupported address", spec);
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (socklen_t)res->ai_addrlen;
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
}

enum {
    OPT_LISTEN = 256,
    OPT_WORKER,
    OPT_CONFIG,
    OPT_BLOCK_SIZE,
    OPT_SEED,
    OPT_SNAPSHOT,
    OPT_STALE,
    OPT_DROP,
    OPT_REDIS,
    OPT_ROLE,
    OPT_REDIS_PREFIX,
    OPT_SNAP_BATCHES,
    OPT_SNAP_EVERY
};

static const struct option ixd_longopts[] = {{"listen", required_argument, 0, OPT_LISTEN},
                                             {"worker", required_argument, 0, OPT_WORKER},
                                             {"config", required_argument, 0, OPT_CONFIG},
                                             {"block-size", required_argument, 0, OPT_BLOCK_SIZE},
                                             {"seed", required_argument, 0, OPT_SEED},
                                             {"snapshot", required_argument, 0, OPT_SNAPSHOT},
                                             {"stale-after", required_argument, 0, OPT_STALE},
                                             {"drop-after", required_argument, 0, OPT_DROP},
                                             {"redis", required_argument, 0, OPT_REDIS},
                                             {"role", required_argument, 0, OPT_ROLE},
                                             {"redis-prefix", required_argument, 0,
                                              OPT_REDIS_PREFIX},
                                             {"snapshot-every-batches", required_argument, 0,
                                              OPT_SNAP_BATCHES},
                                             {"snapshot-every", required_argument, 0,
                                              OPT_SNAP_EVERY},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};

/* Options a config file may set (everything that takes a value but config). */
static bool ixd_file_option(const char *name)
{
    for (const struct option *lo = ixd_longopts; lo->name; lo++)
        if (!strcmp(lo->name, name))
            return lo->has_arg == required_argument && lo->val != OPT_CONFIG;
    return false;
}

typedef struct ixd_argv {
    char **v;
    int n;
} ixd_argv;

static void ixd_argv_push(ixd_argv *a, const char *s)
{
    a->v = kvbt_xrealloc(a->v, (size_t)(a->n + 2) * sizeof *a->v);
    a->v[a->n++] = ixd_strdup(s);
    a->v[a->n] = NULL;
}

/* The file's options as "--name" "value" pairs appended to a. Exits 2 on a bad
 * file (with FILE:LINE), 1 when it cannot be read. */
static void ixd_read_config(const char *path, ixd_argv *a)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --config %s: %s\n", prog, path, strerror(errno));
        exit(errno == ENOENT ? 2 : 1);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)got))
            ixd_usage_error("%s:%u: NUL byte in the line", path, lineno);
        char *s = line;
        for (char *p = s; *p; p++) /* a comment: '#' at the start or after a blank */
            if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        while (*s == ' ' || *s == '\t')
            s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
            *--e = '\0';
        if (!*s)
            continue;
        char *name = s;
        if (name[0] == '-' && name[1] == '-')
            name += 2;
        char *v = name;
        while (*v && *v != ' ' && *v != '\t')
            v++;
        if (*v)
            *v++ = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        if (!ixd_file_option(name))
            ixd_usage_error("%s:%u: unknown option '%s'", path, lineno, name);
        if (!*v)
            ixd_usage_error("%s:%u: option '%s' needs a value", path, lineno, name);
        char opt[80];
        snprintf(opt, sizeof opt, "--%s", name);
        ixd_argv_push(a, opt);
        ixd_argv_push(a, v);
    }
    free(line);
    if (ferror(f)) {
        fprintf(stderr, "%s: --config %s: read error\n", prog, path);
        exit(1);
    }
    fclose(f);
}

static void ixd_parse(int argc, char **argv, ixd_opts *o)
{
    memset(o, 0, sizeof *o);
    o->block_size = 16;
    o->seed = KVB_HASH_DYNAMO_SEED;
    o->stale_after = o->drop_after = -1;
    o->snapshot_batches = -1;
    o->snapshot_every_s = -1;

    /* Pass 1 over a copy of the command line: --help and --config only. */
    ixd_argv cl = {0};
    ixd_argv_push(&cl, prog);
    for (int i = 1; i < argc; i++)
        ixd_argv_push(&cl, argv[i]);
    const char *config = NULL;
    opterr = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(cl.n, cl.v, "h", ixd_longopts, NULL)) != -1) {
        if (c == 'h') {
            ixd_help(stdout);
            exit(0);
        }
        if (c == OPT_CONFIG) {
            if (config)
                ixd_usage_error("--config given twice");
            config = optarg;
        }
    }

    /* Pass 2: the file's options, then the command line's, in that order. */
    ixd_argv all = {0};
    ixd_argv_push(&all, prog);
    if (config) {
        o->config = ixd_strdup(config);
        ixd_read_config(config, &all);
    }
    for (int i = 1; i < argc; i++)
        ixd_argv_push(&all, argv[i]);
    opterr = 1;
    optind = 0;
    uint64_t v;
    while ((c = getopt_long(all.n, all.v, "h", ixd_longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            free(o->listen);
            o->listen = ixd_strdup(optarg);
            break;
        case OPT_WORKER:
            ixd_parse_worker(o, optarg);
            break;
        case OPT_CONFIG:
            break; /* read above */
        case OPT_BLOCK_SIZE:
            if (!kvbt_parse_u64(optarg, 1, 1024, &v) || !ixd_pow2_block(v))
                ixd_usage_error("--block-size '%s': not a power of two in 1..1024", optarg);
            o->block_size = (uint32_t)v;
            break;
        case OPT_SEED:
            if (!kvbt_parse_u64(optarg, 0, UINT64_MAX, &v))
                ixd_usage_error("--seed '%s': not a decimal number in 0..2^64-1", optarg);
            o->seed = v;
            break;
        case OPT_SNAPSHOT:
            if (!*optarg)
                ixd_usage_error("--snapshot: empty path");
            free(o->snapshot);
            o->snapshot = ixd_strdup(optarg);
            break;
        case OPT_STALE:
        case OPT_DROP:
            if (!ixd_parse_seconds(optarg, c == OPT_STALE ? &o->stale_after : &o->drop_after))
                ixd_usage_error("--%s '%s': not a positive number of seconds",
                                c == OPT_STALE ? "stale-after" : "drop-after", optarg);
            break;
        case OPT_REDIS:
            if (strncmp(optarg, "redis://", 8) != 0 || !optarg[8] || !ixd_printable(optarg, false))
                ixd_usage_error("--redis '%s': expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
                                optarg);
            free(o->redis);
            o->redis = ixd_strdup(optarg);
            break;
        case OPT_ROLE:
            if (!strcmp(optarg, "relay"))
                o->role = IXD_RELAY;
            else if (!strcmp(optarg, "replica"))
                o->role = IXD_REPLICA;
            else
                ixd_usage_error("--role '%s': relay or replica", optarg);
            o->role_given = true;
            break;
        case OPT_REDIS_PREFIX:
            if (!*optarg || strlen(optarg) > 64 || !ixd_printable(optarg, false))
                ixd_usage_error("--redis-prefix '%s': 1 to 64 bytes of printable ASCII without "
                                "blanks",
                                optarg);
            free(o->redis_prefix);
            o->redis_prefix = ixd_strdup(optarg);
            break;
        case OPT_SNAP_BATCHES:
            if (!kvbt_parse_u64(optarg, 0, UINT32_MAX, &v))
                ixd_usage_error("--snapshot-every-batches '%s': not an integer in 0..4294967295",
                                optarg);
            o->snapshot_batches = (int64_t)v;
            break;
        case OPT_SNAP_EVERY: {
            double sv = 0;
            if (strcmp(optarg, "0") != 0 &&
                (!ixd_parse_seconds(optarg, &sv) || sv * 1000.0 > (double)UINT32_MAX || sv < 0.001))
                ixd_usage_error("--snapshot-every '%s': not a number of seconds in 0.001..4294967 "
                                "(or 0: never)",
                                optarg);
            o->snapshot_every_s = sv;
            break;
        }
        case 'h':
            ixd_help(stdout);
            exit(0);
        default: /* getopt printed what was wrong */
            fprintf(stderr, "Try '%s --help' for more information.\n", prog);
            exit(2);
        }
    }
    if (optind < all.n)
        ixd_usage_error("unexpected argument '%s'", all.v[optind]);
    if (!o->listen)
        o->listen = ixd_strdup(IXD_DEFAULT_LISTEN);
    if (o->role_given && !o->redis)
        ixd_usage_error("--role needs --redis URL (router replicas share the index through "
                        "Redis)");
    if (o->redis && !o->role_given)
        ixd_usage_error("--redis needs --role relay or --role replica");
    if (!o->redis && (o->redis_prefix || o->snapshot_batches >= 0 || o->snapshot_every_s >= 0))
        ixd_usage_error("--redis-prefix, --snapshot-every-batches and --snapshot-every apply "
                        "with --redis only");
    if (o->redis && o->snapshot)
        ixd_usage_error("--snapshot FILE does not apply with --redis: Redis holds the snapshot "
                        "(the active relay writes it; see --snapshot-every-batches, "
                        "--snapshot-every)");
    if (o->role == IXD_REPLICA && o->n_workers)
        ixd_usage_error("--role replica takes no --worker: a replica learns the fleet from "
                        "Redis (give the workers to the relays)");
    if (o->role == IXD_REPLICA && (o->snapshot_batches >= 0 || o->snapshot_every_s >= 0))
        ixd_usage_error("--snapshot-every-batches and --snapshot-every are relay options "
                        "(the active relay writes the snapshot)");
    if (o->role == IXD_RELAY && !o->n_workers)
        ixd_usage_error("--role relay needs at least one --worker");
    for (size_t i = 0; i < o->n_workers; i++) {
        ixd_worker *w = &o->workers[i];
        if (w->kind != KVB_WIRE_KVBLOCK && w->block_size && w->block_size != o->block_size)
            ixd_usage_error("--worker %s: kind=%s needs block-size=%u (--block-size): its "
                            "router hashes are recomputed from token ids at the index's "
                            "block size",
                            w->name, ixd_kind_name(w->kind), o->block_size);
    }
    for (int i = 0; i < cl.n; i++)
        free(cl.v[i]);
    free(cl.v);
    for (int i = 0; i < all.n; i++)
        free(all.v[i]);
    free(all.v);
}

/* ---- daemon state --------------------------------------------------------- */

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

static struct {
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
} ixd = {.snapshot_lock = PTHREAD_MUTEX_INITIALIZER, .big_lock = PTHREAD_MUTEX_INITIALIZER};

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

/* Free a request's body and give its bytes back to the budget. */
static void ixd_body_free(ixd_req *r)
{
    if (r->cap)
        atomic_fetch_sub_explicit(&ixd.body_bytes, r->cap, memory_order_relaxed);
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

static int64_t ixd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the index a request reads -------------------------------------------------- */

/* Standalone: the daemon's index. Relay: the relay's once it has been ACTIVE (NULL
 * before: a standby has no index to serve; the relay keeps it until it is
 * destroyed, after the HTTP threads stopped). Replica: the replica's current index,
 * pinned (kvb_redis_replica_acquire) until ixd_index_put: a snapshot reload waits
 * for it, so a request holds it only around its index calls. */
static kvb_index *ixd_index_get(void)
{
    switch (ixd.opts.role) {
    case IXD_RELAY:
        return kvb_redis_relay_index(ixd.relay);
    case IXD_REPLICA:
        return kvb_redis_replica_acquire(ixd.replica);
    default:
        return ixd.idx;
    }
}

static void ixd_index_put(kvb_index *idx)
{
    if (ixd.opts.role == IXD_REPLICA && idx)
        kvb_redis_replica_release(ixd.replica, idx);
}

/* ---- responses ---------------------------------------------------------------- */

/* Queue body (malloc'd, taken over and freed by MHD) with the status. */
static ixd_mhd_result ixd_send(struct MHD_Connection *c, ixd_req *r, unsigned status, char *body,
                               size_t len, const char *ctype, const char *allow)
{
    if (!body)
        return IXD_MHD_NO; /* out of memory: MHD closes the connection */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return IXD_MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    ixd_mhd_result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (rc == IXD_MHD_YES)
        r->status = status;
    return rc;
}

static ixd_mhd_result ixd_send_json(struct MHD_Connection *c, ixd_req *r, unsigned status,
                                    json_t *j)
{
    if (!j)
        return IXD_MHD_NO;
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    return ixd_send(c, r, status, s, s ? strlen(s) : 0, "application/json", NULL);
}

static KVBT_PRINTF(4, 5) ixd_mhd_result
    ixd_error(struct MHD_Connection *c, ixd_req *r, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ixd_send_json(c, r, status, json_pack("{s:s}", "error", msg));
}

/* ---- text buffer (metrics) -------------------------------------------------------- */

typedef struct ixd_buf {
    char *p;
    size_t len, cap;
    bool oom;
} ixd_buf;

static bool ixd_buf_reserve(ixd_buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static KVBT_PRINTF(2, 3) void ixd_buf_printf(ixd_buf *b, const char *fmt, ...)
{
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap > b->len ? b->cap - b->len : 0;
        int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (!ixd_buf_reserve(b, (size_t)n))
            return;
    }
}

/* ---- JSON helpers ---------------------------------------------------------------- */

/* Non-negative integer literals in 2^63..2^64-1 outside strings become decimal
 * strings ("..."): jansson's integers are int64_t (see the file comment). A lexical
 * pass only: strings (with their escapes) are copied as they are, so is everything
 * else; the result is parsed by jansson like the original. Returns a malloc'd copy
 * (NULL on out of memory). */
static char *ixd_quote_big_ints(const char *in, size_t len, size_t *outlen)
{
    /* each quoted literal (>= 19 digits) grows by 2 bytes: at most len / 19 * 2 */
    size_t cap = len + len / 9 + 2;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        char ch = in[i];
        if (in_str) {
            out[o++] = ch;
            i++;
            if (ch == '\\' && i < len)
                out[o++] = in[i++];
            else if (ch == '"')
                in_str = false;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            out[o++] = in[i++];
            continue;
        }
        bool starts_number =
            ch >= '0' && ch <= '9' &&
            (i == 0 ||
             !((in[i - 1] >= '0' && in[i - 1] <= '9') || in[i - 1] == '-' || in[i - 1] == '.' ||
               in[i - 1] == 'e' || in[i - 1] == 'E' || in[i - 1] == '+' ||
               (in[i - 1] >= 'a' && in[i - 1] <= 'z') || (in[i - 1] >= 'A' && in[i - 1] <= 'Z')));
        if (!starts_number) {
            out[o++] = in[i++];
            continue;
        }
        size_t j = i;
        while (j < len && in[j] >= '0' && in[j] <= '9')
            j++;
        bool integer = !(j < len && (in[j] == '.' || in[j] == 'e' || in[j] == 'E'));
        size_t nd = j - i;
        bool quote = false;
        if (integer && in[i] != '0' && nd >= 19 && nd <= 20) {
            char digits[21];
            memcpy(digits, in + i, nd);
            digits[nd] = '\0';
            uint64_t v;
            quote = kvbt_parse_u64(digits, (uint64_t)INT64_MAX + 1, UINT64_MAX, &v);
        }
        if (quote)
            out[o++] = '"';
        memcpy(out + o, in + i, nd);
        o += nd;
        if (quote)
            out[o++] = '"';
        i = j;
    }
    *outlen = o;
    return out;
}

/* Whether the text has a run of 19 or more digits (a literal that may not fit
 * in int64_t; inside a string too: then the rewrite below changes nothing). */
static bool ixd_has_long_digits(const char *s, size_t len)
{
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        run = (s[i] >= '0' && s[i] <= '9') ? run + 1 : 0;
        if (run >= 19)
            return true;
    }
    return false;
}

static json_t *ixd_parse_body(const ixd_req *r, char *err, size_t errcap, unsigned *status)
{
    *status = 400;
    json_error_t je;
    const char *body = r->body ? r->body : "";
    json_t *j = NULL;
    if (ixd_has_long_digits(body, r->len)) {
        /* u64 hashes written as plain integers (Python's json, the FleetClient) are
         * half of the time above 2^63 - 1: quote them before the one parse rather
         * than parse up to jansson's overflow error and again */
        size_t n;
        char *q = ixd_quote_big_ints(body, r->len, &n);
        if (!q) {
            snprintf(err, errcap, "out of memory");
            *status = 500;
            return NULL;
        }
        j = json_loadb(q, n, JSON_REJECT_DUPLICATES, &je);
        free(q);
    } else {
        j = json_loadb(body, r->len, JSON_REJECT_DUPLICATES, &je);
    }
    if (!j) {
        snprintf(err, errcap, "bad JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errcap, "bad request: the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* A u64 from a JSON integer (negative: two's complement) or a decimal string. */
static bool ixd_json_u64(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    if (json_is_string(v) && json_string_length(v) <= 20)
        return kvbt_parse_u64(json_string_value(v), 0, UINT64_MAX, out);
    return false;
}

static json_t *ixd_rank_json(int64_t rank)
{
    return rank < 0 ? json_null() : json_integer(rank);
}

/* ---- POST /v1/match ------------------------------------------------------------ */

#define IXD_STACK_RESULTS 64

static ixd_mhd_result ixd_match_parsed(struct MHD_Connection *c, ixd_req *r)
{
    char err[600];
    unsigned status;
    json_t *j = ixd_parse_body(r, err, sizeof err, &status);
    if (!j)
        return ixd_error(c, r, status, "%s", err);

    ixd_mhd_result ret;
    uint32_t *tokens = NULL;
    uint64_t *hashes = NULL;
    kvb_index *idx = NULL;
    kvb_index_result stack_res[IXD_STACK_RESULTS], *res = stack_res;
    json_t *jt = json_object_get(j, "tokens"), *jh = json_object_get(j, "hashes");
    json_t *jbs = json_object_get(j, "block_size"), *jk = json_object_get(j, "top_k");
    json_t *jl = json_object_get(j, "lora_name"), *js = json_object_get(j, "cache_salt");
    if (jt && json_is_null(jt))
        jt = NULL;
    if (jh && json_is_null(jh))
        jh = NULL;

#define BAD(...)                                                                                   \
    do {                                                                                           \
        ret = ixd_error(c, r, 400, __VA_ARGS__);                                                   \
        goto out;                                                                                  \
    } while (0)

    if (!jt == !jh)
        BAD(jt ? "give either \"tokens\" or \"hashes\", not both"
               : "missing field: \"tokens\" (token ids) or \"hashes\" (router hashes)");
    if ((jt && !json_is_array(jt)) || (jh && !json_is_array(jh)))
        BAD("\"%s\" must be an array", jt ? "tokens" : "hashes");

    uint32_t top_k = UINT32_MAX;
    if (jk && !json_is_null(jk)) {
        if (!json_is_integer(jk) || json_integer_value(jk) < 1 ||
            json_integer_value(jk) > UINT32_MAX)
            BAD("\"top_k\" must be an integer in 1..4294967295 or null");
        top_k = (uint32_t)json_integer_value(jk);
    }
    if (jbs && !json_is_null(jbs)) {
        /* the index's block size is --block-size (every role creates its index so) */
        if (!json_is_integer(jbs) || json_integer_value(jbs) < 1 ||
            json_integer_value(jbs) > UINT32_MAX)
            BAD("\"block_size\" must be a positive integer");
        if ((uint64_t)json_integer_value(jbs) != ixd.opts.block_size)
            BAD("\"block_size\" %" JSON_INTEGER_FORMAT " differs from the index's block size %u",
                json_integer_value(jbs), ixd.opts.block_size);
    }
    const char *lora = NULL, *salt = NULL;
    if (jl && !json_is_null(jl)) {
        if (!json_is_string(jl))
            BAD("\"lora_name\" must be a string or null");
        lora = json_string_value(jl);
    }
    if (js && !json_is_null(js)) {
        if (!json_is_string(js))
            BAD("\"cache_salt\" must be a string or null");
        salt = json_string_value(js);
    }
    if (jh && (lora || salt))
        BAD("\"lora_name\" and \"cache_salt\" apply to \"tokens\" only: router hashes "
            "already include them");

    json_t *arr = jt ? jt : jh;
    size_t n = json_array_size(arr);
    if (n > UINT32_MAX)
        BAD("too many elements");
    if (jt) {
        tokens = malloc((n ? n : 1) * sizeof *tokens);
        if (!tokens) {
            ret = ixd_error(c, r, 500, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > UINT32_MAX)
                BAD("tokens[%zu] must be an integer in 0..4294967295", i);
            tokens[i] = (uint32_t)json_integer_value(v);
        }
    } else {
        hashes = malloc((n ? n : 1) * sizeof *hashes);
        if (!hashes) {
            ret = ixd_error(c, r, 500, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (!ixd_json_u64(json_array_get(arr, i), &hashes[i]))
                BAD("hashes[%zu] must be an integer in -2^63..2^64-1 (negative: two's "
                    "complement) or a decimal string \"0\"..\"18446744073709551615\"",
                    i);
    }

    idx = ixd_index_get();
    if (!idx) {
        ret = ixd_error(c, r, 503,
                        "standby relay: it does not hold the lease and serves no index; ask "
                        "the active relay or a replica");
        goto out;
    }
    /* Room for every stream (or top_k); retried when streams appeared meanwhile. */
    int nstreams = kvb_index_streams(idx, NULL, 0);
    uint32_t cap = (uint32_t)(nstreams > 0 ? nstreams : 0) + 8;
    if (cap > top_k)
        cap = top_k;
    uint32_t blocks = (uint32_t)n;
    int got;
    for (;;) {
        if (cap > IXD_STACK_RESULTS) {
            kvb_index_result *nr = realloc(res == stack_res ? NULL : res, cap * sizeof *res);
            if (!nr) {
                ret = ixd_error(c, r, 500, "out of memory");
                goto out;
            }
            res = nr;
        }
        if (jt)
            got = kvb_index_match_tokens(idx, tokens, n, lora, salt, res, cap, &blocks);
        else
            got = kvb_index_match(idx, hashes, (uint32_t)n, res, cap);
        if (got < 0) {
            ret = got == -EINVAL ? ixd_error(c, r, 400, "match: %s", kvb_strerror(got))
                                 : ixd_error(c, r, 500, "match: %s", kvb_strerror(got));
            goto out;
        }
        if ((uint32_t)got <= cap || cap >= top_k)
            break;
        cap = (uint32_t)got < top_k ? (uint32_t)got : top_k;
    }
    uint32_t shown = (uint32_t)got < cap ? (uint32_t)got : cap;
    ixd_index_put(idx); /* the results are copies */
    idx = NULL;

    json_t *ws = json_array();
    for (uint32_t i = 0; ws && i < shown; i++) {
        const kvb_index_result *x = &res[i];
        json_array_append_new(ws, json_pack("{s:s,s:o,s:I,s:I,s:I,s:f}", "worker", x->worker,
                                            "dp_rank", ixd_rank_json(x->dp_rank), "device",
                                            (json_int_t)x->device, "host", (json_int_t)x->host,
                                            "disk", (json_int_t)x->disk, "score", x->score));
    }
    ret = ixd_send_json(
        c, r, 200,
        json_pack("{s:I,s:o}", "blocks", (json_int_t)blocks, "workers", ws ? ws : json_array()));
#undef BAD
out:
    ixd_index_put(idx);
    json_decref(j);
    free(tokens);
    free(hashes);
    if (res != stack_res)
        free(res);
    return ret;
}

static ixd_mhd_result ixd_match(struct MHD_Connection *c, ixd_req *r)
{
    if (r->len <= IXD_BIG_BODY)
        return ixd_match_parsed(c, r);
    pthread_mutex_lock(&ixd.big_lock);
    ixd_mhd_result rc = ixd_match_parsed(c, r);
    pthread_mutex_unlock(&ixd.big_lock);
    return rc;
}

/* ---- GET /v1/workers ------------------------------------------------------------ */

static uint32_t *ixd_stream_ids(kvb_index *idx, int *n_out)
{
    uint32_t cap = 64;
    for (;;) {
        uint32_t *ids = malloc(cap * sizeof *ids);
        if (!ids)
            return NULL;
        int n = kvb_index_streams(idx, ids, cap);
        if (n < 0) {
            free(ids);
            return NULL;
        }
        if ((uint32_t)n <= cap) {
            *n_out = n;
            return ids;
        }
        free(ids);
        cap = (uint32_t)n + 16;
    }
}

/* The relay's or the replica's state and counters (the "relay" / "replica" objects
 * of /v1/workers); NULL standalone. */
static json_t *ixd_role_json(kvb_redis_replica_stats *rst_out)
{
    if (ixd.opts.role == IXD_RELAY) {
        kvb_redis_relay_stats s;
        if (kvb_redis_relay_stats_get(ixd.relay, &s) < 0)
            return NULL;
        json_t *j = json_object();
        if (!j)
            return NULL;
        json_object_set_new(j, "state", json_string(kvb_redis_relay_state_name(s.state)));
        json_object_set_new(j, "inc", json_integer((json_int_t)s.inc));
        json_object_set_new(j, "connected", json_boolean(s.connected));
        json_object_set_new(j, "subscribed", json_boolean(atomic_load(&ixd.sub) != NULL));
        const struct {
            const char *k;
            uint64_t v;
        } f[] = {{"queued", s.queued},
                 {"queued_bytes", s.queued_bytes},
                 {"enqueued", s.enqueued},
                 {"appended", s.appended},
                 {"append_calls", s.append_calls},
                 {"refused", s.refused},
                 {"discarded", s.discarded},
                 {"overflows", s.overflows},
                 {"overflow_clears", s.overflow_clears},
                 {"lost_clears", s.lost_clears},
                 {"reappended", s.reappended},
                 {"anomalies", s.anomalies},
                 {"snapshots", s.snapshots},
                 {"snapshot_bytes", s.snapshot_bytes},
                 {"trims", s.trims},
                 {"trimmed", s.trimmed},
                 {"errors", s.errors},
                 {"reconnects", s.reconnects},
                 {"lease_acquired", s.lease_acquired},
                 {"lease_lost", s.lease_lost},
                 {"followed", s.followed}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            json_object_set_new(j, f[i].k, json_integer((json_int_t)f[i].v));
        json_object_set_new(j, "snapshot_seconds", json_real(s.snapshot_seconds));
        json_object_set_new(j, "takeover_ms", json_real((double)s.takeover_ns / 1e6));
        return j;
    }
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        if (kvb_redis_replica_stats_get(ixd.replica, &s) < 0)
            return NULL;
        if (rst_out)
            *rst_out = s;
        json_t *j = json_object();
        if (!j)
            return NULL;
        json_object_set_new(j, "state", json_string(kvb_redis_replica_state_name(s.state)));
        json_object_set_new(j, "connected", json_boolean(s.connected));
        const struct {
            const char *k;
            uint64_t v;
        } f[] = {{"streams", s.streams},
                 {"snapshot_loads", s.snapshot_loads},
                 {"snapshot_bytes", s.snapshot_bytes},
                 {"snapshots_refused", s.snapshots_refused},
                 {"entries", s.entries},
                 {"applied", s.applied},
                 {"duplicates", s.duplicates},
                 {"fenced", s.fenced},
                 {"corrupt", s.corrupt},
                 {"holes", s.holes},
                 {"regressions", s.regressions},
                 {"reloads", s.reloads},
                 {"errors", s.errors},
                 {"reconnects", s.reconnects},
                 {"lag_entries", s.lag_entries}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            json_object_set_new(j, f[i].k, json_integer((json_int_t)f[i].v));
        json_object_set_new(j, "lag_ms", json_real(s.lag_ms));
        json_object_set_new(j, "apply_lag_ms", json_real(s.apply_lag_ms));
        json_object_set_new(j, "apply_lag_ms_max", json_real(s.apply_lag_ms_max));
        json_object_set_new(j, "snapshot_seconds", json_real(s.snapshot_seconds));
        json_object_set_new(j, "synced_ms",
                            s.synced_ns > 0 ? json_real((double)s.synced_ns / 1e6) : json_null());
        return j;
    }
    return NULL;
}

static ixd_mhd_result ixd_workers(struct MHD_Connection *c, ixd_req *r)
{
    kvb_redis_replica_stats rst;
    memset(&rst, 0, sizeof rst);
    json_t *role = ixd_role_json(&rst); /* before the index: lag figures for every stream */
    kvb_index *idx = ixd_index_get();
    int n = 0;
    uint32_t *ids = idx ? ixd_stream_ids(idx, &n) : calloc(1, sizeof *ids);
    if (!ids) {
        ixd_index_put(idx);
        json_decref(role);
        return ixd_error(c, r, 500, "out of memory");
    }
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    json_t *ws = json_array();
    int64_t now = kvb_index_now_ns();
    for (int i = 0; ws && i < n; i++) {
        kvb_index_stream_info si;
        if (kvb_index_stream_info_get(idx, ids[i], &si) < 0)
            continue; /* removed meanwhile */
        json_t *drops = json_object();
        for (int d = 0; drops && d < KVB_DROP_COUNT; d++)
            json_object_set_new(drops, kvb_drop_reason_name((kvb_drop_reason)d),
                                json_integer((json_int_t)si.dropped[d]));
        json_t *w = json_pack(
            "{s:s,s:o,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I,s:I,s:s,s:o}", "worker",
            si.worker, "dp_rank", ixd_rank_json(si.dp_rank), "state",
            kvb_stream_state_name(si.state), "last_seq", (json_int_t)si.last_seq, "batches",
            (json_int_t)si.batches, "events", (json_int_t)si.events, "gaps",
            (json_int_t)si.counters[KVB_COUNT_GAPS], "replays",
            (json_int_t)si.counters[KVB_COUNT_REPLAYS], "restarts",
            (json_int_t)si.counters[KVB_COUNT_RESTARTS], "clears",
            (json_int_t)si.counters[KVB_COUNT_CLEARS], "dropped", drops ? drops : json_object(),
            "entries", (json_int_t)si.entries, "engine_map", (json_int_t)si.engine_map,
            "block_size", (json_int_t)si.block_size, "hashes",
            si.hashes == KVB_INDEX_HASHES_ROUTER ? "router" : "engine", "heard_s_ago",
            si.last_heard_ns > 0 ? json_real((double)(now - si.last_heard_ns) / 1e9) : json_null());
        kvb_subscriber_worker_info wi; /* the stream's connection, an extra field */
        if (w && sub && kvb_subscriber_worker_info_get(sub, si.worker, &wi) == 0)
            json_object_set_new(w, "connected", json_boolean(wi.connected));
        if (w && ixd.opts.role == IXD_REPLICA) {
            /* additive: the replica's lag behind the streams (one figure for all) */
            json_object_set_new(w, "lag_entries", json_integer((json_int_t)rst.lag_entries));
            json_object_set_new(w, "lag_ms", json_real(rst.lag_ms));
        }
        json_array_append_new(ws, w);
    }
    free(ids);
    ixd_index_put(idx);
    json_t *eps = json_array();
    for (size_t i = 0; eps && i < ixd.opts.n_workers; i++) {
        const ixd_worker *w = &ixd.opts.workers[i];
        json_t *e = json_pack("{s:s,s:s,s:o,s:s,s:o,s:I}", "name", w->name, "endpoint", w->endpoint,
                              "replay", w->replay ? json_string(w->replay) : json_null(), "kind",
                              ixd_kind_name(w->kind), "topic",
                              w->topic ? json_string(w->topic) : json_null(), "block_size",
                              (json_int_t)(w->block_size ? w->block_size : ixd.opts.block_size));
        kvb_subscriber_worker_info wi;
        if (e && sub && kvb_subscriber_worker_info_get(sub, w->name, &wi) == 0) {
            json_object_set_new(e, "connected", json_boolean(wi.connected));
            json_object_set_new(e, "heard", json_boolean(wi.heard));
            json_object_set_new(e, "expected_seq", json_integer(wi.expected_seq));
            json_object_set_new(e, "messages", json_integer((json_int_t)wi.messages));
            json_object_set_new(e, "bad_messages", json_integer((json_int_t)wi.bad_messages));
            json_object_set_new(e, "bad_payloads", json_integer((json_int_t)wi.bad_payloads));
            json_object_set_new(e, "gaps", json_integer((json_int_t)wi.gaps));
            json_object_set_new(e, "replays", json_integer((json_int_t)wi.replays));
            json_object_set_new(e, "replay_failures", json_integer((json_int_t)wi.replay_failures));
            json_object_set_new(e, "restarts", json_integer((json_int_t)wi.restarts));
        }
        json_array_append_new(eps, e);
    }
    json_t *out = json_pack("{s:o,s:o}", "workers", ws ? ws : json_array(), "endpoints",
                            eps ? eps : json_array());
    if (out && role)
        json_object_set_new(out, ixd.opts.role == IXD_RELAY ? "relay" : "replica", role);
    else
        json_decref(role);
    return ixd_send_json(c, r, 200, out);
}

/* ---- POST /v1/snapshot --------------------------------------------------------- */

static int ixd_save(size_t *bytes)
{
    pthread_mutex_lock(&ixd.snapshot_lock);
    int rc = kvb_index_save(ixd.idx, ixd.opts.snapshot, bytes);
    pthread_mutex_unlock(&ixd.snapshot_lock);
    return rc;
}

static ixd_mhd_result ixd_snapshot(struct MHD_Connection *c, ixd_req *r)
{
    if (ixd.opts.role == IXD_REPLICA)
        return ixd_error(c, r, 409, "a replica writes no snapshot: the active relay writes %ssnapshot",
                         ixd.opts.redis_prefix ? ixd.opts.redis_prefix : "kvb:");
    if (ixd.opts.role == IXD_RELAY) {
        char key[128];
        snprintf(key, sizeof key, "%ssnapshot", ixd.opts.redis_prefix ? ixd.opts.redis_prefix : "kvb:");
        size_t bytes = 0;
        int rc = kvb_redis_relay_snapshot(ixd.relay, 30000, &bytes);
        if (rc == -EAGAIN)
            return ixd_error(c, r, 503, "this relay is not active (standby, lost or fenced): "
                                        "the active relay writes the snapshot");
        if (rc < 0)
            return ixd_error(c, r, 500, "snapshot %s: %s", key, kvb_strerror(rc));
        return ixd_send_json(c, r, 200,
                             json_pack("{s:s,s:I}", "path", key, "bytes", (json_int_t)bytes));
    }
    if (!ixd.opts.snapshot)
        return ixd_error(c, r, 409, "no --snapshot path configured");
    size_t bytes = 0;
    int rc = ixd_save(&bytes);
    if (rc < 0)
        return ixd_error(c, r, 500, "snapshot %s: %s", ixd.opts.snapshot, kvb_strerror(rc));
    return ixd_send_json(
        c, r, 200, json_pack("{s:s,s:I}", "path", ixd.opts.snapshot, "bytes", (json_int_t)bytes));
}

/* ---- GET /metrics ------------------------------------------------------------ */

static void ixd_prom_label(ixd_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            ixd_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            ixd_buf_printf(b, "\\n");
        else
            ixd_buf_printf(b, "%c", *s);
    }
}

/* What kvb_indexer_ready reports: standalone, every worker heard from or marked;
 * relay, that and the lease held; replica, synced once. */
static bool ixd_ready(void)
{
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        return kvb_redis_replica_stats_get(ixd.replica, &s) == 0 && s.synced_ns > 0;
    }
    if (ixd.opts.role == IXD_RELAY && !sub)
        return false;
    return !sub || kvb_subscriber_ready(sub);
}

/* The relay's or the replica's counters in Prometheus text. */
static void ixd_role_metrics(ixd_buf *b)
{
    const char *kind = ixd.opts.role == IXD_RELAY ? "relay" : "replica";
    json_t *j = ixd_role_json(NULL);
    if (!j)
        return;
    ixd_buf_printf(b, "# HELP kvb_redis_%s_state 1 for the %s's current state.\n"
                      "# TYPE kvb_redis_%s_state gauge\n",
                   kind, kind, kind);
    static const char *const relay_states[] = {"standby", "active", "lost", "fenced", "stopped"};
    static const char *const replica_states[] = {"connecting", "synced", "lagging", "stopped"};
    const char *now = json_string_value(json_object_get(j, "state"));
    const char *const *names = ixd.opts.role == IXD_RELAY ? relay_states : replica_states;
    size_t nn = ixd.opts.role == IXD_RELAY ? 5 : 4;
    for (size_t i = 0; i < nn; i++)
        ixd_buf_printf(b, "kvb_redis_%s_state{state=\"%s\"} %d\n", kind, names[i],
                       now && !strcmp(now, names[i]));
    /* every other number: counters end in _total, the rest are gauges */
    static const char *const gauges[] = {"inc",          "connected",       "subscribed",
                                         "queued",       "queued_bytes",    "snapshot_bytes",
                                         "streams",      "lag_entries",     "lag_ms",
                                         "apply_lag_ms", "apply_lag_ms_max", "snapshot_seconds",
                                         "takeover_ms",  "synced_ms"};
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        if (!strcmp(key, "state") || json_is_null(v))
            continue;
        bool gauge = false;
        for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
            gauge = gauge || !strcmp(key, gauges[i]);
        double x = json_is_true(v)    ? 1
                   : json_is_false(v) ? 0
                   : json_is_integer(v) ? (double)json_integer_value(v)
                                        : json_real_value(v);
        ixd_buf_printf(b, "# TYPE kvb_redis_%s_%s%s %s\nkvb_redis_%s_%s%s %.17g\n", kind, key,
                       gauge ? "" : "_total", gauge ? "gauge" : "counter", kind, key,
                       gauge ? "" : "_total", x);
    }
    json_decref(j);
}

static ixd_mhd_result ixd_metrics(struct MHD_Connection *c, ixd_req *r)
{
    ixd_buf b = {0};
    kvb_index *idx = ixd_index_get(); /* NULL on a standby relay: no index metrics */
    /* the index's exposition, like snprintf: grown and retried when it did not fit */
    for (size_t want = 16384; idx;) {
        if (!ixd_buf_reserve(&b, want))
            break;
        int n = kvb_index_metrics_text(idx, b.p, b.cap);
        if (n < 0)
            break;
        if ((size_t)n < b.cap) {
            b.len = (size_t)n;
            break;
        }
        want = (size_t)n + 4096;
    }
    ixd_index_put(idx);
    if (b.len && b.p[b.len - 1] != '\n')
        ixd_buf_printf(&b, "\n");
    if (ixd.opts.role != IXD_STANDALONE)
        ixd_role_metrics(&b);

    ixd_buf_printf(&b, "# HELP kvb_http_requests_total HTTP requests answered, by endpoint "
                       "and status code.\n# TYPE kvb_http_requests_total counter\n");
    for (int e = 0; e < R_COUNT; e++)
        for (size_t k = 0; k < IXD_NCODES; k++) {
            uint64_t v = atomic_load_explicit(&ixd.requests[e][k], memory_order_relaxed);
            char code[16];
            if (k < IXD_NCODES - 1)
                snprintf(code, sizeof code, "%u", ixd_codes[k]);
            else
                snprintf(code, sizeof code, "other");
            if (v || k == 0)
                ixd_buf_printf(&b,
                               "kvb_http_requests_total{endpoint=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                               ixd_routes[e].label, code, v);
        }
    ixd_buf_printf(&b, "# HELP kvb_http_requests_aborted_total HTTP requests whose connection "
                       "ended before a response was sent.\n"
                       "# TYPE kvb_http_requests_aborted_total counter\n");
    for (int e = 0; e < R_COUNT; e++)
        ixd_buf_printf(&b, "kvb_http_requests_aborted_total{endpoint=\"%s\"} %" PRIu64 "\n",
                       ixd_routes[e].label,
                       (uint64_t)atomic_load_explicit(&ixd.aborted[e], memory_order_relaxed));
    ixd_buf_printf(&b, "# HELP kvb_http_request_duration_seconds Time from a request's "
                       "headers to its response sent.\n"
                       "# TYPE kvb_http_request_duration_seconds histogram\n");
    for (int e = 0; e < R_COUNT; e++) {
        uint64_t cum = 0;
        for (size_t k = 0; k <= IXD_NBUCKETS; k++) {
            cum += atomic_load_explicit(&ixd.latency[e][k], memory_order_relaxed);
            if (k < IXD_NBUCKETS)
                ixd_buf_printf(&b,
                               "kvb_http_request_duration_seconds_bucket{endpoint=\"%s\","
                               "le=\"%g\"} %" PRIu64 "\n",
                               ixd_routes[e].label, ixd_buckets[k], cum);
            else
                ixd_buf_printf(&b,
                               "kvb_http_request_duration_seconds_bucket{endpoint=\"%s\","
                               "le=\"+Inf\"} %" PRIu64 "\n",
                               ixd_routes[e].label, cum);
        }
        ixd_buf_printf(&b, "kvb_http_request_duration_seconds_sum{endpoint=\"%s\"} %.9f\n",
                       ixd_routes[e].label,
                       (double)atomic_load_explicit(&ixd.latency_ns_sum[e], memory_order_relaxed) /
                           1e9);
        ixd_buf_printf(&b, "kvb_http_request_duration_seconds_count{endpoint=\"%s\"} %" PRIu64 "\n",
                       ixd_routes[e].label, cum);
    }

    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (sub && ixd.opts.n_workers) {
        static const struct {
            const char *name, *help;
        } sm[] = {
            {"kvb_subscriber_connected", "1 when the worker's SUB connection is up"},
            {"kvb_subscriber_messages_total", "messages received on the SUB socket"},
            {"kvb_subscriber_bad_messages_total",
             "messages that were not [topic, 8-byte seq, payload]"},
            {"kvb_subscriber_gaps_total", "sequence gaps seen"},
            {"kvb_subscriber_replays_total", "batches applied from replays"},
            {"kvb_subscriber_replay_failures_total", "gaps the replay could not cover"},
            {"kvb_subscriber_restarts_total", "publisher restarts detected"},
        };
        kvb_subscriber_worker_info *wi = calloc(ixd.opts.n_workers, sizeof *wi);
        bool *ok = calloc(ixd.opts.n_workers, sizeof *ok);
        if (wi && ok) {
            for (size_t i = 0; i < ixd.opts.n_workers; i++)
                ok[i] =
                    kvb_subscriber_worker_info_get(sub, ixd.opts.workers[i].name, &wi[i]) == 0;
            for (size_t m = 0; m < sizeof sm / sizeof sm[0]; m++) {
                ixd_buf_printf(&b, "# HELP %s Per worker endpoint: %s.\n# TYPE %s %s\n", sm[m].name,
                               sm[m].help, sm[m].name, m ? "counter" : "gauge");
                for (size_t i = 0; i < ixd.opts.n_workers; i++) {
                    if (!ok[i])
                        continue;
                    uint64_t v = m == 0   ? wi[i].connected
                                 : m == 1 ? wi[i].messages
                                 : m == 2 ? wi[i].bad_messages
                                 : m == 3 ? wi[i].gaps
                                 : m == 4 ? wi[i].replays
                                 : m == 5 ? wi[i].replay_failures
                                          : wi[i].restarts;
                    ixd_buf_printf(&b, "%s{worker=\"", sm[m].name);
                    ixd_prom_label(&b, ixd.opts.workers[i].name);
                    ixd_buf_printf(&b, "\"} %" PRIu64 "\n", v);
                }
            }
        }
        free(wi);
        free(ok);
    }
    ixd_buf_printf(&b,
                   "# HELP kvb_indexer_uptime_seconds Seconds since the daemon started.\n"
                   "# TYPE kvb_indexer_uptime_seconds gauge\nkvb_indexer_uptime_seconds %.3f\n",
                   (double)(ixd_now_ns() - ixd.start_ns) / 1e9);
    ixd_buf_printf(&b,
                   "# HELP kvb_indexer_ready 1 once every configured worker was heard from or "
                   "marked.\n# TYPE kvb_indexer_ready gauge\nkvb_indexer_ready %d\n",
                   ixd_ready());
    if (b.oom) {
        free(b.p);
        return ixd_error(c, r, 500, "out of memory");
    }
    return ixd_send(c, r, 200, b.p, b.len, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

/* ---- GET /healthz ------------------------------------------------------------ */

static ixd_mhd_result ixd_healthz(struct MHD_Connection *c, ixd_req *r)
{
    if (ixd.opts.role == IXD_REPLICA) {
        kvb_redis_replica_stats s;
        if (kvb_redis_replica_stats_get(ixd.replica, &s) == 0 && s.synced_ns > 0 &&
            (s.state == KVB_REDIS_REPLICA_SYNCED || s.state == KVB_REDIS_REPLICA_LAGGING))
            return ixd_send_json(
                c, r, 200,
                json_pack("{s:s}", "status",
                          s.state == KVB_REDIS_REPLICA_SYNCED ? "ok" : "lagging"));
        return ixd_send_json(c, r, 503, json_pack("{s:s}", "status", "connecting"));
    }
    if (ixd.opts.role == IXD_RELAY) {
        kvb_redis_relay_stats s;
        if (kvb_redis_relay_stats_get(ixd.relay, &s) < 0 || s.state != KVB_REDIS_RELAY_ACTIVE ||
            !atomic_load(&ixd.sub))
            return ixd_send_json(
                c, r, 503,
                json_pack("{s:s}", "status",
                          s.state == KVB_REDIS_RELAY_ACTIVE ? "starting"
                                                            : kvb_redis_relay_state_name(s.state)));
    }
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (!sub || kvb_subscriber_ready(sub))
        return ixd_send_json(c, r, 200, json_pack("{s:s}", "status", "ok"));
    json_t *waiting = json_array();
    for (size_t i = 0; waiting && i < ixd.opts.n_workers; i++) {
        kvb_subscriber_worker_info wi;
        if (kvb_subscriber_worker_info_get(sub, ixd.opts.workers[i].name, &wi) == 0 &&
            !wi.heard)
            json_array_append_new(waiting, json_string(ixd.opts.workers[i].name));
    }
    return ixd_send_json(
        c, r, 503,
        json_pack("{s:s,s:o}", "status", "waiting", "waiting", waiting ? waiting : json_array()));
}

/* ---- libmicrohttpd callbacks ---------------------------------------------------- */

static int ixd_route_of(const char *url)
{
    for (int i = 0; i < R_OTHER; i++)
        if (!strcmp(url, ixd_routes[i].path))
            return i;
    return R_OTHER;
}

static ixd_mhd_result ixd_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    ixd_req *r = *con_cls;
    if (!r) { /* first call: headers only */
        r = calloc(1, sizeof *r);
        if (!r)
            return IXD_MHD_NO;
        r->start_ns = ixd_now_ns();
        r->route = ixd_route_of(url ? url : "");
        atomic_fetch_add(&ixd.inflight, 1);
        *con_cls = r;
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t clen;
        if (cl && kvbt_parse_u64(cl, 0, UINT64_MAX, &clen)) {
            if (clen > IXD_MAX_BODY) {
                r->too_large = true;
                return ixd_error(c, r, 413, "request body over %u bytes", IXD_MAX_BODY);
            }
            r->expect = (size_t)clen;
        }
        return IXD_MHD_YES;
    }
    if (*upload_data_size) { /* body data: accumulate up to the cap */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->status)
            return IXD_MHD_YES; /* answered already (413): discard */
        if (r->too_large || r->busy)
            return IXD_MHD_YES;
        if (n > IXD_MAX_BODY - r->len) {
            /* over the cap without a Content-Length (chunked): keep nothing, read and
             * discard the rest (libmicrohttpd 0.9.75 refuses a response queued in
             * the middle of an upload), answer 413 at its end */
            r->too_large = true;
            ixd_body_free(r);
            return IXD_MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : r->expect ? r->expect + 1 : 1024;
            while (cap < r->len + n + 1)
                cap *= 2;
            if (cap > IXD_MAX_BODY + 1)
                cap = IXD_MAX_BODY + 1;
            size_t more = cap - r->cap;
            uint64_t held = atomic_fetch_add_explicit(&ixd.body_bytes, more, memory_order_relaxed);
            if (held + more > IXD_BODY_BUDGET) {
                atomic_fetch_sub_explicit(&ixd.body_bytes, more, memory_order_relaxed);
                r->busy = true;
                ixd_body_free(r);
                return IXD_MHD_YES;
            }
            char *p = realloc(r->body, cap);
            if (!p) {
                atomic_fetch_sub_explicit(&ixd.body_bytes, more, memory_order_relaxed);
                return IXD_MHD_NO;
            }
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return IXD_MHD_YES;
    }
    if (r->status)
        return IXD_MHD_YES; /* a response is queued already */
    if (r->too_large)
        return ixd_error(c, r, 413, "request body over %u bytes", IXD_MAX_BODY);
    if (r->busy)
        return ixd_error(c, r, 503, "request bodies in flight exceed %u bytes in all: retry later",
                         IXD_BODY_BUDGET);

    if (r->route == R_OTHER)
        return ixd_error(c, r, 404,
                         "no such endpoint: %s %s (endpoints: POST /v1/match, "
                         "GET /v1/workers, POST /v1/snapshot, GET /metrics, "
                         "GET /healthz)",
                         method, url);
    const char *want = ixd_routes[r->route].method;
    bool ok = !strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"));
    if (!ok) {
        char *msg = NULL;
        json_t *j = json_object();
        char text[200];
        snprintf(text, sizeof text, "method %s not allowed on %s: use %s", method,
                 ixd_routes[r->route].path, want);
        if (j && json_object_set_new(j, "error", json_string(text)) == 0)
            msg = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return ixd_send(c, r, 405, msg, msg ? strlen(msg) : 0, "application/json",
                        !strcmp(want, "GET") ? "GET, HEAD" : want);
    }
    switch (r->route) {
    case R_MATCH:
        return ixd_match(c, r);
    case R_WORKERS:
        return ixd_workers(c, r);
    case R_SNAPSHOT:
        return ixd_snapshot(c, r);
    case R_METRICS:
        return ixd_metrics(c, r);
    case R_HEALTHZ:
        return ixd_healthz(c, r);
    default:
        return ixd_error(c, r, 404, "no such endpoint");
    }
}

static void ixd_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    ixd_req *r = *con_cls;
    if (!r)
        return;
    int e = r->route;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status) {
        size_t k = 0;
        while (k < IXD_NCODES - 1 && ixd_codes[k] != r->status)
            k++;
        atomic_fetch_add_explicit(&ixd.requests[e][k], 1, memory_order_relaxed);
        uint64_t ns = (uint64_t)(ixd_now_ns() - r->start_ns);
        size_t bkt = 0;
        while (bkt < IXD_NBUCKETS && (double)ns / 1e9 > ixd_buckets[bkt])
            bkt++;
        atomic_fetch_add_explicit(&ixd.latency[e][bkt], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ixd.latency_ns_sum[e], ns, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&ixd.aborted[e], 1, memory_order_relaxed);
    }
    ixd_body_free(r);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&ixd.inflight, 1); /* pairs with the shutdown drain's load */
}

/* ---- main ------------------------------------------------------------------- */

static void ixd_log(const char *fmt, ...) KVBT_PRINTF(1, 2);
static void ixd_log(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* The index configuration of every role; exits 2 on a bad combination. */
static void ixd_index_config(kvb_index_config *cfg)
{
    const ixd_opts *o = &ixd.opts;
    kvb_index_config_init(cfg);
    cfg->block_size = o->block_size;
    cfg->seed = o->seed;
    if (o->stale_after > 0)
        cfg->stale_after_s = o->stale_after;
    if (o->drop_after > 0)
        cfg->drop_after_s = o->drop_after;
    if (cfg->drop_after_s < cfg->stale_after_s)
        ixd_usage_error("--drop-after (%g s) must be at least --stale-after (%g s)",
                        cfg->drop_after_s, cfg->stale_after_s);
}

static void ixd_open_index(void)
{
    const ixd_opts *o = &ixd.opts;
    kvb_index_config cfg;
    ixd_index_config(&cfg);
    int rc = -ENOENT;
    if (o->snapshot) {
        /* fail now rather than at the first POST /v1/snapshot or at shutdown */
        char *dir = ixd_strdup(o->snapshot), *slash = strrchr(dir, '/');
        if (!slash)
            strcpy(dir, ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
        if (access(dir, W_OK | X_OK) != 0) {
            ixd_log("snapshot %s: its directory %s is not writable: %s", o->snapshot, dir,
                    strerror(errno));
            exit(1);
        }
        free(dir);
        rc = kvb_index_load(o->snapshot, &cfg, &ixd.idx);
        if (rc == 0) {
            kvb_index_stats st;
            kvb_index_stats_get(ixd.idx, &st);
            ixd_log("snapshot %s loaded: %u streams, %" PRIu64 " keys, %" PRIu64 " entries",
                    o->snapshot, st.streams, st.keys, st.entries);
            return;
        }
        if (rc == -EBADMSG) {
            ixd_log("snapshot %s is corrupt, truncated or of another version (%s): refusing "
                    "to start (nothing was loaded; move the file away to start empty)",
                    o->snapshot, kvb_strerror(rc));
            exit(1);
        }
        if (rc == -EINVAL) {
            ixd_log("snapshot %s was written with another block size or seed than "
                    "--block-size %u --seed %" PRIu64 " (%s): refusing to start",
                    o->snapshot, o->block_size, o->seed, kvb_strerror(rc));
            exit(1);
        }
        if (rc != -ENOENT) {
            ixd_log("snapshot %s cannot be loaded: %s", o->snapshot, kvb_strerror(rc));
            exit(1);
        }
    }
    rc = kvb_index_create(&cfg, &ixd.idx);
    if (rc < 0) {
        ixd_log("kvb_index_create: %s", kvb_strerror(rc));
        exit(rc == -EINVAL ? 2 : 1);
    }
    if (o->snapshot)
        ixd_log("snapshot %s does not exist yet: starting empty", o->snapshot);
}

/* A subscriber on idx with every --worker (callback: the relay's, or none); exits 1
 * (2 for a worker the subscriber refuses as invalid) on failure. */
static kvb_subscriber *ixd_subscribe(kvb_index *idx, kvb_subscriber_cb cb, void *user)
{
    const ixd_opts *o = &ixd.opts;
    kvb_subscriber_config sc;
    kvb_subscriber_config_init(&sc);
    sc.index = idx;
    sc.callback = cb;
    sc.user = user;
    kvb_subscriber *sub = NULL;
    int rc = kvb_subscriber_create(&sc, &sub);
    if (rc == -ENOTSUP) {
        ixd_log("this kvblock was built without ZeroMQ/msgpack-c: no subscriber "
                "(apt-get install libzmq3-dev libmsgpack-dev and rebuild)");
        exit(1);
    }
    if (rc < 0) {
        ixd_log("kvb_subscriber_create: %s", kvb_strerror(rc));
        exit(1);
    }
    for (size_t i = 0; i < o->n_workers; i++) {
        const ixd_worker *w = &o->workers[i];
        kvb_subscriber_worker sw;
        memset(&sw, 0, sizeof sw);
        sw.name = w->name;
        sw.endpoint = w->endpoint;
        sw.replay_endpoint = w->replay;
        sw.kind = w->kind;
        sw.block_size = w->block_size;
        sw.topic = w->topic;
        rc = kvb_subscriber_add_worker(sub, &sw);
        if (rc < 0) {
            ixd_log("--worker %s=%s: %s", w->name, w->endpoint, kvb_strerror(rc));
            exit(rc == -EINVAL ? 2 : 1);
        }
    }
    return sub;
}

static void ixd_start_subscriber(void)
{
    if (ixd.opts.n_workers)
        atomic_store(&ixd.sub, ixd_subscribe(ixd.idx, NULL, NULL));
}

/* ---- --redis: relay and replica ------------------------------------------------ */

/* Tell main's sigwait() that the relay is fenced (any thread; kill() is safe
 * anywhere). */
static void ixd_fenced(void)
{
    if (!atomic_exchange(&ixd.fenced, true))
        kill(getpid(), SIGUSR2);
}

/* On the relay's thread at every state change. */
static void ixd_relay_state(void *user, kvb_redis_relay_state st, uint64_t inc)
{
    (void)user;
    switch (st) {
    case KVB_REDIS_RELAY_STANDBY:
        ixd_log("relay: standby (following the streams, waiting for the lease)");
        break;
    case KVB_REDIS_RELAY_ACTIVE:
        ixd_log("relay: active, incarnation %" PRIu64 " (holds the lease, caught up)", inc);
        break;
    case KVB_REDIS_RELAY_LOST:
        ixd_log("relay: lost the lease (incarnation %" PRIu64 "): queueing, retrying", inc);
        break;
    case KVB_REDIS_RELAY_FENCED:
        ixd_log("relay: FENCED (incarnation %" PRIu64 "): another relay appended after this "
                "one's lease lapsed; it never appends again: exiting with status %d (restart it "
                "as a standby)",
                inc, IXD_EXIT_FENCED);
        ixd_fenced();
        break;
    case KVB_REDIS_RELAY_STOPPED:
        break;
    }
}

/* The relay's activation thread: waits (bounded steps, so SIGTERM is noticed) until
 * the relay holds the lease with its index caught up, then subscribes to the
 * workers on that index: every worker resumes from the streams' last sequence
 * number by replay. */
static void *ixd_relay_activate(void *arg)
{
    (void)arg;
    for (;;) {
        if (atomic_load(&ixd.stopping))
            return NULL;
        int rc = kvb_redis_relay_wait_active(ixd.relay, 200);
        if (rc == 0)
            break;
        if (rc == -ECANCELED) { /* fenced (or stopping) */
            if (!atomic_load(&ixd.stopping))
                ixd_fenced();
            return NULL;
        }
        if (rc != -ETIMEDOUT) {
            ixd_log("relay: waiting for the lease: %s", kvb_strerror(rc));
            return NULL;
        }
    }
    kvb_subscriber *sub =
        ixd_subscribe(kvb_redis_relay_index(ixd.relay), kvb_redis_relay_subscriber_cb, ixd.relay);
    atomic_store(&ixd.sub, sub); /* publishes a subscriber with every worker added */
    ixd_log("relay: subscribed to %zu workers", ixd.opts.n_workers);
    return NULL;
}

static void ixd_start_redis(pthread_t *activate)
{
    const ixd_opts *o = &ixd.opts;
    int rc;
    if (o->role == IXD_RELAY) {
        kvb_redis_relay_config c;
        kvb_redis_relay_config_init(&c);
        c.url = o->redis;
        if (o->redis_prefix)
            c.prefix = o->redis_prefix;
        ixd_index_config(&c.index);
        if (o->snapshot_batches >= 0)
            c.snapshot_entries = (uint32_t)o->snapshot_batches;
        if (o->snapshot_every_s >= 0)
            c.snapshot_ms = (uint32_t)llround(o->snapshot_every_s * 1000.0);
        c.on_state = ixd_relay_state;
        rc = kvb_redis_relay_create(&c, &ixd.relay);
        if (rc < 0) {
            ixd_log("relay on %s: %s%s", o->redis, kvb_strerror(rc),
                    rc == -ENOTSUP ? " (this kvblock was built without hiredis: apt-get install "
                                     "libhiredis-dev and rebuild)"
                                   : "");
            exit(rc == -EINVAL ? 2 : 1);
        }
        rc = pthread_create(activate, NULL, ixd_relay_activate, NULL);
        if (rc != 0) {
            ixd_log("pthread_create: %s", strerror(rc));
            exit(1);
        }
    } else {
        kvb_redis_replica_config c;
        kvb_redis_replica_config_init(&c);
        c.url = o->redis;
        if (o->redis_prefix)
            c.prefix = o->redis_prefix;
        ixd_index_config(&c.index);
        rc = kvb_redis_replica_create(&c, &ixd.replica);
        if (rc < 0) {
            ixd_log("replica on %s: %s%s", o->redis, kvb_strerror(rc),
                    rc == -ENOTSUP ? " (this kvblock was built without hiredis: apt-get install "
                                     "libhiredis-dev and rebuild)"
                                   : "");
            exit(rc == -EINVAL ? 2 : 1);
        }
    }
}

static void ixd_start_http(sigset_t *blocked)
{
    (void)blocked;
    struct sockaddr_storage ss;
    socklen_t sslen;
    bool v6;
    ixd_parse_listen(ixd.opts.listen, &ss, &sslen, &v6);
    uint16_t port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = ncpu < 1 ? 1 : ncpu > 4 ? 4 : (unsigned)ncpu;
    /* poll(), not epoll: with libmicrohttpd 0.9.75's edge-triggered epoll a client
     * that sends its headers and part of a body, then closes, was not noticed until
     * the connection timeout (and held the shutdown drain); poll() sees the EOF.
     * The daemon serves few connections at a time: poll costs nothing here. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    ixd.mhd = MHD_start_daemon(flags, port, NULL, NULL, ixd_access, NULL, MHD_OPTION_SOCK_ADDR,
                               (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                               MHD_OPTION_NOTIFY_COMPLETED, ixd_completed, NULL, MHD_OPTION_END);
    /* (no MHD_OPTION_LISTENING_ADDRESS_REUSE: on Linux it sets SO_REUSEPORT and a
     * second daemon would silently share the port; MHD's default SO_REUSEADDR is
     * enough to restart while old connections are in TIME_WAIT) */
    if (!ixd.mhd) {
        ixd_log("cannot listen on %s (address in use, or not an address of this host?)",
                ixd.opts.listen);
        exit(1);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(ixd.mhd, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = di ? di->port : port;
    char host[INET6_ADDRSTRLEN] = "?";
    if (v6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
    ixd_log("listening on http://%s%s%s:%u/ (%zu workers, block size %u, seed %" PRIu64
            ", %u HTTP threads)",
            v6 ? "[" : "", host, v6 ? "]" : "", bound, ixd.opts.n_workers, ixd.opts.block_size,
            ixd.opts.seed, threads);
}

int main(int argc, char **argv)
{
    ixd.start_ns = ixd_now_ns();
    ixd_parse(argc, argv, &ixd.opts);

    /* Before any thread exists: every thread inherits the mask, sigwait() below is
     * the only receiver of SIGTERM/SIGINT. SIGPIPE: a client that went away is an
     * error return, not a signal. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR2); /* the relay is fenced (ixd_fenced) */
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        kvbt_die(prog, "pthread_sigmask failed");
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0); /* jansson's hash seed, set once before threads (its docs) */

    pthread_t activate;
    if (ixd.opts.role == IXD_STANDALONE) {
        ixd_open_index();
        ixd_start_subscriber();
    } else {
        ixd_start_redis(&activate); /* before the HTTP threads, which read ixd.relay/replica */
    }
    ixd_start_http(&set);
    if (ixd.opts.role != IXD_STANDALONE)
        ixd_log("%s on %s (key prefix %s)", ixd.opts.role == IXD_RELAY ? "relay" : "replica",
                ixd.opts.redis, ixd.opts.redis_prefix ? ixd.opts.redis_prefix : "kvb:");

    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR2 && !atomic_load(&ixd.fenced))
            continue; /* not ours */
        break;
    }
    bool fenced = sig == SIGUSR2;
    if (fenced)
        ixd_log("relay fenced: shutting down (exit status %d)", IXD_EXIT_FENCED);
    else
        ixd_log("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");

    /* Stop accepting; let requests in flight finish (bounded); then stop. */
    MHD_socket lfd = MHD_quiesce_daemon(ixd.mhd);
    /* The listening socket must stay open until MHD_stop_daemon (a polling thread
     * may still hold it); shutdown() makes Linux stop listening now, so new
     * connections are refused instead of waiting in the backlog. */
    if (lfd != MHD_INVALID_SOCKET)
        shutdown(lfd, SHUT_RDWR);
    int64_t deadline = ixd_now_ns() + (int64_t)(IXD_DRAIN_S * 1e9);
    while (atomic_load(&ixd.inflight) > 0 && ixd_now_ns() < deadline) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&ixd.inflight) > 0)
        ixd_log("%" PRIdFAST64 " requests still in flight after %.0f s: closing them",
                (int_fast64_t)atomic_load(&ixd.inflight), IXD_DRAIN_S);
    MHD_stop_daemon(ixd.mhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    /* relay: the activation thread first (it may be creating the subscriber), then
     * the subscriber (it calls the relay back), then the relay */
    atomic_store(&ixd.stopping, true);
    if (ixd.opts.role == IXD_RELAY)
        pthread_join(activate, NULL);
    kvb_subscriber *sub = atomic_load(&ixd.sub);
    if (sub)
        kvb_subscriber_destroy(sub);
    atomic_store(&ixd.sub, NULL);
    if (ixd.relay)
        kvb_redis_relay_destroy(ixd.relay);
    if (ixd.replica) {
        int rrc = kvb_redis_replica_destroy(ixd.replica);
        if (rrc < 0)
            ixd_log("replica: %s", kvb_strerror(rrc));
    }

    int status = 0;
    if (ixd.opts.snapshot) {
        size_t bytes = 0;
        int rc = ixd_save(&bytes);
        if (rc < 0) {
            ixd_log("snapshot %s could not be written: %s", ixd.opts.snapshot, kvb_strerror(rc));
            status = 1;
        } else {
            ixd_log("snapshot %s written (%zu bytes)", ixd.opts.snapshot, bytes);
        }
    }
    if (ixd.idx)
        kvb_index_destroy(ixd.idx);
    for (size_t i = 0; i < ixd.opts.n_workers; i++) {
        free(ixd.opts.workers[i].name);
        free(ixd.opts.workers[i].endpoint);
        free(ixd.opts.workers[i].replay);
        free(ixd.opts.workers[i].topic);
    }
    free(ixd.opts.workers);
    free(ixd.opts.listen);
    free(ixd.opts.snapshot);
    free(ixd.opts.config);
    free(ixd.opts.redis);
    free(ixd.opts.redis_prefix);
    return fenced ? IXD_EXIT_FENCED : status;
}
