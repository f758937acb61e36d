/*
 * fuzz_pool.c - libFuzzer target: the input is a program of pool API calls,
 * run against the library and against a reference model, compared call by call.
 *
 * Build and run: `make fuzz` (FUZZ_SECONDS, default 60), `make fuzz-regress`
 * (the committed corpus in fuzz/corpus/fuzz_pool once, for CI). See mk/fuzz.mk.
 * Linked with fuzz/replay_main.c instead of libFuzzer it is a plain program
 * replaying the files named on its command line (any compiler).
 *
 * Input format: byte 0 configures the run (block counts, policies, duplicate
 * policy, reset-on-release default, callbacks, registry, event sink), then a
 * sequence of operations, each an opcode byte and its argument bytes; reading
 * past the end yields zeros. Two pools A and B exist so that handles can be
 * presented to the wrong pool. Handles live in tables (mutable, complete,
 * block, weak) that operations fill and consume; other operations copy, zero
 * and forge table entries (another pool, another id, another generation), so
 * released, stale, foreign, zeroed and out-of-range handles all occur, as do
 * absurd counts, NULL out-parameters, invalid hashes, bad configurations,
 * injected allocation failures and saturated reference counts.
 *
 * The model (struct mpool, fuzz/pool_model.c) is a plain single-threaded
 * restatement of the contract of kvblock.h / DESIGN.md section 2: six slot
 * states, generations that change on every transition, a FIFO free list, LRU
 * (insertion order) and FIFO (arrival order) eviction, resurrection, duplicates
 * holding a reference on their primary, reset-on-release, the misuse counter,
 * the counters of kvb_stats, the callbacks (and their order), registry
 * presence, the flattened event stream, and lookahead hints (kvb_pool_hint on
 * pool A, which has a small hint capacity; pool B has none): per hash a FIFO of
 * (ticket, uses), victims that are hinted set apart instead of evicted, the
 * set-apart blocks evicted last by (next need, position), withdrawal back into
 * the policy order; and retention priorities (pool A, when its policy is lru or
 * fifo): a level per content, blocks below the default evicted first and blocks
 * above it last (least recently released first within a level, the policy's
 * order at the default), durations on an injected clock that an operation
 * advances. This file is the harness: after every call it compares the return
 * value; the handles produced (pool, id, generation, hash: ids are predicted
 * too, since the free list and both built-in policies are deterministic) and
 * consumed (cleared on success, untouched on failure); the callbacks fired;
 * the events delivered; every field of kvb_pool_stats of both pools; every
 * slot's generation; registry presence of every hash; kvb_pool_check() == 0.
 * At the end every outstanding reference is released (lost handles are
 * rebuilt from the model), both pools are destroyed and the allocator must
 * balance. Any difference aborts with a message (a crash for libFuzzer).
 */
#include "kvblock.h"
#include "pool_model.h"
#include "support/fail_alloc.h"
#include "testing.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* input                                                                    */
/* ------------------------------------------------------------------------ */

struct rd {
    const uint8_t *p;
    size_t n, i;
};

static uint8_t u8(struct rd *r)
{
    return r->i < r->n ? r->p[r->i++] : 0;
}

static bool g_trace; /* FUZZ_TRACE=1: print every operation */
static int g_rc;     /* result of the operation's library call, for the trace */

/* ------------------------------------------------------------------------ */
/* allocator: counts, checks sizes, fails on request                        */
/* ------------------------------------------------------------------------ */

/* The fail-at-k allocator (tests/support/fail_alloc.h) armed with k = 1 by an
 * operation whose opcode asks for a failure; requests over 4 GiB fail. */
static tu_fa FA = TU_FA_INITIALIZER((size_t)1 << 32);

/* ------------------------------------------------------------------------ */
/* the library's configuration and observations                             */
/* ------------------------------------------------------------------------ */

static struct reclog got_cb, got_ev; /* what the library actually did */
static uint64_t ev_last_seq[2];
static kvb_registry *REG;
static kvb_pool_config CFG[2];
static kvb_event_config EVCFG;
static int pool_user[2] = {0, 1};

static uint64_t fuzz_clock(void *ctx)
{
    (void)ctx;
    return g_now;
}

static void on_reset(void *user, uint32_t id)
{
    int pi = *(int *)user;
    rec_push(&got_cb, pi, CB_RESET, id, (kvb_hash){0, 0});
    /* a callback may call back into the pool: the lock is not held */
    (void)kvb_pool_available(M.P[pi].real);
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    int pi = *(int *)user;
    rec_push(&got_cb, pi, CB_EVICT, id, h);
}

static void sink_noop(void *user, const kvb_pool *pool, const kvb_event *e, uint32_t n)
{
    (void)user;
    (void)pool;
    (void)e;
    (void)n;
}

static void sink(void *user, const kvb_pool *pool, const kvb_event *e, uint32_t n)
{
    (void)user;
    int pi = pool == M.P[0].real ? 0 : pool == M.P[1].real ? 1 : -1;
    CHECK(pi >= 0, "event for an unknown pool");
    for (uint32_t i = 0; i < n; i++) {
        CHECK(e[i].seq == ev_last_seq[pi] + 1, "event seq %" PRIu64 " after %" PRIu64, e[i].seq,
              ev_last_seq[pi]);
        ev_last_seq[pi] = e[i].seq;
        if (e[i].type == KVB_EVENT_CLEARED) {
            CHECK(e[i].n == 0, "CLEARED with %u hashes", e[i].n);
            rec_push(&got_ev, pi, EV_CLEARED, 0, (kvb_hash){0, 0});
            continue;
        }
        CHECK(e[i].type == KVB_EVENT_STORED || e[i].type == KVB_EVENT_REMOVED, "event type %d",
              (int)e[i].type);
        CHECK(e[i].n > 0, "empty STORED/REMOVED event");
        for (uint32_t k = 0; k < e[i].n; k++)
            rec_push(&got_ev, pi, e[i].type == KVB_EVENT_STORED ? EV_STORED : EV_REMOVED,
                     e[i].block_ids[k], e[i].hashes[k]);
    }
}

/* ------------------------------------------------------------------------ */
/* comparison                                                               */
/* ------------------------------------------------------------------------ */

static void compare_logs(const char *what)
{
    CHECK(got_cb.n == M.cb.n, "%s: %u callbacks fired, model expects %u", what, got_cb.n, M.cb.n);
    for (uint32_t i = 0; i < got_cb.n; i++) {
        const struct rec *a = &got_cb.r[i], *b = &M.cb.r[i];
        CHECK(a->pool == b->pool && a->kind == b->kind && a->id == b->id,
              "%s: callback %u is (pool %d, %s, id %u), model expects (pool %d, %s, id %u)", what,
              i, a->pool, a->kind == CB_RESET ? "on_reset" : "on_evict", a->id, b->pool,
              b->kind == CB_RESET ? "on_reset" : "on_evict", b->id);
        if (a->kind == CB_EVICT)
            CHECK(heq(a->h, b->h), "%s: on_evict %u with another hash", what, i);
    }
    CHECK(got_ev.n == M.ev.n, "%s: %u event records delivered, model expects %u", what, got_ev.n,
          M.ev.n);
    for (uint32_t i = 0; i < got_ev.n; i++) {
        const struct rec *a = &got_ev.r[i], *b = &M.ev.r[i];
        CHECK(a->pool == b->pool && a->kind == b->kind && heq(a->h, b->h),
              "%s: event record %u is (pool %d, kind %d), model expects (pool %d, kind %d)", what,
              i, a->pool, a->kind, b->pool, b->kind);
    }
}

