/*
 * test_hash.c - content hashes (lib/hash.c, DESIGN.md section 4).
 *
 * The reference values in data/hash_vectors.h are computed independently by
 * tests/data/gen_hash_vectors.py (Python xxhash + integer packing); this file
 * checks salt, block and chain hashes, kvb_hash_tokens end to end, the 128-bit
 * packing at every mode boundary, the accessors, is_parent, extend, format and
 * the error paths (a failed call leaves *out untouched).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "data/hash_vectors.h"
#include "kvblock.h"
#include "support/rng.h"

#define MAXPOS KVB_HASH_MAX_POSITION

static const kvb_hash sentinel = {0x5a5a5a5a5a5a5a5aull, 0xa5a5a5a5a5a5a5a5ull};

static kvb_hash mk(uint64_t current, uint64_t parent, bool has_parent, uint32_t position)
{
    kvb_hash h;
    int rc = kvb_hash_make(current, parent, has_parent, position, &h);
    cr_assert_eq(rc, 0, "kvb_hash_make(position %u) = %d", position, rc);
    return h;
}

static void assert_hash(kvb_hash h, uint64_t hi, uint64_t lo, const char *what, size_t i)
{
    cr_assert(h.hi == hi && h.lo == lo, "%s[%zu]: got {%016llx, %016llx}, want {%016llx, %016llx}",
              what, i, (unsigned long long)h.hi, (unsigned long long)h.lo, (unsigned long long)hi,
              (unsigned long long)lo);
}

static bool is_sentinel(kvb_hash h)
{
    return kvb_hash_equal(h, sentinel);
}

/* ---- salt, block, chain ---------------------------------------------------- */

Test(hash, salt_vectors)
{
    for (size_t i = 0; i < HV_N_SALTS; i++) {
        const hv_salt *s = &hv_salts[i];
        cr_assert_eq(kvb_hash_salt(s->bytes, s->len), s->hash, "salt %zu (len %zu)", i, s->len);
    }
}

Test(hash, salt_empty_is_zero)
{
    cr_assert_eq(kvb_hash_salt("x", 0), 0);
    cr_assert_eq(kvb_hash_salt(NULL, 0), 0);
    cr_assert_eq(kvb_hash_salt(NULL, 5), 0, "NULL salt hashes as empty, no crash");
}

Test(hash, block_vectors)
{
    for (size_t i = 0; i < HV_N_BLOCKS; i++) {
        const hv_block *b = &hv_blocks[i];
        cr_assert_eq(kvb_hash_block(b->tokens, b->n, b->seed), b->hash,
                     "block %zu (n %zu, seed %016llx)", i, b->n, (unsigned long long)b->seed);
        if (b->n == 0)
            cr_assert_eq(kvb_hash_block(NULL, 0, b->seed), b->hash);
    }
}

Test(hash, block_is_position_independent_and_seeded)
{
    const uint32_t t[8] = {5, 6, 7, 8, 5, 6, 7, 8};
    cr_assert_eq(kvb_hash_block(t, 4, 0), kvb_hash_block(t + 4, 4, 0));
    cr_assert_neq(kvb_hash_block(t, 4, 0), kvb_hash_block(t, 4, 1));
    cr_assert_neq(kvb_hash_block(t, 4, 0), kvb_hash_block(t, 3, 0));
}

Test(hash, chain_vectors)
{
    for (size_t i = 0; i < HV_N_CHAINS; i++) {
        const hv_chain *c = &hv_chains[i];
        cr_assert_eq(kvb_hash_chain(c->parent, c->block), c->seq, "chain %zu", i);
    }
}

