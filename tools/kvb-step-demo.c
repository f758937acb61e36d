/*
 * kvb-step-demo - a small scheduler-step loop, end to end, on a device backend.
 *
 * Requests share a system prompt, so later ones adopt its cached blocks. Every
 * step the "scheduler":
 *   1. admits waiting requests into free table rows: kvb_seq_match_prefix on
 *      the prompt (all but its last token), kvb_seq_ensure_capacity for the
 *      whole prompt, kvb_table_set_row + kvb_table_set_context_len;
 *   2. grows running requests by one decode token: kvb_seq_ensure_capacity and
 *      kvb_table_append of the new block when one was allocated;
 *   3. kvb_table_sync (one submission), then kvb_table_slot_mapping for every
 *      scheduled token (prefill tokens of new requests, one per running one),
 *      checked against the ids the sequences hold;
 *   4. "runs the model": writes the KV of every touched block into a device KV
 *      buffer (contents derived from token and position), then
 *      kvb_seq_append_tokens registers the blocks that became full;
 *   5. forks one request (parallel sampling): kvb_seq_fork shares the full
 *      blocks and kvb_kv_buffer_copy_blocks copies the partial one on the
 *      device; the copy is read back and checked;
 *   6. retires finished requests: kvb_seq_release, and kvb_table_move_row of
 *      the last live row into the hole so live rows stay packed.
 * It prints one line per step and exits non-zero on any error or mismatch; at
 * the end the pool must be clean (kvb_pool_check) and destroyable.
 *
 * usage: kvb-step-demo [--device auto|cpu|vulkan] [--steps N] [--requests N]
 */
#include "kvblock/device.h"
#include "kvblock/seq.h"

#include "common/util.h"

#include <getopt.h>

static const char *prog = "kvb-step-demo";

enum { BS = 16, POOL_BLOCKS = 512, ROWS = 8, MAX_BLOCKS = 24, SLOT_BYTES = 8 };
enum { SYS_LEN = 40, MAX_TOK = MAX_BLOCKS * BS };

struct req {
    uint32_t id;
    kvb_seq seq;
    uint32_t tokens[MAX_TOK];
    uint32_t prompt_len, target_len; /* tokens before decoding / when finished */
    uint32_t computed;               /* tokens whose KV is written (== seq len) */
    int row;                         /* table row, -1 when not running */
    bool done;
};

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ < 0)                                                                               \
            kvbt_die(prog, "line %d: %s: %s", __LINE__, #call, kvb_strerror(rc_));                 \
    } while (0)

static uint32_t next_token(uint32_t req, uint32_t pos)
{
    uint32_t x = req * 2654435761u ^ (pos + 0x9e3779b9u);
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    return (x ^ (x >> 12)) % 50000;
}

/* KV bytes of one token slot: its token id and position (what a model would
 * compute is a function of the prefix; for the demo, of token and position). */
static void kv_slot(uint8_t *dst, uint32_t token, uint32_t pos)
{
    memcpy(dst, &token, 4);
    memcpy(dst + 4, &pos, 4);
}

static void block_contents(const struct req *r, uint32_t blk, uint32_t upto, uint8_t *out)
{
    memset(out, 0, BS * SLOT_BYTES);
    for (uint32_t i = 0; i < BS && blk * BS + i < upto; i++)
        kv_slot(out + i * SLOT_BYTES, r->tokens[blk * BS + i], blk * BS + i);
}

