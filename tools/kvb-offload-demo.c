/*
 * kvb-offload-demo - two memory tiers, one registry: a GPU-tier pool and a
 * host-tier pool replaying a prefix-sharing trace, with offload on eviction
 * and onboarding of prefixes from the host tier.
 *
 *   for each request (hashes h[0..n), as in kvb-replay's prefix replay):
 *     kg = kvb_pool_match(gpu, h)                  GPU prefix hits
 *     kh = kvb_pool_match(host, h + kg)            the prefix continues in the host tier
 *     allocate n - kg GPU blocks                   (evictions fire gpu.on_evict, below)
 *     copy host -> GPU for the kh onboarded blocks, compute the rest
 *     stage + register the n - kg blocks; release the host references
 *     release the n GPU blocks, last first
 *
 *   gpu.on_evict(hash, block)                      the copy callback: note the block
 *   after each GPU allocate, offload what was noted, in batch calls:
 *     kvb_registry_present(reg, hashes, host)      already in the host tier: nothing to copy
 *     allocate the rest in the host tier (may evict host content: dropped for good),
 *     copy GPU block -> host block, stage, register, release (cached in host)
 *
 * on_evict runs after the GPU pool's lock is dropped, in the thread that called
 * kvb_pool_allocate, before allocate returns; the batch copy follows right after,
 * before the blocks' new owner writes them: the evicted bytes are still intact,
 * which is what makes the copy-out correct. Batching turns five pool calls per
 * offloaded block into five per allocation. The GPU tier sees exactly the calls a GPU-only replay
 * makes (onboarded blocks are allocated and registered like computed ones), so
 * its hits equal a GPU-only replay's; --check verifies that with a shadow pool.
 *
 * Output: the trace, the tiers, what moved (offloads, offloads skipped because
 * the host tier had the content, onboards, host drops, with a sample of
 * individual moves) and the hit ratio per tier. --check verifies invariants and
 * exits 1 on a violation (tests run it). With --publish, both tiers' KV events
 * go out over ZeroMQ in vLLM's wire format (medium "GPU" and "CPU"), which is
 * how tests/test_publisher_consumer.py exercises the publisher end to end.
 */
#include "kvblock.h"
#include "kvblock/publisher.h"

#include "common/args.h"
#include "common/synth.h"
#include "common/trace.h"
#include "common/util.h"

#include <getopt.h>

static const char *prog = "kvb-offload-demo";

enum tier { TIER_GPU = 0, TIER_HOST = 1 };
static const char *tier_name[] = {"gpu", "host"};

typedef struct move_log {
    uint64_t shown, limit;
} move_log;

typedef struct demo {
    kvb_pool *gpu, *host, *shadow;
    /* GPU evictions noted by on_evict, offloaded after the allocate returns */
    kvb_hash *pend_h;
    uint32_t *pend_id;
    uint32_t npend, cap_pend;
    bool *present;
    kvb_mutable *hm;
    kvb_complete *hc;
    kvb_block *hb;
    kvb_registry *reg;
    /* counters */
    uint64_t refs, gpu_hits, host_hits, computed, shadow_hits;
    uint64_t offloaded, offload_skipped, offload_failed, host_dropped;
    move_log moves;
    bool in_request; /* on_evict only offloads during a request (not at the final scans) */
} demo;

/* The copy callback of a real runtime would move block bytes here (cudaMemcpyAsync,
 * a DMA engine...). The demo prints the first few and counts them. */
static void demo_copy(demo *d, const char *what, kvb_hash h, enum tier from, uint32_t src,
                      enum tier to, uint32_t dst)
{
    if (d->moves.shown >= d->moves.limit)
        return;
    d->moves.shown++;
    printf("  move: %-8s hash %016llx  %s block %u -> %s block %u\n", what,
           (unsigned long long)kvb_hash_current(h), tier_name[from], src, tier_name[to], dst);
}

static void host_on_evict(void *user, kvb_hash h, uint32_t block_id)
{
    demo *d = user;
    d->host_dropped++;
    if (d->moves.shown < d->moves.limit) {
        d->moves.shown++;
        printf("  move: %-8s hash %016llx  host block %u dropped (evicted from the last tier)\n",
               "drop", (unsigned long long)kvb_hash_current(h), block_id);
    }
}

