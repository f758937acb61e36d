/*
 * kvb-device-bench - the device backends side by side (include/kvblock/device.h).
 *
 * For a table of S sequences x B blocks (default 4096 x 256, block size 16)
 * and each backend (cpu, then vulkan when a device exists), in the same run:
 *
 *   full upload     every entry of every row changed, then kvb_table_sync +
 *                   kvb_device_wait_idle (the edits are made before the clock)
 *   incr upload     one block appended to every row, then sync + wait
 *   decode map      kvb_table_slot_mapping of 1 token per sequence
 *   prefill map     kvb_table_slot_mapping of 256 consecutive tokens per sequence
 *   copy blocks     kvb_kv_buffer_copy_blocks of 256 blocks of 64 KiB + wait
 *
 * Each operation is warmed up (2 runs), then measured --reps times; the table
 * shows min and median in milliseconds, the median relative to the cpu
 * backend, and device submissions per operation. The slot mappings of the
 * backends are compared, so a fast wrong answer cannot go unnoticed (exit 1).
 *
 * usage: kvb-device-bench [--seqs S] [--blocks B] [--block-size N] [--reps R]
 *                         [--device cpu|vulkan|both]
 */
#include "kvblock/device.h"

#include "common/util.h"

#include <getopt.h>

static const char *prog = "kvb-device-bench";

enum { OP_FULL, OP_INCR, OP_DECODE, OP_PREFILL, OP_COPY, OP_COUNT };

static const char *op_names[OP_COUNT] = {
    "full upload",
    "incr upload (1 blk/row)",
    "decode map (1 tok/seq)",
    "prefill map (256 tok/seq)",
    "copy 256 x 64 KiB",
};

struct result {
    bool ran;
    double min_ms, med_ms, subs;
};