/* Block, chain and make composed by hand reproduce every reference sequence. */
Test(hash, sequence_vectors_by_parts)
{
    for (size_t s = 0; s < HV_N_SEQUENCES; s++) {
        const hv_sequence *q = &hv_sequences[s];
        uint64_t parent = 0;
        cr_assert_eq(q->n_blocks, q->n_tokens / q->block_size, "%s", q->name);
        for (size_t i = 0; i < q->n_blocks; i++) {
            uint64_t b = kvb_hash_block(q->tokens + i * q->block_size, q->block_size, q->salt_hash);
            cr_assert_eq(b, q->block_hash[i], "%s: block %zu", q->name, i);
            uint64_t seq = i == 0 ? b : kvb_hash_chain(parent, b);
            cr_assert_eq(seq, q->seq_hash[i], "%s: seq %zu", q->name, i);
            kvb_hash h = mk(seq, parent, i > 0, (uint32_t)i);
            assert_hash(h, q->lineage[i].hi, q->lineage[i].lo, q->name, i);
            parent = seq;
        }
    }
}

/* ---- kvb_hash_tokens --------------------------------------------------------- */

Test(hash, tokens_vectors)
{
    for (size_t s = 0; s < HV_N_SEQUENCES; s++) {
        const hv_sequence *q = &hv_sequences[s];
        uint64_t salt =
            q->salt >= 0 ? kvb_hash_salt(hv_salts[q->salt].bytes, hv_salts[q->salt].len) : 0;
        cr_assert_eq(salt, q->salt_hash, "%s: salt", q->name);

        size_t cap = q->n_blocks + 4; /* room to spare: a partial block gets nothing */
        kvb_hash *out = malloc(cap * sizeof *out);
        cr_assert_not_null(out);
        for (size_t i = 0; i < cap; i++)
            out[i] = sentinel;
        int n = kvb_hash_tokens(q->tokens, q->n_tokens, q->block_size, salt, out, cap);
        cr_assert_eq(n, (int)q->n_blocks, "%s: returned %d", q->name, n);
        for (size_t i = 0; i < q->n_blocks; i++) {
            assert_hash(out[i], q->lineage[i].hi, q->lineage[i].lo, q->name, i);
            cr_assert_eq(kvb_hash_current(out[i]), q->seq_hash[i]);
            cr_assert_eq(kvb_hash_position(out[i]), (uint32_t)i);
            if (i == 0) {
                cr_assert_eq(kvb_hash_parent_fragment(out[i]), 0);
            } else {
                cr_assert(kvb_hash_is_parent(out[i - 1], out[i]), "%s: %zu", q->name, i);
                kvb_hash e;
                cr_assert_eq(kvb_hash_extend(out[i - 1], q->seq_hash[i], &e), 0);
                cr_assert(kvb_hash_equal(e, out[i]));
            }
        }
        for (size_t i = q->n_blocks; i < cap; i++)
            cr_assert(is_sentinel(out[i]), "%s: wrote past the full blocks", q->name);
        free(out);
    }
}

Test(hash, tokens_trailing_partial_block_gets_no_hash)
{
    uint32_t t[16 + 15];
    for (uint32_t i = 0; i < 31; i++)
        t[i] = i * 7 + 1;
    kvb_hash out[3] = {sentinel, sentinel, sentinel};
    cr_assert_eq(kvb_hash_tokens(t, 31, 16, 0, out, 3), 1);
    cr_assert(!is_sentinel(out[0]));
    cr_assert(is_sentinel(out[1]));
    /* 15 tokens: no full block at all. */
    out[0] = sentinel;
    cr_assert_eq(kvb_hash_tokens(t, 15, 16, 0, out, 3), 0);
    cr_assert(is_sentinel(out[0]));
    /* The full block's hash does not depend on what trails it. */
    kvb_hash one;
    cr_assert_eq(kvb_hash_tokens(t, 16, 16, 0, &one, 1), 1);
    cr_assert_eq(kvb_hash_tokens(t, 31, 16, 0, out, 3), 1);
    cr_assert(kvb_hash_equal(one, out[0]));
}

