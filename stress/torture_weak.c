/*
 * torture_weak.c - weak upgrades racing evictions.
 *
 * T threads share two small pools (lru/ALLOW and fifo/REJECT, 32 blocks each,
 * 48 hashes each) so that every cached block is evicted again within a few
 * operations. Producers register content and publish a weak reference to it on
 * a shared board (one 64-bit word per hash, written and read with *relaxed*
 * atomics, so the board itself orders nothing: whatever a reader learns about
 * the block it upgrades to must come from kvblock's own synchronisation).
 * Upgraders take a weak reference from the board and upgrade it while other
 * threads release, evict (allocation pressure) and re-register.
 *
 * The payload check: like a runtime writing KV bytes, the owner of a MUTABLE
 * block writes content[pool][id] = the hash it is about to stage; every thread
 * that obtains a reference (register, upgrade, match, clone) reads
 * content[pool][id] and compares it with the hash of its handle. A wrong
 * resurrection or an upgrade that succeeds on an evicted slot shows up as a
 * content mismatch, and a missing happens-before edge in kvblock (between the
 * writer and the reader of the payload) as a race report under helgrind, DRD
 * or TSan: content[] is plain memory.
 *
 * At the end every thread releases what it holds and the program checks:
 * kvb_pool_check() == 0; nothing held; reset + inactive == block_count; exact
 * counter balance (allocations, stagings, registrations, evictions against
 * what the threads saw, on_evict calls == evictions, on_reset calls ==
 * mutable releases + staged releases + dedups + duplicates); misuse == 0.
 * Exits non-zero on the first violation.
 *
 * usage: torture_weak [threads=8] [ops_per_thread=200000] [seed=time]
 */
#include "annotate.h"
#include "kvblock.h"
#include "support/torture.h"
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPOOLS 2
#define BLOCKS 32
#define NHASH  48
#define HOLD   4  /* block references a thread keeps at most */
#define NOPS   12 /* op kinds drawn per step; several kinds share a category */
#define NCAT   9

static const char *const cat_names[NCAT] = {"produce",  "upgrade", "self_race",
                                            "pressure", "release", "release_n",
                                            "match",    "clone",   "republish"};
static const int op_cat[NOPS] = {0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8};

static kvb_pool *pools[NPOOLS];
static kvb_hash universe[NPOOLS][NHASH];
/* The "KV bytes" of each block: written by the MUTABLE owner, read by holders. */
static kvb_hash content[NPOOLS][BLOCKS];
/* Published weak references: (gen << 32) | (id + 1), 0 = none. Relaxed only. */
static _Atomic uint64_t board[NPOOLS][NHASH];
static atomic_ulong cb_evicts[NPOOLS], cb_resets[NPOOLS];

static void on_reset(void *user, uint32_t id)
{
    int pi = *(int *)user;
    if (id >= BLOCKS)
        FAIL("on_reset with block id %u", id);
    atomic_fetch_add_explicit(&cb_resets[pi], 1, memory_order_relaxed);
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    int pi = *(int *)user;
    (void)h;
    if (id >= BLOCKS)
        FAIL("on_evict with block id %u", id);
    atomic_fetch_add_explicit(&cb_evicts[pi], 1, memory_order_relaxed);
}

struct held {
    kvb_block b;
    int pi;
};

struct worker {
    torture_books books[NPOOLS];
    uint64_t upgrades, upgrade_same_life, upgrade_other_life, upgrade_enoent, board_empty;
    uint64_t op_count[NCAT];
    struct held h[HOLD];
    int nh;
};

static int pool_index(const kvb_pool *p)
{
    return p == pools[0] ? 0 : 1;
}

