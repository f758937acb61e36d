/*
 * redis_log.c - the log follower shared by replicas and standby relays
 * (kvblock/redis.h, FLEET.md section 8): it reads every worker's stream with
 * XREAD, checks each entry and applies it to one index (a replica's) or two
 * (a standby relay's index and its shadow), keeps the position every stream
 * was read to; the snapshot metadata that records those positions is
 * redis_snapshot.c.
 *
 * Rules per entry of a worker's stream, in this order:
 *  1. ordinal: n must be the last n + 1 (0 for a stream never read). Lower: the
 *     stream went back (a Redis restart lost entries we had read); higher:
 *     entries vanished before we read them (trimmed behind a newer snapshot,
 *     or lost). Either asks the owner to reload the snapshot and read again.
 *     When that cannot help (the same hole right after reloads) the worker is
 *     cleared (RESYNCING) and the entry accepted: never stale, only forgetful.
 *  2. incarnation: below the newest seen on this stream: skipped (fenced).
 *  3. position (ep, seq, sub) at or below the last applied: skipped (duplicate).
 *  4. decode (strict; fields and the encoded position must agree); an entry that
 *     does not decode is counted and clears its worker (RESYNCING).
 *  5. apply: BATCH -> kvb_index_apply on (worker, dp_rank), the stream created
 *     on first sight; CLEAR -> kvb_index_stream_clear of every rank; STALE /
 *     LIVE -> the ranks' state; DROP -> kvb_index_worker_remove. The worker's
 *     state as the log says it is remembered, so that LAGGING (Redis away) can
 *     be put on and taken off without losing it.
 */
#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <string.h>
#include <xxhash.h>

