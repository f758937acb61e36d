/*
 * kvb-redis-node - one node of the Redis replica setup (kvblock/redis.h,
 * FLEET.md section 8) over the library's API, for tests and experiments. The
 * daemon (kvb-indexer --redis URL --role relay|replica) wires the same calls.
 *
 *   kvb-redis-node relay   --redis URL --worker NAME=ENDPOINT[,replay=EP][,kind=K]
 *                          [,block-size=N] ... [options]
 *       a relay: a standby until it holds the lease, then a subscriber on its
 *       index feeds the log (standbys run the very same command)
 *   kvb-redis-node replica --redis URL [options]
 *   kvb-redis-node dump    --redis URL     every stream entry as one JSON line
 *
 * Options: --prefix P, --block-size N (16), --seed S, --stale-after S,
 * --snapshot-entries N, --snapshot-ms MS, --queue N, --retain-bytes N,
 * --replay-timeout-ms MS.
 *
 * Control (relay, replica): one command per line on stdin, one JSON line back on
 * stdout: `state`; `probe IN OUT` (IN: one hash per line; OUT: per hash the
 * sorted holders "worker/rank/tier" where tier is the best one the prefix
 * match reports: d device, h host, k disk); `probe-tokens IN OUT` (IN: token ids
 * of one request per line; OUT: the holders "worker/rank/device,host,disk"); `flush` (relay: wait
 * until the queue is appended); `snapshot` (relay); `quit` (or end of input): clean shutdown, exit
 * 0. Logs go to stderr.
 */
#include "kvblock/redis.h"
#include "kvblock/subscriber.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KVB_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif

#define MAX_WORKERS 256

struct opts {
    const char *role, *url, *prefix;
    uint32_t block_size;
    uint64_t seed;
    double stale_after;
    uint32_t snapshot_entries, snapshot_ms, queue, replay_timeout_ms;
    long long retain_bytes; /* -1: the default */
    kvb_subscriber_worker workers[MAX_WORKERS];
    char *worker_specs[MAX_WORKERS];
    int n_workers;
};

static struct opts O;
static kvb_redis_relay *RELAY;
static kvb_redis_replica *REPLICA;
static kvb_subscriber *SUB;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stopping;
static atomic_int sub_state; /* 0 none, 1 subscribed, -1 failed */

static void die(const char *msg)
{
    fprintf(stderr, "kvb-redis-node: %s\n", msg);
    exit(2);
}

static void usage(void)
{
    fprintf(stderr, "usage: kvb-redis-node relay|replica|dump --redis URL [--worker "
                    "NAME=ENDPOINT[,replay=EP][,kind=vllm|sglang|kvblock][,block-size=N]]... "
                    "[--prefix P] [--block-size N] [--seed S] [--stale-after S] "
                    "[--snapshot-entries N] [--snapshot-ms MS] [--queue N]\n");
    exit(2);
}

static void parse_worker(char *spec, kvb_subscriber_worker *w)
{
    memset(w, 0, sizeof *w);
    char *eq = strchr(spec, '=');
    if (!eq)
        die("--worker NAME=ENDPOINT");
    *eq = '\0';
    w->name = spec;
    char *rest = eq + 1;
    char *comma = strchr(rest, ',');
    if (comma)
        *comma = '\0';
    w->endpoint = rest;
    w->kind = KVB_WIRE_VLLM;
    while (comma) {
        char *opt = comma + 1;
        comma = strchr(opt, ',');
        if (comma)
            *comma = '\0';
        if (strncmp(opt, "replay=", 7) == 0)
            w->replay_endpoint = opt + 7;
        else if (strcmp(opt, "kind=vllm") == 0)
            w->kind = KVB_WIRE_VLLM;
        else if (strcmp(opt, "kind=sglang") == 0)
            w->kind = KVB_WIRE_SGLANG;
        else if (strcmp(opt, "kind=kvblock") == 0)
            w->kind = KVB_WIRE_KVBLOCK;
        else if (strncmp(opt, "block-size=", 11) == 0)
            w->block_size = (uint32_t)strtoul(opt + 11, NULL, 10);
        else if (strncmp(opt, "topic=", 6) == 0)
            w->topic = opt + 6;
        else
            die("unknown --worker option");
    }
}

