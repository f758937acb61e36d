/*
 * torture_index.c - the fleet index under concurrent writers and readers.
 *
 * Key space: NQ sequences of L blocks, tokens per sequence and their router
 * hashes K[q][i] (kvb_index_hashes). Sequence q is private to writer q % (W+1)
 * or, for q % (W+1) == W, shared by every writer.
 *
 * W writer threads each own three streams "t<w>-<j>" (rank j):
 *   j = 0: ROUTER, device tier only;   j = 1: ROUTER, host and disk only;
 *   j = 2: ENGINE (engine hashes EH[q][i] with tokens and parents), any tier.
 * They apply random batches (runs of STORED and REMOVED blocks of their own and
 * the shared sequences, sometimes a CLEARED), clear streams, mark them STALE and
 * LIVE, remove and re-add them, and keep an exact per-stream reference model
 * (copy counts per block and tier, drop counters).
 *
 * R reader threads match random prefixes while that happens and check what must
 * hold at every instant: results sorted (score desc, entries asc, name, rank),
 * 1 <= device + host + disk <= n, score = the tier-weighted sum, only known
 * worker names with their own rank, never a STALE stream, never a stream of
 * another writer for a private sequence (no false positive across streams),
 * never a device prefix on a host/disk-only stream nor a host or disk part on a
 * device-only one. They also read stats, infos, the stream list and the
 * Prometheus text, and take snapshots (save_mem, a coherent cut) that must load
 * and be self-consistent.
 *
 * At the end (single-threaded): every stream's entries, drop counters and
 * single-key matches equal its model; then every copy is removed one by one and
 * each (block, tier) entry must disappear exactly at its last copy; the index
 * ends empty (keys 0, entries 0). Exits non-zero on the first violation.
 *
 * usage: torture_index [threads=4] [ops=5000] [seed=time]
 *        threads are split into W = max(1, threads/2) writers and the rest readers;
 *        ops writer operations in total (ops / W each: the CI sizes "4 5000" and
 *        "8 20000" stay within seconds under helgrind and DRD); each reader runs
 *        until the writers are done, for at most ops / W iterations.
 */
#include "annotate.h"
#include "kvblock.h"
#include "kvblock/index.h"
#include "support/torture.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BS = 4, L = 12, NQ = 24, NJ = 3, MAXW = 16 };

static kvb_index *IDX;
static uint32_t TOK[NQ][L * BS];
static uint64_t K[NQ][L];  /* router hashes */
static uint64_t EH[NQ][L]; /* engine hashes of the ENGINE streams */
static int W, R;
static long OPS;
static atomic_int writers_left; /* readers stop at 0; orders nothing (KVB_ATOMIC_VAR) */

struct smodel {
    uint32_t id;
    uint32_t cnt[NQ][L][KVB_TIER_COUNT];
    uint64_t unknown_block, unknown_parent;
};

struct writer {
    int w;
    uint64_t rng;
    struct smodel s[NJ];
    pthread_t th;
};

static struct writer WR[MAXW];

static void stream_name(char *buf, size_t cap, int w, int j)
{
    snprintf(buf, cap, "t%d-%d", w, j);
}

static int owner_of(int q)
{
    int o = q % (W + 1);
    return o == W ? -1 : o; /* -1: shared */
}

static uint32_t entries_of(const struct smodel *m)
{
    uint32_t e = 0;
    for (int q = 0; q < NQ; q++)
        for (int i = 0; i < L; i++)
            for (int t = 0; t < KVB_TIER_COUNT; t++)
                e += m->cnt[q][i][t] > 0;
    return e;
}

static bool held_any(const struct smodel *m, int q, int i)
{
    const uint32_t *c = m->cnt[q][i];
    return c[0] || c[1] || c[2];
}

/* ---- writers ------------------------------------------------------------------ */

static int pick_seq(struct writer *wr)
{
    for (;;) {
        int q = (int)tu_rnd(&wr->rng, NQ);
        if (owner_of(q) == wr->w || owner_of(q) < 0)
            return q;
    }
}

