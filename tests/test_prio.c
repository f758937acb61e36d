/*
 * test_prio.c - retention priorities and durations (lib/prio.c and the pool's use
 * of them): kvb_retention lookups, argument checking, the eviction order against
 * a reference model with the time injected (no sleeps), hints over priorities,
 * kvb_seq's retention, stats and metrics. Every backend's behaviour under
 * priorities is in the conformance suite (tests/test_inactive.c).
 */
#include "testutil.h"
#include "kvblock/seq.h"
#include "support/rng.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t now_ms; /* the injected clock */

static uint64_t test_clock(void *ctx)
{
    (void)ctx;
    return now_ms;
}

static kvb_pool *prio_pool(uint32_t blocks, kvb_evict_policy policy, uint32_t hint_capacity)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict = policy;
    cfg.priorities = true;
    cfg.hint_capacity = hint_capacity;
    cfg.clock = (kvb_clock){.now_ms = test_clock};
    now_ms = 1000;
    return tu_pool_cfg(&cfg);
}

/* ------------------------------------------------------------------------ */
/* kvb_retention                                                            */
/* ------------------------------------------------------------------------ */

Test(retention, lookup)
{
    kvb_retention r;
    kvb_retention_init(&r);
    uint32_t p, d;
    cr_assert_eq(kvb_retention_lookup(&r, 12345, &p, &d), 0);
    cr_assert_eq(p, KVB_PRIORITY_DEFAULT);
    cr_assert_eq(d, 0);
    const kvb_retention_range g[] = {
        {.token_start = 0, .token_end = 64, .priority = 90, .duration_ms = 0},
        {.token_start = 128, .token_end = 256, .priority = 10, .duration_ms = 500},
        {.token_start = 1000, .token_end = 0, .priority = 60, .duration_ms = 7},
    };
    r.ranges = g;
    r.n_ranges = 3;
    r.decode_start = 2000;
    r.decode_priority = 0;
    r.decode_duration_ms = 30;
    const struct {
        uint64_t t;
        uint32_t p, d;
    } want[] = {{0, 90, 0},     {63, 90, 0},    {64, 35, 0},   {127, 35, 0},
                {128, 10, 500}, {255, 10, 500}, {256, 35, 0},  {999, 35, 0},
                {1000, 60, 7},  {1999, 60, 7},  {2000, 0, 30}, {1ull << 40, 0, 30}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(kvb_retention_lookup(&r, want[i].t, &p, &d), 0);
        cr_assert_eq(p, want[i].p, "token %llu: priority %u", (unsigned long long)want[i].t, p);
        cr_assert_eq(d, want[i].d, "token %llu: duration %u", (unsigned long long)want[i].t, d);
    }
}