static void compare_pool(const struct mpool *mp, const char *what)
{
    kvb_pool *p = mp->real;
    CHECK(kvb_pool_check(p) == 0, "%s: kvb_pool_check failed on pool %d", what, mp->idx);
    kvb_stats s;
    CHECK(kvb_pool_stats(p, &s) == 0, "stats");
#define EQ(field, val)                                                                             \
    CHECK((uint64_t)(field) == (uint64_t)(val), "%s: pool %d: %s is %" PRIu64 ", model %" PRIu64,  \
          what, mp->idx, #field, (uint64_t)(field), (uint64_t)(val))
    EQ(s.block_count, mp->n);
    EQ(s.reset, mp->count[S_RESET]);
    EQ(s.mutable_, mp->count[S_MUTABLE]);
    EQ(s.staged, mp->count[S_STAGED]);
    EQ(s.primary, mp->count[S_PRIMARY]);
    EQ(s.duplicate, mp->count[S_DUPLICATE]);
    EQ(s.inactive, mp->count[S_INACTIVE]);
    EQ(s.peak_in_use, mp->peak);
    EQ(s.allocations, mp->c.allocations);
    EQ(s.allocations_from_reset, mp->c.from_reset);
    EQ(s.evictions, mp->c.evictions);
    EQ(s.registrations, mp->c.registrations);
    EQ(s.duplicates, mp->c.duplicates);
    EQ(s.dedups, mp->c.dedups);
    EQ(s.stagings, mp->c.stagings);
    EQ(s.match_requested, mp->c.mreq);
    EQ(s.match_returned, mp->c.mret);
    EQ(s.misuse, mp->c.misuse);
    EQ(s.eager_transitions, 0); /* one thread: no release window is ever open */
    EQ(s.allocate_rollbacks, 0);
    EQ(s.release_noops, mp->c.noops);
    EQ(s.resurrections, mp->c.resurrections);
    EQ(s.scan_requested, mp->c.sreq);
    EQ(s.scan_returned, mp->c.sret);
    EQ(kvb_pool_available(p), mp->count[S_RESET] + mp->count[S_INACTIVE]);
    uint32_t records, entries = m_hint_entries(mp, &records);
    uint64_t uses = 0;
    for (int k = 0; k < NU; k++)
        uses += mp->h[k].uses;
    EQ(s.hint_uses, uses);
    EQ(s.hint_hashes, entries);
    EQ(s.hint_added, mp->h_added);
    EQ(s.hint_withdrawn, mp->h_withdrawn);
    EQ(s.hint_unmatched, mp->h_unmatched);
    EQ(s.hint_rejected, mp->h_rejected);
    EQ(s.hint_evictions, mp->h_evictions);
    if (mp->policy != POL_OTHER)
        EQ(s.hint_protected, m_protected(mp));
    uint32_t retained = 0, timers = 0; /* cached off the default, not set apart by hints */
    for (uint32_t i = 0; i < mp->n; i++) {
        retained += mp->s[i].state == S_INACTIVE && !mp->s[i].diverted &&
                    mp->s[i].prio != KVB_PRIORITY_DEFAULT;
        timers += mp->s[i].until != 0;
    }
    EQ(s.retained, retained);
    EQ(s.retention_timers, timers);
    EQ(s.retention_expired, mp->expired);
    EQ(s.retained_evictions, mp->retained_evictions);
#undef EQ
    for (uint32_t i = 0; i < mp->n; i++) {
        CHECK(kvb__test_slot_gen(p, i) == mp->s[i].gen,
              "%s: pool %d slot %u generation %u, "
              "model %u",
              what, mp->idx, i, kvb__test_slot_gen(p, i), mp->s[i].gen);
        CHECK(kvb__test_slot_state(p, i) == mp->s[i].state,
              "%s: pool %d slot %u state %d, "
              "model %d",
              what, mp->idx, i, kvb__test_slot_state(p, i), mp->s[i].state);
    }
    if (REG) {
        bool pres[NU];
        CHECK(kvb_registry_present(REG, U, NU - 1, p, pres) >= 0, "registry_present");
        for (int k = 0; k < NU - 1; k++) {
            bool want = false;
            for (uint32_t i = 0; i < mp->n; i++) {
                int st = mp->s[i].state;
                if ((st == S_PRIMARY || st == S_DUPLICATE || st == S_INACTIVE) &&
                    heq(mp->s[i].hash, U[k]))
                    want = true;
            }
            CHECK(pres[k] == want, "%s: pool %d: registry presence of hash %d is %d, model %d",
                  what, mp->idx, k, pres[k], want);
        }
    }
}

static void compare_all(const char *what)
{
    compare_logs(what);
    compare_pool(&M.P[0], what);
    compare_pool(&M.P[1], what);
}

/* ------------------------------------------------------------------------ */
/* handle tables                                                            */
/* ------------------------------------------------------------------------ */

#define NM 16
#define NC 16
#define NB 32
#define NW 8
static kvb_mutable TM[NM];
static kvb_complete TC[NC];
static kvb_block TB[NB];
static kvb_weak TW[NW];
static unsigned cur_m, cur_c, cur_b, cur_w; /* where new handles go (overwriting) */

static void put_m(kvb_mutable m)
{
    TM[cur_m++ % NM] = m;
}
static void put_c(kvb_complete c)
{
    TC[cur_c++ % NC] = c;
}
static void put_b(kvb_block b)
{
    TB[cur_b++ % NB] = b;
}

static bool is_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return false;
    return true;
}

/* forget every handle of a destroyed pool (using them would be use-after-free) */
static void purge(const kvb_pool *p)
{
    for (int i = 0; i < NM; i++)
        if (TM[i].pool == p)
            memset(&TM[i], 0, sizeof TM[i]);
    for (int i = 0; i < NC; i++)
        if (TC[i].pool == p)
            memset(&TC[i], 0, sizeof TC[i]);
    for (int i = 0; i < NB; i++)
        if (TB[i].pool == p)
            memset(&TB[i], 0, sizeof TB[i]);
    for (int i = 0; i < NW; i++)
        if (TW[i].pool == p)
            memset(&TW[i], 0, sizeof TW[i]);
}

/* ------------------------------------------------------------------------ */
/* pools                                                                    */
/* ------------------------------------------------------------------------ */

static void pool_create_or_die(int idx)
{
    kvb_pool *p = NULL;
    int rc = kvb_pool_create(&CFG[idx], &p);
    g_rc = rc;
    CHECK(rc == 0, "pool_create of a valid configuration: %s", kvb_strerror(rc));
    model_reset(&M.P[idx], &CFG[idx], p, idx);
    ev_last_seq[idx] = 0;
}

/* ------------------------------------------------------------------------ */
/* operations                                                               */
/* ------------------------------------------------------------------------ */

static void begin_call(void)
{
    got_cb.n = got_ev.n = 0;
    M.cb.n = M.ev.n = 0;
}

/* a handle's pool, chosen between the two pools (or none) by a byte */
static kvb_pool *pick_pool(uint8_t b)
{
    return M.P[b & 1].real;
}

static bool g_enomem; /* the call failed with an injected -ENOMEM: restore the model */

static uint32_t m_alloc_ids(struct mpool *mp, uint32_t n, const uint32_t *lib, uint32_t *ids);
static uint32_t m_alloc_one(struct mpool *mp, uint32_t id, bool victim, const kvb_hash *ev);

static void op_allocate(struct rd *r)
{
    struct mpool *mp = &M.P[u8(r) & 1];
    uint8_t sel = u8(r), flags = u8(r);
    uint32_t n;
    switch (sel & 7) {
    case 0:
        n = 0;
        break;
    case 1:
        n = mp->n + 1 + (sel >> 3); /* more than the pool has */
        break;
    case 2:
        n = UINT32_MAX - (sel >> 3); /* absurd */
        break;
    default:
        n = 1 + (sel >> 3) % 32; /* up to 32: large batches need a heap callback buffer */
        break;
    }
    bool out_null = n > 0 && (flags & 7) == 4;
    bool ev_null = flags & 8, nev_null = flags & 16;
    kvb_mutable out[64];
    kvb_hash evicted[64];
    memset(out, 0x5a, sizeof out);
    uint32_t nev = 12345;
    int rc = kvb_pool_allocate(mp->real, n, out_null ? NULL : out, ev_null ? NULL : evicted,
                               nev_null ? NULL : &nev);
    int want = 0;
    if (out_null)
        want = -EINVAL;
    else if (n && (n > mp->n || mp->flen + mp->count[S_INACTIVE] < n))
        want = -ENOSPC;
    if (rc == -ENOMEM && FA.failed) {
        g_enomem = true;
        return;
    }
    CHECK(rc == want, "allocate(%u): %d, model %d", n, rc, want);
    if (rc != 0 || n == 0) {
        if (!nev_null)
            CHECK(nev == 0, "allocate: n_evicted %u on a call that took nothing", nev);
        return;
    }
    uint32_t ids[64], lib[64];
    for (uint32_t i = 0; i < n; i++)
        lib[i] = out[i].id;
    uint32_t take = m_alloc_ids(mp, n, lib, ids), need = n - take;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t gen =
            m_alloc_one(mp, ids[i], i >= take, ev_null || i < take ? NULL : &evicted[i - take]);
        CHECK(out[i].pool == mp->real && out[i].id == ids[i] && out[i].gen == gen,
              "allocate: out[%u] = (id %u, gen %u), model (id %u, gen %u)", i, out[i].id,
              out[i].gen, ids[i], gen);
        put_m(out[i]);
    }
    mp->c.allocations += n;
    if (!nev_null)
        CHECK(nev == need, "allocate: n_evicted %u, model %u", nev, need);
}

/* The model's choice of n blocks (room checked): ids[0, take) off the free list,
 * then the victims; lib[take..n) are the library's victims (a policy the model
 * does not know is followed, validated; hint-heap ties are the library's).
 * Returns take. */
static uint32_t m_alloc_ids(struct mpool *mp, uint32_t n, const uint32_t *lib, uint32_t *ids)
{
    uint32_t take = n < mp->flen ? n : mp->flen, need = n - take;
    for (uint32_t i = 0; i < take; i++)
        ids[i] = free_pop(mp);
    if (mp->policy == POL_OTHER) { /* order unknown to the model: adopt, but validate */
        bool hinted_victim = false;
        for (uint32_t i = take; i < n; i++) {
            ids[i] = lib[i];
            CHECK(ids[i] < mp->n && mp->s[ids[i]].state == S_INACTIVE,
                  "allocate evicted block %u which is not cached", ids[i]);
            for (uint32_t j = take; j < i; j++)
                CHECK(ids[j] != ids[i], "allocate evicted block %u twice", ids[i]);
            if (m_hinted(mp, mp->s[ids[i]].hash)) {
                hinted_victim = true;
                mp->h_evictions++;
            }
        }
        /* a hinted block goes only when no unhinted one is left */
        for (uint32_t i = 0; hinted_victim && i < mp->n; i++) {
            bool victim = false;
            for (uint32_t j = take; j < n; j++)
                victim |= ids[j] == i;
            CHECK(victim || mp->s[i].state != S_INACTIVE || m_hinted(mp, mp->s[i].hash),
                  "allocate evicted a hinted block while block %u, unhinted, stayed", i);
        }
    } else {
        m_victims_hinted(mp, need, &ids[take], lib + take);
    }
    return take;
}

