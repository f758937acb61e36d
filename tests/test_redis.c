/*
 * test_redis.c - the Redis log entry encoding (lib/redis_codec.c) and the
 * parts of the relay / replica API that need no Redis server
 * (kvblock/redis.h). The end-to-end behaviour against a real redis-server is
 * tests/redis/run.py (make check-redis).
 *
 * Encoding: round trips of every entry kind; the size query; bad input to the
 * encoder; every truncation, every single-byte change, a wrong version, and
 * corruptions that keep a valid checksum (so that the strict field checks are
 * what refuses them: unknown kind, tier, type, state, reserved bytes, counts
 * that do not fit, a length that does not add up), none of which may allocate
 * more than the entry's size; random inputs with a valid checksum.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "kvblock/redis.h"
#include "support/rng.h"

static const uint64_t H1[] = {11, 12, 13};
static const uint64_t H2[] = {0xfedcba9876543210ull};
static const uint32_t T1[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static kvb_index_event EV[4];

static kvb_redis_entry batch_entry(void)
{
    memset(EV, 0, sizeof EV);
    EV[0] = (kvb_index_event){.type = KVB_INDEX_EV_STORED,
                              .tier = KVB_TIER_HOST,
                              .n_hashes = 3,
                              .hashes = H1,
                              .has_parent = true,
                              .parent = 99,
                              .tokens = T1,
                              .n_tokens = 12,
                              .block_size = 4,
                              .salt_key = 0x1234567890abcdefull};
    EV[1] = (kvb_index_event){
        .type = KVB_INDEX_EV_REMOVED, .tier = KVB_TIER_DEVICE, .n_hashes = 1, .hashes = H2};
    EV[2] = (kvb_index_event){.type = KVB_INDEX_EV_CLEARED, .tier = KVB_TIER_DEVICE};
    EV[3] = (kvb_index_event){
        .type = KVB_INDEX_EV_STORED, .tier = KVB_TIER_DISK, .n_hashes = 1, .hashes = H2};
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    e.kind = KVB_REDIS_ENTRY_BATCH;
    e.ep = 7;
    e.seq = 123456789;
    e.sub = 0;
    e.state = KVB_STREAM_RESYNCING;
    e.dp_rank = 3;
    e.hashes = KVB_INDEX_HASHES_ENGINE;
    e.block_size = 4;
    e.ts = 1712345678.25;
    e.relay_ns = 1712345678250000001ll;
    e.n_events = 4;
    e.events = EV;
    e.dropped[KVB_DROP_GROUP] = 2;
    e.dropped[KVB_DROP_MULTIMODAL] = 5;
    return e;
}

static void *encode(const kvb_redis_entry *e, size_t *len)
{
    long need = kvb_redis_entry_encode(e, NULL, 0);
    cr_assert_gt(need, 0, "size query: %ld", need);
    void *buf = malloc((size_t)need);
    cr_assert_not_null(buf);
    long got = kvb_redis_entry_encode(e, buf, (size_t)need);
    cr_assert_eq(got, need);
    *len = (size_t)need;
    return buf;
}

static void assert_same_events(const kvb_index_event *a, const kvb_index_event *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(a[i].type, b[i].type, "event %u type", i);
        cr_assert_eq(a[i].tier, b[i].tier, "event %u tier", i);
        cr_assert_eq(a[i].n_hashes, b[i].n_hashes);
        cr_assert_eq(a[i].has_parent, b[i].has_parent);
        if (a[i].has_parent)
            cr_assert_eq(a[i].parent, b[i].parent);
        cr_assert_eq(a[i].n_tokens, b[i].n_tokens);
        cr_assert_eq(a[i].block_size, b[i].block_size);
        cr_assert_eq(a[i].salt_key, b[i].salt_key);
        for (uint32_t j = 0; j < a[i].n_hashes; j++)
            cr_assert_eq(a[i].hashes[j], b[i].hashes[j]);
        for (uint32_t j = 0; j < a[i].n_tokens; j++)
            cr_assert_eq(a[i].tokens[j], b[i].tokens[j]);
    }
}

Test(redis_codec, batch_round_trip)
{
    kvb_redis_entry e = batch_entry();
    size_t len;
    void *buf = encode(&e, &len);
    kvb_redis_entry d;
    cr_assert_eq(kvb_redis_entry_decode(buf, len, &d), 0);
    cr_assert_eq(d.kind, KVB_REDIS_ENTRY_BATCH);
    cr_assert_eq(d.ep, 7);
    cr_assert_eq(d.seq, 123456789);
    cr_assert_eq(d.sub, 0);
    cr_assert_eq(d.state, KVB_STREAM_RESYNCING);
    cr_assert_eq(d.dp_rank, 3);
    cr_assert_eq(d.hashes, KVB_INDEX_HASHES_ENGINE);
    cr_assert_eq(d.block_size, 4);
    cr_assert_eq(d.ts, 1712345678.25);
    cr_assert_eq(d.relay_ns, 1712345678250000001ll);
    cr_assert_eq(d.n_events, 4);
    cr_assert_eq(d.dropped[KVB_DROP_GROUP], 2);
    cr_assert_eq(d.dropped[KVB_DROP_MULTIMODAL], 5);
    cr_assert_eq(d.dropped[KVB_DROP_MALFORMED], 0);
    assert_same_events(e.events, d.events, 4);
    /* encoding the decoded entry gives the same bytes */
    size_t len2;
    void *buf2 = encode(&d, &len2);
    cr_assert_eq(len2, len);
    cr_assert_eq(memcmp(buf, buf2, len), 0);
    kvb_redis_entry_fini(&d);
    kvb_redis_entry_fini(&d); /* twice is harmless */
    cr_assert_null(d.events);
    free(buf);
    free(buf2);
}