Test(retention, invalid)
{
    kvb_retention r;
    kvb_retention_init(&r);
    uint32_t p, d;
    cr_assert_eq(kvb_retention_lookup(NULL, 0, &p, &d), -EINVAL);
    cr_assert_eq(kvb_retention_lookup(&r, 0, NULL, &d), -EINVAL);
    r.n_ranges = 1; /* no array */
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
    kvb_retention_range g[2] = {{0, 10, 50, 0}, {5, 20, 50, 0}}; /* overlap */
    r.ranges = g;
    r.n_ranges = 2;
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
    g[1] = (kvb_retention_range){10, 20, 101, 0}; /* priority too high */
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
    g[1] = (kvb_retention_range){10, 10, 50, 0}; /* empty */
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
    g[0] = (kvb_retention_range){0, 0, 50, 0}; /* open range not last */
    g[1] = (kvb_retention_range){10, 20, 50, 0};
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
    g[0] = (kvb_retention_range){0, 10, 50, 0};
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), 0);
    r.decode_priority = 101;
    cr_assert_eq(kvb_retention_lookup(&r, 0, &p, &d), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* arguments                                                                */
/* ------------------------------------------------------------------------ */

static void put1(kvb_pool *p, kvb_hash h, const kvb_retention *r, kvb_block *keep)
{
    kvb_block b;
    if (kvb_pool_match(p, &h, 1, &b) == 0) {
        kvb_mutable m;
        kvb_complete c;
        cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
        cr_assert_eq(kvb_mutable_stage(&m, h, &c), 0);
        cr_assert_eq(kvb_pool_register_retained(p, &c, 1, r, &b), 0);
    }
    if (keep)
        *keep = b;
    else
        cr_assert_eq(kvb_block_release(&b), 0);
}

Test(priority, arguments)
{
    kvb_pool *q = tu_pool(8, KVB_EVICT_LRU); /* without priorities */
    kvb_hash h = tu_hash(1);
    kvb_retention r;
    kvb_retention_init(&r);
    kvb_block b;
    put1(q, h, NULL, &b);
    cr_assert_eq(kvb_block_set_priority(&b, 50, 0), -ENOTSUP);
    cr_assert_eq(kvb_block_priority(&b), (int)KVB_PRIORITY_DEFAULT);
    cr_assert_eq(kvb_pool_set_priority(q, &h, 1, 50, 0), -ENOTSUP);
    kvb_complete c;
    kvb_mutable m;
    cr_assert_eq(kvb_pool_allocate(q, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(2), &c), 0);
    cr_assert_eq(kvb_pool_register_retained(q, &c, 1, &r, &b), -ENOTSUP);
    kvb_block b2;
    cr_assert_eq(kvb_pool_register_retained(q, &c, 1, NULL, &b2), 0); /* NULL: plain */
    cr_assert_eq(kvb_block_release(&b2), 0);
    cr_assert_eq(kvb_block_release(&b), 0);
    tu_finish(q);

    kvb_pool *p = prio_pool(8, KVB_EVICT_LRU, 0);
    put1(p, h, NULL, &b);
    cr_assert_eq(kvb_block_set_priority(NULL, 50, 0), -EINVAL);
    cr_assert_eq(kvb_block_set_priority(&b, 101, 0), -EINVAL);
    cr_assert_eq(kvb_pool_set_priority(p, NULL, 1, 50, 0), -EINVAL);
    cr_assert_eq(kvb_pool_set_priority(p, &h, 1, 101, 0), -EINVAL);
    cr_assert_eq(kvb_pool_set_priority(p, NULL, 0, 50, 0), 0);
    cr_assert_eq(kvb_block_set_priority(&b, 70, 0), 0);
    cr_assert_eq(kvb_block_priority(&b), 70);
    kvb_block stale = b;
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_assert_eq(kvb_block_set_priority(&stale, 50, 0), -ESTALE);
    cr_assert_eq(kvb_block_priority(&stale), -ESTALE);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.misuse, 2);
    cr_assert_eq(st.retained, 1);
    kvb_retention_range bad = {5, 1, 50, 0};
    r.ranges = &bad;
    r.n_ranges = 1;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(3), &c), 0);
    cr_assert_eq(kvb_pool_register_retained(p, &c, 1, &r, &b), -EINVAL);
    cr_assert_eq(kvb_complete_release(&c), 0); /* nothing was registered */
    cr_assert_eq(kvb_pool_set_priority(p, &h, 1, KVB_PRIORITY_DEFAULT, 0), 1);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 0);
    tu_finish(p);
}

/* ------------------------------------------------------------------------ */
/* the reference model                                                      */
/* ------------------------------------------------------------------------ */

/*
 * One-block requests of K root hashes on an lru pool, so the whole order is
 * deterministic: the model keeps every cached block's place (its release into the
 * lru: seq), whether the pool has set it apart in its level's list, its priority
 * and its deadline, and predicts each eviction exactly: the lowest level holding a
 * cached block first; within it, a block set apart earlier, else the lru's next
 * block, which is set apart instead when its level is not the lowest (prio.h).
 * A priority change (a call, or a duration running out, in (deadline, block id)
 * order) leaves a block in the lru where it is and sends a set-apart one back to
 * the lru's most recent end.
 */
#define K   40
#define CAP 12

struct mblk {
    bool cached;
    uint32_t id;    /* block id while in the pool */
    uint32_t prio;  /* current priority */
    uint64_t until; /* deadline (0: none) */
    uint64_t seq;   /* when it entered the lru: its place there and in a level list */
    bool apart;     /* set apart in its level's list by an eviction */
};

