/*
 * tools/common/trace.c - block traces in memory (see trace.h): the builder,
 * the statistics, the lineage hashes of the prefix replay, and the loaders.
 *
 * Mooncake format (FAST 2025, "Mooncake: A KVCache-centric Architecture for
 * Serving LLM Chatbot"): one JSON object per line,
 *     {"timestamp": 0, "input_length": 6758, "output_length": 500,
 *      "hash_ids": [0, 1, 2, 3]}
 * The parser is written by hand and small, but it is a real (if restricted)
 * JSON reader, not a substring search: it walks the top-level object key by
 * key, so a "hash_ids" inside a string or a nested value is never mistaken for
 * the key. "hash_ids" must be an array of non-negative integers that fit in 64
 * bits; "timestamp", "input_length" and "output_length" are optional
 * non-negative numbers (lengths integers); other keys are skipped whatever
 * their value. Blank lines are skipped. Anything else (a truncated line, a
 * missing or repeated "hash_ids", a negative or fractional id, trailing
 * garbage) is rejected with the line and column.
 *
 * Id-per-line format (the classic block-I/O traces: LIRS, cloudphysics): one
 * unsigned decimal id per line, each a request of one block. Lines whose first
 * non-blank character is '*' (LIRS checkpoint markers) and blank lines are
 * skipped; blanks around the number and a CR before the newline are allowed
 * (loop.trace has CRLF line ends); anything else is rejected with the line.
 */
#include "trace.h"
#include "util.h"

#include <math.h>

/* ------------------------------------------------------------------------ */
/* Builder                                                                  */
/* ------------------------------------------------------------------------ */

static char *kvbt_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = kvbt_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void kvbt_trace_init(kvbt_trace *t, const char *name, const char *source)
{
    memset(t, 0, sizeof *t);
    t->name = kvbt_strdup(name ? name : "trace");
    t->source = kvbt_strdup(source ? source : t->name);
    t->cap_requests = 1024;
    t->cap_refs = 16384;
    t->off = kvbt_xmalloc_array(t->cap_requests + 1, sizeof *t->off);
    t->ids = kvbt_xmalloc_array(t->cap_refs, sizeof *t->ids);
    t->off[0] = 0;
}

void kvbt_trace_free(kvbt_trace *t)
{
    free(t->off);
    free(t->ids);
    free(t->timestamp_ms);
    free(t->input_tokens);
    free(t->output_tokens);
    free(t->line);
    free(t->name);
    free(t->source);
    memset(t, 0, sizeof *t);
}

static void kvbt_trace_grow_requests(kvbt_trace *t)
{
    if (t->n_requests + 1 < t->cap_requests)
        return;
    uint64_t cap = t->cap_requests * 2;
    t->off = kvbt_xrealloc(t->off, (size_t)(cap + 1) * sizeof *t->off);
    if (t->has_meta) {
        t->timestamp_ms = kvbt_xrealloc(t->timestamp_ms, (size_t)cap * sizeof *t->timestamp_ms);
        t->input_tokens = kvbt_xrealloc(t->input_tokens, (size_t)cap * sizeof *t->input_tokens);
        t->output_tokens = kvbt_xrealloc(t->output_tokens, (size_t)cap * sizeof *t->output_tokens);
        t->line = kvbt_xrealloc(t->line, (size_t)cap * sizeof *t->line);
    }
    t->cap_requests = cap;
}

void kvbt_trace_begin(kvbt_trace *t)
{
    kvbt_trace_grow_requests(t);
    t->open = true;
}

void kvbt_trace_push(kvbt_trace *t, uint64_t id)
{
    if (t->n_refs == t->cap_refs) {
        t->cap_refs *= 2;
        t->ids = kvbt_xrealloc(t->ids, (size_t)t->cap_refs * sizeof *t->ids);
    }
    t->ids[t->n_refs++] = id;
}

void kvbt_trace_end(kvbt_trace *t)
{
    t->off[++t->n_requests] = t->n_refs;
    t->open = false;
}