Test(redis_codec, control_entries_round_trip)
{
    const struct {
        kvb_redis_entry_kind kind;
        kvb_stream_state state;
        kvb_redis_clear_reason reason;
    } cases[] = {
        {KVB_REDIS_ENTRY_CLEAR, KVB_STREAM_LIVE, KVB_REDIS_CLEAR_RESTART},
        {KVB_REDIS_ENTRY_CLEAR, KVB_STREAM_RESYNCING, KVB_REDIS_CLEAR_GAP},
        {KVB_REDIS_ENTRY_CLEAR, KVB_STREAM_RESYNCING, KVB_REDIS_CLEAR_OVERFLOW},
        {KVB_REDIS_ENTRY_CLEAR, KVB_STREAM_RESYNCING, KVB_REDIS_CLEAR_LOST},
        {KVB_REDIS_ENTRY_CLEAR, KVB_STREAM_STALE, KVB_REDIS_CLEAR_OTHER},
        {KVB_REDIS_ENTRY_STALE, KVB_STREAM_STALE, KVB_REDIS_CLEAR_OTHER},
        {KVB_REDIS_ENTRY_LIVE, KVB_STREAM_LIVE, KVB_REDIS_CLEAR_OTHER},
        {KVB_REDIS_ENTRY_LIVE, KVB_STREAM_RESYNCING, KVB_REDIS_CLEAR_OTHER},
        {KVB_REDIS_ENTRY_DROP, KVB_STREAM_LIVE, KVB_REDIS_CLEAR_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kvb_redis_entry e;
        memset(&e, 0, sizeof e);
        e.kind = cases[i].kind;
        e.state = cases[i].state;
        e.reason = cases[i].reason;
        e.ep = 3 + i;
        e.seq = i == 0 ? -1 : (int64_t)i * 1000;
        e.sub = (uint32_t)i;
        e.dp_rank = KVB_INDEX_NO_RANK;
        size_t len;
        void *buf = encode(&e, &len);
        kvb_redis_entry d;
        cr_assert_eq(kvb_redis_entry_decode(buf, len, &d), 0, "case %zu", i);
        cr_assert_eq(d.kind, e.kind);
        cr_assert_eq(d.state, e.state);
        cr_assert_eq(d.reason, e.reason);
        cr_assert_eq(d.ep, e.ep);
        cr_assert_eq(d.seq, e.seq);
        cr_assert_eq(d.sub, e.sub);
        cr_assert_eq(d.n_events, 0);
        cr_assert_null(d.events);
        kvb_redis_entry_fini(&d);
        free(buf);
    }
    cr_assert_str_eq(kvb_redis_entry_kind_name(KVB_REDIS_ENTRY_CLEAR), "clear");
    cr_assert_str_eq(kvb_redis_entry_kind_name((kvb_redis_entry_kind)42), "unknown");
}

Test(redis_codec, empty_batch_and_size_query)
{
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    e.kind = KVB_REDIS_ENTRY_BATCH;
    e.dp_rank = KVB_INDEX_NO_RANK;
    long need = kvb_redis_entry_encode(&e, NULL, 0);
    cr_assert_gt(need, 0);
    char small[8];
    /* too small: the size, nothing written */
    memset(small, 0x5a, sizeof small);
    cr_assert_eq(kvb_redis_entry_encode(&e, small, sizeof small), need);
    for (size_t i = 0; i < sizeof small; i++)
        cr_assert_eq(small[i], 0x5a);
    size_t len;
    void *buf = encode(&e, &len);
    kvb_redis_entry d;
    cr_assert_eq(kvb_redis_entry_decode(buf, len, &d), 0);
    cr_assert_eq(d.n_events, 0);
    kvb_redis_entry_fini(&d);
    free(buf);
}

Test(redis_codec, encoder_refuses_bad_input)
{
    kvb_redis_entry e = batch_entry();
    cr_assert_eq(kvb_redis_entry_encode(NULL, NULL, 0), -EINVAL);
    kvb_redis_entry b = e;
    b.kind = (kvb_redis_entry_kind)9;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.state = KVB_STREAM_LAGGING; /* never in the log */
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.events = NULL;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.reason = KVB_REDIS_CLEAR_GAP; /* a reason on a batch */
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.seq = -2;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.ep = (uint64_t)1 << 53; /* Lua compares positions as doubles */
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    b = e;
    b.dp_rank = -2;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    kvb_index_event bad[1] = {{.type = (kvb_index_ev_type)7, .tier = KVB_TIER_DEVICE}};
    b = e;
    b.events = bad;
    b.n_events = 1;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    bad[0].type = KVB_INDEX_EV_STORED;
    bad[0].tier = (kvb_tier)3;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    bad[0].tier = KVB_TIER_DEVICE;
    bad[0].n_hashes = 2; /* hashes NULL */
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    /* events on a control entry */
    b = e;
    b.kind = KVB_REDIS_ENTRY_STALE;
    b.state = KVB_STREAM_STALE;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -EINVAL);
    /* too many blocks */
    static kvb_index_event big[1];
    big[0] = (kvb_index_event){.type = KVB_INDEX_EV_STORED,
                               .tier = KVB_TIER_DEVICE,
                               .n_hashes = (KVB_REDIS_ENTRY_MAX_BYTES / 8) + 1,
                               .hashes = H1};
    b = e;
    b.events = big;
    b.n_events = 1;
    cr_assert_eq(kvb_redis_entry_encode(&b, NULL, 0), -E2BIG);
}