static kvb_tier pick_tier(struct writer *wr, int j)
{
    if (j == 0)
        return KVB_TIER_DEVICE;
    if (j == 1)
        return tu_rnd(&wr->rng, 2) ? KVB_TIER_HOST : KVB_TIER_DISK;
    return (kvb_tier)tu_rnd(&wr->rng, 3);
}

static void add_stream(struct writer *wr, int j)
{
    char name[32];
    stream_name(name, sizeof name, wr->w, j);
    kvb_index_stream_config sc = {.name = name,
                                  .dp_rank = j,
                                  .hashes =
                                      j == 2 ? KVB_INDEX_HASHES_ENGINE : KVB_INDEX_HASHES_ROUTER};
    int rc = kvb_index_stream_add(IDX, &sc, &wr->s[j].id);
    if (rc)
        FAIL("stream_add %s: %s", name, kvb_strerror(rc));
    memset(wr->s[j].cnt, 0, sizeof wr->s[j].cnt);
    wr->s[j].unknown_block = wr->s[j].unknown_parent = 0;
}

/* Model of one event on stream j (ROUTER semantics; ENGINE: parent rule). */
static void model_event(struct smodel *m, int j, kvb_index_ev_type type, int q, int a, int b,
                        kvb_tier t)
{
    if (type == KVB_INDEX_EV_CLEARED) {
        memset(m->cnt, 0, sizeof m->cnt);
        return;
    }
    if (type == KVB_INDEX_EV_STORED) {
        if (j == 2 && a > 0 && !held_any(m, q, a - 1)) {
            m->unknown_parent += (uint64_t)(b - a);
            return;
        }
        for (int i = a; i < b; i++)
            m->cnt[q][i][t]++;
        return;
    }
    for (int i = a; i < b; i++) {
        if (m->cnt[q][i][t])
            m->cnt[q][i][t]--;
        else
            m->unknown_block++;
    }
}

static kvb_index_event make_event(int j, kvb_index_ev_type type, int q, int a, int b, kvb_tier t)
{
    kvb_index_event e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.tier = t;
    if (type == KVB_INDEX_EV_CLEARED)
        return e;
    e.n_hashes = (uint32_t)(b - a);
    e.hashes = j == 2 ? &EH[q][a] : &K[q][a];
    if (j == 2 && type == KVB_INDEX_EV_STORED) {
        e.tokens = &TOK[q][a * BS];
        e.n_tokens = (uint32_t)(b - a) * BS;
        e.has_parent = a > 0;
        e.parent = a > 0 ? EH[q][a - 1] : 0;
    }
    return e;
}

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    for (long op = 0; op < OPS; op++) {
        int j = (int)tu_rnd(&wr->rng, NJ), what = (int)tu_rnd(&wr->rng, 1000);
        struct smodel *m = &wr->s[j];
        if (what < 940) {
            /* a batch: ENGINE streams one event (the model's parent rule is
             * per batch start), ROUTER streams up to three */
            kvb_index_event ev[3];
            uint32_t n = j == 2 ? 1 : 1 + tu_rnd(&wr->rng, 3);
            for (uint32_t e = 0; e < n; e++) {
                uint32_t x = tu_rnd(&wr->rng, 100);
                kvb_index_ev_type type = x < 55   ? KVB_INDEX_EV_STORED
                                         : x < 99 ? KVB_INDEX_EV_REMOVED
                                                  : KVB_INDEX_EV_CLEARED;
                int q = pick_seq(wr);
                int a = (int)tu_rnd(&wr->rng, L);
                if (type == KVB_INDEX_EV_STORED && tu_rnd(&wr->rng, 3) == 0)
                    a = 0;
                int b = a + 1 + (int)tu_rnd(&wr->rng, 4);
                if (b > L)
                    b = L;
                kvb_tier t = pick_tier(wr, j);
                ev[e] = make_event(j, type, q, a, b, t);
                model_event(m, j, type, q, a, b, t);
            }
            int rc = kvb_index_apply(IDX, m->id, ev, n, op);
            if (rc)
                FAIL("apply: %s", kvb_strerror(rc));
        } else if (what < 960) {
            if (kvb_index_stream_set_state(IDX, m->id, KVB_STREAM_STALE) ||
                kvb_index_stream_set_state(
                    IDX, m->id, tu_rnd(&wr->rng, 2) ? KVB_STREAM_LIVE : KVB_STREAM_LAGGING))
                FAIL("set_state");
        } else if (what < 975) {
            if (kvb_index_stream_clear(IDX, m->id, KVB_STREAM_RESYNCING))
                FAIL("stream_clear");
            memset(m->cnt, 0, sizeof m->cnt);
        } else if (what < 985) {
            if (kvb_index_stream_remove(IDX, m->id))
                FAIL("stream_remove");
            add_stream(wr, j);
        } else if (what < 995) {
            /* liveness calls with a stale_after no test reaches: no change */
            if (kvb_index_stream_heard(IDX, m->id, false, op) ||
                kvb_index_stream_heard(IDX, m->id, true, op + 1) || kvb_index_tick(IDX, op) < 0)
                FAIL("liveness");
        } else {
            uint32_t d[KVB_DROP_COUNT] = {0};
            d[KVB_DROP_GROUP] = 1;
            if (kvb_index_stream_drop(IDX, m->id, d) ||
                kvb_index_stream_count(IDX, m->id, KVB_COUNT_GAPS, 1))
                FAIL("drop/count");
        }
    }
    atomic_fetch_sub_explicit(&writers_left, 1, memory_order_relaxed);
    return NULL;
}