Test(hash, tokens_out_cap_limits)
{
    const hv_sequence *q = &hv_sequences[0]; /* block size 1, 300 blocks */
    cr_assert_geq(q->n_blocks, 300);
    kvb_hash out[260];
    for (size_t cap = 0; cap <= 260; cap += 1) {
        for (size_t i = 0; i < 260; i++)
            out[i] = sentinel;
        int n = kvb_hash_tokens(q->tokens, q->n_tokens, q->block_size, q->salt_hash, out, cap);
        cr_assert_eq(n, (int)cap);
        for (size_t i = 0; i < cap; i++)
            assert_hash(out[i], q->lineage[i].hi, q->lineage[i].lo, "cap", i);
        for (size_t i = cap; i < 260; i++)
            cr_assert(is_sentinel(out[i]), "cap %zu wrote entry %zu", cap, i);
    }
    /* out may be NULL when out_cap is 0. */
    cr_assert_eq(kvb_hash_tokens(q->tokens, q->n_tokens, 1, 0, NULL, 0), 0);
}

Test(hash, tokens_invalid_arguments)
{
    uint32_t t[64] = {0};
    kvb_hash out[4] = {sentinel, sentinel, sentinel, sentinel};
    const uint32_t bad_sizes[] = {0, 3, 6, 12, 1000, 1025, 2048, 4096, 0x80000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
        cr_assert_eq(kvb_hash_tokens(t, 64, bad_sizes[i], 0, out, 4), -EINVAL, "block size %u",
                     bad_sizes[i]);
    /* bad block size even with nothing to hash */
    cr_assert_eq(kvb_hash_tokens(NULL, 0, 0, 0, NULL, 0), -EINVAL);
    cr_assert_eq(kvb_hash_tokens(NULL, 1, 1, 0, out, 4), -EINVAL);
    cr_assert_eq(kvb_hash_tokens(NULL, 64, 16, 0, NULL, 0), -EINVAL);
    cr_assert_eq(kvb_hash_tokens(t, 64, 16, 0, NULL, 4), -EINVAL);
    cr_assert_eq(kvb_hash_tokens(t, 0, 16, 0, NULL, 1), -EINVAL);
    for (size_t i = 0; i < 4; i++)
        cr_assert(is_sentinel(out[i]), "a failed call wrote out[%zu]", i);

    /* Valid corner cases. */
    cr_assert_eq(kvb_hash_tokens(NULL, 0, 16, 0, out, 4), 0);
    cr_assert_eq(kvb_hash_tokens(NULL, 0, 16, 0, NULL, 0), 0);
    for (uint32_t bs = 1; bs <= 1024; bs <<= 1) {
        uint32_t *tt = calloc(4 * (size_t)bs, sizeof *tt);
        cr_assert_not_null(tt);
        cr_assert_eq(kvb_hash_tokens(tt, 4 * (size_t)bs, bs, 0, out, 4), 4, "block size %u", bs);
        cr_assert_eq(kvb_hash_position(out[3]), 3);
        free(tt);
    }
}

/* More blocks than positions: -EOVERFLOW before anything is read or written.
 * The buffers are calloc'ed and never touched by a correct implementation, so
 * they cost address space, not memory. */
Test(hash, tokens_position_overflow)
{
    size_t nblocks = (size_t)MAXPOS + 2;
    uint32_t *t = calloc(nblocks, sizeof *t);
    kvb_hash *out = calloc(nblocks, sizeof *out);
    if (!t || !out) {
        free(t);
        free(out);
        cr_skip_test("cannot reserve %zu blocks", nblocks);
    }
    out[0] = sentinel;
    out[nblocks - 1] = sentinel;
    cr_assert_eq(kvb_hash_tokens(t, nblocks, 1, 0, out, nblocks), -EOVERFLOW);
    cr_assert(is_sentinel(out[0]) && is_sentinel(out[nblocks - 1]));
    /* Only the blocks that would be written count: out_cap bounds them. */
    cr_assert_eq(kvb_hash_tokens(t, nblocks, 1, 0, out, 2), 2);
    cr_assert_eq(kvb_hash_position(out[1]), 1);
    free(t);
    free(out);
}

/* Past both mode boundaries, against the Python reference. */
Test(hash, tokens_long_sequence)
{
    uint32_t *t = malloc(HV_LONG_N * sizeof *t);
    kvb_hash *out = malloc(HV_LONG_N * sizeof *out);
    cr_assert(t && out);
    for (uint32_t i = 0; i < HV_LONG_N; i++)
        t[i] = (uint32_t)(i * HV_LONG_MUL + HV_LONG_ADD);
    uint64_t salt = kvb_hash_salt(hv_salts[HV_LONG_SALT].bytes, hv_salts[HV_LONG_SALT].len);
    cr_assert_eq(kvb_hash_tokens(t, HV_LONG_N, 1, salt, out, HV_LONG_N), HV_LONG_N);

    for (size_t k = 0; k < HV_N_LONG_PICKS; k++) {
        const hv_long_pick *p = &hv_long_picks[k];
        assert_hash(out[p->position], p->lineage.hi, p->lineage.lo, "long", p->position);
        cr_assert_eq(kvb_hash_current(out[p->position]), p->seq);
    }
    uint64_t xhi = 0, xlo = 0, shi = 0, slo = 0;
    for (uint32_t i = 0; i < HV_LONG_N; i++) {
        xhi ^= out[i].hi;
        xlo ^= out[i].lo;
        shi += out[i].hi;
        slo += out[i].lo;
        cr_assert_eq(kvb_hash_position(out[i]), i);
        if (i > 0)
            cr_assert(kvb_hash_is_parent(out[i - 1], out[i]), "position %u", i);
    }
    cr_assert(xhi == hv_long_xor.hi && xlo == hv_long_xor.lo, "xor fold differs");
    cr_assert(shi == hv_long_sum.hi && slo == hv_long_sum.lo, "sum fold differs");
    cr_assert_eq(kvb_hash_fragment_bits(out[255]), 54);
    cr_assert_eq(kvb_hash_fragment_bits(out[256]), 46);
    cr_assert_eq(kvb_hash_fragment_bits(out[65535]), 46);
    cr_assert_eq(kvb_hash_fragment_bits(out[65536]), 38);
    free(t);
    free(out);
}

/* ---- packing ---------------------------------------------------------------- */

Test(hash, make_vectors)
{
    for (size_t i = 0; i < HV_N_PACKS; i++) {
        const hv_pack *v = &hv_packs[i];
        kvb_hash h = mk(v->current, v->parent, v->has_parent, v->position);
        assert_hash(h, v->hi, v->lo, "pack", i);
        cr_assert_eq(kvb_hash_position(h), v->position, "pack %zu", i);
        cr_assert_eq(kvb_hash_current(h), v->current, "pack %zu", i);
        cr_assert_eq(kvb_hash_parent_fragment(h), v->fragment, "pack %zu", i);
        cr_assert_eq(kvb_hash_fragment_bits(h), v->fragment_bits, "pack %zu", i);
    }
}

Test(hash, make_roundtrip_at_boundaries)
{
    const uint32_t pos[] = {0, 1, 255, 256, 65535, 65536, MAXPOS - 1, MAXPOS};
    const uint32_t bits[] = {54, 54, 54, 46, 46, 38, 38, 38};
    const uint64_t mode[] = {0, 0, 0, 1, 1, 2, 2, 2};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        for (int k = 0; k < 64; k++) {
            uint64_t cur = tu_xorshift64(&x), par = ~x * 0xff51afd7ed558ccdull;
            kvb_hash h = mk(cur, par, true, pos[i]);
            cr_assert_eq(kvb_hash_position(h), pos[i]);
            cr_assert_eq(kvb_hash_current(h), cur);
            cr_assert_eq(kvb_hash_fragment_bits(h), bits[i]);
            cr_assert_eq(kvb_hash_parent_fragment(h), par & ((1ull << bits[i]) - 1));
            cr_assert_eq(h.hi >> 62, mode[i], "mode at position %u", pos[i]);
            kvb_hash r = mk(cur, par, false, pos[i]);
            cr_assert_eq(kvb_hash_parent_fragment(r), 0);
            cr_assert_eq(kvb_hash_current(r), cur);
            cr_assert_eq(kvb_hash_position(r), pos[i]);
        }
    }
}