Test(redis_codec, every_truncation_and_byte_change_refused)
{
    kvb_redis_entry e = batch_entry();
    size_t len;
    uint8_t *buf = encode(&e, &len);
    kvb_redis_entry d;
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(kvb_redis_entry_decode(buf, n, &d), -EBADMSG, "truncated to %zu", n);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            buf[i] ^= (uint8_t)(1u << bit);
            cr_assert_eq(kvb_redis_entry_decode(buf, len, &d), -EBADMSG, "byte %zu bit %d", i, bit);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    cr_assert_eq(kvb_redis_entry_decode(buf, len, &d), 0);
    kvb_redis_entry_fini(&d);
    cr_assert_eq(kvb_redis_entry_decode(NULL, 0, &d), -EBADMSG);
    cr_assert_eq(kvb_redis_entry_decode(buf, len, NULL), -EINVAL);
    free(buf);
}

/* Change bytes, then fix the checksum so that only the field checks can refuse. */
static int decode_patched(const uint8_t *src, size_t len, size_t off, const void *val, size_t vlen,
                          size_t new_len)
{
    uint8_t *b = calloc(1, new_len > len ? new_len : len);
    cr_assert_not_null(b);
    memcpy(b, src, len < new_len ? len : new_len);
    memcpy(b + off, val, vlen);
    uint64_t sum = XXH3_64bits(b, new_len - 8);
    for (int i = 0; i < 8; i++)
        b[new_len - 8 + (size_t)i] = (uint8_t)(sum >> (8 * i));
    kvb_redis_entry d;
    int rc = kvb_redis_entry_decode(b, new_len, &d);
    if (rc == 0)
        kvb_redis_entry_fini(&d);
    free(b);
    return rc;
}

Test(redis_codec, corrupt_fields_with_valid_checksum_refused)
{
    kvb_redis_entry e = batch_entry();
    size_t len;
    uint8_t *buf = encode(&e, &len);
    const uint8_t two = 2, nine = 9, one = 1, ff = 0xff;
    const uint32_t huge = 0x7fffffffu;
    /* the header: version, kind, state, reason, reserved, hashes kind, n_dropped */
    cr_assert_eq(decode_patched(buf, len, 4, &two, 1, len), -EBADMSG, "version 2");
    cr_assert_eq(decode_patched(buf, len, 5, &nine, 1, len), -EBADMSG, "kind");
    cr_assert_eq(decode_patched(buf, len, 6, &two, 1, len), -EBADMSG, "state LAGGING");
    cr_assert_eq(decode_patched(buf, len, 7, &one, 1, len), -EBADMSG, "reason on a batch");
    cr_assert_eq(decode_patched(buf, len, 30, &one, 1, len), -EBADMSG, "reserved");
    cr_assert_eq(decode_patched(buf, len, 28, &two, 1, len), -EBADMSG, "hashes kind");
    cr_assert_eq(decode_patched(buf, len, 29, &ff, 1, len), -EBADMSG, "n_dropped");
    cr_assert_eq(decode_patched(buf, len, 44, &huge, 4, len), -EBADMSG, "n_events");
    /* the first event: after the header and KVB_DROP_COUNT drop counters */
    size_t ev = 64 + 4 * KVB_DROP_COUNT;
    cr_assert_eq(decode_patched(buf, len, ev, &nine, 1, len), -EBADMSG, "event type");
    cr_assert_eq(decode_patched(buf, len, ev + 1, &nine, 1, len), -EBADMSG, "tier");
    cr_assert_eq(decode_patched(buf, len, ev + 2, &two, 1, len), -EBADMSG, "has_parent");
    cr_assert_eq(decode_patched(buf, len, ev + 3, &one, 1, len), -EBADMSG, "event reserved");
    cr_assert_eq(decode_patched(buf, len, ev + 4, &huge, 4, len), -EBADMSG, "n_hashes");
    cr_assert_eq(decode_patched(buf, len, ev + 8, &huge, 4, len), -EBADMSG, "n_tokens");
    /* a length that does not add up: one byte more or less before the checksum */
    cr_assert_eq(decode_patched(buf, len, 0, buf, 4, len + 1), -EBADMSG, "longer");
    cr_assert_eq(decode_patched(buf, len, 0, buf, 4, len - 1), -EBADMSG, "shorter");
    /* unchanged bytes with a recomputed checksum still decode */
    cr_assert_eq(decode_patched(buf, len, 0, buf, 4, len), 0);
    free(buf);
}

