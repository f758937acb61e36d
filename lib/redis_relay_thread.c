/*
 * redis_relay_thread.c - the relay thread (FLEET.md section 8; redis_relay.c
 * has the design): the lease, snapshots and trims, and the states STANDBY
 * (follow the log, try the lease, take over), ACTIVE (renew, verify, append,
 * snapshot), LOST (watch for another relay, take the lease again) and FENCED.
 */
#include "redis_relay_internal.h"

#ifdef KVB_HAVE_REDIS

/* ---- state ------------------------------------------------------------------ */

static void set_state(kvb_redis_relay *r, kvb_redis_relay_state s)
{
    pthread_mutex_lock(&r->mu);
    int old = atomic_load(&r->state);
    atomic_store(&r->state, (int)s);
    r->st.state = s;
    r->st.inc = r->inc;
    pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
    if (old != (int)s && r->cfg.on_state)
        r->cfg.on_state(r->cfg.user, s, r->inc);
}

static uint64_t max_seen_inc(const kvb_redis_relay *r)
{
    uint64_t m = r->inc;
    for (uint32_t i = 0; i < r->lg.n; i++)
        if (r->lg.list[i]->max_inc > m)
            m = r->lg.list[i]->max_inc;
    return m;
}

/* ---- lease -------------------------------------------------------------------------- */

void kvb__relay_lease_keys(kvb_redis_relay *r, char *lease, char *incr, size_t cap)
{
    kvb__rconn_key(&r->rc, "lease", NULL, lease, cap);
    kvb__rconn_key(&r->rc, "incarnation", NULL, incr, cap);
}

/* 1 acquired (r->inc set), 0 held by someone, negative errno (connection). */
static int lease_acquire(kvb_redis_relay *r)
{
    char lease[160], incr[160], minv[32], ms[16];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(minv, sizeof minv, "%llu", (unsigned long long)max_seen_inc(r));
    snprintf(ms, sizeof ms, "%u", r->cfg.lease_ms);
    const char *args[4] = {lease, incr, minv, ms};
    int64_t t0 = kvb__redis_mono_ms();
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_ACQUIRE, 2, 4, args, NULL);
    if (!rep)
        return -EIO;
    long long v;
    int ret = 0;
    if (kvb__rr_int(rep, &v) && v > 0) {
        if (r->inc && r->n_my_incs < RELAY_MY_INCS)
            r->my_incs[r->n_my_incs++] = r->inc;
        r->inc = (uint64_t)v;
        r->lease_deadline_ms = t0 + (int64_t)r->cfg.lease_ms * 9 / 10;
        r->renew_due_ms = t0 + r->cfg.renew_ms;
        pthread_mutex_lock(&r->mu);
        r->st.lease_acquired++;
        r->st.inc = r->inc;
        pthread_mutex_unlock(&r->mu);
        ret = 1;
    } else if (kvb__rr_err(rep)) {
        r->rc.errors++;
    }
    freeReplyObject(rep);
    return ret;
}

/* 1 renewed, 0 not the holder, negative errno. */
static int lease_renew(kvb_redis_relay *r)
{
    char lease[160], incr[160], inc[32], ms[16];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    snprintf(ms, sizeof ms, "%u", r->cfg.lease_ms);
    const char *args[3] = {lease, inc, ms};
    int64_t t0 = kvb__redis_mono_ms();
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_RENEW, 1, 3, args, NULL);
    if (!rep)
        return -EIO;
    long long v = 0;
    int ret;
    if (kvb__rr_int(rep, &v)) {
        ret = v == 1 ? 1 : 0;
        if (ret) {
            r->lease_deadline_ms = t0 + (int64_t)r->cfg.lease_ms * 9 / 10;
            r->renew_due_ms = t0 + r->cfg.renew_ms;
        }
    } else {
        kvb__rconn_fail(&r->rc);
        ret = -EPROTO;
    }
    freeReplyObject(rep);
    return ret;
}