/* Block id, chosen by m_alloc_ids, becomes MUTABLE: a victim's eviction first (its
 * callback, event and counters; *ev, when given, the library's evicted hash).
 * Returns the new generation. */
static uint32_t m_alloc_one(struct mpool *mp, uint32_t id, bool victim, const kvb_hash *ev)
{
    struct mslot *s = &mp->s[id];
    if (victim) {
        if (ev)
            CHECK(heq(*ev, s->hash), "allocate: a victim's evicted hash is another hash");
        m_cb(mp, CB_EVICT, id, s->hash);
        m_ev(mp, EV_REMOVED, s->hash);
        mp->c.evictions++;
        mp->retained_evictions += s->prio > KVB_PRIORITY_DEFAULT;
    } else {
        mp->c.from_reset++;
    }
    uint32_t gen = m_trans(mp, id, S_MUTABLE, 0);
    s->flag = false;
    s->hash = (kvb_hash){0, 0};
    return gen;
}

static void op_stage(struct rd *r)
{
    int i = u8(r) % NM;
    uint8_t hb = u8(r);
    kvb_hash h = U[hb % NU];
    bool out_null = (hb & 0xf0) == 0xf0;
    kvb_mutable before = TM[i];
    kvb_complete out;
    int rc = kvb_mutable_stage(&TM[i], h, out_null ? NULL : &out);
    g_rc = rc;
    struct mpool *mp = mp_of(before.pool);
    int want;
    if (out_null || !hash_valid(h))
        want = -EINVAL;
    else if (!mp)
        want = -ESTALE;
    else if (!m_valid(mp, before.id, before.gen, S_MUTABLE)) {
        want = -ESTALE;
        mp->c.misuse++;
    } else
        want = 0;
    CHECK(rc == want, "stage: %d, model %d", rc, want);
    if (rc) {
        CHECK(!memcmp(&TM[i], &before, sizeof before), "stage: failed call changed the handle");
        return;
    }
    CHECK(is_zero(&TM[i], sizeof TM[i]), "stage: the mutable handle was not cleared");
    mp->s[before.id].hash = h;
    uint32_t gen = m_trans(mp, before.id, S_STAGED, 0);
    mp->c.stagings++;
    CHECK(out.pool == before.pool && out.id == before.id && out.gen == gen && heq(out.hash, h),
          "stage: wrong complete handle");
    put_c(out);
}

static void op_mutable_release(struct rd *r)
{
    int i = u8(r) % NM;
    kvb_mutable before = TM[i];
    int rc = kvb_mutable_release(&TM[i]);
    g_rc = rc;
    struct mpool *mp = mp_of(before.pool);
    int want = 0;
    if (!mp)
        want = -ESTALE;
    else if (!m_valid(mp, before.id, before.gen, S_MUTABLE)) {
        want = -ESTALE;
        mp->c.misuse++;
    }
    CHECK(rc == want, "mutable_release: %d, model %d", rc, want);
    if (rc) {
        CHECK(!memcmp(&TM[i], &before, sizeof before), "mutable_release changed the handle");
        return;
    }
    CHECK(is_zero(&TM[i], sizeof TM[i]), "mutable_release: handle not cleared");
    m_trans(mp, before.id, S_RESET, 0);
    m_cb(mp, CB_RESET, before.id, mp->s[before.id].hash);
}

static void op_complete(struct rd *r)
{
    int i = u8(r) % NC;
    uint8_t how = u8(r);
    kvb_complete before = TC[i];
    struct mpool *mp = mp_of(before.pool);
    if (how & 1) { /* release */
        int rc = kvb_complete_release(&TC[i]);
        g_rc = rc;
        int want = 0;
        if (!mp)
            want = -ESTALE;
        else if (!m_valid(mp, before.id, before.gen, S_STAGED)) {
            want = -ESTALE;
            mp->c.misuse++;
        }
        CHECK(rc == want, "complete_release: %d, model %d", rc, want);
        if (rc) {
            CHECK(!memcmp(&TC[i], &before, sizeof before), "complete_release changed the handle");
            return;
        }
        CHECK(is_zero(&TC[i], sizeof TC[i]), "complete_release: handle not cleared");
        m_trans(mp, before.id, S_RESET, 0);
        m_cb(mp, CB_RESET, before.id, mp->s[before.id].hash);
        return;
    }
    /* reset back to mutable */
    bool out_null = (how & 6) == 6;
    kvb_mutable out;
    int rc = kvb_complete_reset(&TC[i], out_null ? NULL : &out);
    g_rc = rc;
    int want = 0;
    if (out_null)
        want = -EINVAL;
    else if (!mp)
        want = -ESTALE;
    else if (!m_valid(mp, before.id, before.gen, S_STAGED)) {
        want = -ESTALE;
        mp->c.misuse++;
    }
    CHECK(rc == want, "complete_reset: %d, model %d", rc, want);
    if (rc) {
        CHECK(!memcmp(&TC[i], &before, sizeof before), "complete_reset changed the handle");
        return;
    }
    CHECK(is_zero(&TC[i], sizeof TC[i]), "complete_reset: handle not cleared");
    uint32_t gen = m_trans(mp, before.id, S_MUTABLE, 0);
    mp->s[before.id].hash = (kvb_hash){0, 0};
    CHECK(out.pool == before.pool && out.id == before.id && out.gen == gen,
          "complete_reset: wrong mutable handle");
    put_m(out);
}

static void fill_block_check(const kvb_block *b, const struct mpool *mp, uint32_t id, uint32_t gen,
                             const char *what)
{
    CHECK(b->pool == mp->real && b->id == id && b->gen == gen && heq(b->hash, mp->s[id].hash),
          "%s: block (id %u, gen %u), model (id %u, gen %u)", what, b->id, b->gen, id, gen);
}

/* retention configurations registrations may use (block size 16) */
static const kvb_retention_range RG0[] = {{0, 32, 90, 0}, {32, 0, 10, 5}};
static const kvb_retention_range RG1[] = {{16, 48, 60, 3}};
static const kvb_retention_range RG2[] = {{0, 0, 0, 0}};
static const kvb_retention_range RGBAD[] = {{8, 4, 50, 0}};

static const kvb_retention *pick_retention(uint8_t b, kvb_retention *r)
{
    kvb_retention_init(r);
    switch ((b >> 1) & 7) {
    case 1:
        r->ranges = RG0;
        r->n_ranges = 2;
        return r;
    case 2:
        r->ranges = RG1;
        r->n_ranges = 1;
        r->decode_start = 48;
        r->decode_priority = 100;
        r->decode_duration_ms = 9;
        return r;
    case 3:
        r->ranges = RG2;
        r->n_ranges = 1;
        return r;
    case 4:
        r->ranges = RGBAD;
        r->n_ranges = 1;
        return r;
    case 5:
        return r; /* valid, every block at the default */
    default:
        return NULL;
    }
}

static bool retention_valid(const kvb_retention *r)
{
    uint32_t p, d;
    return kvb_retention_lookup(r, 0, &p, &d) == 0;
}

/* The model of one registration of staged block id (its hash in the slot), the
 * library's handle for it in *out (checked). */
static void m_register_one(struct mpool *mp, uint32_t id, const kvb_retention *ret,
                           const kvb_block *out)
{
    struct mslot *s = &mp->s[id];
    kvb_hash h = s->hash;
    uint32_t pgen = 0;
    int pid = m_acquire(mp, h, &pgen);
    mp->c.registrations++;
    if (pid >= 0 && (mp->reject || mp->s[pid].dups == KVB_DUPS_MAX_)) {
        m_trans(mp, id, S_RESET, 0);
        m_cb(mp, CB_RESET, id, h);
        fill_block_check(out, mp, (uint32_t)pid, pgen, "register (dedup)");
        mp->c.dedups++;
    } else if (pid < 0) {
        s->arrival = ++mp->arrival_seq;
        s->flag = mp->reset_default;
        uint32_t gen = m_trans(mp, id, S_PRIMARY, 1);
        fill_block_check(out, mp, id, gen, "register (primary)");
        m_ev(mp, EV_STORED, h);
    } else {
        /* the reference just taken becomes the duplicate's hold on the primary */
        mp->s[pid].dups++;
        mp->s[pid].rc--;
        s->prim = (uint32_t)pid;
        uint32_t gen = m_trans(mp, id, S_DUPLICATE, 1);
        fill_block_check(out, mp, id, gen, "register (duplicate)");
        mp->c.duplicates++;
    }
    if (ret) {
        uint32_t pr, du;
        kvb_retention_lookup(ret, (uint64_t)kvb_hash_position(h) * 16, &pr, &du);
        m_set_prio(mp, pid >= 0 ? (uint32_t)pid : id, pr, du);
    }
}

