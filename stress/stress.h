/*
 * stress.h - what every torture program shares: the failure exit and a seeded
 * splitmix64 generator (deterministic per seed up to thread scheduling).
 * Define STRESS_NAME (the program's name, for messages) before including it.
 */
#ifndef KVB_STRESS_H
#define KVB_STRESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Report a violation and exit non-zero at once. */
#define FAIL(...)                                                                              \
    do {                                                                                       \
        fprintf(stderr, STRESS_NAME ": FAIL: " __VA_ARGS__);                                   \
        fprintf(stderr, "\n");                                                                 \
        exit(1);                                                                               \
    } while (0)

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for n far below 2^32 (the modulo bias is negligible). */
static inline uint32_t rnd(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rng_next(s) % n);
}

#endif