static void lease_release(kvb_redis_relay *r)
{
    if (!r->inc || !kvb__rconn_ok(&r->rc))
        return;
    char lease[160], incr[160], inc[32];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    const char *args[2] = {lease, inc};
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_RELEASE, 1, 2, args, NULL);
    freeReplyObject(rep);
}

static void to_lost(kvb_redis_relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->st.lease_lost++;
    pthread_mutex_unlock(&r->mu);
    r->acquire_due_ms = kvb__redis_mono_ms();
    set_state(r, KVB_REDIS_RELAY_LOST);
}

/* ---- snapshots ------------------------------------------------------------------------ */

static int write_snapshot(kvb_redis_relay *r)
{
    int64_t t0 = kvb_index_now_ns();
    void *ibuf = NULL, *mbuf = NULL;
    size_t ilen = 0, mlen = 0;
    int ret = kvb_index_save_mem(r->lg.idx[1], &ibuf, &ilen);
    if (ret < 0)
        return ret;
    ret = kvb__rlog_meta_encode(&r->lg, r->inc, ibuf, ilen, &mbuf, &mlen);
    if (ret < 0) {
        free(ibuf);
        return ret;
    }
    char lease[160], incr[160], skey[160], inc[32];
    kvb__relay_lease_keys(r, lease, incr, sizeof lease);
    kvb__rconn_key(&r->rc, "snapshot", NULL, skey, sizeof skey);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    const char *args[5] = {lease, skey, inc, mbuf, ibuf};
    size_t lens[5] = {strlen(lease), strlen(skey), strlen(inc), mlen, ilen};
    kvb__rconn_set_timeout(&r->rc, r->cfg.snapshot_timeout_ms);
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_SNAPSHOT, 2, 5, args, lens);
    kvb__rconn_set_timeout(&r->rc, r->cfg.io_timeout_ms);
    free(ibuf);
    free(mbuf);
    if (!rep) {
        r->need_verify = true;
        return -EIO;
    }
    long long v = 0;
    bool ok = kvb__rr_int(rep, &v);
    freeReplyObject(rep);
    if (!ok || v != 1)
        return ok ? -EPERM : -EPROTO;
    double secs = (double)(kvb_index_now_ns() - t0) / 1e9;
    /* trim behind the previous snapshot: a replica that loaded it can still read
     * its tail */
    uint64_t trimmed = 0, trims = 0;
    for (uint32_t i = 0; i < r->lg.n; i++) {
        struct kvb__rlog_worker *w = r->lg.list[i];
        if (w->have_snap) {
            w->trim_ms = w->snap_ms;
            w->trim_seq = w->snap_seq;
            w->have_trim = true;
        }
        if (w->n >= 0) {
            w->snap_ms = w->id_ms;
            w->snap_seq = w->id_seq;
            w->have_snap = true;
        }
        if (!w->have_trim)
            continue;
        char id[48];
        kvb__fmt_id(w->trim_ms, w->trim_seq, id, sizeof id);
        const char *targs[4] = {lease, w->key, inc, id};
        size_t tlens[4] = {strlen(lease), w->key_len, strlen(inc), strlen(id)};
        rep = kvb__rconn_script(&r->rc, KVB_RS_TRIM, 2, 4, targs, tlens);
        if (!rep)
            break;
        long long t;
        if (kvb__rr_int(rep, &t) && t >= 0) {
            trimmed += (uint64_t)t;
            trims++;
        }
        freeReplyObject(rep);
    }
    pthread_mutex_lock(&r->mu);
    r->st.snapshots++;
    r->st.snapshot_bytes = ilen + mlen;
    r->st.snapshot_seconds = secs;
    r->st.trims += trims;
    r->st.trimmed += trimmed;
    pthread_mutex_unlock(&r->mu);
    r->since_snapshot = 0;
    r->snap_last_ms = kvb__redis_mono_ms();
    return (int)(ilen + mlen > INT32_MAX ? INT32_MAX : ilen + mlen);
}

/* ---- the relay thread ------------------------------------------------------------------ */

static void retire(kvb_index *old[KVB_RLOG_IDX])
{
    for (int x = 0; x < KVB_RLOG_IDX; x++)
        if (old[x])
            kvb_index_destroy(old[x]);
}