/* Every reference a thread obtains goes through here: payload and handle agree. */
static void verify_ref(const kvb_block *b, kvb_hash expect, const char *how)
{
    int pi = pool_index(b->pool);
    if (b->pool != pools[pi] || b->id >= BLOCKS)
        FAIL("%s: handle names pool %p block %u", how, (void *)b->pool, b->id);
    if (!kvb_hash_equal(b->hash, expect))
        FAIL("%s: handle hash differs from the requested content", how);
    kvb_hash c = content[pi][b->id];
    if (!kvb_hash_equal(c, expect))
        FAIL("%s: block %u of pool %d holds other content (wrong resurrection or upgrade)", how,
             b->id, pi);
    if (kvb_block_use_count(b) == 0)
        FAIL("%s: a fresh reference has use_count 0", how);
}

static void keep(struct worker *w, kvb_block b, uint64_t *s)
{
    if (w->nh < HOLD && tu_rnd(s, 2)) {
        w->h[w->nh].b = b;
        w->h[w->nh].pi = pool_index(b.pool);
        w->nh++;
        return;
    }
    if (kvb_block_release(&b) != 0)
        FAIL("release of a fresh reference");
}

static void publish(int pi, uint32_t k, const kvb_block *b)
{
    atomic_store_explicit(&board[pi][k], ((uint64_t)b->gen << 32) | (b->id + 1u),
                          memory_order_relaxed);
}

static void allocate_rc(int rc, const char *what)
{
    if (rc != 0 && rc != -ENOSPC)
        FAIL("%s: %s", what, kvb_strerror(rc));
}

/* allocate 1..2, write the payload, stage, register, publish, keep or release */
static void produce(struct worker *w, uint64_t *s, int pi)
{
    kvb_pool *p = pools[pi];
    uint32_t n = 1 + tu_rnd(s, 2);
    kvb_mutable m[2];
    kvb_complete c[2];
    kvb_block out[2];
    uint32_t k[2];
    uint32_t nev = 0;
    kvb_hash ev[2];
    int rc = kvb_pool_allocate(p, n, m, ev, &nev);
    allocate_rc(rc, "allocate");
    if (rc)
        return;
    w->books[pi].allocated += n;
    w->books[pi].evicted += nev;
    for (uint32_t i = 0; i < n; i++) {
        k[i] = tu_rnd(s, NHASH);
        content[pi][m[i].id] = universe[pi][k[i]]; /* we own the MUTABLE block */
        if (kvb_mutable_stage(&m[i], universe[pi][k[i]], &c[i]) != 0)
            FAIL("stage");
    }
    w->books[pi].staged += n;
    if (kvb_pool_register(p, c, n, out) != 0)
        FAIL("register");
    w->books[pi].registered += n;
    for (uint32_t i = 0; i < n; i++) {
        verify_ref(&out[i], universe[pi][k[i]], "register");
        publish(pi, k[i], &out[i]);
        keep(w, out[i], s);
    }
}

/* upgrade a weak reference taken from the board */
static void upgrade(struct worker *w, uint64_t *s, int pi)
{
    uint32_t k = tu_rnd(s, NHASH);
    uint64_t v = atomic_load_explicit(&board[pi][k], memory_order_relaxed);
    if (!v) {
        w->board_empty++;
        return;
    }
    kvb_weak wk = {.pool = pools[pi],
                   .id = (uint32_t)(v & 0xffffffffu) - 1,
                   .gen = (uint32_t)(v >> 32),
                   .hash = universe[pi][k]};
    kvb_block b;
    int rc = kvb_weak_upgrade(&wk, &b);
    if (rc == -ENOENT) {
        w->upgrade_enoent++;
        return;
    }
    if (rc != 0)
        FAIL("weak_upgrade: %s", kvb_strerror(rc));
    w->upgrades++;
    if (b.id == wk.id && b.gen == wk.gen)
        w->upgrade_same_life++;
    else
        w->upgrade_other_life++;
    verify_ref(&b, universe[pi][k], "weak_upgrade");
    keep(w, b, s);
}

