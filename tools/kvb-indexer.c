/*
 * tools/kvb-indexer.c - the fleet index daemon (FLEET.md section 7).
 *
 * This file: main, startup (index, subscriber, --redis roles, HTTP) and
 * shutdown. The parts (tools/kvb-indexer/, sharing ixd.h): options.c (command
 * line, --config), http.c (libmicrohttpd callbacks, routing, bodies,
 * responses), json.c (JSON requests, POST /v1/match), status.c (/v1/workers,
 * /v1/snapshot, /healthz), metrics.c (/metrics).
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
 */
#include "kvb-indexer/ixd.h"

struct ixd_state ixd = {.snapshot_lock = PTHREAD_MUTEX_INITIALIZER,
                        .big_lock = PTHREAD_MUTEX_INITIALIZER};

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
        kvbt_usage_error(prog, "--drop-after (%g s) must be at least --stale-after (%g s)",
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