static void gpu_on_evict(void *user, kvb_hash h, uint32_t block_id)
{
    demo *d = user;
    if (!d->in_request || d->npend == d->cap_pend)
        return;
    d->pend_h[d->npend] = h;
    d->pend_id[d->npend++] = block_id;
}

/* Offload the GPU evictions noted since the last call (see the top of the file). */
static void demo_offload(demo *d)
{
    uint32_t n = d->npend, k = 0;
    d->npend = 0;
    if (n == 0)
        return;
    int rc = kvb_registry_present(d->reg, d->pend_h, n, d->host, d->present);
    if (rc < 0)
        kvbt_die(prog, "kvb_registry_present: %s", kvb_strerror(rc));
    for (uint32_t i = 0; i < n; i++) { /* keep the ones the host tier lacks, in order */
        if (d->present[i]) {
            d->offload_skipped++;
            continue;
        }
        d->pend_h[k] = d->pend_h[i];
        d->pend_id[k++] = d->pend_id[i];
    }
    if (k == 0)
        return;
    uint32_t avail = kvb_pool_available(d->host);
    if (k > avail) { /* every other host block is held: offload what fits */
        d->offload_failed += k - avail;
        k = avail;
    }
    if (k == 0)
        return;
    if ((rc = kvb_pool_allocate(d->host, k, d->hm, NULL, NULL)) < 0)
        kvbt_die(prog, "host kvb_pool_allocate(%u): %s", k, kvb_strerror(rc));
    for (uint32_t i = 0; i < k; i++)
        demo_copy(d, "offload", d->pend_h[i], TIER_GPU, d->pend_id[i], TIER_HOST, d->hm[i].id);
    if ((rc = kvb_pool_stage(d->host, d->hm, d->pend_h, k, d->hc)) < 0 ||
        (rc = kvb_pool_register(d->host, d->hc, k, d->hb)) < 0 ||
        (rc = kvb_block_release_n(d->hb, k)) < 0)
        kvbt_die(prog, "offload into the host tier: %s", kvb_strerror(rc));
    d->offloaded += k;
}

/* ---- options ---------------------------------------------------------------- */

typedef struct demo_opts {
    const char *trace;
    uint64_t limit;
    uint32_t gpu_blocks, host_blocks;
    kvb_evict_policy policy;
    uint64_t show_moves;
    bool check;
    kvbt_synth_params synth;
    const char *publish, *replay, *topic, *dump;
    bool wait_stdin, count_events;
} demo_opts;

static void demo_usage(FILE *f)
{
    fprintf(f,
            "usage: kvb-offload-demo [options]\n"
            "Replay a prefix trace through a GPU-tier pool and a host-tier pool sharing one\n"
            "registry: GPU evictions are offloaded to the host tier unless it already has the\n"
            "content, and requests onboard the rest of their prefix from the host tier.\n"
            "\n"
            "  --trace FILE        Mooncake trace (JSON lines with hash_ids); default: the\n"
            "                      built-in synthetic workload\n"
            "  --limit N           replay only the first N requests of the trace\n"
            "  --requests N        synthetic workload size (default 12000)\n"
            "  --seed N            synthetic workload seed (default 1)\n"
            "  --gpu BLOCKS        GPU tier capacity (default 1000)\n"
            "  --host BLOCKS       host tier capacity (default 8000)\n"
            "  --policy NAME       eviction policy: lru (default) or any other built-in one\n"
            "                      (kvb_inactive_policy: fifo, multi_lru, lineage_arc, ...)\n"
            "  --show-moves N      print the first N individual moves (default 8)\n"
            "  --check             verify invariants, exit 1 on a violation\n"
            "  --publish ENDPOINT  publish both tiers' KV events (ZeroMQ, vLLM wire format)\n"
            "  --replay ENDPOINT   ... with a replay (ROUTER) socket\n"
            "  --topic TOPIC       ... on this topic (default \"kv\")\n"
            "  --count-events      attach a sink that only counts events (their cost alone)\n"
            "  --dump-final FILE   write each tier's final content (decimal 64-bit hashes)\n"
            "  --wait-stdin        with --publish: print \"READY\" and wait for a line on stdin\n"
            "                      before the replay (lets a subscriber connect first), and\n"
            "                      at the end print \"DONE last_seq=N\" and wait for EOF on\n"
            "                      stdin (lets a subscriber use the replay socket)\n"
            "  -h, --help          this text\n");
}