struct pmodel {
    struct mblk b[K];
    uint64_t seq;
    uint64_t expired, retained_evictions, evictions;
};

static void pm_place(struct pmodel *m, int k)
{
    m->b[k].seq = ++m->seq;
    m->b[k].apart = false;
}

/* durations due at `now`, in (deadline, id) order */
static void pm_expire(struct pmodel *m, uint64_t now)
{
    for (;;) {
        int best = -1;
        for (int k = 0; k < K; k++) {
            struct mblk *x = &m->b[k];
            if (!x->cached || !x->until || x->until > now)
                continue;
            if (best < 0 || x->until < m->b[best].until ||
                (x->until == m->b[best].until && x->id < m->b[best].id))
                best = k;
        }
        if (best < 0)
            return;
        struct mblk *x = &m->b[best];
        x->until = 0;
        x->prio = KVB_PRIORITY_DEFAULT;
        m->expired++;
        if (x->apart)
            pm_place(m, best); /* set apart -> the lru's most recent end */
    }
}

/* the next victim (some blocks may be set apart on the way) */
static int pm_victim(struct pmodel *m)
{
    for (;;) {
        uint32_t low = KVB_PRIORITY_MAX + 1;
        for (int k = 0; k < K; k++)
            if (m->b[k].cached && m->b[k].prio < low)
                low = m->b[k].prio;
        int apart = -1, next = -1;
        for (int k = 0; k < K; k++) {
            const struct mblk *x = &m->b[k];
            if (!x->cached)
                continue;
            if (x->apart && x->prio == low && (apart < 0 || x->seq < m->b[apart].seq))
                apart = k;
            if (!x->apart && (next < 0 || x->seq < m->b[next].seq))
                next = k;
        }
        if (apart >= 0)
            return apart;
        if (next < 0)
            return -1;
        if (m->b[next].prio == low)
            return next;
        m->b[next].apart = true;
    }
}

static kvb_hash pm_hash(int k)
{
    return tu_hash(5000 + (uint64_t)k);
}

static void pm_check_stats(kvb_pool *p, const struct pmodel *m, int op)
{
    kvb_stats st;
    kvb_pool_stats(p, &st);
    uint32_t retained = 0, timers = 0;
    for (int k = 0; k < K; k++) {
        retained += m->b[k].cached && m->b[k].prio != KVB_PRIORITY_DEFAULT;
        timers += m->b[k].cached && m->b[k].until != 0;
    }
    cr_assert_eq(st.retained, retained, "op %d: retained %u, model %u", op, st.retained, retained);
    cr_assert_eq(st.retention_timers, timers, "op %d: timers %u, model %u", op, st.retention_timers,
                 timers);
    cr_assert_eq(st.retention_expired, m->expired, "op %d: expired %llu, model %llu", op,
                 (unsigned long long)st.retention_expired, (unsigned long long)m->expired);
    cr_assert_eq(st.retained_evictions, m->retained_evictions, "op %d", op);
    cr_assert_eq(st.evictions, m->evictions, "op %d", op);
}