/* ---- readers ------------------------------------------------------------------ */

/* "t<w>-<j>" with w < W and j < NJ. */
static bool parse_name(const char *name, int *w, int *j)
{
    if (name[0] != 't' || name[1] < '0' || name[1] > '9')
        return false;
    const char *p = name + 1;
    int x = 0;
    while (*p >= '0' && *p <= '9')
        x = x * 10 + (*p++ - '0');
    if (*p++ != '-' || *p < '0' || *p >= '0' + NJ || p[1])
        return false;
    *w = x;
    *j = *p - '0';
    return x < W;
}

static void check_results(const kvb_index_result *res, int r, uint32_t k, uint32_t n, int q,
                          const kvb_index_config *cfg)
{
    if (r < 0)
        FAIL("match: %s", kvb_strerror(r));
    uint32_t shown = (uint32_t)r < k ? (uint32_t)r : k;
    for (uint32_t i = 0; i < shown; i++) {
        const kvb_index_result *x = &res[i];
        int w, j;
        if (!parse_name(x->worker, &w, &j))
            FAIL("unknown worker name '%s'", x->worker);
        if (x->dp_rank != j)
            FAIL("%s with rank %" PRId64, x->worker, x->dp_rank);
        if (x->state == KVB_STREAM_STALE)
            FAIL("a STALE stream matched");
        uint32_t len = x->device + x->host + x->disk;
        if (len < 1 || len > n)
            FAIL("prefix %u of a %u-block request", len, n);
        int o = owner_of(q);
        if (o >= 0 && o != w)
            FAIL("%s matched a private sequence of writer %d", x->worker, o);
        if (j == 0 && (x->host || x->disk))
            FAIL("device-only %s: host %u disk %u", x->worker, x->host, x->disk);
        if (j == 1 && x->device)
            FAIL("host/disk-only %s: device %u", x->worker, x->device);
        double s = cfg->tier_weight[0] * x->device + cfg->tier_weight[1] * x->host +
                   cfg->tier_weight[2] * x->disk;
        if (s != x->score)
            FAIL("score %f, want %f", x->score, s);
        if (i > 0) {
            const kvb_index_result *p = &res[i - 1];
            int c = p->score > x->score            ? -1
                    : p->score < x->score          ? 1
                    : p->entries != x->entries     ? (p->entries < x->entries ? -1 : 1)
                    : strcmp(p->worker, x->worker) ? strcmp(p->worker, x->worker)
                    : p->dp_rank < x->dp_rank      ? -1
                    : p->dp_rank > x->dp_rank      ? 1
                                                   : 0;
            if (c > 0)
                FAIL("results out of order at %u", i);
            if (p->stream == x->stream)
                FAIL("stream %u twice", x->stream);
        }
    }
}

