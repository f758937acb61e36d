/*
 * tools/kvb-indexer/json.c - kvb-indexer's JSON requests: parsing a body with
 * jansson (big unsigned literals quoted first, see below) and POST /v1/match.
 *
 * 64-bit hashes in JSON. jansson's json_int_t is a signed 64-bit integer and it
 * refuses larger literals ("too big integer"); JSON_DECODE_INT_AS_REAL would lose
 * bits. The rule, documented in --help: a hash is a JSON integer in
 * 0..18446744073709551615, a negative JSON integer -2^63..-1 read as its 64-bit
 * two's complement (SGLang's signed hashes, so -1 == 18446744073709551615), or a
 * decimal string "0".."18446744073709551615". Literals above 2^63-1 are accepted
 * exactly: when the body has a run of 19 or more digits, it is copied once so that
 * every non-negative integer literal in 2^63..2^64-1 becomes the decimal string of
 * the same digits (ixd_quote_big_ints: a lexical pass that tracks strings and
 * escapes, it parses nothing) before jansson parses it. Anything that is still out
 * of range is a 400.
 */
#include "kvb-indexer/ixd.h"

/* ---- JSON helpers ---------------------------------------------------------------- */

/* Non-negative integer literals in 2^63..2^64-1 outside strings become decimal
 * strings ("..."): jansson's integers are int64_t (see the file comment). A lexical
 * pass only: strings (with their escapes) are copied as they are, so is everything
 * else; the result is parsed by jansson like the original. Returns a malloc'd copy
 * (NULL on out of memory). */
static char *ixd_quote_big_ints(const char *in, size_t len, size_t *outlen)
{
    /* each quoted literal (>= 19 digits) grows by 2 bytes: at most len / 19 * 2 */
    size_t cap = len + len / 9 + 2;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        char ch = in[i];
        if (in_str) {
            out[o++] = ch;
            i++;
            if (ch == '\\' && i < len)
                out[o++] = in[i++];
            else if (ch == '"')
                in_str = false;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            out[o++] = in[i++];
            continue;
        }
        bool starts_number =
            ch >= '0' && ch <= '9' &&
            (i == 0 ||
             !((in[i - 1] >= '0' && in[i - 1] <= '9') || in[i - 1] == '-' || in[i - 1] == '.' ||
               in[i - 1] == 'e' || in[i - 1] == 'E' || in[i - 1] == '+' ||
               (in[i - 1] >= 'a' && in[i - 1] <= 'z') || (in[i - 1] >= 'A' && in[i - 1] <= 'Z')));
        if (!starts_number) {
            out[o++] = in[i++];
            continue;
        }
        size_t j = i;
        while (j < len && in[j] >= '0' && in[j] <= '9')
            j++;
        bool integer = !(j < len && (in[j] == '.' || in[j] == 'e' || in[j] == 'E'));
        size_t nd = j - i;
        bool quote = false;
        if (integer && in[i] != '0' && nd >= 19 && nd <= 20) {
            char digits[21];
            memcpy(digits, in + i, nd);
            digits[nd] = '\0';
            uint64_t v;
            quote = kvbt_parse_u64(digits, (uint64_t)INT64_MAX + 1, UINT64_MAX, &v);
        }
        if (quote)
            out[o++] = '"';
        memcpy(out + o, in + i, nd);
        o += nd;
        if (quote)
            out[o++] = '"';
        i = j;
    }
    *outlen = o;
    return out;
}

/* Whether the text has a run of 19 or more digits (a literal that may not fit
 * in int64_t; inside a string too: then the rewrite below changes nothing). */
static bool ixd_has_long_digits(const char *s, size_t len)
{
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        run = (s[i] >= '0' && s[i] <= '9') ? run + 1 : 0;
        if (run >= 19)
            return true;
    }
    return false;
}

