/*
 * index_snapshot.c - snapshots of the fleet index (FLEET.md section 6) and its
 * Prometheus text exposition.
 *
 * Snapshot format, version 1, every integer little-endian:
 *
 *   "KVBIDX" u16 version=1 u8 n_counters=4 u8 n_drops=11
 *   u32 block_size  u64 seed  u32 n_streams
 *   n_streams times, ascending id:
 *     u32 id  u8 name_len(1..63) name[name_len]  i64 dp_rank  u8 hashes
 *     u32 block_size  u8 state  i64 last_seq  u64 batches  u64 events
 *     u64 counters[4]  u64 dropped[11]
 *     u32 n_keys   n_keys x {u64 router key, u32 packed counts}
 *     u32 n_engine n_engine x {u64 engine hash, u64 router key, u32 copies}
 *   u64 XXH3-64 of every byte before it
 *
 * Save copies the index into memory with the writer mutex held (writers wait,
 * matches do not), then writes a temporary file in the destination's
 * directory, fsyncs it, renames it over the destination and fsyncs the
 * directory. Load checks the checksum, then walks the whole buffer checking
 * every length, count and range without allocating, and only then builds a
 * fresh index (duplicate streams, ids or keys still refuse it with -EBADMSG,
 * and the half-built index is destroyed): a corrupt, truncated or foreign file
 * is never half-loaded.
 *
 * Prometheus text (format 0.0.4): one coherent cut under the stream lock;
 * label values escaped (backslash, double quote, newline).
 */
#include "index_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define SNAP_MAGIC   "KVBIDX"
#define SNAP_VERSION 1u
#define SNAP_HDR     (6 + 2 + 1 + 1 + 4 + 8 + 4)
#define SNAP_STREAM_FIXED                                                                          \
    (4 + 1 + 8 + 1 + 4 + 1 + 8 + 8 + 8 + 8 * KVB_COUNT_COUNT + 8 * KVB_DROP_COUNT + 4 + 4)
#define SNAP_KEY 12u
#define SNAP_ENG 20u

/* ---- little-endian cursor ---------------------------------------------------- */

static unsigned char *put_u8(unsigned char *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static unsigned char *put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    return p + 2;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return p + 4;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return p + 8;
}

struct rd {
    const unsigned char *p, *end;
    bool bad;
};