Test(redis_codec, random_inputs_never_trusted)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint8_t b[512];
    int ok = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = 72 + (size_t)(x % 400);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)tu_xorshift64(&x);
        /* a plausible header so that the field checks are reached */
        b[0] = 'K', b[1] = 'V', b[2] = 'B', b[3] = 'R', b[4] = 1;
        b[5] = (uint8_t)(1 + x % 5);
        uint64_t sum = XXH3_64bits(b, len - 8);
        for (int i = 0; i < 8; i++)
            b[len - 8 + (size_t)i] = (uint8_t)(sum >> (8 * i));
        kvb_redis_entry d;
        if (kvb_redis_entry_decode(b, len, &d) == 0) {
            ok++;
            kvb_redis_entry_fini(&d);
        }
    }
    cr_assert_lt(ok, 20000);
}

Test(redis_api, bad_configuration_and_unreachable_server)
{
    kvb_redis_relay_config rc;
    kvb_redis_relay_config_init(&rc);
    cr_assert_eq(rc.lease_ms, 2000);
    cr_assert_eq(rc.renew_ms, 500);
    kvb_redis_relay *relay = NULL;
    cr_assert_eq(kvb_redis_relay_create(NULL, &relay), -EINVAL);
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), kvb_redis_available() ? -EINVAL : -ENOTSUP);
    rc.url = "http://127.0.0.1:1";
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), kvb_redis_available() ? -EINVAL : -ENOTSUP);
    kvb_redis_replica_config pc;
    kvb_redis_replica_config_init(&pc);
    kvb_redis_replica *rep = NULL;
    const char *bad[] = {"redis://",      "redis://:6379",  "redis://h:0",   "redis://h:70000",
                         "redis://h:1/x", "redis://h:12ab", "redis://user@h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pc.url = bad[i];
        cr_assert_eq(kvb_redis_replica_create(&pc, &rep),
                     kvb_redis_available() ? -EINVAL : -ENOTSUP, "%s", bad[i]);
    }
    if (!kvb_redis_available())
        return;
    /* nothing listens on port 1: the replica serves its (empty) index, reports
     * itself connecting, and stops cleanly */
    pc.url = "redis://127.0.0.1:1/2";
    pc.backoff_max_ms = 100;
    cr_assert_eq(kvb_redis_replica_create(&pc, &rep), 0);
    uint64_t h = 1;
    kvb_index_result res[2];
    cr_assert_eq(kvb_redis_replica_match(rep, &h, 1, res, 2), 0);
    cr_assert_eq(kvb_redis_replica_wait_synced(rep, 200), -ETIMEDOUT);
    kvb_redis_replica_stats st;
    cr_assert_eq(kvb_redis_replica_stats_get(rep, &st), 0);
    cr_assert_eq(st.state, KVB_REDIS_REPLICA_CONNECTING);
    cr_assert_eq(st.connected, false);
    kvb_index *idx = kvb_redis_replica_acquire(rep);
    cr_assert_not_null(idx);
    cr_assert_eq(kvb_redis_replica_destroy(rep), -EBUSY);
    kvb_redis_replica_release(rep, idx);
    cr_assert_eq(kvb_redis_replica_destroy(rep), 0);
    /* a relay with no server stays a standby */
    rc.url = "redis://[::1]:1";
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), 0);
    cr_assert_eq(kvb_redis_relay_wait_active(relay, 200), -ETIMEDOUT);
    cr_assert_null(kvb_redis_relay_index(relay));
    cr_assert_eq(kvb_redis_relay_worker_removed(relay, "w"), -ENOENT);
    /* the callback of a relay that is not active does nothing */
    kvb_redis_relay_subscriber_cb(relay, KVB_SUB_CLEAR, "w", 1, NULL, KVB_STREAM_LIVE);
    kvb_redis_relay_stats rs;
    cr_assert_eq(kvb_redis_relay_stats_get(relay, &rs), 0);
    cr_assert_eq(rs.state, KVB_REDIS_RELAY_STANDBY);
    cr_assert_eq(rs.enqueued, 0);
    cr_assert_eq(kvb_redis_relay_snapshot(relay, 10, NULL), -EAGAIN);
    cr_assert_eq(kvb_redis_relay_destroy(relay), 0);
    cr_assert_str_eq(kvb_redis_relay_state_name(KVB_REDIS_RELAY_FENCED), "fenced");
    cr_assert_str_eq(kvb_redis_replica_state_name(KVB_REDIS_REPLICA_LAGGING), "lagging");
}

/* ---- against a real redis-server (skipped when there is none) ------------------------- */

#ifdef KVB_HAVE_REDIS
#include "redis_internal.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

struct server {
    pid_t pid;
    int port;
    char dir[64];
    char url[64];
};

/* redis-server on a free loopback port in a temporary directory; killed with the
 * test process (PR_SET_PDEATHSIG) even when an assertion ends the test. */