static void parse(int argc, char **argv)
{
    if (argc < 2)
        usage();
    O.role = argv[1];
    O.prefix = "kvb:";
    O.block_size = 16;
    O.seed = 0;
    O.stale_after = 0;
    O.retain_bytes = -1;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(a, "--redis") == 0)
            O.url = v;
        else if (strcmp(a, "--prefix") == 0)
            O.prefix = v;
        else if (strcmp(a, "--block-size") == 0)
            O.block_size = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0)
            O.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--stale-after") == 0)
            O.stale_after = strtod(v, NULL);
        else if (strcmp(a, "--snapshot-entries") == 0)
            O.snapshot_entries = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--snapshot-ms") == 0)
            O.snapshot_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--queue") == 0)
            O.queue = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--retain-bytes") == 0)
            O.retain_bytes = strtoll(v, NULL, 10);
        else if (strcmp(a, "--replay-timeout-ms") == 0)
            O.replay_timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--worker") == 0) {
            if (O.n_workers == MAX_WORKERS)
                die("too many workers");
            O.worker_specs[O.n_workers] = strdup(v);
            parse_worker(O.worker_specs[O.n_workers], &O.workers[O.n_workers]);
            O.n_workers++;
        } else
            usage();
    }
    if (!O.url)
        usage();
}

static void index_config(kvb_index_config *c)
{
    kvb_index_config_init(c);
    c->block_size = O.block_size;
    if (O.seed)
        c->seed = O.seed;
    if (O.stale_after > 0)
        c->stale_after_s = O.stale_after;
}

