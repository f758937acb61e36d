/*
 * redis_relay_append.c - the relay's appends (FLEET.md section 8; redis_relay.c
 * has the design): the queue the subscriber callback fills, one APPEND script
 * call per worker and round (pipelined), the retention ring of appended
 * entries, and the verification of every stream's last entry after an error,
 * a refusal or a re-acquisition: our own entries that Redis did apply are
 * marked done, entries Redis lost are appended again from the retention ring
 * or replaced by a clear (CLEAR_LOST), and another relay's entry fences us.
 * Everything here runs on the relay thread.
 */
#include "redis_relay_internal.h"

#ifdef KVB_HAVE_REDIS

/* ---- queue (relay thread) ------------------------------------------------------------ */

/* Pop done items from the head; fenced: every item is done. */
void kvb__relay_pop_done(kvb_redis_relay *r, bool all)
{
    pthread_mutex_lock(&r->mu);
    uint64_t popped = 0;
    while (r->count) {
        struct relay_item *it = &r->ring[r->head];
        if (!it->done && !all)
            break;
        if (!it->done)
            r->st.discarded++;
        free(it->blob);
        r->bytes -= it->len;
        it->blob = NULL;
        r->head = (r->head + 1) % r->ring_cap;
        r->count--;
        popped++;
    }
    r->done_total += popped;
    if (popped)
        pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
}

static void retain(kvb_redis_relay *r, const char *name, struct relay_item *it,
                   struct kvb__rpos prev, bool have_prev);

/* Items of w with a position at or below p were appended (found after an error). */
static void mark_appended_upto(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p)
{
    pthread_mutex_lock(&r->mu);
    uint32_t cnt = r->count, head = r->head;
    pthread_mutex_unlock(&r->mu);
    /* only the relay thread changes done flags and pops: reading the ring's
     * first cnt items without the lock is safe (the producer only appends) */
    for (uint32_t i = 0; i < cnt; i++) {
        struct relay_item *it = &r->ring[(head + i) % r->ring_cap];
        if (it->done || strcmp(it->w->name, lw->name) != 0)
            continue;
        if (kvb__rpos_cmp(it->pos, p) > 0)
            break;
        struct kvb__rpos prev = lw->pos;
        bool have_prev = lw->have_pos;
        kvb_redis_entry e;
        if (kvb_redis_entry_decode(it->blob, it->len, &e) == 0) {
            kvb__rlog_apply_decoded(&r->lg, lw, &e);
            kvb_redis_entry_fini(&e);
        }
        lw->pos = it->pos;
        lw->have_pos = true;
        retain(r, lw->name, it, prev, have_prev);
        it->done = true;
        pthread_mutex_lock(&r->mu);
        r->st.discarded++;
        pthread_mutex_unlock(&r->mu);
    }
}

/* ---- stream heads with fields -------------------------------------------------------- */

int kvb__relay_read_lasts(kvb_redis_relay *r, struct last_entry *out)
{
    struct kvb__rconn *rc = &r->rc;
    if (!rc->c)
        return -ENOTCONN;
    for (uint32_t i = 0; i < r->lg.n; i++) {
        const char *argv[6] = {"XREVRANGE", r->lg.list[i]->key, "+", "-", "COUNT", "1"};
        size_t lens[6] = {9, r->lg.list[i]->key_len, 1, 1, 5, 1};
        if (redisAppendCommandArgv(rc->c, 6, argv, lens) != REDIS_OK) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
    }
    for (uint32_t i = 0; i < r->lg.n; i++) {
        void *rp = NULL;
        if (redisGetReply(rc->c, &rp) != REDIS_OK || !rp) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
        redisReply *rep = rp;
        memset(&out[i], 0, sizeof out[i]);
        if (kvb__rr_arr(rep, 1)) {
            out[i].exists = true;
            out[i].ok = kvb__rlog_fields(rep->element[0], &out[i].f) && out[i].f.have_n &&
                        out[i].f.have_pos && out[i].f.have_inc;
            out[i].f.batch = NULL;
        }
        freeReplyObject(rep);
    }
    return 0;
}