static bool server_start(struct server *s)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0)
        return false;
    s->port = free_port();
    snprintf(s->dir, sizeof s->dir, "/tmp/kvb-test-redis-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir));
    snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
    s->pid = fork();
    cr_assert_geq(s->pid, 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char port[16];
        snprintf(port, sizeof port, "%d", s->port);
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               s->dir, "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 750; i++) { /* 15 s: a loaded machine starts processes slowly */
        struct kvb__rconn rc;
        kvb__rconn_init(&rc, s->url, NULL, 200);
        if (kvb__rconn_connect(&rc) == 0) {
            kvb__rconn_close(&rc);
            return true;
        }
        usleep(20000);
    }
    cr_assert_fail("redis-server did not start");
    return false;
}

static void server_stop(struct server *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    cr_assert_eq(system(cmd), 0);
}

static long long script_int(struct kvb__rconn *rc, int script, int nkeys, int nargs,
                            const char **args)
{
    redisReply *r = kvb__rconn_script(rc, script, nkeys, nargs, args, NULL);
    cr_assert_not_null(r);
    long long v = -999;
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    freeReplyObject(r);
    return v;
}

static long long append1(struct kvb__rconn *rc, const char *inc, const char *seq)
{
    const char *args[7] = {"kvb:lease", "kvb:stream:w", inc, "0", seq, "0", "blob"};
    return script_int(rc, KVB_RS_APPEND, 2, 7, args);
}

Test(redis_server, lua_lease_and_fencing)
{
    struct server s;
    if (!server_start(&s))
        cr_skip_test("redis-server not installed");
    struct kvb__rconn a, b;
    cr_assert_eq(kvb__rconn_init(&a, s.url, NULL, 1000), 0);
    cr_assert_eq(kvb__rconn_init(&b, s.url, NULL, 1000), 0);
    cr_assert_eq(kvb__rconn_connect(&a), 0);
    cr_assert_eq(kvb__rconn_connect(&b), 0);
    const char *acq[4] = {"kvb:lease", "kvb:incarnation", "0", "2000"};
    cr_assert_eq(script_int(&a, KVB_RS_ACQUIRE, 2, 4, acq), 1, "A takes the lease, inc 1");
    cr_assert_eq(script_int(&b, KVB_RS_ACQUIRE, 2, 4, acq), 0, "held: B waits");
    /* the holder appends in position order; a position not above the last is refused */
    cr_assert_eq(append1(&a, "1", "0"), 1);
    cr_assert_eq(append1(&a, "1", "1"), 1);
    cr_assert_eq(append1(&a, "1", "1"), -2, "duplicate position");
    cr_assert_eq(append1(&a, "1", "0"), -2, "older position");
    cr_assert_eq(append1(&b, "2", "2"), -1, "not the holder");
    /* A's lease lapses (as when it is frozen); B takes it with a newer incarnation */
    const char *px[3] = {"PEXPIRE", "kvb:lease", "1"};
    redisReply *r = kvb__rconn_cmd(&b, 3, px, NULL);
    cr_assert_not_null(r);
    freeReplyObject(r);
    usleep(20000);
    cr_assert_eq(script_int(&b, KVB_RS_ACQUIRE, 2, 4, acq), 2);
    /* the woken A can do nothing under its old incarnation */
    const char *renew[3] = {"kvb:lease", "1", "2000"};
    cr_assert_eq(script_int(&a, KVB_RS_RENEW, 1, 3, renew), 0);
    cr_assert_eq(append1(&a, "1", "5"), -1);
    const char *trim[4] = {"kvb:lease", "kvb:stream:w", "1", "0-0"};
    cr_assert_eq(script_int(&a, KVB_RS_TRIM, 2, 4, trim), -1);
    const char *snap[5] = {"kvb:lease", "kvb:snapshot", "1", "meta", "index"};
    cr_assert_eq(script_int(&a, KVB_RS_SNAPSHOT, 2, 5, snap), -1);
    const char *rel[2] = {"kvb:lease", "1"};
    cr_assert_eq(script_int(&a, KVB_RS_RELEASE, 1, 2, rel), 0, "A cannot release B's lease");
    cr_assert_eq(append1(&b, "2", "2"), 1, "B appends");
    /* ordinals: 0, 1, 2 across both incarnations */
    const char *xr[4] = {"XRANGE", "kvb:stream:w", "-", "+"};
    r = kvb__rconn_cmd(&b, 4, xr, NULL);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    for (size_t i = 0; i < 3; i++) {
        struct kvb__rfields f;
        cr_assert(kvb__rlog_fields(r->element[i], &f));
        cr_assert(f.have_n && f.have_inc && f.have_pos);
        cr_assert_eq(f.n, (int64_t)i);
        cr_assert_eq(f.inc, i < 2 ? 1u : 2u);
        cr_assert_eq(f.pos.seq, (int64_t)i);
    }
    freeReplyObject(r);
    /* an incarnation counter that went back (a restart that lost it) never hands out
     * an incarnation at or below the newest the caller has seen */
    const char *set0[3] = {"SET", "kvb:incarnation", "0"};
    freeReplyObject(kvb__rconn_cmd(&b, 3, set0, NULL));
    const char *del[2] = {"DEL", "kvb:lease"};
    freeReplyObject(kvb__rconn_cmd(&b, 2, del, NULL));
    const char *acq5[4] = {"kvb:lease", "kvb:incarnation", "5", "2000"};
    cr_assert_eq(script_int(&a, KVB_RS_ACQUIRE, 2, 4, acq5), 6);
    /* the script cache flushed (a restarted server): EVALSHA falls back to EVAL */
    const char *flush[2] = {"SCRIPT", "FLUSH"};
    freeReplyObject(kvb__rconn_cmd(&b, 2, flush, NULL));
    cr_assert_eq(script_int(&a, KVB_RS_RENEW, 1, 3, (const char *[]){"kvb:lease", "6", "2000"}), 1);
    kvb__rconn_close(&a);
    kvb__rconn_close(&b);
    server_stop(&s);
}