static void check_snapshot(void)
{
    void *buf;
    size_t len;
    int rc = kvb_index_save_mem(IDX, &buf, &len);
    if (rc)
        FAIL("save_mem: %s", kvb_strerror(rc));
    kvb_index *cp;
    rc = kvb_index_load_mem(buf, len, NULL, &cp);
    free(buf);
    if (rc)
        FAIL("load_mem of a fresh snapshot: %s", kvb_strerror(rc));
    uint32_t ids[MAXW * NJ];
    int n = kvb_index_streams(cp, ids, MAXW * NJ);
    if (n > W * NJ || n < W * NJ - W) /* a writer may be between remove and add */
        FAIL("snapshot with %d streams", n);
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        kvb_index_stream_info in;
        if (kvb_index_stream_info_get(cp, ids[i], &in))
            FAIL("info of a loaded stream");
        sum += in.entries;
    }
    kvb_index_stats st;
    kvb_index_stats_get(cp, &st);
    /* entries counts (key, tier) pairs, stats.entries (key, stream) holders */
    if (st.entries > sum || (sum && !st.entries) || st.keys > st.entries)
        FAIL("incoherent snapshot: holders %" PRIu64 ", entries %" PRIu64 ", keys %" PRIu64,
             st.entries, sum, st.keys);
    kvb_index_destroy(cp);
}

static void *reader_main(void *arg)
{
    uint64_t rng = *(uint64_t *)arg;
    kvb_index_config cfg;
    kvb_index_config_get(IDX, &cfg);
    kvb_index_result res[8];
    static _Thread_local char text[1 << 16];
    long it = 0;
    /* until the writers are done, at most as many iterations as one writer's
     * operations (keeps CI-sized runs short under helgrind and DRD) */
    while (atomic_load_explicit(&writers_left, memory_order_relaxed) > 0 && it < OPS) {
        it++;
        int q = (int)tu_rnd(&rng, NQ);
        int a = tu_rnd(&rng, 4) ? 0 : (int)tu_rnd(&rng, L);
        uint32_t n = 1 + tu_rnd(&rng, (uint32_t)(L - a));
        uint32_t k = tu_rnd(&rng, 9);
        int r = kvb_index_match(IDX, &K[q][a], n, k ? res : NULL, k);
        check_results(res, r, k, n, q, &cfg);
        if (tu_rnd(&rng, 64) == 0) {
            kvb_index_stats st;
            kvb_index_stats_get(IDX, &st);
            if (st.keys > st.entries || st.streams > (uint32_t)(W * NJ) ||
                st.streams < (uint32_t)(W * NJ - W))
                FAIL("stats: keys %" PRIu64 " entries %" PRIu64 " streams %u", st.keys, st.entries,
                     st.streams);
            uint32_t ids[MAXW * NJ];
            int ns = kvb_index_streams(IDX, ids, MAXW * NJ);
            if (ns > W * NJ || ns < W * NJ - W)
                FAIL("%d streams", ns);
            for (int i = 0; i < ns; i++) {
                kvb_index_stream_info in;
                int rc = kvb_index_stream_info_get(IDX, ids[i], &in);
                if (rc == 0) {
                    int w, j;
                    if (!parse_name(in.worker, &w, &j) || in.dp_rank != j)
                        FAIL("info of '%s'", in.worker);
                } else if (rc != -ENOENT) {
                    FAIL("info: %s", kvb_strerror(rc));
                }
            }
            char name[32];
            stream_name(name, sizeof name, (int)tu_rnd(&rng, (uint32_t)W), 1);
            uint32_t id;
            int rc = kvb_index_stream_find(IDX, name, 1, &id);
            if (rc && rc != -ENOENT)
                FAIL("find: %s", kvb_strerror(rc));
        }
        if (tu_rnd(&rng, 2048) == 0) {
            int len = kvb_index_metrics_text(IDX, text, sizeof text);
            if (len <= 0 || (size_t)len >= sizeof text || strlen(text) != (size_t)len)
                FAIL("metrics_text: %d", len);
        }
        if (tu_rnd(&rng, 512) == 0)
            check_snapshot();
        if (tu_rnd(&rng, 16) == 0) {
            /* a request from tokens: the same keys */
            uint32_t blocks;
            r = kvb_index_match_tokens(IDX, TOK[q], (size_t)n * BS, NULL, NULL, res, 8, &blocks);
            if (blocks != n)
                FAIL("match_tokens blocks %u", blocks);
            check_results(res, r, 8, n, q, &cfg);
        }
    }
    *(uint64_t *)arg = (uint64_t)it;
    return NULL;
}