/* Append one clear (CLEAR_LOST) for lw at position p, right now. */
static int append_lost_clear(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p);

/* Redis lost lw's entries after position p (have: the stream still has p; !have: the
 * stream is gone): append them again from the retention ring, same positions and
 * bytes, if it still holds the entry right after p. 0 done, -ENOENT (not retained:
 * the caller writes a clear instead), 1 not the holder, negative errno. The shadow
 * already holds their effects: only the ordinals and ids are updated. */
static int reappend(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p, bool have)
{
    uint32_t first = UINT32_MAX, n = 0;
    for (uint32_t i = 0; i < r->ret_count; i++) {
        struct retained *x = &r->ret[(r->ret_head + i) % r->ret_cap];
        if (strcmp(x->name, lw->name) != 0)
            continue;
        if (first == UINT32_MAX) {
            if (x->have_prev != have || (have && kvb__rpos_cmp(x->prev, p) != 0))
                continue;
            first = i;
        }
        n++;
    }
    if (first == UINT32_MAX)
        return -ENOENT;
    char lease[160], incr[160], inc[32];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    size_t nargs = 3 + 4 * (size_t)n;
    const char **args = malloc(sizeof *args * nargs);
    size_t *lens = malloc(sizeof *lens * nargs);
    char(*nums)[3][24] = malloc(sizeof *nums * n);
    if (!args || !lens || !nums) {
        free(args);
        free(lens);
        free(nums);
        return -ENOMEM;
    }
    args[0] = lease;
    lens[0] = strlen(lease);
    args[1] = lw->key;
    lens[1] = lw->key_len;
    args[2] = inc;
    lens[2] = strlen(inc);
    size_t a = 3;
    uint32_t k = 0;
    struct kvb__rpos last = p;
    for (uint32_t i = first; i < r->ret_count; i++) {
        struct retained *x = &r->ret[(r->ret_head + i) % r->ret_cap];
        if (strcmp(x->name, lw->name) != 0)
            continue;
        snprintf(nums[k][0], 24, "%llu", (unsigned long long)x->pos.ep);
        snprintf(nums[k][1], 24, "%lld", (long long)x->pos.seq);
        snprintf(nums[k][2], 24, "%u", x->pos.sub);
        for (int j = 0; j < 3; j++) {
            args[a] = nums[k][j];
            lens[a++] = strlen(nums[k][j]);
        }
        args[a] = x->blob;
        lens[a++] = x->len;
        last = x->pos;
        k++;
    }
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_APPEND, 2, (int)a, args, lens);
    free(args);
    free(lens);
    free(nums);
    if (!rep)
        return -EIO;
    int ret = -EPROTO;
    long long c, ln;
    if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c == (long long)k &&
        kvb__rr_int(rep->element[2], &ln)) {
        uint64_t ms = 0, sq = 0;
        kvb__parse_id(rep->element[1]->str, rep->element[1]->len, &ms, &sq);
        lw->n = ln;
        lw->pos = lw->seen = last;
        lw->have_pos = lw->have_seen = true;
        lw->id_ms = ms;
        lw->id_seq = sq;
        pthread_mutex_lock(&r->mu);
        r->st.reappended += k;
        r->st.appended += k;
        pthread_mutex_unlock(&r->mu);
        ret = 0;
    } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
        ret = 1;
    }
    freeReplyObject(rep);
    return ret;
}

/* After an error, a refusal or a re-acquisition: is every stream's last entry ours
 * and where we think it is? 0 yes (fixed up), 1 fenced, negative errno. */