/* ---- output ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void print_streams(FILE *f, kvb_index *idx)
{
    fputs("\"streams\":[", f);
    if (idx) {
        uint32_t ids[4096];
        int n = kvb_index_streams(idx, ids, 4096);
        if (n > 4096)
            n = 4096;
        for (int i = 0; i < n; i++) {
            kvb_index_stream_info si;
            if (kvb_index_stream_info_get(idx, ids[i], &si) < 0)
                continue;
            if (i)
                fputc(',', f);
            fputs("{\"worker\":", f);
            json_str(f, si.worker);
            fprintf(f,
                    ",\"dp_rank\":%" PRId64 ",\"state\":\"%s\",\"last_seq\":%" PRId64
                    ",\"batches\":%" PRIu64 ",\"events\":%" PRIu64 ",\"entries\":%" PRIu64
                    ",\"clears\":%" PRIu64 ",\"restarts\":%" PRIu64 "}",
                    si.dp_rank, kvb_stream_state_name(si.state), si.last_seq, si.batches, si.events,
                    si.entries, si.counters[KVB_COUNT_CLEARS], si.counters[KVB_COUNT_RESTARTS]);
        }
    }
    fputc(']', f);
}

static void print_state(FILE *f)
{
    fprintf(f, "{\"role\":\"%s\",\"pid\":%d,", O.role, (int)getpid());
    if (RELAY) {
        kvb_redis_relay_stats s;
        kvb_redis_relay_stats_get(RELAY, &s);
        fprintf(f,
                "\"relay\":{\"state\":\"%s\",\"inc\":%" PRIu64 ",\"connected\":%s,"
                "\"queued\":%" PRIu64 ",\"enqueued\":%" PRIu64 ",\"appended\":%" PRIu64
                ",\"refused\":%" PRIu64 ",\"discarded\":%" PRIu64 ",\"overflows\":%" PRIu64
                ",\"lost_clears\":%" PRIu64 ",\"reappended\":%" PRIu64 ",\"anomalies\":%" PRIu64
                ",\"snapshots\":%" PRIu64 ",\"snapshot_bytes\":%" PRIu64 ",\"trimmed\":%" PRIu64
                ",\"errors\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"lease_acquired\":%" PRIu64
                ",\"lease_lost\":%" PRIu64 ",\"followed\":%" PRIu64 ",\"takeover_ms\":%.3f,"
                "\"subscribed\":%d},",
                kvb_redis_relay_state_name(s.state), s.inc, s.connected ? "true" : "false",
                s.queued, s.enqueued, s.appended, s.refused, s.discarded, s.overflows,
                s.lost_clears, s.reappended, s.anomalies, s.snapshots, s.snapshot_bytes, s.trimmed,
                s.errors, s.reconnects, s.lease_acquired, s.lease_lost, s.followed,
                s.takeover_ns / 1e6, atomic_load(&sub_state));
        print_streams(f, kvb_redis_relay_index(RELAY));
    } else if (REPLICA) {
        kvb_redis_replica_stats s;
        kvb_redis_replica_stats_get(REPLICA, &s);
        fprintf(f,
                "\"replica\":{\"state\":\"%s\",\"connected\":%s,\"streams\":%u,"
                "\"snapshot_loads\":%" PRIu64 ",\"snapshot_bytes\":%" PRIu64
                ",\"snapshot_seconds\":%.4f,\"entries\":%" PRIu64 ",\"applied\":%" PRIu64
                ",\"duplicates\":%" PRIu64 ",\"fenced\":%" PRIu64 ",\"corrupt\":%" PRIu64
                ",\"holes\":%" PRIu64 ",\"regressions\":%" PRIu64 ",\"reloads\":%" PRIu64
                ",\"errors\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"lag_entries\":%" PRIu64
                ",\"lag_ms\":%.1f,\"apply_lag_ms\":%.3f,\"synced_ms\":%.1f},",
                kvb_redis_replica_state_name(s.state), s.connected ? "true" : "false", s.streams,
                s.snapshot_loads, s.snapshot_bytes, s.snapshot_seconds, s.entries, s.applied,
                s.duplicates, s.fenced, s.corrupt, s.holes, s.regressions, s.reloads, s.errors,
                s.reconnects, s.lag_entries, s.lag_ms, s.apply_lag_ms, s.synced_ns / 1e6);
        kvb_index *idx = kvb_redis_replica_acquire(REPLICA);
        print_streams(f, idx);
        kvb_redis_replica_release(REPLICA, idx);
    }
    fputs("}\n", f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int probe(kvb_index *idx, const char *in, const char *out, long *count)
{
    FILE *fi = fopen(in, "r");
    if (!fi)
        return -errno;
    FILE *fo = fopen(out, "w");
    if (!fo) {
        fclose(fi);
        return -errno;
    }
    char line[64];
    kvb_index_result res[256];
    char names[256][KVB_INDEX_NAME_MAX + 32];
    const char *ptrs[256];
    *count = 0;
    while (fgets(line, sizeof line, fi)) {
        uint64_t h = strtoull(line, NULL, 10);
        int n = idx ? kvb_index_match(idx, &h, 1, res, 256) : 0;
        if (n > 256)
            n = 256;
        int m = 0;
        for (int i = 0; i < n; i++) {
            char t = res[i].device ? 'd' : res[i].host ? 'h' : res[i].disk ? 'k' : '-';
            if (t == '-')
                continue;
            snprintf(names[m], sizeof names[m], "%s/%" PRId64 "/%c", res[i].worker, res[i].dp_rank,
                     t);
            ptrs[m] = names[m];
            m++;
        }
        qsort(ptrs, (size_t)m, sizeof ptrs[0], cmp_str);
        fprintf(fo, "%" PRIu64, h);
        for (int i = 0; i < m; i++)
            fprintf(fo, " %s", ptrs[i]);
        fputc('\n', fo);
        (*count)++;
    }
    fclose(fi);
    int rc = fclose(fo) == 0 ? 0 : -errno;
    return rc;
}

/* Token requests (one per line, ids separated by spaces): per line the holders with a
 * prefix, sorted, as "worker/rank/device,host,disk" (router hashes computed by the
 * index from the tokens: what ENGINE streams are matched by). */
