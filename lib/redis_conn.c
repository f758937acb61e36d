/*
 * redis_conn.c - one hiredis connection of a relay or replica
 * (kvblock/redis.h): URL parsing, connect (AUTH, SELECT, the server's run_id,
 * SCRIPT LOAD), commands, scripts with EVALSHA and the EVAL fallback (a server
 * that restarted has an empty script cache), pipelined script calls, and the
 * checks every reply goes through before it is read. hiredis speaks RESP; this
 * file never builds or parses protocol by hand.
 *
 * The Lua scripts are the fencing of FLEET.md section 8: every write checks
 * that the caller's incarnation holds the lease, the append script also that
 * each entry's position (ep, seq, sub) is above the stream's last one, and it
 * numbers entries (field n) so that readers see holes. Lua numbers are
 * doubles: positions and incarnations stay below 2^53 (redis_codec.c checks).
 *
 * A hiredis context that saw an I/O or protocol error is unusable: it is
 * closed at once and the owner reconnects with backoff.
 */
#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const kvb__rscript[KVB_RS_COUNT] = {
    /* ACQUIRE: the lease only when nobody holds it, with a fresh incarnation
     * (INCR at acquisition, so incarnations grow in the order leases are taken;
     * never at or below min_inc, the newest the caller has seen in the log, in
     * case the counter went back with a Redis restart that lost it) */
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "local inc = redis.call('INCR', KEYS[2])\n"
    "local m = tonumber(ARGV[1])\n"
    "if m and inc <= m then inc = m + 1; redis.call('SET', KEYS[2], string.format('%d', inc)) end\n"
    "redis.call('SET', KEYS[1], string.format('%d', inc), 'PX', ARGV[2])\n"
    "return inc\n",
    /* RENEW: compare-and-pexpire */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n",
    /* RELEASE: compare-and-delete */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n",
    /* APPEND: {cnt, last id, last n} or {-1} (not the holder) or {-2, cnt, id, n}
     * (an entry at or below the stream's last position: nothing after it) */
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end\n"
    "local lep, lseq, lsub, ln = -1, -1, -1, -1\n"
    "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "if #last > 0 then\n"
    "  local f = last[1][2]\n"
    "  for i = 1, #f - 1, 2 do\n"
    "    local k, v = f[i], tonumber(f[i + 1])\n"
    "    if v then\n"
    "      if k == 'ep' then lep = v elseif k == 'seq' then lseq = v\n"
    "      elseif k == 'sub' then lsub = v elseif k == 'n' then ln = v end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local id, cnt = '', 0\n"
    "for i = 2, #ARGV - 3, 4 do\n"
    "  local ep, seq, sub = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n"
    "  if ep < lep or (ep == lep and (seq < lseq or (seq == lseq and sub <= lsub))) then\n"
    "    return {-2, cnt, id, ln}\n"
    "  end\n"
    "  ln = ln + 1\n"
    "  id = redis.call('XADD', KEYS[2], '*', 'seq', ARGV[i + 1], 'inc', ARGV[1], 'ep', ARGV[i],\n"
    "                  'sub', ARGV[i + 2], 'n', string.format('%d', ln), 'batch', ARGV[i + 3])\n"
    "  lep, lseq, lsub = ep, seq, sub\n"
    "  cnt = cnt + 1\n"
    "end\n"
    "return {cnt, id, ln}\n",
    /* SNAPSHOT: replace the snapshot hash atomically, holder only */
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "redis.call('DEL', KEYS[2])\n"
    "redis.call('HSET', KEYS[2], 'v', '1', 'inc', ARGV[1], 'meta', ARGV[2], 'index', ARGV[3])\n"
    "return 1\n",
    /* TRIM: holder only */
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "return redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])\n",
};

int64_t kvb__realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- reply checks ---------------------------------------------------------- */

bool kvb__rr_int(const redisReply *r, long long *out)
{
    if (!r || r->type != REDIS_REPLY_INTEGER)
        return false;
    *out = r->integer;
    return true;
}

bool kvb__rr_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           (r->str || r->len == 0);
}

bool kvb__rr_arr(const redisReply *r, size_t min)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < min)
        return false;
    if (r->elements && !r->element)
        return false;
    for (size_t i = 0; i < r->elements; i++)
        if (!r->element[i])
            return false;
    return true;
}

