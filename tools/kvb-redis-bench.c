/*
 * kvb-redis-bench - router replicas on Redis (kvblock/redis.h), the three
 * measurements of the issue, each next to a baseline measured in the same run:
 *
 *  1. cold start: a relay logs E events (default 2.28 M, Dynamo #10580) from W
 *     workers (default 7) with a snapshot every --snapshot-entries entries; a new
 *     replica then loads the newest snapshot and reads the stream tail. Reported:
 *     create -> SYNCED, split into snapshot fetch + load and tail; baseline: the
 *     same events applied to an index directly (no Redis), and save_mem+load_mem
 *     of the final index. The replica's answers are compared with the relay's.
 *  2. steady state: a feeder offers --rate events/s (default 1 M) for --seconds to
 *     the relay (the subscriber's work: apply to the relay's index, then the
 *     callback); a replica follows. Reported: events/s logged and applied by the
 *     replica, relay-queue -> replica-apply lag (p50/p99/max of samples every
 *     10 ms; one host, one clock), entries behind, overflows, catch-up after the
 *     feed stops; baseline: the events/s one index absorbs directly.
 *  3. lookups: 64-block prefix matches/s on the replica by one thread while it
 *     ingests (during 2), and on the same replica idle afterwards (baseline).
 *
 * Events are sequences of blocks (hash = f(sequence, position)): STORED extends a
 * sequence by 1-4 blocks (device, 10 % host), REMOVED takes 1-4 blocks off a
 * sequence's tail; each worker holds at most --held blocks. Batches carry
 * --batch events. The bench starts its own redis-server (free loopback port,
 * temporary directory, appendonly yes, appendfsync everysec) and stops it.
 *
 *   kvb-redis-bench [--quick] [--events N] [--workers W] [--batch B] [--rate R]
 *                   [--seconds S] [--snapshot-entries N] [--held N]
 *                   [--redis-server PATH]
 */
#include "kvblock/redis.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#ifdef KVB_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif

static struct {
    uint64_t events;
    uint32_t workers, batch;
    double rate, seconds;
    uint32_t snapshot_entries;
    uint32_t held;
    const char *server;
} A = {2280000, 7, 32, 1e6, 5, 10000, 100000, "redis-server"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "kvb-redis-bench: %s: %s\n", what, rc ? kvb_strerror(rc) : "failed");
    exit(1);
}

/* ---- workload --------------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t block_hash(uint64_t seq_id, uint32_t pos)
{
    return mix(seq_id * 0x100000001b3ull + pos);
}

struct gseq {
    uint64_t id;
    uint32_t len;
    uint8_t tier;
};

struct gen {
    uint64_t rng;
    struct gseq *seqs;
    uint32_t n, cap;
    uint64_t held;
    /* one batch */
    kvb_index_event *ev;
    uint64_t *hbuf;
};

static uint64_t grand(struct gen *g)
{
    g->rng = mix(g->rng);
    return g->rng;
}

static void gen_init(struct gen *g, uint64_t seed)
{
    memset(g, 0, sizeof *g);
    g->rng = seed;
    g->cap = 1024;
    g->seqs = malloc(sizeof *g->seqs * g->cap);
    g->ev = malloc(sizeof *g->ev * A.batch);
    g->hbuf = malloc(sizeof *g->hbuf * A.batch * 4);
    if (!g->seqs || !g->ev || !g->hbuf)
        die("out of memory", 0);
}

static void gen_fini(struct gen *g)
{
    free(g->seqs);
    free(g->ev);
    free(g->hbuf);
}