/* A relay and a replica end to end in one process: batches through the callback,
 * a snapshot, a cold replica, a corrupt snapshot (refused, streams read again). */
static kvb_index_event ev_store(const uint64_t *h, uint32_t n)
{
    return (kvb_index_event){
        .type = KVB_INDEX_EV_STORED, .tier = KVB_TIER_DEVICE, .n_hashes = n, .hashes = h};
}

static int wait_applied(kvb_redis_replica *rep, uint64_t want, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        kvb_redis_replica_stats st;
        kvb_redis_replica_stats_get(rep, &st);
        if (st.state == KVB_REDIS_REPLICA_SYNCED && st.lag_entries == 0 && st.applied >= want)
            return 0;
        usleep(10000);
    }
    return -ETIMEDOUT;
}

static uint32_t holders(kvb_redis_replica *rep, uint64_t h)
{
    kvb_index_result res[8];
    int n = kvb_redis_replica_match(rep, &h, 1, res, 8);
    cr_assert_geq(n, 0);
    return (uint32_t)n;
}

Test(redis_server, relay_to_replica_snapshot_and_corrupt_snapshot)
{
    struct server s;
    if (!server_start(&s))
        cr_skip_test("redis-server not installed");
    kvb_redis_relay_config rc;
    kvb_redis_relay_config_init(&rc);
    rc.url = s.url;
    kvb_redis_relay *relay;
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), 0);
    cr_assert_eq(kvb_redis_relay_wait_active(relay, 20000), 0);
    kvb_index *idx = kvb_redis_relay_index(relay);
    cr_assert_not_null(idx);
    /* play the subscriber: apply to the relay's index, then call back */
    kvb_index_stream_config sc = {.name = "w", .dp_rank = 0, .hashes = KVB_INDEX_HASHES_ROUTER};
    uint32_t sid;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &sid), 0);
    uint64_t hs[100];
    for (int i = 0; i < 100; i++) {
        hs[i] = 1000 + (uint64_t)i;
        kvb_index_event e = ev_store(&hs[i], 1);
        cr_assert_eq(kvb_index_apply(idx, sid, &e, 1, i), 0);
        kvb_index_batch b = {.ts = 1.0, .dp_rank = 0, .n_events = 1, .events = &e};
        kvb_redis_relay_subscriber_cb(relay, KVB_SUB_BATCH, "w", i, &b, KVB_STREAM_LIVE);
        if (i == 49) {
            cr_assert_eq(kvb_redis_relay_flush(relay, 20000), 0);
            size_t bytes = 0;
            cr_assert_eq(kvb_redis_relay_snapshot(relay, 20000, &bytes), 0);
            cr_assert_gt(bytes, 0);
        }
    }
    /* a restart clear, then the new sequence space from 0 */
    kvb_redis_relay_subscriber_cb(relay, KVB_SUB_CLEAR, "w", 0, NULL, KVB_STREAM_LIVE);
    cr_assert_eq(kvb_index_stream_clear(idx, sid, KVB_STREAM_LIVE), 0);
    kvb_index_event e = ev_store(&hs[7], 1);
    cr_assert_eq(kvb_index_apply(idx, sid, &e, 1, 0), 0);
    kvb_index_batch b = {.ts = 2.0, .dp_rank = 0, .n_events = 1, .events = &e};
    kvb_redis_relay_subscriber_cb(relay, KVB_SUB_BATCH, "w", 0, &b, KVB_STREAM_LIVE);
    cr_assert_eq(kvb_redis_relay_flush(relay, 20000), 0);
    kvb_redis_relay_stats rs;
    cr_assert_eq(kvb_redis_relay_stats_get(relay, &rs), 0);
    cr_assert_eq(rs.appended, 102);
    cr_assert_eq(rs.snapshots, 1);

    kvb_redis_replica_config pc;
    kvb_redis_replica_config_init(&pc);
    pc.url = s.url;
    kvb_redis_replica *rep;
    cr_assert_eq(kvb_redis_replica_create(&pc, &rep), 0);
    cr_assert_eq(wait_applied(rep, 52, 20000), 0, "cold replica: snapshot + 52 entries");
    kvb_redis_replica_stats st;
    kvb_redis_replica_stats_get(rep, &st);
    cr_assert_eq(st.snapshot_loads, 1);
    cr_assert_eq(st.applied, 52);
    cr_assert_eq(holders(rep, hs[7]), 1);
    cr_assert_eq(holders(rep, hs[8]), 0, "cleared by the restart");
    kvb_redis_replica_destroy(rep);

    /* a corrupt snapshot is refused: the replica reads every stream from its start */
    struct kvb__rconn c;
    kvb__rconn_init(&c, s.url, NULL, 1000);
    cr_assert_eq(kvb__rconn_connect(&c), 0);
    const char *hset[4] = {"HSET", "kvb:snapshot", "meta", "garbage"};
    redisReply *r = kvb__rconn_cmd(&c, 4, hset, NULL);
    cr_assert_not_null(r);
    freeReplyObject(r);
    kvb__rconn_close(&c);
    cr_assert_eq(kvb_redis_replica_create(&pc, &rep), 0);
    cr_assert_eq(wait_applied(rep, 102, 20000), 0);
    kvb_redis_replica_stats_get(rep, &st);
    cr_assert_eq(st.snapshots_refused, 1);
    cr_assert_eq(st.snapshot_loads, 0);
    cr_assert_eq(holders(rep, hs[7]), 1);
    cr_assert_eq(holders(rep, hs[8]), 0);
    kvb_redis_replica_destroy(rep);
    cr_assert_eq(kvb_redis_relay_destroy(relay), 0);
    server_stop(&s);
}

