/*
 * support/park.c - park the last release of a block in its window (park.h).
 */
#include "park.h"
#include "testing.h"

static void park_hook(void *arg, kvb_pool *pool, uint32_t id)
{
    tu_park *pk = arg;
    (void)pool;
    (void)id;
    sem_post(&pk->reached);
    sem_wait(&pk->go);
}

static void *releaser(void *arg)
{
    tu_park *pk = arg;
    pk->rc = kvb_block_release(&pk->b);
    return NULL;
}

int tu_park_last_release(tu_park *pk, kvb_block b)
{
    sem_init(&pk->reached, 0, 0);
    sem_init(&pk->go, 0, 0);
    pk->b = b;
    pk->rc = 0;
    kvb__test_set_last_release_hook(park_hook, pk);
    int rc = pthread_create(&pk->t, NULL, releaser, pk);
    if (rc == 0)
        sem_wait(&pk->reached);
    kvb__test_set_last_release_hook(NULL, NULL); /* only this release parks */
    if (rc != 0) {
        sem_destroy(&pk->reached);
        sem_destroy(&pk->go);
    }
    return rc;
}

int tu_unpark(tu_park *pk)
{
    sem_post(&pk->go);
    pthread_join(pk->t, NULL);
    sem_destroy(&pk->reached);
    sem_destroy(&pk->go);
    return pk->rc;
}