/* The first bytes of a registering batch call: the pool, a retention (or none), a
 * count of 0..12 and whether the arrays are NULL. */
struct batch_head {
    struct mpool *mp;
    const kvb_retention *ret;
    uint32_t n;
    bool null_args;
};

static struct batch_head read_batch_head(struct rd *r, kvb_retention *retbuf)
{
    uint8_t pb = u8(r);
    struct batch_head b = {.mp = &M.P[pb & 1], .ret = pick_retention(pb, retbuf)};
    uint8_t nb = u8(r);
    b.n = nb % 13;
    b.null_args = (nb & 0xf0) == 0xf0;
    return b;
}

static void op_register(struct rd *r)
{
    kvb_retention retbuf;
    struct batch_head b = read_batch_head(r, &retbuf);
    struct mpool *mp = b.mp;
    const kvb_retention *ret = b.ret;
    uint32_t n = b.n;
    bool null_args = b.null_args;
    int idx[16];
    kvb_complete batch[16], before[16];
    kvb_block out[16];
    memset(batch, 0, sizeof batch);
    for (uint32_t k = 0; k < n; k++) {
        idx[k] = u8(r) % NC;
        batch[k] = TC[idx[k]];
    }
    memcpy(before, batch, sizeof batch);
    int rc = ret ? kvb_pool_register_retained(mp->real, null_args ? NULL : batch, n, ret, out)
                 : kvb_pool_register(mp->real, null_args ? NULL : batch, n, out);
    g_rc = rc;
    int want = 0;
    if (null_args && n)
        want = -EINVAL;
    else if (ret && !retention_valid(ret))
        want = -EINVAL;
    else if (ret && !mp->prio)
        want = -ENOTSUP;
    else if (n) {
        /* validation of the whole batch first */
        bool bad = false, mark[MAXB] = {false};
        for (uint32_t k = 0; k < n && !bad; k++) { /* (batch[] is consumed by now) */
            if (before[k].pool != mp->real || !m_valid(mp, before[k].id, before[k].gen, S_STAGED) ||
                mark[before[k].id])
                bad = true;
            else
                mark[before[k].id] = true;
        }
        if (bad) {
            want = -ESTALE;
            mp->c.misuse++;
        } else {
            for (uint32_t k = 0; k < n; k++) {
                int pid = m_find(mp, mp->s[before[k].id].hash);
                if (pid >= 0 && mp->s[pid].state == S_PRIMARY && mp->s[pid].rc > RC_MAX - n)
                    want = -EOVERFLOW;
            }
        }
    }
    if (rc == -ENOMEM && FA.failed) {
        CHECK(!memcmp(batch, before, sizeof batch), "register: -ENOMEM consumed handles");
        g_enomem = true;
        return;
    }
    CHECK(rc == want, "register(n=%u): %d, model %d", n, rc, want);
    if (rc || n == 0) {
        CHECK(!memcmp(batch, before, sizeof batch), "register: a failed call consumed handles");
        return;
    }
    for (uint32_t k = 0; k < n; k++) {
        m_register_one(mp, before[k].id, ret, &out[k]);
        CHECK(is_zero(&batch[k], sizeof batch[k]), "register: input %u not cleared", k);
        memset(&TC[idx[k]], 0, sizeof TC[idx[k]]);
        put_b(out[k]);
    }
}

static void op_lookup(struct rd *r)
{
    struct mpool *mp = &M.P[u8(r) & 1];
    uint8_t sel = u8(r);
    int kind = sel % 3; /* 0 match, 1 scattered, 2 scan */
    uint32_t n = (sel >> 2) % 17;
    bool null_args = (sel & 0xc0) == 0xc0 && (u8(r) & 1);
    kvb_hash hs[16];
    for (uint32_t k = 0; k < n; k++)
        hs[k] = U[u8(r) % NU];
    kvb_block out[16];
    bool hit[16];
    int rc;
    if (kind == 0)
        rc = kvb_pool_match(mp->real, null_args ? NULL : hs, n, out);
    else if (kind == 1)
        rc = kvb_pool_match_scattered(mp->real, hs, n, out, null_args ? NULL : hit);
    else
        rc = kvb_pool_scan(mp->real, hs, n, sel & 1, out, null_args ? NULL : hit);
    g_rc = rc;
    if (null_args && n) {
        CHECK(rc == -EINVAL, "lookup with NULL arrays: %d", rc);
        return;
    }
    if (rc == -ENOMEM && FA.failed) {
        g_enomem = true;
        return;
    }
    if (n == 0) {
        CHECK(rc == 0, "lookup of 0 hashes: %d", rc);
        return;
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t gen = 0;
        int id = m_acquire(mp, hs[j], &gen);
        if (kind == 0) {
            if (id < 0)
                break;
            fill_block_check(&out[j], mp, (uint32_t)id, gen, "match");
            put_b(out[j]);
            k++;
            continue;
        }
        CHECK(hit[j] == (id >= 0), "lookup: hit[%u] %d, model %d", j, hit[j], id >= 0);
        if (id >= 0) {
            fill_block_check(&out[j], mp, (uint32_t)id, gen, "lookup");
            put_b(out[j]);
            k++;
        } else {
            CHECK(is_zero(&out[j], sizeof out[j]), "lookup: out[%u] not zero-filled on a miss", j);
        }
    }
    CHECK(rc == (int)k, "lookup kind %d: %d hits, model %u", kind, rc, k);
    if (kind == 2) {
        mp->c.sreq += n;
        mp->c.sret += k;
    } else {
        mp->c.mreq += n;
        mp->c.mret += k;
    }
}

/* kvb_pool_acquire: the model is its definition, kvb_pool_match and then
 * kvb_pool_allocate, kvb_pool_stage and kvb_pool_register(_retained) of the rest
 * in sequence, except that it fails whole (-ENOSPC, -EOVERFLOW: nothing taken,
 * no callback, no event) where the sequence would fail after the match. */
static void op_acquire(struct rd *r)
{
    kvb_retention retbuf;
    const struct batch_head a = read_batch_head(r, &retbuf);
    struct mpool *mp = a.mp;
    kvb_hash hs[16], evicted[16];
    for (uint32_t k = 0; k < a.n; k++)
        hs[k] = U[u8(r) % NU];
    kvb_block out[16];
    memset(out, 0x5a, sizeof out);
    uint32_t nev = 12345;
    int rc = kvb_pool_acquire(mp->real, a.null_args ? NULL : hs, a.n, a.ret, out, evicted, &nev);
    g_rc = rc;
    int want = 0;
    bool valid = true;
    for (uint32_t k = 0; k < a.n; k++)
        valid &= hash_valid(hs[k]);
    if ((a.null_args && a.n) || !valid || (a.ret && !retention_valid(a.ret)))
        want = -EINVAL;
    else if (a.ret && !mp->prio)
        want = -ENOTSUP;
    if (want || a.n == 0) {
        if (rc == -ENOMEM && FA.failed) {
            g_enomem = true;
            return;
        }
        CHECK(rc == want, "acquire(n=%u): %d, model %d", a.n, rc, want);
        CHECK(nev == 0, "acquire: n_evicted %u on a call that took nothing", nev);
        return;
    }
    static struct mpool before; /* (large: not on the stack) */
    before = *mp;
    uint32_t mark = M.cb.n, emark = M.ev.n;
    /* the match */
    uint32_t k = 0, gens[16];
    for (; k < a.n; k++) {
        int id = m_acquire(mp, hs[k], &gens[k]);
        if (id < 0)
            break;
    }
    uint32_t m = a.n - k;
    if (m && (m > mp->n || mp->flen + mp->count[S_INACTIVE] < m))
        want = -ENOSPC;
    for (uint32_t i = k; i < a.n && !want; i++) {
        int pid = m_find(mp, hs[i]);
        if (pid >= 0 && mp->s[pid].state == S_PRIMARY && mp->s[pid].rc > RC_MAX - m)
            want = -EOVERFLOW;
    }
    if (rc == -ENOMEM && FA.failed) {
        *mp = before;
        g_enomem = true;
        return;
    }
    CHECK(rc == (want ? want : (int)k), "acquire(n=%u): %d, model %d", a.n, rc,
          want ? want : (int)k);
    if (want) {
        *mp = before; /* nothing changed */
        M.cb.n = mark;
        M.ev.n = emark;
        CHECK(nev == 0, "acquire: n_evicted %u on a failed call", nev);
        return;
    }
    for (uint32_t i = 0; i < k; i++) {
        fill_block_check(&out[i], mp, out[i].id, gens[i], "acquire (match)");
        put_b(out[i]);
    }
    mp->c.mreq += a.n;
    mp->c.mret += k;
    if (m == 0)
        return;
    /* allocate + stage the rest, then register each */
    CHECK(nev <= m, "acquire: n_evicted %u for %u blocks", nev, m);
    uint32_t ids[16], lib[16];
    uint32_t take = m < mp->flen ? m : mp->flen;
    CHECK(nev == m - take, "acquire: n_evicted %u, model %u", nev, m - take);
    for (uint32_t i = take; i < m; i++) { /* the library's victims, by their hashes */
        int v = m_find(mp, evicted[i - take]);
        CHECK(v >= 0 && mp->s[v].state == S_INACTIVE, "acquire: evicted[%u] was not cached",
              i - take);
        lib[i] = (uint32_t)v;
    }
    CHECK(m_alloc_ids(mp, m, lib, ids) == take, "acquire: free list taken");
    for (uint32_t i = 0; i < m; i++) {
        (void)m_alloc_one(mp, ids[i], i >= take, i < take ? NULL : &evicted[i - take]);
        mp->s[ids[i]].hash = hs[k + i];
        m_trans(mp, ids[i], S_STAGED, 0);
    }
    mp->c.allocations += m;
    mp->c.stagings += m;
    for (uint32_t i = 0; i < m; i++) {
        m_register_one(mp, ids[i], a.ret, &out[k + i]);
        put_b(out[k + i]);
    }
}