int kvb__relay_verify_streams(kvb_redis_relay *r)
{
    if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
        return -EIO;
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return -ENOMEM;
    int ret = kvb__relay_read_lasts(r, le);
    for (uint32_t i = 0; ret == 0 && i < r->lg.n; i++) {
        struct kvb__rlog_worker *w = r->lg.list[i];
        if (!le[i].exists) {
            if (w->n >= 0) { /* the stream vanished (Redis lost it) */
                w->n = -1;
                w->have_pos = w->have_seen = false;
                ret = reappend(r, w, (struct kvb__rpos){0, -1, 0}, false);
                if (ret == -ENOENT)
                    ret = append_lost_clear(r, w, (struct kvb__rpos){0, -1, 0});
            }
            continue;
        }
        if (!le[i].ok) {
            ret = 1; /* not an entry of ours at the end: someone else writes here */
            break;
        }
        const struct kvb__rfields *f = &le[i].f;
        if (!is_mine(r, f->inc)) {
            if (f->inc > r->inc || f->n > w->n) {
                ret = 1; /* another relay appended */
                break;
            }
            /* an older relay's entry at the end while we had appended more: Redis
             * lost ours */
        }
        if (f->n == w->n && w->have_pos && kvb__rpos_cmp(f->pos, w->pos) == 0)
            continue;
        if (f->n > w->n && is_mine(r, f->inc)) {
            /* appends whose replies we lost were applied */
            mark_appended_upto(r, w, f->pos);
            w->n = f->n;
            w->pos = w->seen = f->pos;
            w->have_pos = w->have_seen = true;
            w->id_ms = f->id_ms;
            w->id_seq = f->id_seq;
            continue;
        }
        if (f->n > w->n) {
            ret = 1;
            break;
        }
        /* below what we appended: Redis lost entries; a clear makes every reader
         * drop what the log no longer says */
        w->n = f->n;
        w->pos = w->seen = f->pos;
        w->have_pos = w->have_seen = true;
        w->id_ms = f->id_ms;
        w->id_seq = f->id_seq;
        ret = reappend(r, w, f->pos, true);
        if (ret == -ENOENT) {
            struct kvb__rpos p = f->pos;
            p.sub++;
            ret = append_lost_clear(r, w, p);
        }
    }
    free(le);
    kvb__relay_pop_done(r, false);
    return ret;
}

/* ---- appends ----------------------------------------------------------------------- */

struct group {
    struct kvb__rlog_worker *lw;
    struct relay_worker *pw;
    uint32_t n;
    uint32_t first; /* index into the round's item list */
};

/* Keep an appended item's blob (ownership moves from the item) in the retention
 * ring; the oldest go when it exceeds retain_bytes. */
static void retain(kvb_redis_relay *r, const char *name, struct relay_item *it,
                   struct kvb__rpos prev, bool have_prev)
{
    if (!r->ret_cap || !r->cfg.retain_bytes || it->len > r->cfg.retain_bytes)
        return;
    while (r->ret_count &&
           (r->ret_count == r->ret_cap || r->ret_bytes + it->len > r->cfg.retain_bytes)) {
        struct retained *o = &r->ret[r->ret_head];
        r->ret_bytes -= o->len;
        free(o->blob);
        o->blob = NULL;
        r->ret_head = (r->ret_head + 1) % r->ret_cap;
        r->ret_count--;
    }
    struct retained *x = &r->ret[(r->ret_head + r->ret_count) % r->ret_cap];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->pos = it->pos;
    x->prev = prev;
    x->have_prev = have_prev;
    x->blob = it->blob;
    x->len = it->len;
    it->blob = NULL; /* the ring owns it now */
    r->ret_bytes += x->len;
    r->ret_count++;
}

/* Apply the accepted items of a group to the shadow; n_acc of them. */
static void group_accepted(kvb_redis_relay *r, struct group *g, struct relay_item **its,
                           uint32_t n_acc, const redisReply *id, long long last_n)
{
    struct kvb__rlog_worker *lw = g->lw;
    uint64_t ms = lw->id_ms, sq = lw->id_seq;
    if (id && kvb__rr_str(id))
        kvb__parse_id(id->str, id->len, &ms, &sq);
    for (uint32_t i = 0; i < n_acc; i++) {
        struct relay_item *it = its[g->first + i];
        struct kvb__rpos prev = lw->pos;
        bool have_prev = lw->have_pos;
        kvb_redis_entry e;
        if (kvb_redis_entry_decode(it->blob, it->len, &e) == 0) {
            int64_t n = last_n - (long long)(n_acc - 1 - i);
            kvb__rlog_apply_own(&r->lg, lw, &e, r->inc, n, ms, sq);
            kvb_redis_entry_fini(&e);
        }
        retain(r, lw->name, it, prev, have_prev);
        it->done = true;
    }
    r->since_snapshot += n_acc;
}

