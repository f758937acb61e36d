/*
 * registry.c - hash -> registration record, shared by the pools of several
 * tiers (DESIGN.md section 5).
 *
 * Records live in one open-addressing table (linear probing, backward-shift
 * deletion) that doubles when it passes 1/2 load; a record exists while any
 * attached pool holds a block of its hash or while it has attachments.
 * Presence is a counter per pool, not a flag: updates are delivered after the
 * pool lock is dropped, so an "absent" from one thread may arrive after a
 * "present" from another; counting makes the final answer right whatever the
 * interleaving.
 *
 * Attachments: each record points to a singly linked list of nodes
 * {key, value, destructor, unique?} in attach order, allocated through the
 * registry's allocator (outside any pool lock, so allocating is allowed here).
 * A key is used either unique (one node) or multiple (any number of nodes) on a
 * given hash; mixing is -EEXIST. Removed nodes are unlinked under the registry
 * lock and their destructors run after it is dropped, so a destructor may call
 * back into the registry. The list pointer moves with the record when the
 * table shifts or grows (records are plain values).
 *
 * The frequency sketch is lock-free (sketch.c) and is read and touched by the
 * pools under their own locks; the registry mutex guards only the table and the
 * attached-pool list. Lock order: registry -> pool; in debug builds taking the
 * registry lock while this thread holds a pool lock is an assertion failure
 * (the lock witness of lock.h, which ranks the registry lock below pool locks).
 */
#include "registry_internal.h"
#include "lock.h"
#include "sketch.h"
#include <string.h>

struct kvb_reg_att {
    struct kvb_reg_att *next;
    const void *key;
    void *value;
    kvb_attach_dtor dtor;
    bool unique;
};

struct kvb_reg_rec {
    kvb_hash hash;
    uint32_t presence[KVB_REGISTRY_MAX_POOLS];
    struct kvb_reg_att *att; /* attachments in attach order; NULL: none */
    uint8_t used;
};

struct kvb_registry {
    struct kvb_lock mu; /* rank KVB_LOCK_REGISTRY: taken before any pool lock */
    kvb_allocator alloc;
    struct kvb_sketch *sketch;                     /* (const pointer) lock-free */
    const kvb_pool *pools[KVB_REGISTRY_MAX_POOLS]; /* (lock) attached pools by index */
    uint32_t npools;                               /* (lock) */
    struct kvb_reg_rec *tab;                       /* (lock) */
    uint32_t cap, len;                             /* (lock) */
};

/* Lock order: registry -> pool. Entering the registry with a pool lock held could
 * deadlock against a thread that goes registry -> pool; the witness (lock.h)
 * stops debug builds there. */
static void kvb_reg_lock(kvb_registry *r)
{
    kvb__lock(&r->mu);
}

static void kvb_reg_unlock(kvb_registry *r)
{
    kvb__unlock(&r->mu);
}

void kvb_registry_config_init(kvb_registry_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->capacity = 65536;
}