static bool rd_need(struct rd *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint64_t rd_le(struct rd *r, int bytes)
{
    if (!rd_need(r, (size_t)bytes))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    return v;
}

static uint8_t rd_u8(struct rd *r)
{
    return (uint8_t)rd_le(r, 1);
}

static uint16_t rd_u16(struct rd *r)
{
    return (uint16_t)rd_le(r, 2);
}

static uint32_t rd_u32(struct rd *r)
{
    return (uint32_t)rd_le(r, 4);
}

static uint64_t rd_u64(struct rd *r)
{
    return rd_le(r, 8);
}

/* ---- save ------------------------------------------------------------------- */

static size_t snap_size_locked(const kvb_index *idx)
{
    size_t n = SNAP_HDR + 8;
    for (uint32_t i = 0; i < idx->tab_cap; i++) {
        const struct kvb_ix_stream *st = idx->tab[i];
        if (st)
            n += SNAP_STREAM_FIXED + strlen(st->name) + (size_t)st->rn * SNAP_KEY +
                 (size_t)st->en * SNAP_ENG;
    }
    return n;
}

static unsigned char *snap_write_stream(unsigned char *p, const struct kvb_ix_stream *st)
{
    size_t len = strlen(st->name);
    p = put_u32(p, st->id);
    p = put_u8(p, (uint8_t)len);
    memcpy(p, st->name, len);
    p += len;
    p = put_u64(p, (uint64_t)st->rank);
    p = put_u8(p, (uint8_t)st->kind);
    p = put_u32(p, st->block_size);
    p = put_u8(p, (uint8_t)st->state);
    p = put_u64(p, (uint64_t)st->last_seq);
    p = put_u64(p, st->batches);
    p = put_u64(p, st->events);
    for (int c = 0; c < KVB_COUNT_COUNT; c++)
        p = put_u64(p, st->counters[c]);
    for (int d = 0; d < KVB_DROP_COUNT; d++)
        p = put_u64(p, st->dropped[d]);
    p = put_u32(p, st->rn);
    for (uint32_t i = 0; i < st->rcap; i++)
        if (st->rc[i]) {
            p = put_u64(p, st->rk[i]);
            p = put_u32(p, st->rc[i]);
        }
    p = put_u32(p, st->en);
    for (uint32_t i = 0; i < st->ecap; i++)
        if (st->ec[i]) {
            p = put_u64(p, st->ek[i]);
            p = put_u64(p, st->er[i]);
            p = put_u32(p, st->ec[i]);
        }
    return p;
}

KVB_API int kvb_index_save_mem(kvb_index *idx, void **buf, size_t *len)
{
    if (!idx || !buf || !len)
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    size_t size = snap_size_locked(idx);
    unsigned char *b = malloc(size);
    if (!b) {
        pthread_mutex_unlock(&idx->wmu);
        return -ENOMEM;
    }
    unsigned char *p = b;
    memcpy(p, SNAP_MAGIC, 6);
    p += 6;
    p = put_u16(p, SNAP_VERSION);
    p = put_u8(p, KVB_COUNT_COUNT);
    p = put_u8(p, KVB_DROP_COUNT);
    p = put_u32(p, idx->cfg.block_size);
    p = put_u64(p, idx->cfg.seed);
    p = put_u32(p, idx->n_streams);
    for (uint32_t i = 0; i < idx->tab_cap; i++)
        if (idx->tab[i])
            p = snap_write_stream(p, idx->tab[i]);
    pthread_mutex_unlock(&idx->wmu);
    kvb_assert((size_t)(p - b) == size - 8);
    p = put_u64(p, XXH3_64bits(b, size - 8));
    *buf = b;
    *len = size;
    return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

KVB_API int kvb_index_save(kvb_index *idx, const char *path, size_t *bytes)
{
    if (!idx || !path || !*path)
        return -EINVAL;
    void *buf;
    size_t len;
    int rc = kvb_index_save_mem(idx, &buf, &len);
    if (rc)
        return rc;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    char *dir = malloc(plen + 2);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        free(buf);
        return -ENOMEM;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    memcpy(dir, path, plen + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;

    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL)
            rc = -errno; /* the rename may not be durable yet */
        close(dfd);
    }
    if (rc == 0 && bytes)
        *bytes = len;
out:
    free(tmp);
    free(dir);
    free(buf);
    return rc;
}

/* ---- load ------------------------------------------------------------------- */

struct snap_hdr {
    uint32_t block_size;
    uint64_t seed;
    uint32_t n_streams;
};

/* One stream's record, checked; keys and engine entries left in place. */
struct snap_stream {
    uint32_t id;
    char name[KVB_INDEX_NAME_MAX];
    int64_t rank;
    uint8_t kind, state;
    uint32_t block_size;
    int64_t last_seq;
    uint64_t batches, events, counters[KVB_COUNT_COUNT], dropped[KVB_DROP_COUNT];
    uint32_t n_keys, n_eng;
    uint64_t entries;
    const unsigned char *keys, *eng;
};

static bool snap_read_stream(struct rd *r, const kvb_index_config *cfg, struct snap_stream *s)
{
    s->id = rd_u32(r);
    uint8_t nl = rd_u8(r);
    if (r->bad || nl == 0 || nl >= KVB_INDEX_NAME_MAX || !rd_need(r, nl))
        return false;
    memcpy(s->name, r->p, nl);
    s->name[nl] = 0;
    r->p += nl;
    if (strlen(s->name) != nl)
        return false; /* a NUL inside the name */
    s->rank = (int64_t)rd_u64(r);
    s->kind = rd_u8(r);
    s->block_size = rd_u32(r);
    s->state = rd_u8(r);
    s->last_seq = (int64_t)rd_u64(r);
    s->batches = rd_u64(r);
    s->events = rd_u64(r);
    for (int c = 0; c < KVB_COUNT_COUNT; c++)
        s->counters[c] = rd_u64(r);
    for (int d = 0; d < KVB_DROP_COUNT; d++)
        s->dropped[d] = rd_u64(r);
    s->n_keys = rd_u32(r);
    if (r->bad)
        return false;
    if (s->id >= (1u << 20) || (s->rank < 0 && s->rank != KVB_INDEX_NO_RANK) ||
        s->kind > KVB_INDEX_HASHES_ENGINE || s->state > KVB_STREAM_STALE || s->block_size == 0 ||
        s->block_size > 1024 || (s->block_size & (s->block_size - 1)) || s->last_seq < -1)
        return false;
    if (!rd_need(r, (size_t)s->n_keys * SNAP_KEY))
        return false;
    s->keys = r->p;
    s->entries = 0;
    for (uint32_t i = 0; i < s->n_keys; i++) {
        r->p += 8;
        uint32_t c = rd_u32(r);
        if (c == 0 || c >> (KVB_IX_COUNT_BITS * KVB_TIER_COUNT))
            return false;
        s->entries += (uint32_t)__builtin_popcount(kvb__ix_mask_of(c));
    }
    s->n_eng = rd_u32(r);
    if (r->bad || !rd_need(r, (size_t)s->n_eng * SNAP_ENG))
        return false;
    if (s->n_eng && s->kind != KVB_INDEX_HASHES_ENGINE)
        return false;
    s->eng = r->p;
    for (uint32_t i = 0; i < s->n_eng; i++) {
        r->p += 16;
        if (rd_u32(r) == 0)
            return false;
    }
    (void)cfg;
    return !r->bad;
}

/* Walk the whole snapshot: 0, -EBADMSG, or -EINVAL (valid, but not loadable
 * under cfg: too many streams or entries). */
static int snap_check(const unsigned char *b, size_t len, const kvb_index_config *cfg,
                      struct snap_hdr *h)
{
    if (len < SNAP_HDR + 8)
        return -EBADMSG;
    struct rd r = {.p = b + len - 8, .end = b + len, .bad = false};
    if (rd_u64(&r) != XXH3_64bits(b, len - 8))
        return -EBADMSG;
    if (memcmp(b, SNAP_MAGIC, 6) != 0)
        return -EBADMSG;
    r = (struct rd){.p = b + 6, .end = b + len - 8, .bad = false};
    if (rd_u16(&r) != SNAP_VERSION || rd_u8(&r) != KVB_COUNT_COUNT || rd_u8(&r) != KVB_DROP_COUNT)
        return -EBADMSG;
    h->block_size = rd_u32(&r);
    h->seed = rd_u64(&r);
    h->n_streams = rd_u32(&r);
    if (r.bad || h->block_size == 0 || h->block_size > 1024 ||
        (h->block_size & (h->block_size - 1)))
        return -EBADMSG;
    bool over = h->n_streams > (cfg ? cfg->max_streams : 0);
    for (uint32_t i = 0; i < h->n_streams; i++) {
        struct snap_stream s;
        if (!snap_read_stream(&r, cfg, &s))
            return -EBADMSG;
        if (cfg && (s.id >= cfg->max_streams || s.entries > cfg->max_entries_per_stream ||
                    s.n_eng > cfg->max_entries_per_stream))
            over = true;
    }
    if (r.bad || r.p != r.end)
        return -EBADMSG;
    return over && cfg ? -EINVAL : 0;
}

/* A step coprime to n near n * 0.618 (1 for n <= 2): adding it mod n visits 0..n-1. */
static uint32_t snap_step(uint32_t n)
{
    if (n <= 2)
        return 1;
    uint64_t step = (uint64_t)n * 618 / 1000;
    if (step == 0)
        step = 1;
    for (;; step = step % n + 1) {
        uint64_t a = n, b = step;
        while (b) {
            uint64_t t = a % b;
            a = b;
            b = t;
        }
        if (a == 1)
            return (uint32_t)step;
    }
}

static int snap_build(const unsigned char *b, size_t len, const kvb_index_config *cfg,
                      const struct snap_hdr *h, kvb_index *idx)
{
    struct rd r = {.p = b + SNAP_HDR, .end = b + len - 8, .bad = false};
    for (uint32_t i = 0; i < h->n_streams; i++) {
        struct snap_stream s;
        if (!snap_read_stream(&r, cfg, &s))
            return -EBADMSG;
        kvb_index_stream_config sc = {
            .name = s.name, .dp_rank = s.rank, .hashes = s.kind, .block_size = s.block_size};
        struct kvb_ix_stream *st;
        int rc = kvb__ix_stream_add_id(idx, &sc, s.id, &st);
        if (rc)
            return rc == -EEXIST ? -EBADMSG : rc;
        rc = kvb__ix_load_reserve(idx, st, s.n_keys, s.n_eng);
        if (rc)
            return rc;
        /* The keys were written in the order of the stream's table, i.e. sorted by
         * home cell. Inserted in that order into a growing global table, they would
         * all land in its low cells and build long linear-probing runs (measured: a
         * 4x slower load). Visit them in a stride permutation instead: j -> j + step
         * mod n, with step coprime to n, touches every key once in scattered order. */
        uint32_t step = snap_step(s.n_keys), at = 0;
        for (uint32_t j = 0; j < s.n_keys; j++) {
            const unsigned char *kp = s.keys + (size_t)at * SNAP_KEY;
            struct rd k = {.p = kp, .end = kp + SNAP_KEY, .bad = false};
            uint64_t key = rd_u64(&k);
            rc = kvb__ix_load_key(idx, st, key, rd_u32(&k));
            if (rc)
                return rc == -EEXIST ? -EBADMSG : rc;
            at = (uint32_t)(((uint64_t)at + step) % s.n_keys);
        }
        struct rd e = {.p = s.eng, .end = s.eng + (size_t)s.n_eng * SNAP_ENG, .bad = false};
        for (uint32_t j = 0; j < s.n_eng; j++) {
            uint64_t eh = rd_u64(&e), rh = rd_u64(&e);
            rc = kvb__ix_load_engine(idx, st, eh, rh, rd_u32(&e));
            if (rc)
                return rc == -EEXIST ? -EBADMSG : rc;
        }
        st->state = (kvb_stream_state)s.state;
        st->last_seq = s.last_seq;
        st->batches = s.batches;
        st->events = s.events;
        memcpy(st->counters, s.counters, sizeof st->counters);
        memcpy(st->dropped, s.dropped, sizeof st->dropped);
        idx->w.batches += s.batches;
        idx->w.events += s.events;
        kvb__ix_publish(idx, st);
    }
    return 0;
}

KVB_API int kvb_index_load_mem(const void *buf, size_t len, const kvb_index_config *cfg,
                               kvb_index **out)
{
    if (!buf || !out)
        return -EINVAL;
    kvb_index_config c;
    int rc = kvb__ix_config_check(cfg, &c);
    if (rc)
        return rc;
    struct snap_hdr h;
    rc = snap_check(buf, len, &c, &h);
    if (rc)
        return rc;
    if (cfg) {
        if (cfg->block_size != h.block_size || cfg->seed != h.seed)
            return -EINVAL; /* the keys would not mean the same */
    } else {
        c.block_size = h.block_size; /* defaults, with the snapshot's keys */
        c.seed = h.seed;
    }
    kvb_index *idx;
    rc = kvb_index_create(&c, &idx);
    if (rc)
        return rc;
    rc = snap_build(buf, len, &c, &h, idx);
    if (rc) {
        kvb_index_destroy(idx);
        return rc;
    }
    *out = idx;
    return 0;
}

KVB_API int kvb_index_load(const char *path, const kvb_index_config *cfg, kvb_index **out)
{
    if (!path || !out)
        return -EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > SIZE_MAX / 2) {
        close(fd);
        return S_ISDIR(sb.st_mode) ? -EISDIR : -EBADMSG;
    }
    size_t len = (size_t)sb.st_size;
    unsigned char *b = malloc(len ? len : 1);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, b + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    int rc = kvb_index_load_mem(b, got, cfg, out);
    free(b);
    return rc;
}