static int append_lost_clear(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p)
{
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    e.kind = KVB_REDIS_ENTRY_CLEAR;
    e.state = KVB_STREAM_RESYNCING;
    e.reason = KVB_REDIS_CLEAR_LOST;
    e.ep = p.ep;
    e.seq = p.seq;
    e.sub = p.sub;
    e.dp_rank = KVB_INDEX_NO_RANK;
    e.relay_ns = kvb__realtime_ns();
    size_t len;
    void *blob = kvb__relay_encode_alloc(&e, &len);
    if (!blob)
        return -ENOMEM;
    char lease[160], incr[160], inc[32], ep[24], seq[24], sub[16];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)e.ep);
    snprintf(seq, sizeof seq, "%lld", (long long)e.seq);
    snprintf(sub, sizeof sub, "%u", e.sub);
    const char *args[7] = {lease, lw->key, inc, ep, seq, sub, blob};
    size_t lens[7] = {strlen(lease), lw->key_len, strlen(inc), strlen(ep),
                      strlen(seq),   strlen(sub), len};
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_APPEND, 2, 7, args, lens);
    free(blob);
    if (!rep)
        return -EIO;
    int ret = -EPROTO;
    long long c, ln;
    if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c == 1 &&
        kvb__rr_int(rep->element[2], &ln)) {
        uint64_t ms = 0, sq = 0;
        kvb__parse_id(rep->element[1]->str, rep->element[1]->len, &ms, &sq);
        kvb__rlog_apply_own(&r->lg, lw, &e, r->inc, ln, ms, sq);
        pthread_mutex_lock(&r->mu);
        r->st.lost_clears++;
        r->st.appended++;
        pthread_mutex_unlock(&r->mu);
        ret = 0;
    } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
        ret = 1; /* not the holder any more */
    }
    freeReplyObject(rep);
    return ret;
}

/* One round: up to append_max_entries queued items, one script call per worker,
 * pipelined. 1 when something was appended, 0 nothing to do, negative errno,
 * -EPERM when a call said we are not the holder. */