/* downgrade one of our references, release it (maybe the last), upgrade at once */
static void self_race(struct worker *w, uint64_t *s)
{
    if (!w->nh)
        return;
    int i = (int)tu_rnd(s, (uint32_t)w->nh);
    kvb_weak wk;
    kvb_block_downgrade(&w->h[i].b, &wk);
    kvb_hash h = w->h[i].b.hash;
    if (kvb_block_release(&w->h[i].b) != 0)
        FAIL("release before upgrade");
    w->h[i] = w->h[--w->nh];
    kvb_block b;
    int rc = kvb_weak_upgrade(&wk, &b);
    if (rc == -ENOENT) {
        w->upgrade_enoent++;
        return;
    }
    if (rc != 0)
        FAIL("weak_upgrade after release: %s", kvb_strerror(rc));
    w->upgrades++;
    if (b.id == wk.id && b.gen == wk.gen)
        w->upgrade_same_life++;
    else
        w->upgrade_other_life++;
    verify_ref(&b, h, "weak_upgrade after own release");
    keep(w, b, s);
}

/* eviction pressure: take up to half the pool as mutable blocks, scribble, give back */
static void pressure(struct worker *w, uint64_t *s, int pi)
{
    kvb_pool *p = pools[pi];
    uint32_t n = 1 + tu_rnd(s, BLOCKS / 2);
    kvb_mutable m[BLOCKS / 2];
    kvb_hash ev[BLOCKS / 2];
    uint32_t nev = 0;
    int rc = kvb_pool_allocate(p, n, m, ev, &nev);
    allocate_rc(rc, "allocate (pressure)");
    if (rc)
        return;
    w->books[pi].allocated += n;
    w->books[pi].evicted += nev;
    for (uint32_t i = 0; i < n; i++)
        content[pi][m[i].id] = (kvb_hash){~0ull, m[i].id}; /* garbage: not a content hash */
    for (uint32_t i = 0; i < n; i++)
        if (kvb_mutable_release(&m[i]) != 0)
            FAIL("mutable_release");
    w->books[pi].unregistered += n;
}

static void match(struct worker *w, uint64_t *s, int pi)
{
    kvb_hash q[3];
    kvb_block out[3];
    bool hit[3];
    for (int i = 0; i < 3; i++)
        q[i] = universe[pi][tu_rnd(s, NHASH)];
    int k = kvb_pool_match_scattered(pools[pi], q, 3, out, hit);
    if (k < 0)
        FAIL("match_scattered: %s", kvb_strerror(k));
    for (int i = 0; i < 3; i++) {
        if (!hit[i])
            continue;
        verify_ref(&out[i], q[i], "match_scattered");
        keep(w, out[i], s);
    }
}

static void op(struct worker *w, uint64_t *s)
{
    int pi = (int)tu_rnd(s, NPOOLS);
    uint32_t kind = tu_rnd(s, NOPS);
    w->op_count[op_cat[kind]]++;
    switch (kind) {
    case 0:
    case 1:
        produce(w, s, pi);
        break;
    case 2:
    case 3:
    case 4:
        upgrade(w, s, pi);
        break;
    case 5:
        self_race(w, s);
        break;
    case 6:
        pressure(w, s, pi);
        break;
    case 7:
        if (w->nh) {
            int i = (int)tu_rnd(s, (uint32_t)w->nh);
            if (kvb_block_release(&w->h[i].b) != 0)
                FAIL("release of a held block");
            w->h[i] = w->h[--w->nh];
        }
        break;
    case 8: {
        kvb_block b[HOLD];
        for (int i = 0; i < w->nh; i++)
            b[i] = w->h[i].b;
        if (kvb_block_release_n(b, (uint32_t)w->nh) != 0)
            FAIL("release_n");
        w->nh = 0;
        break;
    }
    case 9:
        match(w, s, pi);
        break;
    case 10:
        if (w->nh) {
            struct held *hd = &w->h[tu_rnd(s, (uint32_t)w->nh)];
            kvb_block c;
            if (kvb_block_clone(&hd->b, &c) != 0)
                FAIL("clone of a held block");
            verify_ref(&c, hd->b.hash, "clone");
            keep(w, c, s);
        }
        break;
    case 11: /* publish one of ours again (a weak reference to a live block) */
        if (w->nh) {
            struct held *hd = &w->h[tu_rnd(s, (uint32_t)w->nh)];
            for (uint32_t k = 0; k < NHASH; k++)
                if (kvb_hash_equal(universe[hd->pi][k], hd->b.hash))
                    publish(hd->pi, k, &hd->b);
        }
        break;
    }
}