static void op_clone(struct rd *r)
{
    int i = u8(r) % NB;
    kvb_block before = TB[i], out;
    int rc = kvb_block_clone(&TB[i], &out);
    g_rc = rc;
    struct mpool *mp = mp_of(before.pool);
    int want = 0;
    if (!mp)
        want = -ESTALE;
    else if (!m_ref_valid(mp, before.id, before.gen)) {
        want = -ESTALE;
        mp->c.misuse++;
    } else if (mp->s[before.id].rc >= RC_MAX)
        want = -EOVERFLOW;
    CHECK(rc == want, "clone: %d, model %d", rc, want);
    CHECK(!memcmp(&TB[i], &before, sizeof before), "clone changed its source");
    if (rc)
        return;
    mp->s[before.id].rc++;
    CHECK(!memcmp(&out, &before, sizeof out), "clone: the copy differs");
    put_b(out);
}

/* model of one lock-free decrement; 1 = it was the last reference, 0, or -1 invalid */
static int m_dec(struct mpool *mp, uint32_t id, uint32_t gen)
{
    if (!m_ref_valid(mp, id, gen))
        return -1;
    struct mslot *s = &mp->s[id];
    s->rc--;
    if (s->phantom > s->rc) /* copies released past the real references ate phantoms */
        s->phantom = s->rc;
    return s->rc == 0;
}

static void op_release(struct rd *r)
{
    int i = u8(r) % NB;
    kvb_block before = TB[i];
    struct mpool *mp = mp_of(before.pool);
    int rc = kvb_block_release(&TB[i]);
    g_rc = rc;
    int want = 0, last = 0;
    if (!mp)
        want = -ESTALE;
    else if ((last = m_dec(mp, before.id, before.gen)) < 0) {
        want = -ESTALE;
        mp->c.misuse++;
    }
    CHECK(rc == want, "block_release: %d, model %d", rc, want);
    if (rc) {
        CHECK(!memcmp(&TB[i], &before, sizeof before), "failed release changed the handle");
        return;
    }
    CHECK(is_zero(&TB[i], sizeof TB[i]), "release: handle not cleared");
    if (last)
        m_last_release(mp, before.id);
}

static void op_release_n(struct rd *r)
{
    uint8_t nb = u8(r);
    uint32_t n = nb % 13;
    bool null_arg = (nb & 0xf0) == 0xf0;
    int idx[16];
    kvb_block batch[16], before[16];
    memset(batch, 0, sizeof batch);
    for (uint32_t k = 0; k < n; k++) {
        idx[k] = u8(r) % NB;
        batch[k] = TB[idx[k]];
    }
    memcpy(before, batch, sizeof batch);
    int rc = kvb_block_release_n(null_arg ? NULL : batch, n);
    g_rc = rc;
    if (null_arg && n) {
        CHECK(rc == -EINVAL, "release_n(NULL, %u): %d", n, rc);
        return;
    }
    int want = 0;
    bool last[16] = {false}, valid[16] = {false};
    for (uint32_t k = 0; k < n; k++) { /* pass 1: lock-free decrements, in order */
        struct mpool *mp = mp_of(before[k].pool);
        if (!mp) {
            want = -ESTALE;
            continue;
        }
        int d = m_dec(mp, before[k].id, before[k].gen);
        if (d < 0) {
            want = -ESTALE;
            mp->c.misuse++;
            continue;
        }
        valid[k] = true;
        last[k] = d == 1;
    }
    for (uint32_t k = 0; k < n; k++) /* pass 2: the last releases, in order */
        if (last[k]) {
            struct mpool *mp = mp_of(before[k].pool);
            struct mslot *s = &mp->s[before[k].id];
            if (s->gen == before[k].gen && s->rc == 0)
                m_last_release(mp, before[k].id);
            else /* e.g. a duplicate earlier in the batch moved its primary already */
                mp->c.noops++;
        }
    CHECK(rc == want, "release_n(%u): %d, model %d", n, rc, want);
    for (uint32_t k = 0; k < n; k++) {
        if (valid[k]) {
            CHECK(is_zero(&batch[k], sizeof batch[k]), "release_n: valid handle %u not cleared", k);
            memset(&TB[idx[k]], 0, sizeof TB[idx[k]]);
        } else {
            CHECK(!memcmp(&batch[k], &before[k], sizeof batch[k]),
                  "release_n: invalid handle %u changed", k);
        }
    }
}

static void op_block_misc(struct rd *r)
{
    int i = u8(r) % NB;
    uint8_t what = u8(r);
    kvb_block before = TB[i];
    struct mpool *mp = mp_of(before.pool);
    switch (what % 4) {
    case 0: { /* set_reset_on_release */
        bool on = what & 4;
        int rc = kvb_block_set_reset_on_release(&TB[i], on);
        g_rc = rc;
        int want = 0;
        if (!mp)
            want = -ESTALE;
        else if (!m_ref_valid(mp, before.id, before.gen)) {
            want = -ESTALE;
            mp->c.misuse++;
        }
        CHECK(rc == want, "set_reset_on_release: %d, model %d", rc, want);
        if (rc == 0)
            mp->s[before.id].flag = on;
        break;
    }
    case 1: { /* use_count */
        uint32_t uc = kvb_block_use_count(&TB[i]);
        /* handles + duplicates holding a primary, for a handle of the slot's current
         * life (as implemented: also a released copy while duplicates hold the
         * primary, where the header says 0 for "not a live reference") */
        uint32_t want = 0;
        if (mp && before.id < mp->n && mp->s[before.id].gen == before.gen)
            want = mp->s[before.id].rc +
                   (mp->s[before.id].state == S_PRIMARY ? mp->s[before.id].dups : 0);
        CHECK(uc == want, "use_count: %u, model %u", uc, want);
        break;
    }
    case 2: { /* address */
        kvb_block_addr a;
        bool null_out = what & 4;
        int rc = kvb_block_address(&TB[i], null_out ? NULL : &a);
        g_rc = rc;
        int want = 0;
        if (null_out)
            want = -EINVAL;
        else if (!mp)
            want = -ESTALE;
        else if (!(before.id < mp->n && mp->s[before.id].gen == before.gen &&
                   mp->s[before.id].rc)) {
            want = -ESTALE;
            mp->c.misuse++;
        }
        CHECK(rc == want, "address: %d, model %d", rc, want);
        if (rc == 0)
            CHECK(a.pool_id == kvb_pool_id(mp->real) && a.block_id == before.id &&
                      heq(a.hash, before.hash),
                  "address: wrong address");
        break;
    }
    case 3: /* downgrade */
        kvb_block_downgrade(&TB[i], &TW[cur_w++ % NW]);
        break;
    }
    CHECK(!memcmp(&TB[i], &before, sizeof before), "a non-consuming call changed the handle");
}

static void op_upgrade(struct rd *r)
{
    int i = u8(r) % NW;
    kvb_weak w = TW[i];
    kvb_block out;
    int rc = kvb_weak_upgrade(&TW[i], &out);
    g_rc = rc;
    CHECK(!memcmp(&TW[i], &w, sizeof w), "upgrade changed the weak handle");
    if (!w.pool) {
        CHECK(rc == -EINVAL, "upgrade of a cleared weak handle: %d", rc);
        return;
    }
    struct mpool *mp = mp_of(w.pool);
    if (w.id < mp->n && mp->s[w.id].gen == w.gen && mp->s[w.id].rc > 0 &&
        mp->s[w.id].rc < RC_MAX) { /* the same life is referenced: lock-free path */
        CHECK(rc == 0, "upgrade of a live block: %d", rc);
        mp->s[w.id].rc++;
        CHECK(out.pool == w.pool && out.id == w.id && out.gen == w.gen && heq(out.hash, w.hash),
              "upgrade (same life): wrong block");
        put_b(out);
        return;
    }
    uint32_t gen = 0;
    int id = m_acquire(mp, w.hash, &gen);
    CHECK(rc == (id >= 0 ? 0 : -ENOENT), "upgrade: %d, model %s", rc,
          id >= 0 ? "found" : "-ENOENT");
    if (id >= 0) {
        fill_block_check(&out, mp, (uint32_t)id, gen, "upgrade (lookup)");
        put_b(out);
    }
}