Test(hash, make_overflow_and_null)
{
    const uint32_t bad[] = {MAXPOS + 1, MAXPOS + 2, 1u << 31, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvb_hash h = sentinel;
        cr_assert_eq(kvb_hash_make(1, 2, true, bad[i], &h), -EOVERFLOW, "position %u", bad[i]);
        cr_assert(is_sentinel(h), "*out changed by a failed call");
    }
    cr_assert_eq(kvb_hash_make(1, 2, true, 0, NULL), -EINVAL);
    cr_assert_eq(kvb_hash_make(1, 2, true, MAXPOS, NULL), -EINVAL);
}

Test(hash, parent_ignored_without_has_parent)
{
    kvb_hash a = mk(42, 0, false, 7), b = mk(42, UINT64_MAX, false, 7);
    cr_assert(kvb_hash_equal(a, b));
}

Test(hash, equal)
{
    kvb_hash a = mk(1, 2, true, 3), b = a;
    cr_assert(kvb_hash_equal(a, b));
    b.hi ^= 1;
    cr_assert(!kvb_hash_equal(a, b));
    b = a;
    b.lo ^= 1ull << 63;
    cr_assert(!kvb_hash_equal(a, b));
    /* The same content at another position is another hash. */
    cr_assert(!kvb_hash_equal(mk(1, 2, true, 3), mk(1, 2, true, 4)));
    /* Same content and position, a parent differing in its low bits: another hash. */
    cr_assert(!kvb_hash_equal(mk(1, 2, true, 3), mk(1, 2 | 1ull, true, 3)));
}