struct cfg {
    uint32_t seqs, blocks, bs, reps;
    uint32_t prefill, copies;
    size_t copy_bytes;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void summarize(uint64_t *ns, uint32_t n, uint64_t subs, struct result *r)
{
    qsort(ns, n, sizeof *ns, cmp_u64);
    r->ran = true;
    r->min_ms = (double)ns[0] / 1e6;
    r->med_ms = (n % 2) ? (double)ns[n / 2] / 1e6 : (double)(ns[n / 2 - 1] + ns[n / 2]) / 2e6;
    r->subs = (double)subs / n; /* subs: total over the n measured runs */
}

static uint64_t subs_now(kvb_device *d)
{
    kvb_device_stats s;
    kvb_device_get_stats(d, &s);
    return s.submissions;
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ < 0)                                                                               \
            kvbt_die(prog, "%s: %s", #call, kvb_strerror(rc_));                                    \
    } while (0)

/* Runs every operation on one device. Slot mappings are returned for comparison. */
static void bench_device(kvb_device *d, const struct cfg *c, struct result res[OP_COUNT],
                         int64_t *decode_out, int64_t *prefill_out)
{
    const uint32_t S = c->seqs, B = c->blocks, bs = c->bs, W = 2, R = c->reps;
    uint64_t *ns = kvbt_xmalloc_array(R, sizeof *ns);
    uint32_t *ids = kvbt_xmalloc_array(B, sizeof *ids);
    kvb_table *t;
    CHECK(kvb_table_create(d, S, B, bs, &t));

    /* full upload: alternate two contents so that every entry changes each time */
    uint64_t subs = 0;
    for (uint32_t it = 0; it < W + R; it++) {
        for (uint32_t r = 0; r < S; r++) {
            for (uint32_t b = 0; b < B; b++)
                ids[b] = (r * B + b + it) & 0x3fffffff;
            CHECK(kvb_table_set_row(t, r, ids, B));
            CHECK(kvb_table_set_context_len(t, r, B * bs - (it & 1)));
        }
        uint64_t s0 = subs_now(d), t0 = kvbt_now_ns();
        CHECK(kvb_table_sync(t));
        CHECK(kvb_device_wait_idle(d));
        uint64_t t1 = kvbt_now_ns();
        if (it >= W) {
            ns[it - W] = t1 - t0;
            subs += subs_now(d) - s0;
        }
    }
    summarize(ns, R, subs, &res[OP_FULL]);

    /* incremental: rows at B/2 blocks, one block appended to each row per run */
    for (uint32_t r = 0; r < S; r++) {
        for (uint32_t b = 0; b < B / 2; b++)
            ids[b] = (r * 31 + b) & 0x3fffffff;
        CHECK(kvb_table_set_row(t, r, ids, B / 2));
    }
    CHECK(kvb_table_sync(t));
    CHECK(kvb_device_wait_idle(d));
    const uint32_t total = W + R <= B / 2 ? W + R : B / 2;
    const uint32_t warm = total > W ? W : 0, n_incr = total - warm;
    subs = 0;
    for (uint32_t it = 0; it < total; it++) {
        for (uint32_t r = 0; r < S; r++) {
            uint32_t id = (r * 7 + it + 1000000) & 0x3fffffff;
            CHECK(kvb_table_append(t, r, &id, 1));
        }
        uint64_t s0 = subs_now(d), t0 = kvbt_now_ns();
        CHECK(kvb_table_sync(t));
        CHECK(kvb_device_wait_idle(d));
        uint64_t t1 = kvbt_now_ns();
        if (it >= warm) {
            ns[it - warm] = t1 - t0;
            subs += subs_now(d) - s0;
        }
    }
    summarize(ns, n_incr, subs, &res[OP_INCR]);

    /* a full table for the mappings */
    for (uint32_t r = 0; r < S; r++) {
        for (uint32_t b = 0; b < B; b++)
            ids[b] = (r * 2654435761u + b * 40503u) & 0x3fffffff;
        CHECK(kvb_table_set_row(t, r, ids, B));
    }
    CHECK(kvb_table_sync(t));
    CHECK(kvb_device_wait_idle(d));

    uint64_t x = 88172645463325252ull;
    uint32_t *rows = kvbt_xmalloc_array((size_t)S * c->prefill, sizeof *rows);
    uint32_t *pos = kvbt_xmalloc_array((size_t)S * c->prefill, sizeof *pos);
    for (uint32_t r = 0; r < S; r++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rows[r] = r;
        pos[r] = (uint32_t)(x % ((uint64_t)B * bs));
    }
    subs = 0;
    for (uint32_t it = 0; it < W + R; it++) {
        uint64_t s0 = subs_now(d), t0 = kvbt_now_ns();
        CHECK(kvb_table_slot_mapping(t, rows, pos, S, S, decode_out));
        uint64_t t1 = kvbt_now_ns();
        if (it >= W) {
            ns[it - W] = t1 - t0;
            subs += subs_now(d) - s0;
        }
    }
    summarize(ns, R, subs, &res[OP_DECODE]);

    const uint32_t P = c->prefill;
    uint32_t span = B * bs > P ? B * bs - P : 0;
    for (uint32_t r = 0; r < S; r++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t start = span ? (uint32_t)(x % span) : 0;
        for (uint32_t j = 0; j < P; j++) {
            rows[(size_t)r * P + j] = r;
            pos[(size_t)r * P + j] = (start + j) % (B * bs);
        }
    }
    subs = 0;
    for (uint32_t it = 0; it < W + R; it++) {
        uint64_t s0 = subs_now(d), t0 = kvbt_now_ns();
        CHECK(kvb_table_slot_mapping(t, rows, pos, S * P, S * P, prefill_out));
        uint64_t t1 = kvbt_now_ns();
        if (it >= W) {
            ns[it - W] = t1 - t0;
            subs += subs_now(d) - s0;
        }
    }
    summarize(ns, R, subs, &res[OP_PREFILL]);
    kvb_table_destroy(t);
    free(rows);
    free(pos);

    /* block copies inside one KV buffer: 2 x copies blocks, sources then destinations */
    kvb_kv_buffer *kv;
    CHECK(kvb_kv_buffer_create(d, 2 * c->copies, c->copy_bytes, &kv));
    kvb_copy_pair *pairs = kvbt_xmalloc_array(c->copies, sizeof *pairs);
    unsigned char *blk = kvbt_xmalloc(c->copy_bytes);
    for (uint32_t i = 0; i < c->copies; i++) {
        memset(blk, (int)(i & 0xff), c->copy_bytes);
        CHECK(kvb_kv_buffer_write(kv, i, blk));
    }
    subs = 0;
    for (uint32_t it = 0; it < W + R; it++) {
        for (uint32_t i = 0; i < c->copies; i++) /* alternate direction */
            pairs[i] =
                (it & 1) ? (kvb_copy_pair){c->copies + i, i} : (kvb_copy_pair){i, c->copies + i};
        CHECK(kvb_device_wait_idle(d));
        uint64_t s0 = subs_now(d), t0 = kvbt_now_ns();
        CHECK(kvb_kv_buffer_copy_blocks(kv, pairs, c->copies));
        CHECK(kvb_device_wait_idle(d));
        uint64_t t1 = kvbt_now_ns();
        if (it >= W) {
            ns[it - W] = t1 - t0;
            subs += subs_now(d) - s0;
        }
    }
    summarize(ns, R, subs, &res[OP_COPY]);
    CHECK(kvb_kv_buffer_read(kv, c->copies - 1, blk));
    if (blk[0] != (unsigned char)((c->copies - 1) & 0xff) || blk[c->copy_bytes - 1] != blk[0])
        kvbt_die(prog, "%s: block copy produced wrong contents", kvb_device_name(d));
    kvb_kv_buffer_destroy(kv);
    free(pairs);
    free(blk);
    free(ids);
    free(ns);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s [--seqs S] [--blocks B] [--block-size N] [--reps R] "
            "[--device cpu|vulkan|both]\n",
            prog);
    exit(2);
}

