/*
 * tools/kvb-indexer/options.c - kvb-indexer's command line and --config file:
 * --help, the option table, --worker and --listen specs, validation (exit 2 on a
 * usage error).
 */
#include "kvb-indexer/ixd.h"

static void ixd_help(FILE *f)
{
    fprintf(
        f,
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

char *ixd_strdup(const char *s)
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

const char *ixd_kind_name(kvb_wire_kind k)
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
        kvbt_usage_error(prog,
                         "--worker '%s': expected NAME=ENDPOINT[,replay=...][,kind=...]"
                         "[,block-size=N][,topic=T]",
                         spec);
    size_t nlen = (size_t)(eq - spec);
    if (nlen >= KVB_INDEX_NAME_MAX)
        kvbt_usage_error(prog, "--worker '%s': name longer than %d bytes", spec,
                         KVB_INDEX_NAME_MAX - 1);
    ixd_worker w;
    memset(&w, 0, sizeof w);
    w.kind = KVB_WIRE_VLLM;
    w.name = kvbt_xmalloc(nlen + 1);
    memcpy(w.name, spec, nlen);
    w.name[nlen] = '\0';
    if (strchr(w.name, ',') || !ixd_printable(w.name, false))
        kvbt_usage_error(
            prog, "--worker '%s': a name is printable ASCII without ',', '=' or blanks", spec);
    if (!ixd_printable(eq + 1, true))
        kvbt_usage_error(prog, "--worker '%s': endpoints and topic are printable ASCII", spec);
    char *rest = ixd_strdup(eq + 1);
    char *save = NULL;
    bool first = true, have_kind = false, have_bs = false;
    for (char *tok = strtok_r(rest, ",", &save); tok || first; tok = strtok_r(NULL, ",", &save)) {
        if (first) {
            if (!tok || eq[1] == ',' || !strstr(tok, "://") || strstr(tok, "://") == tok ||
                !strstr(tok, "://")[3])
                kvbt_usage_error(prog,
                                 "--worker '%s': '%s' is not a ZeroMQ endpoint "
                                 "(tcp://HOST:PORT, ipc://PATH, ...)",
                                 spec, tok ? tok : "");
            w.endpoint = ixd_strdup(tok);
            first = false;
            continue;
        }
        char *v = strchr(tok, '=');
        if (!v)
            kvbt_usage_error(prog, "--worker '%s': '%s' is not KEY=VALUE", spec, tok);
        *v++ = '\0';
        if (!strcmp(tok, "replay")) {
            if (w.replay || !strstr(v, "://") || strstr(v, "://") == v || !strstr(v, "://")[3])
                kvbt_usage_error(prog, "--worker '%s': bad or repeated replay endpoint '%s'", spec,
                                 v);
            w.replay = ixd_strdup(v);
        } else if (!strcmp(tok, "kind")) {
            if (have_kind)
                kvbt_usage_error(prog, "--worker '%s': kind given twice", spec);
            have_kind = true;
            if (!strcmp(v, "vllm"))
                w.kind = KVB_WIRE_VLLM;
            else if (!strcmp(v, "sglang"))
                w.kind = KVB_WIRE_SGLANG;
            else if (!strcmp(v, "kvblock"))
                w.kind = KVB_WIRE_KVBLOCK;
            else
                kvbt_usage_error(prog, "--worker '%s': kind '%s' is not vllm, sglang or kvblock",
                                 spec, v);
        } else if (!strcmp(tok, "block-size")) {
            uint64_t bs;
            if (have_bs || !kvbt_parse_u64(v, 1, 1024, &bs) || !ixd_pow2_block(bs))
                kvbt_usage_error(prog,
                                 "--worker '%s': block-size '%s' is not a power of two "
                                 "in 1..1024 (or given twice)",
                                 spec, v);
            have_bs = true;
            w.block_size = (uint32_t)bs;
        } else if (!strcmp(tok, "topic")) {
            if (w.topic)
                kvbt_usage_error(prog, "--worker '%s': topic given twice", spec);
            w.topic = ixd_strdup(v);
        } else {
            kvbt_usage_error(prog,
                             "--worker '%s': unknown key '%s' (replay, kind, block-size, topic)",
                             spec, tok);
        }
    }
    free(rest);
    for (size_t i = 0; i < o->n_workers; i++)
        if (!strcmp(o->workers[i].name, w.name))
            kvbt_usage_error(prog, "--worker '%s': worker '%s' given twice", spec, w.name);
    o->workers = kvbt_xrealloc(o->workers, (o->n_workers + 1) * sizeof *o->workers);
    o->workers[o->n_workers++] = w;
}

/* HOST:PORT -> address (getaddrinfo); exits 2 on a bad value. */
void ixd_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen, bool *v6)
{
    const char *colon = strrchr(spec, ':');
    if (!colon)
        kvbt_usage_error(prog, "--listen '%s': expected HOST:PORT", spec);
    uint64_t port;
    if (!kvbt_parse_u64(colon + 1, 0, 65535, &port))
        kvbt_usage_error(prog, "--listen '%s': port '%s' is not 0..65535", spec, colon + 1);
    size_t hlen = (size_t)(colon - spec);
    char host[256];
    if (hlen >= sizeof host)
        kvbt_usage_error(prog, "--listen '%s': host name too long", spec);
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    } else if (strchr(host, ':')) {
        kvbt_usage_error(prog, "--listen '%s': write an IPv6 address in brackets ([::1]:8181)",
                         spec);
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
        kvbt_usage_error(prog, "--listen '%s': %s", spec, gai_strerror(rc));
    if (res->ai_addrlen > sizeof *ss) {
        freeaddrinfo(res);
        kvbt_usage_error(prog, "--listen '%s': unsupported address", spec);
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

static const struct option ixd_longopts[] = {
    {"listen", required_argument, 0, OPT_LISTEN},
    {"worker", required_argument, 0, OPT_WORKER},
    {"config", required_argument, 0, OPT_CONFIG},
    {"block-size", required_argument, 0, OPT_BLOCK_SIZE},
    {"seed", required_argument, 0, OPT_SEED},
    {"snapshot", required_argument, 0, OPT_SNAPSHOT},
    {"stale-after", required_argument, 0, OPT_STALE},
    {"drop-after", required_argument, 0, OPT_DROP},
    {"redis", required_argument, 0, OPT_REDIS},
    {"role", required_argument, 0, OPT_ROLE},
    {"redis-prefix", required_argument, 0, OPT_REDIS_PREFIX},
    {"snapshot-every-batches", required_argument, 0, OPT_SNAP_BATCHES},
    {"snapshot-every", required_argument, 0, OPT_SNAP_EVERY},
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
            kvbt_usage_error(prog, "%s:%u: NUL byte in the line", path, lineno);
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
            kvbt_usage_error(prog, "%s:%u: unknown option '%s'", path, lineno, name);
        if (!*v)
            kvbt_usage_error(prog, "%s:%u: option '%s' needs a value", path, lineno, name);
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

void ixd_parse(int argc, char **argv, ixd_opts *o)
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
                kvbt_usage_error(prog, "--config given twice");
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
                kvbt_usage_error(prog, "--block-size '%s': not a power of two in 1..1024", optarg);
            o->block_size = (uint32_t)v;
            break;
        case OPT_SEED:
            if (!kvbt_parse_u64(optarg, 0, UINT64_MAX, &v))
                kvbt_usage_error(prog, "--seed '%s': not a decimal number in 0..2^64-1", optarg);
            o->seed = v;
            break;
        case OPT_SNAPSHOT:
            if (!*optarg)
                kvbt_usage_error(prog, "--snapshot: empty path");
            free(o->snapshot);
            o->snapshot = ixd_strdup(optarg);
            break;
        case OPT_STALE:
        case OPT_DROP:
            if (!ixd_parse_seconds(optarg, c == OPT_STALE ? &o->stale_after : &o->drop_after))
                kvbt_usage_error(prog, "--%s '%s': not a positive number of seconds",
                                 c == OPT_STALE ? "stale-after" : "drop-after", optarg);
            break;
        case OPT_REDIS:
            if (strncmp(optarg, "redis://", 8) != 0 || !optarg[8] || !ixd_printable(optarg, false))
                kvbt_usage_error(
                    prog, "--redis '%s': expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
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
                kvbt_usage_error(prog, "--role '%s': relay or replica", optarg);
            o->role_given = true;
            break;
        case OPT_REDIS_PREFIX:
            if (!*optarg || strlen(optarg) > 64 || !ixd_printable(optarg, false))
                kvbt_usage_error(prog,
                                 "--redis-prefix '%s': 1 to 64 bytes of printable ASCII without "
                                 "blanks",
                                 optarg);
            free(o->redis_prefix);
            o->redis_prefix = ixd_strdup(optarg);
            break;
        case OPT_SNAP_BATCHES:
            if (!kvbt_parse_u64(optarg, 0, UINT32_MAX, &v))
                kvbt_usage_error(
                    prog, "--snapshot-every-batches '%s': not an integer in 0..4294967295", optarg);
            o->snapshot_batches = (int64_t)v;
            break;
        case OPT_SNAP_EVERY: {
            double sv = 0;
            if (strcmp(optarg, "0") != 0 &&
                (!ixd_parse_seconds(optarg, &sv) || sv * 1000.0 > (double)UINT32_MAX || sv < 0.001))
                kvbt_usage_error(prog,
                                 "--snapshot-every '%s': not a number of seconds in 0.001..4294967 "
                                 "(or 0: never)",
                                 optarg);
            o->snapshot_every_s = sv;
            break;
        }
        case 'h':
            ixd_help(stdout);
            exit(0);
        default: /* getopt printed what was wrong */
            fprintf(stderr, "Try '%s --help'.\n", prog);
            exit(2);
        }
    }
    if (optind < all.n)
        kvbt_usage_error(prog, "unexpected argument '%s'", all.v[optind]);
    if (!o->listen)
        o->listen = ixd_strdup(IXD_DEFAULT_LISTEN);
    if (o->role_given && !o->redis)
        kvbt_usage_error(prog, "--role needs --redis URL (router replicas share the index through "
                               "Redis)");
    if (o->redis && !o->role_given)
        kvbt_usage_error(prog, "--redis needs --role relay or --role replica");
    if (!o->redis && (o->redis_prefix || o->snapshot_batches >= 0 || o->snapshot_every_s >= 0))
        kvbt_usage_error(prog,
                         "--redis-prefix, --snapshot-every-batches and --snapshot-every apply "
                         "with --redis only");
    if (o->redis && o->snapshot)
        kvbt_usage_error(prog,
                         "--snapshot FILE does not apply with --redis: Redis holds the snapshot "
                         "(the active relay writes it; see --snapshot-every-batches, "
                         "--snapshot-every)");
    if (o->role == IXD_REPLICA && o->n_workers)
        kvbt_usage_error(prog, "--role replica takes no --worker: a replica learns the fleet from "
                               "Redis (give the workers to the relays)");
    if (o->role == IXD_REPLICA && (o->snapshot_batches >= 0 || o->snapshot_every_s >= 0))
        kvbt_usage_error(prog, "--snapshot-every-batches and --snapshot-every are relay options "
                               "(the active relay writes the snapshot)");
    if (o->role == IXD_RELAY && !o->n_workers)
        kvbt_usage_error(prog, "--role relay needs at least one --worker");
    for (size_t i = 0; i < o->n_workers; i++) {
        ixd_worker *w = &o->workers[i];
        if (w->kind != KVB_WIRE_KVBLOCK && w->block_size && w->block_size != o->block_size)
            kvbt_usage_error(prog,
                             "--worker %s: kind=%s needs block-size=%u (--block-size): its "
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