/* Drop the ids pushed since kvbt_trace_begin (a line that failed to parse). */
static void kvbt_trace_abort(kvbt_trace *t)
{
    t->n_refs = t->off[t->n_requests];
    t->open = false;
}

void kvbt_trace_set_meta(kvbt_trace *t, uint64_t timestamp_ms, uint32_t input_tokens,
                         uint32_t output_tokens, uint64_t line)
{
    if (t->n_requests == 0)
        return;
    if (!t->has_meta) {
        size_t cap = (size_t)t->cap_requests;
        t->timestamp_ms = calloc(cap, sizeof *t->timestamp_ms);
        t->input_tokens = calloc(cap, sizeof *t->input_tokens);
        t->output_tokens = calloc(cap, sizeof *t->output_tokens);
        t->line = calloc(cap, sizeof *t->line);
        if (!t->timestamp_ms || !t->input_tokens || !t->output_tokens || !t->line) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        t->has_meta = true;
    }
    uint64_t r = t->n_requests - 1;
    t->timestamp_ms[r] = timestamp_ms;
    t->input_tokens[r] = input_tokens;
    t->output_tokens[r] = output_tokens;
    t->line[r] = line;
}

/* ------------------------------------------------------------------------ */
/* Lineage hashes and statistics                                            */
/* ------------------------------------------------------------------------ */

int kvbt_trace_lineage_hashes(const kvbt_trace *t, kvb_hash *out)
{
    for (uint64_t r = 0; r < t->n_requests; r++) {
        uint64_t b = t->off[r], e = t->off[r + 1];
        for (uint64_t i = b; i < e; i++) {
            uint64_t j = i - b;
            if (j > KVB_HASH_MAX_POSITION)
                return -EOVERFLOW;
            int rc =
                kvb_hash_make(t->ids[i], j > 0 ? t->ids[i - 1] : 0, j > 0, (uint32_t)j, &out[i]);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

void kvbt_trace_finish(kvbt_trace *t)
{
    t->max_request_blocks = 0;
    for (uint64_t r = 0; r < t->n_requests; r++)
        if (kvbt_trace_len(t, r) > t->max_request_blocks)
            t->max_request_blocks = kvbt_trace_len(t, r);
    t->unique_blocks = 0;
    t->infinite_hits = 0;
    if (t->n_refs == 0)
        return;

    kvb_hash *h = kvbt_xmalloc_array((size_t)t->n_refs, sizeof *h);
    if (kvbt_trace_lineage_hashes(t, h) < 0) {
        /* Only a request longer than 2^24 blocks gets here; replay reports it. */
        free(h);
        t->unique_blocks = UINT64_MAX;
        return;
    }
    /* Open-addressing set of hashes; a slot holds (index into h) + 1, 0 = empty
     * (a hash can be all zero, so it cannot mark empty slots itself). */
    unsigned bits = 4;
    while ((1ull << bits) < 2 * t->n_refs)
        bits++;
    uint64_t mask = (1ull << bits) - 1;
    uint64_t *set = calloc((size_t)(mask + 1), sizeof *set);
    if (!set) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (uint64_t r = 0; r < t->n_requests; r++) {
        bool prefix = true;
        for (uint64_t i = t->off[r]; i < t->off[r + 1]; i++) {
            uint64_t s = kvbt_hash_mix(h[i]) >> (64 - bits);
            bool found = false;
            while (set[s]) {
                if (kvb_hash_equal(h[set[s] - 1], h[i])) {
                    found = true;
                    break;
                }
                s = (s + 1) & mask;
            }
            if (!found) {
                set[s] = i + 1;
                t->unique_blocks++;
                prefix = false;
            } else if (prefix) {
                t->infinite_hits++;
            }
        }
    }
    free(set);
    free(h);
}

/* ------------------------------------------------------------------------ */
/* Formats                                                                  */
/* ------------------------------------------------------------------------ */

bool kvbt_format_parse(const char *name, kvbt_format *out)
{
    if (strcmp(name, "mooncake") == 0) {
        *out = KVBT_FORMAT_MOONCAKE;
        return true;
    }
    if (strcmp(name, "ids") == 0) {
        *out = KVBT_FORMAT_IDS;
        return true;
    }
    return false;
}

const char *kvbt_format_names(void)
{
    return "mooncake, ids";
}

/* ------------------------------------------------------------------------ */
/* Mooncake JSON lines                                                      */
/* ------------------------------------------------------------------------ */

typedef struct kvbt_json {
    const char *start; /* the line, for column numbers */
    const char *p;     /* cursor */
    char *err;
    size_t errcap;
    uint64_t lineno;
} kvbt_json;

static KVBT_PRINTF(2, 3) int kvbt_json_fail(kvbt_json *j, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(j->err, j->errcap, "line %llu, column %llu: %s", (unsigned long long)j->lineno,
             (unsigned long long)(j->p - j->start + 1), msg);
    return -1;
}

static void kvbt_json_ws(kvbt_json *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')
        j->p++;
}

/* What is at the cursor, for messages. */
static const char *kvbt_json_what(const kvbt_json *j)
{
    return *j->p ? "an unexpected character" : "the end of the line";
}

/* A JSON string at the cursor. Copies up to cap-1 raw bytes into buf (escapes are
 * kept verbatim: keys we look for have none) and sets *fits to whether all fit. */
static int kvbt_json_string(kvbt_json *j, char *buf, size_t cap, bool *fits)
{
    size_t n = 0;
    if (*j->p != '"')
        return kvbt_json_fail(j, "expected a string, found %s", kvbt_json_what(j));
    j->p++;
    *fits = true;
    for (;;) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '\0')
            return kvbt_json_fail(j, "unterminated string");
        if (c < 0x20)
            return kvbt_json_fail(j, "control character in a string");
        if (c == '"')
            break;
        if (c == '\\') {
            j->p++;
            if (!*j->p)
                return kvbt_json_fail(j, "unterminated string");
            if (!strchr("\"\\/bfnrtu", *j->p))
                return kvbt_json_fail(j, "bad escape in a string");
            *fits = false; /* an escaped key is never one of ours */
        }
        if (buf && n + 1 < cap)
            buf[n++] = (char)*j->p;
        else
            *fits = false;
        j->p++;
    }
    j->p++;
    if (buf)
        buf[n] = '\0';
    return 0;
}

/* A JSON number at the cursor (full grammar); its value as a double. */
static int kvbt_json_number(kvbt_json *j, double *out)
{
    const char *s = j->p, *q = j->p;
    if (*q == '-')
        q++;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (*q >= '0' && *q <= '9')
            q++;
    else
        return kvbt_json_fail(j, "expected a number, found %s", kvbt_json_what(j));
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9'))
            return kvbt_json_fail(j, "bad number");
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!(*q >= '0' && *q <= '9'))
            return kvbt_json_fail(j, "bad number");
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (out)
        *out = strtod(s, NULL);
    j->p = q;
    return 0;
}