int kvb_registry_create(const kvb_registry_config *cfg, kvb_registry **out)
{
    if (!out)
        return -EINVAL;
    kvb_registry_config def;
    if (!cfg) {
        kvb_registry_config_init(&def);
        cfg = &def;
    }
    if ((cfg->allocator.alloc == NULL) != (cfg->allocator.free == NULL))
        return -EINVAL;
    kvb_allocator a = cfg->allocator;
    kvb__allocator_fill(&a);
    kvb_registry *r = kvb__calloc(&a, 1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->alloc = a;
    r->cap = 64;
    r->tab = kvb__calloc(&a, r->cap, sizeof *r->tab);
    int rc = r->tab
                 ? kvb__sketch_create(cfg->capacity ? cfg->capacity : 65536, true, &a, &r->sketch)
                 : -ENOMEM;
    if (rc == 0)
        rc = kvb__lock_init(&r->mu, KVB_LOCK_REGISTRY);
    if (rc) {
        kvb__sketch_destroy(r->sketch);
        kvb__free(&a, r->tab, (size_t)r->cap * sizeof *r->tab);
        kvb__free(&a, r, sizeof *r);
        return rc;
    }
    *out = r;
    return 0;
}

int kvb_registry_destroy(kvb_registry *r)
{
    if (!r)
        return -EINVAL;
    kvb_reg_lock(r);
    uint32_t n = r->npools;
    kvb_reg_unlock(r);
    if (n)
        return -EBUSY;
    kvb_allocator a = r->alloc;
    for (uint32_t i = 0; i < r->cap; i++) {
        if (!r->tab[i].used)
            continue;
        for (struct kvb_reg_att *t = r->tab[i].att, *nx; t; t = nx) {
            nx = t->next;
            if (t->dtor)
                t->dtor(t->value);
            kvb__free(&a, t, sizeof *t);
        }
    }
    kvb__lock_fini(&r->mu);
    kvb__sketch_destroy(r->sketch);
    kvb__free(&a, r->tab, (size_t)r->cap * sizeof *r->tab);
    kvb__free(&a, r, sizeof *r);
    return 0;
}

int kvb__registry_attach(kvb_registry *r, kvb_pool *p, uint32_t *index)
{
    kvb_reg_lock(r);
    int rc = -ENOSPC;
    for (uint32_t i = 0; i < KVB_REGISTRY_MAX_POOLS; i++) {
        if (!r->pools[i]) {
            r->pools[i] = p;
            r->npools++;
            *index = i;
            rc = 0;
            break;
        }
    }
    kvb_reg_unlock(r);
    return rc;
}

static uint32_t kvb_reg_home(const kvb_registry *r, kvb_hash h)
{
    return (uint32_t)(kvb__hash_mix(h) >> (64 - __builtin_ctz(r->cap)));
}

static struct kvb_reg_rec *kvb_reg_find(kvb_registry *r, kvb_hash h)
{
    uint32_t i = kvb_reg_home(r, h);
    while (r->tab[i].used) {
        if (kvb_hash_equal(r->tab[i].hash, h))
            return &r->tab[i];
        i = (i + 1) & (r->cap - 1);
    }
    return NULL;
}

static void kvb_reg_erase(kvb_registry *r, struct kvb_reg_rec *rec)
{
    uint32_t mask = r->cap - 1, i = (uint32_t)(rec - r->tab), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!r->tab[j].used)
            break;
        uint32_t home = kvb_reg_home(r, r->tab[j].hash);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            r->tab[i] = r->tab[j];
            i = j;
        }
    }
    memset(&r->tab[i], 0, sizeof r->tab[i]);
    r->len--;
}

/* Insert a fresh record for h (not present); grows the table first if needed.
 * NULL when growing failed (the update is then dropped: see the caller). */
static struct kvb_reg_rec *kvb_reg_insert(kvb_registry *r, kvb_hash h)
{
    if ((r->len + 1) * 2 > r->cap) {
        uint32_t ncap = r->cap * 2;
        struct kvb_reg_rec *nt = kvb__calloc(&r->alloc, ncap, sizeof *nt);
        if (!nt)
            return NULL;
        struct kvb_reg_rec *old = r->tab;
        uint32_t ocap = r->cap;
        r->tab = nt;
        r->cap = ncap;
        for (uint32_t i = 0; i < ocap; i++) {
            if (!old[i].used)
                continue;
            uint32_t j = kvb_reg_home(r, old[i].hash);
            while (nt[j].used)
                j = (j + 1) & (ncap - 1);
            nt[j] = old[i];
        }
        kvb__free(&r->alloc, old, (size_t)ocap * sizeof *old);
    }
    uint32_t i = kvb_reg_home(r, h);
    while (r->tab[i].used)
        i = (i + 1) & (r->cap - 1);
    memset(&r->tab[i], 0, sizeof r->tab[i]);
    r->tab[i].hash = h;
    r->tab[i].used = 1;
    r->len++;
    return &r->tab[i];
}