/* One batch of A.batch events into g->ev (hashes in g->hbuf). */
static void gen_batch(struct gen *g)
{
    uint64_t *hp = g->hbuf;
    for (uint32_t i = 0; i < A.batch; i++) {
        kvb_index_event *e = &g->ev[i];
        memset(e, 0, sizeof *e);
        uint32_t k = 1 + (uint32_t)(grand(g) % 4);
        bool store = g->n == 0 || (g->held < A.held && grand(g) % 10 < 7);
        if (store) {
            struct gseq *s;
            if (g->n == 0 || grand(g) % 10 < 3) {
                if (g->n == g->cap) {
                    g->cap *= 2;
                    g->seqs = realloc(g->seqs, sizeof *g->seqs * g->cap);
                    if (!g->seqs)
                        die("out of memory", 0);
                }
                s = &g->seqs[g->n++];
                s->id = grand(g);
                s->len = 0;
                s->tier = grand(g) % 10 == 0 ? KVB_TIER_HOST : KVB_TIER_DEVICE;
            } else {
                s = &g->seqs[grand(g) % g->n];
            }
            e->type = KVB_INDEX_EV_STORED;
            e->tier = (kvb_tier)s->tier;
            e->n_hashes = k;
            e->hashes = hp;
            for (uint32_t j = 0; j < k; j++)
                *hp++ = block_hash(s->id, s->len + j);
            s->len += k;
            g->held += k;
        } else {
            uint32_t si = (uint32_t)(grand(g) % g->n);
            struct gseq *s = &g->seqs[si];
            if (k > s->len)
                k = s->len;
            e->type = KVB_INDEX_EV_REMOVED;
            e->tier = (kvb_tier)s->tier;
            e->n_hashes = k;
            e->hashes = hp;
            for (uint32_t j = 0; j < k; j++)
                *hp++ = block_hash(s->id, s->len - k + j);
            s->len -= k;
            g->held -= k;
            if (s->len == 0)
                g->seqs[si] = g->seqs[--g->n];
        }
    }
}

/* A 64-block request: the start of one of worker w's sequences. */
static void gen_request(struct gen *g, uint64_t *out)
{
    uint64_t id = g->n ? g->seqs[grand(g) % g->n].id : grand(g);
    for (uint32_t p = 0; p < 64; p++)
        out[p] = block_hash(id, p);
}

/* ---- redis-server ------------------------------------------------------------------- */

static pid_t server_pid;
static char server_dir[64], url[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        die("free port", -errno);
    close(fd);
    return ntohs(a.sin_port);
}

static void server_start(void)
{
    int port = free_port();
    snprintf(server_dir, sizeof server_dir, "/tmp/kvb-redis-bench-XXXXXX");
    if (!mkdtemp(server_dir))
        die("mkdtemp", -errno);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    fflush(stdout);
    fflush(stderr);
    server_pid = fork();
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char ps[16];
        snprintf(ps, sizeof ps, "%d", port);
        if (!freopen("/dev/null", "w", stdout))
            _exit(127);
        execlp(A.server, A.server, "--port", ps, "--bind", "127.0.0.1", "--dir", server_dir,
               "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", (char *)NULL);
        _exit(127);
    }
#ifdef KVB_HAVE_REDIS
    for (int i = 0; i < 500; i++) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return;
        } else if (c) {
            redisFree(c);
        }
        usleep(20000);
    }
#endif
    die("redis-server did not start", 0);
}

static void server_stop(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", server_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "kvb-redis-bench: could not remove %s\n", server_dir);
    }
}

static long server_rss_kb(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)server_pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

/* ---- CPU accounting: what each part costs, whatever the machine's load ---------------- */

static double stat_cpu(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of this process's threads named comm (the library names its threads
 * kvb-relay and kvb-replica). */
static double cpu_of(const char *comm)
{
    DIR *d = opendir("/proc/self/task");
    double sum = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], name[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(name, sizeof name, f))
                name[0] = '\0';
            fclose(f);
        }
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, comm) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        sum += stat_cpu(path);
    }
    if (d)
        closedir(d);
    return sum;
}

static double redis_cpu(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)server_pid);
    return stat_cpu(path);
}

/* ---- relay feeding (what the subscriber does) ------------------------------------------- */

struct feed {
    kvb_redis_relay *relay;
    kvb_index *idx;
    uint32_t *sid;
    struct gen *g;
    char (*names)[24];
    int64_t *seq;
    uint64_t batches;
};

static void feed_one(struct feed *f, uint32_t w)
{
    struct gen *g = &f->g[w];
    gen_batch(g);
    int64_t s = ++f->seq[w];
    int rc = kvb_index_apply(f->idx, f->sid[w], g->ev, A.batch, s);
    if (rc < 0)
        die("apply", rc);
    kvb_index_batch b = {.ts = 0, .dp_rank = 0, .n_events = A.batch, .events = g->ev};
    kvb_redis_relay_subscriber_cb(f->relay, KVB_SUB_BATCH, f->names[w], s, &b, KVB_STREAM_LIVE);
    f->batches++;
}