/* ---- Prometheus text --------------------------------------------------------- */

#define IX_LABELS "worker=\"%s\",dp_rank=\"%lld\""

static void metric_head(struct kvb__out *o, const char *name, const char *type, const char *help)
{
    kvb__out_printf(o, "# HELP kvblock_index_%s %s\n# TYPE kvblock_index_%s %s\n", name, help, name,
                    type);
}

enum ix_field {
    F_ENTRIES,
    F_ENGINE,
    F_LAST_SEQ,
    F_BATCHES,
    F_EVENTS,
    F_GAPS,
    F_REPLAYS,
    F_RESTARTS,
    F_CLEARS,
    F_COUNT
};

static int64_t stream_field(const struct kvb_ix_stream *st, int f)
{
    switch (f) {
    case F_ENTRIES:
        return (int64_t)st->entries;
    case F_ENGINE:
        return (int64_t)st->engine_n;
    case F_LAST_SEQ:
        return st->last_seq;
    case F_BATCHES:
        return (int64_t)st->batches;
    case F_EVENTS:
        return (int64_t)st->events;
    case F_GAPS:
        return (int64_t)st->counters[KVB_COUNT_GAPS];
    case F_REPLAYS:
        return (int64_t)st->counters[KVB_COUNT_REPLAYS];
    case F_RESTARTS:
        return (int64_t)st->counters[KVB_COUNT_RESTARTS];
    default:
        return (int64_t)st->counters[KVB_COUNT_CLEARS];
    }
}