/* ---- is_parent / extend ---------------------------------------------------- */

Test(hash, is_parent_across_mode_boundaries)
{
    const uint32_t parents[] = {0, 1, 254, 255, 256, 65534, 65535, 65536, MAXPOS - 1};
    uint64_t pseq = 0x0123456789ABCDEFull, cseq = 0xC0FFEE0DDBA11ull;
    for (size_t i = 0; i < sizeof parents / sizeof parents[0]; i++) {
        uint32_t pp = parents[i];
        kvb_hash p = mk(pseq, 0x1111, pp > 0, pp);
        kvb_hash c = mk(cseq, pseq, true, pp + 1);
        cr_assert(kvb_hash_is_parent(p, c), "%u -> %u", pp, pp + 1);
        cr_assert(!kvb_hash_is_parent(c, p), "reversed %u", pp);
        cr_assert(!kvb_hash_is_parent(p, p), "same position %u", pp);
        if (pp + 2 <= MAXPOS) {
            kvb_hash c2 = mk(cseq, pseq, true, pp + 2);
            cr_assert(!kvb_hash_is_parent(p, c2), "skip a position at %u", pp);
        }
        /* A child recorded as a root (no parent) matches no parent with non-zero
         * low bits. */
        cr_assert(!kvb_hash_is_parent(p, mk(cseq, 0, false, pp + 1)));

        uint32_t r = kvb_hash_fragment_bits(c);
        cr_assert_eq(kvb_hash_parent_fragment(c), kvb_hash_child_fragment(pseq, pp + 1));
        /* A parent differing in the bits the child kept is not the parent. */
        kvb_hash q = mk(pseq ^ 1ull, 0x1111, pp > 0, pp);
        cr_assert(!kvb_hash_is_parent(q, c), "fragment low bit at %u", pp);
        q = mk(pseq ^ (1ull << (r - 1)), 0x1111, pp > 0, pp);
        cr_assert(!kvb_hash_is_parent(q, c), "fragment top bit at %u", pp);
        /* ... but one differing only above them is indistinguishable ("possible"). */
        q = mk(pseq ^ (1ull << r), 0x1111, pp > 0, pp);
        cr_assert(kvb_hash_is_parent(q, c), "above the fragment at %u", pp);
    }
}