/* ---- workers ---------------------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
    return (uint32_t)XXH3_64bits(s, strlen(s));
}

int kvb__rlog_init(struct kvb__rlog *lg, const kvb_index_config *icfg)
{
    memset(lg, 0, sizeof *lg);
    lg->icfg = *icfg;
    lg->cap = 64;
    lg->w = calloc(lg->cap, sizeof *lg->w);
    lg->list_cap = 32;
    lg->list = calloc(lg->list_cap, sizeof *lg->list);
    if (!lg->w || !lg->list) {
        free(lg->w);
        free(lg->list);
        return -ENOMEM;
    }
    return 0;
}

static void worker_free(struct kvb__rlog_worker *w)
{
    if (w) {
        free(w->ranks);
        free(w);
    }
}

void kvb__rlog_reset(struct kvb__rlog *lg)
{
    for (uint32_t i = 0; i < lg->n; i++)
        worker_free(lg->list[i]);
    memset(lg->w, 0, sizeof *lg->w * lg->cap);
    lg->n = 0;
}

void kvb__rlog_fini(struct kvb__rlog *lg)
{
    if (!lg->w)
        return;
    kvb__rlog_reset(lg);
    free(lg->w);
    free(lg->list);
    lg->w = NULL;
    lg->list = NULL;
}

struct kvb__rlog_worker *kvb__rlog_find(struct kvb__rlog *lg, const char *name)
{
    uint32_t m = lg->cap - 1;
    for (uint32_t i = name_hash(name) & m;; i = (i + 1) & m) {
        struct kvb__rlog_worker *w = lg->w[i];
        if (!w)
            return NULL;
        if (strcmp(w->name, name) == 0)
            return w;
    }
}

static int map_put(struct kvb__rlog_worker **tab, uint32_t cap, struct kvb__rlog_worker *w)
{
    uint32_t m = cap - 1;
    for (uint32_t i = name_hash(w->name) & m;; i = (i + 1) & m) {
        if (!tab[i]) {
            tab[i] = w;
            return 0;
        }
    }
}

struct kvb__rlog_worker *kvb__rlog_get(struct kvb__rlog *lg, const struct kvb__rconn *rc,
                                       const char *name)
{
    struct kvb__rlog_worker *w = kvb__rlog_find(lg, name);
    if (w)
        return w;
    size_t nl = strlen(name);
    if (nl == 0 || nl >= KVB_INDEX_NAME_MAX)
        return NULL;
    if ((lg->n + 1) * 2 > lg->cap) {
        uint32_t ncap = lg->cap * 2;
        struct kvb__rlog_worker **nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return NULL;
        for (uint32_t i = 0; i < lg->n; i++)
            map_put(nt, ncap, lg->list[i]);
        free(lg->w);
        lg->w = nt;
        lg->cap = ncap;
    }
    if (lg->n == lg->list_cap) {
        struct kvb__rlog_worker **nl2 = realloc(lg->list, sizeof *nl2 * lg->list_cap * 2);
        if (!nl2)
            return NULL;
        lg->list = nl2;
        lg->list_cap *= 2;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    memcpy(w->name, name, nl + 1);
    int kl = kvb__rconn_key(rc, "stream:", name, w->key, sizeof w->key);
    if (kl < 0) {
        free(w);
        return NULL;
    }
    w->key_len = (size_t)kl;
    w->n = -1;
    w->head_n = -1;
    w->fresh = true;
    w->state = KVB_STREAM_LIVE;
    map_put(lg->w, lg->cap, w);
    lg->list[lg->n++] = w;
    return w;
}

bool kvb__rlog_name_of_key(const struct kvb__rconn *rc, const char *key, size_t len,
                           char name[KVB_INDEX_NAME_MAX])
{
    static const char sfx[] = "stream:";
    size_t pl = rc->prefix_len, sl = sizeof sfx - 1;
    if (!key || len <= pl + sl || memcmp(key, rc->prefix, pl) != 0 ||
        memcmp(key + pl, sfx, sl) != 0)
        return false;
    size_t nl = len - pl - sl;
    if (nl >= KVB_INDEX_NAME_MAX || memchr(key + pl + sl, '\0', nl))
        return false;
    memcpy(name, key + pl + sl, nl);
    name[nl] = '\0';
    return true;
}

static int rank_add(struct kvb__rlog_worker *w, int64_t rank, kvb_index_hashes_kind hk, uint32_t bs)
{
    for (uint32_t i = 0; i < w->n_ranks; i++)
        if (w->ranks[i].rank == rank)
            return 0;
    if (w->n_ranks == w->cap_ranks) {
        uint32_t nc = w->cap_ranks ? w->cap_ranks * 2 : 4;
        struct kvb__rlog_rank *nr = realloc(w->ranks, sizeof *nr * nc);
        if (!nr)
            return -ENOMEM;
        w->ranks = nr;
        w->cap_ranks = nc;
    }
    w->ranks[w->n_ranks++] = (struct kvb__rlog_rank){.rank = rank, .hashes = hk, .block_size = bs};
    return 0;
}

int kvb__rlog_ranks_from_index(struct kvb__rlog *lg, kvb_index *idx)
{
    int n = kvb_index_streams(idx, NULL, 0);
    if (n <= 0)
        return n;
    uint32_t *ids = malloc(sizeof *ids * (size_t)n);
    if (!ids)
        return -ENOMEM;
    int m = kvb_index_streams(idx, ids, (uint32_t)n);
    if (m > n)
        m = n;
    for (int i = 0; i < m; i++) {
        kvb_index_stream_info si;
        if (kvb_index_stream_info_get(idx, ids[i], &si) < 0)
            continue;
        struct kvb__rlog_worker *w = kvb__rlog_find(lg, si.worker);
        if (w)
            rank_add(w, si.dp_rank, si.hashes, si.block_size);
    }
    free(ids);
    return 0;
}

/* ---- applying ------------------------------------------------------------------- */

static void each_rank(struct kvb__rlog *lg, struct kvb__rlog_worker *w,
                      void (*fn)(kvb_index *, uint32_t, const void *), const void *arg)
{
    for (int x = 0; x < KVB_RLOG_IDX; x++) {
        kvb_index *idx = lg->idx[x];
        if (!idx)
            continue;
        for (uint32_t i = 0; i < w->n_ranks; i++) {
            uint32_t sid;
            if (kvb_index_stream_find(idx, w->name, w->ranks[i].rank, &sid) == 0)
                fn(idx, sid, arg);
        }
    }
}

static void do_clear(kvb_index *idx, uint32_t sid, const void *arg)
{
    kvb_index_stream_clear(idx, sid, *(const kvb_stream_state *)arg);
}

static void do_state(kvb_index *idx, uint32_t sid, const void *arg)
{
    kvb_index_stream_set_state(idx, sid, *(const kvb_stream_state *)arg);
}

static void do_restart(kvb_index *idx, uint32_t sid, const void *arg)
{
    (void)arg;
    kvb_index_stream_count(idx, sid, KVB_COUNT_RESTARTS, 1);
}