static KVBT_NORETURN void demo_bad(const char *msg, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", prog, msg, arg);
    demo_usage(stderr);
    exit(2);
}

static void demo_parse(int argc, char **argv, demo_opts *o)
{
    static const struct option lo[] = {{"trace", required_argument, 0, 't'},
                                       {"limit", required_argument, 0, 'l'},
                                       {"requests", required_argument, 0, 'r'},
                                       {"seed", required_argument, 0, 's'},
                                       {"gpu", required_argument, 0, 'g'},
                                       {"host", required_argument, 0, 'H'},
                                       {"policy", required_argument, 0, 'p'},
                                       {"show-moves", required_argument, 0, 'm'},
                                       {"check", no_argument, 0, 'c'},
                                       {"publish", required_argument, 0, 'P'},
                                       {"replay", required_argument, 0, 'R'},
                                       {"topic", required_argument, 0, 'T'},
                                       {"dump-final", required_argument, 0, 'd'},
                                       {"wait-stdin", no_argument, 0, 'w'},
                                       {"count-events", no_argument, 0, 'C'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->gpu_blocks = 1000;
    o->host_blocks = 8000;
    o->show_moves = 8;
    o->topic = "kv";
    kvbt_synth_defaults(&o->synth);
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            o->trace = optarg;
            break;
        case 'l':
            if (!kvbt_parse_u64(optarg, 1, UINT64_MAX, &o->limit))
                demo_bad("--limit: not a count", optarg);
            break;
        case 'r':
            if (!kvbt_parse_u64(optarg, 1, 100000000, &o->synth.requests))
                demo_bad("--requests: not a count", optarg);
            break;
        case 's':
            if (!kvbt_parse_u64(optarg, 0, UINT64_MAX, &o->synth.seed))
                demo_bad("--seed: not a number", optarg);
            break;
        case 'g':
        case 'H':
            if (!kvbt_parse_u64(optarg, 1, KVB_MAX_BLOCKS, &v))
                demo_bad("not a capacity", optarg);
            *(c == 'g' ? &o->gpu_blocks : &o->host_blocks) = (uint32_t)v;
            break;
        case 'p':
            if (!kvbt_policy_value(optarg, &o->policy))
                demo_bad("--policy: not a built-in eviction policy", optarg);
            break;
        case 'm':
            if (!kvbt_parse_u64(optarg, 0, UINT64_MAX, &o->show_moves))
                demo_bad("--show-moves: not a count", optarg);
            break;
        case 'c':
            o->check = true;
            break;
        case 'P':
            o->publish = optarg;
            break;
        case 'R':
            o->replay = optarg;
            break;
        case 'T':
            o->topic = optarg;
            break;
        case 'd':
            o->dump = optarg;
            break;
        case 'w':
            o->wait_stdin = true;
            break;
        case 'C':
            o->count_events = true;
            break;
        case 'h':
            demo_usage(stdout);
            exit(0);
        default:
            demo_usage(stderr);
            exit(2);
        }
    }
    if (optind < argc)
        demo_bad("unexpected argument", argv[optind]);
    if (o->replay && !o->publish)
        demo_bad("--replay needs --publish", o->replay);
    if (o->count_events && o->publish)
        demo_bad("--count-events and --publish exclude each other", "--count-events");
}

/* ---- setup ---------------------------------------------------------------------- */

static uint64_t counted_events, counted_blocks;

static void count_sink(void *user, const kvb_pool *pool, const kvb_event *ev, uint32_t n)
{
    (void)user;
    (void)pool;
    counted_events += n; /* sink calls of one pool never overlap; the demo has one thread */
    for (uint32_t i = 0; i < n; i++)
        counted_blocks += ev[i].n;
}