/* The relay's queue overflows while Redis is frozen: the batches that did not fit
 * are not logged, the worker is cleared in the relay's index and a clear goes to
 * the log before its next batch: afterwards the replica answers exactly as the
 * relay does (nothing stale on either side). */
Test(redis_server, queue_overflow_clears_instead_of_diverging)
{
    struct server s;
    if (!server_start(&s))
        cr_skip_test("redis-server not installed");
    kvb_redis_relay_config rc;
    kvb_redis_relay_config_init(&rc);
    rc.url = s.url;
    rc.queue_entries = 8;
    rc.io_timeout_ms = 300;
    rc.lease_ms = 5000;
    rc.renew_ms = 1000;
    kvb_redis_relay *relay;
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), 0);
    cr_assert_eq(kvb_redis_relay_wait_active(relay, 20000), 0);
    kvb_index *idx = kvb_redis_relay_index(relay);
    kvb_index_stream_config sc = {.name = "w", .dp_rank = 0, .hashes = KVB_INDEX_HASHES_ROUTER};
    uint32_t sid;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &sid), 0);
    uint64_t hs[64];
    int64_t seq = 0;
    /* 10 batches logged normally */
    for (; seq < 10; seq++) {
        hs[seq] = 5000 + (uint64_t)seq;
        kvb_index_event e = ev_store(&hs[seq], 1);
        cr_assert_eq(kvb_index_apply(idx, sid, &e, 1, seq), 0);
        kvb_index_batch b = {.dp_rank = 0, .n_events = 1, .events = &e};
        kvb_redis_relay_subscriber_cb(relay, KVB_SUB_BATCH, "w", seq, &b, KVB_STREAM_LIVE);
    }
    cr_assert_eq(kvb_redis_relay_flush(relay, 20000), 0);
    /* Redis frozen: 30 more batches, the queue holds 8 */
    kill(s.pid, SIGSTOP);
    for (; seq < 40; seq++) {
        hs[seq] = 5000 + (uint64_t)seq;
        kvb_index_event e = ev_store(&hs[seq], 1);
        cr_assert_eq(kvb_index_apply(idx, sid, &e, 1, seq), 0);
        kvb_index_batch b = {.dp_rank = 0, .n_events = 1, .events = &e};
        kvb_redis_relay_subscriber_cb(relay, KVB_SUB_BATCH, "w", seq, &b, KVB_STREAM_LIVE);
    }
    kvb_redis_relay_stats rs;
    kvb_redis_relay_stats_get(relay, &rs);
    cr_assert_gt(rs.overflows, 0);
    kill(s.pid, SIGCONT);
    /* the worker's next batches, once there is room again */
    cr_assert_eq(kvb_redis_relay_flush(relay, 10000), 0);
    for (; seq < 45; seq++) {
        hs[seq] = 5000 + (uint64_t)seq;
        kvb_index_event e = ev_store(&hs[seq], 1);
        cr_assert_eq(kvb_index_apply(idx, sid, &e, 1, seq), 0);
        kvb_index_batch b = {.dp_rank = 0, .n_events = 1, .events = &e};
        kvb_redis_relay_subscriber_cb(relay, KVB_SUB_BATCH, "w", seq, &b, KVB_STREAM_LIVE);
    }
    cr_assert_eq(kvb_redis_relay_flush(relay, 10000), 0);
    kvb_redis_relay_stats_get(relay, &rs);
    cr_assert_eq(rs.state, KVB_REDIS_RELAY_ACTIVE, "lease kept (%s)",
                 kvb_redis_relay_state_name(rs.state));
    cr_assert_geq(rs.overflow_clears, 1, "a clear before the batches after an overflow");
    kvb_redis_replica_config pc;
    kvb_redis_replica_config_init(&pc);
    pc.url = s.url;
    kvb_redis_replica *rep;
    cr_assert_eq(kvb_redis_replica_create(&pc, &rep), 0);
    cr_assert_eq(kvb_redis_replica_wait_synced(rep, 20000), 0);
    uint32_t held_relay = 0, held_rep = 0;
    for (int i = 0; i < 45; i++) {
        kvb_index_result res[2];
        int a = kvb_index_match(idx, &hs[i], 1, res, 2);
        int b = kvb_redis_replica_match(rep, &hs[i], 1, res, 2);
        cr_assert_eq(a, b, "block %d: relay %d, replica %d", i, a, b);
        held_relay += (uint32_t)a;
        held_rep += (uint32_t)b;
    }
    /* the first 10 and the overflowed ones are gone from both; the last ones held */
    cr_assert_eq(held_relay, held_rep);
    cr_assert_lt(held_relay, 45);
    cr_assert_geq(held_relay, 5);
    kvb_redis_replica_destroy(rep);
    cr_assert_eq(kvb_redis_relay_destroy(relay), 0);
    server_stop(&s);
}