static bool kvb_reg_idle(const struct kvb_reg_rec *rec)
{
    if (rec->att)
        return false;
    for (uint32_t i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        if (rec->presence[i])
            return false;
    return true;
}

void kvb__registry_detach(kvb_registry *r, uint32_t index)
{
    kvb_reg_lock(r);
    r->pools[index] = NULL;
    r->npools--;
    /* a destroyed pool holds nothing: drop its presence everywhere */
    for (uint32_t i = 0; i < r->cap;) {
        struct kvb_reg_rec *rec = &r->tab[i];
        if (rec->used && rec->presence[index]) {
            rec->presence[index] = 0;
            if (kvb_reg_idle(rec)) {
                kvb_reg_erase(r, rec); /* may move a later record into slot i */
                continue;
            }
        }
        i++;
    }
    kvb_reg_unlock(r);
}

struct kvb_sketch *kvb__registry_sketch(kvb_registry *r)
{
    return r->sketch;
}

void kvb__registry_presence(kvb_registry *r, uint32_t index, const kvb_hash *hashes,
                            const int8_t *delta, uint32_t n)
{
    kvb_reg_lock(r);
    for (uint32_t i = 0; i < n; i++) {
        struct kvb_reg_rec *rec = kvb_reg_find(r, hashes[i]);
        if (delta[i] > 0) {
            if (!rec)
                rec = kvb_reg_insert(r, hashes[i]);
            if (rec) /* out of memory: presence is advisory, the pool stays exact */
                rec->presence[index]++;
        } else if (rec) {
            kvb_assert(rec->presence[index] > 0);
            if (rec->presence[index] > 0)
                rec->presence[index]--;
            if (kvb_reg_idle(rec))
                kvb_reg_erase(r, rec);
        }
    }
    kvb_reg_unlock(r);
}

int kvb_registry_present(kvb_registry *r, const kvb_hash *hashes, uint32_t n, const kvb_pool *pool,
                         bool *out)
{
    if (!r || !pool || (n && !hashes))
        return -EINVAL;
    kvb_reg_lock(r);
    uint32_t index = KVB_REGISTRY_MAX_POOLS;
    for (uint32_t i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        if (r->pools[i] == pool)
            index = i;
    if (index == KVB_REGISTRY_MAX_POOLS) {
        kvb_reg_unlock(r);
        return -EINVAL;
    }
    int count = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct kvb_reg_rec *rec = kvb_reg_find(r, hashes[i]);
        bool present = rec && rec->presence[index] > 0;
        if (out)
            out[i] = present;
        count += present;
    }
    kvb_reg_unlock(r);
    return count;
}

uint32_t kvb_registry_frequency(kvb_registry *r, kvb_hash h)
{
    return r ? kvb__sketch_estimate(r->sketch, h) : 0;
}

void kvb_registry_touch(kvb_registry *r, kvb_hash h)
{
    if (r)
        kvb__sketch_touch(r->sketch, h);
}

/* ------------------------------------------------------------------------ */
/* attachments                                                              */
/* ------------------------------------------------------------------------ */

/* Run the destructors of a detached list (registry lock NOT held) and free it. */
static void kvb_reg_att_destroy(kvb_registry *r, struct kvb_reg_att *list)
{
    while (list) {
        struct kvb_reg_att *nx = list->next;
        if (list->dtor)
            list->dtor(list->value);
        kvb__free(&r->alloc, list, sizeof *list);
        list = nx;
    }
}

/* How key is used on rec: 0 not at all, 1 unique, 2 multiple. */
static int kvb_reg_att_mode(const struct kvb_reg_rec *rec, const void *key)
{
    for (const struct kvb_reg_att *t = rec ? rec->att : NULL; t; t = t->next)
        if (t->key == key)
            return t->unique ? 1 : 2;
    return 0;
}

static int kvb_reg_attach(kvb_registry *r, kvb_hash h, const void *key, void *value,
                          kvb_attach_dtor dtor, bool unique)
{
    if (!r || !key)
        return -EINVAL;
    /* allocate before locking: the registry lock is held briefly */
    struct kvb_reg_att *node = kvb__alloc(&r->alloc, sizeof *node);
    if (!node)
        return -ENOMEM;
    *node = (struct kvb_reg_att){.key = key, .value = value, .dtor = dtor, .unique = unique};
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    int mode = kvb_reg_att_mode(rec, key);
    int rc = 0;
    if (mode == 1 || (mode == 2 && unique)) {
        rc = -EEXIST;
    } else {
        if (!rec)
            rec = kvb_reg_insert(r, h);
        if (!rec) {
            rc = -ENOMEM;
        } else {
            struct kvb_reg_att **tail = &rec->att;
            while (*tail)
                tail = &(*tail)->next;
            *tail = node;
        }
    }
    kvb_reg_unlock(r);
    if (rc)
        kvb__free(&r->alloc, node, sizeof *node);
    return rc;
}

int kvb_registry_attach_unique(kvb_registry *r, kvb_hash h, const void *key, void *value,
                               kvb_attach_dtor dtor)
{
    return kvb_reg_attach(r, h, key, value, dtor, true);
}

int kvb_registry_attach(kvb_registry *r, kvb_hash h, const void *key, void *value,
                        kvb_attach_dtor dtor)
{
    return kvb_reg_attach(r, h, key, value, dtor, false);
}

int kvb_registry_get_unique(kvb_registry *r, kvb_hash h, const void *key, void **out)
{
    if (!r || !key || !out)
        return -EINVAL;
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    int rc = -ENOENT;
    for (const struct kvb_reg_att *t = rec ? rec->att : NULL; t; t = t->next) {
        if (t->key != key)
            continue;
        if (t->unique) {
            *out = t->value;
            rc = 0;
        } else {
            rc = -EEXIST;
        }
        break;
    }
    kvb_reg_unlock(r);
    return rc;
}

int kvb_registry_get(kvb_registry *r, kvb_hash h, const void *key, void **out, uint32_t cap)
{
    if (!r || !key || (cap && !out))
        return -EINVAL;
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    uint32_t n = 0;
    for (const struct kvb_reg_att *t = rec ? rec->att : NULL; t; t = t->next) {
        if (t->key != key)
            continue;
        if (n < cap)
            out[n] = t->value;
        n++;
    }
    kvb_reg_unlock(r);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* Unlink the attachments of rec under key (all of them, or the first whose value is
 * `value` when one is true) onto *gone, in order; erase rec if it became idle. Lock held.
 * Returns how many were unlinked. */
static uint32_t kvb_reg_unlink(kvb_registry *r, struct kvb_reg_rec *rec, const void *key, bool one,
                               const void *value, struct kvb_reg_att **gone)
{
    uint32_t n = 0;
    struct kvb_reg_att **gtail = gone;
    for (struct kvb_reg_att **pp = &rec->att; *pp;) {
        struct kvb_reg_att *t = *pp;
        if (t->key != key || (one && t->value != value)) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        t->next = NULL;
        *gtail = t;
        gtail = &t->next;
        n++;
        if (one)
            break;
    }
    if (n && kvb_reg_idle(rec))
        kvb_reg_erase(r, rec);
    return n;
}

int kvb_registry_detach(kvb_registry *r, kvb_hash h, const void *key)
{
    if (!r || !key)
        return -EINVAL;
    struct kvb_reg_att *gone = NULL;
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    uint32_t n = rec ? kvb_reg_unlink(r, rec, key, false, NULL, &gone) : 0;
    kvb_reg_unlock(r);
    kvb_reg_att_destroy(r, gone);
    if (!n)
        return -ENOENT;
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

int kvb_registry_detach_value(kvb_registry *r, kvb_hash h, const void *key, void *value)
{
    if (!r || !key)
        return -EINVAL;
    struct kvb_reg_att *gone = NULL;
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    uint32_t n = rec ? kvb_reg_unlink(r, rec, key, true, value, &gone) : 0;
    kvb_reg_unlock(r);
    kvb_reg_att_destroy(r, gone);
    return n ? 0 : -ENOENT;
}

int kvb_registry_take_unique(kvb_registry *r, kvb_hash h, const void *key, void **out)
{
    if (!r || !key || !out)
        return -EINVAL;
    struct kvb_reg_att *gone = NULL;
    kvb_reg_lock(r);
    struct kvb_reg_rec *rec = kvb_reg_find(r, h);
    int mode = kvb_reg_att_mode(rec, key);
    int rc = mode == 1 ? 0 : mode == 2 ? -EEXIST : -ENOENT;
    if (rc == 0)
        kvb_reg_unlink(r, rec, key, false, NULL, &gone);
    kvb_reg_unlock(r);
    if (gone) {
        *out = gone->value; /* handed back: no destructor */
        kvb__free(&r->alloc, gone, sizeof *gone);
    }
    return rc;
}

uint32_t kvb_registry_record_count(kvb_registry *r)
{
    if (!r)
        return 0;
    kvb_reg_lock(r);
    uint32_t n = r->len;
    kvb_reg_unlock(r);
    return n;
}