/* Skip any JSON value (nesting limited to 64 levels). */
static int kvbt_json_skip(kvbt_json *j, int depth)
{
    bool fits;
    if (depth > 64)
        return kvbt_json_fail(j, "nesting too deep");
    kvbt_json_ws(j);
    switch (*j->p) {
    case '"':
        return kvbt_json_string(j, NULL, 0, &fits);
    case '{':
    case '[': {
        char close = *j->p == '{' ? '}' : ']';
        bool obj = close == '}';
        j->p++;
        kvbt_json_ws(j);
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            kvbt_json_ws(j);
            if (obj) {
                if (kvbt_json_string(j, NULL, 0, &fits) < 0)
                    return -1;
                kvbt_json_ws(j);
                if (*j->p != ':')
                    return kvbt_json_fail(j, "expected ':' after a key");
                j->p++;
            }
            if (kvbt_json_skip(j, depth + 1) < 0)
                return -1;
            kvbt_json_ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == close) {
                j->p++;
                return 0;
            }
            return kvbt_json_fail(j, "expected ',' or '%c', found %s", close, kvbt_json_what(j));
        }
    }
    case 't':
        if (strncmp(j->p, "true", 4) == 0) {
            j->p += 4;
            return 0;
        }
        break;
    case 'f':
        if (strncmp(j->p, "false", 5) == 0) {
            j->p += 5;
            return 0;
        }
        break;
    case 'n':
        if (strncmp(j->p, "null", 4) == 0) {
            j->p += 4;
            return 0;
        }
        break;
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return kvbt_json_number(j, NULL);
        break;
    }
    return kvbt_json_fail(j, "expected a value, found %s", kvbt_json_what(j));
}