static int standby_load(kvb_redis_relay *r)
{
    kvb_index *old[KVB_RLOG_IDX] = {NULL, NULL};
    uint64_t bytes = 0;
    int ret = kvb__rlog_fetch_snapshot(&r->lg, &r->rc, 2, r->cfg.snapshot_timeout_ms, old, &bytes);
    if (ret < 0) {
        kvb__redis_wait(&r->mu, &r->cv, &r->stop, 100); /* out of memory, or the connection broke */
        return ret;
    }
    retire(old);
    r->need_load = false;
    return 0;
}

/* Holding the lease (r->inc): read every stream to its end, then become ACTIVE. */
static int takeover(kvb_redis_relay *r)
{
    int64_t t0 = kvb_index_now_ns();
    for (int guard = 0; guard < 1000000; guard++) {
        if (kvb__redis_mono_ms() >= r->renew_due_ms) {
            int rr = lease_renew(r);
            if (rr <= 0)
                return rr == 0 ? -EPERM : rr;
        }
        if (r->lg.reload_wanted) {
            int ret = standby_load(r);
            if (ret < 0)
                return ret;
        }
        int ret = kvb__rlog_scan(&r->lg, &r->rc);
        if (ret < 0)
            return ret;
        bool full;
        ret = kvb__rlog_read(&r->lg, &r->rc, 10000, 0, &full);
        if (ret < 0)
            return ret;
        if (!full && !r->lg.reload_wanted)
            break;
        if (ret > 0 && !r->lg.reload_wanted)
            r->lg.fresh_holes = 0;
    }
    /* the last entry of every stream (applied or skipped) is what the append
     * script compares with */
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return -ENOMEM;
    int ret = kvb__relay_read_lasts(r, le);
    if (ret < 0) {
        free(le);
        return ret;
    }
    pthread_mutex_lock(&r->mu);
    for (uint32_t i = 0; i < r->lg.n; i++) {
        struct kvb__rlog_worker *lw = r->lg.list[i];
        struct relay_worker *pw = kvb__relay_pw_get_locked(r, lw->name);
        if (!pw)
            continue;
        struct kvb__rpos p = {0, -1, 0};
        if (lw->have_seen)
            p = lw->seen;
        if (le[i].ok && kvb__rpos_cmp(le[i].f.pos, p) > 0)
            p = le[i].f.pos;
        pw->pos = p;
        pw->overflow = false;
        pw->n_ranks = 0;
        for (uint32_t k = 0; k < lw->n_ranks && k < RELAY_MAX_RANKS; k++)
            pw->ranks[pw->n_ranks++] = lw->ranks[k];
        lw->seen = p;
        lw->have_seen = true;
    }
    free(le);
    r->index = r->lg.idx[0];
    r->lg.idx[0] = NULL; /* from now on the subscriber feeds it */
    r->st.takeover_ns = kvb_index_now_ns() - t0;
    r->since_snapshot = 0;
    r->snap_last_ms = kvb__redis_mono_ms();
    pthread_mutex_unlock(&r->mu);
    set_state(r, KVB_REDIS_RELAY_ACTIVE);
    return 0;
}

static void standby_step(kvb_redis_relay *r)
{
    if (r->need_load || r->lg.reload_wanted) {
        if (standby_load(r) < 0)
            return;
    }
    int64_t now = kvb__redis_mono_ms();
    if (now >= r->scan_due_ms) {
        if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
            return;
        r->scan_due_ms = now + 500;
    }
    if (now >= r->acquire_due_ms) {
        r->acquire_due_ms = now + r->cfg.acquire_poll_ms;
        int got = lease_acquire(r);
        if (got < 0)
            return;
        if (got == 1) {
            int ret = takeover(r);
            if (ret < 0 && kvb__rconn_ok(&r->rc))
                lease_release(r); /* let another standby have it at once */
            return;
        }
    }
    uint64_t before = r->lg.applied;
    bool full;
    int got = kvb__rlog_read(&r->lg, &r->rc, 1000, r->lg.n ? r->cfg.block_ms : 0, &full);
    if (got > 0 && !r->lg.reload_wanted)
        r->lg.fresh_holes = 0;
    pthread_mutex_lock(&r->mu);
    r->st.followed += r->lg.applied - before;
    pthread_mutex_unlock(&r->mu);
    if (got >= 0 && !r->lg.n)
        kvb__redis_wait(&r->mu, &r->cv, &r->stop, r->cfg.block_ms);
}