static void run(void *arg, uint64_t seed, uint64_t ops)
{
    struct worker *w = arg;
    uint64_t s = seed;
    for (uint64_t i = 0; i < ops; i++)
        op(w, &s);
    for (int i = 0; i < w->nh; i++)
        if (kvb_block_release(&w->h[i].b) != 0)
            FAIL("final release");
    w->nh = 0;
}

int main(int argc, char **argv)
{
    torture_args a = torture_start(argc, argv, "torture_weak", 8, 200000);
    KVB_ATOMIC_VAR(board, sizeof board);
    for (int pi = 0; pi < NPOOLS; pi++)
        for (uint32_t k = 0; k < NHASH; k++) {
            /* positions spread over the three hash modes */
            uint32_t pos = (k * 2654435761u) & KVB_HASH_MAX_POSITION;
            if (kvb_hash_make(0x5eed0000u + k * 7919u + (uint64_t)pi, 0, false, pos,
                              &universe[pi][k]) != 0)
                FAIL("hash_make");
        }
    torture_pair_create(BLOCKS, NULL, (kvb_callbacks){.on_reset = on_reset, .on_evict = on_evict},
                        pools);

    struct worker *w = calloc((size_t)a.threads, sizeof *w);
    if (!w)
        FAIL("out of memory");
    torture_run(&a, w, sizeof *w, run);

    uint64_t total_ops = 0, upgrades = 0, same = 0, other = 0, enoent = 0, empty = 0;
    uint64_t per_op[NCAT] = {0};
    for (int i = 0; i < a.threads; i++) {
        for (int k = 0; k < NCAT; k++) {
            total_ops += w[i].op_count[k];
            per_op[k] += w[i].op_count[k];
        }
        upgrades += w[i].upgrades;
        same += w[i].upgrade_same_life;
        other += w[i].upgrade_other_life;
        enoent += w[i].upgrade_enoent;
        empty += w[i].board_empty;
    }
    for (int pi = 0; pi < NPOOLS; pi++) {
        kvb_pool *p = pools[pi];
        torture_books b = {0};
        for (int i = 0; i < a.threads; i++)
            torture_books_add(&b, &w[i].books[pi]);
        b.on_evict = atomic_load(&cb_evicts[pi]);
        b.on_reset = atomic_load(&cb_resets[pi]);
        kvb_stats st = torture_check_pool(
            pi, p, &b, TORTURE_ALLOCATIONS | TORTURE_ON_EVICT | TORTURE_ON_RESET);
        if (st.allocations_from_reset + st.evictions != st.allocations)
            FAIL("pool %d: from_reset + evictions != allocations", pi);
        printf("pool %-11s: allocations=%" PRIu64 " evictions=%" PRIu64 " registrations=%" PRIu64
               " duplicates=%" PRIu64 " dedups=%" PRIu64 " resurrections=%" PRIu64 " eager=%" PRIu64
               " noops=%" PRIu64 " contended=%" PRIu64 "\n",
               kvb_pool_name(p), st.allocations, st.evictions, st.registrations, st.duplicates,
               st.dedups, st.resurrections, st.eager_transitions, st.release_noops,
               st.lock_contended);
        if (kvb_pool_destroy(p) != 0)
            FAIL("pool_destroy");
    }
    KVB_ATOMIC_VAR_END(board, sizeof board);
    printf("upgrades: ok=%" PRIu64 " (same life %" PRIu64 ", other life %" PRIu64
           ") enoent=%" PRIu64 " board-empty=%" PRIu64 "\n",
           upgrades, same, other, enoent, empty);
    printf("ops:");
    for (int k = 0; k < NCAT; k++)
        printf(" %s=%" PRIu64, cat_names[k], per_op[k]);
    printf("\ntorture_weak: OK, %" PRIu64 " operations\n", total_ops);
    free(w);
    return 0;
}