int kvb__relay_append_round(kvb_redis_relay *r)
{
    uint32_t max = r->cfg.append_max_entries;
    struct relay_item **its = malloc(sizeof *its * max);
    struct group *groups = malloc(sizeof *groups * max);
    if (!its || !groups) {
        free(its);
        free(groups);
        return -ENOMEM;
    }
    pthread_mutex_lock(&r->mu);
    uint32_t cnt = r->count, head = r->head;
    pthread_mutex_unlock(&r->mu);
    /* collect: not-done items in ring order */
    uint32_t n = 0, ng = 0;
    r->round++;
    struct relay_item **tmp = malloc(sizeof *tmp * max);
    if (!tmp) {
        free(its);
        free(groups);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cnt && n < max; i++) {
        struct relay_item *it = &r->ring[(head + i) % r->ring_cap];
        if (it->done)
            continue;
        tmp[n++] = it;
        struct relay_worker *pw = it->w;
        if (pw->round_stamp != r->round) {
            pw->round_stamp = r->round;
            pw->round_group = ng;
            struct kvb__rlog_worker *lw = kvb__rlog_get(&r->lg, &r->rc, pw->name);
            groups[ng++] = (struct group){.lw = lw, .pw = pw, .n = 0, .first = 0};
        }
        groups[pw->round_group].n++;
    }
    if (!n) {
        free(its);
        free(groups);
        free(tmp);
        return 0;
    }
    /* lay the items out group by group */
    uint32_t off = 0;
    for (uint32_t g = 0; g < ng; g++) {
        groups[g].first = off;
        off += groups[g].n;
        groups[g].n = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct group *g = &groups[tmp[i]->w->round_group];
        its[g->first + g->n++] = tmp[i];
    }
    free(tmp);

    char lease[160], incr[160], inc[32];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    /* per item 3 numbers of up to 24 bytes */
    char(*nums)[3][24] = malloc(sizeof *nums * n);
    const char **args = malloc(sizeof *args * (3 * ng + 4 * n));
    size_t *lens = malloc(sizeof *lens * (3 * ng + 4 * n));
    const char *const **gargs = malloc(sizeof *gargs * ng);
    const size_t **glens = malloc(sizeof *glens * ng);
    int *nkeys = malloc(sizeof *nkeys * ng), *nargs = malloc(sizeof *nargs * ng);
    redisReply **reps = malloc(sizeof *reps * ng);
    int ret = 0;
    if (!nums || !args || !lens || !gargs || !glens || !nkeys || !nargs || !reps) {
        ret = -ENOMEM;
        goto out;
    }
    size_t a = 0;
    for (uint32_t g = 0; g < ng; g++) {
        struct group *gr = &groups[g];
        if (!gr->lw) {
            ret = -ENOMEM;
            goto out;
        }
        gargs[g] = &args[a];
        glens[g] = &lens[a];
        nkeys[g] = 2;
        args[a] = lease;
        lens[a++] = strlen(lease);
        args[a] = gr->lw->key;
        lens[a++] = gr->lw->key_len;
        args[a] = inc;
        lens[a++] = strlen(inc);
        for (uint32_t i = 0; i < gr->n; i++) {
            struct relay_item *it = its[gr->first + i];
            char(*nb)[24] = nums[gr->first + i];
            snprintf(nb[0], 24, "%llu", (unsigned long long)it->pos.ep);
            snprintf(nb[1], 24, "%lld", (long long)it->pos.seq);
            snprintf(nb[2], 24, "%u", it->pos.sub);
            for (int k = 0; k < 3; k++) {
                args[a] = nb[k];
                lens[a++] = strlen(nb[k]);
            }
            args[a] = it->blob;
            lens[a++] = it->len;
        }
        nargs[g] = 3 + 4 * (int)gr->n;
    }
    ret = kvb__rconn_script_n(&r->rc, KVB_RS_APPEND, ng, nkeys, nargs, gargs, glens, reps);
    if (ret < 0)
        goto out;
    pthread_mutex_lock(&r->mu);
    r->st.append_calls += ng;
    pthread_mutex_unlock(&r->mu);
    uint64_t appended = 0, refused = 0;
    bool not_holder = false, bad = false;
    for (uint32_t g = 0; g < ng; g++) {
        redisReply *rep = reps[g];
        long long c, ln;
        if (!rep) {
            bad = true;
        } else if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c >= 0 &&
                   (uint64_t)c == groups[g].n && kvb__rr_int(rep->element[2], &ln)) {
            group_accepted(r, &groups[g], its, (uint32_t)c, rep->element[1], ln);
            appended += (uint64_t)c;
        } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
            not_holder = true;
            refused += groups[g].n;
        } else if (kvb__rr_arr(rep, 4) && kvb__rr_int(rep->element[0], &c) && c == -2 &&
                   kvb__rr_int(rep->element[1], &c) && c >= 0 && (uint64_t)c < groups[g].n &&
                   kvb__rr_int(rep->element[3], &ln)) {
            if (c > 0)
                group_accepted(r, &groups[g], its, (uint32_t)c, rep->element[2], ln);
            appended += (uint64_t)c;
            refused += groups[g].n - (uint64_t)c;
            r->need_verify = true;
        } else {
            bad = true; /* an error reply (OOM, script error) or a shape we do not know */
        }
        freeReplyObject(rep);
        reps[g] = NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->st.appended += appended;
    r->st.refused += refused;
    pthread_mutex_unlock(&r->mu);
    kvb__relay_pop_done(r, false);
    if (bad) {
        kvb__rconn_fail(&r->rc); /* reconnect, then verify before appending again */
        r->need_verify = true;
        ret = -EIO;
    } else if (not_holder) {
        ret = -EPERM;
    } else {
        ret = appended ? 1 : 0;
    }
out:
    free(nums);
    free(args);
    free(lens);
    free(gargs);
    free(glens);
    free(nkeys);
    free(nargs);
    free(reps);
    free(its);
    free(groups);
    return ret;
}

#endif /* KVB_HAVE_REDIS */