KVB_API int kvb_index_metrics_text(const kvb_index *idx, char *buf, size_t cap)
{
    if (!idx || (cap && !buf))
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    struct kvb__out o = {.buf = buf, .cap = cap, .len = 0};
    if (cap)
        buf[0] = 0;
    uint64_t matches, matched;
    kvb__ix_match_counts(idx, &matches, &matched);

    pthread_rwlock_rdlock(&ix->smu);
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } g[] = {
        {"streams", "gauge", "Streams (worker, dp_rank) in the index.", idx->n_streams},
        {"keys", "gauge", "Distinct router hashes held by any stream.", idx->pub.keys},
        {"entries", "gauge", "(key, stream) holder entries.", idx->pub.entries},
        {"memory_bytes", "gauge", "Bytes the index holds through its allocator.", idx->pub.memory},
        {"batches_total", "counter", "Batches applied.", idx->pub.batches},
        {"events_total", "counter", "Events applied.", idx->pub.events},
        {"block_ops_total", "counter", "Blocks stored and removed.", idx->pub.block_ops},
        {"matches_total", "counter", "Match calls.", matches},
        {"matched_blocks_total", "counter", "Hashes looked up by matches.", matched},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        metric_head(&o, g[i].name, g[i].type, g[i].help);
        kvb__out_printf(&o, "kvblock_index_%s %llu\n", g[i].name, (unsigned long long)g[i].v);
    }

    static const struct {
        const char *name, *type, *help;
    } f[F_COUNT] = {
        {"stream_entries", "gauge", "(key, tier) entries a stream holds."},
        {"stream_engine_map", "gauge", "Engine hash -> router hash entries of a stream."},
        {"stream_last_seq", "gauge", "Sequence number of the last applied batch (-1: none)."},
        {"stream_batches_total", "counter", "Batches applied to a stream."},
        {"stream_events_total", "counter", "Events applied to a stream."},
        {"stream_gaps_total", "counter", "Sequence gaps seen."},
        {"stream_replays_total", "counter", "Batches applied from a replay."},
        {"stream_restarts_total", "counter", "Publisher restarts detected."},
        {"stream_clears_total", "counter", "Clears of a stream."},
    };
    char name[2 * KVB_INDEX_NAME_MAX + 1];
    if (idx->n_streams) {
        metric_head(&o, "stream_state", "gauge", "Stream state (1 for the current one).");
        for (uint32_t i = 0; i < idx->tab_cap; i++) {
            const struct kvb_ix_stream *st = idx->tab[i];
            if (!st)
                continue;
            kvb__prom_escape(st->name, name, sizeof name);
            for (int s = 0; s <= KVB_STREAM_STALE; s++)
                kvb__out_printf(&o, "kvblock_index_stream_state{" IX_LABELS ",state=\"%s\"} %d\n",
                                name, (long long)st->rank,
                                kvb_stream_state_name((kvb_stream_state)s),
                                st->state == (kvb_stream_state)s);
        }
        for (int fi = 0; fi < F_COUNT; fi++) {
            metric_head(&o, f[fi].name, f[fi].type, f[fi].help);
            for (uint32_t i = 0; i < idx->tab_cap; i++) {
                const struct kvb_ix_stream *st = idx->tab[i];
                if (!st)
                    continue;
                kvb__prom_escape(st->name, name, sizeof name);
                kvb__out_printf(&o, "kvblock_index_%s{" IX_LABELS "} %lld\n", f[fi].name, name,
                                (long long)st->rank, (long long)stream_field(st, fi));
            }
        }
        metric_head(&o, "stream_dropped_total", "counter",
                    "Events or blocks a stream's input had dropped, by reason.");
        for (uint32_t i = 0; i < idx->tab_cap; i++) {
            const struct kvb_ix_stream *st = idx->tab[i];
            if (!st)
                continue;
            kvb__prom_escape(st->name, name, sizeof name);
            for (int d = 0; d < KVB_DROP_COUNT; d++)
                kvb__out_printf(
                    &o, "kvblock_index_stream_dropped_total{" IX_LABELS ",reason=\"%s\"} %llu\n",
                    name, (long long)st->rank, kvb_drop_reason_name((kvb_drop_reason)d),
                    (unsigned long long)st->dropped[d]);
        }
    }
    pthread_rwlock_unlock(&ix->smu);
    if (o.len > (size_t)INT_MAX)
        return -EOVERFLOW;
    return (int)o.len;
}