bool kvb__rr_err(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (!s || len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool kvb__parse_i64(const char *s, size_t len, int64_t *out)
{
    if (!s || len == 0 || len > 20)
        return false;
    bool neg = s[0] == '-';
    uint64_t v;
    if (!parse_u64(s + neg, len - neg, &v))
        return false;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

bool kvb__parse_id(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
{
    if (!s)
        return false;
    const char *dash = memchr(s, '-', len);
    if (!dash)
        return false;
    size_t a = (size_t)(dash - s);
    return parse_u64(s, a, ms) && parse_u64(dash + 1, len - a - 1, seq);
}

int kvb__fmt_id(uint64_t ms, uint64_t seq, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%llu-%llu", (unsigned long long)ms, (unsigned long long)seq);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* ---- URL and keys ------------------------------------------------------------ */

static int copy_part(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return -EINVAL;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* redis://[[user]:password@]host[:port][/db] ; host may be [v6] */
static int parse_url(struct kvb__rconn *rc, const char *url)
{
    static const char scheme[] = "redis://";
    if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0)
        return -EINVAL;
    const char *p = url + sizeof scheme - 1;
    const char *end = p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = NULL;
    for (const char *q = p; q < (slash ? slash : end); q++)
        if (*q == '@')
            auth_end = q; /* the last '@' before the path: passwords may hold '@' */
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!colon)
            return -EINVAL;
        if (copy_part(rc->user, sizeof rc->user, p, (size_t)(colon - p)) < 0 ||
            copy_part(rc->password, sizeof rc->password, colon + 1,
                      (size_t)(auth_end - colon - 1)) < 0)
            return -EINVAL;
        rc->has_password = true;
        p = auth_end + 1;
    }
    const char *hend = slash ? slash : end;
    const char *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb || copy_part(rc->host, sizeof rc->host, p + 1, (size_t)(rb - p - 1)) < 0)
            return -EINVAL;
        if (rb + 1 < hend) {
            if (rb[1] != ':')
                return -EINVAL;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(hend - p));
        if (copy_part(rc->host, sizeof rc->host, p, (size_t)((colon ? colon : hend) - p)) < 0)
            return -EINVAL;
        if (colon)
            port = colon + 1;
    }
    if (!rc->host[0])
        return -EINVAL;
    rc->port = 6379;
    if (port) {
        int64_t v;
        if (!kvb__parse_i64(port, (size_t)(hend - port), &v) || v < 1 || v > 65535)
            return -EINVAL;
        rc->port = (int)v;
    }
    rc->db = 0;
    if (slash && slash + 1 < end) {
        int64_t v;
        if (!kvb__parse_i64(slash + 1, (size_t)(end - slash - 1), &v) || v < 0 || v > INT_MAX)
            return -EINVAL;
        rc->db = (int)v;
    }
    return 0;
}

int kvb__rconn_init(struct kvb__rconn *rc, const char *url, const char *prefix,
                    uint32_t io_timeout_ms)
{
    memset(rc, 0, sizeof *rc);
    int r = parse_url(rc, url);
    if (r < 0)
        return r;
    if (!prefix)
        prefix = "kvb:";
    size_t pl = strlen(prefix);
    if (pl >= sizeof rc->prefix)
        return -EINVAL;
    memcpy(rc->prefix, prefix, pl + 1);
    rc->prefix_len = pl;
    rc->io_timeout_ms = io_timeout_ms ? io_timeout_ms : 1000;
    return 0;
}

int kvb__rconn_key(const struct kvb__rconn *rc, const char *suffix, const char *name, char *out,
                   size_t cap)
{
    int n = snprintf(out, cap, "%s%s%s", rc->prefix, suffix, name ? name : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* ---- connection ---------------------------------------------------------------- */

static struct timeval tv_of(uint32_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void set_error(struct kvb__rconn *rc, const char *what)
{
    snprintf(rc->last_error, sizeof rc->last_error, "%s", what ? what : "error");
}

void kvb__rconn_close(struct kvb__rconn *rc)
{
    if (rc->c)
        redisFree(rc->c);
    rc->c = NULL;
}

void kvb__rconn_fail(struct kvb__rconn *rc)
{
    rc->errors++;
    if (!rc->last_error[0])
        set_error(rc, "unexpected reply");
    kvb__rconn_close(rc);
}

bool kvb__rconn_ok(const struct kvb__rconn *rc)
{
    return rc->c != NULL;
}

bool kvb__rconn_server_changed(const struct kvb__rconn *rc)
{
    return rc->prev_run_id[0] && strcmp(rc->prev_run_id, rc->run_id) != 0;
}

int kvb__rconn_set_timeout(struct kvb__rconn *rc, uint32_t ms)
{
    if (!rc->c)
        return -ENOTCONN;
    return redisSetTimeout(rc->c, tv_of(ms)) == REDIS_OK ? 0 : -EIO;
}

redisReply *kvb__rconn_cmd(struct kvb__rconn *rc, int argc, const char **argv, const size_t *lens)
{
    if (!rc->c)
        return NULL;
    redisReply *r = redisCommandArgv(rc->c, argc, argv, lens);
    if (!r) {
        rc->errors++;
        set_error(rc, rc->c->errstr[0] ? rc->c->errstr : "no reply");
        kvb__rconn_close(rc);
    }
    return r;
}

static redisReply *cmd_simple(struct kvb__rconn *rc, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc && i < 8; i++)
        lens[i] = strlen(argv[i]);
    return kvb__rconn_cmd(rc, argc, argv, lens);
}

int kvb__rconn_connect(struct kvb__rconn *rc)
{
    kvb__rconn_close(rc);
    rc->c = redisConnectWithTimeout(rc->host, rc->port, tv_of(rc->io_timeout_ms));
    if (!rc->c)
        return -ENOMEM;
    if (rc->c->err) {
        set_error(rc, rc->c->errstr);
        kvb__rconn_close(rc);
        rc->errors++;
        return -ECONNREFUSED;
    }
    redisSetTimeout(rc->c, tv_of(rc->io_timeout_ms));
    redisEnableKeepAlive(rc->c);
    redisReply *r;
    if (rc->has_password) {
        const char *a[3] = {"AUTH", rc->user, rc->password};
        r = rc->user[0] ? cmd_simple(rc, 3, a) : (a[1] = rc->password, cmd_simple(rc, 2, a));
        if (!r)
            return -EIO;
        bool ok = kvb__rr_str(r) && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            set_error(rc, "AUTH refused");
            kvb__rconn_close(rc);
            return -EACCES;
        }
    }
    if (rc->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", rc->db);
        const char *a[2] = {"SELECT", db};
        r = cmd_simple(rc, 2, a);
        if (!r)
            return -EIO;
        bool ok = r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            set_error(rc, "SELECT refused");
            kvb__rconn_close(rc);
            return -EINVAL;
        }
    }
    /* the server's run_id: a new one means a restart (the lease may have been
     * lost with the data it sat on) */
    const char *info[2] = {"INFO", "server"};
    r = cmd_simple(rc, 2, info);
    if (!r)
        return -EIO;
    char run_id[48] = "";
    if (r->type == REDIS_REPLY_STRING && r->str) {
        const char *p = strstr(r->str, "run_id:");
        if (p) {
            p += 7;
            size_t n = 0;
            while (n < sizeof run_id - 1 &&
                   ((p[n] >= '0' && p[n] <= '9') || (p[n] >= 'a' && p[n] <= 'f')))
                n++;
            memcpy(run_id, p, n);
            run_id[n] = '\0';
        }
    }
    freeReplyObject(r);
    if (rc->run_id[0])
        memcpy(rc->prev_run_id, rc->run_id, sizeof rc->run_id);
    memcpy(rc->run_id, run_id, sizeof run_id);
    for (int s = 0; s < KVB_RS_COUNT; s++) {
        const char *a[3] = {"SCRIPT", "LOAD", kvb__rscript[s]};
        r = cmd_simple(rc, 3, a);
        if (!r)
            return -EIO;
        bool ok = r->type == REDIS_REPLY_STRING && r->len < sizeof rc->sha[s] && r->len >= 40;
        if (ok) {
            memcpy(rc->sha[s], r->str, r->len);
            rc->sha[s][r->len] = '\0';
        } else {
            rc->sha[s][0] = '\0'; /* EVAL every time */
        }
        freeReplyObject(r);
    }
    if (rc->connects++)
        rc->reconnects++;
    return 0;
}

/* argv of EVALSHA/EVAL: [cmd, sha|script, nkeys, args...] */
struct script_argv {
    const char **argv;
    size_t *lens;
    char nk[16];
};

static int script_argv(struct kvb__rconn *rc, struct script_argv *sa, int script, bool eval,
                       int nkeys, int nargs, const char *const *args, const size_t *lens)
{
    sa->argv = malloc(sizeof(char *) * (size_t)(nargs + 3));
    sa->lens = malloc(sizeof(size_t) * (size_t)(nargs + 3));
    if (!sa->argv || !sa->lens) {
        free(sa->argv);
        free(sa->lens);
        return -ENOMEM;
    }
    snprintf(sa->nk, sizeof sa->nk, "%d", nkeys);
    sa->argv[0] = eval ? "EVAL" : "EVALSHA";
    sa->argv[1] = eval ? kvb__rscript[script] : rc->sha[script];
    sa->argv[2] = sa->nk;
    for (int i = 0; i < 3; i++)
        sa->lens[i] = strlen(sa->argv[i]);
    for (int i = 0; i < nargs; i++) {
        sa->argv[3 + i] = args[i];
        sa->lens[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    return 0;
}

static void script_argv_free(struct script_argv *sa)
{
    free(sa->argv);
    free(sa->lens);
}

static bool is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

redisReply *kvb__rconn_script(struct kvb__rconn *rc, int script, int nkeys, int nargs,
                              const char **args, const size_t *lens)
{
    if (!rc->c)
        return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool eval = attempt == 1 || !rc->sha[script][0];
        struct script_argv sa;
        if (script_argv(rc, &sa, script, eval, nkeys, nargs, args, lens) < 0)
            return NULL;
        redisReply *r = kvb__rconn_cmd(rc, nargs + 3, sa.argv, sa.lens);
        script_argv_free(&sa);
        if (!r || eval || !is_noscript(r))
            return r;
        freeReplyObject(r); /* the server forgot the script: EVAL it */
    }
    return NULL;
}

int kvb__rconn_script_n(struct kvb__rconn *rc, int script, uint32_t n, const int *nkeys,
                        const int *nargs, const char *const *const *args, const size_t *const *lens,
                        redisReply **replies)
{
    for (uint32_t i = 0; i < n; i++)
        replies[i] = NULL;
    if (!rc->c)
        return -ENOTCONN;
    bool eval = !rc->sha[script][0];
    for (uint32_t i = 0; i < n; i++) {
        struct script_argv sa;
        if (script_argv(rc, &sa, script, eval, nkeys[i], nargs[i], args[i], lens[i]) < 0) {
            /* nothing sent for i..n: read what was sent, then fail */
            for (uint32_t j = 0; j < i; j++) {
                void *rp = NULL;
                if (redisGetReply(rc->c, &rp) != REDIS_OK)
                    break;
                freeReplyObject(rp);
            }
            kvb__rconn_close(rc);
            return -ENOMEM;
        }
        int ok = redisAppendCommandArgv(rc->c, nargs[i] + 3, sa.argv, sa.lens);
        script_argv_free(&sa);
        if (ok != REDIS_OK) {
            rc->errors++;
            kvb__rconn_close(rc);
            return -EIO;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        void *rp = NULL;
        if (redisGetReply(rc->c, &rp) != REDIS_OK || !rp) {
            rc->errors++;
            set_error(rc, rc->c->errstr[0] ? rc->c->errstr : "no reply");
            kvb__rconn_close(rc);
            for (uint32_t j = 0; j < i; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }
            return -EIO;
        }
        replies[i] = rp;
    }
    /* NOSCRIPT answers did nothing: run them again, in order, with EVAL */
    for (uint32_t i = 0; i < n; i++) {
        if (!is_noscript(replies[i]))
            continue;
        freeReplyObject(replies[i]);
        replies[i] = NULL;
        struct script_argv sa;
        if (script_argv(rc, &sa, script, true, nkeys[i], nargs[i], args[i], lens[i]) < 0)
            continue;
        replies[i] = kvb__rconn_cmd(rc, nargs[i] + 3, sa.argv, sa.lens);
        script_argv_free(&sa);
        if (!replies[i]) {
            for (uint32_t j = 0; j < n; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }
            return -EIO;
        }
    }
    return 0;
}

#endif /* KVB_HAVE_REDIS */