/* ---- final comparison ----------------------------------------------------------- */

static const kvb_index_result *result_of(const kvb_index_result *res, int r, uint32_t id)
{
    for (int i = 0; i < r; i++)
        if (res[i].stream == id)
            return &res[i];
    return NULL;
}

static void final_check(void)
{
    kvb_index_result res[MAXW * NJ];
    uint64_t total_entries = 0;
    for (int w = 0; w < W; w++)
        for (int j = 0; j < NJ; j++) {
            struct smodel *m = &WR[w].s[j];
            kvb_index_stream_info in;
            if (kvb_index_stream_info_get(IDX, m->id, &in))
                FAIL("info t%d-%d", w, j);
            if (in.entries != entries_of(m))
                FAIL("t%d-%d: entries %" PRIu64 ", model %u", w, j, in.entries, entries_of(m));
            if (in.dropped[KVB_DROP_UNKNOWN_BLOCK] != m->unknown_block ||
                in.dropped[KVB_DROP_UNKNOWN_PARENT] != m->unknown_parent)
                FAIL("t%d-%d: drops %" PRIu64 "/%" PRIu64 ", model %" PRIu64 "/%" PRIu64, w, j,
                     in.dropped[KVB_DROP_UNKNOWN_BLOCK], in.dropped[KVB_DROP_UNKNOWN_PARENT],
                     m->unknown_block, m->unknown_parent);
            if (in.state == KVB_STREAM_STALE)
                kvb_index_stream_set_state(IDX, m->id, KVB_STREAM_LIVE);
            total_entries += in.entries;
        }
    /* single-key matches: the best tier of every block of every stream */
    for (int q = 0; q < NQ; q++)
        for (int i = 0; i < L; i++) {
            int r = kvb_index_match(IDX, &K[q][i], 1, res, MAXW * NJ);
            for (int w = 0; w < W; w++)
                for (int j = 0; j < NJ; j++) {
                    const struct smodel *m = &WR[w].s[j];
                    const uint32_t *c = m->cnt[q][i];
                    const kvb_index_result *x = result_of(res, r, m->id);
                    int want = c[0] ? 0 : c[1] ? 1 : c[2] ? 2 : -1;
                    int got = !x ? -1 : x->device ? 0 : x->host ? 1 : 2;
                    if (want != got)
                        FAIL("t%d-%d block (%d,%d): tier %d, model %d", w, j, q, i, got, want);
                }
        }
    /* copies: each (block, tier) disappears exactly at its last REMOVED */
    for (int w = 0; w < W; w++)
        for (int j = 0; j < NJ; j++) {
            struct smodel *m = &WR[w].s[j];
            uint64_t entries = entries_of(m);
            for (int q = 0; q < NQ; q++)
                for (int i = 0; i < L; i++)
                    for (int t = 0; t < KVB_TIER_COUNT; t++) {
                        uint32_t c = m->cnt[q][i][t];
                        for (uint32_t x = 0; x < c; x++) {
                            kvb_index_event e =
                                make_event(j, KVB_INDEX_EV_REMOVED, q, i, i + 1, (kvb_tier)t);
                            if (kvb_index_apply(IDX, m->id, &e, 1, -1))
                                FAIL("drain apply");
                            kvb_index_stream_info in;
                            kvb_index_stream_info_get(IDX, m->id, &in);
                            uint64_t want = x + 1 < c ? entries : entries - 1;
                            if (in.entries != want)
                                FAIL("t%d-%d (%d,%d) tier %d: %" PRIu64 " entries after %u of %u "
                                     "removals, want %" PRIu64,
                                     w, j, q, i, t, in.entries, x + 1, c, want);
                        }
                        if (c)
                            entries--;
                    }
        }
    kvb_index_stats st;
    kvb_index_stats_get(IDX, &st);
    if (st.keys || st.entries)
        FAIL("after draining: keys %" PRIu64 " entries %" PRIu64, st.keys, st.entries);
    printf("torture_index: final state matched the models (%" PRIu64 " entries drained)\n",
           total_entries);
}