static uint32_t arg_u32(const char *s, uint32_t min, uint32_t max, const char *what)
{
    uint64_t v;
    if (!kvbt_parse_u64(s, min, max, &v))
        kvbt_die(prog, "bad %s '%s' (%u..%u)", what, s, min, max);
    return (uint32_t)v;
}

int main(int argc, char **argv)
{
    struct cfg c = {.seqs = 4096,
                    .blocks = 256,
                    .bs = 16,
                    .reps = 20,
                    .prefill = 256,
                    .copies = 256,
                    .copy_bytes = 64 * 1024};
    const char *which = "both";
    static const struct option opts[] = {
        {"seqs", required_argument, NULL, 's'},
        {"blocks", required_argument, NULL, 'b'},
        {"block-size", required_argument, NULL, 'n'},
        {"reps", required_argument, NULL, 'r'},
        {"device", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:b:n:r:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            c.seqs = arg_u32(optarg, 1, 1u << 20, "--seqs");
            break;
        case 'b':
            c.blocks = arg_u32(optarg, 2, 1u << 16, "--blocks");
            break;
        case 'n':
            c.bs = arg_u32(optarg, 1, 1024, "--block-size");
            break;
        case 'r':
            c.reps = arg_u32(optarg, 1, 10000, "--reps");
            break;
        case 'd':
            which = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if ((uint64_t)c.seqs * c.prefill > (1u << 26))
        kvbt_die(prog, "--seqs too large for the prefill batch");

    kvb_device_kind kinds[2];
    int nk = 0;
    if (!strcmp(which, "cpu") || !strcmp(which, "both"))
        kinds[nk++] = KVB_DEVICE_CPU;
    if (!strcmp(which, "vulkan") || !strcmp(which, "both"))
        kinds[nk++] = KVB_DEVICE_VULKAN;
    if (nk == 0)
        usage();

    printf("%s: %u seqs x %u blocks, block size %u; table %.1f MiB; %u reps after 2 warm-up\n",
           prog, c.seqs, c.blocks, c.bs, (double)c.seqs * c.blocks * 4 / 1048576.0, c.reps);
    printf("%-27s %-42s %10s %10s %7s %7s\n", "operation", "device", "min ms", "median ms",
           "vs cpu", "subs/op");

    struct result res[2][OP_COUNT];
    memset(res, 0, sizeof res);
    char names[2][64];
    size_t prefill_n = (size_t)c.seqs * c.prefill;
    int64_t *dec[2], *pre[2];
    bool have[2] = {false, false};
    for (int k = 0; k < nk; k++) {
        kvb_device *d;
        int rc = kvb_device_open(kinds[k], &d);
        if (rc) {
            printf("%-27s %-42s %s\n", "-", kinds[k] == KVB_DEVICE_VULKAN ? "vulkan" : "cpu",
                   rc == -ENODEV ? "unavailable (ENODEV)" : kvb_strerror(rc));
            continue;
        }
        snprintf(names[k], sizeof names[k], "%.63s", kvb_device_name(d));
        dec[k] = kvbt_xmalloc_array(c.seqs, sizeof(int64_t));
        pre[k] = kvbt_xmalloc_array(prefill_n, sizeof(int64_t));
        bench_device(d, &c, res[k], dec[k], pre[k]);
        have[k] = true;
        kvb_device_close(d);
    }
    for (int op = 0; op < OP_COUNT; op++)
        for (int k = 0; k < nk; k++) {
            if (!have[k])
                continue;
            struct result *r = &res[k][op];
            char rel[16] = "-";
            if (have[0] && kinds[0] == KVB_DEVICE_CPU && res[0][op].med_ms > 0)
                snprintf(rel, sizeof rel, "%.2f", r->med_ms / res[0][op].med_ms);
            printf("%-27s %-42s %10.3f %10.3f %7s %7.2f\n", op_names[op], names[k], r->min_ms,
                   r->med_ms, rel, r->subs);
        }
    int status = 0;
    if (nk == 2 && have[0] && have[1]) {
        bool same = !memcmp(dec[0], dec[1], c.seqs * sizeof(int64_t)) &&
                    !memcmp(pre[0], pre[1], prefill_n * sizeof(int64_t));
        printf("parity (slot mappings cpu vs vulkan): %s\n", same ? "identical" : "DIFFERENT");
        status = same ? 0 : 1;
    }
    for (int k = 0; k < nk; k++)
        if (have[k]) {
            free(dec[k]);
            free(pre[k]);
        }
    return status;
}