static void op_reset_inactive(struct rd *r)
{
    struct mpool *mp = &M.P[u8(r) & 1];
    int rc = kvb_pool_reset_inactive(mp->real);
    g_rc = rc;
    if (rc == -ENOMEM && FA.failed) {
        g_enomem = true;
        return;
    }
    /* blocks in use stay; while primaries stay, each drained block is REMOVED
     * (a CLEARED would make consumers forget the primaries) */
    bool cleared = mp->count[S_PRIMARY] == 0;
    uint32_t drained = 0, order[MAXB], total = mp->count[S_INACTIVE];
    if (mp->policy == POL_OTHER) { /* order unknown to the model: follow the callbacks */
        uint32_t k = 0;
        for (uint32_t j = 0; j < got_cb.n && k < total; j++)
            if (got_cb.r[j].kind == CB_EVICT)
                order[k++] = got_cb.r[j].id;
        CHECK(k == total, "reset_inactive: %u on_evict for %u cached blocks", k, total);
    } else {
        /* the lowest level first, the policy's order within a level */
        static struct mpool save; /* (large: not on the stack) */
        save = *mp;
        uint32_t nb = m_level_victims(mp, total, order, false);
        *mp = save; /* the drain below moves them */
        /* then the blocks set apart by hints, largest key first (ties: the callbacks' order
         * when there are callbacks to follow; any order is right without them) */
        uint32_t k = nb, seen = 0;
        for (uint32_t j = 0; j < got_cb.n; j++)
            if (got_cb.r[j].kind == CB_EVICT && seen++ >= nb && k < total)
                order[k++] = got_cb.r[j].id;
        if (k < total) {
            k = nb;
            for (uint32_t i = 0; i < mp->n; i++)
                if (mp->s[i].state == S_INACTIVE && mp->s[i].diverted)
                    order[k++] = i;
        }
        CHECK(k == total, "reset_inactive: %u blocks to drain, model %u", k, total);
        for (uint32_t j = nb; j < total; j++) {
            CHECK(order[j] < mp->n && mp->s[order[j]].state == S_INACTIVE &&
                      mp->s[order[j]].diverted,
                  "reset_inactive: drained block %u out of order", order[j]);
            if (mp->callbacks && j > nb)
                CHECK(m_hkey(mp, order[j]) <= m_hkey(mp, order[j - 1]),
                      "reset_inactive: protected blocks out of order");
        }
    }
    for (uint32_t j = 0; j < total; j++) {
        uint32_t id = order[j];
        CHECK(id < mp->n && mp->s[id].state == S_INACTIVE, "drained a block not cached");
        kvb_hash h = mp->s[id].hash;
        m_trans(mp, id, S_RESET, 0);
        m_cb(mp, CB_EVICT, id, h);
        m_cb(mp, CB_RESET, id, h);
        if (!cleared)
            m_ev(mp, EV_REMOVED, h);
        mp->c.evictions++;
        drained++;
    }
    if (drained && cleared)
        m_ev(mp, EV_CLEARED, (kvb_hash){0, 0});
    CHECK(rc == (int)drained, "reset_inactive: %d, model %u", rc, drained);
}

/* the {pool, id, gen} prefix every handle type starts with, accessed per type */
struct prefix {
    kvb_pool **pool;
    uint32_t *id, *gen;
    kvb_hash *hash; /* NULL for mutable handles */
};

static struct prefix handle_at(int kind, uint8_t i)
{
    switch (kind) {
    case 0:
        return (struct prefix){&TM[i % NM].pool, &TM[i % NM].id, &TM[i % NM].gen, NULL};
    case 1:
        return (struct prefix){&TC[i % NC].pool, &TC[i % NC].id, &TC[i % NC].gen, &TC[i % NC].hash};
    case 2:
        return (struct prefix){&TB[i % NB].pool, &TB[i % NB].id, &TB[i % NB].gen, &TB[i % NB].hash};
    default:
        return (struct prefix){&TW[i % NW].pool, &TW[i % NW].id, &TW[i % NW].gen, &TW[i % NW].hash};
    }
}

static void op_forge(struct rd *r)
{
    uint8_t kind = u8(r), i = u8(r), arg = u8(r);
    int t = kind % 4;
    struct prefix h = handle_at(t, i);
    switch ((kind >> 2) % 6) {
    case 0: { /* copy another entry of the same table over this one */
        struct prefix o = handle_at(t, arg);
        *h.pool = *o.pool;
        *h.id = *o.id;
        *h.gen = *o.gen;
        if (h.hash)
            *h.hash = *o.hash;
        break;
    }
    case 1: /* zero it */
        *h.pool = NULL;
        *h.id = *h.gen = 0;
        if (h.hash)
            *h.hash = (kvb_hash){0, 0};
        break;
    case 2: /* the other pool: a foreign handle */
        if (*h.pool)
            *h.pool = *h.pool == M.P[0].real ? M.P[1].real : M.P[0].real;
        else
            *h.pool = pick_pool(arg);
        break;
    case 3: /* another generation */
        *h.gen += (uint32_t)(int32_t)(int8_t)arg;
        break;
    case 4: /* another id, maybe far out of range */
        *h.id = arg < 0xf0 ? arg % 64u : UINT32_MAX - (arg & 0xfu);
        break;
    default: /* another hash */
        if (h.hash)
            *h.hash = U[arg % NU];
        break;
    }
}

/* saturate a referenced block's count (the test hook), or give the phantoms back */
static void op_saturate(struct rd *r)
{
    uint8_t a = u8(r), b = u8(r);
    struct mpool *mp = &M.P[a & 1];
    if (a & 2) { /* restore every saturated block */
        for (uint32_t id = 0; id < mp->n; id++) {
            struct mslot *s = &mp->s[id];
            if (!s->phantom)
                continue;
            uint32_t real_refs = s->rc - s->phantom;
            s->phantom = 0;
            if (real_refs == 0 && !s->dups) { /* every handle went: rebuild one to release */
                real_refs = 1;
                put_b((kvb_block){.pool = mp->real, .id = id, .gen = s->gen, .hash = s->hash});
            }
            s->rc = real_refs;
            kvb__test_set_refcount(mp->real, id, real_refs);
        }
        return;
    }
    uint32_t id = b % MAXB;
    if (id >= mp->n)
        return;
    struct mslot *s = &mp->s[id];
    if (s->state != S_PRIMARY && s->state != S_DUPLICATE)
        return; /* (a primary held by duplicates only may be saturated too) */
    uint32_t target = RC_MAX - (b >> 6); /* RC_MAX - 0..3 */
    if (target <= s->rc)
        return;
    s->phantom += target - s->rc;
    s->rc = target;
    kvb__test_set_refcount(mp->real, id, target);
}

/* one field of a valid configuration made wrong (or right): the expected error */
static void op_hint(struct rd *r)
{
    struct mpool *mp = &M.P[u8(r) & 1];
    uint8_t sel = u8(r), db = u8(r);
    uint32_t n = sel % 6;
    bool null = n && (sel & 0x80);
    int32_t d = (int8_t)db;
    if ((sel & 0x40) && d)
        d = d > 0 ? INT32_MAX - 2 + (d & 1) : INT32_MIN + 1 - (d & 1); /* huge deltas too */
    kvb_hash hs[8];
    int ks[8];
    for (uint32_t i = 0; i < n; i++) {
        ks[i] = u8(r) % NU;
        hs[i] = U[ks[i]];
    }
    int rc = kvb_pool_hint(mp->real, null ? NULL : hs, n, d);
    g_rc = rc;
    int want = 0;
    bool bad_hash = false;
    for (uint32_t i = 0; i < n; i++)
        bad_hash |= !hash_valid(hs[i]);
    if (null || d == 0 || bad_hash)
        want = -EINVAL;
    else if (!mp->hint_cap)
        want = -ENOTSUP;
    else if (n && d > 0) {
        uint32_t records, entries = m_hint_entries(mp, &records);
        if (n > mp->hint_cap - records || n > mp->hint_cap - entries)
            want = -ENOSPC;
    }
    CHECK(rc == want, "hint(n %u, delta %d): %d, model %d", n, d, rc, want);
    if (want == -ENOSPC)
        mp->h_rejected++;
    if (rc != 0 || n == 0)
        return;
    if (d > 0) {
        uint64_t t = ++mp->ticket;
        for (uint32_t i = 0; i < n; i++) {
            struct mhint *h = &mp->h[ks[i]];
            if (h->nt && h->tk[h->nt - 1] == t && h->tu[h->nt - 1] <= UINT32_MAX - (uint32_t)d) {
                h->tu[h->nt - 1] += (uint32_t)d;
            } else {
                CHECK(h->nt < MAXT, "model: hint FIFO overflow");
                h->tk[h->nt] = t;
                h->tu[h->nt++] = (uint32_t)d;
            }
            h->uses += (uint32_t)d;
        }
        mp->h_added += (uint64_t)n * (uint32_t)d;
        return;
    }
    uint32_t k = (uint32_t)(-(int64_t)d);
    for (uint32_t i = 0; i < n; i++) {
        struct mhint *h = &mp->h[ks[i]];
        uint32_t taken = 0;
        while (taken < k && h->nt) {
            uint32_t x = k - taken < h->tu[0] ? k - taken : h->tu[0];
            h->tu[0] -= x;
            taken += x;
            if (h->tu[0] == 0) {
                memmove(h->tk, h->tk + 1, (h->nt - 1) * sizeof h->tk[0]);
                memmove(h->tu, h->tu + 1, (h->nt - 1) * sizeof h->tu[0]);
                h->nt--;
            }
        }
        h->uses -= taken;
        mp->h_withdrawn += taken;
        mp->h_unmatched += k - taken;
        if (h->uses)
            continue;
        /* no use left: a block set apart goes back into the policy's order */
        for (uint32_t id = 0; id < mp->n; id++)
            if (mp->s[id].state == S_INACTIVE && mp->s[id].diverted && heq(mp->s[id].hash, hs[i])) {
                mp->s[id].diverted = false;
                mp->lru[mp->nlru++] = id; /* whatever its priority */
            }
    }
}

