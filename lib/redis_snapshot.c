/*
 * redis_snapshot.c - the snapshot metadata of the Redis log (kvblock/redis.h,
 * FLEET.md section 8; redis_log.c has the follower): what a relay writes next
 * to its index snapshot (per worker the stream position, ordinal and
 * incarnation the snapshot covers), its decoding, and the load of the newest
 * snapshot (or the empty state) into a follower's new index(es).
 */
#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <string.h>
#include <xxhash.h>

#define META_MAGIC  0x4d42564bu /* "KVBM" */
#define META_HEAD   40u
#define META_WORKER 56u

/* Layout: u32 magic, u8 version (1), 3 zero bytes, u64 inc, i64 created (realtime
 * ms), u64 index length, u64 index XXH3; per worker (to the end): u8 name length,
 * the name, u8 have_pos, u8 state, u8 n_unknown, u8 0, u64 id ms, u64 id seq,
 * u64 ep, i64 seq, u32 sub, i64 n, u64 max_inc; u64 XXH3 of everything before. */
int kvb__rlog_meta_encode(const struct kvb__rlog *lg, uint64_t inc, const void *index,
                          size_t index_len, void **out, size_t *out_len)
{
    size_t size = META_HEAD + 8;
    for (uint32_t i = 0; i < lg->n; i++)
        size += 1 + strlen(lg->list[i]->name) + META_WORKER;
    uint8_t *p = malloc(size);
    if (!p)
        return -ENOMEM;
    kvb__rle_put32(p, META_MAGIC);
    p[4] = 1;
    p[5] = p[6] = p[7] = 0;
    kvb__rle_put64(p + 8, inc);
    kvb__rle_put64(p + 16, (uint64_t)(kvb__realtime_ns() / 1000000));
    kvb__rle_put64(p + 24, index_len);
    kvb__rle_put64(p + 32, XXH3_64bits(index, index_len));
    uint8_t *w8 = p + META_HEAD;
    for (uint32_t i = 0; i < lg->n; i++) {
        const struct kvb__rlog_worker *w = lg->list[i];
        size_t nl = strlen(w->name);
        w8[0] = (uint8_t)nl;
        memcpy(w8 + 1, w->name, nl);
        uint8_t *b = w8 + 1 + nl;
        b[0] = w->have_pos;
        b[1] = (uint8_t)w->state;
        b[2] = w->n_unknown;
        b[3] = 0;
        kvb__rle_put64(b + 4, w->id_ms);
        kvb__rle_put64(b + 12, w->id_seq);
        kvb__rle_put64(b + 20, w->pos.ep);
        kvb__rle_put64(b + 28, (uint64_t)w->pos.seq);
        kvb__rle_put32(b + 36, w->pos.sub);
        kvb__rle_put64(b + 40, (uint64_t)w->n);
        kvb__rle_put64(b + 48, w->max_inc);
        w8 = b + META_WORKER;
    }
    kvb_assert((size_t)(w8 - p) + 8 == size);
    size_t body = (size_t)(w8 - p);
    kvb__rle_put64(w8, XXH3_64bits(p, body));
    *out = p;
    *out_len = body + 8;
    return 0;
}

struct meta_worker {
    char name[KVB_INDEX_NAME_MAX];
    bool have_pos, n_unknown;
    kvb_stream_state state;
    uint64_t id_ms, id_seq, max_inc;
    struct kvb__rpos pos;
    int64_t n;
};

static int meta_decode(const void *buf, size_t len, uint64_t *index_len, uint64_t *index_sum,
                       struct meta_worker **out, uint32_t *n_out)
{
    const uint8_t *p = buf;
    if (len < META_HEAD + 8 || kvb__rle_get32(p) != META_MAGIC || p[4] != 1 || p[5] || p[6] || p[7])
        return -EBADMSG;
    if (kvb__rle_get64(p + len - 8) != XXH3_64bits(p, len - 8))
        return -EBADMSG;
    *index_len = kvb__rle_get64(p + 24);
    *index_sum = kvb__rle_get64(p + 32);
    size_t end = len - 8, off = META_HEAD;
    /* count workers first */
    uint32_t n = 0;
    while (off < end) {
        size_t nl = p[off];
        if (nl == 0 || nl >= KVB_INDEX_NAME_MAX || end - off < 1 + nl + META_WORKER)
            return -EBADMSG;
        off += 1 + nl + META_WORKER;
        n++;
    }
    if (off != end)
        return -EBADMSG;
    struct meta_worker *mw = calloc(n ? n : 1, sizeof *mw);
    if (!mw)
        return -ENOMEM;
    off = META_HEAD;
    for (uint32_t i = 0; i < n; i++) {
        size_t nl = p[off];
        memcpy(mw[i].name, p + off + 1, nl);
        mw[i].name[nl] = '\0';
        const uint8_t *b = p + off + 1 + nl;
        if (memchr(mw[i].name, '\0', nl) || b[0] > 1 || b[1] > KVB_STREAM_STALE ||
            b[1] == KVB_STREAM_LAGGING || b[2] > 1 || b[3]) {
            free(mw);
            return -EBADMSG;
        }
        mw[i].have_pos = b[0];
        mw[i].state = (kvb_stream_state)b[1];
        mw[i].n_unknown = b[2];
        mw[i].id_ms = kvb__rle_get64(b + 4);
        mw[i].id_seq = kvb__rle_get64(b + 12);
        mw[i].pos.ep = kvb__rle_get64(b + 20);
        mw[i].pos.seq = (int64_t)kvb__rle_get64(b + 28);
        mw[i].pos.sub = kvb__rle_get32(b + 36);
        mw[i].n = (int64_t)kvb__rle_get64(b + 40);
        mw[i].max_inc = kvb__rle_get64(b + 48);
        if (mw[i].n < -1 || mw[i].pos.seq < -1) {
            free(mw);
            return -EBADMSG;
        }
        off += 1 + nl + META_WORKER;
    }
    *out = mw;
    *n_out = n;
    return 0;
}