static void clear_worker(struct kvb__rlog *lg, struct kvb__rlog_worker *w, kvb_stream_state st)
{
    each_rank(lg, w, do_clear, &st);
    w->state = st;
    if (lg->lagging && st != KVB_STREAM_STALE) {
        kvb_stream_state lag = KVB_STREAM_LAGGING;
        each_rank(lg, w, do_state, &lag);
    }
}

/* The state an index stream shows: the log's, or LAGGING while cut off. */
static kvb_stream_state shown(const struct kvb__rlog *lg, kvb_stream_state st)
{
    return lg->lagging && st != KVB_STREAM_STALE ? KVB_STREAM_LAGGING : st;
}

void kvb__rlog_apply_decoded(struct kvb__rlog *lg, struct kvb__rlog_worker *w,
                             const kvb_redis_entry *e)
{
    kvb_stream_state prev = w->state;
    switch (e->kind) {
    case KVB_REDIS_ENTRY_BATCH: {
        if (rank_add(w, e->dp_rank, e->hashes, e->block_size) < 0) {
            clear_worker(lg, w, KVB_STREAM_RESYNCING); /* the batch cannot be held */
            return;
        }
        bool lost = false;
        for (int x = 0; x < KVB_RLOG_IDX; x++) {
            kvb_index *idx = lg->idx[x];
            if (!idx)
                continue;
            uint32_t sid;
            bool created = false;
            int r = kvb_index_stream_find(idx, w->name, e->dp_rank, &sid);
            if (r == -ENOENT) {
                kvb_index_stream_config sc = {.name = w->name,
                                              .dp_rank = e->dp_rank,
                                              .hashes = e->hashes,
                                              .block_size = e->block_size};
                r = kvb_index_stream_add(idx, &sc, &sid);
                created = r == 0;
                if (r == -EEXIST)
                    r = 0;
            }
            if (r < 0)
                continue; /* no stream (index full): nothing of it is held */
            r = kvb_index_apply(idx, sid, e->events, e->n_events, e->seq);
            if (r == -ENOMEM) {
                lost = true;
                continue;
            }
            if (r < 0) {
                uint32_t d[KVB_DROP_COUNT] = {0};
                d[KVB_DROP_MALFORMED] = 1;
                kvb_index_stream_drop(idx, sid, d);
                continue;
            }
            bool any = false;
            for (int k = 0; k < KVB_DROP_COUNT; k++)
                any |= e->dropped[k] != 0;
            if (any)
                kvb_index_stream_drop(idx, sid, e->dropped);
            if ((created || lg->lagging) && shown(lg, e->state) != KVB_STREAM_LIVE)
                kvb_index_stream_set_state(idx, sid, shown(lg, e->state));
        }
        if (lost) {
            clear_worker(lg, w, KVB_STREAM_RESYNCING);
            return;
        }
        w->state = e->state;
        if (prev != e->state && !lg->lagging) {
            kvb_stream_state st = e->state;
            each_rank(lg, w, do_state, &st);
        }
        return;
    }
    case KVB_REDIS_ENTRY_CLEAR:
        clear_worker(lg, w, e->state);
        if (e->reason == KVB_REDIS_CLEAR_RESTART)
            each_rank(lg, w, do_restart, NULL);
        return;
    case KVB_REDIS_ENTRY_STALE:
    case KVB_REDIS_ENTRY_LIVE: {
        w->state = e->state;
        kvb_stream_state st = shown(lg, e->state);
        each_rank(lg, w, do_state, &st);
        return;
    }
    case KVB_REDIS_ENTRY_DROP:
        for (int x = 0; x < KVB_RLOG_IDX; x++)
            if (lg->idx[x])
                kvb_index_worker_remove(lg->idx[x], w->name);
        w->n_ranks = 0;
        w->state = KVB_STREAM_LIVE;
        return;
    }
}

void kvb__rlog_set_lagging(struct kvb__rlog *lg, bool lagging)
{
    if (lg->lagging == lagging)
        return;
    lg->lagging = lagging;
    for (uint32_t i = 0; i < lg->n; i++) {
        struct kvb__rlog_worker *w = lg->list[i];
        kvb_stream_state st = shown(lg, w->state);
        each_rank(lg, w, do_state, &st);
    }
}