static void op_prio(struct rd *r)
{
    uint8_t what = u8(r), a = u8(r), pb = u8(r), db = u8(r);
    uint32_t prio = pb % 128 > 110 ? 101 + pb % 3 : pb % 101; /* mostly valid */
    uint32_t dur = db < 128 ? 0 : db % 20;
    switch (what % 4) {
    case 0:
    case 1: { /* on a live reference: set, or read */
        kvb_block b = TB[a % NB];
        struct mpool *mp = b.pool ? mp_of(b.pool) : NULL;
        bool set = what % 4 == 0;
        int rc = set ? kvb_block_set_priority(&b, prio, dur) : kvb_block_priority(&b);
        g_rc = rc;
        int want;
        if (set && prio > KVB_PRIORITY_MAX)
            want = -EINVAL;
        else if (!mp)
            want = -ESTALE;
        else if (set && !mp->prio)
            want = -ENOTSUP;
        else if (!m_ref_valid(mp, b.id, b.gen)) {
            want = -ESTALE;
            mp->c.misuse++;
        } else {
            uint32_t id = mp->s[b.id].state == S_DUPLICATE ? mp->s[b.id].prim : b.id;
            if (set) {
                m_set_prio(mp, id, prio, dur);
                want = 0;
            } else {
                want = mp->prio ? mp->s[id].prio : (int)KVB_PRIORITY_DEFAULT;
            }
        }
        CHECK(rc == want, "%s: %d, model %d", set ? "block_set_priority" : "block_priority", rc,
              want);
        break;
    }
    case 2: { /* by hashes, held or cached */
        struct mpool *mp = &M.P[a & 1];
        uint32_t n = (a >> 1) % 5;
        kvb_hash hs[4];
        for (uint32_t i = 0; i < n; i++)
            hs[i] = U[u8(r) % NU];
        bool null = n && (a & 0x80);
        int rc = kvb_pool_set_priority(mp->real, null ? NULL : hs, n, prio, dur);
        g_rc = rc;
        int want = 0;
        if (null || prio > KVB_PRIORITY_MAX)
            want = -EINVAL;
        else if (!mp->prio)
            want = -ENOTSUP;
        else
            for (uint32_t i = 0; i < n; i++) {
                int id = m_find(mp, hs[i]);
                if (id < 0)
                    continue;
                m_set_prio(mp, (uint32_t)id, prio, dur);
                want++;
            }
        CHECK(rc == want, "pool_set_priority: %d, model %d", rc, want);
        break;
    }
    default: /* time passes (the next stats snapshot applies what is due) */
        g_now += a % 16;
        m_expire(&M.P[0]);
        m_expire(&M.P[1]);
        break;
    }
}

static void op_config(struct rd *r)
{
    uint8_t what = u8(r), v = u8(r);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1 + v % 8;
    cfg.allocator = tu_fa_allocator(&FA);
    kvb_event_config ev;
    kvb_event_config_init(&ev);
    ev.sink = sink_noop;
    kvb_inactive_ops ops;
    int want = 0;
    switch (what % 10) {
    case 0:
        cfg.block_count = v & 1 ? 0 : KVB_MAX_BLOCKS + 1 + v;
        want = -EINVAL;
        break;
    case 1:
        cfg.block_size = v < 200 ? v : 1u << (v % 12);
        want = (cfg.block_size == 0 ||
                (cfg.block_size <= 1024 && !(cfg.block_size & (cfg.block_size - 1))))
                   ? 0
                   : -EINVAL;
        break;
    case 2:
        cfg.dup_policy = (kvb_dup_policy)(2 + v);
        want = -EINVAL;
        break;
    case 3:
        cfg.evict = (kvb_evict_policy)(v % 12);
        /* not built in: -EINVAL past the enum, -ENOTSUP for a known policy */
        want = kvb_inactive_builtin(cfg.evict) ? 0 : -EINVAL;
        break;
    case 4: {
        uint8_t t0 = v & 15, t1 = (uint8_t)(u8(r) & 15), t2 = (uint8_t)(u8(r) % 17);
        cfg.multi_lru_thresholds[0] = t0;
        cfg.multi_lru_thresholds[1] = t1;
        cfg.multi_lru_thresholds[2] = t2;
        bool zero = !t0 && !t1 && !t2;
        want = zero || (t0 >= 1 && t0 < t1 && t1 < t2 && t2 <= 15) ? 0 : -EINVAL;
        break;
    }
    case 5: { /* half an allocator */
        kvb_allocator fa = tu_fa_allocator(&FA);
        cfg.allocator.alloc = v & 1 ? fa.alloc : NULL;
        cfg.allocator.free = v & 1 ? NULL : fa.free;
        want = -EINVAL;
        break;
    }
    case 6:
        ev.sink = NULL;
        cfg.events = &ev;
        want = -EINVAL;
        break;
    case 7:
        ev.emit = (kvb_event_emit)(2 + v);
        cfg.events = &ev;
        want = -EINVAL;
        break;
    case 8:
        ops = kvb_inactive_lru;
        if (v & 1)
            ops.version = 0;
        else
            ops.evict = NULL;
        cfg.evict_ops = &ops;
        want = -EINVAL;
        break;
    default:
        cfg.name = "a pool name that is much longer than the sixty-four bytes kept for it";
        cfg.events = v & 1 ? &ev : NULL;
        want = 0;
        break;
    }
    kvb_pool *p = (kvb_pool *)&FA;
    int rc = kvb_pool_create(&cfg, &p);
    g_rc = rc;
    if (rc == -ENOMEM && FA.failed) /* validation may come after some allocations */
        want = -ENOMEM;
    if (what % 10 == 3 && want == -EINVAL && rc == -ENOTSUP)
        want = -ENOTSUP;
    CHECK(rc == want, "pool_create (config case %d, value %u): %d, model %d", what % 10, v, rc,
          want);
    if (rc == 0) {
        CHECK(kvb_pool_check(p) == 0 && kvb_pool_available(p) == cfg.block_count, "a fresh pool");
        CHECK(kvb_pool_destroy(p) == 0, "destroy of a fresh pool");
    } else {
        CHECK(p == (kvb_pool *)&FA, "failed create wrote its out-parameter");
    }
}

static void op_destroy(struct rd *r)
{
    int pi = u8(r) & 1;
    struct mpool *mp = &M.P[pi];
    kvb_pool *old = mp->real;
    int rc = kvb_pool_destroy(old);
    g_rc = rc;
    if (held(mp)) {
        CHECK(rc == -EBUSY, "destroy with blocks held: %d", rc);
        return;
    }
    CHECK(rc == 0, "destroy of an idle pool: %d", rc);
    if (mp->count[S_INACTIVE])
        m_ev(mp, EV_CLEARED, (kvb_hash){0, 0});
    compare_logs("destroy");
    purge(old);
    tu_fa_arm(&FA, 0);
    pool_create_or_die(pi);
    if (M.P[1 - pi].real == old)
        fail("pool address reused while the other pool lives?");
}

static void op_metrics(struct rd *r)
{
    struct mpool *mp = &M.P[u8(r) & 1];
    uint8_t cap = u8(r);
    char big[8192], small[256];
    /* the text includes the lock counters, which every call moves: compare each
     * call with itself only */
    int need = kvb_pool_metrics_text(mp->real, NULL, 0);
    CHECK(need > 0 && need < (int)sizeof big, "metrics_text size %d", need);
    int rc = kvb_pool_metrics_text(mp->real, big, sizeof big);
    CHECK(rc > 0 && strlen(big) == (size_t)rc, "metrics_text: %d, strlen %zu", rc, strlen(big));
    CHECK(strstr(big, kvb_pool_name(mp->real)) != NULL, "metrics_text without the pool label");
    memset(small, 'x', sizeof small);
    rc = kvb_pool_metrics_text(mp->real, small, cap);
    CHECK(rc > 0, "metrics_text(cap %u) = %d", cap, rc);
    if (cap) {
        size_t want = (size_t)rc < (size_t)cap - 1 ? (size_t)rc : (size_t)cap - 1;
        CHECK(memchr(small, 0, cap) != NULL && strlen(small) == want,
              "metrics_text(cap %u): %zu characters, expected %zu", cap, strlen(small), want);
    }
    CHECK(small[cap] == 'x' || cap == 0, "metrics_text wrote past cap"); /* cap <= 255 */
}