int main(int argc, char **argv)
{
    const char *devname = "auto";
    uint32_t steps = 14, nreq = 10;
    static const struct option opts[] = {
        {"device", required_argument, NULL, 'd'},
        {"steps", required_argument, NULL, 's'},
        {"requests", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    uint64_t v;
    while ((ch = getopt_long(argc, argv, "d:s:r:", opts, NULL)) != -1) {
        if (ch == 'd')
            devname = optarg;
        else if (ch == 's' && kvbt_parse_u64(optarg, 1, 10000, &v))
            steps = (uint32_t)v;
        else if (ch == 'r' && kvbt_parse_u64(optarg, 1, 1000, &v))
            nreq = (uint32_t)v;
        else
            kvbt_die(prog, "usage: %s [--device auto|cpu|vulkan] [--steps N] [--requests N]", prog);
    }
    kvb_device_kind kind = !strcmp(devname, "cpu")      ? KVB_DEVICE_CPU
                           : !strcmp(devname, "vulkan") ? KVB_DEVICE_VULKAN
                           : !strcmp(devname, "auto")   ? KVB_DEVICE_AUTO
                                                        : (kvbt_die(prog, "bad --device"), 0);

    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = POOL_BLOCKS;
    cfg.block_size = BS;
    cfg.name = "demo";
    kvb_pool *pool;
    CHECK(kvb_pool_create(&cfg, &pool));
    kvb_device *dev;
    CHECK(kvb_device_open(kind, &dev));
    kvb_table *table;
    CHECK(kvb_table_create(dev, ROWS, MAX_BLOCKS, BS, &table));
    kvb_kv_buffer *kv;
    CHECK(kvb_kv_buffer_create(dev, POOL_BLOCKS, BS * SLOT_BYTES, &kv));
    printf("%s: device %s, pool %u blocks of %u tokens, table %u rows x %u blocks\n", prog,
           kvb_device_name(dev), POOL_BLOCKS, BS, ROWS, MAX_BLOCKS);

    /* requests: a shared system prompt, then their own tokens */
    uint32_t cap = nreq + 4; /* room for forks */
    struct req *reqs = calloc(cap, sizeof *reqs);
    if (!reqs)
        kvbt_die(prog, "out of memory");
    uint32_t nr = nreq;
    for (uint32_t i = 0; i < nreq; i++) {
        struct req *r = &reqs[i];
        r->id = i;
        r->row = -1;
        r->prompt_len = SYS_LEN + 5 + (i * 13) % 30;
        r->target_len = r->prompt_len + 6 + (i * 7) % 20;
        for (uint32_t p = 0; p < r->prompt_len; p++)
            r->tokens[p] = p < SYS_LEN ? 1000 + p : next_token(1000 + i, p);
    }
    int live[ROWS]; /* request index per row */
    uint32_t nlive = 0, next_admit = 0, forks = 0;
    uint32_t *rows = kvbt_xmalloc_array(ROWS * MAX_TOK, sizeof *rows);
    uint32_t *pos = kvbt_xmalloc_array(ROWS * MAX_TOK, sizeof *pos);
    int64_t *slots = kvbt_xmalloc_array(ROWS * MAX_TOK + 64, sizeof *slots);
    uint8_t blk[BS * SLOT_BYTES], back[BS * SLOT_BYTES];

    printf("%4s %5s %8s %8s %6s %6s %9s %7s %6s %6s %5s\n", "step", "live", "admitted", "matched",
           "tokens", "+blks", "upload B", "copies", "done", "avail", "subs");
    for (uint32_t step = 0; step < steps; step++) {
        kvb_device_stats st0;
        kvb_device_get_stats(dev, &st0);
        uint32_t admitted = 0, matched = 0, ntok = 0, new_blocks = 0, copies = 0, done = 0;
        uint32_t first_tok[ROWS]; /* tokens scheduled per row: [first_tok, len + n) */

        /* 1. admissions */
        while (nlive < ROWS && next_admit < nreq) {
            struct req *r = &reqs[next_admit];
            CHECK(kvb_seq_init(&r->seq, pool, MAX_BLOCKS));
            int m = kvb_seq_match_prefix(&r->seq, r->tokens, r->prompt_len - 1);
            CHECK(m);
            int add = kvb_seq_ensure_capacity(&r->seq, r->prompt_len);
            if (add == -ENOSPC) { /* wait for blocks: try again next step */
                kvb_seq_fini(&r->seq);
                break;
            }
            CHECK(add);
            r->computed = (uint32_t)m;
            r->row = (int)nlive;
            live[nlive++] = (int)next_admit++;
            CHECK(kvb_table_set_row(table, (uint32_t)r->row, kvb_seq_block_ids(&r->seq),
                                    kvb_seq_num_blocks(&r->seq)));
            admitted++;
            matched += (uint32_t)m;
            new_blocks += (uint32_t)add;
        }

        /* 2. one decode token for every request whose prompt is done */
        for (uint32_t l = 0; l < nlive; l++) {
            struct req *r = &reqs[live[l]];
            uint32_t len = kvb_seq_len(&r->seq);
            first_tok[l] = len;
            if (len < r->prompt_len)
                continue; /* admitted this step: prefill */
            uint32_t had = kvb_seq_num_blocks(&r->seq);
            int add = kvb_seq_ensure_capacity(&r->seq, len + 1);
            CHECK(add);
            if (add)
                CHECK(kvb_table_append(table, (uint32_t)r->row, kvb_seq_block_ids(&r->seq) + had,
                                       (uint32_t)add));
            new_blocks += (uint32_t)add;
            r->tokens[len] = next_token(r->id, len);
        }

        /* 3. context lengths, sync, slot mapping */
        for (uint32_t l = 0; l < nlive; l++) {
            struct req *r = &reqs[live[l]];
            uint32_t end = first_tok[l] < r->prompt_len ? r->prompt_len : first_tok[l] + 1;
            CHECK(kvb_table_set_context_len(table, (uint32_t)r->row, end));
            for (uint32_t p = first_tok[l]; p < end; p++) {
                rows[ntok] = (uint32_t)r->row;
                pos[ntok++] = p;
            }
        }
        CHECK(kvb_table_sync(table));
        uint32_t padded = (ntok + 7) & ~7u;
        CHECK(kvb_table_slot_mapping(table, rows, pos, ntok, padded, slots));
        for (uint32_t i = 0; i < padded; i++) {
            int64_t want = -1;
            if (i < ntok) {
                const struct req *r = &reqs[live[rows[i]]];
                want = (int64_t)kvb_seq_block_ids(&r->seq)[pos[i] / BS] * BS + pos[i] % BS;
            }
            if (slots[i] != want)
                kvbt_die(prog, "step %u: slot %u is %lld, expected %lld", step, i,
                         (long long)slots[i], (long long)want);
        }

        /* 4. the "model" writes KV for the scheduled tokens; full blocks get registered */
        for (uint32_t l = 0; l < nlive; l++) {
            struct req *r = &reqs[live[l]];
            uint32_t from = first_tok[l];
            uint32_t end = from < r->prompt_len ? r->prompt_len : from + 1;
            for (uint32_t b = from / BS; b * BS < end; b++) {
                block_contents(r, b, end, blk);
                CHECK(kvb_kv_buffer_write(kv, kvb_seq_block_ids(&r->seq)[b], blk));
            }
            CHECK(kvb_seq_append_tokens(&r->seq, r->tokens + from, end - from));
            r->computed = end;
            /* registration under KVB_DUP_ALLOW never changes ids: the row stays valid */
        }

        /* 5. fork the oldest running request once in a while (parallel sampling) */
        if (step % 4 == 2 && nlive < ROWS && nr < cap) {
            struct req *p = &reqs[live[0]], *c = &reqs[nr];
            uint32_t cs, cd;
            CHECK(kvb_seq_init(&c->seq, pool, MAX_BLOCKS));
            int f = kvb_seq_fork(&p->seq, &c->seq, &cs, &cd);
            CHECK(f);
            if (f == 1) {
                kvb_copy_pair pair = {cs, cd};
                CHECK(kvb_kv_buffer_copy_blocks(kv, &pair, 1));
                CHECK(kvb_kv_buffer_read(kv, cd, back));
                block_contents(p, p->computed / BS, p->computed, blk); /* cs holds it */
                if (memcmp(back, blk, sizeof blk))
                    kvbt_die(prog, "step %u: forked block %u differs from %u", step, cd, cs);
                copies++;
            }
            c->id = 100000 + nr;
            c->prompt_len = p->prompt_len;
            c->target_len = p->target_len + 3;
            c->computed = p->computed;
            memcpy(c->tokens, p->tokens, p->computed * sizeof *p->tokens);
            c->row = (int)nlive;
            live[nlive++] = (int)nr++;
            CHECK(kvb_table_set_row(table, (uint32_t)c->row, kvb_seq_block_ids(&c->seq),
                                    kvb_seq_num_blocks(&c->seq)));
            CHECK(kvb_table_set_context_len(table, (uint32_t)c->row, c->computed));
            forks++;
        }

        /* 6. retire finished requests, keeping rows packed */
        for (uint32_t l = 0; l < nlive;) {
            struct req *r = &reqs[live[l]];
            if (r->computed < r->target_len) {
                l++;
                continue;
            }
            CHECK(kvb_seq_release(&r->seq));
            kvb_seq_fini(&r->seq);
            r->done = true;
            r->row = -1;
            done++;
            uint32_t last = nlive - 1;
            if (l != last) {
                CHECK(kvb_table_move_row(table, last, l));
                live[l] = live[last];
                reqs[live[l]].row = (int)l;
            } else {
                CHECK(kvb_table_clear_row(table, l));
            }
            nlive--;
        }

        kvb_device_stats st1;
        kvb_device_get_stats(dev, &st1);
        printf("%4u %5u %8u %8u %6u %6u %9llu %7u %6u %6u %5llu\n", step, nlive, admitted, matched,
               ntok, new_blocks, (unsigned long long)(st1.upload_bytes - st0.upload_bytes), copies,
               done, kvb_pool_available(pool),
               (unsigned long long)(st1.submissions - st0.submissions));
        if (kvb_pool_check(pool))
            kvbt_die(prog, "step %u: kvb_pool_check failed", step);
        if (nlive == 0 && next_admit == nreq)
            break;
    }

    for (uint32_t l = 0; l < nlive; l++)
        kvb_seq_fini(&reqs[live[l]].seq);
    kvb_stats ps;
    CHECK(kvb_pool_stats(pool, &ps));
    kvb_device_stats ds;
    kvb_device_get_stats(dev, &ds);
    printf("pool: %llu allocations, %llu registrations, %llu prefix blocks matched, "
           "%u cached; device: %llu submissions, %llu syncs, %llu tokens mapped, %llu block "
           "copies, %u forks\n",
           (unsigned long long)ps.allocations, (unsigned long long)ps.registrations,
           (unsigned long long)ps.match_returned, ps.inactive, (unsigned long long)ds.submissions,
           (unsigned long long)ds.syncs, (unsigned long long)ds.tokens,
           (unsigned long long)ds.blocks_copied, forks);
    kvb_kv_buffer_destroy(kv);
    kvb_table_destroy(table);
    kvb_device_close(dev);
    if (kvb_pool_check(pool))
        kvbt_die(prog, "kvb_pool_check failed at the end");
    CHECK(kvb_pool_destroy(pool));
    free(reqs);
    free(rows);
    free(pos);
    free(slots);
    printf("ok\n");
    return 0;
}