static void fence(kvb_redis_relay *r)
{
    set_state(r, KVB_REDIS_RELAY_FENCED);
    kvb__relay_pop_done(r, true);
}

static void active_step(kvb_redis_relay *r)
{
    int64_t now = kvb__redis_mono_ms();
    if (now >= r->lease_deadline_ms) {
        to_lost(r); /* no renewal confirmed in time: we cannot know we hold it */
        return;
    }
    if (now >= r->renew_due_ms) {
        int rr = lease_renew(r);
        if (rr < 0)
            return;
        if (rr == 0) {
            to_lost(r);
            return;
        }
    }
    if (r->need_verify) {
        int v = kvb__relay_verify_streams(r);
        if (v < 0)
            return;
        if (v == 1) {
            fence(r);
            return;
        }
        r->need_verify = false;
    }
    int ar = kvb__relay_append_round(r);
    if (ar == -EPERM) {
        to_lost(r);
        return;
    }
    if (ar < 0)
        return;
    pthread_mutex_lock(&r->mu);
    bool asked = r->snap_requests > r->snap_done;
    uint64_t target = r->snap_requests;
    pthread_mutex_unlock(&r->mu);
    now = kvb__redis_mono_ms();
    bool due = asked || (r->cfg.snapshot_entries && r->since_snapshot >= r->cfg.snapshot_entries) ||
               (r->cfg.snapshot_ms && r->since_snapshot &&
                now - r->snap_last_ms >= (int64_t)r->cfg.snapshot_ms);
    if (due) {
        if (now + 50 >= r->renew_due_ms && lease_renew(r) <= 0)
            return;
        int sr = write_snapshot(r);
        if (sr == -EPERM) {
            to_lost(r);
            sr = -EAGAIN;
        }
        if (asked) {
            pthread_mutex_lock(&r->mu);
            r->snap_done = target;
            r->snap_result = sr;
            pthread_cond_broadcast(&r->done_cv);
            pthread_mutex_unlock(&r->mu);
        }
        return;
    }
    if (ar == 0) {
        /* idle: sleep until the renewal, new items or a request */
        pthread_mutex_lock(&r->mu);
        bool idle = !r->stop && r->count == 0 && r->snap_requests == r->snap_done;
        pthread_mutex_unlock(&r->mu);
        if (idle) {
            int64_t until = r->renew_due_ms;
            if (r->cfg.snapshot_ms && r->since_snapshot) {
                int64_t sd = r->snap_last_ms + r->cfg.snapshot_ms;
                if (sd < until)
                    until = sd;
            }
            kvb__redis_wait(&r->mu, &r->cv, &r->stop, until - kvb__redis_mono_ms());
        } else if (r->count) {
            /* items queued but none could be sent (all done, waiting to pop) */
            kvb__relay_pop_done(r, false);
        }
    }
}

/* LOST: keep queueing; watch for another relay's entries (FENCED); take the lease
 * again with a new incarnation when it is free, and verify nothing changed. */