static kvb_pool *demo_pool(const char *name, uint32_t blocks, kvb_evict_policy pol,
                           kvb_registry *reg, void (*on_evict)(void *, kvb_hash, uint32_t), demo *d,
                           kvb_publisher *pub, const char *medium, bool count)
{
    kvb_pool_config cfg;
    kvb_event_config ec;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict = pol;
    cfg.registry = reg;
    cfg.name = name;
    cfg.callbacks.user = d;
    cfg.callbacks.on_evict = on_evict;
    if (pub || count) {
        kvb_event_config_init(&ec);
        if (pub)
            kvb_publisher_event_config(pub, &ec);
        else
            ec.sink = count_sink;
        ec.medium = medium;
        /* one wire batch per 64 events or 5 ms, like a runtime's scheduler step */
        ec.batch_max = 64;
        ec.batch_delay_ms = 5;
        cfg.events = &ec;
    }
    kvb_pool *p;
    int rc = kvb_pool_create(&cfg, &p);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_create(%s, %u blocks): %s", name, blocks, kvb_strerror(rc));
    return p;
}

/* The first `limit` requests of t as a trace of their own (statistics included). */
static void demo_truncate(kvbt_trace *t, uint64_t limit)
{
    if (!limit || limit >= t->n_requests)
        return;
    kvbt_trace s;
    kvbt_trace_init(&s, t->name, t->source);
    for (uint64_t r = 0; r < limit; r++) {
        kvbt_trace_begin(&s);
        for (uint64_t i = t->off[r]; i < t->off[r + 1]; i++)
            kvbt_trace_push(&s, t->ids[i]);
        kvbt_trace_end(&s);
    }
    kvbt_trace_finish(&s);
    kvbt_trace_free(t);
    *t = s;
}