/* "hash_ids": [ u64, ... ] -> pushed onto the open request. */
static int kvbt_json_ids(kvbt_json *j, kvbt_trace *t)
{
    if (*j->p != '[')
        return kvbt_json_fail(j, "\"hash_ids\" must be an array");
    j->p++;
    kvbt_json_ws(j);
    if (*j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        kvbt_json_ws(j);
        const char *s = j->p;
        if (*s == '-')
            return kvbt_json_fail(j, "negative block id in \"hash_ids\"");
        if (!(*s >= '0' && *s <= '9'))
            return kvbt_json_fail(j, "expected a block id (an integer) in \"hash_ids\", found %s",
                                  kvbt_json_what(j));
        uint64_t v = 0;
        while (*j->p >= '0' && *j->p <= '9') {
            unsigned d = (unsigned)(*j->p - '0');
            if (v > (UINT64_MAX - d) / 10)
                return kvbt_json_fail(j, "block id does not fit in 64 bits");
            v = v * 10 + d;
            j->p++;
        }
        if (*s == '0' && j->p - s > 1) {
            j->p = s;
            return kvbt_json_fail(j, "block id with a leading zero");
        }
        if (*j->p == '.' || *j->p == 'e' || *j->p == 'E')
            return kvbt_json_fail(j, "block id is not an integer");
        kvbt_trace_push(t, v);
        kvbt_json_ws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == ']') {
            j->p++;
            return 0;
        }
        return kvbt_json_fail(j, "expected ',' or ']' in \"hash_ids\", found %s",
                              kvbt_json_what(j));
    }
}

/* A non-negative number no larger than max; integral when `integer`. */
static int kvbt_json_meta(kvbt_json *j, const char *key, double max, bool integer, double *out)
{
    const char *s = j->p;
    if (kvbt_json_number(j, out) < 0)
        return kvbt_json_fail(j, "\"%s\" must be a number", key);
    if (!(*out >= 0) || *out > max || (integer && *out != floor(*out))) {
        j->p = s;
        return kvbt_json_fail(j, "\"%s\" must be a non-negative %s no larger than %.0f", key,
                              integer ? "integer" : "number", max);
    }
    return 0;
}

int kvbt_mooncake_parse_line(kvbt_trace *t, const char *line, uint64_t lineno, char *err,
                             size_t errcap)
{
    kvbt_json j = {.start = line, .p = line, .err = err, .errcap = errcap, .lineno = lineno};
    double ts = 0, in = 0, out = 0;
    bool have_ids = false;
    char key[32];
    bool fits;

    kvbt_trace_begin(t);
    kvbt_json_ws(&j);
    if (*j.p != '{') {
        kvbt_json_fail(&j, "expected a JSON object ('{'), found %s", kvbt_json_what(&j));
        goto fail;
    }
    j.p++;
    kvbt_json_ws(&j);
    if (*j.p != '}') {
        for (;;) {
            kvbt_json_ws(&j);
            const char *keypos = j.p;
            if (kvbt_json_string(&j, key, sizeof key, &fits) < 0)
                goto fail;
            kvbt_json_ws(&j);
            if (*j.p != ':') {
                kvbt_json_fail(&j, "expected ':' after a key, found %s", kvbt_json_what(&j));
                goto fail;
            }
            j.p++;
            kvbt_json_ws(&j);
            int rc;
            if (fits && strcmp(key, "hash_ids") == 0) {
                if (have_ids) {
                    j.p = keypos;
                    kvbt_json_fail(&j, "\"hash_ids\" appears twice");
                    goto fail;
                }
                have_ids = true;
                rc = kvbt_json_ids(&j, t);
            } else if (fits && strcmp(key, "timestamp") == 0) {
                rc = kvbt_json_meta(&j, key, 9e18, false, &ts);
            } else if (fits && strcmp(key, "input_length") == 0) {
                rc = kvbt_json_meta(&j, key, UINT32_MAX, true, &in);
            } else if (fits && strcmp(key, "output_length") == 0) {
                rc = kvbt_json_meta(&j, key, UINT32_MAX, true, &out);
            } else {
                rc = kvbt_json_skip(&j, 0);
            }
            if (rc < 0)
                goto fail;
            kvbt_json_ws(&j);
            if (*j.p == ',') {
                j.p++;
                continue;
            }
            if (*j.p == '}')
                break;
            kvbt_json_fail(&j, "expected ',' or '}', found %s", kvbt_json_what(&j));
            goto fail;
        }
    }
    j.p++;
    kvbt_json_ws(&j);
    if (*j.p) {
        kvbt_json_fail(&j, "unexpected text after the JSON object");
        goto fail;
    }
    if (!have_ids) {
        j.p = line;
        kvbt_json_fail(&j, "no \"hash_ids\" array in this object");
        goto fail;
    }
    kvbt_trace_end(t);
    kvbt_trace_set_meta(t, (uint64_t)llround(ts), (uint32_t)in, (uint32_t)out, lineno);
    return 0;
fail:
    kvbt_trace_abort(t);
    return -1;
}