bool kvb__rlog_fields(const redisReply *entry, struct kvb__rfields *f)
{
    memset(f, 0, sizeof *f);
    if (!kvb__rr_arr(entry, 2) || !kvb__rr_str(entry->element[0]))
        return false;
    if (!kvb__parse_id(entry->element[0]->str, entry->element[0]->len, &f->id_ms, &f->id_seq))
        return false;
    const redisReply *fl = entry->element[1];
    if (fl->type == REDIS_REPLY_NIL)
        return true; /* a deleted entry in some replies: no fields */
    if (!kvb__rr_arr(fl, 0))
        return false;
    bool ep = false, seq = false, sub = false;
    for (size_t i = 0; i + 1 < fl->elements; i += 2) {
        const redisReply *k = fl->element[i], *v = fl->element[i + 1];
        if (!kvb__rr_str(k) || !kvb__rr_str(v))
            continue;
        int64_t x;
        if (k->len == 5 && memcmp(k->str, "batch", 5) == 0) {
            f->batch = v->str;
            f->batch_len = v->len;
        } else if (k->len == 3 && memcmp(k->str, "seq", 3) == 0) {
            seq = kvb__parse_i64(v->str, v->len, &x) && x >= -1;
            f->pos.seq = x;
        } else if (k->len == 2 && memcmp(k->str, "ep", 2) == 0) {
            ep = kvb__parse_i64(v->str, v->len, &x) && x >= 0;
            f->pos.ep = (uint64_t)x;
        } else if (k->len == 3 && memcmp(k->str, "sub", 3) == 0) {
            sub = kvb__parse_i64(v->str, v->len, &x) && x >= 0 && x < ((int64_t)1 << 31);
            f->pos.sub = (uint32_t)x;
        } else if (k->len == 3 && memcmp(k->str, "inc", 3) == 0) {
            f->have_inc = kvb__parse_i64(v->str, v->len, &x) && x >= 0;
            f->inc = (uint64_t)x;
        } else if (k->len == 1 && k->str[0] == 'n') {
            f->have_n = kvb__parse_i64(v->str, v->len, &x) && x >= 0;
            f->n = x;
        }
    }
    f->have_pos = ep && seq && sub;
    return true;
}

void kvb__rlog_apply_own(struct kvb__rlog *lg, struct kvb__rlog_worker *w, const kvb_redis_entry *e,
                         uint64_t inc, int64_t n, uint64_t id_ms, uint64_t id_seq)
{
    kvb__rlog_apply_decoded(lg, w, e);
    w->pos = (struct kvb__rpos){e->ep, e->seq, e->sub};
    w->have_pos = true;
    w->seen = w->pos;
    w->have_seen = true;
    w->n = n;
    w->id_ms = id_ms;
    w->id_seq = id_seq;
    if (inc > w->max_inc)
        w->max_inc = inc;
    w->fresh = false;
    lg->applied++;
}

/* A hole that reloading cannot cure: forget the worker's state, take the entry. */
static void accept_hole(struct kvb__rlog *lg, struct kvb__rlog_worker *w)
{
    clear_worker(lg, w, KVB_STREAM_RESYNCING);
    w->have_pos = false;
    w->max_inc = 0;
}

