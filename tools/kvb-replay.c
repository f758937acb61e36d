/*
 * kvb-replay - the replay lab: replay a block trace through kvblock pools and
 * report hit ratios, evictions and the cost per block reference, for every
 * eviction policy side by side and several capacities, next to an offline
 * optimal reference. docs/replay.md is the manual and holds the measurements.
 *
 * The workload is the "prefix replay" of ../shared/data/README.md:
 *
 *   for each request, in trace order:
 *     hashes: id x at index j, after id y, is kvb_hash_make(x, y, j > 0, j)
 *     k = kvb_pool_match(hashes)        prefix hits: stops at the first miss
 *     allocate the other n - k blocks   all or nothing, evicting in policy order
 *     stage them with their hashes (kvb_pool_stage) and register them, one batch each
 *     release the n blocks, last block first (deeper blocks leave before their
 *     prefixes), with one kvb_block_release_n on the reversed handle array
 *
 *   prefix hit ratio = sum k / sum n; evictions from kvb_pool_stats().
 *
 * --window W keeps the blocks of the last W requests held: request r is
 * released (last block first, as above) right after request r + W has been
 * processed, so eviction works around in-use blocks. When an allocation fails
 * with -ENOSPC because too much is held, the oldest held request is released
 * early and the allocation retried (counted as an early release); with W = 0
 * nothing is held across requests and -ENOSPC is an error.
 *
 * --format ids reads the classic one-id-per-line block traces: each id is a
 * request of one block (hash kvb_hash_make(id, 0, false, 0)), so a hit is
 * simply "the block was cached" and lru/fifo are the textbook policies
 * (tools/sim_reference.py checks them hit for hit).
 *
 * Registering a hash that is cached but came after the first miss (possible
 * when a policy evicted a prefix before its descendants) resurrects the cached
 * block and makes the new one a duplicate (the pool's default KVB_DUP_ALLOW);
 * it is not counted as a hit, since the prefix was broken.
 *
 * Policies: every built-in backend the library lists (kvb_inactive_policy(i)
 * for i = 0, 1, ... until NULL; the index is the kvb_evict_policy value), named
 * by the backend, plus the offline references of tools/common/optimal.h: `optimal` (Belady for a
 * pool: the best any policy could do) and `belady_flat` (Belady on the flat block stream, an upper
 * bound a pool cannot reach; prefix traces, no window).
 *
 * Timing covers only the replay loop: the trace is parsed, its lineage hashes
 * and the optimal references' next uses computed before the clock starts; the
 * pool is created before and checked (kvb_pool_check) and destroyed after; the
 * progress bar's drawing time is subtracted. One untimed warm-up replay of the
 * first 2048 requests precedes the measurements. --repeat N keeps the best of N
 * runs, each on a fresh pool, and insists that they all give the same hits.
 *
 * Without --trace the built-in synthetic workload (tools/common/synth.c) is
 * replayed, so that the tool runs anywhere.
 *
 * This file: the policy catalog, the selection (--policy), and the main loop
 * over (policy, capacity, repeat); the parts are under tools/kvb-replay/
 * (replay.h lists them).
 */
#include "kvb-replay/replay.h"

#include "common/optimal.h"

#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct replay_catalog {
    replay_policy p[REPLAY_MAX_POLICIES];
    unsigned n;
} replay_catalog;

static bool replay_catalog_has(const replay_catalog *c, const char *name)
{
    for (unsigned i = 0; i < c->n; i++)
        if (strcmp(c->p[i].name, name) == 0)
            return true;
    return false;
}