/* ---- steady state threads ------------------------------------------------------------------ */

static atomic_bool feed_stop, look_stop;
static atomic_uint_fast64_t lookups;

struct look_arg {
    kvb_redis_replica *rep;
    kvb_index *plain; /* or a plain index */
    struct gen *g;    /* requests from worker 0..W-1 sequences (read only snapshot) */
    uint64_t (*reqs)[64];
    uint32_t n_reqs;
};

static void *look_main(void *p)
{
    struct look_arg *a = p;
    pthread_setname_np(pthread_self(), "bench-lookups");
    kvb_index_result res[16];
    uint64_t n = 0;
    uint32_t i = 0;
    while (!atomic_load_explicit(&look_stop, memory_order_relaxed)) {
        const uint64_t *h = a->reqs[i++ % a->n_reqs];
        int rc = a->rep ? kvb_redis_replica_match(a->rep, h, 64, res, 16)
                        : kvb_index_match(a->plain, h, 64, res, 16);
        if (rc < 0)
            die("match", rc);
        n++;
    }
    atomic_fetch_add(&lookups, n);
    return NULL;
}

struct feed_arg {
    struct feed *f;
    double rate_batches;
    uint64_t done;
};

static void *feed_main(void *p)
{
    struct feed_arg *a = p;
    pthread_setname_np(pthread_self(), "bench-feeder");
    double t0 = now_s();
    uint32_t w = 0;
    while (!atomic_load(&feed_stop)) {
        double due = (now_s() - t0) * a->rate_batches;
        while ((double)a->done < due && !atomic_load(&feed_stop)) {
            feed_one(a->f, w);
            w = (w + 1) % A.workers;
            a->done++;
        }
        if ((double)a->done >= due)
            usleep(200);
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static bool same_answers(kvb_redis_replica *rep, kvb_index *ref, uint64_t (*reqs)[64], uint32_t n)
{
    kvb_index_result a[16], b[16];
    kvb_index *ri = kvb_redis_replica_acquire(rep);
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i++) {
        int na = kvb_index_match(ri, reqs[i], 64, a, 16);
        int nb = kvb_index_match(ref, reqs[i], 64, b, 16);
        if (na != nb)
            ok = false;
        for (int k = 0; ok && k < na && k < 16; k++)
            ok = a[k].device == b[k].device && a[k].host == b[k].host && a[k].disk == b[k].disk &&
                 strcmp(a[k].worker, b[k].worker) == 0;
    }
    kvb_redis_replica_release(rep, ri);
    return ok;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc;) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "--quick") == 0) {
            A.events = 228000;
            A.seconds = 2;
            A.snapshot_entries = 2000;
            A.held = 20000;
            i++;
            continue;
        }
        if (strcmp(a, "--events") == 0)
            A.events = strtoull(v, NULL, 10);
        else if (strcmp(a, "--workers") == 0)
            A.workers = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            A.batch = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0)
            A.rate = strtod(v, NULL);
        else if (strcmp(a, "--seconds") == 0)
            A.seconds = strtod(v, NULL);
        else if (strcmp(a, "--snapshot-entries") == 0)
            A.snapshot_entries = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--held") == 0)
            A.held = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--redis-server") == 0)
            A.server = v;
        else {
            fprintf(stderr, "usage: kvb-redis-bench [--quick] [--events N] [--workers W] "
                            "[--batch B] [--rate R] [--seconds S] [--snapshot-entries N] "
                            "[--held N] [--redis-server PATH]\n");
            return 2;
        }
        i += 2;
    }
    if (!kvb_redis_available())
        die("built without hiredis", -ENOTSUP);
    if (A.workers == 0 || A.workers > 64 || A.batch == 0)
        die("bad --workers / --batch", -EINVAL);
    signal(SIGPIPE, SIG_IGN);
    pthread_setname_np(pthread_self(), "bench-main");
    uint64_t n_batches = A.events / A.batch;
    printf("kvb-redis-bench: %" PRIu64 " events (%" PRIu64 " batches of %u) from %u workers, "
           "snapshot every %u entries, <= %u blocks held per worker; load average %.2f\n",
           n_batches * A.batch, n_batches, A.batch, A.workers, A.snapshot_entries, A.held,
           loadavg());

    kvb_index_config icfg;
    kvb_index_config_init(&icfg);
    char names[64][24];
    for (uint32_t w = 0; w < A.workers; w++)
        snprintf(names[w], sizeof names[w], "worker%u", w);

    /* ---- baseline: the same events straight into an index ---- */
    struct gen *g = calloc(A.workers, sizeof *g);
    kvb_index *plain;
    int rc = kvb_index_create(&icfg, &plain);
    if (rc < 0)
        die("index", rc);
    uint32_t psid[64];
    for (uint32_t w = 0; w < A.workers; w++) {
        gen_init(&g[w], 1000 + w);
        kvb_index_stream_config sc = {.name = names[w], .dp_rank = 0};
        if ((rc = kvb_index_stream_add(plain, &sc, &psid[w])) < 0)
            die("stream", rc);
    }
    double c_direct = cpu_of("bench-main");
    double t0 = now_s();
    for (uint64_t b = 0; b < n_batches; b++) {
        uint32_t w = (uint32_t)(b % A.workers);
        gen_batch(&g[w]);
        if ((rc = kvb_index_apply(plain, psid[w], g[w].ev, A.batch, (int64_t)(b / A.workers))) < 0)
            die("apply", rc);
    }
    double t_direct = now_s() - t0;
    c_direct = cpu_of("bench-main") - c_direct;
    void *sbuf;
    size_t slen;
    t0 = now_s();
    if ((rc = kvb_index_save_mem(plain, &sbuf, &slen)) < 0)
        die("save_mem", rc);
    double t_save = now_s() - t0;
    kvb_index *loaded;
    t0 = now_s();
    if ((rc = kvb_index_load_mem(sbuf, slen, &icfg, &loaded)) < 0)
        die("load_mem", rc);
    double t_load = now_s() - t0;
    free(sbuf);
    kvb_index_destroy(loaded);
    kvb_index_stats ist;
    kvb_index_stats_get(plain, &ist);
    for (uint32_t w = 0; w < A.workers; w++)
        gen_fini(&g[w]);

    /* ---- through Redis ---- */
    server_start();
    atexit(server_stop);
    kvb_redis_relay_config rcfg;
    kvb_redis_relay_config_init(&rcfg);
    rcfg.url = url;
    rcfg.snapshot_entries = A.snapshot_entries;
    rcfg.snapshot_ms = 0;
    rcfg.snapshot_ms = 3600000;
    rcfg.append_max_entries = 1024;
    kvb_redis_relay *relay;
    if ((rc = kvb_redis_relay_create(&rcfg, &relay)) < 0)
        die("relay", rc);
    if ((rc = kvb_redis_relay_wait_active(relay, 10000)) < 0)
        die("relay active", rc);
    struct feed f = {.relay = relay, .idx = kvb_redis_relay_index(relay), .g = g, .names = names};
    uint32_t rsid[64];
    int64_t seqs[64];
    f.sid = rsid;
    f.seq = seqs;
    for (uint32_t w = 0; w < A.workers; w++) {
        gen_init(&g[w], 1000 + w);
        seqs[w] = -1;
        kvb_index_stream_config sc = {.name = names[w], .dp_rank = 0};
        if ((rc = kvb_index_stream_add(f.idx, &sc, &rsid[w])) < 0)
            die("stream", rc);
    }
    double c_main0 = cpu_of("bench-main"), c_relay0 = cpu_of("kvb-relay"), c_redis0 = redis_cpu();
    t0 = now_s();
    for (uint64_t b = 0; b < n_batches; b++) {
        feed_one(&f, (uint32_t)(b % A.workers));
        if ((b & 1023) == 1023) {
            /* keep the queue bounded without overflowing: the callback never waits */
            kvb_redis_relay_stats rs;
            kvb_redis_relay_stats_get(relay, &rs);
            while (rs.queued > 16384) {
                usleep(1000);
                kvb_redis_relay_stats_get(relay, &rs);
            }
        }
    }
    if ((rc = kvb_redis_relay_flush(relay, 120000)) < 0)
        die("flush", rc);
    double t_log = now_s() - t0;
    double c_feed = cpu_of("bench-main") - c_main0, c_relay = cpu_of("kvb-relay") - c_relay0,
           c_redis = redis_cpu() - c_redis0;
    kvb_redis_relay_stats rs;
    kvb_redis_relay_stats_get(relay, &rs);
    if (rs.overflows)
        printf("  (relay queue overflowed %" PRIu64 " times)\n", rs.overflows);
    uint64_t tail = rs.appended % (A.snapshot_entries ? A.snapshot_entries : 1);

    printf("\n1. cold start of a replica (snapshot + stream tail)\n");
    printf("  %-44s %10.3f s  %8.2f M events/s (CPU %.2f s)\n",
           "baseline: apply to an index directly", t_direct,
           (double)(n_batches * A.batch) / t_direct / 1e6, c_direct);
    printf("  %-44s %10.3f s  (%zu bytes, %" PRIu64 " entries, %" PRIu64 " keys)\n",
           "baseline: save_mem + load_mem", t_save + t_load, slen, ist.entries, ist.keys);
    printf("  %-44s %10.3f s  %8.2f M events/s (%" PRIu64 " snapshots of %" PRIu64
           " bytes, last %.3f s)\n",
           "relay: log every batch (+ snapshots)", t_log,
           (double)(n_batches * A.batch) / t_log / 1e6, rs.snapshots, rs.snapshot_bytes,
           rs.snapshot_seconds);

    printf("  %-44s %10.3f s  (CPU: subscriber side %.2f s, relay thread %.2f s, redis-server "
           "%.2f s)\n",
           "  CPU of the logging", c_feed + c_relay + c_redis, c_feed, c_relay, c_redis);
    kvb_redis_replica_config pcfg;
    kvb_redis_replica_config_init(&pcfg);
    pcfg.url = url;
    kvb_redis_replica *rep;
    c_redis0 = redis_cpu();
    t0 = now_s();
    if ((rc = kvb_redis_replica_create(&pcfg, &rep)) < 0)
        die("replica", rc);
    if ((rc = kvb_redis_replica_wait_synced(rep, 120000)) < 0)
        die("replica sync", rc);
    double t_cold = now_s() - t0;
    double c_rep = cpu_of("kvb-replica"), c_credis = redis_cpu() - c_redis0;
    kvb_redis_replica_stats ps;
    kvb_redis_replica_stats_get(rep, &ps);
    printf("  %-44s %10.3f s  (snapshot %.3f s for %" PRIu64 " bytes; tail %" PRIu64
           " entries = %" PRIu64 " events)\n",
           "replica: create -> synced", t_cold, ps.snapshot_seconds, ps.snapshot_bytes, ps.applied,
           ps.applied * A.batch);
    printf("  %-44s %10.3f s  (CPU: replica thread %.2f s, redis-server %.2f s: the wall time "
           "on an idle machine)\n",
           "  CPU of the cold start", c_rep + c_credis, c_rep, c_credis);
    (void)tail;
    /* the replica answers as the relay does */
    uint32_t n_reqs = 4096;
    uint64_t(*reqs)[64] = malloc(sizeof *reqs * n_reqs);
    for (uint32_t i = 0; i < n_reqs; i++)
        gen_request(&g[i % A.workers], reqs[i]);
    bool same = same_answers(rep, f.idx, reqs, n_reqs);
    printf("  %-44s %s (%u 64-block requests)\n", "replica answers == relay answers",
           same ? "yes" : "NO", n_reqs);
    printf("  %-44s %10.3f  (target <= 2 s)\n", "cold start / 2.28 M-event target", t_cold);

    /* ---- steady state ---- */
    printf("\n2. steady state at %.2f M events/s offered for %.0f s (%.0f batches/s), "
           "3. lookups while ingesting\n",
           A.rate / 1e6, A.seconds, A.rate / A.batch);
    kvb_redis_replica_stats_get(rep, &ps); /* resets the max */
    kvb_redis_relay_stats rs0 = rs;
    kvb_redis_relay_stats_get(relay, &rs0);
    uint64_t applied0 = ps.applied;
    struct feed_arg fa = {.f = &f, .rate_batches = A.rate / A.batch};
    struct look_arg la = {.rep = rep, .reqs = reqs, .n_reqs = n_reqs};
    atomic_store(&feed_stop, false);
    atomic_store(&look_stop, false);
    atomic_store(&lookups, 0);
    pthread_t ft, lt;
    size_t cap = (size_t)(A.seconds * 100 + 100);
    double *lag = malloc(sizeof *lag * cap), *behind = malloc(sizeof *behind * cap);
    double *own = malloc(sizeof *own * cap), *hist_t = malloc(sizeof *hist_t * cap);
    uint64_t *hist_enq = malloc(sizeof *hist_enq * cap);
    size_t ns = 0, nh = 0, hj = 0;
    uint64_t enq0 = rs0.enqueued;
    double l0 = loadavg();
    double cs_relay = cpu_of("kvb-relay"), cs_rep = cpu_of("kvb-replica"), cs_redis = redis_cpu();
    t0 = now_s();
    pthread_create(&ft, NULL, feed_main, &fa);
    pthread_create(&lt, NULL, look_main, &la);
    uint64_t max_queue = 0;
    while (now_s() - t0 < A.seconds) {
        usleep(10000);
        kvb_redis_replica_stats s;
        kvb_redis_replica_stats_get(rep, &s);
        kvb_redis_relay_stats r;
        kvb_redis_relay_stats_get(relay, &r);
        if (r.queued > max_queue)
            max_queue = r.queued;
        /* end-to-end lag: how long ago the relay had accepted as many entries as
         * the replica has applied now */
        double tn = now_s();
        if (nh < cap) {
            hist_t[nh] = tn;
            hist_enq[nh++] = r.enqueued - enq0;
        }
        uint64_t applied = s.applied - applied0;
        while (hj + 1 < nh && hist_enq[hj] < applied)
            hj++;
        if (ns < cap && applied > 0 && hist_enq[hj] >= applied) {
            lag[ns] = (tn - hist_t[hj]) * 1000.0;
            own[ns] = s.apply_lag_ms;
            behind[ns] = (double)(r.enqueued - enq0 - applied);
            ns++;
        }
    }
    double cs_feed = cpu_of("bench-feeder"), cs_look = cpu_of("bench-lookups");
    atomic_store(&feed_stop, true);
    atomic_store(&look_stop, true);
    pthread_join(ft, NULL);
    pthread_join(lt, NULL);
    double t_feed = now_s() - t0;
    uint64_t look_busy = atomic_load(&lookups);
    double l1 = loadavg();
    /* catch-up: the relay's queue, then the replica */
    double tc = now_s();
    if ((rc = kvb_redis_relay_flush(relay, 120000)) < 0)
        die("flush", rc);
    kvb_redis_relay_stats_get(relay, &rs);
    for (;;) {
        kvb_redis_replica_stats s;
        kvb_redis_replica_stats_get(rep, &s);
        if (s.applied - applied0 >= rs.appended - rs0.appended && s.lag_entries == 0)
            break;
        if (now_s() - tc > 120)
            die("replica catch-up", -ETIMEDOUT);
        usleep(2000);
    }
    double t_catch = now_s() - tc;
    cs_relay = cpu_of("kvb-relay") - cs_relay;
    cs_rep = cpu_of("kvb-replica") - cs_rep;
    cs_redis = redis_cpu() - cs_redis;
    kvb_redis_replica_stats_get(rep, &ps);
    uint64_t offered = fa.done * A.batch;
    uint64_t logged = (rs.appended - rs0.appended) * A.batch;
    qsort(lag, ns, sizeof *lag, cmp_d);
    qsort(own, ns, sizeof *own, cmp_d);
    qsort(behind, ns, sizeof *behind, cmp_d);
    printf("  %-44s %10.2f M events/s (%" PRIu64 " events in %.2f s)\n", "offered (fed)",
           (double)offered / t_feed / 1e6, offered, t_feed);
    printf("  %-44s %10.2f M events/s (queue max %" PRIu64 " entries, overflows %" PRIu64 ")\n",
           "logged by the relay (incl. catch-up)", (double)logged / (t_feed + t_catch) / 1e6,
           max_queue, rs.overflows - rs0.overflows);
    printf("  %-44s %10.2f / %.2f / %.2f ms (p50 / p99 / max of %zu samples every 10 ms)\n",
           "lag: relay accepted -> replica applied", pct(lag, ns, 0.5), pct(lag, ns, 0.99),
           ns ? lag[ns - 1] : 0.0, ns);
    printf("  %-44s %10.2f / %.2f ms (p50 / p99; the replica's own apply_lag_ms)\n",
           "  per entry, relay clock -> replica clock", pct(own, ns, 0.5), pct(own, ns, 0.99));
    printf("  %-44s %10.0f / %.0f entries (p50 / p99)\n", "entries behind (accepted - applied)",
           pct(behind, ns, 0.5), pct(behind, ns, 0.99));
    printf("  %-44s %10.3f s\n", "catch-up after the feed stopped", t_catch);
    double mev = (double)logged / 1e6;
    printf("  %-44s %10.2f s  per M events (subscriber side %.2f, relay thread %.2f, "
           "redis-server %.2f, replica thread %.2f)\n",
           "CPU of the log path", (cs_feed + cs_relay + cs_redis + cs_rep) / mev, cs_feed / mev,
           cs_relay / mev, cs_redis / mev, cs_rep / mev);
    printf("  %-44s %10.2f M events/s  (1 / CPU per event: one idle core per part would "
           "sustain the slowest part's rate)\n",
           "  rate the slowest part sustains on one core",
           mev / (cs_feed > cs_relay
                      ? (cs_feed > cs_redis ? (cs_feed > cs_rep ? cs_feed : cs_rep)
                                            : (cs_redis > cs_rep ? cs_redis : cs_rep))
                      : (cs_relay > cs_redis ? (cs_relay > cs_rep ? cs_relay : cs_rep)
                                             : (cs_redis > cs_rep ? cs_redis : cs_rep))));
    printf("  %-44s %10.2f s of CPU for %.2f s of lookups\n", "  lookup thread", cs_look, t_feed);
    printf("  %-44s %10.2f M events/s\n", "baseline: one index absorbs directly",
           (double)(n_batches * A.batch) / t_direct / 1e6);
    /* lookups idle */
    atomic_store(&look_stop, false);
    atomic_store(&lookups, 0);
    t0 = now_s();
    pthread_create(&lt, NULL, look_main, &la);
    usleep((useconds_t)(A.seconds > 2 ? 2e6 : A.seconds * 1e6));
    double ci_look = cpu_of("bench-lookups");
    atomic_store(&look_stop, true);
    pthread_join(lt, NULL);
    double t_idle = now_s() - t0;
    uint64_t look_idle = atomic_load(&lookups);
    printf("  %-44s %10.0f lookups/s (64-block requests; %.0f per CPU-second of the lookup "
           "thread)\n",
           "replica lookups while ingesting", (double)look_busy / t_feed,
           cs_look > 0 ? (double)look_busy / cs_look : 0.0);
    printf("  %-44s %10.0f lookups/s (%.0f per CPU-second)\n", "baseline: the same replica idle",
           (double)look_idle / t_idle, ci_look > 0 ? (double)look_idle / ci_look : 0.0);
    same = same_answers(rep, f.idx, reqs, n_reqs);
    printf("  %-44s %s\n", "replica answers == relay answers after", same ? "yes" : "NO");
    printf("  load average %.2f before the steady-state run, %.2f after; redis-server RSS %ld "
           "MiB\n",
           l0, l1, server_rss_kb() / 1024);

    kvb_redis_replica_destroy(rep);
    kvb_redis_relay_destroy(relay);
    kvb_index_destroy(plain);
    for (uint32_t w = 0; w < A.workers; w++)
        gen_fini(&g[w]);
    free(g);
    free(reqs);
    free(lag);
    free(own);
    free(behind);
    free(hist_t);
    free(hist_enq);
    return same ? 0 : 1;
}