/* ------------------------------------------------------------------------ */
/* setup and teardown                                                       */
/* ------------------------------------------------------------------------ */

static void setup(struct rd *r)
{
    uint8_t c = u8(r), na = u8(r), nb = u8(r);
    universe_init();
    g_now = 1000;
    memset(&M, 0, sizeof M);
    memset(TM, 0, sizeof TM);
    memset(TC, 0, sizeof TC);
    memset(TB, 0, sizeof TB);
    memset(TW, 0, sizeof TW);
    cur_m = cur_c = cur_b = cur_w = 0;
    tu_fa_reset(&FA);
    REG = NULL;
    if (c & 0x80)
        CHECK(kvb_registry_create(NULL, &REG) == 0, "registry_create");
    kvb_event_config_init(&EVCFG);
    EVCFG.sink = sink;
    for (int i = 0; i < 2; i++) {
        kvb_pool_config *cfg = &CFG[i];
        kvb_pool_config_init(cfg);
        uint8_t nn = i == 0 ? na : nb;
        cfg->block_count = 1 + (i == 0 ? nn % MAXB : nn % 12);
        cfg->dup_policy = (c >> i) & 1 ? KVB_DUP_REJECT : KVB_DUP_ALLOW;
        cfg->evict = (c >> (2 + i)) & 1 ? KVB_EVICT_FIFO : KVB_EVICT_LRU;
        /* the top bits of the block-count byte pick one of the other built-in
         * policies: the model adopts their eviction order (it only checks that the
         * victims were cached), so pool A then always has callbacks to follow */
        kvb_evict_policy other = (kvb_evict_policy)(KVB_EVICT_FIFO + (nn >> 6) + ((nb >> 7) & 1));
        bool use_other = i == 0 && (nn >> 6) && kvb_inactive_builtin(other);
        if (use_other)
            cfg->evict = other;
        cfg->reset_on_release = i == 0 && (c & 0x10);
        cfg->allocator = tu_fa_allocator(&FA);
        cfg->registry = REG;
        if ((c & 0x20) || i == 1 || use_other)
            cfg->callbacks =
                (kvb_callbacks){.user = &pool_user[i], .on_reset = on_reset, .on_evict = on_evict};
        if (i == 0 && (c & 0x40))
            cfg->events = &EVCFG;
        cfg->hint_capacity = i == 0 ? 6 : 0; /* small: -ENOSPC happens; B: -ENOTSUP */
        /* retention priorities where the model knows the policy's order */
        cfg->priorities = i == 0 && !use_other;
        cfg->clock = (kvb_clock){.now_ms = fuzz_clock};
        pool_create_or_die(i);
    }
}

/* release everything still held (rebuilding lost handles from the model), destroy */
static void teardown(void)
{
    tu_fa_arm(&FA, 0);
    for (int pi = 0; pi < 2; pi++) {
        struct mpool *mp = &M.P[pi];
        for (uint32_t id = 0; id < mp->n; id++) { /* saturation phantoms first */
            struct mslot *s = &mp->s[id];
            if (s->phantom) {
                s->rc -= s->phantom;
                s->phantom = 0;
                if (s->rc == 0 && !s->dups)
                    s->rc = 1; /* every handle went: one rebuilt below releases it */
                kvb__test_set_refcount(mp->real, id, s->rc);
            }
        }
    }
    for (int pi = 0; pi < 2; pi++) {
        struct mpool *mp = &M.P[pi];
        /* duplicates first: each release of the last reference frees its primary's */
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t id = 0; id < mp->n; id++) {
                struct mslot *s = &mp->s[id];
                int st = pass == 0 ? S_DUPLICATE : S_PRIMARY;
                while (s->state == st && s->rc > 0) {
                    begin_call();
                    kvb_block b = {.pool = mp->real, .id = id, .gen = s->gen, .hash = s->hash};
                    CHECK(kvb_block_release(&b) == 0, "teardown release of block %u", id);
                    if (--s->rc == 0)
                        m_last_release(mp, id);
                    compare_logs("teardown");
                }
            }
        for (uint32_t id = 0; id < mp->n; id++) {
            struct mslot *s = &mp->s[id];
            begin_call();
            if (s->state == S_MUTABLE) {
                kvb_mutable m = {.pool = mp->real, .id = id, .gen = s->gen};
                CHECK(kvb_mutable_release(&m) == 0, "teardown mutable release");
            } else if (s->state == S_STAGED) {
                kvb_complete c = {.pool = mp->real, .id = id, .gen = s->gen, .hash = s->hash};
                CHECK(kvb_complete_release(&c) == 0, "teardown staged release");
            } else {
                continue;
            }
            m_trans(mp, id, S_RESET, 0);
            m_cb(mp, CB_RESET, id, s->hash);
            compare_logs("teardown");
        }
        compare_pool(mp, "teardown");
        CHECK(held(mp) == 0, "teardown: blocks still held");
        begin_call();
        if (mp->count[S_INACTIVE])
            m_ev(mp, EV_CLEARED, (kvb_hash){0, 0});
        CHECK(kvb_pool_destroy(mp->real) == 0, "teardown: destroy");
        compare_logs("destroy");
    }
    if (REG)
        CHECK(kvb_registry_destroy(REG) == 0, "registry_destroy");
    CHECK(FA.n_alloc == FA.n_free && FA.bytes_alloc == FA.bytes_free,
          "allocator: %ld allocations / %ld frees, %zu / %zu bytes", FA.n_alloc, FA.n_free,
          FA.bytes_alloc, FA.bytes_free);
    CHECK(FA.mismatches == 0, "allocator: free called with another size");
}

#define MAX_STEPS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = {data, size, 0};
    g_step = 0;
    g_trace = getenv("FUZZ_TRACE") != NULL;
    setup(&r);
    static struct model saved;
    while (r.i < r.n && g_step < MAX_STEPS) {
        g_step++;
        size_t start = r.i;
        uint8_t op = u8(&r);
        bool inject = op & 0x80; /* fail the next allocation this call makes */
        op &= 0x7f;
        begin_call();
        saved = M;
        g_rc = 0;
        g_enomem = false;
        tu_fa_arm(&FA, inject ? 1 : 0);
        const char *name = "?";
        switch (op % 16) {
        case 0:
        case 1:
            name = "allocate";
            op_allocate(&r);
            break;
        case 2:
            name = "stage";
            op_stage(&r);
            break;
        case 3:
            name = "mutable_release";
            op_mutable_release(&r);
            break;
        case 4:
            name = "complete";
            op_complete(&r);
            break;
        case 5:
            name = "register";
            op_register(&r);
            break;
        case 6:
            name = (op & 0x30) == 0x30 ? "acquire" : "lookup";
            if ((op & 0x30) == 0x30)
                op_acquire(&r);
            else
                op_lookup(&r);
            break;
        case 7:
            name = "clone";
            op_clone(&r);
            break;
        case 8:
            name = "release";
            op_release(&r);
            break;
        case 9:
            name = "release_n";
            op_release_n(&r);
            break;
        case 10:
            name = "block";
            op_block_misc(&r);
            break;
        case 11:
            name = "upgrade";
            op_upgrade(&r);
            break;
        case 12:
            name = "reset_inactive";
            op_reset_inactive(&r);
            break;
        case 13:
            name = (op & 0x10) ? "saturate" : "forge";
            if (op & 0x10)
                op_saturate(&r);
            else
                op_forge(&r);
            break;
        case 14:
            name = (op & 0x20)   ? "hint"
                   : (op & 0x40) ? "priority"
                   : (op & 0x10) ? "config"
                                 : "metrics";
            if (op & 0x20)
                op_hint(&r);
            else if (op & 0x40)
                op_prio(&r);
            else if (op & 0x10)
                op_config(&r);
            else
                op_metrics(&r);
            break;
        case 15:
            name = "destroy";
            op_destroy(&r);
            break;
        }
        tu_fa_arm(&FA, 0);
        if (g_trace) {
            fprintf(stderr, "step %zu: %s%s [", g_step, name, inject ? " (fail next alloc)" : "");
            for (size_t b = start; b < r.i; b++)
                fprintf(stderr, " %02x", data[b]);
            fprintf(stderr, " ] -> %d (%s), %u callbacks, %u event records\n", g_rc,
                    kvb_err_name(g_rc), got_cb.n, got_ev.n);
        }
        if (g_enomem) { /* failed whole: nothing may have happened */
            CHECK(got_cb.n == 0 && got_ev.n == 0, "%s: -ENOMEM, yet callbacks or events fired",
                  name);
            M = saved;
            g_enomem = false;
        }
        compare_all(name);
    }
    teardown();
    return 0;
}
