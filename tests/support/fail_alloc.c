/*
 * support/fail_alloc.c - the fail-at-k allocator (fail_alloc.h).
 */
#include "fail_alloc.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HDR  16                    /* size_t size, then the marker */
#define MARK 0x6b76622d66612d31ull /* "kvb-fa-1" */

void tu_fa_init(tu_fa *fa, size_t max_size)
{
    memset(fa, 0, sizeof *fa);
    pthread_mutex_init(&fa->mu, NULL);
    fa->max_size = max_size;
}

void tu_fa_reset(tu_fa *fa)
{
    pthread_mutex_lock(&fa->mu);
    fa->count = fa->fail_at = fa->n_alloc = fa->n_free = fa->mismatches = 0;
    fa->failed = false;
    fa->bytes_alloc = fa->bytes_free = 0;
    pthread_mutex_unlock(&fa->mu);
}

void tu_fa_arm(tu_fa *fa, long k)
{
    pthread_mutex_lock(&fa->mu);
    fa->count = 0;
    fa->fail_at = k;
    fa->failed = false;
    pthread_mutex_unlock(&fa->mu);
}

static void *fa_alloc(void *ctx, size_t size)
{
    tu_fa *fa = ctx;
    pthread_mutex_lock(&fa->mu);
    long k = ++fa->count;
    bool fail = k == fa->fail_at;
    if (fail)
        fa->failed = true;
    size_t max = fa->max_size;
    pthread_mutex_unlock(&fa->mu);
    if (fail || (max && size > max) || size > SIZE_MAX - HDR)
        return NULL;
    unsigned char *p = malloc(size + HDR);
    if (!p)
        return NULL;
    uint64_t mark = MARK;
    memcpy(p, &size, sizeof size);
    memcpy(p + 8, &mark, sizeof mark);
    pthread_mutex_lock(&fa->mu);
    fa->n_alloc++;
    fa->bytes_alloc += size;
    pthread_mutex_unlock(&fa->mu);
    return p + HDR;
}

static void fa_free(void *ctx, void *ptr, size_t size)
{
    tu_fa *fa = ctx;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t stored;
    uint64_t mark;
    memcpy(&stored, p, sizeof stored);
    memcpy(&mark, p + 8, sizeof mark);
    pthread_mutex_lock(&fa->mu);
    fa->n_free++;
    fa->bytes_free += size;
    if (stored != size || mark != MARK)
        fa->mismatches++;
    pthread_mutex_unlock(&fa->mu);
    if (mark != MARK)
        return; /* not ours: counted, never passed to free() */
    free(p);
}

kvb_allocator tu_fa_allocator(tu_fa *fa)
{
    return (kvb_allocator){.ctx = fa, .alloc = fa_alloc, .free = fa_free};
}

size_t tu_fa_live(tu_fa *fa)
{
    pthread_mutex_lock(&fa->mu);
    size_t live = fa->bytes_alloc - fa->bytes_free;
    pthread_mutex_unlock(&fa->mu);
    return live;
}

bool tu_fa_balanced(tu_fa *fa)
{
    pthread_mutex_lock(&fa->mu);
    bool ok = fa->n_alloc == fa->n_free && fa->bytes_alloc == fa->bytes_free && fa->mismatches == 0;
    pthread_mutex_unlock(&fa->mu);
    return ok;
}