static int cmp_hash(const void *a, const void *b)
{
    const kvb_hash *x = a, *y = b;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* ---- main ---------------------------------------------------------------------- */

static int violations;

static void demo_expect(bool ok, const char *what)
{
    if (!ok) {
        printf("  INVARIANT VIOLATED: %s\n", what);
        violations++;
    }
}

int main(int argc, char **argv)
{
    demo_opts o;
    demo_parse(argc, argv, &o);
    setvbuf(stdout, NULL, _IOLBF, 0);

    kvbt_trace t;
    char err[1024];
    if (o.trace) {
        if (kvbt_trace_load(o.trace, KVBT_FORMAT_MOONCAKE, &t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
        demo_truncate(&t, o.limit);
    } else if (kvbt_synth_generate(&o.synth, &t, err, sizeof err) < 0) {
        kvbt_die(prog, "%s", err);
    }
    if (t.max_request_blocks > o.gpu_blocks)
        kvbt_die(prog, "--gpu %u cannot hold the longest request (%llu blocks)", o.gpu_blocks,
                 (unsigned long long)t.max_request_blocks);
    kvb_hash *hashes = kvbt_xmalloc_array(t.n_refs, sizeof *hashes);
    if (kvbt_trace_lineage_hashes(&t, hashes) < 0)
        kvbt_die(prog, "trace too long for lineage hashes");

    kvb_publisher *pub = NULL;
    if (o.publish) {
        kvb_publisher_config pc;
        kvb_publisher_config_init(&pc);
        pc.endpoint = o.publish;
        pc.replay_endpoint = o.replay;
        pc.topic = o.topic;
        pc.buffer_batches = 1u << 20; /* the whole run stays replayable */
        pc.queue_batches = 1u << 16;
        int rc = kvb_publisher_create(&pc, &pub);
        if (rc < 0)
            kvbt_die(prog, "kvb_publisher_create(%s): %s", o.publish, kvb_strerror(rc));
    }

    if (pub && o.wait_stdin) {
        char line[64];
        printf("READY\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            kvbt_die(prog, "--wait-stdin: stdin closed before the go-ahead");
    }

    demo d;
    memset(&d, 0, sizeof d);
    d.moves.limit = o.show_moves;
    int rc = kvb_registry_create(NULL, &d.reg);
    if (rc < 0)
        kvbt_die(prog, "kvb_registry_create: %s", kvb_strerror(rc));
    d.gpu = demo_pool("gpu", o.gpu_blocks, o.policy, d.reg, gpu_on_evict, &d, pub, "GPU",
                      o.count_events);
    d.host = demo_pool("host", o.host_blocks, o.policy, d.reg, host_on_evict, &d, pub, "CPU",
                       o.count_events);
    d.cap_pend = o.gpu_blocks;
    d.pend_h = kvbt_xmalloc_array(d.cap_pend, sizeof *d.pend_h);
    d.pend_id = kvbt_xmalloc_array(d.cap_pend, sizeof *d.pend_id);
    d.present = kvbt_xmalloc_array(d.cap_pend, sizeof *d.present);
    d.hm = kvbt_xmalloc_array(d.cap_pend, sizeof *d.hm);
    d.hc = kvbt_xmalloc_array(d.cap_pend, sizeof *d.hc);
    d.hb = kvbt_xmalloc_array(d.cap_pend, sizeof *d.hb);
    if (o.check)
        d.shadow =
            demo_pool("gpu-only", o.gpu_blocks, o.policy, NULL, NULL, NULL, NULL, NULL, false);

    printf("trace: %s (%s)\n", t.name, t.source);
    printf("  requests %llu, block refs %llu, unique blocks %llu, infinite-cache hit ratio "
           "%.2f%%\n",
           (unsigned long long)t.n_requests, (unsigned long long)t.n_refs,
           (unsigned long long)t.unique_blocks,
           t.n_refs ? 100.0 * (double)t.infinite_hits / (double)t.n_refs : 0.0);
    printf("tiers: gpu %u blocks, host %u blocks, policy %s, one registry%s\n", o.gpu_blocks,
           o.host_blocks, kvb_pool_policy_name(d.gpu),
           pub              ? ", events published"
           : o.count_events ? ", events counted"
                            : "");
    if (o.show_moves)
        printf("first %llu moves:\n", (unsigned long long)o.show_moves);

    uint64_t maxn = t.max_request_blocks ? t.max_request_blocks : 1;
    kvb_block *gb = kvbt_xmalloc_array(maxn, sizeof *gb);
    kvb_block *hb = kvbt_xmalloc_array(maxn, sizeof *hb);
    kvb_block *sb = kvbt_xmalloc_array(maxn, sizeof *sb);
    kvb_mutable *m = kvbt_xmalloc_array(maxn, sizeof *m);
    kvb_complete *c = kvbt_xmalloc_array(maxn, sizeof *c);

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r = 0; r < t.n_requests; r++) {
        const kvb_hash *h = hashes + t.off[r];
        uint32_t n = (uint32_t)kvbt_trace_len(&t, r);
        d.refs += n;
        d.in_request = true;
        int kg = kvb_pool_match(d.gpu, h, n, gb);
        if (kg < 0)
            kvbt_die(prog, "gpu match: %s", kvb_strerror(kg));
        int kh = kvb_pool_match(d.host, h + kg, n - (uint32_t)kg, hb);
        if (kh < 0)
            kvbt_die(prog, "host match: %s", kvb_strerror(kh));
        uint32_t need = n - (uint32_t)kg;
        if (need) {
            if ((rc = kvb_pool_allocate(d.gpu, need, m, NULL, NULL)) < 0)
                kvbt_die(prog, "request %llu: gpu allocate %u: %s", (unsigned long long)r, need,
                         kvb_strerror(rc));
            demo_offload(&d); /* copy out what the allocation evicted */
            for (uint32_t i = 0; i < need; i++) {
                if (i < (uint32_t)kh)
                    demo_copy(&d, "onboard", h[kg + (int)i], TIER_HOST, hb[i].id, TIER_GPU,
                              m[i].id);
                if ((rc = kvb_mutable_stage(&m[i], h[(uint32_t)kg + i], &c[i])) < 0)
                    kvbt_die(prog, "stage: %s", kvb_strerror(rc));
            }
            if ((rc = kvb_pool_register(d.gpu, c, need, gb + kg)) < 0)
                kvbt_die(prog, "gpu register: %s", kvb_strerror(rc));
        }
        if ((rc = kvb_block_release_n(hb, (uint32_t)kh)) < 0)
            kvbt_die(prog, "host release: %s", kvb_strerror(rc));
        for (uint32_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
            kvb_block tmp = gb[a];
            gb[a] = gb[b];
            gb[b] = tmp;
        }
        if ((rc = kvb_block_release_n(gb, n)) < 0)
            kvbt_die(prog, "gpu release: %s", kvb_strerror(rc));
        d.in_request = false;
        d.gpu_hits += (uint64_t)kg;
        d.host_hits += (uint64_t)kh;
        d.computed += need - (uint32_t)kh;

        if (d.shadow) { /* the same GPU-side calls on a GPU-only pool */
            int ks = kvb_pool_match(d.shadow, h, n, sb);
            uint32_t sneed = n - (uint32_t)ks;
            if (sneed) {
                if (kvb_pool_allocate(d.shadow, sneed, m, NULL, NULL) < 0)
                    kvbt_die(prog, "shadow allocate");
                for (uint32_t i = 0; i < sneed; i++)
                    kvb_mutable_stage(&m[i], h[(uint32_t)ks + i], &c[i]);
                if (kvb_pool_register(d.shadow, c, sneed, sb + ks) < 0)
                    kvbt_die(prog, "shadow register");
            }
            for (uint32_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
                kvb_block tmp = sb[a];
                sb[a] = sb[b];
                sb[b] = tmp;
            }
            kvb_block_release_n(sb, n);
            d.shadow_hits += (uint64_t)ks;
        }
    }
    uint64_t t1 = kvbt_now_ns();

    kvb_stats gs, hs;
    kvb_pool_stats(d.gpu, &gs);
    kvb_pool_stats(d.host, &hs);
    double refs = d.refs ? (double)d.refs : 1.0;
    printf("moved:\n");
    printf("  offloaded gpu -> host   %10llu blocks (on_evict notes, batch copy after allocate)\n",
           (unsigned long long)d.offloaded);
    printf("  offload skipped         %10llu blocks (host tier already had the content)\n",
           (unsigned long long)d.offload_skipped);
    if (d.offload_failed)
        printf("  offload failed          %10llu blocks (every host block held)\n",
               (unsigned long long)d.offload_failed);
    printf("  onboarded host -> gpu   %10llu blocks\n", (unsigned long long)d.host_hits);
    printf("  dropped from host       %10llu blocks (evicted from the last tier)\n",
           (unsigned long long)d.host_dropped);
    printf("  computed (prefill)      %10llu blocks\n", (unsigned long long)d.computed);
    printf("hit ratio per tier (of %llu block refs):\n", (unsigned long long)d.refs);
    printf("  gpu                     %9.2f%%\n", 100.0 * (double)d.gpu_hits / refs);
    printf("  host                    %9.2f%%  (%.2f%% of the GPU misses)\n",
           100.0 * (double)d.host_hits / refs,
           d.refs > d.gpu_hits ? 100.0 * (double)d.host_hits / (double)(d.refs - d.gpu_hits) : 0.0);
    printf("  gpu + host              %9.2f%%  (infinite cache %.2f%%)\n",
           100.0 * (double)(d.gpu_hits + d.host_hits) / refs,
           100.0 * (double)t.infinite_hits / refs);
    printf("time: %.1f ms, %.0f ns per block ref (both tiers, offload and onboard included)\n",
           (double)(t1 - t0) / 1e6, (double)(t1 - t0) / refs);
    if (o.count_events) {
        kvb_pool_events_flush(d.gpu);
        kvb_pool_events_flush(d.host);
        printf("events: %llu (%llu blocks) from both tiers\n", (unsigned long long)counted_events,
               (unsigned long long)counted_blocks);
    }

    /* distinct hashes of the run, for the presence checks and the final dump */
    kvb_hash *u = kvbt_xmalloc_array(t.n_refs ? t.n_refs : 1, sizeof *u);
    memcpy(u, hashes, t.n_refs * sizeof *u);
    qsort(u, t.n_refs, sizeof *u, cmp_hash);
    uint64_t nu = 0;
    for (uint64_t i = 0; i < t.n_refs; i++)
        if (nu == 0 || cmp_hash(&u[nu - 1], &u[i]) != 0)
            u[nu++] = u[i];

    if (o.check) {
        printf("checks:\n");
        demo_expect(d.gpu_hits + d.host_hits + d.computed == d.refs,
                    "gpu + host + computed == refs");
        demo_expect(d.offloaded + d.offload_skipped + d.offload_failed == gs.evictions,
                    "every GPU eviction offloaded or skipped");
        demo_expect(hs.registrations == d.offloaded, "host registrations == offloads");
        demo_expect(hs.evictions == d.host_dropped, "host evictions == drops");
        demo_expect(d.gpu_hits == d.shadow_hits, "GPU tier hits == a GPU-only replay's hits");
        demo_expect(d.gpu_hits + d.host_hits <= t.infinite_hits, "hits <= infinite-cache hits");
        demo_expect(d.gpu_hits + d.host_hits >= d.shadow_hits, "the host tier never loses hits");
        demo_expect(kvb_pool_check(d.gpu) == 0 && kvb_pool_check(d.host) == 0, "kvb_pool_check");
        demo_expect(gs.primary + gs.duplicate + gs.mutable_ + gs.staged == 0 &&
                        hs.primary + hs.duplicate + hs.mutable_ + hs.staged == 0,
                    "nothing held after the run");
        /* registry presence agrees with a scan of each tier, for every hash used */
        uint64_t disagree = 0;
        bool *pres = kvbt_xmalloc_array(1024, sizeof *pres);
        bool *hit = kvbt_xmalloc_array(1024, sizeof *hit);
        kvb_block *blk = kvbt_xmalloc_array(1024, sizeof *blk);
        for (int tier = 0; tier < 2; tier++) {
            kvb_pool *p = tier ? d.host : d.gpu;
            for (uint64_t i = 0; i < nu; i += 1024) {
                uint32_t k = (uint32_t)(nu - i < 1024 ? nu - i : 1024);
                if (kvb_registry_present(d.reg, u + i, k, p, pres) < 0 ||
                    kvb_pool_scan(p, u + i, k, false, blk, hit) < 0)
                    kvbt_die(prog, "presence check");
                for (uint32_t j = 0; j < k; j++) {
                    disagree += pres[j] != hit[j];
                    if (hit[j])
                        kvb_block_release(&blk[j]);
                }
            }
        }
        demo_expect(disagree == 0, "registry presence == pool content, both tiers");
        free(pres);
        free(hit);
        free(blk);
        printf("  %s\n", violations ? "FAILED" : "all invariants hold");
    }

    if (pub) {
        kvb_pool_events_flush(d.gpu);
        kvb_pool_events_flush(d.host);
        kvb_publisher_flush(pub, 60000);
    }
    if (o.dump) {
        FILE *f = fopen(o.dump, "w");
        if (!f)
            kvbt_die(prog, "%s: %s", o.dump, strerror(errno));
        bool hit[256];
        kvb_block blk[256];
        for (int tier = 0; tier < 2; tier++) {
            kvb_pool *p = tier ? d.host : d.gpu;
            fprintf(f, "%s", tier ? "CPU" : "GPU");
            for (uint64_t i = 0; i < nu; i += 256) {
                uint32_t k = (uint32_t)(nu - i < 256 ? nu - i : 256);
                if (kvb_pool_scan(p, u + i, k, false, blk, hit) < 0)
                    kvbt_die(prog, "dump scan");
                for (uint32_t j = 0; j < k; j++)
                    if (hit[j]) {
                        fprintf(f, " %llu", (unsigned long long)kvb_hash_current(u[i + j]));
                        kvb_block_release(&blk[j]);
                    }
            }
            fprintf(f, "\n");
        }
        if (fclose(f) != 0)
            kvbt_die(prog, "%s: write failed", o.dump);
    }
    if (pub && o.wait_stdin) {
        kvb_publisher_stats ps;
        kvb_publisher_stats_get(pub, &ps);
        printf("DONE last_seq=%lld batches=%llu dropped=%llu\n", (long long)ps.last_seq,
               (unsigned long long)ps.published, (unsigned long long)ps.dropped);
        fflush(stdout);
        char buf[256];
        while (fread(buf, 1, sizeof buf, stdin) > 0)
            ;
    }

    int drc = kvb_pool_destroy(d.gpu);
    int hrc = kvb_pool_destroy(d.host);
    if (drc || hrc)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(drc ? drc : hrc));
    if (d.shadow && (rc = kvb_pool_destroy(d.shadow)) != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));
    if ((rc = kvb_registry_destroy(d.reg)) != 0)
        kvbt_die(prog, "kvb_registry_destroy: %s", kvb_strerror(rc));
    if (pub)
        kvb_publisher_destroy(pub);
    free(d.pend_h);
    free(d.pend_id);
    free(d.present);
    free(d.hm);
    free(d.hc);
    free(d.hb);
    free(u);
    free(gb);
    free(hb);
    free(sb);
    free(m);
    free(c);
    free(hashes);
    kvbt_trace_free(&t);
    return violations ? 1 : 0;
}