int main(int argc, char **argv)
{
    torture_init("torture_index");
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    OPS = argc > 2 ? atol(argv[2]) : 5000;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)time(NULL);
    if (threads < 2)
        threads = 2;
    W = threads / 2;
    if (W > MAXW)
        W = MAXW;
    R = threads - W;
    OPS = OPS / W > 0 ? OPS / W : 1;
    printf("torture_index: %d writers, %d readers, %ld ops per writer, seed %" PRIu64 "\n", W, R,
           OPS, seed);

    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.block_size = BS;
    cfg.shards = (uint32_t)1 << (seed % 4 * 2); /* 1, 4, 16, 64 by seed */
    cfg.stale_after_s = 1e9;
    cfg.drop_after_s = 2e9;
    int rc = kvb_index_create(&cfg, &IDX);
    if (rc)
        FAIL("create: %s", kvb_strerror(rc));
    printf("torture_index: %u shards\n", cfg.shards);

    uint64_t s = seed;
    for (int q = 0; q < NQ; q++) {
        for (int i = 0; i < L * BS; i++)
            TOK[q][i] = (uint32_t)tu_rng_next(&s);
        if (kvb_index_hashes(IDX, TOK[q], L * BS, NULL, NULL, K[q], L) != L)
            FAIL("hashes");
        for (int i = 0; i < L; i++)
            EH[q][i] = tu_rng_next(&s) | 1ull << 63;
    }
    for (int w = 0; w < W; w++) {
        WR[w].w = w;
        WR[w].rng = torture_seed(seed, w);
        for (int j = 0; j < NJ; j++)
            add_stream(&WR[w], j);
    }
    KVB_ATOMIC_VAR(&writers_left, sizeof writers_left);
    atomic_store_explicit(&writers_left, W, memory_order_relaxed);
    pthread_t rth[64];
    uint64_t rseed[64];
    if (R > 64)
        R = 64;
    for (int r = 0; r < R; r++) {
        rseed[r] = seed * 7919u + (uint64_t)r + 1;
        pthread_create(&rth[r], NULL, reader_main, &rseed[r]);
    }
    for (int w = 0; w < W; w++)
        pthread_create(&WR[w].th, NULL, writer_main, &WR[w]);
    for (int w = 0; w < W; w++)
        pthread_join(WR[w].th, NULL);
    uint64_t reads = 0;
    for (int r = 0; r < R; r++) {
        pthread_join(rth[r], NULL);
        reads += rseed[r];
    }
    KVB_ATOMIC_VAR_END(&writers_left, sizeof writers_left);
    kvb_index_stats st;
    kvb_index_stats_get(IDX, &st);
    printf("torture_index: %" PRIu64 " reader iterations, %" PRIu64 " batches, %" PRIu64
           " block ops, %" PRIu64 " keys, %" PRIu64 " holder entries\n",
           reads, st.batches, st.block_ops, st.keys, st.entries);
    final_check();
    if (kvb_index_destroy(IDX))
        FAIL("destroy");
    printf("torture_index: OK\n");
    return 0;
}