Test(priority, against_a_reference_model)
{
    kvb_pool *p = prio_pool(CAP, KVB_EVICT_LRU, 0);
    static struct pmodel m;
    memset(&m, 0, sizeof m);
    uint64_t seed = 42;
    uint32_t prios[] = {0, 5, 20, 34, 35, 35, 35, 35, 36, 60, 90, 100};
    for (int op = 0; op < 20000; op++) {
        uint32_t r = (uint32_t)(tu_lcg_next(&seed) >> 33);
        switch (r % 8) {
        case 0: /* time passes */
            now_ms += (r >> 3) % 40;
            break;
        case 1: { /* set the priority of some content (cached or not) */
            int k = (int)((r >> 3) % K);
            uint32_t pr = prios[(r >> 9) % 12], dur = (r >> 13) % 3 ? 0 : 1 + (r >> 15) % 100;
            kvb_hash h = pm_hash(k);
            int got = kvb_pool_set_priority(p, &h, 1, pr, dur);
            pm_expire(&m, now_ms); /* the call applied due durations first */
            cr_assert_eq(got, m.b[k].cached ? 1 : 0, "op %d", op);
            if (m.b[k].cached) {
                struct mblk *x = &m.b[k];
                bool moves = x->prio != pr && x->apart;
                x->prio = pr;
                x->until = dur && pr != KVB_PRIORITY_DEFAULT ? now_ms + dur : 0;
                if (moves)
                    pm_place(&m, k); /* set apart -> the lru's most recent end */
            }
            break;
        }
        default: { /* a request for one block, with a retention priority or not */
            int k = (int)((r >> 3) % K);
            kvb_hash h = pm_hash(k);
            kvb_block b;
            int hit = kvb_pool_match(p, &h, 1, &b);
            cr_assert_eq(hit, m.b[k].cached ? 1 : 0, "op %d: hit %d, model %d", op, hit,
                         m.b[k].cached);
            if (!hit) {
                kvb_mutable mu;
                kvb_complete c;
                kvb_hash ev;
                uint32_t nev = 0;
                cr_assert_eq(kvb_pool_allocate(p, 1, &mu, &ev, &nev), 0);
                pm_expire(&m, now_ms);
                uint32_t used = 0;
                for (int j = 0; j < K; j++)
                    used += m.b[j].cached;
                if (used == CAP) {
                    int v = pm_victim(&m);
                    cr_assert_eq(nev, 1);
                    cr_assert(kvb_hash_equal(ev, pm_hash(v)),
                              "op %d: evicted %llx, model hash %d (priority %u)", op,
                              (unsigned long long)ev.hi, v, m.b[v].prio);
                    m.b[v].cached = false;
                    m.b[v].apart = false;
                    m.evictions++;
                    m.retained_evictions += m.b[v].prio > KVB_PRIORITY_DEFAULT;
                    m.b[v].prio = KVB_PRIORITY_DEFAULT;
                    m.b[v].until = 0;
                } else {
                    cr_assert_eq(nev, 0);
                }
                cr_assert_eq(kvb_mutable_stage(&mu, h, &c), 0);
                kvb_retention ret;
                kvb_retention_init(&ret);
                kvb_retention_range g = {.token_start = 0, .token_end = 0};
                g.priority = prios[(r >> 9) % 12];
                g.duration_ms = (r >> 13) % 2 ? 0 : 1 + (r >> 15) % 200;
                ret.ranges = &g;
                ret.n_ranges = 1;
                bool retained = (r >> 20) % 2;
                cr_assert_eq(kvb_pool_register_retained(p, &c, 1, retained ? &ret : NULL, &b), 0);
                struct mblk *x = &m.b[k];
                x->id = b.id;
                x->prio = retained ? g.priority : KVB_PRIORITY_DEFAULT;
                x->until = retained && g.duration_ms && g.priority != KVB_PRIORITY_DEFAULT
                               ? now_ms + g.duration_ms
                               : 0;
            }
            cr_assert_eq(kvb_block_priority(&b), (int)m.b[k].prio, "op %d", op);
            cr_assert_eq(kvb_block_release(&b), 0);
            m.b[k].cached = true;
            pm_place(&m, k); /* released: the tail of its list */
            break;
        }
        }
        pm_expire(&m, now_ms);
        pm_check_stats(p, &m, op); /* stats apply due durations too */
        if (op % 500 == 0)
            cr_assert_eq(kvb_pool_check(p), 0, "op %d", op);
    }
    cr_assert_gt(m.expired, 100);
    cr_assert_gt(m.retained_evictions, 100);
    tu_finish(p);
}

/* ------------------------------------------------------------------------ */
/* TTL pins, hints over priorities, duplicates, reset, seq                  */
/* ------------------------------------------------------------------------ */