int kvb__rlog_load(struct kvb__rlog *lg, const struct kvb__rconn *rc, const void *meta,
                   size_t meta_len, const void *index, size_t index_len, int n_idx,
                   kvb_index *old[KVB_RLOG_IDX])
{
    uint64_t il, isum;
    struct meta_worker *mw = NULL;
    uint32_t n = 0;
    int r = meta_decode(meta, meta_len, &il, &isum, &mw, &n);
    if (r < 0)
        return r;
    if (il != index_len || isum != XXH3_64bits(index, index_len)) {
        free(mw);
        return -EBADMSG;
    }
    kvb_index *nidx[KVB_RLOG_IDX] = {NULL, NULL};
    for (int x = 0; x < n_idx && x < KVB_RLOG_IDX; x++) {
        r = kvb_index_load_mem(index, index_len, &lg->icfg, &nidx[x]);
        if (r < 0) {
            for (int y = 0; y < x; y++)
                kvb_index_destroy(nidx[y]);
            free(mw);
            return r;
        }
    }
    kvb__rlog_reset(lg);
    for (uint32_t i = 0; i < n; i++) {
        struct kvb__rlog_worker *w = kvb__rlog_get(lg, rc, mw[i].name);
        if (!w)
            continue; /* out of memory: read from 0 (holes then clear) */
        w->have_pos = mw[i].have_pos;
        w->state = mw[i].state;
        w->n_unknown = mw[i].n_unknown;
        w->id_ms = mw[i].id_ms;
        w->id_seq = mw[i].id_seq;
        w->pos = mw[i].pos;
        w->n = mw[i].n;
        w->max_inc = mw[i].max_inc;
        w->have_seen = w->have_pos;
        w->seen = w->pos;
        w->fresh = true;
    }
    free(mw);
    for (int x = 0; x < KVB_RLOG_IDX; x++) {
        old[x] = lg->idx[x];
        lg->idx[x] = x < n_idx ? nidx[x] : NULL;
    }
    if (lg->idx[0])
        kvb__rlog_ranks_from_index(lg, lg->idx[0]);
    lg->lagging = false;
    lg->reload_wanted = false;
    return 0;
}

static int empty_state(struct kvb__rlog *lg, int n_idx, kvb_index *old[KVB_RLOG_IDX])
{
    kvb_index *nidx[KVB_RLOG_IDX] = {NULL, NULL};
    int ret = 0;
    for (int x = 0; x < n_idx && x < KVB_RLOG_IDX && ret == 0; x++)
        ret = kvb_index_create(&lg->icfg, &nidx[x]);
    if (ret < 0) {
        for (int x = 0; x < KVB_RLOG_IDX; x++)
            if (nidx[x])
                kvb_index_destroy(nidx[x]);
        return ret;
    }
    kvb__rlog_reset(lg);
    for (int x = 0; x < KVB_RLOG_IDX; x++) {
        old[x] = lg->idx[x];
        lg->idx[x] = nidx[x];
    }
    lg->lagging = false;
    lg->reload_wanted = false;
    return 0;
}

int kvb__rlog_fetch_snapshot(struct kvb__rlog *lg, struct kvb__rconn *rc, int n_idx,
                             uint32_t timeout_ms, kvb_index *old[KVB_RLOG_IDX], uint64_t *bytes)
{
    char key[160];
    if (kvb__rconn_key(rc, "snapshot", NULL, key, sizeof key) < 0)
        return -EINVAL;
    const char *argv[4] = {"HMGET", key, "meta", "index"};
    size_t lens[4] = {5, strlen(key), 4, 5};
    kvb__rconn_set_timeout(rc, timeout_ms);
    redisReply *r = kvb__rconn_cmd(rc, 4, argv, lens);
    if (!r)
        return -EIO;
    kvb__rconn_set_timeout(rc, rc->io_timeout_ms);
    int ret;
    if (!kvb__rr_arr(r, 2)) {
        kvb__rconn_fail(rc);
        ret = -EPROTO;
    } else {
        bool present =
            r->element[0]->type != REDIS_REPLY_NIL && r->element[1]->type != REDIS_REPLY_NIL;
        ret = -EBADMSG;
        if (present && kvb__rr_str(r->element[0]) && kvb__rr_str(r->element[1]))
            ret = kvb__rlog_load(lg, rc, r->element[0]->str, r->element[0]->len, r->element[1]->str,
                                 r->element[1]->len, n_idx, old);
        if (ret == 0) {
            ret = 1;
            if (bytes)
                *bytes = r->element[0]->len + r->element[1]->len;
        } else if (!present || ret == -EBADMSG || ret == -EINVAL) {
            /* none, or one we refuse (corrupt, another version, another block size
             * or seed): the empty state, every stream read from its start */
            int why = present ? 2 : 0;
            ret = empty_state(lg, n_idx, old);
            if (ret == 0)
                ret = why;
        }
    }
    freeReplyObject(r);
    return ret;
}

#endif /* KVB_HAVE_REDIS */