Test(hash, is_parent_mode_boundary_uses_child_fragment_width)
{
    /* 255 (mode 0, R 54) -> 256 (mode 1, R 46): the child keeps 46 bits. */
    uint64_t pseq = 0xFEDCBA9876543210ull;
    kvb_hash p = mk(pseq, 5, true, 255);
    kvb_hash c = mk(77, pseq, true, 256);
    cr_assert_eq(kvb_hash_parent_fragment(c), pseq & ((1ull << 46) - 1));
    cr_assert(kvb_hash_is_parent(p, c));
    /* 65535 (mode 1) -> 65536 (mode 2, R 38). */
    p = mk(pseq, 5, true, 65535);
    c = mk(77, pseq, true, 65536);
    cr_assert_eq(kvb_hash_parent_fragment(c), pseq & ((1ull << 38) - 1));
    cr_assert(kvb_hash_is_parent(p, c));
}

Test(hash, is_parent_rejects_malformed)
{
    kvb_hash p = mk(9, 0, false, 0);
    kvb_hash c = mk(10, 9, true, 1);
    cr_assert(kvb_hash_is_parent(p, c));
    kvb_hash bad = c;
    bad.hi |= 3ull << 62; /* mode 3 is never produced */
    cr_assert(!kvb_hash_is_parent(p, bad));
    bad = p;
    bad.hi |= 3ull << 62;
    cr_assert(!kvb_hash_is_parent(bad, c));
    /* mode 1 with a position below 256: not a hash kvb_hash_make produces. */
    kvb_hash m1 = {(1ull << 62) | (1ull << 46), 0};
    cr_assert_eq(kvb_hash_position(m1), 1);
    cr_assert(!kvb_hash_is_parent(p, m1));
}

Test(hash, extend)
{
    const uint32_t pos[] = {0, 100, 254, 255, 256, 65534, 65535, 65536, MAXPOS - 1};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        kvb_hash p = mk(0xABCDEF0123456789ull, 0x42, pos[i] > 0, pos[i]);
        kvb_hash c = sentinel;
        cr_assert_eq(kvb_hash_extend(p, 0x1122334455667788ull, &c), 0);
        cr_assert(
            kvb_hash_equal(c, mk(0x1122334455667788ull, 0xABCDEF0123456789ull, true, pos[i] + 1)));
        cr_assert_eq(kvb_hash_position(c), pos[i] + 1);
        cr_assert_eq(kvb_hash_current(c), 0x1122334455667788ull);
        cr_assert(kvb_hash_is_parent(p, c));
    }
}

Test(hash, extend_errors)
{
    kvb_hash last = mk(1, 2, true, MAXPOS), out = sentinel;
    cr_assert_eq(kvb_hash_extend(last, 3, &out), -EOVERFLOW);
    cr_assert(is_sentinel(out));
    cr_assert_eq(kvb_hash_extend(mk(1, 2, true, 5), 3, NULL), -EINVAL);
    kvb_hash bad = mk(1, 2, true, 5);
    bad.hi |= 3ull << 62;
    cr_assert_eq(kvb_hash_extend(bad, 3, &out), -EINVAL);
    cr_assert(is_sentinel(out));
}

/* Hashes built from raw integers never crash the accessors. */
Test(hash, accessors_on_raw_values)
{
    const kvb_hash raw[] = {{0, 0},          {0, 1},
                            {0, UINT64_MAX}, {UINT64_MAX, UINT64_MAX},
                            {3ull << 62, 0}, {1ull << 62, 12345},
                            {2ull << 62, 0}};
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        uint32_t bits = kvb_hash_fragment_bits(raw[i]);
        cr_assert(bits == 54 || bits == 46 || bits == 38);
        cr_assert_leq(kvb_hash_position(raw[i]), MAXPOS);
        cr_assert_leq(kvb_hash_parent_fragment(raw[i]), (1ull << bits) - 1);
        char buf[64];
        cr_assert_lt(kvb_hash_format(raw[i], buf, sizeof buf), (int)sizeof buf);
    }
    kvb_hash small = {0, 7}; /* a trace id used as a hash: position 0 */
    cr_assert_eq(kvb_hash_position(small), 0);
    cr_assert_eq(kvb_hash_parent_fragment(small), 7);
    cr_assert_eq(kvb_hash_current(small), 0);
}

