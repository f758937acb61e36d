/*
 * support/rng.h - the pseudo-random generators of the tests, torture programs
 * and fuzz harnesses: small, seeded, the same sequence on every machine.
 *
 *   tu_rng_next / tu_rnd   splitmix64 (Steele, Lea, Flood 2014; the seeding
 *                          generator of xoshiro): one 64-bit state word, any
 *                          seed (0 included), full period 2^64;
 *   tu_mix64               splitmix64's output function applied to one value:
 *                          a fixed bijective hash of a small integer;
 *   tu_xorshift64          Marsaglia's xorshift64 (13, 7, 17); the state must
 *                          not be 0 (it stays 0);
 *   tu_lcg_next            Knuth's MMIX linear congruential generator; take
 *                          the high bits (its low bits have short periods).
 *
 * Every function takes a pointer to the caller's state, so a thread keeps its
 * own and a run is deterministic per seed (up to thread scheduling).
 * Header-only: the generators sit in the torture programs' inner loops.
 */
#ifndef KVB_TEST_SUPPORT_RNG_H
#define KVB_TEST_SUPPORT_RNG_H

#include <stdint.h>

/* splitmix64: the next 64-bit value of state *s. */
static inline uint64_t tu_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for n far below 2^32 (the modulo bias is negligible);
 * n > 0. */
static inline uint32_t tu_rnd(uint64_t *s, uint32_t n)
{
    return (uint32_t)(tu_rng_next(s) % n);
}

/* splitmix64 of the single value z (the state z, one step). */
static inline uint64_t tu_mix64(uint64_t z)
{
    return tu_rng_next(&z);
}

/* xorshift64 (13, 7, 17): advances *s and returns it; *s must not be 0. */
static inline uint64_t tu_xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Knuth's MMIX LCG: advances *s and returns it (use the high bits). */
static inline uint64_t tu_lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s;
}

#endif /* KVB_TEST_SUPPORT_RNG_H */