static void replay_catalog_add(replay_catalog *c, const char *name, replay_kind kind,
                               kvb_evict_policy evict)
{
    if (c->n == REPLAY_MAX_POLICIES || replay_catalog_has(c, name))
        return;
    replay_policy *p = &c->p[c->n++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->evict = evict;
}

/* Everything this build can run: the library's backends in its list order (the
 * index is the kvb_evict_policy value), then the references (optimal last but one,
 * belady_flat last). */
static void replay_catalog_build(replay_catalog *c)
{
    const kvb_inactive_ops *ops;
    memset(c, 0, sizeof *c);
    for (size_t i = 0; (ops = kvb_inactive_policy(i)) != NULL; i++)
        replay_catalog_add(c, ops->name, REPLAY_POOL, (kvb_evict_policy)i);
    replay_catalog_add(c, "optimal", REPLAY_OPTIMAL, KVB_EVICT_LRU);
    replay_catalog_add(c, "belady_flat", REPLAY_FLAT, KVB_EVICT_LRU);
}

/* "lru, fifo, optimal, belady_flat" */
static void replay_catalog_names(const replay_catalog *c, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < c->n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", c->p[i].name);
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

/* The policies to run, from --policy, in catalog order for "all" and in the given
 * order for a list. Unknown names are a usage error; a policy that cannot run here
 * (kvb_pool_create refuses it, or a reference that does not apply) is an error when
 * named and a note with "all". */
static unsigned replay_select(const replay_opts *o, const replay_catalog *cat, const kvbt_trace *t,
                              const kvbt_oracle *oracle, bool *need_oracle, replay_policy *sel)
{
    bool all = strcmp(o->policy, "all") == 0;
    unsigned n = 0;
    char names[1024];
    replay_catalog_names(cat, names, sizeof names);

    const char *p = o->policy;
    for (unsigned i = 0;; i++) {
        const replay_policy *pol = NULL;
        char name[64];
        if (all) {
            if (i == cat->n)
                break;
            pol = &cat->p[i];
        } else {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == 0 || len >= sizeof name)
                kvbt_usage_error(prog, "--policy: bad list '%s'", o->policy);
            memcpy(name, p, len);
            name[len] = '\0';
            for (unsigned j = 0; j < cat->n; j++)
                if (strcmp(cat->p[j].name, name) == 0)
                    pol = &cat->p[j];
            if (!pol)
                kvbt_usage_error(prog, "--policy: unknown policy '%s' (this build has: %s, or all)",
                                 name, names);
            p = comma ? comma + 1 : NULL;
        }
        for (unsigned j = 0; j < n; j++)
            if (strcmp(sel[j].name, pol->name) == 0)
                kvbt_usage_error(prog, "--policy: '%s' given twice", pol->name);

        /* Whether it can run here. */
        const char *why = NULL;
        char whybuf[512];
        if (pol->kind == REPLAY_POOL) {
            int rc = replay_probe(pol);
            if (rc < 0) {
                snprintf(whybuf, sizeof whybuf, "kvb_pool_create: %s", kvb_strerror(rc));
                why = whybuf;
            }
        } else if (pol->kind == REPLAY_FLAT && o->window) {
            why = "it has no notion of held requests (--window)";
        } else if (pol->kind == REPLAY_FLAT && all && t->max_request_blocks <= 1) {
            why = "with one-block requests it is the same as optimal";
        } else if (oracle && oracle->conflicts) {
            snprintf(whybuf, sizeof whybuf,
                     "the trace is not a prefix tree (%llu block refs follow another parent "
                     "than before, the first in request %llu)",
                     (unsigned long long)oracle->conflicts,
                     (unsigned long long)oracle->first_conflict_request + 1);
            why = whybuf;
        }
        if (why && !all)
            kvbt_die(prog, "policy %s cannot run: %s", pol->name, why);
        if (why) {
            if (!o->quiet)
                fprintf(stderr, "%s: note: %s skipped: %s\n", prog, pol->name, why);
        } else {
            sel[n++] = *pol;
            if (pol->kind != REPLAY_POOL)
                *need_oracle = true;
        }
        if (!all && !p)
            break;
    }
    if (n == 0)
        kvbt_die(prog, "none of the policies can run");
    return n;
}

int main(int argc, char **argv)
{
    replay_opts o;
    kvbt_trace t;
    char err[1024];
    int rc;

    replay_parse_args(argc, argv, &o);
    if (o.publish) {
        kvb_publisher_config pc;
        kvb_publisher_config_init(&pc);
        pc.endpoint = o.publish;
        pc.replay_endpoint = o.publish_replay;
        pc.topic = o.topic ? o.topic : "kv";
        rc = kvb_publisher_create(&pc, &replay_pub);
        if (rc < 0)
            kvbt_die(prog, "--publish %s: %s%s", o.publish, kvb_strerror(rc),
                     rc == -ENOTSUP ? " (built without ZeroMQ)" : "");
        kvb_event_config_init(&replay_events);
        kvb_publisher_event_config(replay_pub, &replay_events);
        replay_events.medium = "GPU";
        replay_events.batch_max = 64;
        replay_events.batch_delay_ms = 10;
    } else if (o.publish_replay || o.topic) {
        kvbt_die(prog, "--publish-replay and --topic need --publish");
    }

    bool synthetic = o.trace == NULL;
    if (synthetic) {
        if (kvbt_synth_generate(&o.synth, &t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    } else {
        if (o.synth_set && !o.quiet)
            fprintf(stderr,
                    "%s: note: --seed and --requests apply to the synthetic workload "
                    "only; ignored with --trace\n",
                    prog);
        if (kvbt_trace_load(o.trace, o.format, &t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    }

    kvb_hash *hashes = kvbt_xmalloc_array((size_t)t.n_refs, sizeof *hashes);
    rc = kvbt_trace_lineage_hashes(&t, hashes);
    if (rc < 0)
        kvbt_die(prog, "%s: cannot hash the trace: %s (a request longer than %u blocks?)", t.name,
                 kvb_strerror(rc), KVB_HASH_MAX_POSITION + 1);

    /* A request longer than a capacity can never be served: say which. */
    for (unsigned c = 0; c < o.n_capacities; c++) {
        if (t.max_request_blocks <= o.capacities[c])
            continue;
        for (uint64_t r = 0; r < t.n_requests; r++) {
            if (kvbt_trace_len(&t, r) > o.capacities[c]) {
                char where[256];
                kvbt_die(prog, "%s has %llu blocks, more than the capacity of %u blocks",
                         replay_where(&t, r, where, sizeof where),
                         (unsigned long long)kvbt_trace_len(&t, r), o.capacities[c]);
            }
        }
    }

    /* Which policies run: each is probed before anything is printed, so that one that
     * cannot run is a clean error (named) or a note (all). The
     * optimal references need the oracle (next uses), built before any timing. */
    replay_catalog cat;
    replay_catalog_build(&cat);
    kvbt_oracle oracle;
    bool need_oracle = false;
    replay_policy *sel = kvbt_xmalloc_array(REPLAY_MAX_POLICIES, sizeof *sel);
    unsigned n_sel;
    {
        bool wants_ref = strcmp(o.policy, "all") == 0 || strstr(o.policy, "optimal") ||
                         strstr(o.policy, "belady_flat");
        bool have_oracle = false;
        if (wants_ref) {
            if (kvbt_oracle_build(&t, hashes, &oracle, err, sizeof err) < 0)
                kvbt_die(prog, "%s", err);
            have_oracle = true;
        }
        n_sel = replay_select(&o, &cat, &t, have_oracle ? &oracle : NULL, &need_oracle, sel);
        if (have_oracle && !need_oracle) {
            kvbt_oracle_free(&oracle);
            have_oracle = false;
        }
        need_oracle = have_oracle;
    }

    kvbt_oracle demote_oracle;
    if (replay_demote) { /* which blocks a request demotes: their next uses */
        if (kvbt_oracle_build(&t, hashes, &demote_oracle, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
        replay_next_req = demote_oracle.next_req;
    }
    if (o.lookahead)
        replay_hint_capacity = replay_lookahead_capacity(&t, o.lookahead);

    replay_scratch s;
    memset(&s, 0, sizeof s);
    s.maxn = (size_t)t.max_request_blocks;
    s.blocks = kvbt_xmalloc_array(s.maxn, sizeof *s.blocks);
    s.mut = kvbt_xmalloc_array(s.maxn, sizeof *s.mut);
    s.cmp = kvbt_xmalloc_array(s.maxn, sizeof *s.cmp);
    s.uncached = kvbt_xmalloc_array(t.n_requests ? t.n_requests : 1, sizeof *s.uncached);
    s.sorted = kvbt_xmalloc_array(t.n_requests ? t.n_requests : 1, sizeof *s.sorted);
    if (o.window) {
        double mib = ((double)o.window + 1) * (double)s.maxn * sizeof *s.slots / 1048576.0;
        if (mib > 4096)
            kvbt_die(prog,
                     "--window %u: the held requests need %.0f MiB of handles (%u slots of the "
                     "longest request, %zu blocks); use a smaller window",
                     o.window, mib, o.window + 1, s.maxn);
        s.slots = kvbt_xmalloc_array(((size_t)o.window + 1) * s.maxn, sizeof *s.slots);
        s.slot_n = kvbt_xmalloc_array((size_t)o.window + 1, sizeof *s.slot_n);
    }

    replay_cell *cells = calloc((size_t)n_sel * o.n_capacities, sizeof *cells);
    if (!cells)
        kvbt_die(prog, "out of memory");

    kvbt_progress progress;
    uint64_t runs = (uint64_t)n_sel * o.n_capacities * o.repeat, run = 0;
    kvbt_progress_init(&progress, !o.quiet && isatty(STDERR_FILENO), runs * t.n_refs);

    for (unsigned p = 0; p < n_sel; p++) {
        if (sel[p].kind == REPLAY_POOL) {
            replay_warmup(&t, hashes, &sel[p], o.capacities[0], o.window, o.lookahead, &s);
            break;
        }
    }

    if (!o.csv && !o.quiet)
        replay_header(&t, &o, synthetic);
    replay_columns(&o);
    fflush(stdout);

    for (unsigned p = 0; p < n_sel; p++) {
        const replay_policy *pol = &sel[p];
        for (unsigned c = 0; c < o.n_capacities; c++) {
            uint32_t cap = o.capacities[c];
            replay_cell best = {.ns = UINT64_MAX}, cur = {0};
            for (uint64_t i = 0; i < o.repeat; i++) {
                kvbt_progress_label(&progress, "%s @ %u blocks (run %llu of %llu)", pol->name, cap,
                                    (unsigned long long)++run, (unsigned long long)runs);
                kvbt_progress_draw(&progress, true);
                if (pol->kind == REPLAY_POOL) {
                    rc = replay_run_pool(&t, hashes, pol, cap, o.window, o.lookahead, &s, &progress,
                                         &cur);
                    if (rc < 0)
                        kvbt_die(prog, "kvb_pool_create (policy %s, capacity %u): %s", pol->name,
                                 cap, kvb_strerror(rc));
                } else {
                    kvbt_opt_result ores;
                    rc = pol->kind == REPLAY_OPTIMAL
                             ? kvbt_optimal_run(&t, &oracle, cap, o.window, &progress, &ores, err,
                                                sizeof err)
                             : kvbt_belady_flat_run(&t, &oracle, cap, &progress, &ores, err,
                                                    sizeof err);
                    if (rc < 0)
                        kvbt_die(prog, "%s", err);
                    cur.hits = ores.hits;
                    cur.evictions = ores.evictions;
                    cur.early_releases = ores.early_releases;
                    cur.ns = ores.ns;
                }
                if (i > 0 && (cur.hits != best.hits || cur.evictions != best.evictions))
                    kvbt_die(prog,
                             "policy %s, capacity %u: run %llu gave %llu hits / %llu evictions, "
                             "an earlier run %llu / %llu: the replay is not deterministic",
                             pol->name, cap, (unsigned long long)i + 1,
                             (unsigned long long)cur.hits, (unsigned long long)cur.evictions,
                             (unsigned long long)best.hits, (unsigned long long)best.evictions);
                best.hits = cur.hits;
                best.evictions = cur.evictions;
                best.early_releases = cur.early_releases;
                best.has_uncached = cur.has_uncached;
                memcpy(best.uncached, cur.uncached, sizeof best.uncached);
                if (cur.ns < best.ns)
                    best.ns = cur.ns;
            }
            best.done = true;
            cells[p * o.n_capacities + c] = best;
            kvbt_progress_clear(&progress);
            replay_emit(&o, &t, pol, cap, &best);
        }
    }
    kvbt_progress_finish(&progress);

    if (!o.csv && n_sel > 1 && o.n_capacities > 1)
        replay_matrix(&o, &t, sel, n_sel, cells);
    if (o.plot)
        replay_plot(&o, &t, synthetic, sel, n_sel, cells);

    if (need_oracle)
        kvbt_oracle_free(&oracle);
    if (replay_demote)
        kvbt_oracle_free(&demote_oracle);
    free(cells);
    free(sel);
    free(s.blocks);
    free(s.mut);
    free(s.cmp);
    free(s.slots);
    free(s.slot_n);
    free(s.uncached);
    free(s.sorted);
    free(hashes);
    kvbt_trace_free(&t);
    if (replay_pub) {
        kvb_publisher_stats ps;
        if (kvb_publisher_flush(replay_pub, 10000) < 0)
            fprintf(stderr, "%s: note: the publisher did not drain within 10 s\n", prog);
        if (kvb_publisher_stats_get(replay_pub, &ps) == 0 && !o.quiet)
            fprintf(stderr, "%s: published %llu batches (%llu events), dropped %llu\n", prog,
                    (unsigned long long)ps.published, (unsigned long long)ps.events,
                    (unsigned long long)ps.dropped);
        kvb_publisher_destroy(replay_pub);
    }
    return 0;
}