static int probe_tokens(kvb_index *idx, const char *in, const char *out, long *count)
{
    FILE *fi = fopen(in, "r");
    if (!fi)
        return -errno;
    FILE *fo = fopen(out, "w");
    if (!fo) {
        fclose(fi);
        return -errno;
    }
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    uint32_t *toks = malloc(sizeof *toks * cap);
    kvb_index_result res[64];
    char names[64][KVB_INDEX_NAME_MAX + 64];
    const char *ptrs[64];
    *count = 0;
    while (line && toks && fgets(line, (int)cap, fi)) {
        size_t n = 0;
        for (char *p = line, *e; n < cap; p = e) {
            unsigned long v = strtoul(p, &e, 10);
            if (e == p)
                break;
            toks[n++] = (uint32_t)v;
        }
        int m = idx ? kvb_index_match_tokens(idx, toks, n, NULL, NULL, res, 64, NULL) : 0;
        if (m > 64)
            m = 64;
        if (m < 0)
            m = 0;
        for (int i = 0; i < m; i++) {
            snprintf(names[i], sizeof names[i], "%s/%" PRId64 "/%u,%u,%u", res[i].worker,
                     res[i].dp_rank, res[i].device, res[i].host, res[i].disk);
            ptrs[i] = names[i];
        }
        qsort(ptrs, (size_t)m, sizeof ptrs[0], cmp_str);
        for (int i = 0; i < m; i++)
            fprintf(fo, "%s%s", i ? " " : "", ptrs[i]);
        fputc('\n', fo);
        (*count)++;
    }
    free(line);
    free(toks);
    fclose(fi);
    return fclose(fo) == 0 ? 0 : -errno;
}

/* ---- relay ------------------------------------------------------------------------ */

static void on_state(void *user, kvb_redis_relay_state st, uint64_t inc)
{
    (void)user;
    fprintf(stderr, "kvb-redis-node[%d]: relay %s (incarnation %" PRIu64 ")\n", (int)getpid(),
            kvb_redis_relay_state_name(st), inc);
}

static void *relay_activate(void *arg)
{
    (void)arg;
    while (!atomic_load(&stopping)) {
        int rc = kvb_redis_relay_wait_active(RELAY, 200);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc < 0)
            return NULL; /* fenced or stopping */
        break;
    }
    if (atomic_load(&stopping))
        return NULL;
    kvb_subscriber_config sc;
    kvb_subscriber_config_init(&sc);
    sc.index = kvb_redis_relay_index(RELAY);
    sc.callback = kvb_redis_relay_subscriber_cb;
    sc.user = RELAY;
    if (O.replay_timeout_ms)
        sc.replay_timeout_ms = O.replay_timeout_ms;
    kvb_subscriber *sub = NULL;
    int rc = kvb_subscriber_create(&sc, &sub);
    if (rc < 0) {
        fprintf(stderr, "kvb-redis-node: subscriber: %s\n", kvb_strerror(rc));
        atomic_store(&sub_state, -1);
        return NULL;
    }
    for (int i = 0; i < O.n_workers; i++) {
        rc = kvb_subscriber_add_worker(sub, &O.workers[i]);
        if (rc < 0)
            fprintf(stderr, "kvb-redis-node: worker %s: %s\n", O.workers[i].name, kvb_strerror(rc));
    }
    SUB = sub;
    atomic_store(&sub_state, 1);
    return NULL;
}

/* ---- dump ---------------------------------------------------------------------------- */