/* ---- a peer that answers nonsense ----------------------------------------------------- */

struct liar {
    int fd;
    volatile bool stop;
    uint64_t rng;
};

static uint64_t liar_rand(struct liar *l)
{
    return tu_xorshift64(&l->rng);
}

/* One random RESP value (nested at most `depth`). */
static size_t liar_value(struct liar *l, char *out, size_t cap, int depth)
{
    if (cap < 64)
        return 0;
    switch (liar_rand(l) % (depth > 0 ? 7 : 5)) {
    case 0:
        return (size_t)snprintf(out, cap, ":%lld\r\n", (long long)(liar_rand(l) % 5) - 2);
    case 1:
        return (size_t)snprintf(out, cap, "+OK\r\n");
    case 2:
        return (size_t)snprintf(out, cap, "-ERR no\r\n");
    case 3:
        return (size_t)snprintf(out, cap, "$-1\r\n");
    case 4: {
        static const char *strs[] = {
            "0",     "1-1", "-1",           "ep",  "n",
            "batch", "seq", "kvb:stream:w", "abc", "9999999999999999999999"};
        const char *x = strs[liar_rand(l) % 10];
        return (size_t)snprintf(out, cap, "$%zu\r\n%s\r\n", strlen(x), x);
    }
    default: {
        int n = (int)(liar_rand(l) % 5) - 1;
        size_t o = (size_t)snprintf(out, cap, "*%d\r\n", n);
        for (int i = 0; i < n; i++)
            o += liar_value(l, out + o, cap - o, depth - 1);
        return o;
    }
    }
}

static void *liar_main(void *arg)
{
    struct liar *l = arg;
    while (!l->stop) {
        int c = accept(l->fd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {0, 100000};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char in[65536], out[16384];
        for (int k = 0; k < 50 && !l->stop; k++) {
            ssize_t got = recv(c, in, sizeof in, 0);
            if (got <= 0)
                break;
            size_t n = liar_value(l, out, sizeof out, 4);
            if (send(c, out, n, MSG_NOSIGNAL) < 0)
                break;
        }
        close(c);
    }
    return NULL;
}

Test(redis_server, nonsense_from_the_peer_never_crashes)
{
    struct liar l = {.rng = 0x1234567u};
    l.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(l.fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l.fd, 16), 0);
    cr_assert_eq(getsockname(l.fd, (struct sockaddr *)&a, &al), 0);
    struct timeval tv = {0, 100000};
    setsockopt(l.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_t t;
    pthread_create(&t, NULL, liar_main, &l);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    kvb_redis_relay_config rc;
    kvb_redis_relay_config_init(&rc);
    rc.url = url;
    rc.io_timeout_ms = 200;
    rc.backoff_max_ms = 20;
    kvb_redis_replica_config pc;
    kvb_redis_replica_config_init(&pc);
    pc.url = url;
    pc.io_timeout_ms = 200;
    pc.backoff_min_ms = 5;
    pc.backoff_max_ms = 20;
    pc.scan_ms = 10;
    kvb_redis_relay *relay;
    kvb_redis_replica *rep;
    cr_assert_eq(kvb_redis_relay_create(&rc, &relay), 0);
    cr_assert_eq(kvb_redis_replica_create(&pc, &rep), 0);
    for (int i = 0; i < 150; i++) {
        uint64_t h = (uint64_t)i;
        kvb_index_result res[2];
        cr_assert_geq(kvb_redis_replica_match(rep, &h, 1, res, 2), 0);
        usleep(10000);
    }
    kvb_redis_replica_stats st;
    kvb_redis_replica_stats_get(rep, &st);
    cr_assert_gt(st.errors, 0, "the peer's answers were refused");
    cr_assert_eq(kvb_redis_replica_destroy(rep), 0);
    cr_assert_eq(kvb_redis_relay_destroy(relay), 0);
    l.stop = true;
    pthread_join(t, NULL);
    close(l.fd);
}
#endif /* KVB_HAVE_REDIS */