static int kvbt_load_mooncake(FILE *f, const char *path, kvbt_trace *t, char *err, size_t errcap)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0;
    int rc = 0;

    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            snprintf(err, errcap, "%s: line %llu: NUL byte in the line", path,
                     (unsigned long long)lineno);
            rc = -1;
            break;
        }
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            continue; /* blank line */
        char msg[512];
        if (kvbt_mooncake_parse_line(t, line, lineno, msg, sizeof msg) < 0) {
            snprintf(err, errcap, "%s: %s", path, msg);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errcap, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* One id per line                                                          */
/* ------------------------------------------------------------------------ */

static int kvbt_load_ids(FILE *f, const char *path, kvbt_trace *t, char *err, size_t errcap)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0;
    int rc = 0;

    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *p = line, *end = line + len;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (p == end || *p == '*')
            continue; /* blank line or checkpoint marker */
        uint64_t v = 0;
        const char *q = p;
        for (; q < end; q++) {
            if (*q < '0' || *q > '9')
                break;
            unsigned d = (unsigned)(*q - '0');
            if (v > (UINT64_MAX - d) / 10) {
                q = NULL;
                break;
            }
            v = v * 10 + d;
        }
        if (q != end) {
            snprintf(err, errcap,
                     "%s: line %llu: expected one unsigned block id (up to 2^64-1) per line, "
                     "a '*' marker or a blank line, found '%.*s'",
                     path, (unsigned long long)lineno, (int)(end - p > 40 ? 40 : end - p), p);
            rc = -1;
            break;
        }
        kvbt_trace_begin(t);
        kvbt_trace_push(t, v);
        kvbt_trace_end(t);
        kvbt_trace_set_meta(t, 0, 0, 0, lineno);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errcap, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

int kvbt_trace_load(const char *path, kvbt_format fmt, kvbt_trace *t, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        memset(t, 0, sizeof *t);
        return -1;
    }
    kvbt_trace_init(t, kvbt_basename(path), path);
    int rc;
    switch (fmt) {
    case KVBT_FORMAT_MOONCAKE:
        rc = kvbt_load_mooncake(f, path, t, err, errcap);
        break;
    case KVBT_FORMAT_IDS:
        rc = kvbt_load_ids(f, path, t, err, errcap);
        break;
    default:
        snprintf(err, errcap, "%s: unsupported format", path);
        rc = -1;
        break;
    }
    fclose(f);
    if (rc < 0) {
        kvbt_trace_free(t);
        return -1;
    }
    if (t->n_requests == 0) {
        snprintf(err, errcap, "%s: no requests in the trace", path);
        kvbt_trace_free(t);
        return -1;
    }
    kvbt_trace_finish(t);
    return 0;
}