static json_t *ixd_parse_body(const ixd_req *r, char *err, size_t errcap, unsigned *status)
{
    *status = 400;
    json_error_t je;
    const char *body = r->body ? r->body : "";
    json_t *j = NULL;
    if (ixd_has_long_digits(body, r->len)) {
        /* u64 hashes written as plain integers (Python's json, the FleetClient) are
         * half of the time above 2^63 - 1: quote them before the one parse rather
         * than parse up to jansson's overflow error and again */
        size_t n;
        char *q = ixd_quote_big_ints(body, r->len, &n);
        if (!q) {
            snprintf(err, errcap, "out of memory");
            *status = 500;
            return NULL;
        }
        j = json_loadb(q, n, JSON_REJECT_DUPLICATES, &je);
        free(q);
    } else {
        j = json_loadb(body, r->len, JSON_REJECT_DUPLICATES, &je);
    }
    if (!j) {
        snprintf(err, errcap, "bad JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errcap, "bad request: the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* A u64 from a JSON integer (negative: two's complement) or a decimal string. */
static bool ixd_json_u64(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    if (json_is_string(v) && json_string_length(v) <= 20)
        return kvbt_parse_u64(json_string_value(v), 0, UINT64_MAX, out);
    return false;
}

json_t *ixd_rank_json(int64_t rank)
{
    return rank < 0 ? json_null() : json_integer(rank);
}

/* ---- POST /v1/match ------------------------------------------------------------ */

#define IXD_STACK_RESULTS 64

static ixd_mhd_result ixd_match_parsed(struct MHD_Connection *c, ixd_req *r)
{
    char err[600];
    unsigned status;
    json_t *j = ixd_parse_body(r, err, sizeof err, &status);
    if (!j)
        return ixd_error(c, r, status, "%s", err);

    ixd_mhd_result ret;
    uint32_t *tokens = NULL;
    uint64_t *hashes = NULL;
    kvb_index *idx = NULL;
    kvb_index_result stack_res[IXD_STACK_RESULTS], *res = stack_res;
    json_t *jt = json_object_get(j, "tokens"), *jh = json_object_get(j, "hashes");
    json_t *jbs = json_object_get(j, "block_size"), *jk = json_object_get(j, "top_k");
    json_t *jl = json_object_get(j, "lora_name"), *js = json_object_get(j, "cache_salt");
    if (jt && json_is_null(jt))
        jt = NULL;
    if (jh && json_is_null(jh))
        jh = NULL;

#define BAD(...)                                                                                   \
    do {                                                                                           \
        ret = ixd_error(c, r, 400, __VA_ARGS__);                                                   \
        goto out;                                                                                  \
    } while (0)

    if (!jt == !jh)
        BAD(jt ? "give either \"tokens\" or \"hashes\", not both"
               : "missing field: \"tokens\" (token ids) or \"hashes\" (router hashes)");
    if ((jt && !json_is_array(jt)) || (jh && !json_is_array(jh)))
        BAD("\"%s\" must be an array", jt ? "tokens" : "hashes");

    uint32_t top_k = UINT32_MAX;
    if (jk && !json_is_null(jk)) {
        if (!json_is_integer(jk) || json_integer_value(jk) < 1 ||
            json_integer_value(jk) > UINT32_MAX)
            BAD("\"top_k\" must be an integer in 1..4294967295 or null");
        top_k = (uint32_t)json_integer_value(jk);
    }
    if (jbs && !json_is_null(jbs)) {
        /* the index's block size is --block-size (every role creates its index so) */
        if (!json_is_integer(jbs) || json_integer_value(jbs) < 1 ||
            json_integer_value(jbs) > UINT32_MAX)
            BAD("\"block_size\" must be a positive integer");
        if ((uint64_t)json_integer_value(jbs) != ixd.opts.block_size)
            BAD("\"block_size\" %" JSON_INTEGER_FORMAT " differs from the index's block size %u",
                json_integer_value(jbs), ixd.opts.block_size);
    }
    const char *lora = NULL, *salt = NULL;
    if (jl && !json_is_null(jl)) {
        if (!json_is_string(jl))
            BAD("\"lora_name\" must be a string or null");
        lora = json_string_value(jl);
    }
    if (js && !json_is_null(js)) {
        if (!json_is_string(js))
            BAD("\"cache_salt\" must be a string or null");
        salt = json_string_value(js);
    }
    if (jh && (lora || salt))
        BAD("\"lora_name\" and \"cache_salt\" apply to \"tokens\" only: router hashes "
            "already include them");

    json_t *arr = jt ? jt : jh;
    size_t n = json_array_size(arr);
    if (n > UINT32_MAX)
        BAD("too many elements");
    if (jt) {
        tokens = malloc((n ? n : 1) * sizeof *tokens);
        if (!tokens) {
            ret = ixd_error(c, r, 500, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > UINT32_MAX)
                BAD("tokens[%zu] must be an integer in 0..4294967295", i);
            tokens[i] = (uint32_t)json_integer_value(v);
        }
    } else {
        hashes = malloc((n ? n : 1) * sizeof *hashes);
        if (!hashes) {
            ret = ixd_error(c, r, 500, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (!ixd_json_u64(json_array_get(arr, i), &hashes[i]))
                BAD("hashes[%zu] must be an integer in -2^63..2^64-1 (negative: two's "
                    "complement) or a decimal string \"0\"..\"18446744073709551615\"",
                    i);
    }

    idx = ixd_index_get();
    if (!idx) {
        ret = ixd_error(c, r, 503,
                        "standby relay: it does not hold the lease and serves no index; ask "
                        "the active relay or a replica");
        goto out;
    }
    /* Room for every stream (or top_k); retried when streams appeared meanwhile. */
    int nstreams = kvb_index_streams(idx, NULL, 0);
    uint32_t cap = (uint32_t)(nstreams > 0 ? nstreams : 0) + 8;
    if (cap > top_k)
        cap = top_k;
    uint32_t blocks = (uint32_t)n;
    int got;
    for (;;) {
        if (cap > IXD_STACK_RESULTS) {
            kvb_index_result *nr = realloc(res == stack_res ? NULL : res, cap * sizeof *res);
            if (!nr) {
                ret = ixd_error(c, r, 500, "out of memory");
                goto out;
            }
            res = nr;
        }
        if (jt)
            got = kvb_index_match_tokens(idx, tokens, n, lora, salt, res, cap, &blocks);
        else
            got = kvb_index_match(idx, hashes, (uint32_t)n, res, cap);
        if (got < 0) {
            ret = got == -EINVAL ? ixd_error(c, r, 400, "match: %s", kvb_strerror(got))
                                 : ixd_error(c, r, 500, "match: %s", kvb_strerror(got));
            goto out;
        }
        if ((uint32_t)got <= cap || cap >= top_k)
            break;
        cap = (uint32_t)got < top_k ? (uint32_t)got : top_k;
    }
    uint32_t shown = (uint32_t)got < cap ? (uint32_t)got : cap;
    ixd_index_put(idx); /* the results are copies */
    idx = NULL;

    json_t *ws = json_array();
    for (uint32_t i = 0; ws && i < shown; i++) {
        const kvb_index_result *x = &res[i];
        json_array_append_new(ws, json_pack("{s:s,s:o,s:I,s:I,s:I,s:f}", "worker", x->worker,
                                            "dp_rank", ixd_rank_json(x->dp_rank), "device",
                                            (json_int_t)x->device, "host", (json_int_t)x->host,
                                            "disk", (json_int_t)x->disk, "score", x->score));
    }
    ret = ixd_send_json(
        c, r, 200,
        json_pack("{s:I,s:o}", "blocks", (json_int_t)blocks, "workers", ws ? ws : json_array()));
#undef BAD
out:
    ixd_index_put(idx);
    json_decref(j);
    free(tokens);
    free(hashes);
    if (res != stack_res)
        free(res);
    return ret;
}

ixd_mhd_result ixd_match(struct MHD_Connection *c, ixd_req *r)
{
    if (r->len <= IXD_BIG_BODY)
        return ixd_match_parsed(c, r);
    pthread_mutex_lock(&ixd.big_lock);
    ixd_mhd_result rc = ixd_match_parsed(c, r);
    pthread_mutex_unlock(&ixd.big_lock);
    return rc;
}