int kvb__rlog_entry(struct kvb__rlog *lg, struct kvb__rlog_worker *w, const redisReply *entry)
{
    struct kvb__rfields f;
    if (!kvb__rlog_fields(entry, &f))
        return -EPROTO;
    lg->entries++;
    if (!f.have_n || !f.have_inc || !f.have_pos || !f.batch) {
        /* not one of our entries: never trusted; the worker's state is unknown */
        lg->corrupt++;
        clear_worker(lg, w, KVB_STREAM_RESYNCING);
        w->id_ms = f.id_ms;
        w->id_seq = f.id_seq;
        w->n_unknown = true;
        return 0;
    }
    if (!w->n_unknown && f.n != w->n + 1) {
        if (f.n <= w->n)
            lg->regressions++;
        else
            lg->holes++;
        if (!w->fresh || lg->fresh_holes < 2) {
            if (w->fresh)
                lg->fresh_holes++;
            lg->reload_wanted = true;
            return 1;
        }
        accept_hole(lg, w);
    }
    w->n_unknown = false;
    w->fresh = false;
    w->n = f.n;
    w->have_seen = true;
    w->seen = f.pos;
    w->id_ms = f.id_ms;
    w->id_seq = f.id_seq;
    if (f.inc < w->max_inc) {
        lg->fenced++;
        return 0;
    }
    w->max_inc = f.inc;
    if (w->have_pos && kvb__rpos_cmp(f.pos, w->pos) <= 0) {
        lg->duplicates++;
        return 0;
    }
    kvb_redis_entry e;
    int r = kvb_redis_entry_decode(f.batch, f.batch_len, &e);
    if (r == 0 && (e.ep != f.pos.ep || e.seq != f.pos.seq || e.sub != f.pos.sub)) {
        kvb_redis_entry_fini(&e);
        r = -EBADMSG;
    }
    w->pos = f.pos;
    w->have_pos = true;
    if (r < 0) {
        /* corrupt (or no memory to decode it): counted, never trusted */
        lg->corrupt++;
        clear_worker(lg, w, KVB_STREAM_RESYNCING);
        return 0;
    }
    kvb__rlog_apply_decoded(lg, w, &e);
    if (e.relay_ns > 0) {
        int64_t lag = kvb__realtime_ns() - e.relay_ns;
        lg->last_apply_lag_ns = lag;
        if (lag > lg->max_apply_lag_ns)
            lg->max_apply_lag_ns = lag;
        w->last_relay_ns = e.relay_ns;
    }
    kvb_redis_entry_fini(&e);
    lg->applied++;
    return 0;
}

/* ---- reading -------------------------------------------------------------------- */

int kvb__rlog_read(struct kvb__rlog *lg, struct kvb__rconn *rc, uint32_t count, uint32_t block_ms,
                   bool *full)
{
    *full = false;
    if (!lg->n)
        return 0;
    size_t argc = 6 + 2 * (size_t)lg->n;
    const char **argv = malloc(sizeof *argv * argc);
    size_t *lens = malloc(sizeof *lens * argc);
    char(*ids)[48] = malloc(sizeof *ids * lg->n);
    if (!argv || !lens || !ids) {
        free(argv);
        free(lens);
        free(ids);
        return -ENOMEM;
    }
    char cnt[16], blk[16];
    snprintf(cnt, sizeof cnt, "%u", count ? count : 1000);
    snprintf(blk, sizeof blk, "%u", block_ms);
    size_t a = 0;
    argv[a++] = "XREAD";
    argv[a++] = "COUNT";
    argv[a++] = cnt;
    if (block_ms) {
        argv[a++] = "BLOCK";
        argv[a++] = blk;
    }
    argv[a++] = "STREAMS";
    for (uint32_t i = 0; i < lg->n; i++) {
        argv[a] = lg->list[i]->key;
        lens[a++] = lg->list[i]->key_len;
    }
    for (uint32_t i = 0; i < lg->n; i++) {
        kvb__fmt_id(lg->list[i]->id_ms, lg->list[i]->id_seq, ids[i], sizeof ids[i]);
        argv[a++] = ids[i];
    }
    size_t first_key = block_ms ? 6 : 4;
    for (size_t i = 0; i < a; i++)
        if (i < first_key || i >= first_key + lg->n)
            lens[i] = strlen(argv[i]);
        else
            lens[i] = lg->list[i - first_key]->key_len;
    redisReply *r = kvb__rconn_cmd(rc, (int)a, argv, lens);
    free(argv);
    free(lens);
    free(ids);
    if (!r)
        return -EIO;
    int got = 0;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return 0;
    }
    if (!kvb__rr_arr(r, 0)) {
        freeReplyObject(r);
        kvb__rconn_fail(rc); /* an error reply or a shape we do not know */
        return -EPROTO;
    }
    for (size_t s = 0; s < r->elements && !lg->reload_wanted; s++) {
        const redisReply *sr = r->element[s];
        char name[KVB_INDEX_NAME_MAX];
        if (!kvb__rr_arr(sr, 2) || !kvb__rr_str(sr->element[0]) ||
            !kvb__rlog_name_of_key(rc, sr->element[0]->str, sr->element[0]->len, name))
            continue;
        struct kvb__rlog_worker *w = kvb__rlog_find(lg, name);
        const redisReply *es = sr->element[1];
        if (!w || !kvb__rr_arr(es, 0))
            continue;
        if (es->elements >= (count ? count : 1000))
            *full = true;
        for (size_t e = 0; e < es->elements; e++) {
            int rr = kvb__rlog_entry(lg, w, es->element[e]);
            if (rr < 0) {
                freeReplyObject(r);
                kvb__rconn_fail(rc);
                return rr;
            }
            if (rr > 0)
                break;
            got++;
        }
    }
    freeReplyObject(r);
    return got;
}