Test(priority, ttl_pin_of_a_paused_session)
{
    kvb_pool *p = prio_pool(8, KVB_EVICT_LRU, 0);
    kvb_hash session[4], other[8];
    tu_chain(0x7000, 4, session);
    for (int i = 0; i < 8; i++)
        other[i] = tu_hash(900 + (uint64_t)i);
    for (int i = 0; i < 4; i++)
        put1(p, session[i], NULL, NULL);
    /* the session pauses for a tool call: keep its blocks for 5 s */
    cr_assert_eq(kvb_pool_set_priority(p, session, 4, KVB_PRIORITY_MAX, 5000), 4);
    for (int i = 0; i < 8; i++)
        put1(p, other[i], NULL, NULL); /* traffic: evicts other blocks, never the session's */
    kvb_block b[4];
    cr_assert_eq(kvb_pool_match(p, session, 4, b), 4);
    cr_assert_eq(kvb_block_priority(&b[0]), (int)KVB_PRIORITY_MAX);
    kvb_block_release_n(b, 4);
    now_ms += 5001; /* it did not come back in time */
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retention_expired, 4);
    cr_assert_eq(st.retained, 0);
    for (int i = 0; i < 8; i++)
        put1(p, other[i], NULL, NULL);
    cr_assert_eq(kvb_pool_match(p, session, 4, b), 0, "an expired pin is ordinary again");
    tu_finish(p);
}

Test(priority, hints_come_before_priorities)
{
    kvb_pool *p = prio_pool(4, KVB_EVICT_LRU, 8);
    kvb_hash h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = tu_hash(100 + (uint64_t)i);
        put1(p, h[i], NULL, NULL);
    }
    cr_assert_eq(kvb_pool_set_priority(p, &h[0], 1, 0, 0), 1);   /* lowest: would go first */
    cr_assert_eq(kvb_pool_set_priority(p, &h[1], 1, 100, 0), 1); /* highest */
    cr_assert_eq(kvb_pool_hint(p, &h[0], 1, 1), 0);              /* but a queued request needs it */
    kvb_mutable m[3];
    kvb_hash ev[3];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 3, m, ev, &nev), 0);
    cr_assert_eq(nev, 3);
    cr_assert(kvb_hash_equal(ev[0], h[2]));
    cr_assert(kvb_hash_equal(ev[1], h[3]));
    cr_assert(kvb_hash_equal(ev[2], h[1]), "priority 100 before the hinted block");
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained_evictions, 1);
    cr_assert_eq(st.hint_protected, 1);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    cr_assert_eq(kvb_pool_hint(p, &h[0], 1, -1), 0); /* back into the backend (priority 0) */
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 1);
    cr_assert_eq(kvb_pool_reset_inactive(p), 1);
    tu_finish(p);
}

Test(priority, duplicates_and_rejects_set_the_primary)
{
    kvb_pool *p = prio_pool(8, KVB_EVICT_LRU, 0);
    kvb_hash h = tu_hash(77);
    kvb_block b0;
    put1(p, h, NULL, &b0);
    kvb_retention r;
    kvb_retention_init(&r);
    kvb_retention_range g = {0, 0, 80, 0};
    r.ranges = &g;
    r.n_ranges = 1;
    kvb_mutable m;
    kvb_complete c;
    kvb_block d;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, h, &c), 0);
    cr_assert_eq(kvb_pool_register_retained(p, &c, 1, &r, &d), 0); /* a duplicate */
    cr_assert_neq(d.id, b0.id);
    cr_assert_eq(kvb_block_priority(&b0), 80);
    cr_assert_eq(kvb_block_priority(&d), 80, "a duplicate answers for its content");
    cr_assert_eq(kvb_block_set_priority(&d, 20, 0), 0);
    cr_assert_eq(kvb_block_priority(&b0), 20);
    cr_assert_eq(kvb_block_release(&d), 0);
    cr_assert_eq(kvb_block_release(&b0), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 1);
    cr_assert_eq(kvb_pool_reset_inactive(p), 1);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 0);
    tu_finish(p);
}