#ifdef KVB_HAVE_REDIS
static int dump(void)
{
    /* redis://host:port[/db] only (tests) */
    char host[256] = "127.0.0.1";
    int port = 6379, db = 0;
    const char *p = O.url + strlen("redis://");
    if (strncmp(O.url, "redis://", 8) != 0 || sscanf(p, "%255[^:/]:%d/%d", host, &port, &db) < 1)
        die("dump: --redis redis://host:port[/db]");
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err)
        die("dump: cannot connect");
    redisReply *r;
    if (db) {
        r = redisCommand(c, "SELECT %d", db);
        freeReplyObject(r);
    }
    char pattern[256];
    snprintf(pattern, sizeof pattern, "%sstream:*", O.prefix);
    char cursor[64] = "0";
    char *keys[4096];
    int nk = 0;
    do {
        r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            die("dump: SCAN");
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements && nk < 4096; i++)
            keys[nk++] = strdup(r->element[1]->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    size_t pl = strlen(O.prefix) + strlen("stream:");
    for (int k = 0; k < nk; k++) {
        char start[64] = "-";
        for (;;) {
            r = redisCommand(c, "XRANGE %s %s + COUNT 1000", keys[k], start);
            if (!r || r->type != REDIS_REPLY_ARRAY)
                die("dump: XRANGE");
            if (r->elements == 0) {
                freeReplyObject(r);
                break;
            }
            for (size_t i = 0; i < r->elements; i++) {
                redisReply *e = r->element[i];
                redisReply *fl = e->element[1];
                long long seq = -9, inc = -9, ep = -9, sub = -9, n = -9;
                const char *batch = NULL;
                size_t blen = 0;
                for (size_t j = 0; j + 1 < fl->elements; j += 2) {
                    const char *kk = fl->element[j]->str;
                    redisReply *v = fl->element[j + 1];
                    if (strcmp(kk, "batch") == 0) {
                        batch = v->str;
                        blen = v->len;
                    } else if (strcmp(kk, "seq") == 0)
                        seq = atoll(v->str);
                    else if (strcmp(kk, "inc") == 0)
                        inc = atoll(v->str);
                    else if (strcmp(kk, "ep") == 0)
                        ep = atoll(v->str);
                    else if (strcmp(kk, "sub") == 0)
                        sub = atoll(v->str);
                    else if (strcmp(kk, "n") == 0)
                        n = atoll(v->str);
                }
                kvb_redis_entry d;
                int rc = batch ? kvb_redis_entry_decode(batch, blen, &d) : -EBADMSG;
                printf("{\"worker\":");
                json_str(stdout, keys[k] + pl);
                printf(",\"id\":\"%s\",\"n\":%lld,\"inc\":%lld,\"ep\":%lld,\"seq\":%lld,"
                       "\"sub\":%lld,\"kind\":\"%s\",\"rank\":%lld,\"events\":%d}\n",
                       e->element[0]->str, n, inc, ep, seq, sub,
                       rc == 0 ? kvb_redis_entry_kind_name(d.kind) : "corrupt",
                       rc == 0 ? (long long)d.dp_rank : -9, rc == 0 ? (int)d.n_events : -1);
                if (rc == 0)
                    kvb_redis_entry_fini(&d);
                snprintf(start, sizeof start, "(%s", e->element[0]->str);
            }
            freeReplyObject(r);
        }
        free(keys[k]);
    }
    redisFree(c);
    return 0;
}
#else
static int dump(void)
{
    die("dump: built without hiredis");
    return 1;
}
#endif

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    parse(argc, argv);
    if (strcmp(O.role, "dump") == 0)
        return dump();
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t act;
    bool act_started = false;
    int rc;
    if (strcmp(O.role, "relay") == 0 || strcmp(O.role, "standby") == 0) {
        O.role = "relay";
        kvb_redis_relay_config c;
        kvb_redis_relay_config_init(&c);
        c.url = O.url;
        c.prefix = O.prefix;
        index_config(&c.index);
        if (O.snapshot_entries)
            c.snapshot_entries = O.snapshot_entries;
        if (O.snapshot_ms)
            c.snapshot_ms = O.snapshot_ms;
        if (O.queue)
            c.queue_entries = O.queue;
        if (O.retain_bytes >= 0)
            c.retain_bytes = (uint64_t)O.retain_bytes;
        c.on_state = on_state;
        rc = kvb_redis_relay_create(&c, &RELAY);
        if (rc < 0) {
            fprintf(stderr, "kvb-redis-node: relay: %s\n", kvb_strerror(rc));
            return 1;
        }
        pthread_create(&act, NULL, relay_activate, NULL);
        act_started = true;
    } else if (strcmp(O.role, "replica") == 0) {
        kvb_redis_replica_config c;
        kvb_redis_replica_config_init(&c);
        c.url = O.url;
        c.prefix = O.prefix;
        index_config(&c.index);
        rc = kvb_redis_replica_create(&c, &REPLICA);
        if (rc < 0) {
            fprintf(stderr, "kvb-redis-node: replica: %s\n", kvb_strerror(rc));
            return 1;
        }
    } else {
        usage();
    }

    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        pthread_mutex_lock(&out_mu);
        if (strcmp(line, "state") == 0) {
            print_state(stdout);
        } else if (strncmp(line, "probe ", 6) == 0) {
            char in[2048], out[2048];
            if (sscanf(line + 6, "%2047s %2047s", in, out) != 2) {
                printf("{\"error\":\"probe IN OUT\"}\n");
            } else {
                long n = 0;
                int prc;
                if (REPLICA) {
                    kvb_index *idx = kvb_redis_replica_acquire(REPLICA);
                    prc = probe(idx, in, out, &n);
                    kvb_redis_replica_release(REPLICA, idx);
                } else {
                    prc = probe(RELAY ? kvb_redis_relay_index(RELAY) : NULL, in, out, &n);
                }
                if (prc < 0)
                    printf("{\"error\":\"%s\"}\n", kvb_strerror(prc));
                else
                    printf("{\"ok\":true,\"probed\":%ld}\n", n);
            }
        } else if (strncmp(line, "probe-tokens ", 13) == 0) {
            char in[2048], out[2048];
            long n = 0;
            int prc = -EINVAL;
            if (sscanf(line + 13, "%2047s %2047s", in, out) == 2) {
                if (REPLICA) {
                    kvb_index *idx = kvb_redis_replica_acquire(REPLICA);
                    prc = probe_tokens(idx, in, out, &n);
                    kvb_redis_replica_release(REPLICA, idx);
                } else {
                    prc = probe_tokens(RELAY ? kvb_redis_relay_index(RELAY) : NULL, in, out, &n);
                }
            }
            if (prc < 0)
                printf("{\"error\":\"%s\"}\n", kvb_strerror(prc));
            else
                printf("{\"ok\":true,\"probed\":%ld}\n", n);
        } else if (strcmp(line, "flush") == 0) {
            int frc = RELAY ? kvb_redis_relay_flush(RELAY, 10000) : 0;
            printf("{\"ok\":%s,\"rc\":%d}\n", frc == 0 ? "true" : "false", frc);
        } else if (strcmp(line, "snapshot") == 0) {
            size_t bytes = 0;
            int src = RELAY ? kvb_redis_relay_snapshot(RELAY, 20000, &bytes) : -EINVAL;
            printf("{\"ok\":%s,\"rc\":%d,\"bytes\":%zu}\n", src == 0 ? "true" : "false", src,
                   bytes);
        } else if (strcmp(line, "quit") == 0) {
            pthread_mutex_unlock(&out_mu);
            break;
        } else {
            printf("{\"error\":\"unknown command\"}\n");
        }
        fflush(stdout);
        pthread_mutex_unlock(&out_mu);
    }
    atomic_store(&stopping, true);
    if (act_started)
        pthread_join(act, NULL);
    if (SUB)
        kvb_subscriber_destroy(SUB);
    if (RELAY)
        kvb_redis_relay_destroy(RELAY);
    if (REPLICA)
        kvb_redis_replica_destroy(REPLICA);
    for (int i = 0; i < O.n_workers; i++)
        free(O.worker_specs[i]);
    printf("{\"bye\":true}\n");
    return 0;
}