int kvb__rlog_scan(struct kvb__rlog *lg, struct kvb__rconn *rc)
{
    char pattern[160];
    if (kvb__rconn_key(rc, "stream:", "*", pattern, sizeof pattern) < 0)
        return -EINVAL;
    char cursor[32] = "0";
    int added = 0;
    for (int rounds = 0; rounds < 100000; rounds++) {
        const char *argv[8] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000", "TYPE", "stream"};
        size_t lens[8];
        for (int i = 0; i < 8; i++)
            lens[i] = strlen(argv[i]);
        redisReply *r = kvb__rconn_cmd(rc, 8, argv, lens);
        if (!r)
            return -EIO;
        if (!kvb__rr_arr(r, 2) || !kvb__rr_str(r->element[0]) ||
            r->element[0]->len >= sizeof cursor || !kvb__rr_arr(r->element[1], 0)) {
            freeReplyObject(r);
            kvb__rconn_fail(rc);
            return -EPROTO;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            char name[KVB_INDEX_NAME_MAX];
            if (!kvb__rr_str(keys->element[i]) ||
                !kvb__rlog_name_of_key(rc, keys->element[i]->str, keys->element[i]->len, name))
                continue;
            if (kvb__rlog_find(lg, name))
                continue;
            if (kvb__rlog_get(lg, rc, name))
                added++;
        }
        freeReplyObject(r);
        if (strcmp(cursor, "0") == 0)
            break;
    }
    return added;
}

int kvb__rlog_heads(struct kvb__rlog *lg, struct kvb__rconn *rc)
{
    if (!rc->c)
        return -ENOTCONN;
    for (uint32_t i = 0; i < lg->n; i++) {
        const char *argv[5] = {"XREVRANGE", lg->list[i]->key, "+", "-", "COUNT"};
        const char *argv6[6] = {argv[0], argv[1], argv[2], argv[3], argv[4], "1"};
        size_t lens[6] = {9, lg->list[i]->key_len, 1, 1, 5, 1};
        if (redisAppendCommandArgv(rc->c, 6, argv6, lens) != REDIS_OK) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
    }
    int err = 0;
    for (uint32_t i = 0; i < lg->n; i++) {
        void *rp = NULL;
        if (redisGetReply(rc->c, &rp) != REDIS_OK || !rp) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
        redisReply *r = rp;
        struct kvb__rlog_worker *w = lg->list[i];
        if (!kvb__rr_arr(r, 0)) {
            err = -EPROTO;
        } else if (r->elements == 0) {
            /* the stream is gone: it held entries we read */
            if (w->n >= 0 && !w->n_unknown) {
                lg->regressions++;
                if (!w->fresh || lg->fresh_holes < 2) {
                    if (w->fresh)
                        lg->fresh_holes++;
                    lg->reload_wanted = true;
                }
            }
            w->head_n = -1;
        } else {
            struct kvb__rfields f;
            if (kvb__rlog_fields(r->element[0], &f) && f.have_n) {
                w->head_n = f.n;
                w->head_ms = f.id_ms;
                if (f.n < w->n && !w->n_unknown) {
                    lg->regressions++;
                    if (!w->fresh || lg->fresh_holes < 2) {
                        if (w->fresh)
                            lg->fresh_holes++;
                        lg->reload_wanted = true;
                    }
                }
            }
        }
        freeReplyObject(r);
    }
    if (err < 0)
        kvb__rconn_fail(rc);
    return err;
}

void kvb__rlog_lag(const struct kvb__rlog *lg, uint64_t *entries, double *ms)
{
    uint64_t e = 0;
    double m = 0;
    for (uint32_t i = 0; i < lg->n; i++) {
        const struct kvb__rlog_worker *w = lg->list[i];
        if (w->head_n > w->n) {
            e += (uint64_t)(w->head_n - w->n);
            double d = w->head_ms > w->id_ms ? (double)(w->head_ms - w->id_ms) : 0;
            if (d > m)
                m = d;
        }
    }
    *entries = e;
    *ms = m;
}

#endif /* KVB_HAVE_REDIS */