Test(priority, reset_inactive_in_eviction_order)
{
    kvb_pool *p = prio_pool(6, KVB_EVICT_LRU, 0);
    kvb_hash h[6];
    uint32_t pr[6] = {90, 35, 10, 35, 90, 50};
    for (int i = 0; i < 6; i++) {
        h[i] = tu_hash(300 + (uint64_t)i);
        kvb_block b;
        put1(p, h[i], NULL, &b);
        cr_assert_eq(kvb_block_set_priority(&b, pr[i], 0), 0);
        cr_assert_eq(kvb_block_release(&b), 0);
    }
    kvb_hash ev[6];
    uint32_t nev;
    kvb_mutable m[6];
    cr_assert_eq(kvb_pool_allocate(p, 6, m, ev, &nev), 0);
    int want[6] = {2, 1, 3, 5, 0, 4}; /* 10, 35 (lru), 35, 50, 90, 90 */
    for (int i = 0; i < 6; i++)
        cr_assert(kvb_hash_equal(ev[i], h[want[i]]), "eviction %d", i);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    tu_finish(p);
}

Test(priority, seq_token_ranges_and_decode_phase)
{
    kvb_pool *p = prio_pool(16, KVB_EVICT_LRU, 0);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(&s, p, 8), 0);
    kvb_retention r;
    kvb_retention_init(&r);
    kvb_retention_range g[] = {{0, 32, 90, 0}, {32, 48, 50, 100}};
    r.ranges = g;
    r.n_ranges = 2;
    r.decode_start = 64; /* a 64-token prompt */
    r.decode_priority = 5;
    cr_assert_eq(kvb_seq_set_retention(&s, &r), 0);
    uint32_t tokens[96];
    for (int i = 0; i < 96; i++)
        tokens[i] = 10 + (uint32_t)i;
    cr_assert_eq(kvb_seq_append_tokens(&s, tokens, 96), 6);
    const kvb_block *b = kvb_seq_blocks(&s);
    int want[6] = {90, 90, 50, 35, 5, 5}; /* block size 16 */
    for (int i = 0; i < 6; i++)
        cr_assert_eq(kvb_block_priority(&b[i]), want[i], "block %d", i);
    kvb_seq_fini(&s);
    kvb_retention_range bad = {10, 5, 50, 0};
    r.ranges = &bad;
    r.n_ranges = 1;
    cr_assert_eq(kvb_seq_init(&s, p, 8), 0);
    cr_assert_eq(kvb_seq_set_retention(&s, &r), -EINVAL);
    cr_assert_eq(kvb_seq_set_retention(&s, NULL), 0);
    kvb_seq_fini(&s);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 5); /* 6 cached, one at the default */
    cr_assert_eq(st.retention_timers, 1);
    tu_finish(p);
}

Test(priority, stats_memory_metrics)
{
    kvb_pool *p = prio_pool(8, KVB_EVICT_LRU, 0);
    kvb_memory_stats mem;
    cr_assert_eq(kvb_pool_memory(p, &mem), 0);
    cr_assert_geq(mem.priorities, 8 * 29);
    cr_assert_eq(mem.total, mem.slots + mem.hash_index + mem.backend + mem.sketch + mem.pool +
                                mem.hints + mem.priorities);
    kvb_hash h = tu_hash(1);
    put1(p, h, NULL, NULL);
    cr_assert_eq(kvb_pool_set_priority(p, &h, 1, 99, 50), 1);
    char buf[16384];
    int n = kvb_pool_metrics_text(p, buf, sizeof buf);
    cr_assert(n > 0 && n < (int)sizeof buf);
    cr_assert_not_null(strstr(buf, "kvblock_retained{pool=\"pool\"} 1\n"));
    cr_assert_not_null(strstr(buf, "kvblock_retention_timers{pool=\"pool\"} 1\n"));
    cr_assert_not_null(strstr(buf, "component=\"priorities\"}"));
    now_ms += 50;
    n = kvb_pool_metrics_text(p, buf, sizeof buf);
    cr_assert_not_null(strstr(buf, "kvblock_retention_expired_total{pool=\"pool\"} 1\n"));
    cr_assert_not_null(strstr(buf, "kvblock_retained{pool=\"pool\"} 0\n"));
    tu_finish(p);
    kvb_pool *q = tu_pool(8, KVB_EVICT_LRU);
    cr_assert_eq(kvb_pool_memory(q, &mem), 0);
    cr_assert_eq(mem.priorities, 0);
    tu_finish(q);
}