/* ---- format ----------------------------------------------------------------- */

Test(hash, format_text)
{
    char buf[64];
    kvb_hash h = mk(0x0123456789ABCDEFull, 0xFEDCBA9876543210ull, true, 3);
    cr_assert_eq(kvb_hash_format(h, buf, sizeof buf), 33);
    cr_assert_str_eq(buf, "3:0123456789abcdef:1cba9876543210");

    h = mk(0, 0, false, 0);
    cr_assert_eq(kvb_hash_format(h, buf, sizeof buf), 20);
    cr_assert_str_eq(buf, "0:0000000000000000:0");

    h = mk(UINT64_MAX, UINT64_MAX, true, 65536);
    kvb_hash_format(h, buf, sizeof buf);
    cr_assert_str_eq(buf, "10000:ffffffffffffffff:3fffffffff");

    h = mk(0xDEADBEEF, 0x8000000000000000ull, true, MAXPOS);
    kvb_hash_format(h, buf, sizeof buf);
    cr_assert_str_eq(buf, "ffffff:00000000deadbeef:0");

    h = mk(1, UINT64_MAX, true, 256);
    kvb_hash_format(h, buf, sizeof buf);
    cr_assert_str_eq(buf, "100:0000000000000001:3fffffffffff");
}

Test(hash, format_truncation)
{
    kvb_hash h = mk(0x0123456789ABCDEFull, 0xFEDCBA9876543210ull, true, 3);
    const char *full = "3:0123456789abcdef:1cba9876543210";
    int len = (int)strlen(full);
    char buf[64];

    cr_assert_eq(kvb_hash_format(h, NULL, 0), len);
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(kvb_hash_format(h, buf, 0), len);
    cr_assert_eq(buf[0], 'X', "cap 0 must not write");

    cr_assert_eq(kvb_hash_format(h, buf, 1), len);
    cr_assert_str_eq(buf, "");

    memset(buf, 'X', sizeof buf);
    cr_assert_eq(kvb_hash_format(h, buf, 6), len);
    cr_assert_str_eq(buf, "3:012");
    cr_assert_eq(buf[6], 'X', "wrote past cap");

    cr_assert_eq(kvb_hash_format(h, buf, (size_t)len), len);
    cr_assert_eq(strlen(buf), (size_t)len - 1);
    cr_assert_eq(strncmp(buf, full, (size_t)len - 1), 0);

    cr_assert_eq(kvb_hash_format(h, buf, (size_t)len + 1), len);
    cr_assert_str_eq(buf, full);

    cr_assert_eq(kvb_hash_format(h, NULL, 8), -EINVAL);
}

Test(hash, child_fragment_keeps_low_bits_by_child_position)
{
    uint64_t seq = 0xFEDCBA9876543210ull;
    cr_assert_eq(kvb_hash_child_fragment(seq, 1), seq & ((1ull << 54) - 1));
    cr_assert_eq(kvb_hash_child_fragment(seq, 255), seq & ((1ull << 54) - 1));
    cr_assert_eq(kvb_hash_child_fragment(seq, 256), seq & ((1ull << 46) - 1));
    cr_assert_eq(kvb_hash_child_fragment(seq, 65536), seq & ((1ull << 38) - 1));
    cr_assert_eq(kvb_hash_child_fragment(seq, MAXPOS + 1), 0);
    /* small integers (trace ids) keep distinct fragments */
    cr_assert_neq(kvb_hash_child_fragment(7, 1), kvb_hash_child_fragment(8, 1));
}