static void lost_step(kvb_redis_relay *r)
{
    int64_t now = kvb__redis_mono_ms();
    if (now < r->acquire_due_ms) {
        kvb__redis_wait(&r->mu, &r->cv, &r->stop, r->acquire_due_ms - now);
        return;
    }
    r->acquire_due_ms = now + r->cfg.acquire_poll_ms;
    /* read-only look first: another relay's entry at a stream's end is final
     * (streams created since we last looked included) */
    if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
        return;
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return;
    int ret = kvb__relay_read_lasts(r, le);
    bool other = false;
    for (uint32_t i = 0; ret == 0 && i < r->lg.n; i++)
        if (le[i].exists && (!le[i].ok || (!is_mine(r, le[i].f.inc) && le[i].f.inc > r->inc)))
            other = true;
    free(le);
    if (ret < 0)
        return;
    if (other) {
        fence(r);
        return;
    }
    int got = lease_acquire(r);
    if (got <= 0)
        return;
    int v = kvb__relay_verify_streams(r);
    if (v == 0) {
        r->need_verify = false;
        set_state(r, KVB_REDIS_RELAY_ACTIVE);
    } else if (v == 1) {
        lease_release(r);
        fence(r);
    } else {
        r->need_verify = true;
        set_state(r, KVB_REDIS_RELAY_ACTIVE); /* verified again after reconnecting */
    }
}

static void on_connected(kvb_redis_relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->st.connected = true;
    r->st.reconnects = r->rc.reconnects;
    pthread_mutex_unlock(&r->mu);
    int st = atomic_load(&r->state);
    if (st == KVB_REDIS_RELAY_ACTIVE) {
        if (kvb__rconn_server_changed(&r->rc))
            to_lost(r); /* a restarted server may have lost the lease with its data */
        else
            r->need_verify = true;
    } else if (st == KVB_REDIS_RELAY_STANDBY) {
        /* a server that came back with less than we read: reload */
        if (kvb__rlog_heads(&r->lg, &r->rc) == 0 && r->lg.reload_wanted)
            r->need_load = true;
    }
}

void *kvb__relay_main(void *arg)
{
    kvb_redis_relay *r = arg;
    uint32_t backoff = 50;
    while (!kvb__redis_stopping(&r->mu, &r->stop)) {
        int st = atomic_load(&r->state);
        if (st == KVB_REDIS_RELAY_FENCED) {
            kvb__relay_pop_done(r, true);
            kvb__redis_wait(&r->mu, &r->cv, &r->stop, 1000);
            continue;
        }
        if (!kvb__rconn_ok(&r->rc)) {
            pthread_mutex_lock(&r->mu);
            r->st.connected = false;
            r->st.errors = r->rc.errors;
            pthread_mutex_unlock(&r->mu);
            if (st == KVB_REDIS_RELAY_ACTIVE && kvb__redis_mono_ms() >= r->lease_deadline_ms)
                to_lost(r);
            if (kvb__rconn_connect(&r->rc) < 0) {
                kvb__redis_wait(&r->mu, &r->cv, &r->stop, backoff);
                backoff = backoff * 2 > r->cfg.backoff_max_ms ? r->cfg.backoff_max_ms : backoff * 2;
                continue;
            }
            backoff = 50;
            kvb__rconn_set_timeout(&r->rc, r->cfg.io_timeout_ms + r->cfg.block_ms);
            on_connected(r);
            continue;
        }
        switch (st) {
        case KVB_REDIS_RELAY_STANDBY:
            standby_step(r);
            break;
        case KVB_REDIS_RELAY_ACTIVE:
            active_step(r);
            break;
        case KVB_REDIS_RELAY_LOST:
            lost_step(r);
            break;
        default:
            kvb__redis_wait(&r->mu, &r->cv, &r->stop, 100);
        }
        pthread_mutex_lock(&r->mu);
        r->st.errors = r->rc.errors;
        r->st.connected = kvb__rconn_ok(&r->rc);
        pthread_mutex_unlock(&r->mu);
    }
    /* stopping: append what is queued for at most io_timeout_ms, then let go */
    if (atomic_load(&r->state) == KVB_REDIS_RELAY_ACTIVE && kvb__rconn_ok(&r->rc)) {
        int64_t until = kvb__redis_mono_ms() + r->cfg.io_timeout_ms;
        while (kvb__redis_mono_ms() < until && kvb__redis_mono_ms() < r->lease_deadline_ms) {
            int ar = kvb__relay_append_round(r);
            if (ar <= 0)
                break;
        }
        lease_release(r);
    }
    kvb__relay_pop_done(r, true);
    set_state(r, KVB_REDIS_RELAY_STOPPED);
    return NULL;
}

#endif /* KVB_HAVE_REDIS */
